//! The sustained-deviation detector: judges the last `window` of a probe's
//! runs against its [`Baseline`] and opens an anomaly only when the
//! window's p95 is above the expected p95 by a factor, by an absolute
//! margin and by a number of MADs, with enough slow runs, for `sustain`
//! consecutive evaluations; it clears only after as many evaluations back
//! under that bound (hysteresis). An opened anomaly names the phase (dns,
//! connect, tls, first byte) whose median moved most against a tiny
//! per-probe [`PhaseReference`]. Everything is pure and clock-explicit:
//! `now` is an argument, nothing sleeps, nothing is stored or sent; whether
//! an anomaly becomes a `degraded` incident is the alerting engine's call.

use chrono::{DateTime, Utc};

use super::baseline::{Baseline, Expected};
use super::stats::{median, quantile};
use super::DetectConfig;
use crate::result::{Phase, ProbeResult};

/// The phases a [`Sample`] carries, in the order of its `phases` array.
pub const PHASES: [Phase; 4] = [Phase::Dns, Phase::Connect, Phase::Tls, Phase::FirstByte];

/// A phase attribution needs the phase to have moved by at least this
/// share of the p95's rise over the expected p95.
const PHASE_SHARE: f64 = 0.5;

/// The reference median moves by at most this fraction of itself per
/// sample once warmed up: about 35 samples (18 minutes at the default
/// 30 s interval) to follow a doubling, while a few stray runs move it by
/// a few percent.
const REFERENCE_STEP: f64 = 0.02;

/// Samples a phase's reference needs before it is trusted.
const REFERENCE_READY: u32 = 20;

/// One successful run, as the detector sees it. Failed runs are the
/// alerting state machine's business: a timeout's duration is the
/// timeout, not a latency, so they are left out of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the run started.
    pub at: DateTime<Utc>,
    /// Total latency of the run, in milliseconds.
    pub total_ms: f64,
    /// Each of [`PHASES`] in milliseconds, `None` when the kind has no such
    /// phase (a TCP probe has no TLS or first byte).
    pub phases: [Option<f64>; 4],
}

impl Sample {
    /// The sample of a successful result, `None` for a failed one.
    pub fn from_result(result: &ProbeResult) -> Option<Sample> {
        if !result.success {
            return None;
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        Some(Sample {
            at: result.started_at,
            total_ms: ms(result.duration),
            phases: PHASES.map(|p| result.phase(p).map(ms)),
        })
    }
}

/// A running robust estimate of each phase's normal median: a
/// stochastic-approximation median tracker (each sample nudges the
/// estimate towards itself by a bounded step), 32 bytes per probe.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseReference {
    medians: [f32; 4],
    seen: [u32; 4],
}

impl PhaseReference {
    /// A reference that has seen nothing.
    pub fn new() -> PhaseReference {
        PhaseReference::default()
    }

    /// Nudges each phase's estimate towards this sample's value. Steps start
    /// large (1/n, so the first samples converge quickly) and settle at
    /// 2 % of the estimate, never past the sample. Feed it through
    /// [`Detector::learn_phases`], which skips samples taken while an
    /// anomaly is open or building.
    pub fn observe(&mut self, sample: &Sample) {
        for (i, value) in sample.phases.iter().enumerate() {
            if let Some(x) = value.filter(|x| x.is_finite() && *x >= 0.0) {
                self.nudge(i, x);
            }
        }
    }

    fn nudge(&mut self, i: usize, x: f64) {
        let (Some(m), Some(n)) = (self.medians.get_mut(i), self.seen.get_mut(i)) else {
            return;
        };
        let current = f64::from(*m);
        if *n == 0 {
            *m = x as f32;
            *n = 1;
            return;
        }
        let step = REFERENCE_STEP.max(1.0 / f64::from(n.saturating_add(1)));
        let move_by = (x - current).abs().min(step * current.max(0.1));
        *m = (current + move_by * (x - current).signum()) as f32;
        *n = n.saturating_add(1);
    }

    /// The normal median of `phase` in milliseconds, once it has seen
    /// enough samples; `None` before, and for phases outside [`PHASES`].
    pub fn normal_ms(&self, phase: Phase) -> Option<f64> {
        let i = PHASES.iter().position(|p| *p == phase)?;
        match self.seen.get(i) {
            Some(n) if *n >= REFERENCE_READY => self.medians.get(i).map(|m| f64::from(*m)),
            _ => None,
        }
    }
}

/// The phase that moved, and by how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseShift {
    /// The phase whose median rose most in absolute milliseconds.
    pub phase: Phase,
    /// Its normal median ([`PhaseReference`]), in milliseconds.
    pub normal_ms: f64,
    /// Its median over the window's slow runs, in milliseconds.
    pub now_ms: f64,
}

/// An open sustained deviation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anomaly {
    /// The evaluation that began the streak that opened it.
    pub since: DateTime<Utc>,
    /// The window's p95 (nearest rank), in milliseconds.
    pub observed_p95_ms: f64,
    /// The baseline's p95 for this hour of the week, in milliseconds.
    pub expected_p95_ms: f64,
    /// `observed_p95_ms / expected_p95_ms`.
    pub ratio: f64,
    /// The phase that moved, when one accounts for at least half of the
    /// rise; named when the anomaly opened and kept while it stays open.
    pub phase: Option<PhaseShift>,
}

/// What one evaluation says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The baseline has too little history: nothing is judged.
    Learning,
    /// The window holds fewer than `min_samples` runs: nothing is judged.
    TooFewRuns {
        /// Runs in the window.
        runs: usize,
    },
    /// No anomaly is open (the window may be over the bound for fewer than
    /// `sustain` evaluations: `over_streak` says how many).
    Normal {
        /// The window's p95, in milliseconds.
        observed_p95_ms: f64,
        /// The baseline's p95, in milliseconds.
        expected_p95_ms: f64,
        /// The p95 above which the window counts as over.
        bound_ms: f64,
        /// Consecutive evaluations over the bound so far.
        over_streak: u32,
    },
    /// An anomaly is open. An evaluation that cannot judge (learning, too
    /// few runs) reports the open anomaly as it last stood.
    Anomaly(Anomaly),
}

/// One probe's sustained-deviation state: a few counters and the open
/// anomaly, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    cfg: DetectConfig,
    /// Consecutive evaluations over the bound.
    over: u32,
    /// Consecutive evaluations under the bound.
    under: u32,
    /// When the current over streak began.
    over_since: Option<DateTime<Utc>>,
    /// The bound of the last evaluation that could judge; runs above it
    /// are kept out of the phase reference.
    last_bound_ms: Option<f64>,
    open: Option<Anomaly>,
}

/// What one judged window looks like against its bound.
struct Judged<'a> {
    expected: Expected,
    observed_p95_ms: f64,
    bound_ms: f64,
    /// The runs above the bound.
    slow: Vec<&'a Sample>,
}

impl Detector {
    /// A detector with nothing open.
    pub fn new(cfg: DetectConfig) -> Detector {
        Detector {
            cfg,
            over: 0,
            under: 0,
            over_since: None,
            last_bound_ms: None,
            open: None,
        }
    }

    /// The open anomaly, if any.
    pub fn open(&self) -> Option<&Anomaly> {
        self.open.as_ref()
    }

    /// True when no anomaly is open and none is building: the time when the
    /// phase reference may learn.
    pub fn is_quiet(&self) -> bool {
        self.open.is_none() && self.over == 0
    }

    /// Feeds `sample` to `reference` only while the detector is quiet and
    /// the sample is under the last bound, so that a slowdown never
    /// becomes the normal it is compared with.
    pub fn learn_phases(&self, reference: &mut PhaseReference, sample: &Sample) {
        let under_bound = self.last_bound_ms.is_none_or(|b| sample.total_ms <= b);
        if self.is_quiet() && under_bound {
            reference.observe(sample);
        }
    }

    /// Judges the runs of `window` that started in the `cfg.window` before
    /// `now` (others are ignored) against `baseline`. Call it once per run
    /// or once a minute: `sustain` counts these calls.
    pub fn evaluate(
        &mut self,
        baseline: &Baseline,
        window: &[Sample],
        now: DateTime<Utc>,
        reference: &PhaseReference,
    ) -> Verdict {
        let Some(expected) = self.expected(baseline, now) else {
            return self.hold(Verdict::Learning);
        };
        let start = now - self.cfg.window;
        let runs: Vec<&Sample> = window
            .iter()
            .filter(|s| s.at > start && s.at <= now)
            .collect();
        if runs.len() < self.cfg.min_samples.max(1) {
            return self.hold(Verdict::TooFewRuns { runs: runs.len() });
        }
        let Some(judged) = self.judge(expected, &runs) else {
            return self.hold(Verdict::TooFewRuns { runs: runs.len() });
        };
        self.last_bound_ms = Some(judged.bound_ms);
        match judged.observed_p95_ms > judged.bound_ms
            && judged.slow.len() >= self.cfg.min_slow_runs
        {
            true => self.step_over(&judged, now, reference),
            false => self.step_under(&judged),
        }
    }

    /// The expectation for a window ending at `now`: when the window
    /// straddles two hours of the week, the higher of the two, so that the
    /// tail of a known busy hour is not judged against the quiet hour after
    /// it.
    fn expected(&self, baseline: &Baseline, now: DateTime<Utc>) -> Option<Expected> {
        let at_end = baseline.expected(now)?;
        let at_start = baseline.expected(now - self.cfg.window)?;
        Some(match at_start.p95_ms > at_end.p95_ms {
            true => at_start,
            false => at_end,
        })
    }

    /// The p95 a window must exceed: above every one of the three bounds.
    fn bound_ms(&self, e: &Expected) -> f64 {
        let by_factor = e.p95_ms * self.cfg.factor;
        let by_delta = e.p95_ms + self.cfg.min_delta_ms;
        let by_mad = e.p95_ms + self.cfg.mad_k * e.mad_p95_ms;
        by_factor.max(by_delta).max(by_mad)
    }

    fn judge<'a>(&self, expected: Expected, runs: &[&'a Sample]) -> Option<Judged<'a>> {
        let totals: Vec<f64> = runs.iter().map(|s| s.total_ms).collect();
        let observed_p95_ms = quantile(&totals, 0.95)?;
        let bound_ms = self.bound_ms(&expected);
        let slow = runs
            .iter()
            .copied()
            .filter(|s| s.total_ms > bound_ms)
            .collect();
        Some(Judged {
            expected,
            observed_p95_ms,
            bound_ms,
            slow,
        })
    }

    fn step_over(
        &mut self,
        judged: &Judged<'_>,
        now: DateTime<Utc>,
        reference: &PhaseReference,
    ) -> Verdict {
        self.over = self.over.saturating_add(1);
        self.under = 0;
        let since = *self.over_since.get_or_insert(now);
        let anomaly = match self.open {
            // Still open: the figures follow the window, the cause stays
            // the one named when it opened.
            Some(open) => Anomaly {
                observed_p95_ms: judged.observed_p95_ms,
                expected_p95_ms: judged.expected.p95_ms,
                ratio: ratio(judged),
                ..open
            },
            None if self.over < self.cfg.sustain => return normal(judged, self.over),
            None => anomaly(judged, since, reference),
        };
        self.open = Some(anomaly);
        Verdict::Anomaly(anomaly)
    }

    fn step_under(&mut self, judged: &Judged<'_>) -> Verdict {
        self.under = self.under.saturating_add(1);
        self.over = 0;
        self.over_since = None;
        let Some(open) = self.open else {
            return normal(judged, 0);
        };
        if self.under >= self.cfg.sustain {
            self.open = None;
            return normal(judged, 0);
        }
        let still = Anomaly {
            observed_p95_ms: judged.observed_p95_ms,
            expected_p95_ms: judged.expected.p95_ms,
            ratio: ratio(judged),
            ..open
        };
        self.open = Some(still);
        Verdict::Anomaly(still)
    }

    /// An evaluation that cannot judge changes no streak.
    fn hold(&self, verdict: Verdict) -> Verdict {
        self.open.map_or(verdict, Verdict::Anomaly)
    }
}

fn normal(judged: &Judged<'_>, over_streak: u32) -> Verdict {
    Verdict::Normal {
        observed_p95_ms: judged.observed_p95_ms,
        expected_p95_ms: judged.expected.p95_ms,
        bound_ms: judged.bound_ms,
        over_streak,
    }
}

fn ratio(judged: &Judged<'_>) -> f64 {
    judged.observed_p95_ms / judged.expected.p95_ms.max(f64::MIN_POSITIVE)
}

fn anomaly(judged: &Judged<'_>, since: DateTime<Utc>, reference: &PhaseReference) -> Anomaly {
    let rise = judged.observed_p95_ms - judged.expected.p95_ms;
    Anomaly {
        since,
        observed_p95_ms: judged.observed_p95_ms,
        expected_p95_ms: judged.expected.p95_ms,
        ratio: ratio(judged),
        phase: moved_phase(&judged.slow, reference, rise),
    }
}

/// The phase whose median over the slow runs rose most above its normal,
/// if that rise is at least half of `rise`. The slow runs, not the whole
/// window, are compared: when an anomaly opens, most of the window is
/// still normal.
fn moved_phase(slow: &[&Sample], reference: &PhaseReference, rise: f64) -> Option<PhaseShift> {
    let shifts = PHASES.iter().enumerate().filter_map(|(i, &phase)| {
        let normal_ms = reference.normal_ms(phase)?;
        let values: Vec<f64> = slow
            .iter()
            .filter_map(|s| s.phases.get(i).copied().flatten())
            .collect();
        let now_ms = median(&values)?;
        Some(PhaseShift {
            phase,
            normal_ms,
            now_ms,
        })
    });
    let best =
        shifts.max_by(|a, b| (a.now_ms - a.normal_ms).total_cmp(&(b.now_ms - b.normal_ms)))?;
    (best.now_ms - best.normal_ms >= PHASE_SHARE * rise && rise > 0.0).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::baseline::HourStat;
    use chrono::{TimeDelta, TimeZone};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 12, 0, 0).unwrap()
    }

    /// Four weeks where every hour has p50 100 ms and p95 around 130 ms.
    fn flat_baseline() -> Baseline {
        let start = t0() - TimeDelta::weeks(4);
        let hours: Vec<HourStat> = (0..4 * 168)
            .map(|i| HourStat {
                start: start + TimeDelta::hours(i),
                count: 120,
                p50_ms: 100.0,
                p95_ms: 128.0 + (i % 5) as f64,
            })
            .collect();
        Baseline::learn(&hours, &DetectConfig::default())
    }

    /// A run at `at` of total `total` ms: dns 5, connect 10, tls 20, the
    /// rest first byte, plus `extra` ms on phase `slow`.
    fn run(at: DateTime<Utc>, total: f64, slow: Option<(usize, f64)>) -> Sample {
        let mut phases = [Some(5.0), Some(10.0), Some(20.0), Some(total - 35.0)];
        let mut total = total;
        if let Some((i, extra)) = slow {
            phases[i] = phases[i].map(|p| p + extra);
            total += extra;
        }
        Sample {
            at,
            total_ms: total,
            phases,
        }
    }

    /// Drives a detector over runs every 30 s from `t0()`, `slow_from` to
    /// `slow_to` (run indexes) slowed on phase `phase` by `extra` ms;
    /// returns the verdict of each run's evaluation.
    fn drive(
        det: &mut Detector,
        n: usize,
        slow: impl Fn(usize) -> Option<(usize, f64)>,
    ) -> Vec<Verdict> {
        let baseline = flat_baseline();
        let mut reference = PhaseReference::new();
        let mut window: Vec<Sample> = Vec::new();
        (0..n)
            .map(|i| {
                let at = t0() + TimeDelta::seconds(30 * i as i64);
                let wobble = (i % 7) as f64 * 3.0;
                let s = run(at, 100.0 + wobble, slow(i));
                window.push(s);
                det.learn_phases(&mut reference, &s);
                det.evaluate(&baseline, &window, at, &reference)
            })
            .collect()
    }

    fn first_open(verdicts: &[Verdict]) -> Option<(usize, Anomaly)> {
        verdicts.iter().enumerate().find_map(|(i, v)| match v {
            Verdict::Anomaly(a) => Some((i, *a)),
            _ => None,
        })
    }

    #[test]
    fn a_sustained_slowdown_opens_with_its_phase_and_clears_with_hysteresis() {
        let mut det = Detector::new(DetectConfig::default());
        // Runs 100..160 (30 minutes) get +250 ms of connect.
        let verdicts = drive(&mut det, 240, |i| {
            (100..160).contains(&i).then_some((1, 250.0))
        });
        let (at, anomaly) = first_open(&verdicts).expect("an anomaly");
        // Three slow runs make the p95 and min_slow_runs, then sustain 3.
        assert_eq!(at, 104, "{:?}", &verdicts[100..106]);
        assert!(anomaly.ratio > 2.0, "{anomaly:?}");
        assert_eq!(anomaly.since, t0() + TimeDelta::seconds(30 * 102));
        let shift = anomaly.phase.expect("a phase");
        assert_eq!(shift.phase, Phase::Connect);
        assert!((shift.normal_ms - 10.0).abs() < 1.0, "{shift:?}");
        assert!((shift.now_ms - 260.0).abs() < 1.0, "{shift:?}");
        // It stays open while slow runs are in the window, then clears
        // after three evaluations under the bound.
        let last_open = verdicts
            .iter()
            .rposition(|v| matches!(v, Verdict::Anomaly(_)))
            .unwrap();
        assert!((160..200).contains(&last_open), "{last_open}");
        assert!(verdicts[104..=last_open]
            .iter()
            .all(|v| matches!(v, Verdict::Anomaly(_))));
        assert!(matches!(
            verdicts[last_open + 1],
            Verdict::Normal { over_streak: 0, .. }
        ));
    }

    #[test]
    fn two_slow_runs_never_open_an_anomaly() {
        let mut det = Detector::new(DetectConfig::default());
        let verdicts = drive(&mut det, 200, |i| {
            matches!(i, 80 | 90).then_some((3, 2_000.0))
        });
        assert_eq!(first_open(&verdicts), None);
        // With the control off, the same two runs make a 15-minute anomaly.
        let cfg = DetectConfig {
            min_slow_runs: 1,
            ..DetectConfig::default()
        };
        let mut det = Detector::new(cfg);
        let verdicts = drive(&mut det, 200, |i| {
            matches!(i, 80 | 90).then_some((3, 2_000.0))
        });
        assert!(first_open(&verdicts).is_some());
    }

    #[test]
    fn a_rise_below_the_factor_or_the_absolute_floor_is_normal() {
        let mut det = Detector::new(DetectConfig::default());
        // +120 ms makes the p95 ~1.9× the expected 130 ms: under the factor.
        let verdicts = drive(&mut det, 200, |i| {
            (100..160).contains(&i).then_some((3, 120.0))
        });
        assert_eq!(first_open(&verdicts), None);
        // With factor 1.2 the same rise opens.
        let cfg = DetectConfig {
            factor: 1.2,
            ..DetectConfig::default()
        };
        let mut det = Detector::new(cfg);
        let verdicts = drive(&mut det, 200, |i| {
            (100..160).contains(&i).then_some((3, 120.0))
        });
        assert!(first_open(&verdicts).is_some());
        // A floor of 200 ms holds it back again.
        let cfg = DetectConfig {
            factor: 1.2,
            min_delta_ms: 200.0,
            ..DetectConfig::default()
        };
        let mut det = Detector::new(cfg);
        let verdicts = drive(&mut det, 200, |i| {
            (100..160).contains(&i).then_some((3, 120.0))
        });
        assert_eq!(first_open(&verdicts), None);
    }

    #[test]
    fn a_short_streak_does_not_open() {
        // Five minutes of slow runs keep the window over the bound for
        // about 20 evaluations, fewer than this `sustain`.
        let cfg = DetectConfig {
            sustain: 40,
            ..DetectConfig::default()
        };
        let mut det = Detector::new(cfg);
        let verdicts = drive(&mut det, 200, |i| {
            (100..110).contains(&i).then_some((3, 400.0))
        });
        assert_eq!(first_open(&verdicts), None);
        let streaks: Vec<u32> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Normal { over_streak, .. } => Some(*over_streak),
                _ => None,
            })
            .collect();
        assert!(streaks.iter().any(|s| *s > 20), "{streaks:?}");
    }

    #[test]
    fn no_phase_is_named_when_none_accounts_for_the_rise() {
        let mut det = Detector::new(DetectConfig::default());
        // The rise is spread over the four phases: +80 ms each.
        let baseline = flat_baseline();
        let mut reference = PhaseReference::new();
        let mut window = Vec::new();
        let mut last = Verdict::Learning;
        for i in 0..160 {
            let at = t0() + TimeDelta::seconds(30 * i);
            let mut s = run(at, 100.0 + (i % 7) as f64, None);
            if i >= 100 {
                s.phases = s.phases.map(|p| p.map(|v| v + 80.0));
                s.total_ms += 320.0;
            }
            window.push(s);
            det.learn_phases(&mut reference, &s);
            last = det.evaluate(&baseline, &window, at, &reference);
        }
        let Verdict::Anomaly(a) = last else {
            panic!("{last:?}");
        };
        assert_eq!(a.phase, None, "{a:?}");
    }

    #[test]
    fn nothing_is_judged_while_learning_or_with_too_few_runs() {
        let mut det = Detector::new(DetectConfig::default());
        let reference = PhaseReference::new();
        let slow: Vec<Sample> = (0..30)
            .map(|i| run(t0() - TimeDelta::seconds(30 * i), 5_000.0, None))
            .collect();
        for _ in 0..5 {
            let v = det.evaluate(&Baseline::learning(), &slow, t0(), &reference);
            assert_eq!(v, Verdict::Learning);
        }
        for _ in 0..5 {
            let v = det.evaluate(&flat_baseline(), &slow[..9], t0(), &reference);
            assert_eq!(v, Verdict::TooFewRuns { runs: 9 });
        }
        // Runs older than the window do not count.
        let v = det.evaluate(
            &flat_baseline(),
            &slow,
            t0() + TimeDelta::minutes(20),
            &reference,
        );
        assert_eq!(v, Verdict::TooFewRuns { runs: 0 });
    }

    #[test]
    fn the_reference_tracks_the_median_and_ignores_stray_runs() {
        let mut r = PhaseReference::new();
        assert_eq!(r.normal_ms(Phase::Dns), None);
        for i in 0..400 {
            let dns = if i % 50 == 0 {
                900.0
            } else {
                8.0 + (i % 5) as f64
            };
            let s = Sample {
                at: t0(),
                total_ms: 100.0,
                phases: [Some(dns), Some(20.0), None, Some(60.0)],
            };
            r.observe(&s);
        }
        let dns = r.normal_ms(Phase::Dns).unwrap();
        assert!((9.0..=11.5).contains(&dns), "{dns}");
        assert!((r.normal_ms(Phase::Connect).unwrap() - 20.0).abs() < 0.5);
        assert_eq!(r.normal_ms(Phase::Tls), None);
        assert_eq!(r.normal_ms(Phase::Query), None);
        assert_eq!(std::mem::size_of::<PhaseReference>(), 32);
    }

    #[test]
    fn a_sample_is_made_of_a_successful_result_only() {
        use std::time::Duration;
        let mut r = ProbeResult {
            probe: "p".into(),
            started_at: t0(),
            duration: Duration::from_millis(120),
            success: true,
            failure: None,
            phases: vec![
                (Phase::Dns, Duration::from_millis(3)),
                (Phase::FirstByte, Duration::from_millis(90)),
            ],
            checks: vec![],
            details: Default::default(),
            location: None,
        };
        let s = Sample::from_result(&r).unwrap();
        assert_eq!(s.total_ms, 120.0);
        assert_eq!(s.phases, [Some(3.0), None, None, Some(90.0)]);
        r.success = false;
        assert_eq!(Sample::from_result(&r), None);
    }
}
