//! The knobs of anomaly detection, each one a false-positive control, with
//! their defaults. This module only holds numbers: it reads no file and
//! validates nothing (a configuration section for it would compile into a
//! [`DetectConfig`] the way `config::compile` does for the rest).

use chrono::TimeDelta;

/// Every threshold the baseline, the sustained-deviation detector and the
/// trend finding use.
///
/// Each knob exists to keep a kind of false alarm out; the table says which,
/// and what turning it off costs (measured in BENCHMARKS.md, "Anomaly
/// detection (issue 9)").
///
/// | knob | default | false alarm it prevents |
/// | --- | --- | --- |
/// | `min_history_hours` | 24 | judging against a baseline learned from a few hours: no verdicts at all while learning |
/// | `min_hour_count` | 10 | an hour with a handful of runs (probe paused, daemon restarted) whose p95 is one run |
/// | `min_weeks` | 3 | an hour-of-week slot learned from one or two weeks (one bad Monday would be "normal"); such slots use the pooled figures |
/// | `hour_of_day_fallback` | off | (on) a young probe's daily busy hour judged against the pooled figures of all hours: such slots use the same hour of every day first |
/// | `window` | 15 min | reacting to one run: the observed p95 is over this many minutes of runs |
/// | `min_samples` | 10 | a p95 over too few runs (a probe every 5 minutes has 3 in a window): no verdict |
/// | `factor` | 2.0 | small relative changes: the observed p95 must be at least this multiple of the expected one |
/// | `min_delta_ms` | 50 ms | fast probes: 4 ms → 9 ms is ×2 and matters to nobody |
/// | `mad_k` | 4 | hours whose p95 is naturally volatile: the rise must also exceed this many MADs of that hour's history |
/// | `min_slow_runs` | 3 | one or two slow runs (a TCP retransmit, a GC pause) lifting a 30-run p95 on their own |
/// | `sustain` | 3 | a bound crossed for one evaluation; also the hysteresis that keeps an anomaly from flapping shut |
/// | `trend_days` | 7 | a "trend" fitted through two or three days |
/// | `trend_rise` | 0.25 | noise and weekly patterns read as a creep: the fitted rise over the span must be ≥ 25 % |
/// | `trend_min_z` | 1.645 | one bad day or a step tilting the fit: the Mann–Kendall statistic must say the days rise in order |
///
/// `min_delta_ms` applies to trends as well: a creep must add at least that
/// many milliseconds over the span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectConfig {
    /// Hours of usable history (each with at least `min_hour_count` runs)
    /// below which the baseline gives no expectation at all.
    pub min_history_hours: usize,
    /// Runs an hour must hold for its p50/p95 to be learned from.
    pub min_hour_count: u64,
    /// Usable samples an hour-of-week slot needs (one per past week) before
    /// it is judged on its own; below that it uses the figures pooled over
    /// all hours.
    pub min_weeks: usize,
    /// When an hour-of-week slot has too few weeks, use the figures of the
    /// same hour of every day (when that has `min_weeks` samples) before
    /// the pooled ones. Off by default: issue 9 asks for the pooled
    /// fallback; BENCHMARKS.md measures both.
    pub hour_of_day_fallback: bool,
    /// How far back from `now` the runs of one evaluation go.
    pub window: TimeDelta,
    /// Runs the window must hold for a verdict.
    pub min_samples: usize,
    /// The observed p95 must be above `factor` × the expected p95.
    pub factor: f64,
    /// ... and above the expected p95 + this many milliseconds.
    pub min_delta_ms: f64,
    /// ... and above the expected p95 + `mad_k` × the hour's MAD of p95.
    /// 0 turns this bound off.
    pub mad_k: f64,
    /// ... and at least this many runs of the window must be above that
    /// bound. 1 leaves only the p95 test (which, with 30 runs, already
    /// takes two).
    pub min_slow_runs: usize,
    /// Consecutive evaluations over the bound before an anomaly opens, and
    /// under it before it clears.
    pub sustain: u32,
    /// Daily medians the trend is fitted through (the most recent ones).
    pub trend_days: usize,
    /// Relative rise of the fitted line over the span, at least (0.25 is
    /// 25 %).
    pub trend_rise: f64,
    /// The Mann–Kendall Z the daily medians must reach. 1.645 is the
    /// one-sided 5 % level of the normal approximation; for 7 days it
    /// means S ≥ 13, at least 17 of the 21 pairs of days rising, which
    /// seven days in random order reach 3.5 % of the time (exact count
    /// over the 5,040 orders).
    pub trend_min_z: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            min_history_hours: 24,
            min_hour_count: 10,
            min_weeks: 3,
            hour_of_day_fallback: false,
            window: TimeDelta::minutes(15),
            min_samples: 10,
            factor: 2.0,
            min_delta_ms: 50.0,
            mad_k: 4.0,
            min_slow_runs: 3,
            sustain: 3,
            trend_days: 7,
            trend_rise: 0.25,
            trend_min_z: 1.645,
        }
    }
}
