//! Integration tests: `alert.degraded`, end to end. A real `lookout run`
//! probes a target whose answer can be made slow; the operator sees the
//! degradation as a notice marked as such (not as an outage), on the API
//! and the status page, and its recovery, while the probe itself stays up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lookout::alert::state::IncidentKind;
use lookout::notify::NoticeKind;

use crate::harness::assert_first_error;
use crate::harness::daemon::{notices, start_in};
use crate::harness::http_server::delayed_target;
use crate::harness::recorder::Recorder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_is_degraded_not_down_and_its_recovery_is_told() {
    let delay = Arc::new(AtomicU64::new(0));
    let target = delayed_target(delay.clone()).await;
    let rec = Recorder::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start_in(dir.path(), |port| {
        format!(
                "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nnotifiers:\n  hook:\n    webhook: {{ url: \"{}\" }}\nprobes:\n  - name: api\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n    interval: 200ms\n    timeout: 190ms\n    alert:\n      notify: [hook]\n      degraded: {{ latency: 60ms, after: 2, recover_after: 2 }}\n",
                rec.url("/hook")
            )
    });
    d.wait_results("api", 2).await;
    assert!(rec.requests().is_empty(), "a fast probe tells nobody");

    delay.store(100, Ordering::SeqCst);
    let opened = notices(&rec, 1).await.remove(0);
    assert_eq!(opened.kind, NoticeKind::Opened);
    assert_eq!(opened.incident_kind, IncidentKind::Degraded);
    assert_eq!(opened.state, "degraded");
    let reason = opened.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("latency over 60ms in 2 runs in a row (last "),
        "{reason}"
    );
    assert!(opened.incident.is_some(), "the notice names its incident");

    // Up, but degraded, wherever an operator looks.
    let probe = d.get("/api/v1/probes/api");
    assert!(probe.contains("\"state\":\"degraded\""), "{probe}");
    assert!(probe.contains("latency over 60ms"), "{probe}");
    let incidents = d.get("/api/v1/incidents");
    assert!(incidents.contains("\"kind\":\"degraded\""), "{incidents}");
    let page = d.get("/");
    assert!(page.contains("data-state=\"degraded\""), "status page");

    delay.store(0, Ordering::SeqCst);
    let all = notices(&rec, 2).await;
    let resolved = &all[1];
    assert_eq!(resolved.kind, NoticeKind::Resolved);
    assert_eq!(resolved.incident_kind, IncidentKind::Degraded);
    assert_eq!(resolved.incident, opened.incident);
    let probe = d.get("/api/v1/probes/api");
    assert!(probe.contains("\"state\":\"up\""), "{probe}");
    d.stop().await;
    assert_eq!(rec.requests().len(), 2, "one notice each way, no outage");
}

#[test]
fn degraded_rules_name_the_line_and_key() {
    let probe = "    http: { url: \"http://a.example/\" }\n";
    assert_first_error(&[
        (
            &format!("{probe}    alert: {{ degraded: {{}} }}\n"),
            "probes[0].alert.degraded",
            4,
            "give `latency`",
        ),
        (
            &format!("{probe}    alert: {{ degraded: {{ failures: \"3 of 100\" }} }}\n"),
            "probes[0].alert.degraded.failures",
            4,
            "at most 64 runs",
        ),
        (
            &format!("{probe}    alert: {{ degraded: {{ failures: often }} }}\n"),
            "probes[0].alert.degraded.failures",
            4,
            "write F of N",
        ),
        (
            &format!("{probe}    alert: {{ degraded: {{ latency: 1s, after: 0 }} }}\n"),
            "probes[0].alert.degraded.after",
            4,
            "between 1 and 10000",
        ),
        (
            &format!("{probe}    alert: {{ degraded: {{ latncy: 1s }} }}\n"),
            "probes[0].alert.degraded.latncy",
            4,
            "did you mean `latency`?",
        ),
    ]);
}
