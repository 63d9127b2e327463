//! OpenTelemetry span export (`tracing.otlp`): every finished run becomes a
//! span (OTLP/HTTP with JSON bodies) sent to a collector, so a probe's
//! failing request sits in the same trace as the backend's own spans. The
//! sink hands results to [`Exporter::offer`], which only tries to put a
//! copy in a bounded queue and counts a drop when it is full; the exporter
//! task batches them (up to 512, or every 2 s) and POSTs `resourceSpans` →
//! `scopeSpans` → `spans`, retrying a connection error, 408, 429 or 5xx
//! with backoff a bounded number of times before it gives the batch up
//! (logged at warn, counted). A run's span is named after the probe, kind
//! CLIENT, with the run's trace id (`details.trace_id`; a fresh one for
//! runs that sent none) and its root span id
//! ([`crate::tracectx::root_span_of`]), status ERROR with the failure
//! message when the run failed, one event per phase, and one child span
//! per flow step (with the span id the step's request carried). This
//! module never blocks the probing path, never logs a header value (the
//! collector's token is a registered secret) and never writes anything but
//! its requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::OtlpConfig;
use crate::probe::http::chain;
use crate::result::ProbeResult;
use crate::server::{ProbeInfo, ProbeSet};
use crate::tracectx::{root_span_of, SpanId, TraceId};

/// OTLP's `SPAN_KIND_CLIENT`.
const SPAN_KIND_CLIENT: u8 = 3;
/// OTLP's `STATUS_CODE_OK` and `STATUS_CODE_ERROR`.
const STATUS_OK: u8 = 1;
const STATUS_ERROR: u8 = 2;
/// How much of a refusing collector's answer a log line quotes.
const ANSWER_MAX: usize = 200;

/// How the exporter batches and retries; [`Settings::default`] in the
/// daemon, shorter times in tests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Results waiting to be exported; more are dropped (and counted).
    pub queue: usize,
    /// The most spans one request carries (a flow's steps add theirs).
    pub max_batch: usize,
    /// A batch is sent this long after its first result at the latest.
    pub flush_every: Duration,
    /// Tries per batch, the first included.
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each next one.
    pub first_backoff: Duration,
    /// The longest wait between tries (a collector's Retry-After too).
    pub max_backoff: Duration,
    /// One request's bound, connecting included.
    pub request_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queue: 4096,
            max_batch: 512,
            flush_every: Duration::from_secs(2),
            attempts: 4,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the exporter did, since start.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Runs whose span a collector accepted.
    pub exported: AtomicU64,
    /// Runs dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Runs whose batch was given up after its tries (or refused).
    pub failed: AtomicU64,
    /// Requests that failed, retried ones included.
    pub failed_requests: AtomicU64,
}

/// The sending side: what the sink holds. Dropping it (with the sink)
/// lets the task send what is queued and end.
pub struct Exporter {
    tx: mpsc::Sender<ProbeResult>,
    stats: Arc<ExportStats>,
}

impl Exporter {
    /// Queues a copy of `r` for export, or counts a drop when the queue is
    /// full; never waits.
    pub fn offer(&self, r: &ProbeResult) {
        match self.tx.try_reserve() {
            Ok(permit) => permit.send(r.clone()),
            Err(_) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // A collector that is down for long drops a span every run:
                // say so at 1, 2, 4, 8... drops, not every time.
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "OTLP export queue full (the collector is slow or down); spans dropped"
                    );
                }
            }
        }
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }
}

/// Starts the exporter task with the daemon's settings. `probes` gives
/// each span its probe's kind and target (a reload's set included).
pub fn spawn(cfg: &OtlpConfig, probes: ProbeSet) -> (Exporter, JoinHandle<()>) {
    spawn_with(cfg, probes, Settings::default())
}

/// [`spawn`] with explicit settings. The task ends once every [`Exporter`]
/// is dropped and the queue is sent (or given up).
pub fn spawn_with(
    cfg: &OtlpConfig,
    probes: ProbeSet,
    settings: Settings,
) -> (Exporter, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let stats = Arc::new(ExportStats::default());
    let task = tokio::spawn(export_loop(
        cfg.clone(),
        probes,
        settings,
        rx,
        stats.clone(),
    ));
    (Exporter { tx, stats }, task)
}

async fn export_loop(
    cfg: OtlpConfig,
    probes: ProbeSet,
    settings: Settings,
    mut rx: mpsc::Receiver<ProbeResult>,
    stats: Arc<ExportStats>,
) {
    let endpoint = crate::redact::redact(cfg.endpoint.as_str());
    let client = match client(&settings).await {
        Ok(c) => c,
        Err(e) => {
            // Offers now count as drops: the receiver is gone.
            tracing::error!(endpoint = %endpoint, error = %e, "OTLP export is off");
            return;
        }
    };
    let mut batch: Vec<ProbeResult> = Vec::with_capacity(settings.max_batch.min(64));
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let flush_at = Instant::now() + settings.flush_every;
        let mut closed = false;
        while batch.len() < settings.max_batch {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => {
                        closed = true;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(flush_at) => break,
            }
        }
        let runs = batch.len() as u64;
        let body = encode(&cfg, &probes, &batch);
        batch.clear();
        match send(&client, &cfg, body, &settings, &stats).await {
            Ok(()) => {
                stats.exported.fetch_add(runs, Ordering::Relaxed);
            }
            Err(e) => {
                let failed = stats.failed.fetch_add(runs, Ordering::Relaxed) + runs;
                tracing::warn!(
                    endpoint = %endpoint,
                    spans = runs,
                    failed_total = failed,
                    error = %e,
                    "OTLP export failed; spans dropped"
                );
            }
        }
        if closed {
            break;
        }
    }
}

/// A client on the ring rustls provider trusting the system's roots,
/// following no redirects.
async fn client(settings: &Settings) -> Result<reqwest::Client, String> {
    // Reading the system trust store blocks: not on a worker thread.
    let config = tokio::task::spawn_blocking(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_root_certificates(crate::probe::tlsutil::system_roots().clone())
                    .with_no_client_auth()
            })
            .map_err(|e| format!("cannot build the TLS configuration: {e}"))
    })
    .await
    .map_err(|e| format!("building the TLS configuration failed: {e}"))??;
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lookout/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Why one request did not deliver.
struct Refused {
    retry: bool,
    /// The collector's Retry-After, if any.
    after: Option<Duration>,
    message: String,
}

/// POSTs `body`, retrying what may pass later; the error is the last
/// try's, in words.
async fn send(
    client: &reqwest::Client,
    cfg: &OtlpConfig,
    body: Vec<u8>,
    settings: &Settings,
    stats: &ExportStats,
) -> Result<(), String> {
    let body = bytes::Bytes::from(body);
    let mut backoff = settings.first_backoff;
    let mut tries = 0;
    loop {
        tries += 1;
        let refused = match post(client, cfg, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(r) => r,
        };
        stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        if !refused.retry {
            return Err(refused.message);
        }
        if tries >= settings.attempts.max(1) {
            return Err(format!("{} (after {tries} tries)", refused.message));
        }
        let wait = refused.after.unwrap_or(backoff).min(settings.max_backoff);
        tracing::debug!(error = %refused.message, retry_in_ms = wait.as_millis() as u64, "OTLP export: retrying");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

async fn post(
    client: &reqwest::Client,
    cfg: &OtlpConfig,
    body: bytes::Bytes,
) -> Result<(), Refused> {
    let mut req = client
        .post(cfg.endpoint.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in &cfg.headers {
        req = req.header(name, value);
    }
    let resp = req.body(body).send().await.map_err(|e| Refused {
        retry: true,
        after: None,
        message: crate::redact::redact(&chain(&e)),
    })?;
    let status = resp.status();
    let after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::duration::retry_after);
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        warn_partial(&text);
        return Ok(());
    }
    let code = status.as_u16();
    let answer: String = text.trim().chars().take(ANSWER_MAX).collect();
    Err(Refused {
        retry: code == 408 || code == 429 || status.is_server_error(),
        after,
        message: crate::redact::redact(&format!("the collector answered HTTP {code}: {answer}")),
    })
}

/// A collector that took the request but rejected some spans says so in
/// `partialSuccess`.
fn warn_partial(answer: &str) {
    let Ok(doc) = serde_json::from_str::<Json>(answer) else {
        return;
    };
    let Some(p) = doc.get("partialSuccess") else {
        return;
    };
    let rejected = match p.get("rejectedSpans") {
        Some(Json::String(s)) => s.parse::<u64>().unwrap_or(0),
        Some(Json::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    if rejected > 0 {
        let why = p.get("errorMessage").and_then(Json::as_str).unwrap_or("");
        tracing::warn!(
            rejected,
            error = %crate::redact::redact(why),
            "the OTLP collector rejected some spans"
        );
    }
}

// ---------------------------------------------------------------------------
// Encoding (OTLP/HTTP JSON: ids in hex, 64-bit integers as strings, enums
// as integers)

/// One `ExportTraceServiceRequest` holding every run of `batch`.
pub fn encode(cfg: &OtlpConfig, probes: &ProbeSet, batch: &[ProbeResult]) -> Vec<u8> {
    let infos = probes.load();
    let by_name: HashMap<&str, &ProbeInfo> = infos.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut spans = Vec::with_capacity(batch.len());
    for r in batch {
        spans_of(r, by_name.get(r.probe.as_str()).copied(), &mut spans);
    }
    let doc = json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [
                    kv("service.name", s(&cfg.service_name)),
                    kv("service.version", s(env!("CARGO_PKG_VERSION"))),
                ]
            },
            "scopeSpans": [{
                "scope": {"name": "lookout", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }]
        }]
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn kv(key: &str, value: Json) -> Json {
    json!({"key": key, "value": value})
}

fn s(v: &str) -> Json {
    json!({"stringValue": v})
}

fn int(v: i64) -> Json {
    json!({"intValue": v.to_string()})
}

fn nanos(t: u128) -> Json {
    Json::String(t.to_string())
}

/// The run's span (and a child per flow step) into `out`.
fn spans_of(r: &ProbeResult, info: Option<&ProbeInfo>, out: &mut Vec<Json>) {
    let trace = r
        .details
        .get("trace_id")
        .and_then(Json::as_str)
        .and_then(TraceId::parse)
        .or_else(TraceId::random);
    let Some(trace) = trace else {
        return;
    };
    let root = root_span_of(trace);
    let start = u128::try_from(r.started_at.timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
    let end = start + r.duration.as_nanos();
    let mut attributes = vec![kv("lookout.probe", s(&r.probe))];
    if let Some(i) = info {
        attributes.push(kv("lookout.kind", s(i.kind)));
        attributes.push(kv("lookout.target", s(&i.target)));
    }
    if let Some(f) = &r.failure {
        attributes.push(kv("lookout.failure_class", s(f.class.as_str())));
    }
    if let Some(code) = r.details.get("status").and_then(Json::as_i64) {
        attributes.push(kv("http.response.status_code", int(code)));
    }
    let mut at = start;
    let events: Vec<Json> = r
        .phases
        .iter()
        .map(|(phase, d)| {
            at += d.as_nanos();
            json!({
                "timeUnixNano": nanos(at),
                "name": phase.as_str(),
                "attributes": [kv("lookout.phase.duration_ms", json!({"doubleValue": d.as_secs_f64() * 1000.0}))],
            })
        })
        .collect();
    out.push(json!({
        "traceId": trace.to_string(),
        "spanId": root.to_string(),
        "name": r.probe,
        "kind": SPAN_KIND_CLIENT,
        "startTimeUnixNano": nanos(start),
        "endTimeUnixNano": nanos(end),
        "attributes": attributes,
        "events": events,
        "status": status(r.failure.as_ref().map(|f| f.message.as_str())),
    }));
    if let Some(steps) = r.details.get("steps").and_then(Json::as_array) {
        step_spans(trace, root, start, steps, out);
    }
}

fn status(failure: Option<&str>) -> Json {
    match failure {
        Some(message) => json!({"code": STATUS_ERROR, "message": message}),
        None => json!({"code": STATUS_OK}),
    }
}

/// A flow's steps as children of the run's span. Steps run one after the
/// other, so each starts where the ones before it ended (skipped steps
/// took no time and have no span).
fn step_spans(trace: TraceId, root: SpanId, start: u128, steps: &[Json], out: &mut Vec<Json>) {
    let mut at = start;
    for step in steps {
        let Some(ms) = step.get("duration_ms").and_then(Json::as_f64) else {
            continue;
        };
        let took = Duration::from_secs_f64((ms / 1000.0).max(0.0)).as_nanos();
        let (from, to) = (at, at + took);
        at = to;
        let Some(span) = step
            .get("span_id")
            .and_then(Json::as_str)
            .and_then(SpanId::parse)
        else {
            continue;
        };
        let name = step.get("name").and_then(Json::as_str).unwrap_or("step");
        let mut attributes = vec![kv("lookout.step", s(name))];
        if let Some(m) = step.get("method").and_then(Json::as_str) {
            attributes.push(kv("http.request.method", s(m)));
        }
        if let Some(u) = step.get("url").and_then(Json::as_str) {
            attributes.push(kv("url.full", s(u)));
        }
        if let Some(code) = step.get("status").and_then(Json::as_i64) {
            attributes.push(kv("http.response.status_code", int(code)));
        }
        let failed = step.get("outcome").and_then(Json::as_str) == Some("failed");
        let message = step
            .get("failure")
            .and_then(Json::as_str)
            .unwrap_or("failed");
        out.push(json!({
            "traceId": trace.to_string(),
            "spanId": span.to_string(),
            "parentSpanId": root.to_string(),
            "name": format!("step {name}"),
            "kind": SPAN_KIND_CLIENT,
            "startTimeUnixNano": nanos(from),
            "endTimeUnixNano": nanos(to),
            "attributes": attributes,
            "status": status(failed.then_some(message)),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Failure, FailureClass, Phase};

    fn cfg() -> OtlpConfig {
        OtlpConfig {
            endpoint: url::Url::parse("http://127.0.0.1:4318/v1/traces").expect("url"),
            headers: Vec::new(),
            service_name: "lookout-test".into(),
        }
    }

    #[test]
    fn a_failed_run_is_an_error_span_with_its_trace_and_root_span() {
        let mut details = serde_json::Map::new();
        details.insert("trace_id".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into());
        details.insert("status".into(), 503.into());
        let r = ProbeResult {
            probe: "api".into(),
            started_at: chrono::DateTime::from_timestamp(1_700_000_000, 5).expect("time"),
            duration: Duration::from_millis(12),
            success: false,
            failure: Some(Failure::new(
                FailureClass::Expectation,
                "expected status 2xx, got 503",
            )),
            phases: vec![
                (Phase::Dns, Duration::from_millis(1)),
                (Phase::Connect, Duration::from_millis(2)),
            ],
            checks: Vec::new(),
            details,
            location: None,
        };
        let doc: Json =
            serde_json::from_slice(&encode(&cfg(), &ProbeSet::default(), &[r])).expect("json");
        let span = &doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["spanId"], "a3ce929d0e0e4736");
        assert_eq!(span["kind"], 3);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000005");
        assert_eq!(span["endTimeUnixNano"], "1700000000012000005");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["status"]["message"], "expected status 2xx, got 503");
        assert_eq!(span["events"][1]["name"], "connect");
        assert_eq!(span["events"][1]["timeUnixNano"], "1700000000003000005");
        let attrs = span["attributes"].as_array().expect("attributes");
        assert!(attrs.contains(&kv("lookout.failure_class", s("expectation"))));
        assert!(attrs.contains(&kv("http.response.status_code", int(503))));
        assert_eq!(
            doc["resourceSpans"][0]["resource"]["attributes"][0],
            kv("service.name", s("lookout-test"))
        );
    }
}
