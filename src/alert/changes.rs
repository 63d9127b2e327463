//! Change events: deploys and configuration changes that a CI pipeline or
//! an operator posts (`POST /api/v1/events`), kept in the database and cited
//! in notices ("started 4 minutes after deploy v1.4.2 of service checkout")
//! when one matches an incident's probe shortly before it started.
//!
//! An event matches a probe when each of the event's labels is a label of
//! the probe with the same value (so `{service: checkout}` matches every
//! probe labelled `service: checkout`, whatever its other labels); an event
//! without labels matches every probe. This module is pure: the alerting
//! task owns the events' storage and memory.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The longest title, kind, label key or value accepted.
pub const MAX_TITLE: usize = 200;
pub const MAX_WORD: usize = 64;
/// The most labels one event can carry.
pub const MAX_LABELS: usize = 16;

/// One change, as posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The database's id, once stored.
    pub id: Option<i64>,
    /// When the change happened (when it was posted, unless given).
    pub at: DateTime<Utc>,
    /// What sort of change: `deploy` (default), `config`, `flag`, ...
    pub kind: String,
    /// One line a person reads: `v1.4.2`, `raise pool size to 50`.
    pub title: String,
    pub labels: BTreeMap<String, String>,
    /// Where to read more (the pipeline run, the pull request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl ChangeEvent {
    /// Whether this change may concern a probe with `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// `deploy "v1.4.2" of service checkout`: the kind, the title and,
    /// when the event names one, the service.
    pub fn describe(&self) -> String {
        let mut s = format!("{} \"{}\"", self.kind, self.title);
        if let Some(service) = self.labels.get("service") {
            s.push_str(&format!(" of service {service}"));
        }
        s
    }
}

/// A change as a notice cites it: the event and how long before the
/// incident started it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRef {
    pub id: Option<i64>,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub title: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Seconds between the change and the incident's start.
    pub before_s: f64,
}

impl ChangeRef {
    /// `started 4m after deploy "v1.4.2" of service checkout`.
    pub fn sentence(&self) -> String {
        let event = ChangeEvent {
            id: self.id,
            at: self.at,
            kind: self.kind.clone(),
            title: self.title.clone(),
            labels: self.labels.clone(),
            link: self.link.clone(),
        };
        let secs = self.before_s.max(0.0).round() as u64;
        let after = crate::notify::render::span(std::time::Duration::from_secs(secs));
        format!("started {after} after {}", event.describe())
    }
}

/// The changes among `events` that match `labels` and happened within
/// `window` before `start` (or at it), newest first, at most `limit`.
pub fn cite<'a>(
    events: impl IntoIterator<Item = &'a ChangeEvent>,
    labels: &BTreeMap<String, String>,
    start: DateTime<Utc>,
    window: std::time::Duration,
    limit: usize,
) -> Vec<ChangeRef> {
    let Ok(window) = chrono::Duration::from_std(window) else {
        return Vec::new();
    };
    let mut found: Vec<&ChangeEvent> = events
        .into_iter()
        .filter(|e| e.at <= start && start - e.at <= window && e.matches(labels))
        .collect();
    found.sort_by_key(|e| std::cmp::Reverse(e.at));
    found
        .into_iter()
        .take(limit)
        .map(|e| ChangeRef {
            id: e.id,
            at: e.at,
            kind: e.kind.clone(),
            title: e.title.clone(),
            labels: e.labels.clone(),
            link: e.link.clone(),
            before_s: (start - e.at).num_milliseconds() as f64 / 1000.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn event(mins_before: i64, labels: &[(&str, &str)], now: DateTime<Utc>) -> ChangeEvent {
        ChangeEvent {
            id: Some(mins_before),
            at: now - TimeDelta::minutes(mins_before),
            kind: "deploy".into(),
            title: format!("v{mins_before}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            link: None,
        }
    }

    #[test]
    fn changes_shortly_before_an_incident_with_matching_labels_are_cited_newest_first() {
        let start = Utc::now();
        let probe: BTreeMap<String, String> = [("service", "checkout"), ("team", "shop")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let events = vec![
            event(4, &[("service", "checkout")], start),
            event(10, &[], start),
            event(20, &[("service", "search")], start),
            event(45, &[("service", "checkout")], start),
            event(-2, &[("service", "checkout")], start),
        ];
        let cited = cite(
            &events,
            &probe,
            start,
            std::time::Duration::from_secs(1800),
            5,
        );
        let titles: Vec<&str> = cited.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["v4", "v10"]);
        assert_eq!(
            cited[0].sentence(),
            "started 4m after deploy \"v4\" of service checkout"
        );
        assert_eq!(cited[1].sentence(), "started 10m after deploy \"v10\"");
        assert_eq!(
            cite(
                &events,
                &probe,
                start,
                std::time::Duration::from_secs(1800),
                1
            )
            .len(),
            1
        );
    }
}
