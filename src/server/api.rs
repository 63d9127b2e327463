//! The JSON API under `/api/v1`: every configured probe with its alerting
//! state, one probe's detail, its raw results page by page, its uptime and
//! latency over a window (optionally with a latency series), the incident
//! history, and the OpenAPI 3.1 document (`openapi.json`, embedded) that
//! describes them. Times are RFC 3339 in UTC with milliseconds; durations
//! are fractional milliseconds in fields ending in `_ms`. Every error is
//! `{"error": "..."}` naming the parameter at fault and what it accepts: 400
//! for a bad parameter (unknown query parameters included), 404 for an
//! unknown probe or path, 405 for a method other than GET, 503 when the
//! history database cannot answer. Pages are keyset-paginated with opaque
//! cursors; the handlers only read (the live state and the history).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, MethodRouter};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;

use super::history::HistoryError;
use super::{LiveState, ProbeInfo};
use crate::alert::AlertView;
use crate::result::{Check, Failure, ProbeResult};
use crate::store::alert_state::{IncidentQuery, StoredIncident};
use crate::store::result_pages::{PageQuery, ResultCursor};
use crate::store::{Counts, SeriesPoint, Store, StoreError, WindowStats};

/// The OpenAPI 3.1 document served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Most points a latency series may have.
pub const MAX_POINTS: u64 = 1440;
/// The windows a probe's detail reports, and the named `window` values.
const WINDOWS: [(&str, i64); 4] = [
    ("1h", 3_600),
    ("24h", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
];
/// The alerting states a probe can be in (`state=` values).
const STATES: [&str; 6] = [
    "pending",
    "up",
    "degraded",
    "down",
    "maintenance",
    "dependency",
];

type Handler = MethodRouter<LiveState>;

/// Every route under `/api/v1` with its handler: the single list both the
/// router and [`paths`] come from.
fn table() -> Vec<(&'static str, Handler)> {
    vec![
        ("/api/v1/probes", get(list)),
        ("/api/v1/probes/{name}", get(detail)),
        ("/api/v1/probes/{name}/results", get(results)),
        ("/api/v1/probes/{name}/stats", get(stats)),
        (
            "/api/v1/probes/{name}/locations",
            get(super::locations_api::locations),
        ),
        ("/api/v1/incidents", get(incidents)),
        ("/api/v1/incidents/{id}", get(super::timeline::incident)),
        (
            "/api/v1/events",
            get(super::events_api::list).post(super::events_api::post),
        ),
        ("/api/v1/openapi.json", get(openapi)),
    ]
}

/// The paths the API serves, as axum patterns (`{name}` captures), for
/// checking them against the OpenAPI document.
pub fn paths() -> Vec<&'static str> {
    table().into_iter().map(|(p, _)| p).collect()
}

/// The `/api/v1` routes (the router in `mod.rs` adds auth), plus a JSON 404
/// for any other path under `/api`.
pub fn routes() -> Router<LiveState> {
    let mut router = Router::new();
    for (path, handler) in table() {
        router = router.route(path, handler.fallback(method_not_allowed));
    }
    router
        .route("/api", any(not_found))
        .route("/api/", any(not_found))
        .route("/api/{*rest}", any(not_found))
}

// ---------------------------------------------------------------- errors

/// An API error: a status and a message naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn no_probe(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no probe named `{}` is configured; GET /api/v1/probes lists them",
                shown(name)
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> ApiError {
        tracing::warn!(error = %e, "API history query failed");
        match e {
            HistoryError::Store(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the history database cannot answer right now: {e}"),
            ),
            HistoryError::Task(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the history query failed inside Lookout; see its log",
            ),
        }
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

/// User input echoed in a message, cut short so an error stays one line.
pub(super) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.replace(['\n', '\r'], " ")
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no API endpoint at {}; GET /api/v1/openapi.json describes them",
            shown(uri.path())
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut res = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}; the API answers GET (and POST on /api/v1/events)",
            shown(uri.path())
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    res
}

// ---------------------------------------------------------------- parameters

/// The query string, checked against the parameters an endpoint takes.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    /// Rejects unknown parameters, empty values and repeats of parameters
    /// not in `repeatable`.
    pub(super) fn parse(
        raw: Option<&str>,
        allowed: &[&str],
        repeatable: &[&str],
    ) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                let takes = if allowed.is_empty() {
                    "this endpoint takes none".to_string()
                } else {
                    format!("this endpoint takes: {}", allowed.join(", "))
                };
                return Err(ApiError::bad(format!(
                    "unknown query parameter `{}`; {takes}",
                    shown(k)
                )));
            }
            if v.is_empty() {
                return Err(ApiError::bad(format!("`{k}` is empty")));
            }
            if !repeatable.contains(&k.as_str()) && pairs[..i].iter().any(|(p, _)| p == k) {
                return Err(ApiError::bad(format!("`{k}` is given more than once")));
            }
        }
        Ok(Params(pairs))
    }

    pub(super) fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn parse_limit(v: Option<&str>) -> Result<usize, ApiError> {
    let Some(v) = v else {
        return Ok(DEFAULT_LIMIT);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(format!(
            "`limit` must be a whole number from 1 to {MAX_LIMIT}, not `{}`",
            shown(v)
        ))),
    }
}

/// An RFC 3339 time or unix milliseconds. A `+` in an offset that arrived
/// unencoded (and so reads as a space) is taken as the `+` it was.
pub(super) fn parse_time(key: &str, v: &str) -> Result<DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "`{key}` must be an RFC 3339 time (e.g. 2025-05-01T12:00:00Z) or unix \
             milliseconds, not `{}`",
            shown(v)
        ))
    };
    if !v.is_empty()
        && v.trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit())
    {
        let ms: i64 = v.parse().map_err(|_| bad())?;
        return DateTime::from_timestamp_millis(ms).ok_or_else(bad);
    }
    DateTime::parse_from_rfc3339(v)
        .or_else(|_| DateTime::parse_from_rfc3339(&v.replace(' ', "+")))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad())
}

fn parse_duration(key: &str, v: &str) -> Result<Duration, ApiError> {
    match crate::duration::parse(v) {
        Ok(d) if d >= Duration::from_millis(1) => Ok(d),
        Ok(_) => Err(ApiError::bad(format!(
            "`{key}` must be at least 1ms, not `{}`",
            shown(v)
        ))),
        Err(e) => Err(ApiError::bad(format!("`{key}`: {e}"))),
    }
}

fn delta(key: &str, d: Duration) -> Result<TimeDelta, ApiError> {
    TimeDelta::from_std(d).map_err(|_| ApiError::bad(format!("`{key}` is too long")))
}

/// An opaque cursor: `tag` (which list it belongs to), a start time in
/// unix milliseconds and a row id, base64url-encoded.
fn encode_cursor(tag: char, at_ms: i64, id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{tag}{at_ms}.{id}"))
}

fn decode_cursor(tag: char, v: &str) -> Result<(i64, i64), ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "`before` is not a cursor this list gave out (`{}`); use the `next` link of \
             the previous page",
            shown(v)
        ))
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let rest = text.strip_prefix(tag).ok_or_else(bad)?;
    let (at, id) = rest.split_once('.').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

/// The probe named in the path, if configured.
pub(super) fn find(
    s: &LiveState,
    name: Result<Path<String>, PathRejection>,
) -> Result<ProbeInfo, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::bad(format!("bad probe name in the path: {e}")))?;
    s.probes
        .load()
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| ApiError::no_probe(&name))
}

/// Runs `query` on the history database; 503 without one.
pub(super) async fn history<R, F>(s: &LiveState, query: F) -> Result<R, ApiError>
where
    R: Send + 'static,
    F: FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
{
    let h = s.history.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the history database is not available",
        )
    })?;
    Ok(h.read(query).await?)
}

/// Percent-encodes one path segment.
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------- views

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds to the microsecond (the precision history keeps), as the
/// closest float: 979µs reads 0.979.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[derive(Debug, Serialize)]
struct FailureView {
    class: String,
    message: String,
}

impl FailureView {
    fn of(f: &Failure) -> FailureView {
        FailureView {
            class: f.class.as_str().to_string(),
            message: f.message.clone(),
        }
    }

    fn stored(class: &Option<String>, message: &Option<String>) -> Option<FailureView> {
        class.as_ref().map(|c| FailureView {
            class: c.clone(),
            message: message.clone().unwrap_or_default(),
        })
    }
}

/// The latest run, in short.
#[derive(Debug, Serialize)]
struct LastRun {
    started_at: String,
    duration_ms: f64,
    success: bool,
    failure: Option<FailureView>,
    /// Where it ran, when the instance has a location.
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<std::sync::Arc<str>>,
}

impl LastRun {
    fn of(r: &ProbeResult) -> LastRun {
        LastRun {
            started_at: ts(r.started_at),
            duration_ms: ms(r.duration),
            success: r.success,
            failure: r.failure.as_ref().map(FailureView::of),
            location: r.location.clone(),
        }
    }
}

/// One run as the results endpoint shows it.
#[derive(Debug, Serialize)]
struct ResultView {
    started_at: String,
    duration_ms: f64,
    success: bool,
    failure: Option<FailureView>,
    phases_ms: BTreeMap<&'static str, f64>,
    checks: Vec<Check>,
    details: serde_json::Map<String, serde_json::Value>,
    /// Where it ran, when that instance had a location.
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<std::sync::Arc<str>>,
}

impl ResultView {
    fn of(r: ProbeResult) -> ResultView {
        ResultView {
            started_at: ts(r.started_at),
            duration_ms: ms(r.duration),
            success: r.success,
            failure: r.failure.as_ref().map(FailureView::of),
            phases_ms: r.phases.iter().map(|(p, d)| (p.as_str(), ms(*d))).collect(),
            checks: r.checks,
            details: r.details,
            location: r.location,
        }
    }
}

#[derive(Debug, Serialize)]
struct Streak {
    failures: u32,
    successes: u32,
}

/// A probe as the list shows it.
#[derive(Debug, Serialize)]
struct ProbeView<'a> {
    #[serde(flatten)]
    info: &'a ProbeInfo,
    state: &'static str,
    since: Option<String>,
    streak: Streak,
    caused_by: Option<String>,
    /// The open degradation's reason, while `state` is `degraded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<String>,
    /// A slow upward latency trend over days (`alert.degraded.anomaly`).
    #[serde(skip_serializing_if = "Option::is_none")]
    trend: Option<String>,
    last: Option<LastRun>,
    uptime_24h: Option<f64>,
}

fn state_of(view: Option<&AlertView>) -> &'static str {
    view.map_or("pending", AlertView::state)
}

impl<'a> ProbeView<'a> {
    fn of(
        info: &'a ProbeInfo,
        alert: Option<&AlertView>,
        last: Option<&ProbeResult>,
        day: Option<&Counts>,
    ) -> ProbeView<'a> {
        ProbeView {
            info,
            state: state_of(alert),
            since: alert.and_then(|a| a.since).map(ts),
            streak: Streak {
                failures: alert.map_or(0, |a| a.fail_streak),
                successes: alert.map_or(0, |a| a.ok_streak),
            },
            caused_by: alert.and_then(|a| a.caused_by.clone()),
            degraded: alert.and_then(|a| a.degraded.clone()),
            trend: alert.and_then(|a| a.trend.clone()),
            last: last.map(LastRun::of),
            uptime_24h: day.and_then(Counts::uptime),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct WindowView {
    pub(super) since: String,
    pub(super) until: String,
}

#[derive(Debug, Serialize)]
struct PointView {
    start: String,
    count: u64,
    failures: u64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
}

impl PointView {
    fn of(p: &SeriesPoint) -> PointView {
        PointView {
            start: ts(p.start),
            count: p.count,
            failures: p.failures,
            p50_ms: p.p50.map(ms),
            p95_ms: p.p95.map(ms),
        }
    }
}

/// Uptime and latency over one window.
#[derive(Debug, Serialize)]
struct StatsView {
    probe: String,
    window: WindowView,
    count: u64,
    failures: u64,
    uptime: Option<f64>,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<Vec<PointView>>,
}

impl StatsView {
    fn of(probe: &str, since: DateTime<Utc>, until: DateTime<Utc>, w: &WindowStats) -> StatsView {
        StatsView {
            probe: probe.to_string(),
            window: WindowView {
                since: ts(since),
                until: ts(until),
            },
            count: w.count,
            failures: w.failures,
            uptime: w.uptime,
            min_ms: w.min.map(ms),
            max_ms: w.max.map(ms),
            mean_ms: w.mean.map(ms),
            p50_ms: w.p50.map(ms),
            p95_ms: w.p95.map(ms),
            p99_ms: w.p99.map(ms),
            step_ms: None,
            series: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct IncidentView {
    id: i64,
    probe: String,
    /// `down` (an outage) or `degraded`.
    kind: &'static str,
    state: &'static str,
    started_at: String,
    opened_at: String,
    ended_at: Option<String>,
    /// Until it ended, or until now while open.
    duration_ms: f64,
    caused_by: Option<String>,
    /// `removed` when a reload removed the probe while it was down.
    ended_by: Option<String>,
    first_failure: Option<FailureView>,
    last_failure: Option<FailureView>,
    streak: u32,
    /// A degradation's reason in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl IncidentView {
    pub(super) fn of(i: &StoredIncident, now: DateTime<Utc>) -> IncidentView {
        let end = i.ended_at.unwrap_or(now);
        IncidentView {
            id: i.id,
            probe: i.probe.clone(),
            kind: i.kind.as_str(),
            state: if i.ended_at.is_some() {
                "resolved"
            } else {
                "open"
            },
            started_at: ts(i.started_at),
            opened_at: ts(i.opened_at),
            ended_at: i.ended_at.map(ts),
            duration_ms: ms((end - i.started_at).to_std().unwrap_or_default()),
            caused_by: i.caused_by.clone(),
            ended_by: i.ended_by.clone(),
            first_failure: FailureView::stored(&i.first_class, &i.first_message),
            last_failure: FailureView::stored(&i.last_class, &i.last_message),
            streak: i.streak,
            reason: i.reason.clone(),
        }
    }
}

// ---------------------------------------------------------------- handlers

/// The last result of each probe in `names`: from the live state, or from
/// the database for probes that have not run since the daemon started.
/// Returns those and each probe's counts over the last 24 hours.
async fn last_and_day(
    s: &LiveState,
    names: Vec<String>,
) -> Result<(HashMap<String, ProbeResult>, HashMap<String, Counts>), ApiError> {
    let mut last: HashMap<String, ProbeResult> = {
        let latest = s.latest.read().unwrap_or_else(|p| p.into_inner());
        names
            .iter()
            .filter_map(|n| latest.get(n).map(|r| (n.clone(), r.clone())))
            .collect()
    };
    let missing: Vec<String> = names
        .into_iter()
        .filter(|n| !last.contains_key(n))
        .collect();
    let now = Utc::now();
    let (stored, day) = history(s, move |st| {
        let mut stored = Vec::new();
        for name in missing {
            if let Some(r) = st.last_result(&name)? {
                stored.push((name, r));
            }
        }
        Ok((stored, st.counts_all(now - TimeDelta::days(1), now)?))
    })
    .await?;
    last.extend(stored);
    Ok((last, day))
}

/// `key:value` of a `label` filter.
pub(super) fn parse_label(v: &str) -> Result<(&str, &str), ApiError> {
    v.split_once(':').ok_or_else(|| {
        ApiError::bad(format!(
            "`label` must be key:value (e.g. label=team:core), not `{}`",
            shown(v)
        ))
    })
}

fn parse_state(v: &str) -> Result<&str, ApiError> {
    STATES.iter().find(|s| **s == v).copied().ok_or_else(|| {
        ApiError::bad(format!(
            "`state` must be one of {}, not `{}`",
            STATES.join(", "),
            shown(v)
        ))
    })
}

#[derive(Serialize)]
struct ProbeList<'a> {
    /// This instance's location, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    probes: Vec<ProbeView<'a>>,
}

async fn list(State(s): State<LiveState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref(), &["label", "state"], &["label"])?;
    let labels = p
        .all("label")
        .map(parse_label)
        .collect::<Result<Vec<_>, _>>()?;
    let state = p.one("state").map(parse_state).transpose()?;
    let board = s.alerts.snapshot();
    let probes = s.probes.load();
    let chosen: Vec<&ProbeInfo> = probes
        .iter()
        .filter(|i| {
            labels
                .iter()
                .all(|(k, v)| i.labels.get(*k).is_some_and(|x| x == v))
        })
        .filter(|i| state.is_none_or(|st| state_of(board.get(&i.name)) == st))
        .collect();
    let names = chosen.iter().map(|i| i.name.clone()).collect();
    let (last, day) = last_and_day(&s, names).await?;
    let views: Vec<ProbeView<'_>> = chosen
        .into_iter()
        .map(|i| ProbeView::of(i, board.get(&i.name), last.get(&i.name), day.get(&i.name)))
        .collect();
    Ok(Json(ProbeList {
        location: s.location.as_deref(),
        probes: views,
    })
    .into_response())
}

/// A probe with its statistics over the standard windows and its open
/// incident.
#[derive(Serialize)]
struct DetailView<'a> {
    #[serde(flatten)]
    probe: ProbeView<'a>,
    stats: BTreeMap<&'static str, StatsView>,
    incident: Option<IncidentView>,
}

async fn detail(
    State(s): State<LiveState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    Params::parse(q.as_deref(), &[], &[])?;
    let info = &find(&s, name)?;
    let (last, day) = last_and_day(&s, vec![info.name.clone()]).await?;
    let alert = s.alerts.get(&info.name);
    let now = Utc::now();
    let until = ceil_minute(now);
    let name = info.name.clone();
    let (windows, open) = history(&s, move |st| {
        let mut windows = Vec::new();
        for (label, secs) in WINDOWS {
            let since = ceil_minute(now - TimeDelta::seconds(secs));
            windows.push((label, since, st.stats(&name, since, until)?));
        }
        let open = st.incidents_page(&IncidentQuery {
            probe: Some(name),
            open: Some(true),
            before: None,
            limit: 1,
        })?;
        Ok((windows, open))
    })
    .await?;
    let view = DetailView {
        probe: ProbeView::of(
            info,
            alert.as_ref(),
            last.get(&info.name),
            day.get(&info.name),
        ),
        stats: windows
            .iter()
            .map(|(label, since, w)| (*label, StatsView::of(&info.name, *since, until, w)))
            .collect(),
        incident: open.first().map(|i| IncidentView::of(i, now)),
    };
    Ok(Json(view).into_response())
}

/// Optional bounds of a time range.
pub(super) type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `since`/`until` of a query, checked to be in order.
pub(super) fn time_range(p: &Params) -> Result<Bounds, ApiError> {
    let since = p.one("since").map(|v| parse_time("since", v)).transpose()?;
    let until = p.one("until").map(|v| parse_time("until", v)).transpose()?;
    if let (Some(a), Some(b)) = (since, until) {
        if a >= b {
            return Err(ApiError::bad(format!(
                "`since` ({}) must be before `until` ({})",
                ts(a),
                ts(b)
            )));
        }
    }
    Ok((since, until))
}

/// Cuts `rows` (fetched with one extra, to learn whether more remain) to
/// `limit`. When more remain, returns the link to the next page: `path`
/// with the `keep` parameters, `limit`, and `before` the last row's cursor.
fn cut<T>(
    rows: &mut Vec<T>,
    limit: usize,
    path: &str,
    keep: Vec<(&str, String)>,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let last = rows.last().filter(|_| more)?;
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &keep {
        q.append_pair(k, v);
    }
    q.append_pair("limit", &limit.to_string());
    q.append_pair("before", &cursor(last));
    Some(format!("{path}?{}", q.finish()))
}

#[derive(Serialize)]
struct ResultsPage {
    probe: String,
    results: Vec<ResultView>,
    /// The next (older) page, when there is one.
    next: Option<String>,
}

async fn results(
    State(s): State<LiveState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref(), &["limit", "since", "until", "before"], &[])?;
    let info = &find(&s, name)?;
    let limit = parse_limit(p.one("limit"))?;
    let (since, until) = time_range(&p)?;
    let before = p
        .one("before")
        .map(|v| decode_cursor('r', v))
        .transpose()?
        .map(|(started_at_ms, id)| ResultCursor { started_at_ms, id });
    let query = PageQuery {
        since,
        until,
        before,
        limit: limit + 1,
    };
    let name = info.name.clone();
    let mut rows = history(&s, move |st| st.results_page(&name, &query)).await?;
    let keep = [("since", since), ("until", until)]
        .into_iter()
        .filter_map(|(k, t)| Some((k, ts(t?))))
        .collect();
    let path = format!("/api/v1/probes/{}/results", segment(&info.name));
    let next = cut(&mut rows, limit, &path, keep, |(c, _)| {
        encode_cursor('r', c.started_at_ms, c.id)
    });
    Ok(Json(ResultsPage {
        probe: info.name.clone(),
        results: rows.into_iter().map(|(_, r)| ResultView::of(r)).collect(),
        next,
    })
    .into_response())
}

/// The window a stats query asks for: `since`/`until`, or `window` (24h by
/// default) ending at `until` (now by default).
pub(super) fn stats_window(
    p: &Params,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let (since, until) = time_range(p)?;
    if since.is_some() && p.one("window").is_some() {
        return Err(ApiError::bad(
            "give either `window` or `since`, not both (`until` goes with either)",
        ));
    }
    let until = until.unwrap_or(now);
    let since = match since {
        Some(t) => t,
        None => {
            let w = parse_duration("window", p.one("window").unwrap_or("24h"))?;
            until
                .checked_sub_signed(delta("window", w)?)
                .ok_or_else(|| ApiError::bad("`window` reaches too far back"))?
        }
    };
    if since >= until {
        return Err(ApiError::bad(format!(
            "`since` ({}) must be before `until` ({})",
            ts(since),
            ts(until)
        )));
    }
    let (a, b) = (ceil_minute(since), ceil_minute(until));
    if a >= b {
        return Err(ApiError::bad(format!(
            "the window from {} to {} holds no start of a minute; statistics have minute \
             resolution, so make it at least 1m long",
            ts(since),
            ts(until)
        )));
    }
    Ok((a, b))
}

/// Statistics have minute resolution: a run counts toward a window when the
/// minute it started in begins inside it. So the window actually used for
/// `[since, until)` is `[ceil_minute(since), ceil_minute(until))`.
fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    const MINUTE_MS: i64 = 60_000;
    let ms = t.timestamp_millis();
    let floor = ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    if floor == ms {
        return t;
    }
    DateTime::from_timestamp_millis(floor + MINUTE_MS).unwrap_or(t)
}

/// The `step` of a series, checked to give at most [`MAX_POINTS`] points.
fn series_step(v: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Duration, ApiError> {
    let step = parse_duration("step", v)?;
    if step < Duration::from_secs(60) {
        return Err(ApiError::bad(format!(
            "`step` must be at least 1m (the resolution of the statistics), not `{}`",
            shown(v)
        )));
    }
    let span = (until - since).to_std().unwrap_or_default();
    let step_ms = step.as_millis().max(1);
    let points = span.as_millis().div_ceil(step_ms);
    if points > u128::from(MAX_POINTS) {
        let min_s = span.as_millis().div_ceil(u128::from(MAX_POINTS) * 1000);
        return Err(ApiError::bad(format!(
            "`step` {} over this window gives {points} points; at most {MAX_POINTS} \
             are allowed, so use a step of at least {min_s}s",
            shown(v)
        )));
    }
    Ok(step)
}

async fn stats(
    State(s): State<LiveState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref(), &["window", "since", "until", "step"], &[])?;
    let info = &find(&s, name)?;
    let (since, until) = stats_window(&p, Utc::now())?;
    let step = p
        .one("step")
        .map(|v| series_step(v, since, until))
        .transpose()?;
    let name = info.name.clone();
    let (w, series) = history(&s, move |st| {
        let w = st.stats(&name, since, until)?;
        let series = match step {
            Some(step) => Some(st.latency_series(&name, since, until, step)?),
            None => None,
        };
        Ok((w, series))
    })
    .await?;
    let mut view = StatsView::of(&info.name, since, until, &w);
    view.step_ms = step.map(ms);
    view.series = series.map(|s| s.iter().map(PointView::of).collect());
    Ok(Json(view).into_response())
}

/// `state=open|resolved` as "open only" or "resolved only".
fn parse_open(v: &str) -> Result<bool, ApiError> {
    match v {
        "open" => Ok(true),
        "resolved" => Ok(false),
        _ => Err(ApiError::bad(format!(
            "`state` must be open or resolved, not `{}`",
            shown(v)
        ))),
    }
}

#[derive(Serialize)]
struct IncidentsPage {
    incidents: Vec<IncidentView>,
    next: Option<String>,
}

async fn incidents(State(s): State<LiveState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref(), &["probe", "state", "limit", "before"], &[])?;
    let probe = match p.one("probe") {
        Some(n) if s.probes.load().iter().any(|i| i.name == n) => Some(n.to_string()),
        Some(n) => return Err(ApiError::no_probe(n)),
        None => None,
    };
    let open = p.one("state").map(parse_open).transpose()?;
    let limit = parse_limit(p.one("limit"))?;
    let before = p.one("before").map(|v| decode_cursor('i', v)).transpose()?;
    let query = IncidentQuery {
        probe: probe.clone(),
        open,
        before,
        limit: limit + 1,
    };
    let mut rows = history(&s, move |st| st.incidents_page(&query)).await?;
    let keep = [
        ("probe", probe),
        ("state", p.one("state").map(String::from)),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    let next = cut(&mut rows, limit, "/api/v1/incidents", keep, |i| {
        encode_cursor('i', i.started_at.timestamp_millis(), i.id)
    });
    let now = Utc::now();
    Ok(Json(IncidentsPage {
        incidents: rows.iter().map(|i| IncidentView::of(i, now)).collect(),
        next,
    })
    .into_response())
}

async fn openapi(RawQuery(q): RawQuery) -> ApiResult {
    Params::parse(q.as_deref(), &[], &[])?;
    Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_tagged() {
        let c = encode_cursor('r', 1_700_000_000_123, 42);
        assert_eq!(
            decode_cursor('r', &c).expect("decode"),
            (1_700_000_000_123, 42)
        );
        assert!(
            decode_cursor('i', &c).is_err(),
            "a results cursor is not an incidents cursor"
        );
        for bad in [
            "",
            "x",
            "cjEyMw",
            "!!!",
            &encode_cursor('r', 1, 2).replace('M', "Q"),
        ] {
            assert!(decode_cursor('r', bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_take_rfc3339_or_unix_ms() {
        let t = parse_time("since", "2025-05-01T12:00:00Z").expect("rfc3339");
        assert_eq!(t.timestamp_millis(), 1_746_100_800_000);
        assert_eq!(parse_time("since", "1746100800000").expect("ms"), t);
        // An unencoded `+` of an offset arrives as a space.
        assert_eq!(
            parse_time("since", "2025-05-01T14:00:00 02:00").expect("offset"),
            t
        );
        let e = parse_time("until", "yesterday").expect_err("bad");
        assert!(e.message.contains("`until`"), "{}", e.message);
        assert!(parse_time("since", "99999999999999999999").is_err());
    }

    #[test]
    fn params_reject_unknown_repeated_and_empty() {
        let ok = Params::parse(
            Some("label=a:b&label=c:d&state=up"),
            &["label", "state"],
            &["label"],
        )
        .expect("valid");
        assert_eq!(ok.all("label").collect::<Vec<_>>(), ["a:b", "c:d"]);
        for (q, words) in [
            ("limt=5", "unknown query parameter `limt`"),
            ("state=up&state=down", "more than once"),
            ("state=", "`state` is empty"),
        ] {
            let e = Params::parse(Some(q), &["label", "state"], &["label"])
                .err()
                .expect("rejected");
            assert!(e.message.contains(words), "{q}: {}", e.message);
        }
    }

    #[test]
    fn series_steps_are_capped() {
        let until = Utc::now();
        let since = until - TimeDelta::days(1);
        assert!(series_step("1m", since, until).is_ok());
        let e = series_step("30s", since, until).expect_err("below a minute");
        assert!(e.message.contains("at least 1m"), "{}", e.message);
        let e = series_step("1m", since, until + TimeDelta::days(1)).expect_err("too many");
        assert!(e.message.contains("2880 points"), "{}", e.message);
        assert!(e.message.contains("at least 120s"), "{}", e.message);
    }

    #[test]
    fn the_document_is_json_and_names_every_path() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        for p in paths() {
            assert!(doc["paths"].get(p).is_some(), "{p} is not documented");
        }
    }

    /// The status and JSON body of `method path` on the API routes alone.
    async fn call(method: &str, path: &str) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let res = routes()
            .with_state(LiveState::default())
            .oneshot(req)
            .await
            .expect("response");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }

    #[tokio::test]
    async fn unknown_paths_methods_and_missing_history_answer_json() {
        for (method, path, status, words) in [
            (
                "GET",
                "/api/v1/nope",
                StatusCode::NOT_FOUND,
                "no API endpoint at /api/v1/nope",
            ),
            ("GET", "/api", StatusCode::NOT_FOUND, "no API endpoint"),
            (
                "GET",
                "/api/v1/probes/a/b/c",
                StatusCode::NOT_FOUND,
                "no API endpoint",
            ),
            (
                "POST",
                "/api/v1/probes",
                StatusCode::METHOD_NOT_ALLOWED,
                "method POST",
            ),
            (
                "GET",
                "/api/v1/probes",
                StatusCode::SERVICE_UNAVAILABLE,
                "history",
            ),
            (
                "GET",
                "/api/v1/probes/x",
                StatusCode::NOT_FOUND,
                "no probe named `x`",
            ),
            (
                "GET",
                "/api/v1/probes?x=1",
                StatusCode::BAD_REQUEST,
                "unknown query parameter `x`",
            ),
        ] {
            let (got, body) = call(method, path).await;
            assert_eq!(got, status, "{method} {path}: {body}");
            let msg = body["error"].as_str().expect("error string");
            assert!(msg.contains(words), "{method} {path}: {msg}");
        }
        let (got, doc) = call("GET", "/api/v1/openapi.json").await;
        assert_eq!(got, StatusCode::OK);
        assert!(doc["paths"].is_object());
    }

    #[test]
    fn stats_windows_round_up_to_whole_minutes() {
        let t = |s: &str| parse_time("t", s).expect("time");
        assert_eq!(
            ceil_minute(t("2025-05-01T12:00:00Z")),
            t("2025-05-01T12:00:00Z")
        );
        assert_eq!(
            ceil_minute(t("2025-05-01T12:00:00.001Z")),
            t("2025-05-01T12:01:00Z")
        );
        let p = Params::parse(
            Some("since=2025-05-01T12:00:10Z&until=2025-05-01T12:00:50Z"),
            &["since", "until"],
            &[],
        )
        .expect("params");
        let e = stats_window(&p, Utc::now()).expect_err("no whole minute");
        assert!(e.message.contains("minute resolution"), "{}", e.message);
        let p = Params::parse(
            Some("window=90m&until=2025-05-01T12:00:30Z"),
            &["window", "until"],
            &[],
        )
        .expect("params");
        let (a, b) = stats_window(&p, Utc::now()).expect("window");
        assert_eq!(
            (a, b),
            (t("2025-05-01T10:31:00Z"), t("2025-05-01T12:01:00Z"))
        );
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
    }
}
