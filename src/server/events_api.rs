//! `POST /api/v1/events` records a change (a deploy, a configuration
//! change) that a pipeline or an operator reports; `GET /api/v1/events`
//! lists them. Posting needs `server.token` to be configured (the API's
//! bearer token, checked by the auth layer before this runs): an open API
//! never takes writes. A posted event is handed to the alerting task, which
//! stores it and cites it in the notices of incidents that start shortly
//! after it on probes whose labels it matches (see `alert::changes`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::api::{
    history, parse_label, parse_limit, parse_time, shown, ts, ApiError, ApiResult, Params,
};
use super::LiveState;
use crate::alert::changes::{ChangeEvent, MAX_LABELS, MAX_TITLE, MAX_WORD};

/// How far in the future an event's `at` may be (clocks differ a little).
const FUTURE_SLACK: TimeDelta = TimeDelta::minutes(5);
/// What `GET` lists without `since`.
const DEFAULT_SPAN: TimeDelta = TimeDelta::days(7);

/// The body of a `POST`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    title: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    link: Option<String>,
}

/// An event as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct EventView {
    id: Option<i64>,
    at: String,
    kind: String,
    title: String,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
}

impl EventView {
    pub(super) fn of(e: &ChangeEvent) -> EventView {
        EventView {
            id: e.id,
            at: ts(e.at),
            kind: e.kind.clone(),
            title: e.title.clone(),
            labels: e.labels.clone(),
            link: e.link.clone(),
        }
    }
}

#[derive(Serialize)]
struct EventList {
    events: Vec<EventView>,
}

fn word(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(ApiError::bad(format!("`{field}` is empty")));
    }
    if v.chars().count() > max {
        return Err(ApiError::bad(format!(
            "`{field}` is longer than {max} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad(format!(
            "`{field}` holds control characters (`{}`)",
            shown(v)
        )));
    }
    Ok(())
}

/// Checks a posted body and turns it into an event.
fn validate(p: Posted) -> Result<ChangeEvent, ApiError> {
    word("title", &p.title, MAX_TITLE)?;
    let kind = p.kind.unwrap_or_else(|| "deploy".to_string());
    word("kind", &kind, MAX_WORD)?;
    let mut labels = p.labels;
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad(format!(
            "at most {MAX_LABELS} labels, got {}",
            labels.len()
        )));
    }
    for (k, v) in &labels {
        word("labels key", k, MAX_WORD)?;
        word(&format!("labels.{}", shown(k)), v, MAX_TITLE)?;
    }
    if let Some(service) = p.service {
        word("service", &service, MAX_TITLE)?;
        match labels.get("service") {
            Some(v) if *v != service => {
                return Err(ApiError::bad(format!(
                    "`service` ({}) and `labels.service` ({}) differ; give it once",
                    shown(&service),
                    shown(v)
                )))
            }
            _ => {
                labels.insert("service".into(), service);
            }
        }
    }
    let now = Utc::now();
    let at = match p.at {
        Some(v) => parse_time("at", &v)?,
        None => now,
    };
    if at > now + FUTURE_SLACK {
        return Err(ApiError::bad(format!("`at` ({}) is in the future", ts(at))));
    }
    let link = match p.link {
        Some(l) => {
            let url = url::Url::parse(l.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "`link` must be an http(s) URL, not `{}`",
                        shown(&l)
                    ))
                })?;
            Some(url.to_string())
        }
        None => None,
    };
    Ok(ChangeEvent {
        id: None,
        at,
        kind: kind.trim().to_string(),
        title: p.title.trim().to_string(),
        labels,
        link,
    })
}

/// `POST /api/v1/events`.
pub async fn post(State(s): State<LiveState>, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    Params::parse(q.as_deref(), &[], &[])?;
    if s.settings.token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "posting events needs `server.token`: set it in the configuration and send it as \
             `Authorization: Bearer <token>`",
        ));
    }
    let posted: Posted = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "the body must be a JSON object such as {{\"title\": \"v1.4.2\", \"service\": \"checkout\"}}: {e}"
        ))
    })?;
    let event = validate(posted)?;
    let Some(alerts) = s.events.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "events are taken only by `lookout run`",
        ));
    };
    let stored = alerts.post_event(event).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the event was not stored: {e}"),
        )
    })?;
    let location = format!("/api/v1/events?since={}", stored.at.timestamp_millis());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(EventView::of(&stored)),
    )
        .into_response())
}

/// `GET /api/v1/events`: newest first.
pub async fn list(State(s): State<LiveState>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(
        q.as_deref(),
        &["since", "until", "label", "limit"],
        &["label"],
    )?;
    let now = Utc::now();
    let since = p.one("since").map(|v| parse_time("since", v)).transpose()?;
    let until = p.one("until").map(|v| parse_time("until", v)).transpose()?;
    let until = until.unwrap_or(now + TimeDelta::days(1));
    let since = since.unwrap_or(until - DEFAULT_SPAN);
    if since >= until {
        return Err(ApiError::bad("`since` must be before `until`"));
    }
    let labels: Vec<(String, String)> = p
        .all("label")
        .map(|v| parse_label(v).map(|(k, v)| (k.to_string(), v.to_string())))
        .collect::<Result<_, _>>()?;
    let limit = parse_limit(p.one("limit"))?;
    let rows = history(&s, move |st| st.events_between(since, until, 10_000)).await?;
    let events = rows
        .iter()
        .filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
        .take(limit)
        .map(EventView::of)
        .collect();
    Ok(Json(EventList { events }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(json: &str) -> Result<ChangeEvent, String> {
        let p: Posted = serde_json::from_str(json).map_err(|e| e.to_string())?;
        validate(p).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn a_posted_event_is_checked_and_completed() {
        let e = posted(r#"{"title": " v1.4.2 ", "service": "checkout", "labels": {"team": "shop"}, "link": "https://ci.example/7"}"#)
            .expect("valid");
        assert_eq!(e.title, "v1.4.2");
        assert_eq!(e.kind, "deploy");
        assert_eq!(e.labels["service"], "checkout");
        assert_eq!(e.labels["team"], "shop");
        assert_eq!(e.link.as_deref(), Some("https://ci.example/7"));
        for (body, words) in [
            (r#"{"title": ""}"#, "`title` is empty"),
            (r#"{"title": "x", "link": "ftp://a"}"#, "http(s) URL"),
            (
                r#"{"title": "x", "at": "2999-01-01T00:00:00Z"}"#,
                "in the future",
            ),
            (
                r#"{"title": "x", "service": "a", "labels": {"service": "b"}}"#,
                "differ",
            ),
            (r#"{"title": "x\nnew line"}"#, "control characters"),
        ] {
            let err = posted(body).expect_err(body);
            assert!(err.contains(words), "{body}: {err}");
        }
        assert!(serde_json::from_str::<Posted>(r#"{"title": "x", "tittle": 1}"#).is_err());
    }

    #[tokio::test]
    async fn an_api_without_a_token_takes_no_events() {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/api/v1/events")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(r#"{"title": "v1"}"#))
            .expect("request");
        let res = super::super::api::routes()
            .with_state(LiveState::default())
            .oneshot(req)
            .await
            .expect("response");
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
}
