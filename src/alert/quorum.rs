//! The alerting quorum across locations (`alert.locations: K`).
//!
//! Several Lookout instances, each in its own location, can share one
//! database; the one that runs the alerting engine (the leader) is fed the
//! results of all of them. Before a result reaches its probe's state
//! machine, [`Quorum::observe`] turns it into an *effective* result:
//!
//! * Per probe, the latest result of each location is remembered with its
//!   start time. A result without a location is the location `""` (shown
//!   as `""`).
//! * A location counts only while its latest result is fresh: started
//!   within `interval × (after + 1) + timeout` of the incoming result's
//!   start ([`window`]). A cron probe has no interval: the time between a
//!   location's last two runs stands in for it, 60 s until that is known
//!   (a simple estimate, not the cron expression's).
//! * The result counts as a failure when at least K locations' fresh
//!   latest results are failures; its class and message are those of the
//!   newest of them, and the message says where (`... (failing from
//!   eu-west, us-east)`) when K > 1 or more than one location is known.
//!   Otherwise it counts as a success, even when the run itself failed, so
//!   a failure in fewer than K locations opens nothing. The run's duration
//!   is always its own.
//! * With K = 1 and a single location ever seen (one instance, the usual
//!   case), the effective result is the result itself: nothing is recorded,
//!   copied or looked up.
//!
//! The quorum is not saved: it is small and rebuilt from incoming results,
//! so after a restart or a leader change the first result of each location
//! fills it again (until K locations have reported, nothing counts as a
//! failure). When a second location first reports (or K is raised from 1),
//! the first location's latest outcome is taken from the state machine's
//! last verdict, which was that location's own; a failing streak not yet
//! open lends its first failure's message.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::state::{ProbeState, Status};
use crate::config::{ProbeSpec, Schedule};
use crate::result::{Failure, ProbeResult};

/// What a cron probe's interval is taken to be until two runs of one
/// location were seen.
pub const CRON_FALLBACK: Duration = Duration::from_secs(60);

/// One probe's quorum bookkeeping.
#[derive(Debug, Default)]
pub enum Quorum {
    /// No result seen yet.
    #[default]
    Empty,
    /// With K = 1, results from this one location only: nothing else is
    /// kept, and results pass through as they are.
    One(Option<Arc<str>>),
    /// Each location's latest result (K > 1, or several locations).
    Many(Box<Table>),
}

/// Each location's latest result, and a cron probe's estimated interval.
#[derive(Debug, Default)]
pub struct Table {
    /// Sorted by location, the location `""` (none) first.
    latest: Vec<Latest>,
    /// The time between a location's last two runs.
    gap: Option<Duration>,
}

/// One location's latest result.
#[derive(Debug)]
struct Latest {
    location: Option<Arc<str>>,
    at: DateTime<Utc>,
    success: bool,
    failure: Option<Failure>,
}

/// The outcome the state machine sees in place of a result's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub success: bool,
    pub failure: Option<Failure>,
}

impl Quorum {
    /// Records `result` and returns its effective outcome under `spec`'s
    /// `alert.locations`, or `None` when that is the result's own (K = 1
    /// and one location). `state` is the probe's state before this result.
    pub fn observe(
        &mut self,
        spec: &ProbeSpec,
        state: &ProbeState,
        result: &ProbeResult,
    ) -> Option<Effective> {
        let k = spec.alert.locations.max(1);
        if k == 1 {
            match self {
                Quorum::Empty => {
                    *self = Quorum::One(result.location.clone());
                    return None;
                }
                Quorum::One(seen) if seen.as_deref() == result.location.as_deref() => {
                    return None;
                }
                _ => {}
            }
        }
        let mut table = match std::mem::take(self) {
            Quorum::Many(table) => table,
            Quorum::One(location) => {
                let mut table = Box::<Table>::default();
                table.seed(location, state);
                table
            }
            Quorum::Empty => Box::default(),
        };
        table.record(result);
        let effective = table.effective(spec, k, result.started_at);
        *self = Quorum::Many(table);
        Some(effective)
    }
}

impl Table {
    /// Takes `location`'s latest outcome from the state machine's last
    /// verdict (see the module documentation).
    fn seed(&mut self, location: Option<Arc<str>>, state: &ProbeState) {
        let Some(at) = state.last_run else {
            return;
        };
        let success = state.fail_streak == 0;
        let failure = match (&state.incident, success) {
            (_, true) => None,
            (Some(inc), false) if state.status == Status::Down => inc.last_failure.clone(),
            _ => state.streak_first_failure.clone(),
        };
        self.latest.push(Latest {
            location,
            at,
            success,
            failure,
        });
    }

    /// Makes `r` its location's latest result, unless a later one is
    /// already known.
    fn record(&mut self, r: &ProbeResult) {
        let failure = if r.success { None } else { r.failure.clone() };
        let found = self
            .latest
            .binary_search_by(|e| e.location.as_deref().cmp(&r.location.as_deref()));
        match found {
            Ok(i) => {
                let e = &mut self.latest[i];
                if r.started_at < e.at {
                    return;
                }
                if let Ok(gap) = (r.started_at - e.at).to_std() {
                    if !gap.is_zero() {
                        self.gap = Some(gap);
                    }
                }
                e.at = r.started_at;
                e.success = r.success;
                e.failure = failure;
            }
            Err(i) => self.latest.insert(
                i,
                Latest {
                    location: r.location.clone(),
                    at: r.started_at,
                    success: r.success,
                    failure,
                },
            ),
        }
    }

    /// The effective outcome of a result that started `at`.
    fn effective(&self, spec: &ProbeSpec, k: u32, at: DateTime<Utc>) -> Effective {
        let window = chrono::Duration::from_std(window(spec, self.gap)).ok();
        let failing = |e: &&Latest| !e.success && window.is_none_or(|w| (at - e.at).abs() <= w);
        let count = self.latest.iter().filter(failing).count();
        if u32::try_from(count).unwrap_or(u32::MAX) < k {
            return Effective {
                success: true,
                failure: None,
            };
        }
        let newest = self.latest.iter().filter(failing).max_by_key(|e| e.at);
        let mut failure = newest.and_then(|e| e.failure.clone());
        if k > 1 || self.latest.len() > 1 {
            if let Some(f) = &mut failure {
                let names: Vec<&str> = self
                    .latest
                    .iter()
                    .filter(failing)
                    .map(|e| e.location.as_deref().unwrap_or("\"\""))
                    .collect();
                f.message = format!("{} (failing from {})", f.message, names.join(", "));
            }
        }
        Effective {
            success: false,
            failure,
        }
    }
}

/// How close to a result's start another location's latest result must
/// have started to count: `interval × (after + 1) + timeout`, where a cron
/// probe's interval is `gap` (the time between a location's last two runs)
/// or [`CRON_FALLBACK`].
pub fn window(spec: &ProbeSpec, gap: Option<Duration>) -> Duration {
    let interval = match &spec.schedule {
        Schedule::Interval(i) => *i,
        Schedule::Cron { .. } => gap.unwrap_or(CRON_FALLBACK),
    };
    interval
        .saturating_mul(spec.alert.after.max(1).saturating_add(1))
        .saturating_add(spec.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::state::tests::t;
    use crate::alert::{Engine, Outgoing};
    use crate::config::Config;
    use crate::notify::NoticeKind;
    use crate::result::FailureClass;

    /// One probe `api` (every 10 s, timeout 5 s, with `alert` as given)
    /// whose `alert.locations` is `k`.
    fn config(alert: &str, k: u32) -> Config {
        let yaml = format!(
            "notifiers:\n  ops: {{slack: {{webhook: \"https://hooks.example.com/x\"}}}}\nprobes:\n  - name: api\n    tcp: {{host: h, port: 1}}\n    interval: 10s\n    timeout: 5s\n    alert: {{notify: [ops], {alert}}}\n"
        );
        let (mut cfg, _) = crate::config::load_str(
            "t.yaml",
            &yaml,
            crate::config::read::Cx::new(Box::new(|_| None)),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        for p in &mut cfg.probes {
            Arc::make_mut(p).alert.locations = k;
        }
        cfg
    }

    fn result(location: Option<&str>, at: i64, ok: bool) -> ProbeResult {
        ProbeResult {
            probe: "api".into(),
            started_at: t(at),
            duration: Duration::from_millis(12),
            success: ok,
            failure: (!ok).then(|| {
                Failure::new(
                    FailureClass::Connect,
                    format!("refused in {} at {at}", location.unwrap_or("-")),
                )
            }),
            phases: Vec::new(),
            checks: Vec::new(),
            details: Default::default(),
            location: location.map(Arc::from),
        }
    }

    /// Feeds `(location, start, ok)` results, each seen one second after it
    /// started; returns every notice.
    fn feed(e: &mut Engine, runs: &[(&str, i64, bool)]) -> Vec<Outgoing> {
        runs.iter()
            .flat_map(|(loc, at, ok)| e.on_result(&result(Some(loc), *at, *ok), t(at + 1)))
            .collect()
    }

    fn status(e: &Engine) -> Option<Status> {
        e.state("api").map(|s| s.status)
    }

    #[test]
    fn a_failure_in_one_of_two_locations_never_opens_with_k_2() {
        let mut e = Engine::new(&config("after: 2", 2));
        let runs: Vec<(&str, i64, bool)> = (0..30)
            .flat_map(|i| [("eu-west", i * 10, false), ("us-east", i * 10 + 1, true)])
            .collect();
        assert!(feed(&mut e, &runs).is_empty());
        assert_eq!(status(&e), Some(Status::Up));
    }

    #[test]
    fn failures_in_both_locations_open_once_after_after_effective_failures() {
        let mut e = Engine::new(&config("after: 3", 2));
        // The first failure is alone (us-east has not reported): a success.
        assert!(feed(&mut e, &[("eu-west", 0, false)]).is_empty());
        assert_eq!(status(&e), Some(Status::Up));
        // Then every result sees two failing locations: the third opens.
        assert!(feed(&mut e, &[("us-east", 1, false), ("eu-west", 10, false)]).is_empty());
        let out = feed(&mut e, &[("us-east", 11, false)]);
        assert_eq!(out.len(), 1);
        let n = &out[0].notice;
        assert_eq!(n.kind, NoticeKind::Opened);
        assert_eq!(n.since, t(1), "the first effective failure");
        assert_eq!(
            n.last_failure
                .as_ref()
                .map(|f| (f.class, f.message.as_str())),
            Some((
                FailureClass::Connect,
                "refused in us-east at 11 (failing from eu-west, us-east)"
            ))
        );
        // More failures extend the incident and send nothing.
        let more: Vec<(&str, i64, bool)> = (2..10)
            .flat_map(|i| [("eu-west", i * 10, false), ("us-east", i * 10 + 1, false)])
            .collect();
        assert!(feed(&mut e, &more).is_empty());
        assert_eq!(status(&e), Some(Status::Down));
    }

    #[test]
    fn a_stale_location_does_not_count_toward_the_quorum() {
        // Window: 10 s × (2 + 1) + 5 s = 35 s.
        let mut e = Engine::new(&config("after: 2", 2));
        assert!(feed(&mut e, &[("us-east", 0, false), ("eu-west", 1, true)]).is_empty());
        // us-east stops reporting; eu-west fails once its failure is stale.
        let alone: Vec<(&str, i64, bool)> = (4..20).map(|i| ("eu-west", i * 10, false)).collect();
        assert!(feed(&mut e, &alone).is_empty());
        assert_eq!(status(&e), Some(Status::Up));
        // us-east is back and failing: now two locations agree.
        assert!(feed(&mut e, &[("us-east", 200, false)]).is_empty());
        let out = feed(&mut e, &[("eu-west", 201, false)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notice.kind, NoticeKind::Opened);
    }

    #[test]
    fn with_k_1_a_failure_in_one_of_two_locations_opens() {
        let mut e = Engine::new(&config("after: 2", 1));
        // eu-west alone so far: its own result; then us-east passes, but
        // eu-west's latest failure still counts (taken from the state).
        assert!(feed(&mut e, &[("eu-west", 0, false)]).is_empty());
        let out = feed(&mut e, &[("us-east", 1, true)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notice.kind, NoticeKind::Opened);
        assert_eq!(
            out[0]
                .notice
                .last_failure
                .as_ref()
                .map(|f| f.message.as_str()),
            Some("refused in eu-west at 0 (failing from eu-west)")
        );
    }

    #[test]
    fn with_k_1_recovery_waits_for_every_location() {
        let mut e = Engine::new(&config("after: 2, recover_after: 2", 1));
        let out = feed(&mut e, &[("eu-west", 0, false), ("us-east", 1, false)]);
        assert_eq!(out.len(), 1);
        // eu-west recovers; us-east still fails: still down.
        let half: Vec<(&str, i64, bool)> = (1..5)
            .flat_map(|i| [("eu-west", i * 10, true), ("us-east", i * 10 + 1, false)])
            .collect();
        assert!(feed(&mut e, &half).is_empty());
        assert_eq!(status(&e), Some(Status::Down));
        assert!(feed(&mut e, &[("us-east", 51, true)]).is_empty());
        let out = feed(&mut e, &[("eu-west", 60, true)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notice.kind, NoticeKind::Resolved);
        assert_eq!(status(&e), Some(Status::Up));
    }

    #[test]
    fn one_location_with_k_1_passes_results_through_untouched() {
        let cfg = config("after: 2", 1);
        let spec = &cfg.probes[0];
        for location in [None, Some("eu-west")] {
            let mut q = Quorum::default();
            let state = ProbeState::new();
            for i in 0..10 {
                let r = result(location, i * 10, i % 3 == 0);
                assert_eq!(q.observe(spec, &state, &r), None, "{location:?} run {i}");
            }
            assert!(matches!(q, Quorum::One(_)));
            // A second location starts the quorum proper.
            let other = result(Some("us-east"), 100, true);
            assert!(q.observe(spec, &state, &other).is_some());
        }
    }

    #[test]
    fn a_failed_run_below_the_quorum_is_a_success_with_its_duration() {
        let mut e = Engine::new(&config("after: 1", 2));
        assert!(feed(&mut e, &[("eu-west", 0, false)]).is_empty());
        let s = e.state("api").cloned().unwrap_or_default();
        assert_eq!((s.status, s.fail_streak, s.ok_streak), (Status::Up, 0, 1));
        assert_eq!(s.last_latency, Some(Duration::from_millis(12)));
    }

    #[test]
    fn a_reload_keeps_the_quorum_by_name_and_a_removed_probe_drops_it() {
        let cfg = config("after: 1", 2);
        let mut e = Engine::new(&cfg);
        assert!(feed(&mut e, &[("eu-west", 0, false)]).is_empty());
        e.reconfigure(&cfg, t(2));
        assert_eq!(feed(&mut e, &[("us-east", 1, false)]).len(), 1);

        let mut e = Engine::new(&cfg);
        assert!(feed(&mut e, &[("eu-west", 0, false)]).is_empty());
        let mut empty = cfg.clone();
        empty.probes.clear();
        e.reconfigure(&empty, t(2));
        e.reconfigure(&cfg, t(3));
        // eu-west's failure went with the probe: us-east's is alone.
        assert!(feed(&mut e, &[("us-east", 5, false)]).is_empty());
    }

    #[test]
    fn a_cron_probe_s_window_follows_the_time_between_runs() {
        let yaml = "probes:\n  - name: api\n    tcp: {host: h, port: 1}\n    cron: \"*/5 * * * *\"\n    timeout: 5s\n    alert: {after: 2}\n";
        let (mut cfg, _) = crate::config::load_str(
            "t.yaml",
            yaml,
            crate::config::read::Cx::new(Box::new(|_| None)),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        for p in &mut cfg.probes {
            Arc::make_mut(p).alert.locations = 2;
        }
        let spec = &cfg.probes[0];
        assert_eq!(window(spec, None), Duration::from_secs(60 * 3 + 5));
        let state = ProbeState::new();
        let success =
            |q: &mut Quorum, r: ProbeResult| q.observe(spec, &state, &r).map(|e| e.success);
        // Two us-east runs 300 s apart: a failure 700 s old is still fresh.
        let mut q = Quorum::default();
        success(&mut q, result(Some("us-east"), 0, false));
        success(&mut q, result(Some("us-east"), 300, false));
        assert_eq!(
            success(&mut q, result(Some("eu-west"), 1000, false)),
            Some(false)
        );
        // With one run seen, the interval is taken as 60 s: it is stale.
        let mut q = Quorum::default();
        success(&mut q, result(Some("us-east"), 300, false));
        assert_eq!(
            success(&mut q, result(Some("eu-west"), 1000, false)),
            Some(true)
        );
    }
}
