//! The per-probe alerting state machine: pure, driven by verdicts with
//! explicit times, and serializable so it can be persisted.
//!
//! ```text
//!            first success                       recover_after successes
//!  pending ----------------> up <--------------------------------------+
//!     |                       |                                        |
//!     | `after` failures      | `after` consecutive failures           |
//!     +-----------------------+-------------> down (incident open) ----+
//! ```
//!
//! A probe starts `pending` (no verdict since start). Its first success
//! makes it `up` at once (there is nothing to recover from); a streak of
//! `after` consecutive failures, from `pending` or `up`, makes it `down` and
//! opens an [`Incident`]. While `down`, failures extend the incident and
//! `recover_after` consecutive successes resolve it. Failures below `after`
//! never change the state.
//!
//! This module only says *what happened*; whether anyone is told (alerting
//! disabled, maintenance, a dependency that is down) is the engine's call.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::AlertSpec;
use crate::result::Failure;

/// Where a probe stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No verdict since start.
    Pending,
    Up,
    Down,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Up => "up",
            Status::Down => "down",
        }
    }
}

/// One period of a probe being down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The incident's id in the database, once stored.
    pub id: Option<i64>,
    /// When the first failure of the streak that opened it started.
    pub started_at: DateTime<Utc>,
    /// When the streak reached `after` and the incident opened.
    pub opened_at: DateTime<Utc>,
    /// When the first success of the recovering streak started; set when
    /// the incident resolves.
    pub ended_at: Option<DateTime<Utc>>,
    pub first_failure: Option<Failure>,
    pub last_failure: Option<Failure>,
    /// Consecutive failures so far.
    pub streak: u32,
    /// The dependency this incident is attributed to while it is down; such
    /// an incident sends no notice of its own.
    pub caused_by: Option<String>,
    /// True once the Opened notice went out (or, with alerting disabled,
    /// never). An open incident that is not notified and not caused by a
    /// dependency is owed a notice (e.g. at the end of a maintenance window).
    pub notified: bool,
    /// When the last notice about this incident (opened or reminder) was
    /// created; reminders count from here.
    pub last_notice_at: Option<DateTime<Utc>>,
    /// Why it ended, when not by a recovery: `removed` (the probe left the
    /// configuration while down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
}

/// Everything the alerting engine remembers about one probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeState {
    pub status: Status,
    /// When the probe entered `status` (None while pending).
    pub since: Option<DateTime<Utc>>,
    /// Consecutive failures (0 after any success).
    pub fail_streak: u32,
    /// Consecutive successes (0 after any failure).
    pub ok_streak: u32,
    /// Start of the current failure streak and its first failure, kept
    /// until the streak opens an incident or breaks.
    pub streak_started: Option<DateTime<Utc>>,
    pub streak_first_failure: Option<Failure>,
    /// Start of the current success streak.
    pub ok_started: Option<DateTime<Utc>>,
    /// Duration of the latest run.
    #[serde(default, with = "crate::notify::opt_secs")]
    pub last_latency: Option<Duration>,
    /// Start time of the latest run.
    pub last_run: Option<DateTime<Utc>>,
    /// The open incident while `down` (boxed: most probes have none, and
    /// an inline one would size every probe's state for it).
    pub incident: Option<Box<Incident>>,
}

/// What one verdict did to the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Nothing worth telling: a streak grew, or a failure while down.
    None,
    /// The first verdict after start was a success.
    BecameUp,
    /// The failure streak reached `after`: an incident opened (now in
    /// `state.incident`).
    Opened,
    /// `recover_after` successes while down: this incident resolved.
    Resolved(Incident),
}

/// One run's verdict, as the state machine needs it.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    pub at: DateTime<Utc>,
    pub success: bool,
    pub failure: Option<&'a Failure>,
    pub latency: Option<Duration>,
}

impl Default for ProbeState {
    fn default() -> Self {
        ProbeState::new()
    }
}

impl ProbeState {
    pub fn new() -> ProbeState {
        ProbeState {
            status: Status::Pending,
            since: None,
            fail_streak: 0,
            ok_streak: 0,
            streak_started: None,
            streak_first_failure: None,
            ok_started: None,
            last_latency: None,
            last_run: None,
            incident: None,
        }
    }

    /// Applies one verdict under `spec`'s thresholds.
    pub fn observe(&mut self, spec: &AlertSpec, v: Verdict<'_>) -> Transition {
        self.last_run = Some(v.at);
        if v.latency.is_some() {
            self.last_latency = v.latency;
        }
        let after = spec.after.max(1);
        let recover_after = spec.recover_after.max(1);
        if v.success {
            self.fail_streak = 0;
            self.streak_started = None;
            self.streak_first_failure = None;
            if self.ok_streak == 0 {
                self.ok_started = Some(v.at);
            }
            self.ok_streak = self.ok_streak.saturating_add(1);
            match self.status {
                Status::Pending => {
                    self.status = Status::Up;
                    self.since = Some(v.at);
                    Transition::BecameUp
                }
                Status::Up => Transition::None,
                Status::Down if self.ok_streak >= recover_after => {
                    let ended = self.ok_started.unwrap_or(v.at);
                    self.status = Status::Up;
                    self.since = Some(ended);
                    match self.incident.take() {
                        Some(mut inc) => {
                            inc.ended_at = Some(ended);
                            Transition::Resolved(*inc)
                        }
                        None => Transition::None,
                    }
                }
                Status::Down => Transition::None,
            }
        } else {
            self.ok_streak = 0;
            self.ok_started = None;
            if self.fail_streak == 0 {
                self.streak_started = Some(v.at);
                self.streak_first_failure = v.failure.cloned();
            }
            self.fail_streak = self.fail_streak.saturating_add(1);
            match self.status {
                Status::Down => {
                    if let Some(inc) = &mut self.incident {
                        inc.streak = self.fail_streak;
                        if v.failure.is_some() {
                            inc.last_failure = v.failure.cloned();
                        }
                    }
                    Transition::None
                }
                Status::Pending | Status::Up if self.fail_streak >= after => {
                    let started = self.streak_started.unwrap_or(v.at);
                    self.status = Status::Down;
                    self.since = Some(started);
                    self.incident = Some(Box::new(Incident {
                        id: None,
                        started_at: started,
                        opened_at: v.at,
                        ended_at: None,
                        first_failure: self.streak_first_failure.take(),
                        last_failure: v.failure.cloned(),
                        streak: self.fail_streak,
                        caused_by: None,
                        notified: false,
                        last_notice_at: None,
                        ended_by: None,
                    }));
                    Transition::Opened
                }
                Status::Pending | Status::Up => Transition::None,
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::result::FailureClass;
    use chrono::TimeZone;

    /// `s` seconds after a fixed instant; shared with the engine's tests.
    pub(in crate::alert) fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("valid time")
    }

    fn spec(after: u32, recover_after: u32) -> AlertSpec {
        AlertSpec {
            after,
            recover_after,
            ..AlertSpec::default()
        }
    }

    fn run(st: &mut ProbeState, spec: &AlertSpec, at: i64, ok: bool) -> Transition {
        let f = Failure::new(FailureClass::Connect, format!("refused at {at}"));
        st.observe(
            spec,
            Verdict {
                at: t(at),
                success: ok,
                failure: (!ok).then_some(&f),
                latency: Some(Duration::from_millis(5)),
            },
        )
    }

    /// Table: (after, recover_after, verdicts, expected final status,
    /// expected transitions as letters: . none, U up, O opened, R resolved).
    #[test]
    fn transitions_table() {
        let cases: &[(u32, u32, &str, Status, &str)] = &[
            (3, 2, "", Status::Pending, ""),
            (3, 2, "+", Status::Up, "U"),
            (3, 2, "--", Status::Pending, ".."),
            (3, 2, "---", Status::Down, "..O"),
            (3, 2, "---+", Status::Down, "..O."),
            (3, 2, "---++", Status::Up, "..O.R"),
            (3, 2, "---+-+", Status::Down, "..O..."),
            (3, 2, "+--+--", Status::Up, "U....."),
            (3, 2, "+---", Status::Down, "U..O"),
            (1, 1, "-+", Status::Up, "OR"),
            (1, 1, "-+-", Status::Down, "ORO"),
            (2, 3, "--++-+++", Status::Up, ".O.....R"),
        ];
        for (after, rec, seq, want, want_tr) in cases {
            let s = spec(*after, *rec);
            let mut st = ProbeState::new();
            let mut got = String::new();
            for (i, c) in seq.chars().enumerate() {
                got.push(match run(&mut st, &s, i as i64 * 10, c == '+') {
                    Transition::None => '.',
                    Transition::BecameUp => 'U',
                    Transition::Opened => 'O',
                    Transition::Resolved(_) => 'R',
                });
            }
            assert_eq!(st.status, *want, "after={after} rec={rec} seq={seq}");
            assert_eq!(&got, want_tr, "after={after} rec={rec} seq={seq}");
            assert_eq!(st.incident.is_some(), *want == Status::Down, "{seq}");
        }
    }

    #[test]
    fn incident_records_start_end_failures_and_streak() {
        let s = spec(3, 2);
        let mut st = ProbeState::new();
        run(&mut st, &s, 0, true);
        run(&mut st, &s, 10, false);
        run(&mut st, &s, 20, false);
        assert_eq!(run(&mut st, &s, 30, false), Transition::Opened);
        run(&mut st, &s, 40, false);
        let inc = st.incident.clone().expect("open");
        assert_eq!(inc.started_at, t(10));
        assert_eq!(inc.opened_at, t(30));
        assert_eq!(inc.streak, 4);
        assert_eq!(
            inc.first_failure.as_ref().map(|f| f.message.as_str()),
            Some("refused at 10")
        );
        assert_eq!(
            inc.last_failure.as_ref().map(|f| f.message.as_str()),
            Some("refused at 40")
        );
        assert_eq!(st.since, Some(t(10)));
        run(&mut st, &s, 50, true);
        let Transition::Resolved(done) = run(&mut st, &s, 60, true) else {
            panic!("expected a resolution");
        };
        assert_eq!(done.ended_at, Some(t(50)));
        assert_eq!(st.since, Some(t(50)));
        assert_eq!(st.status, Status::Up);
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = spec(1, 1);
        let mut st = ProbeState::new();
        run(&mut st, &s, 0, false);
        let json = serde_json::to_string(&st).expect("serialize");
        let back: ProbeState = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, st);
        assert!(json.contains("\"status\":\"down\""), "{json}");
    }
}
