//! Integration tests: change events and incident timelines, end to end
//! through a real `lookout run`. A pipeline posts a deploy for one service;
//! when that service's probe starts failing minutes later the notice cites
//! the deploy, and the incident's timeline (JSON, Markdown, page) tells the
//! story in order: the change, the first failure, the opening, the notice,
//! the recovery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::harness::daemon::{notices, start_in};
use crate::harness::http_target_with;
use crate::harness::recorder::Recorder;

const TOKEN: &str = "events-token-6d1f0b";

async fn call(
    port: u16,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, String) {
    // Plain HTTP, but reqwest wants the process's rustls provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut req = client.request(method, format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, res.text().await.expect("body"))
}

/// Waits until the incident's timeline holds an entry `what`.
async fn timeline_with(port: u16, id: i64, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = call(
            port,
            reqwest::Method::GET,
            &format!("/api/v1/incidents/{id}"),
            Some(TOKEN),
            None,
        )
        .await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).expect("json");
            if v["timeline"]
                .as_array()
                .is_some_and(|t| t.iter().any(|e| e["what"] == what))
            {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no `{what}` in the timeline: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_before_an_incident_is_cited_and_the_timeline_tells_the_story() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let target = http_target_with(move |_, _| h.load(Ordering::SeqCst));
    let rec = Recorder::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start_in(dir.path(), |port| {
        format!(
                "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{port}\", token: \"{TOKEN}\" }}\ntracing: {{ link: \"https://tempo.example.com/trace/{{trace_id}}\" }}\nnotifiers:\n  hook:\n    webhook: {{ url: \"{}\" }}\nprobes:\n  - name: checkout\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n    interval: 200ms\n    timeout: 150ms\n    labels: {{ service: checkout, team: shop }}\n    alert: {{ after: 2, recover_after: 2, notify: [hook] }}\n",
                rec.url("/hook")
            )
    });
    let port = d.port;
    d.wait_results("checkout", 1).await;

    // Writes need the token; a bad body says what is wrong.
    let deploy = json!({"title": "v1.4.2", "service": "checkout", "link": "https://ci.example.com/runs/981"});
    let (status, _, _) = call(
        port,
        reqwest::Method::POST,
        "/api/v1/events",
        None,
        Some(deploy.clone()),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, body) = call(
        port,
        reqwest::Method::POST,
        "/api/v1/events",
        Some(TOKEN),
        Some(json!({"kind": "deploy"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("title"), "{body}");
    let (status, _, body) = call(
        port,
        reqwest::Method::POST,
        "/api/v1/events",
        Some(TOKEN),
        Some(deploy),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let posted: Value = serde_json::from_str(&body).expect("json");
    assert!(posted["id"].as_i64().is_some(), "{posted}");
    let other = json!({"title": "v9", "service": "search"});
    let (status, _, _) = call(
        port,
        reqwest::Method::POST,
        "/api/v1/events",
        Some(TOKEN),
        Some(other),
    )
    .await;
    assert_eq!(status, 201);
    let (_, _, listed) = call(
        port,
        reqwest::Method::GET,
        "/api/v1/events?label=service:checkout",
        Some(TOKEN),
        None,
    )
    .await;
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(
        listed["events"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // The service breaks: the notice names the deploy, not the other one.
    healthy.store(false, Ordering::SeqCst);
    let opened = notices(&rec, 1).await.remove(0);
    let cited: Vec<&str> = opened.changes.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(cited, ["v1.4.2"]);
    let sentence = opened.changes[0].sentence();
    assert!(
        sentence.starts_with("started ")
            && sentence.ends_with(" after deploy \"v1.4.2\" of service checkout"),
        "{sentence}"
    );
    assert!(
        rec.requests()[0].text().contains("v1.4.2"),
        "the webhook body carries the change"
    );
    let id = opened.incident.expect("incident id");
    // The run that opened it is findable in the backend's traces.
    let trace = opened.trace_id.clone().expect("a trace id");
    assert_eq!(
        opened.trace_url.as_deref(),
        Some(format!("https://tempo.example.com/trace/{trace}").as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = "/api/v1/probes/checkout/results?limit=1000";
        let (_, _, results) = call(port, reqwest::Method::GET, path, Some(TOKEN), None).await;
        if results.contains(&format!("\"trace_id\":\"{trace}\"")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the opening run is stored with its trace id"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    healthy.store(true, Ordering::SeqCst);
    let v = timeline_with(port, id, "ended").await;
    let whats: Vec<&str> = v["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["what"].as_str())
        .collect();
    let order = ["change", "first_failure", "opened", "notice", "ended"];
    let mut at = 0;
    for w in &whats {
        if order[at..].first() == Some(w) {
            at += 1;
        }
    }
    assert_eq!(at, order.len(), "timeline out of order: {whats:?}");
    let notice = v["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["what"] == "notice"))
        .expect("a notice entry");
    assert!(
        notice["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("opened notice to hook: "),
        "{notice}"
    );
    assert_eq!(v["incident"]["kind"], "down");

    let (status, ctype, md) = call(
        port,
        reqwest::Method::GET,
        &format!("/api/v1/incidents/{id}?format=markdown"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/markdown"), "{ctype}");
    assert!(
        md.starts_with(&format!("# Incident #{id}: checkout down\n")),
        "{md}"
    );
    assert!(
        md.contains("| change | deploy \"v1.4.2\" of service checkout"),
        "{md}"
    );
    let chart = d.get("/probes/checkout");
    assert!(
        chart.contains(
            "<g class=\"event\"><title>deploy &quot;v1.4.2&quot; of service checkout at "
        ),
        "the deploy is marked on the probe's chart"
    );
    assert!(
        !chart.contains("&quot;v9&quot;"),
        "another service's deploy is not"
    );
    let page = d.get(&format!("/incidents/{id}"));
    assert!(page.contains("class=\"timeline\""), "{page}");
    assert!(page.contains("v1.4.2"), "{page}");
    let (status, _, _) = call(
        port,
        reqwest::Method::GET,
        "/api/v1/incidents/999999",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
    d.stop().await;
}
