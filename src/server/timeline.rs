//! An incident's timeline: what happened, in order — the changes posted
//! shortly before it, the first failure (or first slow run of a
//! degradation), the opening, the dependency it was attributed to, every
//! notice sent (to whom, and whether it was delivered), and the recovery.
//! Served as JSON (`GET /api/v1/incidents/{id}`), as Markdown for a
//! post-mortem (`?format=markdown`), and as the incident's page
//! (`/incidents/{id}`). Everything is read from the database; every text
//! shown was redacted before it was stored.

use std::fmt::Write as _;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;

use super::api::{history, shown, ts, ApiError, ApiResult, IncidentView, Params};
use super::events_api::EventView;
use super::html::{self, path_segment, Esc};
use super::LiveState;
use crate::alert::changes::ChangeEvent;
use crate::alert::state::IncidentKind;
use crate::config::DEFAULT_EVENTS_WINDOW;
use crate::store::alert_state::StoredIncident;
use crate::store::outbox::{OutboxRow, OutboxStatus};

/// One step of the timeline.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Entry {
    pub at: String,
    /// `change`, `first_failure`, `opened`, `cause`, `notice`, `ended`.
    pub what: &'static str,
    pub detail: String,
    #[serde(skip)]
    time: DateTime<Utc>,
}

/// Everything one incident's views are made of.
struct Story {
    incident: StoredIncident,
    notices: Vec<OutboxRow>,
    changes: Vec<ChangeEvent>,
    now: DateTime<Utc>,
}

impl Story {
    fn entries(&self) -> Vec<Entry> {
        let i = &self.incident;
        let degraded = i.kind == IncidentKind::Degraded;
        let mut out = Vec::new();
        let mut push = |time: DateTime<Utc>, what: &'static str, detail: String| {
            out.push(Entry {
                at: ts(time),
                what,
                detail,
                time,
            });
        };
        for c in &self.changes {
            let minutes = (i.started_at - c.at).num_seconds().max(0) / 60;
            let when = if c.at <= i.started_at {
                format!(", {minutes} min before the start")
            } else {
                String::new()
            };
            push(c.at, "change", format!("{}{when}", c.describe()));
        }
        let first = match (&i.first_class, &i.first_message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) if degraded => "the first run that broke an `alert.degraded` rule".into(),
            (None, None) => "failed".into(),
        };
        push(
            i.started_at,
            "first_failure",
            if degraded {
                format!("degradation began: {first}")
            } else {
                format!("first failure: {first}")
            },
        );
        let opened = if degraded {
            format!(
                "degradation opened: {}",
                i.reason.as_deref().unwrap_or("degraded")
            )
        } else {
            "incident opened: the failure streak reached `alert.after`".to_string()
        };
        push(i.opened_at, "opened", opened);
        if let Some(dep) = &i.caused_by {
            push(
                i.opened_at,
                "cause",
                format!("attributed to dependency {dep}, which was down: no notice of its own"),
            );
        }
        for n in &self.notices {
            let outcome = match (n.status, n.delivered_at) {
                (OutboxStatus::Delivered, Some(t)) => format!("delivered at {}", clock(t)),
                (OutboxStatus::Delivered, None) => "delivered".into(),
                (OutboxStatus::Pending, _) => format!("pending after {} attempts", n.attempts),
                (OutboxStatus::Failed, _) => format!(
                    "failed: {}",
                    n.last_error.as_deref().unwrap_or("no reason recorded")
                ),
                (OutboxStatus::Expired, _) => format!(
                    "expired: {}",
                    n.last_error.as_deref().unwrap_or("no reason recorded")
                ),
            };
            push(
                n.created_at,
                "notice",
                format!("{} notice to {}: {outcome}", n.kind, n.notifier),
            );
        }
        if let Some(end) = i.ended_at {
            let how = match i.ended_by.as_deref() {
                Some("removed") => "closed: the probe was removed from the configuration".into(),
                Some("down") => "ended: the probe went down; the outage took over".into(),
                _ if degraded => "recovered: back within bounds".into(),
                _ => match (&i.last_class, &i.last_message) {
                    (Some(c), Some(m)) => format!("recovered (the last failure was {c}: {m})"),
                    _ => "recovered".into(),
                },
            };
            push(end, "ended", how);
        }
        out.sort_by_key(|e| e.time);
        out
    }

    fn title(&self) -> String {
        let i = &self.incident;
        format!("Incident #{}: {} {}", i.id, i.probe, i.kind.as_str())
    }

    fn markdown(&self) -> String {
        let i = &self.incident;
        let mut s = format!("# {}\n\n", self.title());
        let lasted = html::span(i.ended_at.unwrap_or(self.now) - i.started_at);
        let _ = writeln!(s, "- **Probe:** {}", i.probe);
        let _ = writeln!(s, "- **Kind:** {}", i.kind.as_str());
        let _ = writeln!(s, "- **Started:** {}", stamp(i.started_at));
        match i.ended_at {
            Some(t) => {
                let _ = writeln!(s, "- **Ended:** {} (lasted {lasted})", stamp(t));
            }
            None => {
                let _ = writeln!(s, "- **Ended:** ongoing ({lasted} so far)");
            }
        }
        if let Some(r) = &i.reason {
            let _ = writeln!(s, "- **Reason:** {r}");
        }
        if let (Some(c), Some(m)) = (&i.last_class, &i.last_message) {
            let _ = writeln!(s, "- **Last failure:** {c}: {m}");
        }
        let _ = writeln!(s, "- **Failure streak:** {}", i.streak);
        s.push_str("\n## Timeline (UTC)\n\n| time | what | detail |\n| --- | --- | --- |\n");
        for e in self.entries() {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                stamp(e.time),
                e.what,
                e.detail.replace('|', "\\|").replace('\n', " ")
            );
        }
        s
    }

    fn html(&self) -> String {
        let i = &self.incident;
        let mut body = String::new();
        let _ = write!(
            body,
            "<article class=\"incident-detail\"><h1>{}</h1><p><a href=\"/probes/{}\">{}</a> · {}</p>",
            Esc(&self.title()),
            path_segment(&i.probe),
            Esc(&i.probe),
            html::abs_time(i.started_at)
        );
        if let Some(r) = &i.reason {
            let _ = write!(body, "<p class=\"cause\">{}</p>", Esc(r));
        }
        body.push_str(
            "<table class=\"timeline\"><thead><tr><th>time</th><th>what</th><th>detail</th></tr></thead><tbody>",
        );
        for e in self.entries() {
            let _ = write!(
                body,
                "<tr data-what=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.what,
                html::abs_time(e.time),
                e.what.replace('_', " "),
                Esc(&e.detail)
            );
        }
        let _ = write!(
            body,
            "</tbody></table><p><a href=\"/api/v1/incidents/{}?format=markdown\">Markdown for a post-mortem</a></p></article>",
            i.id
        );
        super::pages::page(&Esc(&self.title()).to_string(), &body, self.now)
    }
}

fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
        .replace('T', " ")
        .replace('Z', "")
}

/// Reads incident `id` and what its timeline needs; `None` when there is
/// no such incident.
async fn story(s: &LiveState, id: i64) -> Result<Option<Story>, ApiError> {
    let labels = {
        let probes = s.probes.load();
        move |probe: &str| {
            probes
                .iter()
                .find(|p| p.name == probe)
                .map(|p| p.labels.clone())
                .unwrap_or_default()
        }
    };
    let now = Utc::now();
    let found = history(s, move |st| {
        let Some(incident) = st.incident(id)? else {
            return Ok(None);
        };
        let notices = st.notices_of_incident(&incident.probe, id)?;
        let window = TimeDelta::from_std(DEFAULT_EVENTS_WINDOW).unwrap_or_default();
        let until = incident.ended_at.unwrap_or(now);
        let changes = st.events_between(incident.started_at - window, until, 100)?;
        Ok(Some((incident, notices, changes)))
    })
    .await?;
    Ok(found.map(|(incident, notices, mut changes)| {
        let probe_labels = labels(&incident.probe);
        changes.retain(|c| c.matches(&probe_labels));
        changes.reverse();
        Story {
            incident,
            notices,
            changes,
            now,
        }
    }))
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad(format!(
            "an incident id is a positive whole number, not `{}`",
            shown(raw)
        ))
    })
}

#[derive(Serialize)]
struct IncidentDetail {
    incident: IncidentView,
    timeline: Vec<Entry>,
    changes: Vec<EventView>,
    markdown: String,
}

/// `GET /api/v1/incidents/{id}` (`?format=markdown` for Markdown).
pub async fn incident(
    State(s): State<LiveState>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref(), &["format"], &[])?;
    let markdown = match p.one("format") {
        None | Some("json") => false,
        Some("markdown") | Some("md") => true,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "`format` is json or markdown, not `{}`",
                shown(other)
            )))
        }
    };
    let id = parse_id(&raw)?;
    let Some(story) = story(&s, id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no incident #{id}; GET /api/v1/incidents lists them"),
        ));
    };
    if markdown {
        return Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            story.markdown(),
        )
            .into_response());
    }
    Ok(Json(IncidentDetail {
        incident: IncidentView::of(&story.incident, story.now),
        timeline: story.entries(),
        changes: story.changes.iter().map(EventView::of).collect(),
        markdown: format!("/api/v1/incidents/{id}?format=markdown"),
    })
    .into_response())
}

/// The incident's page, `/incidents/{id}`: `None` when there is no such
/// incident (or the id is not one).
pub async fn page(s: &LiveState, raw: &str) -> Result<Option<String>, String> {
    let Ok(id) = parse_id(raw) else {
        return Ok(None);
    };
    match story(s, id).await {
        Ok(found) => Ok(found.map(|st| st.html())),
        Err(e) => Err(format!("{e:?}")),
    }
}
