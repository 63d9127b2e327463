//! Tests of the status page, the probe pages and the badges through the
//! router (no socket), over a real history database in a temporary folder:
//! structure the browser test and people rely on, escaping of hostile
//! names, labels and messages, filters and groups, and the time to render
//! a page of 1,000 probes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};
use http::{Request, StatusCode};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::alert::AlertView;
use crate::result::{Failure, FailureClass, Phase, ProbeResult};
use crate::server::{router, History, LiveState, ProbeInfo};
use crate::store::Store;

const HOSTILE: &str = "<script>alert(\"x\")</script>&'";

fn info(name: &str, labels: &[(&str, &str)]) -> ProbeInfo {
    ProbeInfo {
        name: name.into(),
        kind: "http",
        target: format!("https://{name}.example.com/health"),
        schedule: "every 1m".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn result(probe: &str, at: DateTime<Utc>, ms: u64, fail: Option<&str>) -> ProbeResult {
    ProbeResult {
        probe: probe.into(),
        started_at: at,
        duration: Duration::from_millis(ms),
        success: fail.is_none(),
        failure: fail.map(|m| Failure::new(FailureClass::Expectation, m)),
        phases: vec![
            (Phase::Connect, Duration::from_millis(1)),
            (
                Phase::FirstByte,
                Duration::from_millis(ms.saturating_sub(1)),
            ),
        ],
        checks: vec![],
        details: serde_json::Map::new(),
        location: None,
    }
}

fn view(status: &'static str, caused_by: Option<&str>) -> AlertView {
    AlertView {
        status,
        since: Some(Utc::now() - TimeDelta::minutes(90)),
        fail_streak: 0,
        ok_streak: 0,
        caused_by: caused_by.map(str::to_string),
        maintenance: false,
        incident_started: None,
        degraded: None,
        trend: None,
    }
}

/// A live state over `probes` whose history holds `results`.
fn state(dir: &TempDir, probes: Vec<ProbeInfo>, results: &[ProbeResult]) -> LiveState {
    let path = dir.path().join("history.db");
    let mut writer = Store::open(&path).unwrap();
    for chunk in results.chunks(5000) {
        writer.insert_batch(chunk).unwrap();
    }
    let s = LiveState {
        probes: crate::server::ProbeSet::new(probes),
        history: Some(History::new(Store::open(&path).unwrap())),
        ..LiveState::default()
    };
    for r in results {
        let newer = s
            .latest
            .read()
            .unwrap()
            .get(&r.probe)
            .is_none_or(|l| l.started_at < r.started_at);
        if newer {
            s.record(r);
        }
    }
    s
}

async fn get(app: &Router, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let res: Response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// The `<article class="probe" ...>` of `name` up to its end.
fn article<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page
        .find(&format!("<article class=\"probe\" id=\"probe-{name}\""))
        .unwrap_or_else(|| panic!("no article for {name}"));
    let len = page[start..].find("</article>").unwrap();
    &page[start..start + len]
}

/// Three probes: `web` up with an hour of history, `api` down (with an
/// incident's worth of failures), `idle` never ran.
fn three(dir: &TempDir) -> LiveState {
    let now = Utc::now();
    let mut results = Vec::new();
    for i in 0..60 {
        let at = now - TimeDelta::minutes(60 - i);
        results.push(result("web", at, 20 + (i as u64 % 7), None));
        let fail = (i >= 50).then_some("expected status 200, got 503");
        results.push(result("api", at, 40, fail));
    }
    let s = state(
        dir,
        vec![
            info("web", &[("team", "core"), ("env", "prod")]),
            info("api", &[("team", "pay"), ("env", "prod")]),
            info("idle", &[("team", "core")]),
        ],
        &results,
    );
    s.alerts.publish("web", view("up", None));
    s.alerts.publish("api", view("down", None));
    s
}

#[tokio::test]
async fn status_page_shows_each_probe_with_state_numbers_and_chart() {
    let dir = TempDir::new().unwrap();
    let app = router(three(&dir));
    let (status, headers, page) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'self'; img-src 'self' data:; style-src 'self'"
    );
    assert!(page.starts_with("<!doctype html>"));
    assert!(
        page.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
    );
    assert!(page.contains("<noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>"));
    assert!(!page.contains("<script>") && !page.contains("style=\""));
    for (state, n) in [("up", 1), ("down", 1), ("pending", 1), ("dependency", 0)] {
        assert!(
            page.contains(&format!(
                "<span class=\"count\" data-state=\"{state}\">{n}</span>"
            )),
            "{state}"
        );
    }
    let web = article(&page, "web");
    assert!(web.contains("data-state=\"up\" data-labels=\"env=prod,team=core\""));
    assert!(web.contains("<a class=\"name\" href=\"/probes/web\">web</a>"));
    assert!(web.contains("<td data-window=\"24h\">100%</td>"), "{web}");
    assert!(web.contains("<td data-window=\"30d\">100%</td>"));
    assert!(web.contains("<td data-latency=\"p95\">2") && web.contains(" ms</td>"));
    assert!(web.contains("<path class=\"p50\" fill=\"none\" stroke=\"#0969da\" d=\"M"));
    assert!(web.contains("<path class=\"p95\" fill=\"none\" stroke=\"#bf8700\" d=\"M"));

    let api = article(&page, "api");
    assert!(api.contains("data-state=\"down\""));
    // 10 failures in 60 runs.
    assert!(api.contains("<td data-window=\"24h\">83.33%</td>"), "{api}");
    assert!(api.contains("expected status 200, got 503"));

    let idle = article(&page, "idle");
    assert!(idle.contains("data-state=\"pending\""));
    assert!(idle.contains("<td data-window=\"24h\">—</td>"));
    assert!(idle.contains("<svg class=\"chart empty\"") && idle.contains("no data yet"));
    assert!(!idle.contains("<path"));
}

/// An instance with a location says so in the status page's header and in
/// the probe list, and its results carry it; one without shows neither.
#[tokio::test]
async fn the_instance_location_is_shown() {
    let dir = TempDir::new().unwrap();
    let mut s = three(&dir);
    let mut r = result("web", Utc::now(), 25, None);
    r.location = Some("eu-west".into());
    s.record(&r);
    let (_, _, page) = get(&router(s.clone()), "/").await;
    assert!(!page.contains("Location:"), "{page}");
    let (_, _, list) = get(&router(s.clone()), "/api/v1/probes").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(list.get("location").is_none(), "{list}");

    s.location = Some("eu-west".into());
    let app = router(s);
    let (_, _, page) = get(&app, "/").await;
    assert!(
        page.contains("<h1>Status</h1><p class=\"location\">Location: eu-west</p>"),
        "{page}"
    );
    let (status, _, list) = get(&app, "/api/v1/probes").await;
    assert_eq!(status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["location"], "eu-west");
    assert_eq!(list["probes"][0]["name"], "web");
    assert_eq!(list["probes"][0]["last"]["location"], "eu-west");
    assert!(
        list["probes"][1]["last"].get("location").is_none(),
        "{list}"
    );
}

#[tokio::test]
async fn filters_and_groups_work_without_javascript() {
    let dir = TempDir::new().unwrap();
    let app = router(three(&dir));
    let (_, _, page) = get(&app, "/?state=down").await;
    assert!(page.contains("id=\"probe-api\"") && !page.contains("id=\"probe-web\""));
    // The summary still counts every probe.
    assert!(page.contains("<span class=\"count\" data-state=\"up\">1</span>"));

    let (_, _, page) = get(&app, "/?label=team:core").await;
    assert!(page.contains("id=\"probe-web\"") && page.contains("id=\"probe-idle\""));
    assert!(!page.contains("id=\"probe-api\""));
    let (_, _, page) = get(&app, "/?label=team:core&label=env:prod").await;
    assert!(page.contains("id=\"probe-web\"") && !page.contains("id=\"probe-idle\""));
    let (_, _, page) = get(&app, "/?q=IDL").await;
    assert!(page.contains("id=\"probe-idle\"") && !page.contains("id=\"probe-web\""));

    let (_, _, page) = get(&app, "/?group=team").await;
    let core = page.find("<h2 class=\"group\">team: core</h2>").unwrap();
    let pay = page.find("<h2 class=\"group\">team: pay</h2>").unwrap();
    assert!(core < pay);
    let web = page.find("id=\"probe-web\"").unwrap();
    let api = page.find("id=\"probe-api\"").unwrap();
    assert!(core < web && web < pay && pay < api);
    let (_, _, page) = get(&app, "/?group=env").await;
    assert!(page.contains("<h2 class=\"group\">no env</h2>"));

    // The links for these filters are on the page.
    let (_, _, page) = get(&app, "/").await;
    for link in [
        "href=\"/?state=down\"",
        "href=\"/?group=team\"",
        "href=\"/?label=team%3Acore\"",
    ] {
        assert!(page.contains(link), "{link}");
    }
    let (status, _, page) = get(&app, "/?state=sideways").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("unknown state `sideways`"));
}

#[tokio::test]
async fn probe_page_lists_results_stats_and_incidents() {
    let dir = TempDir::new().unwrap();
    let app = router(three(&dir));
    let (status, headers, page) = get(&app, "/probes/api").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("content-security-policy"));
    assert!(
        page.contains("<article class=\"probe-detail\" data-probe=\"api\" data-state=\"down\">")
    );
    assert!(page.contains("<td data-window=\"1h\" data-stat=\"uptime\">"));
    assert!(page.contains("<td data-window=\"30d\" data-stat=\"runs\">60</td>"));
    assert_eq!(
        page.matches("<tr class=\"result\" data-ok=\"false\">")
            .count(),
        10
    );
    assert_eq!(
        page.matches("<tr class=\"result\" data-ok=\"true\">")
            .count(),
        40
    );
    assert!(page.contains("<span class=\"class\">expectation</span>"));
    assert!(page.contains("expected status 200, got 503"));
    assert!(page.contains("connect 1.0 ms · first_byte 39 ms"));
    assert!(page.contains("<svg class=\"chart\" data-probe=\"api\" viewBox=\"0 0 720 220\""));
    assert!(page.contains("/badge/api.svg?type=uptime&amp;window=30d"));

    let (status, _, page) = get(&app, "/probes/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("No probe is named `nope`"));
}

#[tokio::test]
async fn hostile_names_labels_and_messages_are_escaped() {
    let dir = TempDir::new().unwrap();
    let now = Utc::now();
    let mut p = info("evil", &[("owner", HOSTILE), ("note", "a&b")]);
    p.target = format!("https://x/{HOSTILE}");
    let s = state(
        &dir,
        vec![p],
        &[result(
            "evil",
            now - TimeDelta::minutes(1),
            5,
            Some(HOSTILE),
        )],
    );
    s.alerts.publish("evil", view("down", Some(HOSTILE)));
    let app = router(s);
    for path in [
        "/",
        "/?group=owner",
        "/probes/evil",
        "/?label=owner:%3Cscript%3E&q=%3Cscript%3E",
    ] {
        let (_, _, page) = get(&app, path).await;
        assert!(!page.contains("<script>"), "{path}: raw markup");
        assert!(!page.contains("\"x\")"), "{path}: raw quotes");
    }
    let (_, _, page) = get(&app, "/").await;
    assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
    assert!(page.contains("note=a&amp;b"));

    let (status, headers, svg) = get(&app, "/badge/evil.svg?label=%3Cscript%3E%22").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/svg+xml");
    assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;&quot;"));
}

#[tokio::test]
async fn badges_show_status_uptime_and_latency() {
    let dir = TempDir::new().unwrap();
    let app = router(three(&dir));
    let (status, headers, svg) = get(&app, "/badge/web.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/svg+xml");
    assert_eq!(headers["cache-control"], "max-age=30");
    assert!(svg.contains("<title>web: up</title>") && svg.contains("#1a7f37"));
    let (_, _, svg) = get(&app, "/badge/api.svg?type=status").await;
    assert!(svg.contains("<title>api: down</title>") && svg.contains("#cf222e"));
    let (_, _, svg) = get(&app, "/badge/idle.svg").await;
    assert!(svg.contains("<title>idle: pending</title>"));
    let (_, _, svg) = get(&app, "/badge/api.svg?type=uptime&window=7d").await;
    assert!(
        svg.contains("<title>api uptime 7d: 83.33%</title>"),
        "{svg}"
    );
    let (_, _, svg) = get(&app, "/badge/web.svg?type=latency").await;
    assert!(
        svg.contains("<title>web p95: 2") && svg.contains(" ms</title>"),
        "{svg}"
    );
    let (_, _, svg) = get(&app, "/badge/idle.svg?type=uptime").await;
    assert!(svg.contains(": no data</title>"));

    let (status, headers, svg) = get(&app, "/badge/nope.svg").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "image/svg+xml");
    assert!(svg.contains("unknown probe"));
    let (status, _, text) = get(&app, "/badge/web.svg?type=speed").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("unknown badge type `speed`"));
    let (status, _, _) = get(&app, "/badge/web.png").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn assets_are_embedded_with_types_and_validators() {
    let app = router(LiveState::default());
    for (path, ct) in [
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let (status, headers, body) = get(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], ct, "{path}");
        assert!(headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age"));
        assert!(!body.is_empty());
        let tag = headers["etag"].clone();
        let res = app
            .clone()
            .oneshot(
                Request::get(path)
                    .header("if-none-match", tag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    let (status, _, _) = get(&app, "/assets/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, _) = get(&app, "/favicon.ico").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "/assets/favicon.svg");
}

/// 1,000 probes with a day of history each (one run every 5 minutes):
/// how long the status page takes, uncached and cached. Run with
/// `cargo test --release --lib thousand_probes -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: slow in debug builds"]
async fn thousand_probes_page_time() {
    let dir = TempDir::new().unwrap();
    let now = Utc::now();
    let probes: Vec<ProbeInfo> = (0..1000)
        .map(|i| {
            info(
                &format!("probe-{i:04}"),
                &[("team", ["a", "b", "c"][i % 3])],
            )
        })
        .collect();
    let mut results = Vec::new();
    for p in &probes {
        for k in 0..288 {
            let at = now - TimeDelta::minutes(5 * (288 - k));
            results.push(result(&p.name, at, 10 + (k % 50) as u64, None));
        }
    }
    let t = Instant::now();
    let s = state(&dir, probes, &results);
    eprintln!("inserted {} results in {:?}", results.len(), t.elapsed());
    let app = router(s.clone());
    let t = Instant::now();
    let (status, _, page) = get(&app, "/").await;
    let cold = t.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.matches("<article class=\"probe\"").count(), 1000);
    let t = Instant::now();
    let _ = get(&app, "/").await;
    let warm = t.elapsed();
    let filters = super::Filters::default();
    let t = Instant::now();
    let probes = s.probes.load();
    let data = super::gather(&s, &probes, &filters).await;
    let gathered = t.elapsed();
    let t = Instant::now();
    let body = super::page_body(&data);
    eprintln!(
        "cached: gather {gathered:?}, markup {:?} ({} KB)",
        t.elapsed(),
        body.len() / 1024
    );
    let t = Instant::now();
    let _ = get(&app, "/probes/probe-0500").await;
    let detail = t.elapsed();
    eprintln!(
        "status page, 1,000 probes: {} KB; cold {cold:?}, cached {warm:?}; probe page {detail:?}",
        page.len() / 1024
    );
}
