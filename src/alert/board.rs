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
    /// Start of the open incident (first failure of its streak).
    pub incident_started: Option<DateTime<Utc>>,
    /// Database id of the open incident, once saved.
    pub incident_id: Option<i64>,
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
            incident_id: state.incident.as_ref().and_then(|i| i.id),
        }
    }

    /// The one word a status page shows: `maintenance` while a window is in
    /// effect, `dependency` when down because a dependency is down, else
    /// the status (`pending`, `up`, `down`).
    pub fn state(&self) -> &'static str {
        if self.maintenance {
            "maintenance"
        } else if self.status == "down" && self.caused_by.is_some() {
            "dependency"
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
