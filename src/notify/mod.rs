//! Notices and the notifiers that deliver them: email (SMTP via lettre),
//! Slack incoming webhooks and generic JSON webhooks.
//!
//! A [`Notice`] is plain data about one probe's incident (opened, reminded,
//! resolved) or a test. [`send`] delivers one notice through one configured
//! notifier and classifies the outcome so the caller (the outbox) knows
//! whether to retry, when, or to give up. This module never decides *whether*
//! to notify (that is `alert`), never touches the database, and never puts a
//! secret in a message.

pub mod render;

mod email;
mod http;
mod slack;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::config::Notifier;
use crate::probe::tlsutil::CustomCa;
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
    /// `down`, `degraded`, `up`, or `removed` (closed by a reload).
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
    /// What the incident is about: `down` (failing) or `degraded` (passing
    /// but too slow or failing too often, see `alert.degraded`).
    #[serde(default)]
    pub incident_kind: crate::alert::state::IncidentKind,
    /// A degradation's reason in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Change events (deploys...) that match the probe and came shortly
    /// before the incident started, newest first (Opened notices only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::alert::changes::ChangeRef>,
    /// The W3C trace id of the run that opened the incident (HTTP kinds),
    /// so its request can be found in the backend's traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// `tracing.link` with that trace id filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
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

impl Notice {
    /// The notice `lookout notify-test` sends through notifier `name`.
    pub fn test(name: &str, link: Option<String>) -> Notice {
        let now = Utc::now();
        Notice {
            kind: NoticeKind::Test,
            probe: "lookout-test".into(),
            state: "up".into(),
            probe_kind: "test".into(),
            target: format!("notifier {name}"),
            since: now,
            down_for: None,
            first_failure: None,
            last_failure: None,
            last_latency: None,
            streak: 0,
            dependents: Vec::new(),
            incident: None,
            link,
            labels: BTreeMap::new(),
            at: now,
            incident_kind: Default::default(),
            reason: None,
            changes: Vec::new(),
            trace_id: None,
            trace_url: None,
        }
    }
}

impl SendError {
    /// Retrying may help (later).
    pub fn transient(message: impl Into<String>) -> SendError {
        SendError {
            permanent: false,
            retry_after: None,
            message: crate::redact::redact(&message.into()),
        }
    }

    /// Retrying cannot help.
    pub fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            permanent: true,
            retry_after: None,
            message: crate::redact::redact(&message.into()),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        match (self.permanent, self.retry_after) {
            (true, _) => f.write_str(" (permanent)"),
            (false, Some(d)) => write!(f, " (retry after {})", crate::duration::human(d)),
            (false, None) => f.write_str(" (will retry)"),
        }
    }
}

impl std::error::Error for SendError {}

/// The bound on one HTTP delivery (connect, send, answer) and on each SMTP
/// command's answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to deliver, beyond what the notifier's configuration says.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Extra trust anchors (added to the system's) for the SMTP server or
    /// the webhook's HTTPS server.
    pub ca: Option<Arc<CustomCa>>,
    /// Bound on an HTTP delivery, and on each SMTP exchange.
    pub timeout: Duration,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            ca: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl SendOptions {
    /// Options trusting the CA certificates in `pem` besides the system's.
    pub fn with_ca_pem(pem: &str) -> Result<SendOptions, String> {
        let mut certs = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            certs.push(item.map_err(|e| format!("CA PEM is not valid: {e}"))?);
        }
        if certs.is_empty() {
            return Err("CA PEM holds no certificate".into());
        }
        Ok(SendOptions {
            ca: Some(Arc::new(CustomCa {
                path: "(inline CA)".into(),
                certs,
            })),
            ..SendOptions::default()
        })
    }
}

/// Delivers `notice` through `notifier` with default options. `Ok` holds
/// the receiver's answer on one line (`250 2.0.0 Ok: queued`, `HTTP 200: ok`).
pub async fn send(notifier: &Notifier, notice: &Notice) -> Result<String, SendError> {
    let opts = SendOptions {
        ca: notifier.ca(),
        ..SendOptions::default()
    };
    send_with(notifier, notice, &opts).await
}

/// [`send`] with explicit options (extra CA, timeout).
pub async fn send_with(
    notifier: &Notifier,
    notice: &Notice,
    opts: &SendOptions,
) -> Result<String, SendError> {
    let notice = render::redacted(notice);
    let answer = match notifier {
        Notifier::Email { smtp, from, to, .. } => email::send(smtp, from, to, &notice, opts).await,
        Notifier::Slack { webhook } => slack::send(webhook, &notice, opts).await,
        Notifier::Webhook {
            url,
            headers,
            secret,
            ..
        } => webhook::send(url, headers, secret.as_deref(), &notice, opts).await,
    }?;
    Ok(crate::redact::redact(&answer))
}

/// Serde for an `Option<Duration>` as fractional seconds (`null` when
/// absent), shared by `Notice` and the saved alert state. A negative value
/// reads as zero; an infinite or out-of-range one as `None`, never a panic.
pub mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes `Some(d)` as seconds (`f64`), `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    /// Reads seconds (`f64`) or null; negatives clamp to zero.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        Ok(v.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()))
    }
}
