//! The outcome of one probe run: what every probe kind returns, what the
//! recorder writes to the database and what the CLI prints.
//!
//! A `ProbeResult` is plain data. It never holds a secret: every message and
//! detail is passed through [`crate::redact`] before it is stored here.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a run failed. The vocabulary is fixed: it is a label on metrics, a
/// column in the database and a word operators grep for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Name resolution failed (NXDOMAIN, SERVFAIL, no answer for a target host).
    Dns,
    /// The TCP connection could not be established (refused, unreachable).
    Connect,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// The run did not finish within its `timeout`.
    Timeout,
    /// The peer spoke the protocol wrongly (malformed response, redirect loop).
    Protocol,
    /// The target answered, but an expectation did not hold.
    Expectation,
    /// The target refused our credentials.
    Auth,
    /// A response exceeded a configured size bound (`max_body`).
    Size,
    /// A query the target ran failed (database probes).
    Query,
    /// A third party's own status page reports a problem (`statuspage`
    /// probes): a watched component is degraded or down, or an open incident
    /// affects it.
    Vendor,
    /// Something inside Lookout went wrong; never the target's fault.
    Internal,
}

impl FailureClass {
    pub const ALL: [FailureClass; 11] = [
        FailureClass::Dns,
        FailureClass::Connect,
        FailureClass::Tls,
        FailureClass::Timeout,
        FailureClass::Protocol,
        FailureClass::Expectation,
        FailureClass::Auth,
        FailureClass::Size,
        FailureClass::Query,
        FailureClass::Vendor,
        FailureClass::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Dns => "dns",
            FailureClass::Connect => "connect",
            FailureClass::Tls => "tls",
            FailureClass::Timeout => "timeout",
            FailureClass::Protocol => "protocol",
            FailureClass::Expectation => "expectation",
            FailureClass::Auth => "auth",
            FailureClass::Size => "size",
            FailureClass::Query => "query",
            FailureClass::Vendor => "vendor",
            FailureClass::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<FailureClass> {
        FailureClass::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure: its class and a one-line message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: crate::redact::redact(&message.into()),
        }
    }
}

/// Names of the phases a run can pass through, in the order they happen.
/// Kinds use the subset that applies to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Dns,
    Connect,
    Tls,
    /// Logging in: a database's startup and authentication exchange.
    Auth,
    /// Time from sending the request to the first byte of the response.
    FirstByte,
    /// Reading the rest of the response.
    Transfer,
    /// A query or command round trip (DNS query, database query).
    Query,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Auth => "auth",
            Phase::FirstByte => "first_byte",
            Phase::Transfer => "transfer",
            Phase::Query => "query",
        }
    }
}

/// One expectation's verdict, shown by `lookout probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The expectation as written, e.g. `status 2xx` or `latency < 800ms`.
    pub expectation: String,
    pub passed: bool,
    /// What was observed, e.g. `got 503`.
    pub observed: String,
}

/// The record of one run of one probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: String,
    /// Wall-clock start in UTC.
    pub started_at: DateTime<Utc>,
    /// Total time of the run, as measured on the monotonic clock.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    pub success: bool,
    pub failure: Option<Failure>,
    /// Phase timings in the order they happened.
    #[serde(with = "phases_ms")]
    pub phases: Vec<(Phase, Duration)>,
    /// Every expectation evaluated, in configuration order.
    pub checks: Vec<Check>,
    /// Small kind-specific facts: status code, response size, answers, TLS
    /// version, certificate subject and expiry.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The location of the instance that ran it (`location`), stamped by
    /// the daemon's sink; `None` for an instance without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Arc<str>>,
}

impl ProbeResult {
    pub fn phase(&self, phase: Phase) -> Option<Duration> {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
    }

    pub fn class(&self) -> Option<FailureClass> {
        self.failure.as_ref().map(|f| f.class)
    }
}

/// Serializes a duration as fractional milliseconds, the unit of the API.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64((ms / 1000.0).max(0.0)))
    }
}

mod phases_ms {
    use super::Phase;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(p: &[(Phase, Duration)], s: S) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&str, f64> = p
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_secs_f64() * 1000.0))
            .collect();
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(Phase, Duration)>, D::Error> {
        let m: BTreeMap<Phase, f64> = BTreeMap::deserialize(d)?;
        Ok(m.into_iter()
            .map(|(k, v)| (k, Duration::from_secs_f64((v / 1000.0).max(0.0))))
            .collect())
    }
}
