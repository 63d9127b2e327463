//! Integration tests: W3C trace context on HTTP probes and OTLP span
//! export, against real servers. They check what an operator relies on to
//! find a failing probe's request in the backend's traces: the target
//! receives a `traceparent` whose trace id is the one the result records
//! (fresh each run, a span id per request, one trace for all steps of a
//! flow), a probe's own `traceparent` is left alone, vendor headers carry
//! the same ids, statuspage probes send nothing, bad `tracing` sections are
//! refused at their line and key, and a collector receives each run as a
//! span with that trace id and the failure, from the exporter and from a
//! real `lookout run` (whose probe page links the trace id).

use std::time::Duration;

use lookout::config::{load_str, read::Cx, Config};
use lookout::otlp::{self, Settings};
use lookout::probe::run_once;
use lookout::result::ProbeResult;
use lookout::server::{ProbeInfo, ProbeSet};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::harness::daemon::start_in;
use crate::harness::http_server::{ok, serve, Reply, Seen, Server};
use crate::harness::recorder::{Answer, Recorded, Recorder};
use crate::harness::{detail, probe_from_yaml, probe_with, probes_from_yaml};

/// `(trace id, span id, flags)` of a `traceparent` value; panics on any
/// other shape.
fn parts(traceparent: &str) -> (String, String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    assert_eq!(p[0], "00", "{traceparent}");
    assert_eq!(p[1].len(), 32, "{traceparent}");
    assert_eq!(p[2].len(), 16, "{traceparent}");
    assert_ne!(p[1], "0".repeat(32));
    assert_ne!(p[2], "0".repeat(16));
    (p[1].into(), p[2].into(), p[3].into())
}

fn received(seen: &Seen) -> (String, String, String) {
    parts(
        seen.header("traceparent")
            .unwrap_or_else(|| panic!("no traceparent in {seen:?}")),
    )
}

fn trace_id(r: &ProbeResult) -> String {
    detail(r, "trace_id")
        .as_str()
        .unwrap_or_else(|| panic!("no trace_id in {:?}", r.details))
        .to_string()
}

fn url(server: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.port)
}

#[tokio::test]
async fn the_target_receives_the_recorded_trace_id_fresh_each_run() {
    let server = serve(None, |_| ok()).await;
    let spec = probe_with(
        "http",
        &format!("{{url: \"{}\"}}", url(&server, "/health")),
        "",
        "2s",
    );
    let first = run_once(&spec).await;
    let second = run_once(&spec).await;
    assert!(first.success && second.success, "{first:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let (t1, s1, flags) = received(&seen[0]);
    let (t2, s2, _) = received(&seen[1]);
    assert_eq!(flags, "01", "sampled");
    assert_eq!(t1, trace_id(&first));
    assert_eq!(t2, trace_id(&second));
    assert_ne!(t1, t2, "a fresh trace id per run");
    assert_ne!(s1, s2);
    // A single-request run sends its root span: the trace id's low half.
    assert_eq!(s1, t1[16..]);
    assert!(lookout::tracectx::is_trace_id(&t1), "lower-case hex: {t1}");
}

#[tokio::test]
async fn each_redirect_hop_has_its_own_span_in_the_runs_trace() {
    let server = serve(None, |req: &Seen| -> Reply {
        match req.target.as_str() {
            "/old" => {
                Reply::from((302, "text/plain", String::new())).with_header("location", "/new")
            }
            _ => ok().into(),
        }
    })
    .await;
    let spec = probe_with(
        "http",
        &format!("{{url: \"{}\"}}", url(&server, "/old")),
        "",
        "2s",
    );
    let r = run_once(&spec).await;
    assert!(r.success, "{r:?}");
    assert_eq!(detail(&r, "redirects"), 1);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let (t1, s1, _) = received(&seen[0]);
    let (t2, s2, _) = received(&seen[1]);
    assert_eq!(
        (t1.as_str(), t2.as_str()),
        (trace_id(&r).as_str(), trace_id(&r).as_str())
    );
    assert_ne!(s1, s2, "a span id per request");
}

#[tokio::test]
async fn a_flows_steps_share_the_runs_trace_id_each_with_its_own_span() {
    let server = serve(None, |req: &Seen| -> Reply {
        match req.target.as_str() {
            "/login" => crate::harness::http_server::json(200, json!({"token": "t-1"})).into(),
            _ => ok().into(),
        }
    })
    .await;
    let spec = probe_from_yaml(&format!(
        "probes:\n  - name: f\n    timeout: 3s\n    flow:\n      steps:\n\
         \x20       - name: login\n          url: \"{login}\"\n          method: POST\n\
         \x20         capture: {{ token: {{ json: $.token, secret: false }} }}\n\
         \x20       - name: orders\n          url: \"{orders}\"\n\
         \x20         headers: {{ X-Token: \"${{steps.login.token}}\" }}\n\
         \x20       - name: logout\n          url: \"{logout}\"\n          method: POST\n          always: true\n",
        login = url(&server, "/login"),
        orders = url(&server, "/orders"),
        logout = url(&server, "/logout"),
    ));
    let r = run_once(&spec).await;
    assert!(r.success, "{r:?}");
    let trace = trace_id(&r);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let spans: Vec<String> = seen
        .iter()
        .map(|s| {
            let (t, span, _) = received(s);
            assert_eq!(t, trace, "every step is in the run's trace");
            span
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = spans.iter().collect();
    assert_eq!(distinct.len(), 3, "{spans:?}");
    // The root span is the flow itself, so no step sends it.
    assert!(!spans.contains(&trace[16..].to_string()));
    // Recorded once, at the top; each step names the span it sent.
    let steps = detail(&r, "steps");
    for (i, step) in steps.as_array().expect("steps").iter().enumerate() {
        assert_eq!(step["span_id"], spans[i].as_str(), "{step}");
        assert!(step.get("trace_id").is_none(), "{step}");
    }
}

#[tokio::test]
async fn a_probes_own_traceparent_is_left_alone() {
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let server = serve(None, |_| ok()).await;
    let spec = probe_with(
        "http",
        &format!(
            "{{url: \"{}\", headers: {{ traceparent: \"{own}\" }}}}",
            url(&server, "/")
        ),
        "",
        "2s",
    );
    let r = run_once(&spec).await;
    assert!(r.success, "{r:?}");
    let seen = server.last();
    let sent: Vec<&(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| n == "traceparent")
        .collect();
    assert_eq!(sent.len(), 1, "{seen:?}");
    assert_eq!(sent[0].1, own);
    // Lookout did not choose this trace: it records none of its own.
    assert_eq!(detail(&r, "trace_id"), Value::Null);
}

/// The one probe of `tracing` (a YAML mapping body) and a probe section.
fn traced(tracing: &str, probe: &str) -> lookout::config::ProbeSpec {
    probe_from_yaml(&format!(
        "tracing:\n{tracing}probes:\n  - name: t\n    timeout: 2s\n{probe}"
    ))
}

#[tokio::test]
async fn vendor_headers_carry_the_same_trace_and_span() {
    let server = serve(None, |_| ok()).await;
    let http = format!("    http: {{url: \"{}\"}}\n", url(&server, "/"));

    let r = run_once(&traced("  vendor_header: X-Cloud-Trace-Context\n", &http)).await;
    let seen = server.last();
    let (t, span, _) = received(&seen);
    assert_eq!(t, trace_id(&r));
    let span_dec = u64::from_str_radix(&span, 16).expect("hex span");
    assert_eq!(
        seen.header("x-cloud-trace-context"),
        Some(format!("{t}/{span_dec};o=1").as_str())
    );
    assert_eq!(seen.header("b3"), None);

    let r = run_once(&traced("  vendor_header: b3\n", &http)).await;
    let seen = server.last();
    let (t, span, _) = received(&seen);
    assert_eq!(t, trace_id(&r));
    assert_eq!(seen.header("b3"), Some(format!("{t}-{span}-1").as_str()));

    let r = run_once(&traced("  propagate: false\n", &http)).await;
    assert!(r.success, "{r:?}");
    let seen = server.last();
    assert_eq!(seen.header("traceparent"), None);
    assert_eq!(detail(&r, "trace_id"), Value::Null);
}

#[tokio::test]
async fn statuspage_probes_send_no_trace_context() {
    let server = serve(None, |_| {
        crate::harness::http_server::json(
            200,
            json!({"status": {"indicator": "none", "description": "ok"}, "components": [], "incidents": []}),
        )
    })
    .await;
    let spec = probe_with(
        "statuspage",
        &format!("{{url: \"{}\"}}", url(&server, "/api/v2/summary.json")),
        "",
        "2s",
    );
    let r = run_once(&spec).await;
    assert!(r.success, "{r:?}");
    assert_eq!(server.last().header("traceparent"), None);
    assert_eq!(detail(&r, "trace_id"), Value::Null);
}

/// Every diagnostic of a configuration as "line key: message".
fn errors(yaml: &str) -> Vec<String> {
    match load_str("lookout.yaml", yaml, Cx::new(Box::new(|_| None))) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(d) => {
            d.0.iter()
                .map(|d| format!("{} {}: {}", d.line, d.key, d.message))
                .collect()
        }
    }
}

fn has(errors: &[String], start: &str, words: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(start) && e.contains(words)),
        "no `{start}` … `{words}` in {errors:#?}"
    );
}

#[test]
fn bad_tracing_sections_are_refused_at_their_line_and_key() {
    let e = errors(
        "storage: { sqlite: x.db }\ntracing:\n  propagate: yes please\n  vendor_header: x-cloud-trace-contxt\n  link: \"https://tempo.example.com/explore?traceId=\"\n  otlp:\n    endpoint: grpc://127.0.0.1:4317\n    service_nme: x\n",
    );
    has(&e, "3 tracing.propagate:", "expected true or false");
    has(
        &e,
        "4 tracing.vendor_header:",
        "did you mean `x-cloud-trace-context`?",
    );
    has(&e, "5 tracing.link:", "must contain {trace_id}");
    has(&e, "7 tracing.otlp.endpoint:", "found scheme `grpc`");
    has(
        &e,
        "8 tracing.otlp.service_nme:",
        "did you mean `service_name`?",
    );

    let e = errors("tracing:\n  vendor_header: jaeger\n  tracing_link: x\n");
    has(
        &e,
        "2 tracing.vendor_header:",
        "supported: x-cloud-trace-context, b3",
    );
    has(&e, "3 tracing.tracing_link:", "unknown key");

    let e = errors("tracing:\n  propagate: false\n  vendor_header: b3\n  otlp: {}\n");
    has(&e, "3 tracing.vendor_header:", "only beside traceparent");
    has(&e, "4 tracing.otlp:", "missing required key `endpoint`");

    let e = errors("tracing:\n  link: \"javascript:alert({trace_id})\"\n");
    has(&e, "2 tracing.link:", "http:// or https://");
}

#[test]
fn a_good_tracing_section_compiles_and_its_token_is_a_secret() {
    let yaml = "tracing:\n  vendor_header: B3\n  link: \"https://tempo.example.com/trace/{trace_id}\"\n  otlp:\n    endpoint: http://127.0.0.1:4318/v1/traces\n    headers: { Authorization: \"Bearer otlp-token-5e1f0c2a\" }\n";
    let (cfg, _) = load_str("lookout.yaml", yaml, Cx::default()).expect("valid");
    assert!(cfg.tracing.propagate);
    assert_eq!(
        cfg.tracing.link.as_deref(),
        Some("https://tempo.example.com/trace/{trace_id}")
    );
    let otlp = cfg.tracing.otlp.as_ref().expect("otlp");
    assert_eq!(otlp.service_name, "lookout");
    assert!(!format!("{cfg:?}").contains("otlp-token-5e1f0c2a"));
    assert_eq!(
        lookout::redact::redact("sent Bearer otlp-token-5e1f0c2a"),
        "sent ***"
    );
}

/// Every span of every OTLP request `rec` received.
fn spans(reqs: &[Recorded]) -> Vec<Value> {
    reqs.iter()
        .filter(|r| r.method == "POST")
        .flat_map(|r| {
            let doc = r.json();
            let mut out = Vec::new();
            for rs in doc["resourceSpans"].as_array().cloned().unwrap_or_default() {
                for ss in rs["scopeSpans"].as_array().cloned().unwrap_or_default() {
                    out.extend(ss["spans"].as_array().cloned().unwrap_or_default());
                }
            }
            out
        })
        .collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| &kv["value"])
        .unwrap_or(&Value::Null)
}

fn otlp_config(endpoint: &str, probe: &str) -> Config {
    let yaml = format!(
        "tracing:\n  otlp:\n    endpoint: \"{endpoint}\"\n    headers: {{ Authorization: \"Bearer otlp-7c1d2e3f\" }}\n    service_name: shop-probes\nprobes:\n{probe}"
    );
    load_str("lookout.yaml", &yaml, Cx::new(Box::new(|_| None)))
        .unwrap_or_else(|d| panic!("{d}"))
        .0
}

#[tokio::test]
async fn a_failed_run_reaches_the_collector_as_an_error_span_of_its_trace() {
    let target = serve(None, |_| (503, "text/plain", "down".to_string())).await;
    let collector = Recorder::start().await;
    // The collector is briefly overloaded: the batch is retried.
    collector.push(Answer::status(503, "busy"));
    let cfg = otlp_config(
        &collector.url("/v1/traces"),
        &format!(
            "  - name: checkout\n    timeout: 2s\n    http: {{url: \"{}\"}}\n",
            url(&target, "/health")
        ),
    );
    let spec = cfg.probes[0].clone();
    let (exporter, task) = otlp::spawn_with(
        cfg.tracing.otlp.as_ref().expect("otlp"),
        ProbeSet::new(vec![ProbeInfo::of(&spec)]),
        Settings {
            flush_every: Duration::from_millis(50),
            first_backoff: Duration::from_millis(50),
            ..Settings::default()
        },
    );
    let r = run_once(&spec).await;
    assert!(!r.success);
    exporter.offer(&r);

    let reqs = collector.wait_for(2, "OTLP requests").await;
    assert_eq!(reqs[0].text(), reqs[1].text(), "the same batch, retried");
    let req = &reqs[1];
    assert_eq!(req.path, "/v1/traces");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("authorization"), Some("Bearer otlp-7c1d2e3f"));
    let doc = req.json();
    assert_eq!(
        doc["resourceSpans"][0]["resource"]["attributes"][0],
        json!({"key": "service.name", "value": {"stringValue": "shop-probes"}})
    );
    let all = spans(&reqs[1..]);
    assert_eq!(all.len(), 1, "{all:?}");
    let span = &all[0];
    let trace = trace_id(&r);
    let (sent_trace, sent_span, _) = received(&target.last());
    assert_eq!(span["traceId"], trace.as_str());
    assert_eq!(sent_trace, trace);
    // The backend's server span is a child of the exported one.
    assert_eq!(span["spanId"], sent_span.as_str());
    assert_eq!(span["name"], "checkout");
    assert_eq!(span["kind"], 3);
    assert_eq!(span["status"]["code"], 2);
    let message = r.failure.as_ref().expect("failure").message.clone();
    assert_eq!(span["status"]["message"], message.as_str());
    assert_eq!(
        attr(span, "lookout.probe"),
        &json!({"stringValue": "checkout"})
    );
    assert_eq!(attr(span, "lookout.kind"), &json!({"stringValue": "http"}));
    assert_eq!(
        attr(span, "lookout.target"),
        &json!({"stringValue": url(&target, "/health")})
    );
    assert_eq!(
        attr(span, "lookout.failure_class"),
        &json!({"stringValue": "expectation"})
    );
    assert_eq!(
        attr(span, "http.response.status_code"),
        &json!({"intValue": "503"})
    );
    let start: u128 = span["startTimeUnixNano"]
        .as_str()
        .expect("start")
        .parse()
        .expect("nanos");
    let end: u128 = span["endTimeUnixNano"]
        .as_str()
        .expect("end")
        .parse()
        .expect("nanos");
    assert_eq!(end - start, r.duration.as_nanos());
    let events: Vec<&str> = span["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        events.contains(&"connect") && events.contains(&"first_byte"),
        "{events:?}"
    );

    let stats = exporter.stats();
    drop(exporter);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the exporter ends once its sender is gone")
        .expect("no panic");
    use std::sync::atomic::Ordering;
    assert_eq!(stats.exported.load(Ordering::Relaxed), 1);
    assert_eq!(stats.failed_requests.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_flow_is_one_span_with_a_child_per_step() {
    let target = serve(None, |_| ok()).await;
    let collector = Recorder::start().await;
    let cfg = otlp_config(
        &collector.url("/v1/traces"),
        &format!(
            "  - name: walk\n    timeout: 3s\n    flow:\n      steps:\n        - name: a\n          url: \"{}\"\n        - name: b\n          url: \"{}\"\n",
            url(&target, "/a"),
            url(&target, "/b")
        ),
    );
    let spec = cfg.probes[0].clone();
    let (exporter, _task) = otlp::spawn_with(
        cfg.tracing.otlp.as_ref().expect("otlp"),
        ProbeSet::new(vec![ProbeInfo::of(&spec)]),
        Settings {
            flush_every: Duration::from_millis(50),
            ..Settings::default()
        },
    );
    let r = run_once(&spec).await;
    assert!(r.success, "{r:?}");
    exporter.offer(&r);
    let all = spans(&collector.wait_for(1, "OTLP request").await);
    assert_eq!(all.len(), 3, "{all:#?}");
    let trace = trace_id(&r);
    let root = &all[0];
    assert_eq!(root["name"], "walk");
    assert_eq!(root["status"]["code"], 1);
    let seen = target.seen();
    for (i, step) in all[1..].iter().enumerate() {
        let (t, span, _) = received(&seen[i]);
        assert_eq!(t, trace);
        assert_eq!(step["traceId"], trace.as_str());
        assert_eq!(step["spanId"], span.as_str());
        assert_eq!(step["parentSpanId"], root["spanId"]);
        assert_eq!(
            attr(step, "http.response.status_code"),
            &json!({"intValue": "200"})
        );
    }
    assert_eq!(all[1]["name"], "step a");
}

#[tokio::test]
async fn the_daemon_exports_spans_and_links_trace_ids_on_the_probe_page() {
    let target = serve(None, |_| (500, "text/plain", "boom".to_string())).await;
    let collector = Recorder::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start_in(dir.path(), |port| {
        format!(
            "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\n\
             tracing:\n  link: \"https://tempo.example.com/trace/{{trace_id}}?from=lookout&x=<y>\"\n\
             \x20 otlp: {{ endpoint: \"{}\" }}\n\
             probes:\n  - name: pay\n    interval: 300ms\n    timeout: 250ms\n    http: {{ url: \"{}\" }}\n",
            collector.url("/v1/traces"),
            url(&target, "/pay")
        )
    });
    d.wait_results("pay", 1).await;
    let all = spans(&collector.wait_for(1, "OTLP request").await);
    let span = all.first().expect("a span");
    let sent: Vec<String> = target.seen().iter().map(|s| received(s).0).collect();
    let exported = span["traceId"].as_str().expect("traceId").to_string();
    assert!(sent.contains(&exported), "{exported} not in {sent:?}");
    assert_eq!(span["status"]["code"], 2);
    assert_eq!(span["name"], "pay");

    // The probe page links the stored trace id, escaped.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = d.get("/probes/pay");
        if sent.iter().any(|t| page.contains(t.as_str())) {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "no trace id on the page:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let shown = sent
        .iter()
        .find(|t| page.contains(t.as_str()))
        .expect("a trace id");
    assert!(
        page.contains(&format!(
            "href=\"https://tempo.example.com/trace/{shown}?from=lookout&amp;x=&lt;y&gt;\""
        )),
        "{page}"
    );
    // The exporter's counters are on /metrics.
    let metrics = d.get("/metrics");
    let exported = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lookout_otlp_spans_exported_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(exported >= 1.0, "{metrics}");
    assert!(
        metrics.contains("lookout_otlp_spans_dropped_total 0"),
        "{metrics}"
    );
    d.stop().await;
}

#[test]
fn every_http_probe_of_a_configuration_gets_the_sections_propagation() {
    let specs = probes_from_yaml(
        "tracing: { vendor_header: b3 }\nprobes:\n  - name: a\n    http: { url: \"http://127.0.0.1:1/\" }\n  - name: b\n    statuspage: { url: \"http://127.0.0.1:1/s.json\" }\n",
    );
    use lookout::probe::ProbeKind;
    use lookout::tracectx::{Propagation, VendorHeader};
    match (&specs[0].kind, &specs[1].kind) {
        (ProbeKind::Http(h), ProbeKind::Statuspage(sp)) => {
            assert_eq!(
                h.propagation,
                Propagation {
                    traceparent: true,
                    vendor: Some(VendorHeader::B3)
                }
            );
            assert_eq!(sp.http.propagation, Propagation::OFF);
        }
        other => panic!("unexpected kinds {other:?}"),
    }
}
