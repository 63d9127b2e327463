//! The alerting state as the HTTP server shows it: a snapshot per probe of
//! its status, streaks, open incident, dependency cause and maintenance,
//! published by the alerting task after every result and every tick.
//!
//! The board is the only way the server learns alerting state: it never
//! touches the [`super::Engine`], and the engine never waits for a reader
//! (a publish holds a write lock only to swap small values).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ProbeState;

/// One probe's alerting state, safe to show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    /// `pending`, `up` or `down` (the state machine's status).
    pub status: &'static str,
    /// When the probe entered `status`.
    pub since: Option<DateTime<Utc>>,
    pub fail_streak: u32,
    pub ok_streak: u32,
    /// The dependency the open incident is attributed to.
    pub caused_by: Option<String>,
    /// A maintenance window covers the probe right now.
    pub maintenance: bool,
    /// Start of the open incident (first failure of its streak); with the
    /// probe name it identifies the incident's row in the database.
    pub incident_started: Option<DateTime<Utc>>,
    /// The open degradation's reason, while the probe is up but degraded.
    pub degraded: Option<String>,
    /// A slow upward latency trend over days, in words (a finding).
    pub trend: Option<String>,
}

impl AlertView {
    pub fn of(state: &ProbeState, maintenance: bool) -> AlertView {
        AlertView {
            status: state.status.as_str(),
            since: state.since,
            fail_streak: state.fail_streak,
            ok_streak: state.ok_streak,
            caused_by: state.incident.as_ref().and_then(|i| i.caused_by.clone()),
            maintenance,
            incident_started: state.incident.as_ref().map(|i| i.started_at),
            degraded: state
                .degraded_incident()
                .map(|i| i.reason.clone().unwrap_or_else(|| "degraded".into())),
            trend: state.trend().map(str::to_string),
        }
    }

    /// The one word a status page shows: `maintenance` while a window is in
    /// effect, `dependency` when down because a dependency is down,
    /// `degraded` when up with an open degradation, else the status
    /// (`pending`, `up`, `down`).
    pub fn state(&self) -> &'static str {
        if self.maintenance {
            "maintenance"
        } else if self.status == "down" && self.caused_by.is_some() {
            "dependency"
        } else if self.status == "up" && self.degraded.is_some() {
            "degraded"
        } else {
            self.status
        }
    }
}

/// Shared, cheaply cloned board of [`AlertView`]s by probe name.
#[derive(Debug, Clone, Default)]
pub struct AlertBoard(Arc<RwLock<HashMap<String, AlertView>>>);

impl AlertBoard {
    pub fn publish(&self, name: &str, view: AlertView) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(name) {
            Some(v) if *v == view => {}
            Some(v) => *v = view,
            None => {
                map.insert(name.to_string(), view);
            }
        }
    }

    /// Forgets the probes `keep` says no to (removed by a reload).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|name, _| keep(name));
    }

    pub fn get(&self, name: &str) -> Option<AlertView> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(name).cloned()
    }

    pub fn snapshot(&self) -> HashMap<String, AlertView> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Open incidents right now (probes `down`), for `lookout_incidents_open`.
    pub fn open_incidents(&self) -> usize {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.values().filter(|v| v.status == "down").count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Incident, Status};

    fn down(caused_by: Option<&str>) -> ProbeState {
        let at = Utc::now();
        ProbeState {
            status: Status::Down,
            since: Some(at),
            fail_streak: 3,
            incident: Some(Box::new(Incident {
                id: Some(7),
                started_at: at,
                opened_at: at,
                ended_at: None,
                first_failure: None,
                last_failure: None,
                streak: 3,
                caused_by: caused_by.map(str::to_string),
                notified: true,
                last_notice_at: None,
                ended_by: None,
                kind: Default::default(),
                reason: None,
            })),
            ..ProbeState::new()
        }
    }

    #[test]
    fn state_word_precedence() {
        assert_eq!(AlertView::of(&ProbeState::new(), false).state(), "pending");
        assert_eq!(AlertView::of(&down(None), false).state(), "down");
        let dep = AlertView::of(&down(Some("db")), false);
        assert_eq!(dep.state(), "dependency");
        assert_eq!(dep.caused_by.as_deref(), Some("db"));
        assert!(dep.incident_started.is_some());
        // Maintenance wins over everything: notices are silenced.
        assert_eq!(
            AlertView::of(&down(Some("db")), true).state(),
            "maintenance"
        );
    }

    #[test]
    fn board_counts_open_incidents() {
        let board = AlertBoard::default();
        board.publish("a", AlertView::of(&down(None), false));
        board.publish("b", AlertView::of(&ProbeState::new(), false));
        board.publish("c", AlertView::of(&down(Some("a")), false));
        assert_eq!(board.open_incidents(), 2);
        board.publish("a", AlertView::of(&ProbeState::new(), false));
        assert_eq!(board.open_incidents(), 1);
        assert_eq!(board.get("c").map(|v| v.state()), Some("dependency"));
        assert!(board.get("zz").is_none());
    }
}
