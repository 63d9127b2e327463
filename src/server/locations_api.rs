//! `GET /api/v1/probes/{name}/locations`: a probe's uptime and latency
//! over a window split by the location its runs ran in (several
//! instances sharing one PostgreSQL, each with a `location`), from the raw
//! rows (`Store::stats_by_location`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use serde::Serialize;

use super::api::{find, history, ms, stats_window, ts, ApiResult, Params, WindowView};
use super::LiveState;
use crate::store::locations::LocationStats;

#[derive(Serialize)]
struct LocationsView {
    probe: String,
    window: WindowView,
    locations: Vec<LocationView>,
}

#[derive(Serialize)]
struct LocationView {
    /// `null` for runs of an instance without a location.
    location: Option<String>,
    count: u64,
    failures: u64,
    uptime: Option<f64>,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    last_at: Option<String>,
    last_success: Option<bool>,
}

impl LocationView {
    fn of(l: LocationStats) -> LocationView {
        let s = &l.stats;
        LocationView {
            count: s.count,
            failures: s.failures,
            uptime: s.uptime,
            mean_ms: s.mean.map(ms),
            p50_ms: s.p50.map(ms),
            p95_ms: s.p95.map(ms),
            p99_ms: s.p99.map(ms),
            last_at: l.last_at.map(ts),
            last_success: l.last_success,
            location: l.location,
        }
    }
}

pub(super) async fn locations(
    State(s): State<LiveState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref(), &["window", "since", "until"], &[])?;
    let info = find(&s, name)?;
    let (since, until) = stats_window(&p, Utc::now())?;
    let name = info.name.clone();
    let rows = history(&s, move |st| st.stats_by_location(&name, since, until)).await?;
    Ok(Json(LocationsView {
        probe: info.name.clone(),
        window: WindowView {
            since: ts(since),
            until: ts(until),
        },
        locations: rows.into_iter().map(LocationView::of).collect(),
    })
    .into_response())
}
