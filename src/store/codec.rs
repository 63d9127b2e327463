//! How a [`ProbeResult`] maps to a row of `results` and back.
//!
//! The encoding favours small rows: integers for times, NULL for anything
//! absent, compact JSON only for the variable parts (phases, details and the
//! checks that failed). Passed checks are not stored: they are the same on
//! every healthy run and would dominate the file.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::result::{Check, Failure, FailureClass, Phase, ProbeResult};

/// The columns of one `results` row, minus the ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub started_at_ms: i64,
    pub duration_us: i64,
    pub success: bool,
    pub class: Option<&'static str>,
    pub message: Option<String>,
    pub phases: Option<String>,
    pub details: Option<String>,
    pub checks: Option<String>,
}

/// The columns as read back, owning their text.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredRow {
    pub probe: String,
    pub started_at_ms: i64,
    pub duration_us: i64,
    pub success: bool,
    pub class: Option<String>,
    pub message: Option<String>,
    pub phases: Option<String>,
    pub details: Option<String>,
    pub checks: Option<String>,
    /// Where the run ran, when the instance has a `location`.
    pub location: Option<String>,
}

/// Why a stored row could not be turned back into a result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("start time {0} ms is out of range")]
    Time(i64),
    #[error("column {column} holds invalid JSON: {error}")]
    Json {
        column: &'static str,
        error: serde_json::Error,
    },
}

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) fn from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

pub(crate) fn encode(r: &ProbeResult) -> Row {
    Row {
        started_at_ms: r.started_at.timestamp_millis(),
        duration_us: micros(r.duration),
        success: r.success,
        class: r.failure.as_ref().map(|f| f.class.as_str()),
        message: r
            .failure
            .as_ref()
            .map(|f| f.message.clone())
            .filter(|m| !m.is_empty()),
        phases: encode_phases(&r.phases),
        details: if r.details.is_empty() {
            None
        } else {
            Some(Value::Object(r.details.clone()).to_string())
        },
        checks: encode_failed_checks(&r.checks),
    }
}

/// `{"dns":1200,"connect":800}`: microseconds, in the order they happened.
fn encode_phases(phases: &[(Phase, Duration)]) -> Option<String> {
    if phases.is_empty() {
        return None;
    }
    let mut s = String::with_capacity(16 * phases.len());
    s.push('{');
    for (i, (phase, d)) in phases.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Phase names are fixed lower-case identifiers: nothing to escape.
        s.push('"');
        s.push_str(phase.as_str());
        s.push_str("\":");
        s.push_str(&micros(*d).to_string());
    }
    s.push('}');
    Some(s)
}

fn encode_failed_checks(checks: &[Check]) -> Option<String> {
    let failed: Vec<Value> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            let mut m = Map::new();
            m.insert("expectation".into(), Value::String(c.expectation.clone()));
            m.insert("observed".into(), Value::String(c.observed.clone()));
            Value::Object(m)
        })
        .collect();
    if failed.is_empty() {
        None
    } else {
        Some(Value::Array(failed).to_string())
    }
}

pub(crate) fn decode(row: StoredRow) -> Result<ProbeResult, DecodeError> {
    let started_at: DateTime<Utc> = DateTime::from_timestamp_millis(row.started_at_ms)
        .ok_or(DecodeError::Time(row.started_at_ms))?;
    let failure = row.class.map(|class| Failure {
        // A class this build does not know was written by a newer one; the
        // run still failed, and the message says how.
        class: FailureClass::parse(&class).unwrap_or(FailureClass::Internal),
        // Stored messages were redacted before they were stored.
        message: row.message.unwrap_or_default(),
    });
    Ok(ProbeResult {
        probe: row.probe,
        started_at,
        duration: from_micros(row.duration_us),
        success: row.success,
        failure,
        phases: match row.phases {
            Some(s) => decode_phases(&s)?,
            None => Vec::new(),
        },
        checks: match row.checks {
            Some(s) => decode_checks(&s)?,
            None => Vec::new(),
        },
        details: match row.details {
            Some(s) => serde_json::from_str(&s).map_err(|error| DecodeError::Json {
                column: "details",
                error,
            })?,
            None => Map::new(),
        },
        location: row.location.map(Into::into),
    })
}

fn decode_phases(s: &str) -> Result<Vec<(Phase, Duration)>, DecodeError> {
    let m: Map<String, Value> = serde_json::from_str(s).map_err(|error| DecodeError::Json {
        column: "phases",
        error,
    })?;
    let mut phases: Vec<(Phase, Duration)> = m
        .into_iter()
        .filter_map(|(name, us)| {
            // Unknown names come from a newer build; skipping them keeps the
            // rest of the row readable.
            let phase = Phase::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(&name))
            .ok()?;
            Some((phase, from_micros(us.as_i64()?)))
        })
        .collect();
    // JSON objects come back in key order; `Phase` orders phases the way
    // they happen.
    phases.sort_by_key(|(p, _)| *p);
    Ok(phases)
}

fn decode_checks(s: &str) -> Result<Vec<Check>, DecodeError> {
    #[derive(Deserialize)]
    struct Stored {
        expectation: String,
        observed: String,
    }
    let stored: Vec<Stored> = serde_json::from_str(s).map_err(|error| DecodeError::Json {
        column: "checks",
        error,
    })?;
    Ok(stored
        .into_iter()
        .map(|c| Check {
            expectation: c.expectation,
            passed: false,
            observed: c.observed,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_parts_are_null_not_empty() {
        let r = ProbeResult {
            probe: "p".into(),
            started_at: DateTime::from_timestamp_millis(1_700_000_000_123).expect("time"),
            duration: Duration::from_micros(1500),
            success: true,
            failure: None,
            phases: Vec::new(),
            checks: vec![Check {
                expectation: "status 2xx".into(),
                passed: true,
                observed: "got 200".into(),
            }],
            details: Map::new(),
            location: None,
        };
        let row = encode(&r);
        assert_eq!(row.started_at_ms, 1_700_000_000_123);
        assert_eq!(row.duration_us, 1500);
        assert_eq!(
            (row.class, row.message, row.phases, row.details, row.checks),
            (None, None, None, None, None)
        );
    }

    #[test]
    fn phases_are_compact_microseconds_in_order() {
        let phases = vec![
            (Phase::Dns, Duration::from_micros(1200)),
            (Phase::Connect, Duration::from_micros(800)),
            (Phase::FirstByte, Duration::from_micros(30_000)),
        ];
        let s = encode_phases(&phases).expect("phases");
        assert_eq!(s, r#"{"dns":1200,"connect":800,"first_byte":30000}"#);
        assert_eq!(decode_phases(&s).expect("decode"), phases);
    }

    #[test]
    fn unknown_phase_names_are_skipped() {
        let got = decode_phases(r#"{"dns":5,"quantum":7}"#).expect("decode");
        assert_eq!(got, vec![(Phase::Dns, Duration::from_micros(5))]);
    }
}
