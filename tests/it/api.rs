//! The JSON API against the running daemon: listing and filtering probes,
//! one probe's detail, walking every page of results and incidents without
//! gaps or repeats, statistics that count exactly what was probed,
//! incidents that open and resolve, a JSON 4xx for every bad parameter,
//! and an OpenAPI document that names every route and describes every
//! body the tests fetch (each one is checked against its schema).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::harness::process::free_port;
use crate::harness::{start_daemon, Daemon};

const PASS: &str = "hunter2-api-password";
const TOKEN: &str = "tok-api-0123456789";

/// A blocking HTTP target that answers its n-th request (from 0) with 200
/// when `healthy(n)`, else 503. Lives for the test process.
fn target(healthy: impl Fn(usize) -> bool + Send + Sync + 'static) -> u16 {
    crate::harness::http_target_with(move |n, _| healthy(n))
}

/// `method path` on 127.0.0.1:`port`: status and body; `None` while
/// nothing listens.
fn request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// The embedded OpenAPI document.
fn doc() -> Value {
    serde_json::from_str(lookout::server::api::OPENAPI).unwrap()
}

// ------------------------------------------------------- schema checking

/// Checks `v` against `schema` (the subset of JSON Schema the document
/// uses: $ref, type, enum, required, properties, additionalProperties,
/// items, oneOf, minimum, maximum); returns every mismatch.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let target = doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
        return check(doc, target, v, at, errs);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let fits = options
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                check(doc, s, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if fits != 1 {
            errs.push(format!("{at}: matches {fits} of oneOf: {v}"));
        }
        return;
    }
    if let Some(ty) = schema.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type {ty}"),
        };
        let fits = |t: &str| match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => panic!("unknown type {t}"),
        };
        if !types.iter().any(|t| fits(t)) {
            errs.push(format!("{at}: expected {types:?}, got {v}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errs.push(format!("{at}: {v} not in {allowed:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|m| n < m)
            || schema["maximum"].as_f64().is_some_and(|m| n > m)
        {
            errs.push(format!("{at}: {n} out of range"));
        }
    }
    if let Some(obj) = v.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap();
            if !obj.contains_key(key) {
                errs.push(format!("{at}: missing `{key}`"));
            }
        }
        for (k, val) in obj {
            let path = format!("{at}.{k}");
            match (schema["properties"].get(k), &schema["additionalProperties"]) {
                (Some(s), _) => check(doc, s, val, &path, errs),
                (None, Value::Bool(false)) => errs.push(format!("{path}: not documented")),
                (None, Value::Object(_)) => {
                    check(doc, &schema["additionalProperties"], val, &path, errs)
                }
                _ => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"), errs);
        }
    }
}

/// The documented path template (`/api/v1/probes/{name}`) a concrete path
/// falls under.
fn template<'d>(doc: &'d Value, path: &str) -> Option<&'d str> {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|t| {
            let tsegs: Vec<&str> = t.split('/').collect();
            tsegs.len() == segs.len()
                && tsegs
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
}

/// The documented JSON schema of `status` answers to GET `path`.
fn response_schema<'d>(doc: &'d Value, path: &str, status: u16) -> &'d Value {
    let t = template(doc, path).unwrap_or_else(|| panic!("{path} is not documented"));
    let mut res = &doc["paths"][t]["get"]["responses"][status.to_string()];
    if let Some(r) = res["$ref"].as_str() {
        res = doc.pointer(r.trim_start_matches('#')).unwrap();
    }
    let schema = &res["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "no JSON schema documented for {status} of GET {t}"
    );
    schema
}

// ------------------------------------------------------- the daemon

/// A running daemon, the API's document, and every body fetched so far
/// (to look for secrets).
struct Api {
    daemon: Daemon,
    port: u16,
    doc: Value,
    seen: String,
}

/// Writes `lookout.yaml` (storage in `dir`, the server on a free port)
/// with these probes and starts the daemon.
fn start(dir: &Path, probes: &str) -> Api {
    let port = free_port();
    let config = write_config(dir, port, probes);
    let daemon = start_daemon(&config, &[("PASS", PASS), ("TOKEN", TOKEN)]);
    Api {
        daemon,
        port,
        doc: doc(),
        seen: String::new(),
    }
}

fn write_config(dir: &Path, port: u16, probes: &str) -> PathBuf {
    let config = dir.join("lookout.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  sqlite: data/lookout.db\nserver:\n  listen: 127.0.0.1:{port}\n\
             defaults:\n  interval: 100ms\n  timeout: 100ms\nprobes:\n{probes}"
        ),
    )
    .unwrap();
    config
}

impl Api {
    /// GET `path`: status and JSON body, checked against the schema the
    /// document gives for that status. Waits (20s at most) for the daemon
    /// to listen.
    fn get(&mut self, path: &str) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (status, body) = loop {
            if let Some(answer) = request(self.port, "GET", path) {
                break answer;
            }
            let exited = self.daemon.child.try_wait().unwrap();
            if exited.is_some() {
                let log: Vec<String> = self.daemon.log.try_iter().collect();
                panic!("lookout run exited: {exited:?}\n{}", log.join("\n"));
            }
            assert!(Instant::now() < deadline, "daemon not listening within 20s");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.seen.push_str(&body);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("GET {path}: {status} with a body that is not JSON ({e}): {body}")
        });
        let mut errs = Vec::new();
        check(
            &self.doc,
            response_schema(&self.doc, path, status),
            &v,
            "$",
            &mut errs,
        );
        assert!(
            errs.is_empty(),
            "GET {path} ({status}) breaks its schema: {errs:#?}\n{v:#}"
        );
        (status, v)
    }

    /// GET `path`, which must answer 200.
    fn ok(&mut self, path: &str) -> Value {
        let (status, v) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// GETs `path` until `ready` holds (20s at most).
    fn wait_for(&mut self, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.ok(path);
            if ready(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 20s; last:\n{v:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Follows `next` links from `first`, checking each page; returns the
    /// items (under `key`) of every page in order.
    fn walk(&mut self, first: &str, key: &str, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut path = first.to_string();
        loop {
            let page = self.ok(&path);
            let got = page[key].as_array().unwrap();
            assert!(got.len() <= limit, "{path}: {} items", got.len());
            items.extend(got.iter().cloned());
            match page["next"].as_str() {
                Some(next) => {
                    assert_eq!(got.len(), limit, "{path}: a short page with a next link");
                    path = next.to_string();
                }
                None => return items,
            }
        }
    }

    /// Stops the daemon with SIGTERM and waits until it has exited (its
    /// recorder flushes on the way out).
    fn stop(mut self) -> String {
        let pid = self.daemon.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::mem::take(&mut self.seen)
    }
}

fn names(list: &Value) -> Vec<&str> {
    list["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

fn probe<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

fn assert_no_secret(text: &str) {
    for secret in [PASS, TOKEN] {
        assert!(!text.contains(secret), "secret {secret} in an answer");
    }
}

// ------------------------------------------------------- tests

#[test]
fn api_lists_filters_and_details_probes_and_documents_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let ok = target(|_| true);
    let bad = target(|_| false);
    let mut api = start(
        dir.path(),
        &format!(
            "  - name: web\n    http: {{ url: \"http://127.0.0.1:{ok}/\" }}\n    labels: {{ team: core, tier: front }}\n\
             \x20 - name: down\n    http: {{ url: \"http://127.0.0.1:{bad}/\" }}\n    labels: {{ team: core }}\n    expect: {{ status: 200 }}\n    alert: {{ after: 2 }}\n\
             \x20 - name: edge\n    http: {{ url: \"http://127.0.0.1:{ok}/\" }}\n    labels: {{ team: edge }}\n\
             \x20 - name: secret\n    http: {{ url: \"http://monitor:${{PASS}}@127.0.0.1:{ok}/?token=${{TOKEN}}\" }}\n    expect: {{ body_contains: \"${{TOKEN}}\" }}\n    alert: false\n"
        ),
    );
    let list = api.wait_for("/api/v1/probes", "web up and down down", |v| {
        let state = |n: &str| probe(v, n)["state"].as_str().unwrap_or("").to_string();
        // The board is live; the 24h uptime waits for the first write.
        state("web") == "up"
            && state("down") == "down"
            && state("edge") == "up"
            && probe(v, "down")["uptime_24h"] == 0.0
    });
    assert_eq!(names(&list), ["web", "down", "edge", "secret"]);
    let web = probe(&list, "web");
    assert_eq!(web["kind"], "http");
    assert_eq!(web["labels"]["tier"], "front");
    assert_eq!(web["last"]["success"], true);
    assert!(web["last"]["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(web["since"].is_string() && web["caused_by"].is_null());
    assert!(web["streak"]["successes"].as_u64().unwrap() >= 1);
    let down = probe(&list, "down");
    assert!(down["streak"]["failures"].as_u64().unwrap() >= 2);
    // (A run on a busy machine may time out instead of seeing the 503.)
    let class = &down["last"]["failure"]["class"];
    assert!(class == "expectation" || class == "timeout", "{class}");
    assert_eq!(down["uptime_24h"], 0.0);
    assert!(probe(&list, "secret")["target"]
        .as_str()
        .unwrap()
        .contains("monitor:***@"));

    // Filters: labels AND together; state.
    let filtered = |api: &mut Api, q: &str| -> Vec<String> {
        names(&api.ok(&format!("/api/v1/probes?{q}")))
            .into_iter()
            .map(String::from)
            .collect()
    };
    assert_eq!(filtered(&mut api, "label=team:core"), ["web", "down"]);
    assert_eq!(
        filtered(&mut api, "label=team:core&label=tier:front"),
        ["web"]
    );
    assert_eq!(
        filtered(&mut api, "label=team:nobody"),
        Vec::<String>::new()
    );
    // `alert: false` tracks the state all the same.
    assert_eq!(filtered(&mut api, "state=down"), ["down", "secret"]);
    assert_eq!(filtered(&mut api, "state=up&label=team:edge"), ["edge"]);

    // Detail: the list's fields, stats over four windows, the open incident.
    let detail = api.ok("/api/v1/probes/down");
    for key in ["1h", "24h", "7d", "30d"] {
        let s = &detail["stats"][key];
        assert!(s["count"].as_u64().unwrap() >= 1, "{key}: {s}");
        assert_eq!(s["failures"], s["count"], "{key}: {s}");
        assert_eq!(s["uptime"], 0.0);
    }
    let inc = &detail["incident"];
    assert_eq!(inc["state"], "open");
    assert_eq!(inc["probe"], "down");
    assert!(inc["first_failure"]["class"].is_string(), "{inc}");
    assert!(inc["last_failure"]["message"].is_string(), "{inc}");
    assert!(inc["ended_at"].is_null());
    let web = api.ok("/api/v1/probes/web");
    assert!(web["incident"].is_null());
    assert_eq!(web["stats"]["1h"]["failures"], 0);

    // Every route is documented, every documented API path is routed.
    let routed: HashSet<&str> = lookout::server::api::paths().into_iter().collect();
    let documented: HashSet<String> = api.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| p.starts_with("/api/"))
        .cloned()
        .collect();
    assert_eq!(
        routed,
        documented
            .iter()
            .map(String::as_str)
            .collect::<HashSet<_>>()
    );
    let incident_id = inc["id"].to_string();
    for p in &documented {
        let (status, _) = api.get(&p.replace("{name}", "web").replace("{id}", &incident_id));
        assert_eq!(status, 200, "GET {p}");
    }
    for p in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/badge/{name}.svg",
        "/",
        "/probes/{name}",
    ] {
        assert!(api.doc["paths"].get(p).is_some(), "{p} is not documented");
    }
    // The served document is the embedded one, and its examples fit.
    assert_eq!(api.ok("/api/v1/openapi.json"), api.doc);
    let schemas = api.doc["components"]["schemas"].as_object().unwrap();
    let mut examples = 0;
    for (name, schema) in schemas {
        for ex in schema["examples"].as_array().into_iter().flatten() {
            let mut errs = Vec::new();
            check(&api.doc, schema, ex, name, &mut errs);
            assert!(errs.is_empty(), "example of {name}: {errs:?}");
            examples += 1;
        }
    }
    assert!(examples >= 2);
    assert_no_secret(&api.stop());
}

#[test]
fn api_results_pages_walk_every_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = target(|n| n % 3 != 0);
    let mut api = start(
        dir.path(),
        &format!("  - name: flaky\n    http: {{ url: \"http://127.0.0.1:{flaky}/\" }}\n    expect: {{ status: 200 }}\n"),
    );
    // Fix the window's end, then wait for a run that started well after
    // it: every run that started before it is then written.
    api.wait_for("/api/v1/probes/flaky/results?limit=1", "a first run", |v| {
        !v["results"].as_array().unwrap().is_empty()
    });
    let until = Utc::now() + chrono::TimeDelta::milliseconds(1500);
    let later = until + chrono::TimeDelta::seconds(1);
    api.wait_for(
        "/api/v1/probes/flaky/results?limit=1",
        "runs past the window",
        |v| {
            v["results"][0]["started_at"]
                .as_str()
                .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok_and(|t| t > later))
        },
    );

    let db = lookout::store::Store::open(dir.path().join("data/lookout.db")).unwrap();
    let since = DateTime::<Utc>::UNIX_EPOCH;
    let stored = db
        .results_between("flaky", since, until, usize::MAX)
        .unwrap();
    assert!(stored.len() >= 15, "only {} runs", stored.len());
    // Durations compared in whole microseconds, the stored precision.
    let expected: Vec<(String, bool, u128)> = stored
        .iter()
        .map(|r| (ts(r.started_at), r.success, r.duration.as_micros()))
        .collect();
    let shape = |items: &[Value]| -> Vec<(String, bool, u128)> {
        items
            .iter()
            .map(|r| {
                (
                    r["started_at"].as_str().unwrap().to_string(),
                    r["success"].as_bool().unwrap(),
                    (r["duration_ms"].as_f64().unwrap() * 1000.0).round() as u128,
                )
            })
            .collect()
    };
    let until_q = ts(until);
    for limit in [1, 4, 7, 1000] {
        let walked = api.walk(
            &format!("/api/v1/probes/flaky/results?limit={limit}&until={until_q}"),
            "results",
            limit,
        );
        assert_eq!(shape(&walked), expected, "limit {limit}");
    }
    // `since` in unix ms and `until` with an offset (`+` sent as %2B).
    let mid = &stored[stored.len() / 2];
    let offset = until
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Millis, false)
        .replace('+', "%2B");
    let walked = api.walk(
        &format!(
            "/api/v1/probes/flaky/results?limit=5&since={}&until={offset}",
            mid.started_at.timestamp_millis()
        ),
        "results",
        5,
    );
    let from_mid: Vec<_> = expected
        .iter()
        .filter(|(t, _, _)| *t >= ts(mid.started_at))
        .cloned()
        .collect();
    assert_eq!(shape(&walked), from_mid);
    // A result in full: phases, failures with class and message.
    let page = api.ok(&format!("/api/v1/probes/flaky/results?until={until_q}"));
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), expected.len().min(100), "default limit 100");
    // Runs on a busy machine may time out; most see the 503.
    let failed = results
        .iter()
        .find(|r| r["failure"]["class"] == "expectation")
        .unwrap();
    assert!(failed["failure"]["message"]
        .as_str()
        .unwrap()
        .contains("503"));
    assert_eq!(failed["details"]["status"], 503);
    for r in results.iter().filter(|r| r["success"] == true) {
        let phases = r["phases_ms"].as_object().unwrap();
        assert!(
            phases.contains_key("connect") && phases.contains_key("first_byte"),
            "{r}"
        );
    }
    api.stop();
}

/// Floor of `t` to the minute.
fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap()
}

#[test]
fn api_stats_count_exactly_what_was_probed() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = target(|n| n % 3 != 0);
    let bad = target(|_| false);
    let probes = |schedule: &str| {
        format!(
            "  - name: flaky\n    http: {{ url: \"http://127.0.0.1:{flaky}/\" }}\n    {schedule}\n    expect: {{ status: 200 }}\n\
             \x20 - name: down\n    http: {{ url: \"http://127.0.0.1:{bad}/\" }}\n    {schedule}\n    expect: {{ status: 200 }}\n"
        )
    };
    let started = Utc::now();
    let mut api = start(dir.path(), &probes("interval: 100ms"));
    api.wait_for("/api/v1/probes/flaky/results?limit=20", "20 runs", |v| {
        v["results"].as_array().unwrap().len() == 20
    });
    api.stop();

    // Count what was recorded, then serve it from a daemon that probes no
    // more (its probes run once a year).
    let db = lookout::store::Store::open(dir.path().join("data/lookout.db")).unwrap();
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let far = Utc::now() + chrono::TimeDelta::days(1);
    let rows = |name: &str| db.results_between(name, epoch, far, usize::MAX).unwrap();
    let (flaky_rows, down_rows) = (rows("flaky"), rows("down"));
    drop(db);
    let mut api = start(dir.path(), &probes("cron: \"0 0 1 1 *\""));

    let since = minute(started);
    let until = minute(Utc::now()) + chrono::TimeDelta::minutes(1);
    for (name, stored) in [("flaky", &flaky_rows), ("down", &down_rows)] {
        let failures = stored.iter().filter(|r| !r.success).count() as u64;
        let durations: Vec<f64> = stored
            .iter()
            .map(|r| r.duration.as_secs_f64() * 1000.0)
            .collect();
        let min = durations.iter().copied().fold(f64::INFINITY, f64::min);
        let max = durations.iter().copied().fold(0.0, f64::max);
        let q = format!(
            "/api/v1/probes/{name}/stats?since={}&until={}&step=1m",
            ts(since),
            ts(until)
        );
        let s = api.ok(&q);
        assert_eq!(s["count"], stored.len() as u64, "{name}: {s:#}");
        assert_eq!(s["failures"], failures, "{name}");
        let uptime = (stored.len() as u64 - failures) as f64 / stored.len() as f64;
        assert!(
            (s["uptime"].as_f64().unwrap() - uptime).abs() < 1e-9,
            "{name}"
        );
        assert!(
            (s["min_ms"].as_f64().unwrap() - min).abs() < 1e-3,
            "{name}: {s} vs {min}"
        );
        assert!(
            (s["max_ms"].as_f64().unwrap() - max).abs() < 1e-3,
            "{name}: {s} vs {max}"
        );
        for p in ["p50_ms", "p95_ms", "p99_ms", "mean_ms"] {
            let v = s[p].as_f64().unwrap();
            assert!(
                v >= min * 0.98 && v <= max * 1.02,
                "{name} {p}={v} outside [{min}, {max}]"
            );
        }
        assert_eq!(s["window"]["since"], ts(since));
        assert_eq!(s["step_ms"], 60_000.0);
        let series = s["series"].as_array().unwrap();
        assert_eq!(series.len() as i64, (until - since).num_minutes());
        let sum = |k: &str| series.iter().map(|p| p[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(
            (sum("count"), sum("failures")),
            (stored.len() as u64, failures)
        );

        // The detail's windows all hold every run, and the list shows the
        // stored last run after the restart.
        let d = api.ok(&format!("/api/v1/probes/{name}"));
        for w in ["1h", "24h", "7d", "30d"] {
            assert_eq!(d["stats"][w]["count"], stored.len() as u64, "{name} {w}");
        }
        let last = stored.iter().map(|r| r.started_at).max().unwrap();
        assert_eq!(d["last"]["started_at"], ts(last), "{name}");
        assert!((d["uptime_24h"].as_f64().unwrap() - uptime).abs() < 1e-9);
    }
    // The default window is the last 24h, rounded up to whole minutes.
    let s = api.ok("/api/v1/probes/down/stats");
    assert_eq!(s["count"], down_rows.len() as u64);
    let (a, b) = (time(&s["window"]["since"]), time(&s["window"]["until"]));
    assert_eq!(b - a, chrono::TimeDelta::days(1));
    assert!(a.timestamp() % 60 == 0 && b.timestamp() % 60 == 0);
    assert!((b - Utc::now()).num_seconds().abs() <= 61, "{b}");
    assert!(s.get("series").is_none());
    let s = api.ok("/api/v1/probes/down/stats?window=90m");
    assert_eq!(s["count"], down_rows.len() as u64);
    api.stop();
}

#[test]
fn api_incidents_open_then_resolve_and_paginate() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let port = target(move |_| h.load(Ordering::SeqCst));
    let always = target(|_| true);
    let mut api = start(
        dir.path(),
        &format!(
            "  - name: flip\n    http: {{ url: \"http://127.0.0.1:{port}/\" }}\n    expect: {{ status: 200 }}\n    alert: {{ after: 2, recover_after: 2 }}\n\
             \x20 - name: steady\n    http: {{ url: \"http://127.0.0.1:{always}/\" }}\n"
        ),
    );
    api.wait_for("/api/v1/probes?state=up", "flip up", |v| {
        names(v).contains(&"flip")
    });
    let count = |v: &Value| v["incidents"].as_array().unwrap().len();
    for round in 1..=3 {
        healthy.store(false, Ordering::SeqCst);
        let open = api.wait_for(
            "/api/v1/incidents?probe=flip&state=open",
            "an open incident",
            |v| count(v) == 1,
        );
        let inc = &open["incidents"][0];
        assert_eq!(inc["state"], "open");
        assert!(inc["ended_at"].is_null());
        assert!(inc["streak"].as_u64().unwrap() >= 2);
        assert!(inc["first_failure"]["class"].is_string(), "{inc}");
        assert!(time(&inc["opened_at"]) >= time(&inc["started_at"]));
        let detail = api.ok("/api/v1/probes/flip");
        assert_eq!(detail["state"], "down");
        assert_eq!(detail["incident"]["id"], inc["id"]);

        healthy.store(true, Ordering::SeqCst);
        let done = api.wait_for(
            "/api/v1/incidents?probe=flip&state=resolved",
            "resolved",
            |v| count(v) == round,
        );
        let inc = &done["incidents"][0];
        assert_eq!(inc["state"], "resolved");
        let (start, end) = (time(&inc["started_at"]), time(&inc["ended_at"]));
        let ms = (end - start).num_milliseconds() as f64;
        assert!(
            (inc["duration_ms"].as_f64().unwrap() - ms).abs() < 1.0,
            "{inc}"
        );
        assert_eq!(count(&api.ok("/api/v1/incidents?probe=flip&state=open")), 0);
    }
    // Every page of one at a time: the three, newest first, once each.
    let all = api.ok("/api/v1/incidents?limit=1000");
    let all = all["incidents"].as_array().unwrap();
    assert_eq!(all.len(), 3, "steady never failed: {all:?}");
    let walked = api.walk("/api/v1/incidents?limit=1", "incidents", 1);
    assert_eq!(&walked, all);
    let starts: Vec<DateTime<Utc>> = walked.iter().map(|i| time(&i["started_at"])).collect();
    assert!(starts.windows(2).all(|w| w[0] > w[1]), "{starts:?}");
    let walked = api.walk(
        "/api/v1/incidents?probe=flip&state=resolved&limit=2",
        "incidents",
        2,
    );
    assert_eq!(&walked, all);
    assert_eq!(count(&api.ok("/api/v1/incidents?probe=steady")), 0);
    api.stop();
}

#[test]
fn api_rejects_bad_parameters_with_a_json_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let ok = target(|_| true);
    let mut api = start(
        dir.path(),
        &format!("  - name: web\n    http: {{ url: \"http://127.0.0.1:{ok}/\" }}\n"),
    );
    api.wait_for("/api/v1/probes/web/results", "a run", |v| {
        !v["results"].as_array().unwrap().is_empty()
    });
    let incident_cursor = "aTEuMQ"; // an incidents cursor ("i1.1")
    let results = "/api/v1/probes/web/results";
    let stats = "/api/v1/probes/web/stats";
    let cases: Vec<(String, u16, &str)> = [
        (
            "/api/v1/probes?label=team",
            400,
            "`label` must be key:value",
        ),
        (
            "/api/v1/probes?state=sideways",
            400,
            "`state` must be one of",
        ),
        (
            "/api/v1/probes?colour=red",
            400,
            "unknown query parameter `colour`",
        ),
        ("/api/v1/probes?state=up&state=down", 400, "more than once"),
        ("/api/v1/probes/web?window=1h", 400, "takes none"),
        ("/api/v1/probes/nope", 404, "no probe named `nope`"),
        ("/api/v1/probes/nope/results", 404, "no probe named `nope`"),
        ("/api/v1/probes/nope/stats", 404, "no probe named `nope`"),
        ("/api/v1/nothing", 404, "no API endpoint at /api/v1/nothing"),
        ("/api/v2/probes", 404, "no API endpoint"),
        ("/api/v1/probes/web/results/extra", 404, "no API endpoint"),
        (
            &format!("{results}?limit=0"),
            400,
            "`limit` must be a whole number from 1 to 1000",
        ),
        (&format!("{results}?limit=1001"), 400, "from 1 to 1000"),
        (&format!("{results}?limit=ten"), 400, "not `ten`"),
        (&format!("{results}?limit="), 400, "`limit` is empty"),
        (
            &format!("{results}?since=yesterday"),
            400,
            "`since` must be an RFC 3339 time",
        ),
        (
            &format!("{results}?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z"),
            400,
            "`since` (2025-01-02T00:00:00.000Z) must be before `until`",
        ),
        (
            &format!("{results}?before=garbage"),
            400,
            "`before` is not a cursor",
        ),
        (
            &format!("{results}?before={incident_cursor}"),
            400,
            "`before` is not a cursor",
        ),
        (&format!("{stats}?window=fortnight"), 400, "`window`"),
        (
            &format!("{stats}?window=0s"),
            400,
            "`window` must be at least 1ms",
        ),
        (
            &format!("{stats}?window=1h&since=2025-01-01T00:00:00Z"),
            400,
            "either `window` or `since`",
        ),
        (
            &format!("{stats}?since=2025-01-01T00:00:10Z&until=2025-01-01T00:00:50Z"),
            400,
            "minute resolution",
        ),
        (
            &format!("{stats}?step=1m&window=7d"),
            400,
            "10080 points; at most 1440",
        ),
        (
            &format!("{stats}?step=10s"),
            400,
            "`step` must be at least 1m",
        ),
        (
            &format!("{stats}?until=1700000000000&since=1800000000000"),
            400,
            "must be before",
        ),
        (
            "/api/v1/incidents?state=closed",
            400,
            "`state` must be open or resolved",
        ),
        ("/api/v1/incidents?probe=nope", 404, "no probe named `nope`"),
        ("/api/v1/incidents?limit=0", 400, "`limit`"),
        (
            "/api/v1/incidents?before=cjEuMQ",
            400,
            "`before` is not a cursor",
        ),
        (
            "/api/v1/openapi.json?x=1",
            400,
            "unknown query parameter `x`",
        ),
    ]
    .into_iter()
    .map(|(p, s, w)| (p.to_string(), s, w))
    .collect();
    for (path, status, words) in &cases {
        let (got, body) = match template(&api.doc, path) {
            Some(_) => api.get(path),
            None => {
                let (s, b) = request(api.port, "GET", path).unwrap();
                (s, serde_json::from_str(&b).unwrap())
            }
        };
        assert_eq!(got, *status, "GET {path}: {body}");
        let obj = body.as_object().unwrap();
        assert_eq!(obj.len(), 1, "GET {path}: only `error`: {body}");
        let msg = obj["error"].as_str().unwrap();
        assert!(msg.contains(words), "GET {path}: `{words}` not in `{msg}`");
    }
    // Other methods: 405 with the same body.
    for (method, path) in [("POST", "/api/v1/probes"), ("DELETE", "/api/v1/incidents")] {
        let (status, body) = request(api.port, method, path).unwrap();
        assert_eq!(status, 405, "{method} {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("the API answers GET (and POST on /api/v1/events)"),
            "{v}"
        );
    }
    api.stop();
}
