//! Integration test: `alert.degraded.anomaly` end to end. The database
//! holds thirty hours of a probe answering in about 20 ms (so the baseline
//! has something to learn from); a real `lookout run` then probes a target
//! whose answer is made three times slower for a while. The operator gets
//! one degradation notice naming the phase that moved (first byte), then
//! its recovery; nothing is raised while the target behaves as it always
//! did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use lookout::alert::state::IncidentKind;
use lookout::notify::NoticeKind;
use lookout::result::{Phase, ProbeResult};
use lookout::store::Store;

use crate::harness::assert_first_error;
use crate::harness::daemon::{notices, start_in};
use crate::harness::http_server::delayed_target;
use crate::harness::recorder::Recorder;

/// Thirty hours of a run every five minutes.
const HISTORY_RUNS: usize = 30 * 12;

/// A past run of `api` at `at` taking about `ms` (first byte most of it).
fn past_run(at: chrono::DateTime<Utc>, ms: f64) -> ProbeResult {
    let d = |v: f64| Duration::from_secs_f64(v / 1000.0);
    ProbeResult {
        probe: "api".into(),
        started_at: at,
        duration: d(ms),
        success: true,
        failure: None,
        phases: vec![
            (Phase::Connect, d(0.2)),
            (Phase::FirstByte, d(ms - 0.4)),
            (Phase::Transfer, d(0.1)),
        ],
        checks: Vec::new(),
        details: Default::default(),
        location: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threefold_slowdown_is_a_degradation_naming_the_phase_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("lookout.db");
    {
        let mut store = Store::open(&db).expect("open");
        let now = Utc::now();
        let history: Vec<ProbeResult> = (0..HISTORY_RUNS as i64)
            .map(|i| {
                let at = now - TimeDelta::minutes(10) - TimeDelta::minutes(5 * i);
                past_run(at, 20.0 + f64::from((i % 5) as u32) * 0.5)
            })
            .collect();
        store.insert_batch(&history).expect("history");
    }
    let delay = Arc::new(AtomicU64::new(20));
    let target = delayed_target(delay.clone()).await;
    let rec = Recorder::start().await;
    let d = start_in(dir.path(), |port| {
        format!(
                "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nnotifiers:\n  hook:\n    webhook: {{ url: \"{}\" }}\nprobes:\n  - name: api\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n    interval: 200ms\n    timeout: 190ms\n    alert:\n      notify: [hook]\n      degraded:\n        recover_after: 3\n        anomaly: {{ window: 5s, min_delta: 10ms, min_runs: 10 }}\n",
                rec.url("/hook")
            )
    });
    // Normal for a while (30 runs besides the history): the phase
    // reference learns, nothing is raised.
    d.wait_results("api", HISTORY_RUNS + 30).await;
    assert!(
        rec.requests().is_empty(),
        "no alarm while the target is as usual"
    );

    delay.store(60, Ordering::SeqCst);
    let opened = notices(&rec, 1).await.remove(0);
    assert_eq!(opened.kind, NoticeKind::Opened);
    assert_eq!(opened.incident_kind, IncidentKind::Degraded);
    let reason = opened.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("p95 "), "{reason}");
    assert!(reason.contains("the usual "), "{reason}");
    assert!(
        reason.contains("; first byte "),
        "names the phase that moved: {reason}"
    );

    delay.store(20, Ordering::SeqCst);
    let all = notices(&rec, 2).await;
    assert_eq!(all[1].kind, NoticeKind::Resolved);
    assert_eq!(all[1].incident_kind, IncidentKind::Degraded);
    d.stop().await;
    assert_eq!(rec.requests().len(), 2, "one notice each way");
}

#[test]
fn anomaly_settings_name_the_line_and_key() {
    let probe = "    http: { url: \"http://a.example/\" }\n";
    assert_first_error(&[
        (
            &format!("{probe}    alert: {{ degraded: {{ anomaly: {{ factor: 0.5 }} }} }}\n"),
            "probes[0].alert.degraded.anomaly.factor",
            4,
            "from 1.1 to 100",
        ),
        (
            &format!("{probe}    alert: {{ degraded: {{ anomaly: {{ window: 1s }} }} }}\n"),
            "probes[0].alert.degraded.anomaly.window",
            4,
            "from 5s to 6h",
        ),
        (
            &format!("{probe}    alert: {{ degraded: {{ anomaly: sometimes }} }}\n"),
            "probes[0].alert.degraded.anomaly",
            4,
            "expected true, false or a mapping",
        ),
        (
            &format!("{probe}    alert: {{ degraded: {{ anomaly: {{ sustian: 2 }} }} }}\n"),
            "probes[0].alert.degraded.anomaly.sustian",
            4,
            "did you mean `sustain`?",
        ),
    ]);
}
