//! The HTML pages: the status page at `/` and a page per probe at
//! `/probes/{name}`, rendered on the server (they work without JavaScript),
//! with their assets embedded in the binary.
//!
//! This module holds the routes, the query-string filters (`?state=`,
//! `?label=k:v`, `?group=`, `?q=`), the page frame and the responses'
//! headers (a strict Content-Security-Policy: no inline script or style
//! anywhere). What each page shows is built in `status_page` and
//! `probe_page`.

use std::sync::OnceLock;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use super::html::{self, Esc};
use super::{probe_page, status_page, LiveState, ProbeInfo};
use crate::alert::AlertView;

/// `/`, `/probes/{name}`, `/incidents/{id}` and `/assets/...`.
pub fn routes() -> Router<LiveState> {
    Router::new()
        .route("/", get(index))
        .route("/probes/{name}", get(probe))
        .route("/incidents/{id}", get(incident))
        .route("/assets/{file}", get(asset))
        .route(
            "/favicon.ico",
            get(|| async { Redirect::permanent("/assets/favicon.svg") }),
        )
}

/// The states a probe can be shown in, in the order the summary lists them.
pub const STATES: [&str; 6] = [
    "up",
    "degraded",
    "down",
    "dependency",
    "maintenance",
    "pending",
];

/// The word the pages show for a probe: the alerting board's, or `pending`
/// before the alerting task published anything.
pub fn state_of(view: Option<&AlertView>) -> &'static str {
    view.map_or("pending", AlertView::state)
}

/// The Content-Security-Policy every HTML response carries.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'";

async fn index(State(s): State<LiveState>, RawQuery(q): RawQuery) -> Response {
    match Filters::parse(q.as_deref()) {
        Ok(f) => html_response(StatusCode::OK, status_page::render(&s, &f).await),
        Err(e) => error_page(StatusCode::BAD_REQUEST, "Bad filter", &e),
    }
}

async fn probe(State(s): State<LiveState>, Path(name): Path<String>) -> Response {
    match probe_page::render(&s, &name).await {
        Some(page) => html_response(StatusCode::OK, page),
        None => error_page(
            StatusCode::NOT_FOUND,
            "Unknown probe",
            &format!("No probe is named `{name}` in this configuration."),
        ),
    }
}

async fn incident(State(s): State<LiveState>, Path(id): Path<String>) -> Response {
    match super::timeline::page(&s, &id).await {
        Ok(Some(page)) => html_response(StatusCode::OK, page),
        Ok(None) => error_page(
            StatusCode::NOT_FOUND,
            "Unknown incident",
            &format!("There is no incident #{id}."),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "incident page: history unavailable");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "History unavailable",
                "The history database cannot answer right now.",
            )
        }
    }
}

/// An HTML page with the security headers; never cached (it is live).
pub fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A small page that says what went wrong, with a way back.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<main class=\"error\"><h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the status page</a></p></main>",
        Esc(title),
        Esc(message)
    );
    html_response(status, page(title, &body, Utc::now()))
}

/// The frame every page shares: head (viewport, stylesheet, script,
/// no-JavaScript refresh), top bar, `body`, footer.
pub fn page(title: &str, body: &str, now: DateTime<Utc>) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <link rel=\"icon\" href=\"/assets/favicon.svg\" type=\"image/svg+xml\">\
         <script src=\"/assets/app.js\" defer></script>\
         <noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript></head>\
         <body><header class=\"top\"><a class=\"brand\" href=\"/\">Lookout</a>\
         <span class=\"updated\" id=\"updated\" data-refresh>updated {}</span></header>\n\
         {body}\n<footer class=\"foot\">lookout {}</footer></body></html>\n",
        html::rel_time(now, now),
        env!("CARGO_PKG_VERSION"),
        title = Esc(title),
    )
}

/// What `/` shows: probes in some states, with some labels, matching a
/// text, grouped by a label's value. Parsed from the query string; an empty
/// query shows everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Show probes in these states only (any of them); empty: all.
    pub states: Vec<&'static str>,
    /// Show probes with all these labels.
    pub labels: Vec<(String, String)>,
    /// Group by this label's value.
    pub group: Option<String>,
    /// Show probes whose name, target or labels contain this (any case).
    pub text: Option<String>,
}

impl Filters {
    /// Parses `state=down&label=team:core&group=env&q=api`; an unknown
    /// state or a label without `:` is an error in words. Other keys are
    /// ignored.
    pub fn parse(query: Option<&str>) -> Result<Filters, String> {
        let mut f = Filters::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let v = v.trim();
            match k.as_ref() {
                "state" if !v.is_empty() => {
                    f.states
                        .push(STATES.into_iter().find(|s| *s == v).ok_or_else(|| {
                            format!("unknown state `{v}`; use one of {}", STATES.join(", "))
                        })?)
                }
                "label" if !v.is_empty() => {
                    let (key, value) = v.split_once(':').ok_or_else(|| {
                        format!("label filter `{v}` needs the form key:value, e.g. team:payments")
                    })?;
                    f.labels.push((key.to_string(), value.to_string()));
                }
                "group" if !v.is_empty() => f.group = Some(v.to_string()),
                "q" if !v.is_empty() => f.text = Some(v.to_string()),
                _ => {}
            }
        }
        Ok(f)
    }

    /// Whether `info`, currently in `state`, passes every filter.
    pub fn matches(&self, info: &ProbeInfo, state: &str) -> bool {
        (self.states.is_empty() || self.states.contains(&state))
            && self
                .labels
                .iter()
                .all(|(k, v)| info.labels.get(k).is_some_and(|have| have == v))
            && self.text.as_deref().is_none_or(|t| text_matches(info, t))
    }

    /// Whether any filter (not the grouping) is set.
    pub fn is_filtering(&self) -> bool {
        !self.states.is_empty() || !self.labels.is_empty() || self.text.is_some()
    }

    /// The link to `/` with these filters.
    pub fn href(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for s in &self.states {
            q.append_pair("state", s);
        }
        for (k, v) in &self.labels {
            q.append_pair("label", &format!("{k}:{v}"));
        }
        if let Some(g) = &self.group {
            q.append_pair("group", g);
        }
        if let Some(t) = &self.text {
            q.append_pair("q", t);
        }
        let q = q.finish();
        if q.is_empty() {
            "/".to_string()
        } else {
            format!("/?{q}")
        }
    }

    /// These filters with only `state` as the state filter.
    pub fn with_state(&self, state: &'static str) -> Filters {
        Filters {
            states: vec![state],
            ..self.clone()
        }
    }

    /// These filters plus the label `k=v`.
    pub fn with_label(&self, k: &str, v: &str) -> Filters {
        let mut f = self.clone();
        if !f.labels.iter().any(|(a, b)| a == k && b == v) {
            f.labels.push((k.to_string(), v.to_string()));
        }
        f
    }

    /// These filters grouped by `key` (or not grouped).
    pub fn with_group(&self, key: Option<&str>) -> Filters {
        Filters {
            group: key.map(str::to_string),
            ..self.clone()
        }
    }
}

fn text_matches(info: &ProbeInfo, text: &str) -> bool {
    let t = text.to_lowercase();
    info.name.to_lowercase().contains(&t)
        || info.target.to_lowercase().contains(&t)
        || info
            .labels
            .iter()
            .any(|(k, v)| format!("{k}={v}").to_lowercase().contains(&t))
}

/// One embedded file: its bytes and content type.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

fn asset_named(file: &str) -> Option<Asset> {
    let (body, content_type): (&'static [u8], _) = match file {
        "style.css" => (
            include_bytes!("assets/style.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_bytes!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "favicon.svg" => (include_bytes!("assets/favicon.svg"), "image/svg+xml"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

/// A strong validator for an embedded file: the version and a hash of its
/// bytes, so a new build never serves a stale copy from a cache.
fn etag(file: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    static TAGS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        OnceLock::new();
    let tags = TAGS.get_or_init(Default::default);
    let mut map = tags
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(file.to_string())
        .or_insert_with(|| {
            let digest = Sha256::digest(body);
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("\"{}-{hex}\"", env!("CARGO_PKG_VERSION"))
        })
        .clone()
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = asset_named(&file) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let tag = etag(&file, a.body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response()
    };
    let h = res.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, labels: &[(&str, &str)]) -> ProbeInfo {
        ProbeInfo {
            name: name.into(),
            kind: "http",
            target: "https://api.example.com/health".into(),
            schedule: "every 30s".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn filters_parse_and_round_trip() {
        let f = Filters::parse(Some(
            "state=down&state=dependency&label=team%3Acore&label=env:prod&group=env&q=API&x=1",
        ))
        .unwrap();
        assert_eq!(f.states, ["down", "dependency"]);
        assert_eq!(
            f.labels,
            [
                ("team".into(), "core".into()),
                ("env".into(), "prod".into())
            ]
        );
        assert_eq!(f.group.as_deref(), Some("env"));
        assert_eq!(f.text.as_deref(), Some("API"));
        assert_eq!(Filters::parse(Some(&f.href()[2..])).unwrap(), f);
        assert_eq!(Filters::default().href(), "/");
        assert_eq!(Filters::parse(None).unwrap(), Filters::default());
        assert!(Filters::parse(Some("state=sideways"))
            .unwrap_err()
            .contains("unknown state `sideways`"));
        assert!(Filters::parse(Some("label=team"))
            .unwrap_err()
            .contains("key:value"));
    }

    #[test]
    fn filters_match_state_labels_and_text() {
        let p = info("checkout", &[("team", "pay"), ("env", "prod")]);
        let f = |q: &str| Filters::parse(Some(q)).unwrap();
        assert!(f("").matches(&p, "up"));
        assert!(f("state=up&state=down").matches(&p, "down"));
        assert!(!f("state=up").matches(&p, "down"));
        assert!(f("label=team:pay&label=env:prod").matches(&p, "up"));
        assert!(!f("label=team:pay&label=env:dev").matches(&p, "up"));
        assert!(!f("label=zone:a").matches(&p, "up"));
        assert!(f("q=CHECK").matches(&p, "up"));
        assert!(f("q=api.example").matches(&p, "up"));
        assert!(f("q=env%3Dprod").matches(&p, "up"));
        assert!(!f("q=nothing").matches(&p, "up"));
    }

    #[test]
    fn every_asset_has_its_type() {
        assert!(asset_named("style.css").is_some_and(|a| a.content_type.starts_with("text/css")));
        assert!(
            asset_named("app.js").is_some_and(|a| a.content_type.starts_with("text/javascript"))
        );
        assert!(asset_named("favicon.svg").is_some_and(|a| a.content_type == "image/svg+xml"));
        assert!(asset_named("../mod.rs").is_none());
    }
}
