//! Integration tests: statuspage.
//!
//! A real probe (`run_once`) against an in-process server that serves
//! Atlassian Statuspage summary documents, switched between runs, and what
//! an operator sees: outcome, class, the vendor's words, details.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use lookout::alert::Engine;
use lookout::config::{load_str, read::Cx, ProbeSpec};
use lookout::probe::run_once;
use lookout::result::{FailureClass, ProbeResult};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::harness::targets::{self, Behaviour};
use crate::harness::{assert_failed, assert_first_error, detail, message, probe_with};

/// A server answering every request with the current document.
struct Vendor {
    port: u16,
    doc: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Vendor {
    async fn start(doc: &Value) -> Vendor {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Mutex::new(doc.to_string().into_bytes()));
        let docs = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let docs = docs.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = docs.lock().expect("doc").clone();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(reply.as_bytes()).await;
                    let _ = tcp.write_all(&body).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Vendor {
            port,
            doc: shared,
            task,
        }
    }

    fn serve(&self, doc: &Value) {
        *self.doc.lock().expect("doc") = doc.to_string().into_bytes();
    }

    fn serve_raw(&self, body: &str) {
        *self.doc.lock().expect("doc") = body.as_bytes().to_vec();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v2/summary.json", self.port)
    }
}

impl Drop for Vendor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn component(name: &str, status: &str) -> Value {
    json!({
        "id": name.to_lowercase().replace(' ', "-"),
        "name": name,
        "status": status,
        "group": false,
        "position": 1,
        "description": null,
    })
}

/// A summary with Payments API, Checkout and Dashboard in these statuses.
fn summary(indicator: &str, description: &str, statuses: [&str; 3], incidents: Value) -> Value {
    json!({
        "page": {"id": "abc", "name": "Vendor", "url": "https://status.vendor.example"},
        "status": {"indicator": indicator, "description": description},
        "components": [
            component("Payments API", statuses[0]),
            component("Checkout", statuses[1]),
            component("Dashboard", statuses[2]),
            {"id": "grp", "name": "Europe", "status": "major_outage", "group": true},
        ],
        "incidents": incidents,
        "scheduled_maintenances": [],
    })
}

fn operational() -> Value {
    summary(
        "none",
        "All Systems Operational",
        ["operational"; 3],
        json!([{
            "name": "Yesterday's blip",
            "status": "resolved",
            "impact": "minor",
            "components": [{"id": "payments-api", "name": "Payments API"}],
        }]),
    )
}

fn degraded(which: usize) -> Value {
    let mut statuses = ["operational"; 3];
    statuses[which] = "degraded_performance";
    summary("minor", "Minor Service Outage", statuses, json!([]))
}

fn major_outage() -> Value {
    summary(
        "major",
        "Partial System Outage",
        ["partial_outage", "major_outage", "operational"],
        json!([{
            "name": "Elevated API errors",
            "status": "investigating",
            "impact": "major",
            "components": [
                {"id": "payments-api", "name": "Payments API"},
                {"id": "checkout", "name": "Checkout"},
            ],
        }]),
    )
}

fn maintenance() -> Value {
    summary(
        "maintenance",
        "Service Under Maintenance",
        ["under_maintenance", "operational", "operational"],
        json!([]),
    )
}

fn probe(section: &str) -> ProbeSpec {
    probe_with("statuspage", section, "", "2s")
}

async fn run(url: &str, extra: &str) -> ProbeResult {
    run_once(&probe(&format!("{{url: \"{url}\"{extra}}}"))).await
}

#[tokio::test]
async fn statuspage_states_switched_between_runs() {
    let vendor = Vendor::start(&operational()).await;
    let url = vendor.url();
    let watched = ", components: [Payments API, \"checkout\"]";

    // Operational: passes; the resolved incident is not listed.
    for extra in ["", watched] {
        let r = run(&url, extra).await;
        assert!(r.success, "{:?}", r.failure);
        assert_eq!(detail(&r, "indicator"), json!("none"));
        assert_eq!(detail(&r, "description"), json!("All Systems Operational"));
        assert_eq!(detail(&r, "incidents"), json!([]));
        assert_eq!(detail(&r, "status"), json!(200));
        assert!(r.phase(lookout::result::Phase::FirstByte).is_some());
    }
    let r = run(&url, "").await;
    assert_eq!(
        detail(&r, "components"),
        json!({"Payments API": "operational", "Checkout": "operational", "Dashboard": "operational"}),
        "every non-group component, the group left out"
    );

    // Degraded: one component degraded_performance.
    vendor.serve(&degraded(1));
    let r = run(&url, watched).await;
    let msg = assert_failed(&r, FailureClass::Vendor, "Checkout is degraded_performance");
    assert_eq!(msg, "vendor reports Checkout is degraded_performance");
    assert_eq!(detail(&r, "indicator"), json!("minor"));
    assert_eq!(detail(&r, "description"), json!("Minor Service Outage"));
    assert_eq!(
        detail(&r, "components"),
        json!({"Payments API": "operational", "Checkout": "degraded_performance"})
    );
    let r = run(&url, "").await;
    assert_failed(&r, FailureClass::Vendor, "Checkout is degraded_performance");
    // ... which passes when degraded does not count.
    let r = run(&url, &format!("{watched}, degraded_is_failure: false")).await;
    assert!(r.success, "{:?}", r.failure);

    // Major outage: an open incident with a title, components down.
    vendor.serve(&major_outage());
    let r = run(&url, ", components: [Payments API]").await;
    let msg = assert_failed(&r, FailureClass::Vendor, "Elevated API errors");
    assert_eq!(
        msg,
        "vendor reports \"Elevated API errors\" (investigating, major): Payments API is partial_outage"
    );
    assert_eq!(detail(&r, "incidents"), json!(["Elevated API errors"]));
    assert_eq!(detail(&r, "indicator"), json!("major"));
    assert_eq!(
        detail(&r, "components"),
        json!({"Payments API": "partial_outage"})
    );
    let r = run(&url, "").await;
    assert_failed(
        &r,
        FailureClass::Vendor,
        "(investigating, major): Payments API is partial_outage, Checkout is major_outage",
    );
    // Not watching anything the incident affects: passes.
    let r = run(&url, ", components: [dashboard]").await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(detail(&r, "incidents"), json!([]));

    // Maintenance never fails, and the details say so.
    vendor.serve(&maintenance());
    for extra in ["", watched] {
        let r = run(&url, extra).await;
        assert!(r.success, "{:?}", r.failure);
        let note = detail(&r, "maintenance");
        assert!(
            note.as_str()
                .is_some_and(|n| n.contains("Payments API under maintenance")
                    && n.contains("not counted as a failure")),
            "{note}"
        );
        assert_eq!(detail(&r, "indicator"), json!("maintenance"));
    }

    // And back to operational.
    vendor.serve(&operational());
    let r = run(&url, watched).await;
    assert!(r.success, "{:?}", r.failure);
}

#[tokio::test]
async fn statuspage_components_narrowing() {
    let vendor = Vendor::start(&degraded(2)).await;
    let url = vendor.url();
    // Dashboard is degraded but not watched.
    let r = run(&url, ", components: [PAYMENTS api, checkout]").await;
    assert!(r.success, "{:?}", r.failure);
    // Without a list everything is watched.
    let r = run(&url, "").await;
    assert_failed(
        &r,
        FailureClass::Vendor,
        "Dashboard is degraded_performance",
    );
    // An unknown name fails with the names the vendor has.
    let r = run(&url, ", components: [Checkout, Payments]").await;
    let msg = assert_failed(&r, FailureClass::Vendor, "no component named \"Payments\"");
    assert!(
        msg.ends_with("available: Payments API, Checkout, Dashboard, Europe"),
        "{msg}"
    );
}

#[tokio::test]
async fn statuspage_malformed_json_is_protocol() {
    let vendor = Vendor::start(&operational()).await;
    let url = vendor.url();
    vendor.serve_raw("<html>Status</html>");
    let r = run(&url, "").await;
    assert_failed(&r, FailureClass::Protocol, "did not return JSON");
    vendor.serve_raw("{\"status\": {\"indicator\": \"none\"");
    let r = run(&url, "").await;
    assert_failed(&r, FailureClass::Protocol, "did not return JSON");
    vendor.serve_raw("[1, 2]");
    let r = run(&url, "").await;
    assert_failed(
        &r,
        FailureClass::Protocol,
        "not return a Statuspage summary",
    );
}

#[tokio::test]
async fn statuspage_huge_body_is_size() {
    // Announced as 1 GiB: refused before reading.
    let target = targets::http(Behaviour::Endless {
        declare_length: true,
    })
    .await;
    let r = run(&target.http_url("/api/v2/summary.json"), "").await;
    assert_failed(&r, FailureClass::Size, "max_body 2 MiB");
    // Not announced: reading stops at the bound.
    let target = targets::http(Behaviour::Endless {
        declare_length: false,
    })
    .await;
    let r = run(&target.http_url("/api/v2/summary.json"), "").await;
    assert_failed(&r, FailureClass::Size, "reading stopped there");
    assert!(r.duration < Duration::from_secs(2), "{:?}", r.duration);
}

#[tokio::test]
async fn statuspage_secrets_never_reach_the_result() {
    let vendor = Vendor::start(&major_outage()).await;
    let yaml = format!(
        "probes:\n  - name: t\n    timeout: 2s\n    statuspage:\n      url: \"http://monitor:${{SP_PASS}}@127.0.0.1:{}/api/v2/summary.json?api_key=${{SP_KEY}}\"\n      components: [Payments API]\n",
        vendor.port
    );
    let cx = Cx::new(Box::new(|k| match k {
        "SP_PASS" => Some("hunter2-pass-sp".to_string()),
        "SP_KEY" => Some("key-9f8e7d-sp".to_string()),
        _ => None,
    }));
    let spec = match load_str("test.yaml", &yaml, cx) {
        Ok((cfg, _)) => (*cfg.probes[0]).clone(),
        Err(d) => panic!("{d}"),
    };
    assert!(!spec.kind.target().contains("hunter2-pass-sp"));
    assert!(!spec.kind.target().contains("key-9f8e7d-sp"));
    let r = run_once(&spec).await;
    assert_failed(&r, FailureClass::Vendor, "Elevated API errors");
    let all = serde_json::to_string(&r).expect("json");
    for secret in ["hunter2-pass-sp", "key-9f8e7d-sp"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    // A protocol failure quotes the target: still masked.
    vendor.serve_raw("not json");
    let r = run_once(&spec).await;
    let all = serde_json::to_string(&r).expect("json");
    assert!(message(&r).contains("did not return JSON"), "{all}");
    for secret in ["hunter2-pass-sp", "key-9f8e7d-sp"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[test]
fn statuspage_config_errors() {
    assert_first_error(&[
        (
            "    statuspage: {components: [Checkout]}\n",
            "probes[0].statuspage",
            3,
            "missing required key `url`",
        ),
        (
            "    statuspage:\n      url: \"ftp://status.vendor.example/api/v2/summary.json\"\n",
            "probes[0].statuspage.url",
            4,
            "ftp",
        ),
        (
            "    statuspage:\n      url: \"not a url\"\n",
            "probes[0].statuspage.url",
            4,
            "invalid URL",
        ),
        (
            "    statuspage:\n      url: https://status.vendor.example/api/v2/summary.json\n      components: {Checkout: 1}\n",
            "probes[0].statuspage.components",
            5,
            "expected a list of strings",
        ),
        (
            "    statuspage:\n      url: https://status.vendor.example/api/v2/summary.json\n      components: [Checkout, [a]]\n",
            "probes[0].statuspage.components[1]",
            5,
            "expected",
        ),
        (
            "    statuspage:\n      url: https://status.vendor.example/api/v2/summary.json\n      degraded_is_failure: sometimes\n",
            "probes[0].statuspage.degraded_is_failure",
            5,
            "expected",
        ),
        (
            "    statuspage:\n      url: https://status.vendor.example/api/v2/summary.json\n      components: [Checkout, \"\"]\n",
            "probes[0].statuspage.components[1]",
            5,
            "cannot be empty",
        ),
        (
            "    statuspage:\n      url: https://status.vendor.example/api/v2/summary.json\n      component: [Checkout]\n",
            "probes[0].statuspage.component",
            5,
            "did you mean",
        ),
    ]);
}

#[test]
fn statuspage_is_a_dependency_like_any_probe() {
    let yaml = "notifiers:\n  ops: {slack: {webhook: \"https://hooks.example.com/ops\"}}\ndefaults:\n  alert: {after: 2, recover_after: 1, notify: [ops]}\nprobes:\n  - {name: checkout, http: {url: \"https://api.example.com/\"}, depends_on: [payments-vendor]}\n  - name: payments-vendor\n    statuspage: {url: \"https://status.vendor.example/api/v2/summary.json\", components: [Payments API]}\n";
    let cfg = match load_str("test.yaml", yaml, Cx::new(Box::new(|_| None))) {
        Ok((cfg, _)) => cfg,
        Err(d) => panic!("{d}"),
    };
    assert_eq!(cfg.probes[1].kind.name(), "statuspage");
    let mut e = Engine::new(&cfg);
    let at = |s: i64| {
        Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0)
            .single()
            .map(|t| t + chrono::Duration::seconds(s))
            .expect("time")
    };
    let result = |probe: &str, s: i64, class: FailureClass, msg: &str| ProbeResult {
        probe: probe.into(),
        started_at: at(s),
        duration: Duration::from_millis(40),
        success: false,
        failure: Some(lookout::result::Failure::new(class, msg)),
        phases: Vec::new(),
        checks: Vec::new(),
        details: Default::default(),
        location: None,
    };
    let vendor_msg =
        "vendor reports \"Elevated API errors\" (investigating, major): Payments API is partial_outage";
    let mut out = Vec::new();
    for (s, probe) in [
        (0, "payments-vendor"),
        (5, "payments-vendor"),
        (10, "checkout"),
        (40, "checkout"),
    ] {
        let (class, msg) = if probe == "checkout" {
            (FailureClass::Expectation, "expected status 2xx, got 502")
        } else {
            (FailureClass::Vendor, vendor_msg)
        };
        out.extend(e.on_result(&result(probe, s, class, msg), at(s)));
    }
    let probes: Vec<&str> = out.iter().map(|o| o.notice.probe.as_str()).collect();
    assert_eq!(probes, ["payments-vendor"], "only the root cause notifies");
    let first = out[0].notice.first_failure.as_ref().expect("failure");
    assert_eq!(first.class, FailureClass::Vendor);
    assert_eq!(first.message, vendor_msg);
    let cause = e
        .state("checkout")
        .and_then(|s| s.incident.as_ref())
        .and_then(|i| i.caused_by.clone());
    assert_eq!(cause.as_deref(), Some("payments-vendor"));
}
