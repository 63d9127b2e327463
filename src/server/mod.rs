//! The HTTP surface: the status page and probe pages ([`pages`]), the JSON
//! API under `/api/v1` ([`api`]), status badges ([`badge`]), the Prometheus
//! exposition at `/metrics` (see [`crate::metrics`]), and `/healthz` and
//! `/readyz`; [`auth`] guards what `server.token` and `server.basic_auth`
//! protect.
//!
//! The router is built by [`router`] from shared state so it can be tested
//! without a socket. It reads the live state (latest results, the alerting
//! board) and the history database through its own read connection
//! ([`History`]), and never writes anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

pub mod api;
pub mod auth;
pub mod badge;
mod chart;
mod events_api;
mod history;
mod html;
mod locations_api;
pub mod pages;
mod probe_page;
mod status_page;
mod timeline;

pub use history::History;

use crate::alert::AlertBoard;
use crate::config::ProbeSpec;
use crate::metrics::{self, Registry};
use crate::result::ProbeResult;

/// What the daemon knows right now, shared between the scheduler's sink
/// (writer) and the server (reader).
#[derive(Clone, Default)]
pub struct LiveState {
    /// The configured probes; replaced as a whole by a reload.
    pub probes: ProbeSet,
    pub latest: Arc<RwLock<HashMap<String, ProbeResult>>>,
    /// Configuration loaded and database writable.
    pub ready: Arc<AtomicBool>,
    /// Why the last configuration reload was refused, while it stays
    /// refused (shown by `/readyz`; the previous configuration runs on).
    pub reload_error: Arc<std::sync::Mutex<Option<String>>>,
    /// Lookout's own metrics, fed by the sink.
    pub metrics: Arc<Registry>,
    /// Alerting state per probe, published by the alerting task.
    pub alerts: AlertBoard,
    /// The history database (read only); `None` in tests that need none.
    pub history: Option<History>,
    /// What the server needs of the configuration: auth, public URL.
    pub settings: Arc<crate::config::Server>,
    /// `tracing.link`: the URL template (holding `{trace_id}`) that turns
    /// a result's trace id into a link; replaced by a reload.
    pub trace_link: Arc<RwLock<Option<String>>>,
    /// The alerting task, which takes posted change events; `None` outside
    /// `lookout run` (tests, a server without alerting).
    pub events: Option<crate::alert::runner::AlertHandle>,
    /// This instance's `location`, shown by the API, the status page and
    /// the `probe_*` metrics; read only at start.
    pub location: Option<Arc<str>>,
}

/// The configured probes' descriptions, shared by every handler and
/// swapped as a whole by a configuration reload. Readers take a snapshot
/// ([`ProbeSet::load`]) and keep it for the request.
#[derive(Clone, Default)]
pub struct ProbeSet(Arc<RwLock<Arc<Vec<ProbeInfo>>>>);

impl ProbeSet {
    pub fn new(infos: Vec<ProbeInfo>) -> ProbeSet {
        ProbeSet(Arc::new(RwLock::new(Arc::new(infos))))
    }

    /// The probes as of now.
    pub fn load(&self) -> Arc<Vec<ProbeInfo>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store(&self, infos: Vec<ProbeInfo>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(infos);
    }
}

/// A probe's static description, safe to show (targets are redacted).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeInfo {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    pub schedule: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl ProbeInfo {
    pub fn of(spec: &ProbeSpec) -> ProbeInfo {
        ProbeInfo {
            name: spec.name.clone(),
            kind: spec.kind.name(),
            target: spec.kind.target(),
            schedule: spec.schedule.to_string(),
            labels: spec.labels.clone(),
        }
    }
}

impl LiveState {
    pub fn new(probes: &[Arc<ProbeSpec>]) -> LiveState {
        let infos: Vec<ProbeInfo> = probes.iter().map(|p| ProbeInfo::of(p)).collect();
        LiveState {
            metrics: Arc::new(Registry::new(&infos)),
            probes: ProbeSet::new(infos),
            latest: Arc::default(),
            ready: Arc::default(),
            reload_error: Arc::default(),
            alerts: AlertBoard::default(),
            history: None,
            settings: Arc::default(),
            trace_link: Arc::default(),
            events: None,
            location: None,
        }
    }

    /// Takes a reloaded configuration's probes: the pages, API and metrics
    /// show the new set, and removed probes' latest results are dropped.
    pub fn reconfigure(&self, probes: &[Arc<ProbeSpec>]) {
        let infos: Vec<ProbeInfo> = probes.iter().map(|p| ProbeInfo::of(p)).collect();
        self.metrics.set_probes(&infos);
        let names: std::collections::HashSet<&str> =
            infos.iter().map(|i| i.name.as_str()).collect();
        self.latest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| names.contains(name.as_str()));
        drop(names);
        self.probes.store(infos);
    }

    /// Makes `r` its probe's latest result. The copy is made and the
    /// replaced result freed outside the lock, so readers (pages, scrapes)
    /// and other results wait only for a pointer swap.
    pub fn record(&self, r: &ProbeResult) {
        // `trace_id` and a flow's `steps` are kept in the database and read
        // from there (the probe page, the results API); nothing reads them
        // from the latest copy, which every probe holds one of (a megabyte
        // at 10,000 probes), so they are not copied.
        let copy = ProbeResult {
            probe: r.probe.clone(),
            started_at: r.started_at,
            duration: r.duration,
            success: r.success,
            failure: r.failure.clone(),
            phases: r.phases.clone(),
            checks: r.checks.clone(),
            details: r
                .details
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "trace_id" | "steps"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            location: r.location.clone(),
        };
        let mut latest = match self.latest.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let replaced = match latest.get_mut(r.probe.as_str()) {
            Some(slot) => Some(std::mem::replace(slot, copy)),
            None => latest.insert(r.probe.clone(), copy),
        };
        drop(latest);
        drop(replaced);
    }
}

/// The whole HTTP surface. Public routes (`/healthz`, `/readyz`, badges)
/// bypass [`auth`]; the API and `/metrics` need the token when one is set,
/// the pages need basic auth when it is set (see [`auth::protect`]).
pub fn router(state: LiveState) -> Router {
    let public = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(badge::routes());
    let api = Router::new()
        .merge(api::routes())
        .route("/metrics", get(metrics_text));
    let pages = pages::routes();
    public
        .merge(auth::protect(api, auth::Area::Api, &state))
        .merge(auth::protect(pages, auth::Area::Pages, &state))
        .with_state(state)
        // Pages for many probes and large scrapes shrink ~10x; clients that
        // send no `Accept-Encoding: gzip` get plain bodies.
        .layer(tower_http::compression::CompressionLayer::new())
}

async fn readyz(State(s): State<LiveState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        let refused = s
            .reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match refused {
            // Still ready: the previous configuration keeps probing.
            Some(e) => format!(
                "ready; configuration reload refused, running the previous configuration: {e}\n"
            )
            .into_response(),
            None => "ready\n".into_response(),
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database not open yet\n",
        )
            .into_response()
    }
}

/// How long a scrape waits for the outbox counts before leaving them out.
const OUTBOX_COUNTS_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

async fn metrics_text(State(s): State<LiveState>) -> Response {
    let outbox = outbox_counts(&s).await;
    let alerts = s.alerts.snapshot();
    let text = {
        let latest = match s.latest.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let probes = s.probes.load();
        let scrape = metrics::Scrape {
            probes: &probes,
            latest: &latest,
            alerts: &alerts,
            incidents_open: s.alerts.open_incidents(),
            outbox,
            location: s.location.as_deref(),
        };
        metrics::render(&scrape, &s.metrics)
    };
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// The outbox rows by status, read through the server's own connection;
/// `None` (and a scrape error counted, logged once until it recovers) when
/// it cannot be read within [`OUTBOX_COUNTS_BUDGET`].
async fn outbox_counts(s: &LiveState) -> Option<crate::store::outbox::OutboxCounts> {
    let history = s.history.as_ref()?;
    let read = history.read(|store| store.outbox_undelivered_counts());
    let error = match tokio::time::timeout(OUTBOX_COUNTS_BUDGET, read).await {
        Ok(Ok(counts)) => {
            if s.metrics.outbox_scrape(true) {
                tracing::info!("metrics: the outbox counts are readable again");
            }
            return Some(counts);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {OUTBOX_COUNTS_BUDGET:?}"),
    };
    if s.metrics.outbox_scrape(false) {
        tracing::warn!(error = %error,
            "metrics: cannot read the outbox counts; lookout_outbox_notices is left out");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    /// GETs `path` from the router without a socket.
    async fn get(app: &Router, path: &str) -> Response {
        app.clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response")
    }

    #[tokio::test]
    async fn bodies_are_gzipped_when_the_client_asks() {
        let app = router(LiveState::default());
        let req = |gzip: bool| {
            let mut r = Request::get("/metrics");
            if gzip {
                r = r.header(http::header::ACCEPT_ENCODING, "gzip");
            }
            r.body(Body::empty()).expect("request")
        };
        let res = app.clone().oneshot(req(true)).await.expect("response");
        assert_eq!(res.headers()[http::header::CONTENT_ENCODING], "gzip");
        let res = app.clone().oneshot(req(false)).await.expect("response");
        assert!(res.headers().get(http::header::CONTENT_ENCODING).is_none());
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let state = LiveState::default();
        let app = router(state.clone());
        assert_eq!(get(&app, "/healthz").await.status(), StatusCode::OK);
        assert_eq!(
            get(&app, "/readyz").await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(&app, "/readyz").await.status(), StatusCode::OK);
    }

    fn info(name: &str, kind: &'static str, labels: &[(&str, &str)]) -> ProbeInfo {
        ProbeInfo {
            name: name.into(),
            kind,
            target: "t".into(),
            schedule: "every 1s".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn result(probe: &str, success: bool) -> ProbeResult {
        use crate::result::{Failure, FailureClass, Phase};
        use std::time::Duration;
        let mut details = serde_json::Map::new();
        details.insert("status".into(), 503.into());
        details.insert("cert_not_after".into(), "2030-01-01T00:00:00Z".into());
        ProbeResult {
            probe: probe.into(),
            started_at: chrono::Utc::now(),
            duration: Duration::from_millis(30),
            success,
            failure: (!success).then(|| Failure::new(FailureClass::Expectation, "secret msg")),
            phases: vec![
                (Phase::Dns, Duration::from_millis(1)),
                (Phase::Connect, Duration::from_millis(2)),
                (Phase::FirstByte, Duration::from_millis(20)),
                (Phase::Transfer, Duration::from_millis(7)),
            ],
            checks: vec![],
            details,
            location: None,
        }
    }

    async fn scrape(state: LiveState) -> (String, String) {
        let res = get(&router(state), "/metrics").await;
        assert_eq!(res.status(), StatusCode::OK);
        let ct = res.headers()[http::header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_string();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (ct, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn metrics_exposition() {
        let probes = vec![
            info(
                "we\"b\\x\ny",
                "http",
                &[
                    ("team", "a\"b"),
                    ("1tier", "x"),
                    ("kind", "clash"),
                    ("app.name", "v"),
                ],
            ),
            info("idle", "tcp", &[]),
        ];
        let registry = Arc::new(Registry::new(&probes));
        let state = LiveState {
            probes: ProbeSet::new(probes),
            metrics: registry.clone(),
            ..LiveState::default()
        };
        let r = result("we\"b\\x\ny", false);
        state.record(&r);
        registry.observe(&r, std::time::Duration::from_micros(700));
        registry.observe(
            &result("we\"b\\x\ny", true),
            std::time::Duration::from_millis(3),
        );

        let (ct, text) = scrape(state).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        let l = r#"probe="we\"b\\x\ny",kind="http",_1tier="x",app_name="v",team="a\"b""#;
        for want in [
            format!("probe_success{{{l}}} 0\n"),
            format!("probe_duration_seconds{{{l}}} 0.03\n"),
            format!("probe_http_status_code{{{l}}} 503\n"),
            format!("probe_http_duration_seconds{{{l},phase=\"resolve\"}} 0.001\n"),
            format!("probe_http_duration_seconds{{{l},phase=\"processing\"}} 0.02\n"),
            format!("probe_ssl_earliest_cert_expiry{{{l}}} 1893456000\n"),
            "lookout_probe_state{probe=\"idle\",kind=\"tcp\",state=\"pending\"} 1\n".into(),
            r#"lookout_results_total{probe="we\"b\\x\ny",outcome="failure",class="expectation"} 1"#
                .into(),
            r#"lookout_results_total{probe="we\"b\\x\ny",outcome="success",class="none"} 1"#.into(),
            "# TYPE lookout_probe_duration_seconds histogram\n".into(),
            // Both runs took 30ms: 0 up to 0.025, 2 from 0.05 on.
            "lookout_probe_duration_seconds_bucket{kind=\"http\",le=\"0.025\"} 0\n".into(),
            "lookout_probe_duration_seconds_bucket{kind=\"http\",le=\"0.05\"} 2\n".into(),
            "lookout_probe_duration_seconds_bucket{kind=\"http\",le=\"10\"} 2\n".into(),
            "lookout_probe_duration_seconds_bucket{kind=\"http\",le=\"+Inf\"} 2\n".into(),
            "lookout_probe_duration_seconds_sum{kind=\"http\"} 0.06\n".into(),
            "lookout_probe_duration_seconds_count{kind=\"http\"} 2\n".into(),
            // Lags 0.7ms and 3ms: cumulative.
            "lookout_scheduler_lag_seconds_bucket{le=\"0.0005\"} 0\n".into(),
            "lookout_scheduler_lag_seconds_bucket{le=\"0.001\"} 1\n".into(),
            "lookout_scheduler_lag_seconds_bucket{le=\"0.002\"} 1\n".into(),
            "lookout_scheduler_lag_seconds_bucket{le=\"0.005\"} 2\n".into(),
            "lookout_scheduler_lag_seconds_bucket{le=\"+Inf\"} 2\n".into(),
            "lookout_scheduler_lag_seconds_count 2\n".into(),
            format!(
                "lookout_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("secret msg"));
        assert!(!text.contains("clash"));
        // Each family's header appears once; no series for a probe without a result.
        assert_eq!(text.matches("# TYPE probe_success ").count(), 1);
        assert!(!text.contains("probe_success{probe=\"idle\""));
        // No recorder attached: no recorder families.
        assert!(!text.contains("lookout_results_written_total"));
    }
}
