//! Notices and the notifiers that deliver them: email (SMTP via lettre),
//! Slack incoming webhooks and generic JSON webhooks.
//!
//! A [`Notice`] is plain data about one probe's incident (opened, reminded,
//! resolved) or a test. [`send`] delivers one notice through one configured
//! notifier and classifies the outcome so the caller (the outbox) knows
//! whether to retry, when, or to give up. This module never decides *whether*
//! to notify (that is `alert`), never touches the database, and never puts a
//! secret in a message.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::result::Failure;

/// Why a notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// An incident opened: the probe went down.
    Opened,
    /// Still down: the `remind` interval passed.
    Reminder,
    /// The incident resolved: the probe is up again.
    Resolved,
    /// `lookout notify-test`.
    Test,
}

/// Everything a person needs to act on an incident. Serialized as the
/// outbox payload and as the generic webhook's body (documented schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub probe: String,
    /// `down` or `up`.
    pub state: String,
    /// The probe's kind (`http`, `postgres`...) and its target, redacted.
    pub probe_kind: String,
    pub target: String,
    /// When the probe entered this state.
    pub since: DateTime<Utc>,
    /// How long it has been (or was) down, when known.
    #[serde(default, with = "opt_secs")]
    pub down_for: Option<Duration>,
    /// The failure that opened the incident and the latest one.
    pub first_failure: Option<Failure>,
    pub last_failure: Option<Failure>,
    /// The duration of the latest run.
    #[serde(default, with = "opt_secs")]
    pub last_latency: Option<Duration>,
    /// Consecutive failures (or successes, for a resolution).
    pub streak: u32,
    /// Probes this one takes down with it (their incidents are caused by it).
    pub dependents: Vec<String>,
    /// The incident's id in the database, when stored.
    pub incident: Option<i64>,
    /// Link to the probe on the status page, when `server.public_url` is set.
    pub link: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// When the notice was created.
    pub at: DateTime<Utc>,
}

/// How a delivery attempt failed, so the caller can decide what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// True when retrying cannot help (5xx SMTP answer, 4xx webhook other
    /// than 429, a refused address).
    pub permanent: bool,
    /// The receiver asked us to wait this long (Slack's 429 Retry-After).
    pub retry_after: Option<Duration>,
    /// One line for the log and the outbox row; never holds a secret.
    pub message: String,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        Ok(v.map(|s| Duration::from_secs_f64(s.max(0.0))))
    }
}
