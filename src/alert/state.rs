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

use crate::config::{AlertSpec, DegradeSpec};
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

/// What an incident is about: the probe failing (`down`), or passing but
/// not well (`degraded`: too slow, or failing too often, see
/// `alert.degraded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    #[default]
    Down,
    Degraded,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Down => "down",
            IncidentKind::Degraded => "degraded",
        }
    }

    pub fn parse(s: &str) -> IncidentKind {
        match s {
            "degraded" => IncidentKind::Degraded,
            _ => IncidentKind::Down,
        }
    }

    pub fn is_down(&self) -> bool {
        *self == IncidentKind::Down
    }
}

/// One period of a probe being down (or degraded).
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
    #[serde(default, skip_serializing_if = "IncidentKind::is_down")]
    pub kind: IncidentKind,
    /// What a degradation is about, in words (`latency over 800ms in 3
    /// runs in a row (last 1.2s)`, `4 of the last 20 runs failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Incident {
    /// A new, not yet notified degradation.
    fn degradation(
        started_at: DateTime<Utc>,
        opened_at: DateTime<Utc>,
        streak: u32,
        reason: Option<String>,
    ) -> Incident {
        Incident {
            id: None,
            started_at,
            opened_at,
            ended_at: None,
            first_failure: None,
            last_failure: None,
            streak,
            caused_by: None,
            notified: false,
            last_notice_at: None,
            ended_by: None,
            kind: IncidentKind::Degraded,
            reason,
        }
    }
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
    /// The `alert.degraded` rules' bookkeeping and open degradation.
    /// Boxed, and absent until a probe has `alert.degraded` rules or a
    /// finding: most probes have neither, and an inline one would add a
    /// hundred bytes to every probe's state (a megabyte at 10,000 probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<Box<Degradation>>,
}

/// Where a probe stands against `alert.degraded`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    /// Consecutive runs that held a rule (slow, or the failure rate over).
    pub bad_streak: u32,
    /// Consecutive runs that held none.
    pub fine_streak: u32,
    /// When the current bad streak started.
    pub bad_started: Option<DateTime<Utc>>,
    /// The latest runs' outcomes, newest in bit 0 (1 = failed), and how
    /// many of the 64 bits are known.
    pub recent: u64,
    pub known: u8,
    /// The open degradation.
    pub incident: Option<Box<Incident>>,
    /// A sustained deviation from the learned baseline, in words, while
    /// the anomaly detector holds one open (`alert.degraded.anomaly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<String>,
    /// A slow upward trend over days, in words (a finding, not an
    /// incident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<String>,
}

impl Degradation {
    fn failures_in(&self, n: u32) -> u32 {
        let mask = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        (self.recent & mask).count_ones()
    }
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
    /// A degradation ended because the probe went down: the outage's
    /// incident takes over; nobody is told separately.
    Superseded(Incident),
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
            degraded: None,
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
                        kind: IncidentKind::Down,
                        reason: None,
                    }));
                    Transition::Opened
                }
                Status::Pending | Status::Up => Transition::None,
            }
        }
    }

    /// The open degradation, if any.
    pub fn degraded_incident(&self) -> Option<&Incident> {
        self.degraded.as_ref()?.incident.as_deref()
    }

    /// The open degradation, to change it.
    pub fn degraded_incident_mut(&mut self) -> Option<&mut Incident> {
        self.degraded.as_mut()?.incident.as_deref_mut()
    }

    /// The slow-trend finding, if any.
    pub fn trend(&self) -> Option<&str> {
        self.degraded.as_ref()?.trend.as_deref()
    }

    /// Sets the slow-trend finding; true when it changed.
    pub fn set_trend(&mut self, trend: Option<String>) -> bool {
        if self.trend() == trend.as_deref() {
            return false;
        }
        self.degraded.get_or_insert_with(Box::default).trend = trend;
        true
    }

    /// Takes the anomaly detector's word: `Some(reason)` while it holds a
    /// sustained deviation open (since `since`), `None` once it cleared.
    /// A new deviation opens a degradation at once (the detector already
    /// waited for it to last) while the probe is up; clearing only lets
    /// the usual `recover_after` runs close it.
    pub fn set_anomaly(
        &mut self,
        reason: Option<String>,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Transition {
        let d = self.degraded.get_or_insert_with(Box::default);
        d.anomaly = reason.clone();
        let Some(why) = reason else {
            return Transition::None;
        };
        if let Some(inc) = d.incident.as_deref_mut() {
            inc.reason = Some(why);
            return Transition::None;
        }
        if self.status != Status::Up {
            return Transition::None;
        }
        d.fine_streak = 0;
        d.incident = Some(Box::new(Incident::degradation(
            since.min(at),
            at,
            d.bad_streak,
            Some(why),
        )));
        Transition::Opened
    }

    /// Applies one verdict to the `alert.degraded` rules, after
    /// [`ProbeState::observe`] applied it to the status. Only a probe that
    /// is `up` can become degraded; going down supersedes a degradation,
    /// and the failures of an outage never count toward the rate after it.
    pub fn observe_degradation(&mut self, spec: &DegradeSpec, v: Verdict<'_>) -> Transition {
        let d = self.degraded.get_or_insert_with(Box::default);
        if self.status == Status::Down {
            d.recent = 0;
            d.known = 0;
            d.bad_streak = 0;
            d.fine_streak = 0;
            d.bad_started = None;
            return match d.incident.take() {
                Some(mut inc) => {
                    inc.ended_at = Some(v.at);
                    inc.ended_by = Some("down".into());
                    Transition::Superseded(*inc)
                }
                None => Transition::None,
            };
        }
        d.recent = (d.recent << 1) | u64::from(!v.success);
        d.known = d.known.saturating_add(1).min(64);
        let slow = match (spec.latency, v.latency) {
            (Some(bound), Some(took)) if v.success => (took > bound).then_some((bound, took)),
            _ => None,
        };
        let rate = spec.failures.and_then(|(f, n)| {
            let got = d.failures_in(n);
            (got >= f).then_some((got, n))
        });
        if slow.is_some() || rate.is_some() || d.anomaly.is_some() {
            if d.bad_streak == 0 {
                d.bad_started = Some(v.at);
            }
            d.bad_streak = d.bad_streak.saturating_add(1);
            d.fine_streak = 0;
        } else {
            d.bad_streak = 0;
            d.bad_started = None;
            d.fine_streak = d.fine_streak.saturating_add(1);
        }
        if self.status != Status::Up {
            return Transition::None;
        }
        if d.incident.is_some() {
            if d.fine_streak >= spec.recover_after.max(1) {
                if let Some(mut inc) = d.incident.take() {
                    inc.ended_at = Some(v.at);
                    return Transition::Resolved(*inc);
                }
            }
            let why = reason(slow, rate, d.bad_streak).or_else(|| d.anomaly.clone());
            if let (Some(inc), Some(why)) = (d.incident.as_deref_mut(), why) {
                inc.reason = Some(why);
                inc.streak = d.bad_streak;
            }
            return Transition::None;
        }
        let opens = rate.is_some()
            || d.anomaly.is_some()
            || (slow.is_some() && d.bad_streak >= spec.after.max(1));
        if !opens {
            return Transition::None;
        }
        let started = d.bad_started.unwrap_or(v.at);
        let mut inc = Incident::degradation(
            started,
            v.at,
            d.bad_streak,
            reason(slow, rate, d.bad_streak).or_else(|| d.anomaly.clone()),
        );
        inc.last_failure = v.failure.cloned();
        d.incident = Some(Box::new(inc));
        Transition::Opened
    }
}

/// A degradation's reason in words: the rate rule first (it is the
/// stronger signal), else the latency rule.
fn reason(
    slow: Option<(Duration, Duration)>,
    rate: Option<(u32, u32)>,
    streak: u32,
) -> Option<String> {
    if let Some((got, n)) = rate {
        return Some(format!("{got} of the last {n} runs failed"));
    }
    let (bound, took) = slow?;
    let runs = if streak == 1 {
        "1 run".to_string()
    } else {
        format!("{streak} runs in a row")
    };
    Some(format!(
        "latency over {} in {runs} (last {})",
        crate::duration::human(bound),
        crate::duration::human(took)
    ))
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
                    Transition::Superseded(_) => 'S',
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

    /// Runs `seq` through both machines: `+` fast success, `s` slow
    /// success (300 ms), `-` failure. Returns the degradation transitions
    /// as letters (. none, O opened, R resolved, S superseded).
    fn degrade(st: &mut ProbeState, alert: &AlertSpec, rules: &DegradeSpec, seq: &str) -> String {
        let mut out = String::new();
        for c in seq.chars() {
            let at = st
                .last_run
                .map_or(0, |t| t.timestamp() - 1_700_000_000 + 10);
            let f = Failure::new(FailureClass::Connect, "refused");
            let v = Verdict {
                at: t(at),
                success: c != '-',
                failure: (c == '-').then_some(&f),
                latency: Some(Duration::from_millis(if c == 's' { 300 } else { 20 })),
            };
            st.observe(alert, v);
            out.push(match st.observe_degradation(rules, v) {
                Transition::Opened => 'O',
                Transition::Resolved(_) => 'R',
                Transition::Superseded(_) => 'S',
                Transition::None | Transition::BecameUp => '.',
            });
        }
        out
    }

    fn rules(latency_ms: Option<u64>, failures: Option<(u32, u32)>) -> DegradeSpec {
        DegradeSpec {
            latency: latency_ms.map(Duration::from_millis),
            failures,
            after: 3,
            recover_after: 2,
            anomaly: None,
        }
    }

    #[test]
    fn slow_runs_in_a_row_open_a_degradation_and_fast_ones_close_it() {
        let alert = spec(3, 2);
        let r = rules(Some(100), None);
        let mut st = ProbeState::new();
        // Two slow runs are not enough; a fast one breaks the streak.
        assert_eq!(degrade(&mut st, &alert, &r, "+ss+ss"), "......");
        assert_eq!(degrade(&mut st, &alert, &r, "s"), "O");
        let inc = st.degraded_incident().cloned().expect("open");
        assert_eq!(inc.kind, IncidentKind::Degraded);
        assert_eq!(inc.started_at, t(40), "the first slow run of the streak");
        assert_eq!(
            inc.reason.as_deref(),
            Some("latency over 100ms in 3 runs in a row (last 300ms)")
        );
        assert_eq!(st.status, Status::Up, "a degradation is not an outage");
        assert_eq!(degrade(&mut st, &alert, &r, "s+s+"), "....");
        assert_eq!(
            st.degraded_incident().and_then(|i| i.reason.clone()),
            Some("latency over 100ms in 1 run (last 300ms)".into())
        );
        assert_eq!(degrade(&mut st, &alert, &r, "+"), "R");
        assert!(st.degraded_incident().is_none());
    }

    #[test]
    fn scattered_failures_over_the_rate_open_a_degradation() {
        let alert = spec(3, 2);
        let r = rules(None, Some((3, 10)));
        let mut st = ProbeState::new();
        // Never two failures in a row, so never down; the third within ten
        // runs opens a degradation at once.
        assert_eq!(degrade(&mut st, &alert, &r, "+-+-+"), ".....");
        assert_eq!(degrade(&mut st, &alert, &r, "-"), "O");
        assert_eq!(
            st.degraded_incident().and_then(|i| i.reason.clone()),
            Some("3 of the last 10 runs failed".into())
        );
        // It holds while the failures are in the window, then two runs
        // within bounds close it.
        assert_eq!(degrade(&mut st, &alert, &r, "++"), "..");
        assert_eq!(degrade(&mut st, &alert, &r, "+++++"), "....R");
    }

    #[test]
    fn an_outage_supersedes_a_degradation_and_its_failures_do_not_count_after() {
        let alert = spec(3, 1);
        let r = rules(Some(100), Some((2, 20)));
        let mut st = ProbeState::new();
        assert_eq!(degrade(&mut st, &alert, &r, "+sss"), "...O");
        assert_eq!(degrade(&mut st, &alert, &r, "---"), "..S");
        assert_eq!(st.status, Status::Down);
        assert!(st.degraded_incident().is_none());
        // Recovered: the outage's failures are not a failure rate.
        assert_eq!(degrade(&mut st, &alert, &r, "+++"), "...");
        assert_eq!(st.status, Status::Up);
        assert!(st.degraded_incident().is_none());
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
