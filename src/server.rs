//! The HTTP surface: `/healthz`, `/readyz` and a first JSON view of every
//! probe's latest result at `/api/v1/probes`. (The status page, history API
//! and metrics come with issue 5.)
//!
//! The router is built by [`router`] from shared state so it can be tested
//! without a socket. It reads the live state and never writes anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::config::ProbeSpec;
use crate::result::ProbeResult;

/// What the daemon knows right now, shared between the scheduler's sink
/// (writer) and the server (reader).
#[derive(Clone, Default)]
pub struct LiveState {
    pub probes: Arc<Vec<ProbeInfo>>,
    pub latest: Arc<RwLock<HashMap<String, ProbeResult>>>,
    /// Configuration loaded and database writable.
    pub ready: Arc<AtomicBool>,
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
        LiveState {
            probes: Arc::new(probes.iter().map(|p| ProbeInfo::of(p)).collect()),
            latest: Arc::default(),
            ready: Arc::default(),
        }
    }

    pub fn record(&self, r: &ProbeResult) {
        let mut latest = match self.latest.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        latest.insert(r.probe.clone(), r.clone());
    }
}

pub fn router(state: LiveState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/probes", get(probes))
        .with_state(state)
}

async fn readyz(State(s): State<LiveState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database not open yet\n",
        )
            .into_response()
    }
}

#[derive(Serialize)]
struct ProbeView<'a> {
    #[serde(flatten)]
    info: &'a ProbeInfo,
    state: &'static str,
    last: Option<&'a ProbeResult>,
}

async fn probes(State(s): State<LiveState>) -> Response {
    let latest = match s.latest.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let views: Vec<ProbeView<'_>> = s
        .probes
        .iter()
        .map(|info| {
            let last = latest.get(&info.name);
            let state = match last {
                None => "pending",
                Some(r) if r.success => "up",
                Some(_) => "failing",
            };
            ProbeView { info, state, last }
        })
        .collect();
    Json(serde_json::json!({ "probes": views })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn health_and_readiness() {
        let state = LiveState::default();
        let app = router(state.clone());
        let res = app
            .clone()
            .oneshot(
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::OK);
        let res = app
            .clone()
            .oneshot(
                Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        state.ready.store(true, Ordering::Relaxed);
        let res = app
            .oneshot(
                Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::OK);
    }
}
