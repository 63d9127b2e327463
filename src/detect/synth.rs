//! Deterministic synthetic histories for evaluating the detectors, and the
//! scoring that the tests and `benches/detect.rs` share. A seed gives a
//! probe [`Profile`] (latency level, phase split, noise, heavy-tailed
//! spikes, a daily rhythm with one busy batch hour on weekdays, lighter
//! weekends), weeks of hourly stats as the rollups would hold them, and a
//! few hours of per-run samples with phases, with or without an injected
//! anomaly; or two weeks of daily medians with or without a slow creep.
//! Randomness is a local splitmix64, so a seed means the same history on
//! every machine. Nothing here is used by the daemon.

use std::collections::VecDeque;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};

use super::anomaly::{Detector, PhaseReference, Sample, Verdict, PHASES};
use super::baseline::{Baseline, HourStat};
use super::stats::{median, quantile};
use super::trend::{trend, weekly_adjusted};
use super::DetectConfig;
use crate::result::Phase;

/// Seconds between runs: Lookout's default interval.
const RUN_EVERY_S: i64 = 30;
/// Runs in an hour at that interval: the count of a full hour's rollup.
const RUNS_PER_HOUR: u64 = 120;
/// Runs of an anomaly scenario: three hours.
const SCENARIO_RUNS: i64 = 360;
/// When the injected slowdown starts, from the first run, and how long it
/// lasts.
const INJECT_AFTER_MIN: i64 = 90;
const INJECT_FOR_MIN: i64 = 30;
/// Unit runs simulated to learn a profile's p50 and p95 at level 1.
const UNIT_RUNS: usize = 2_000;
/// Runs per hour simulated for a trend scenario's daily medians.
const TREND_RUNS_PER_HOUR: usize = 12;
/// Days of daily medians in a trend scenario.
const TREND_HISTORY_DAYS: i64 = 14;

/// splitmix64: a tiny, fast, well-mixed generator; enough for synthetic
/// latencies and identical on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A Pareto draw with minimum 1 and shape `alpha` (heavy-tailed).
    pub fn pareto(&mut self, alpha: f64) -> f64 {
        (1.0 - self.unit()).powf(-1.0 / alpha)
    }
}

/// One synthetic probe's latency behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Median total latency on a quiet weekday hour, in milliseconds.
    pub median_ms: f64,
    /// Each of [`PHASES`]' share of that median; `None` for a phase the
    /// probe lacks. The rest of the total is transfer.
    pub shares: [Option<f64>; 4],
    /// Log-normal σ of each phase, run to run.
    pub sigma: f64,
    /// Chance of a run hitting a heavy-tailed spike (a retransmit, a GC
    /// pause) on one of its phases.
    pub spike_rate: f64,
    /// Hour of the day (UTC) of the weekday batch job.
    pub peak_hour: u32,
    /// Latency multiplier during that hour.
    pub peak_factor: f64,
    /// Latency multiplier on Saturdays and Sundays.
    pub weekend_factor: f64,
    /// Log-normal σ of the day-to-day level.
    pub day_sigma: f64,
    /// Hour of the day (UTC) of a nightly job whose weight varies from day
    /// to day: that hour's latency is naturally volatile.
    pub volatile_hour: u32,
    /// Log-normal σ, day to day, of the volatile hour's level.
    pub volatile_sigma: f64,
    /// Seeds each day's draw of the volatile hour's level, so that the
    /// history and the runs agree on it.
    pub volatile_seed: u64,
}

impl Profile {
    /// A plausible HTTPS (three times in four) or plain HTTP probe.
    pub fn random(rng: &mut SplitMix64) -> Profile {
        let dns = rng.range(0.03, 0.08);
        let connect = rng.range(0.05, 0.15);
        let tls = rng.chance(0.75).then(|| rng.range(0.10, 0.20));
        let transfer = rng.range(0.05, 0.10);
        let first_byte = 1.0 - dns - connect - tls.unwrap_or(0.0) - transfer;
        Profile {
            median_ms: rng.range(150.0, 400.0),
            shares: [Some(dns), Some(connect), tls, Some(first_byte)],
            sigma: rng.range(0.10, 0.25),
            spike_rate: rng.range(0.002, 0.01),
            peak_hour: 6 + rng.below(12) as u32,
            peak_factor: rng.range(2.0, 2.6),
            weekend_factor: rng.range(0.85, 0.95),
            day_sigma: rng.range(0.02, 0.05),
            volatile_hour: rng.below(6) as u32,
            volatile_sigma: rng.range(0.3, 0.6),
            volatile_seed: rng.next_u64(),
        }
    }

    /// The latency multiplier at `at`: busier daytime hours slower (up to
    /// +25 % mid-afternoon), the batch hour on weekdays, the volatile night
    /// hour, lighter weekends.
    pub fn level(&self, at: DateTime<Utc>) -> f64 {
        let hour = at.hour();
        let daytime = match hour {
            7..=18 => 1.0 + 0.25 * (std::f64::consts::PI * f64::from(hour - 6) / 13.0).sin(),
            _ if hour == self.volatile_hour => self.volatile_level(at),
            _ => 1.0,
        };
        match at.weekday().num_days_from_monday() {
            5 | 6 => daytime * self.weekend_factor,
            _ if hour == self.peak_hour => daytime * self.peak_factor,
            _ => daytime,
        }
    }

    /// The volatile hour's level on the day of `at`: the same draw for every
    /// run and hour stat of that day.
    fn volatile_level(&self, at: DateTime<Utc>) -> f64 {
        let day = at.timestamp().div_euclid(86_400) as u64;
        let z =
            SplitMix64::new(self.volatile_seed ^ day.wrapping_mul(0x9E37_79B9_7F4A_7C15)).normal();
        (self.volatile_sigma * z).exp()
    }

    /// The phases present, as indexes into [`PHASES`].
    pub fn present_phases(&self) -> Vec<usize> {
        (0..PHASES.len())
            .filter(|i| self.shares.get(*i).copied().flatten().is_some())
            .collect()
    }

    /// One run at `at` with every latency multiplied by `scale`, plus
    /// `extra` (phase index, milliseconds) on one phase.
    pub fn run(
        &self,
        rng: &mut SplitMix64,
        at: DateTime<Utc>,
        scale: f64,
        extra: Option<(usize, f64)>,
    ) -> Sample {
        let base = self.median_ms * self.level(at) * scale;
        let common = (0.5 * self.sigma * rng.normal()).exp();
        let mut phases = self
            .shares
            .map(|s| s.map(|share| base * share * common * (self.sigma * rng.normal()).exp()));
        let shared: f64 = self.shares.iter().flatten().sum();
        let transfer = base * (1.0 - shared).max(0.0) * common * (self.sigma * rng.normal()).exp();
        if rng.chance(self.spike_rate) {
            let present = self.present_phases();
            let i = present
                .get(rng.below(present.len() as u64) as usize)
                .copied();
            let spike = base * rng.pareto(1.5).min(30.0);
            add_to(&mut phases, i, spike);
        }
        if let Some((i, ms)) = extra {
            add_to(&mut phases, Some(i), ms);
        }
        let total = phases.iter().flatten().sum::<f64>() + transfer;
        Sample {
            at,
            total_ms: total,
            phases,
        }
    }

    /// The p50 and p95 of a run at level 1, and the log-spread of the
    /// total, from simulated runs.
    fn unit_quantiles(&self, rng: &mut SplitMix64) -> UnitQuantiles {
        // Any hour will do: the runs are scaled back to level 1.
        let quiet = Utc
            .with_ymd_and_hms(2026, 1, 5, 3, 0, 0)
            .single()
            .unwrap_or_default();
        let totals: Vec<f64> = (0..UNIT_RUNS)
            .map(|_| self.run(rng, quiet, 1.0 / self.level(quiet), None).total_ms)
            .collect();
        let p50 = median(&totals).unwrap_or(self.median_ms);
        let p95 = quantile(&totals, 0.95).unwrap_or(p50);
        UnitQuantiles {
            p50,
            p95,
            log_sd: ((p95 / p50).ln() / 1.645).max(0.01),
        }
    }

    /// Hourly stats as the rollups would hold them for the hours from
    /// `from` (inclusive) to `to` (exclusive), with day-to-day drift, a few
    /// bad hours (past incidents) and a few near-empty hours (the probe
    /// paused) whose figures are nonsense.
    pub fn hours(
        &self,
        rng: &mut SplitMix64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<HourStat> {
        let unit = self.unit_quantiles(rng);
        let n = (RUNS_PER_HOUR as f64).sqrt();
        let mut day_level = 1.0;
        let mut hours = Vec::new();
        let mut at = from;
        while at < to {
            if at.hour() == 0 || hours.is_empty() {
                day_level = (self.day_sigma * rng.normal()).exp();
            }
            let level = self.level(at) * day_level * (0.02 * rng.normal()).exp();
            hours.push(self.hour(rng, at, level, &unit, n));
            at += TimeDelta::hours(1);
        }
        hours
    }

    fn hour(
        &self,
        rng: &mut SplitMix64,
        start: DateTime<Utc>,
        level: f64,
        unit: &UnitQuantiles,
        sqrt_n: f64,
    ) -> HourStat {
        let mut p50 = level * unit.p50 * (1.25 * unit.log_sd / sqrt_n * rng.normal()).exp();
        let mut p95 = level * unit.p95 * (2.1 * unit.log_sd / sqrt_n * rng.normal()).exp();
        let mut count = RUNS_PER_HOUR;
        if rng.chance(0.005) {
            let bad = rng.range(1.5, 4.0);
            p50 *= bad;
            p95 *= bad;
        } else if rng.chance(0.01) {
            count = rng.below(10);
            p95 *= rng.range(0.5, 10.0);
        }
        HourStat {
            start,
            count,
            p50_ms: p50,
            p95_ms: p95.max(p50),
        }
    }
}

fn add_to(phases: &mut [Option<f64>; 4], i: Option<usize>, ms: f64) {
    if let Some(p) = i.and_then(|i| phases.get_mut(i)).and_then(|p| p.as_mut()) {
        *p += ms;
    }
}

struct UnitQuantiles {
    p50: f64,
    p95: f64,
    log_sd: f64,
}

/// What an anomaly scenario holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnomalyKind {
    /// Only noise and spikes, at a random hour of the week.
    Quiet,
    /// The runs cover a weekday's batch hour, which the baseline knows.
    PeakHour,
    /// The runs cover the volatile night hour, whose history varies a lot.
    VolatileHour,
    /// For 30 minutes the total latency is `magnitude` × normal, all of
    /// the rise in one phase.
    Slowdown {
        /// The phase that slows down.
        phase: Phase,
        /// Total latency multiplier (3.0 in the scenario).
        magnitude: f64,
    },
}

/// The injected slowdown of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Injected {
    /// The phase that slowed down.
    pub phase: Phase,
    /// First slow run.
    pub from: DateTime<Utc>,
    /// End of the slowdown (exclusive).
    pub to: DateTime<Utc>,
}

/// One probe's history and three hours of runs.
#[derive(Debug, Clone)]
pub struct AnomalyScenario {
    /// What was generated.
    pub kind: AnomalyKind,
    /// The probe's behaviour.
    pub profile: Profile,
    /// Hourly stats for the weeks before the first run.
    pub hours: Vec<HourStat>,
    /// Runs every 30 s for three hours, in time order.
    pub runs: Vec<Sample>,
    /// The slowdown, for `Slowdown` scenarios.
    pub injected: Option<Injected>,
}

/// Generates an anomaly scenario: `weeks` weeks of hourly history, then
/// three hours of runs; a slowdown starts 90 minutes in.
pub fn anomaly_scenario(seed: u64, kind: AnomalyKind, weeks: i64) -> AnomalyScenario {
    let mut rng = SplitMix64::new(seed);
    let profile = Profile::random(&mut rng);
    let start = scenario_start(&mut rng, &profile, kind);
    let first_hour = start - TimeDelta::minutes(i64::from(start.minute()));
    let hours = profile.hours(&mut rng, first_hour - TimeDelta::weeks(weeks), first_hour);
    let injected = match kind {
        AnomalyKind::Slowdown { phase, .. } => Some(Injected {
            phase,
            from: start + TimeDelta::minutes(INJECT_AFTER_MIN),
            to: start + TimeDelta::minutes(INJECT_AFTER_MIN + INJECT_FOR_MIN),
        }),
        _ => None,
    };
    // Today drifts from the usual level like any day of the history.
    let today = (profile.day_sigma * rng.normal()).exp();
    let runs = (0..SCENARIO_RUNS)
        .map(|i| {
            let at = start + TimeDelta::seconds(RUN_EVERY_S * i);
            let extra = slowdown_at(&profile, kind, injected, at, today);
            profile.run(&mut rng, at, today, extra)
        })
        .collect();
    AnomalyScenario {
        kind,
        profile,
        hours,
        runs,
        injected,
    }
}

/// The first run: a weekday 90 minutes before the batch hour for
/// `PeakHour`, any day 90 minutes before the volatile hour for
/// `VolatileHour`, else any minute of a week in 2026.
fn scenario_start(rng: &mut SplitMix64, profile: &Profile, kind: AnomalyKind) -> DateTime<Utc> {
    let monday = Utc
        .with_ymd_and_hms(2026, 2, 2, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let week = monday + TimeDelta::weeks(rng.below(40) as i64);
    match kind {
        AnomalyKind::PeakHour => {
            let day = TimeDelta::days(rng.below(5) as i64);
            week + day + TimeDelta::hours(i64::from(profile.peak_hour))
                - TimeDelta::minutes(INJECT_AFTER_MIN)
        }
        _ => week + TimeDelta::minutes(rng.below(7 * 24 * 60) as i64),
    }
}

/// The extra milliseconds of the injected slowdown for a run at `at`: the
/// total becomes `magnitude` × its normal level (that hour's, on a day at
/// `today`), all in one phase.
fn slowdown_at(
    profile: &Profile,
    kind: AnomalyKind,
    injected: Option<Injected>,
    at: DateTime<Utc>,
    today: f64,
) -> Option<(usize, f64)> {
    let (AnomalyKind::Slowdown { magnitude, .. }, Some(inj)) = (kind, injected) else {
        return None;
    };
    let i = PHASES.iter().position(|p| *p == inj.phase)?;
    let during = at >= inj.from && at < inj.to;
    during.then(|| {
        (
            i,
            (magnitude - 1.0) * profile.median_ms * profile.level(at) * today,
        )
    })
}

/// Precision, recall and the rest over many anomaly scenarios.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AnomalyScore {
    /// Scenarios run.
    pub scenarios: usize,
    /// Scenarios with an injected slowdown.
    pub injected: usize,
    /// Injected slowdowns an anomaly opened for, during them or within one
    /// window after.
    pub detected: usize,
    /// Anomalies opened again during a slowdown that one had already
    /// opened for (it cleared and reopened: flapping, not a false alarm).
    pub reopened: usize,
    /// Anomalies opened anywhere else.
    pub false_alarms: usize,
    /// Detected slowdowns whose anomaly named the injected phase.
    pub phase_right: usize,
    /// Sum over detected slowdowns of minutes from the first slow run to
    /// the anomaly opening.
    pub delay_minutes_sum: f64,
    /// Hours of runs judged in scenarios without an injection.
    pub clean_hours: f64,
    /// False alarms in scenarios without an injection.
    pub clean_false_alarms: usize,
}

impl AnomalyScore {
    /// detected / (detected + false alarms); 1 when nothing opened.
    pub fn precision(&self) -> f64 {
        ratio_or_one(self.detected, self.detected + self.false_alarms)
    }

    /// detected / injected; 1 with nothing injected.
    pub fn recall(&self) -> f64 {
        ratio_or_one(self.detected, self.injected)
    }

    /// Share of detected slowdowns whose phase was named right.
    pub fn phase_accuracy(&self) -> f64 {
        ratio_or_one(self.phase_right, self.detected)
    }

    /// Mean minutes from the first slow run to the anomaly opening.
    pub fn mean_delay_minutes(&self) -> f64 {
        match self.detected {
            0 => 0.0,
            n => self.delay_minutes_sum / n as f64,
        }
    }

    /// False alarms per 1,000 hours of a clean probe.
    pub fn false_alarms_per_1000_hours(&self) -> f64 {
        match self.clean_hours {
            h if h > 0.0 => self.clean_false_alarms as f64 * 1000.0 / h,
            _ => 0.0,
        }
    }

    /// Adds another score's counts to this one.
    pub fn add(&mut self, other: &AnomalyScore) {
        self.scenarios += other.scenarios;
        self.injected += other.injected;
        self.detected += other.detected;
        self.reopened += other.reopened;
        self.false_alarms += other.false_alarms;
        self.phase_right += other.phase_right;
        self.delay_minutes_sum += other.delay_minutes_sum;
        self.clean_hours += other.clean_hours;
        self.clean_false_alarms += other.clean_false_alarms;
    }
}

fn ratio_or_one(n: usize, d: usize) -> f64 {
    match d {
        0 => 1.0,
        d => n as f64 / d as f64,
    }
}

/// What the scoring varies besides the detector's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthOptions {
    /// Weeks of hourly history before the runs.
    pub weeks: i64,
    /// Total latency multiplier of injected slowdowns.
    pub magnitude: f64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            weeks: 4,
            magnitude: 3.0,
        }
    }
}

/// The kind of scenario `seed` gets: half slowdowns (on a phase the probe
/// has, drawn from the seed), a quarter quiet, an eighth peak hour, an
/// eighth volatile hour.
pub fn anomaly_kind(seed: u64, magnitude: f64) -> AnomalyKind {
    match seed % 8 {
        0 | 1 | 4 | 5 => {
            // The scenario draws the same profile from the same seed; the
            // phase comes from a second stream so as not to disturb it.
            let present = Profile::random(&mut SplitMix64::new(seed)).present_phases();
            let mut pick = SplitMix64::new(seed ^ 0xA5A5_A5A5_A5A5_A5A5);
            let i = present
                .get(pick.below(present.len() as u64) as usize)
                .copied()
                .unwrap_or(3);
            AnomalyKind::Slowdown {
                phase: PHASES.get(i).copied().unwrap_or(Phase::FirstByte),
                magnitude,
            }
        }
        2 | 7 => AnomalyKind::Quiet,
        3 => AnomalyKind::PeakHour,
        _ => AnomalyKind::VolatileHour,
    }
}

/// Runs the scenarios of `seeds` through a fresh detector each, as the
/// daemon would: one evaluation per run, the phase reference fed through
/// [`Detector::learn_phases`].
pub fn score_anomalies(
    seeds: std::ops::Range<u64>,
    cfg: &DetectConfig,
    opts: SynthOptions,
) -> AnomalyScore {
    let mut total = AnomalyScore::default();
    for seed in seeds {
        let scenario = anomaly_scenario(seed, anomaly_kind(seed, opts.magnitude), opts.weeks);
        total.add(&score_scenario(&scenario, cfg));
    }
    total
}

/// One scenario's contribution to the score.
pub fn score_scenario(scenario: &AnomalyScenario, cfg: &DetectConfig) -> AnomalyScore {
    let mut score = AnomalyScore {
        scenarios: 1,
        injected: usize::from(scenario.injected.is_some()),
        ..AnomalyScore::default()
    };
    for opened in openings(scenario, cfg) {
        classify(&mut score, scenario.injected, &opened, cfg.window);
    }
    if scenario.injected.is_none() {
        score.clean_hours = SCENARIO_RUNS as f64 * RUN_EVERY_S as f64 / 3600.0;
        score.clean_false_alarms = score.false_alarms;
    }
    score
}

/// Each anomaly the detector opened over the scenario's runs: (when it
/// opened, what it named).
fn openings(scenario: &AnomalyScenario, cfg: &DetectConfig) -> Vec<(DateTime<Utc>, Option<Phase>)> {
    let baseline = Baseline::learn(&scenario.hours, cfg);
    let mut detector = Detector::new(*cfg);
    let mut reference = PhaseReference::new();
    let mut window: VecDeque<Sample> = VecDeque::new();
    let mut opened = Vec::new();
    for run in &scenario.runs {
        window.push_back(*run);
        while window.front().is_some_and(|s| s.at <= run.at - cfg.window) {
            window.pop_front();
        }
        let was_open = detector.open().is_some();
        detector.learn_phases(&mut reference, run);
        let verdict = detector.evaluate(&baseline, window.make_contiguous(), run.at, &reference);
        if let (Verdict::Anomaly(a), false) = (verdict, was_open) {
            opened.push((run.at, a.phase.map(|p| p.phase)));
        }
    }
    opened
}

fn classify(
    score: &mut AnomalyScore,
    injected: Option<Injected>,
    opened: &(DateTime<Utc>, Option<Phase>),
    window: TimeDelta,
) {
    let (at, phase) = *opened;
    let during = |inj: Injected| at >= inj.from && at < inj.to + window;
    match injected {
        Some(inj) if during(inj) && score.detected == 0 => {
            score.detected = 1;
            score.phase_right = usize::from(phase == Some(inj.phase));
            score.delay_minutes_sum = (at - inj.from).num_seconds() as f64 / 60.0;
        }
        Some(inj) if during(inj) => score.reopened += 1,
        _ => score.false_alarms += 1,
    }
}

/// What a trend scenario holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrendKind {
    /// Day-to-day noise only.
    Flat,
    /// Latency rising linearly by `rise` (0.4 = +40 %) over the last 7 days.
    Creep {
        /// Relative rise at the end of the 7 days.
        rise: f64,
    },
    /// One hour in the last 7 days with every run 6× slower.
    HourSpike,
    /// One whole day in the last 7 days 1.8× slower (an incident day).
    DaySpike,
}

/// Two weeks of daily medians of one probe, and the hourly history
/// before them.
#[derive(Debug, Clone)]
pub struct TrendScenario {
    /// What was generated.
    pub kind: TrendKind,
    /// Hourly stats of the four weeks before the first day, for the
    /// baseline whose weekly pattern is divided out.
    pub hours: Vec<HourStat>,
    /// One (UTC day, p50 of that day's runs in ms) per day, oldest first.
    pub days: Vec<(NaiveDate, f64)>,
}

/// Generates a trend scenario: 14 days ending at a random midnight, each
/// day's p50 taken over simulated runs (12 an hour), after four weeks of
/// hourly history.
pub fn trend_scenario(seed: u64, kind: TrendKind) -> TrendScenario {
    let mut rng = SplitMix64::new(seed);
    let profile = Profile::random(&mut rng);
    let end = Utc
        .with_ymd_and_hms(2026, 2, 2, 0, 0, 0)
        .single()
        .unwrap_or_default()
        + TimeDelta::days(rng.below(280) as i64);
    let start = end - TimeDelta::days(TREND_HISTORY_DAYS);
    let hours = profile.hours(&mut rng, start - TimeDelta::weeks(4), start);
    let recent = end - TimeDelta::days(7);
    let spike_hour = recent + TimeDelta::hours(rng.below(7 * 24) as i64);
    let spike_day = (recent + TimeDelta::days(rng.below(7) as i64)).date_naive();
    let days = (0..TREND_HISTORY_DAYS)
        .map(|d| {
            let day_start = start + TimeDelta::days(d);
            let day_level = (profile.day_sigma * rng.normal()).exp();
            let scale_at = |at: DateTime<Utc>| {
                day_level
                    * match kind {
                        TrendKind::Flat => 1.0,
                        TrendKind::Creep { rise } => {
                            1.0 + rise
                                * ((at - recent).num_seconds() as f64 / 604_800.0).clamp(0.0, 1.0)
                        }
                        TrendKind::HourSpike
                            if at >= spike_hour && at < spike_hour + TimeDelta::hours(1) =>
                        {
                            6.0
                        }
                        TrendKind::DaySpike if at.date_naive() == spike_day => 1.8,
                        _ => 1.0,
                    }
            };
            (
                day_start.date_naive(),
                day_p50(&profile, &mut rng, day_start, scale_at),
            )
        })
        .collect();
    TrendScenario { kind, hours, days }
}

fn day_p50(
    profile: &Profile,
    rng: &mut SplitMix64,
    day: DateTime<Utc>,
    scale_at: impl Fn(DateTime<Utc>) -> f64,
) -> f64 {
    let step = TimeDelta::seconds(3600 / TREND_RUNS_PER_HOUR as i64);
    let totals: Vec<f64> = (0..24 * TREND_RUNS_PER_HOUR as i32)
        .map(|i| {
            let at = day + step * i;
            profile.run(rng, at, scale_at(at), None).total_ms
        })
        .collect();
    median(&totals).unwrap_or(0.0)
}

/// Precision and recall of the trend finding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrendScore {
    /// Scenarios with a creep.
    pub creeps: usize,
    /// Creeps with a finding.
    pub found: usize,
    /// Scenarios without a creep.
    pub clean: usize,
    /// Findings in scenarios without a creep.
    pub false_findings: usize,
}

impl TrendScore {
    /// found / (found + false findings); 1 with no finding.
    pub fn precision(&self) -> f64 {
        ratio_or_one(self.found, self.found + self.false_findings)
    }

    /// found / creeps; 1 with no creep.
    pub fn recall(&self) -> f64 {
        ratio_or_one(self.found, self.creeps)
    }
}

/// The finding for one scenario, as the daemon would look for it: the
/// baseline learned from the hours before, its weekly pattern divided out
/// of the daily medians (when `weekly`), then [`trend`].
pub fn scenario_trend(
    scenario: &TrendScenario,
    cfg: &DetectConfig,
    weekly: bool,
) -> Option<super::Finding> {
    match weekly {
        true => trend(
            &weekly_adjusted(&scenario.days, &Baseline::learn(&scenario.hours, cfg)),
            cfg,
        ),
        false => trend(&scenario.days, cfg),
    }
}

/// The kind of trend scenario `seed` gets: half creeps of +40 %, the rest
/// flat, one-hour spike and one-day spike in turn.
pub fn trend_kind(seed: u64) -> TrendKind {
    match seed % 6 {
        0..=2 => TrendKind::Creep { rise: 0.4 },
        3 => TrendKind::Flat,
        4 => TrendKind::HourSpike,
        _ => TrendKind::DaySpike,
    }
}

/// Runs the trend finding over the scenarios of `seeds`, on daily medians
/// with the weekly pattern divided out (`weekly`) or as they are.
pub fn score_trends(seeds: std::ops::Range<u64>, cfg: &DetectConfig, weekly: bool) -> TrendScore {
    let mut score = TrendScore::default();
    for seed in seeds {
        let scenario = trend_scenario(seed, trend_kind(seed));
        let found = scenario_trend(&scenario, cfg, weekly).is_some();
        match scenario.kind {
            TrendKind::Creep { .. } => {
                score.creeps += 1;
                score.found += usize::from(found);
            }
            _ => {
                score.clean += 1;
                score.false_findings += usize::from(found);
            }
        }
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_roughly_uniform() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        // The reference value of splitmix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = SplitMix64::new(1);
        let draws: Vec<f64> = (0..10_000).map(|_| r.normal()).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_scenario() {
        let kind = anomaly_kind(4, 3.0);
        let a = anomaly_scenario(4, kind, 4);
        let b = anomaly_scenario(4, kind, 4);
        assert_eq!(a.hours, b.hours);
        assert_eq!(a.runs, b.runs);
        assert_eq!(
            trend_scenario(9, TrendKind::Flat).days,
            trend_scenario(9, TrendKind::Flat).days
        );
    }

    #[test]
    fn hourly_stats_agree_with_simulated_runs() {
        // The analytic hourly p50/p95 must describe the same runs the
        // detector sees, or the evaluation would measure the mismatch.
        let mut rng = SplitMix64::new(11);
        let profile = Profile::random(&mut rng);
        let hour = Utc.with_ymd_and_hms(2026, 3, 4, 14, 0, 0).unwrap();
        let hours = profile.hours(&mut rng, hour - TimeDelta::days(7), hour);
        let same_hour: Vec<&HourStat> = hours
            .iter()
            .filter(|h| h.start.hour() == 14 && h.count > 100)
            .collect();
        let analytic = median(&same_hour.iter().map(|h| h.p95_ms).collect::<Vec<_>>()).unwrap();
        let simulated: Vec<f64> = (0..4_000)
            .map(|i| {
                profile
                    .run(&mut rng, hour - TimeDelta::days(1 + i % 5), 1.0, None)
                    .total_ms
            })
            .collect();
        let p95 = quantile(&simulated, 0.95).unwrap();
        assert!(
            (analytic / p95 - 1.0).abs() < 0.12,
            "analytic {analytic} simulated {p95}"
        );
    }

    #[test]
    fn a_slowdown_triples_the_total_through_one_phase() {
        let seed = 0;
        let kind = anomaly_kind(seed, 3.0);
        let s = anomaly_scenario(seed, kind, 4);
        let inj = s.injected.unwrap();
        let i = PHASES.iter().position(|p| *p == inj.phase).unwrap();
        let (during, before): (Vec<&Sample>, Vec<&Sample>) = s
            .runs
            .iter()
            .filter(|r| r.at >= inj.from - TimeDelta::minutes(30))
            .filter(|r| r.at < inj.to)
            .partition(|r| r.at >= inj.from);
        let med = |v: &[&Sample], f: &dyn Fn(&Sample) -> f64| {
            median(&v.iter().map(|s| f(s)).collect::<Vec<_>>()).unwrap()
        };
        let ratio = med(&during, &|s| s.total_ms) / med(&before, &|s| s.total_ms);
        assert!((2.5..3.5).contains(&ratio), "{ratio}");
        let phase_rise =
            med(&during, &|s| s.phases[i].unwrap()) - med(&before, &|s| s.phases[i].unwrap());
        let total_rise = med(&during, &|s| s.total_ms) - med(&before, &|s| s.total_ms);
        assert!(phase_rise / total_rise > 0.8, "{phase_rise} {total_rise}");
    }

    #[test]
    fn the_peak_hour_is_in_the_runs_and_the_history() {
        let s = anomaly_scenario(3, AnomalyKind::PeakHour, 4);
        let peak = s.profile.peak_hour;
        assert!(s.runs.iter().any(|r| r.at.hour() == peak));
        let b = Baseline::learn(&s.hours, &DetectConfig::default());
        let at_peak = s.runs.iter().find(|r| r.at.hour() == peak).unwrap().at;
        let before = b.expected(at_peak - TimeDelta::hours(2)).unwrap();
        let during = b.expected(at_peak).unwrap();
        assert!(during.p95_ms > 1.8 * before.p95_ms, "{during:?} {before:?}");
    }

    /// The acceptance figures on 200 seeded scenarios.
    #[test]
    fn detection_precision_recall_and_phase_accuracy_on_200_scenarios() {
        let cfg = DetectConfig::default();
        let s = score_anomalies(0..200, &cfg, SynthOptions::default());
        assert_eq!(s.injected, 100);
        assert!(s.precision() >= 0.95, "{s:?}");
        assert!(s.recall() >= 0.9, "{s:?}");
        assert!(s.phase_accuracy() >= 0.9, "{s:?}");
    }

    /// The trend finding on 120 seeded scenarios. Recall is bounded by
    /// day-to-day noise (σ up to 5 %) against a creep of 5.7 % a day seen
    /// through seven daily medians: a creep in twelve to sixteen reads
    /// under `trend_rise` or not monotone (see BENCHMARKS.md).
    #[test]
    fn trend_precision_and_recall_on_120_scenarios() {
        let s = score_trends(0..120, &DetectConfig::default(), true);
        assert_eq!(s.creeps, 60);
        assert!(s.precision() >= 0.95, "{s:?}");
        assert!(s.recall() >= 0.85, "{s:?}");
    }

    #[test]
    fn a_one_hour_spike_moves_a_day_little_and_makes_no_trend() {
        let cfg = DetectConfig::default();
        for seed in 0..20 {
            let s = trend_scenario(seed, TrendKind::HourSpike);
            assert_eq!(
                scenario_trend(&s, &cfg, true),
                None,
                "seed {seed}: {:?}",
                s.days
            );
            assert_eq!(s.days.len(), 14);
        }
    }
}
