//! Anomaly-detection benchmark (issue 9): precision, recall, phase accuracy
//! and detection delay of the sustained-deviation detector, and precision
//! and recall of the trend finding, on seeded synthetic histories
//! (`lookout::detect::synth`); then each false-positive control turned off
//! in turn, to show what it buys; then the cost of one `evaluate` call, of
//! `Baseline::learn` over four weeks of hours and of one `trend` call.
//!
//! Run with `cargo bench --bench detect` (2,000 anomaly and 1,200 trend
//! scenarios per configuration, about a minute), or `cargo bench --bench
//! detect -- quick` (200 and 120, seconds). The seeds are fixed, so the
//! figures are the same on every run and machine; only the timings vary.

use std::hint::black_box;
use std::time::Instant;

use lookout::detect::synth::{
    anomaly_kind, anomaly_scenario, scenario_trend, score_scenario, trend_kind, trend_scenario,
    AnomalyKind, AnomalyScore, SynthOptions, TrendKind,
};
use lookout::detect::{trend, Baseline, DetectConfig, Detector, PhaseReference, Sample};

struct Scale {
    anomaly_scenarios: u64,
    trend_scenarios: u64,
    timing_reps: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this binary without --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("detect benchmark: run with `cargo bench --bench detect [-- quick]`");
        return;
    }
    let scale = match args.iter().any(|a| a == "quick") {
        true => Scale {
            anomaly_scenarios: 200,
            trend_scenarios: 120,
            timing_reps: 200,
        },
        false => Scale {
            anomaly_scenarios: 2_000,
            trend_scenarios: 1_200,
            timing_reps: 2_000,
        },
    };
    anomalies(&scale);
    trends(&scale);
    costs(&scale);
}

// ---------------------------------------------------------------- anomalies

/// A score split by the kind of scenario the false alarms came from.
#[derive(Default)]
struct ByKind {
    all: AnomalyScore,
    quiet_alarms: usize,
    peak_alarms: usize,
    volatile_alarms: usize,
    slowdown_alarms: usize,
}

fn score(n: u64, cfg: &DetectConfig, opts: SynthOptions) -> ByKind {
    let mut out = ByKind::default();
    for seed in 0..n {
        let kind = anomaly_kind(seed, opts.magnitude);
        let s = score_scenario(&anomaly_scenario(seed, kind, opts.weeks), cfg);
        match kind {
            AnomalyKind::Quiet => out.quiet_alarms += s.false_alarms,
            AnomalyKind::PeakHour => out.peak_alarms += s.false_alarms,
            AnomalyKind::VolatileHour => out.volatile_alarms += s.false_alarms,
            AnomalyKind::Slowdown { .. } => out.slowdown_alarms += s.false_alarms,
        }
        out.all.add(&s);
    }
    out
}

fn anomalies(scale: &Scale) {
    let n = scale.anomaly_scenarios;
    println!(
        "sustained deviation: {n} scenarios (half a 30-minute slowdown of the total through one \
         phase; a quarter quiet; an eighth over the weekday batch hour; an eighth over the volatile \
         night hour), runs every 30 s for 3 h, evaluated after each run"
    );
    println!(
        "{:<38} {:>9} {:>6} {:>6} {:>7} {:>8} {:>6} {:>5} {:>5} {:>5} {:>5} {:>6} {:>8}",
        "configuration (4 weeks of history)",
        "precision",
        "recall",
        "phase",
        "delay",
        "detected",
        "reopen",
        "FA",
        "quiet",
        "peak",
        "vol",
        "slowdn",
        "FA/1000h"
    );
    let d = DetectConfig::default();
    let four = SynthOptions::default();
    let rows: Vec<(&str, DetectConfig, SynthOptions)> = vec![
        ("default", d, four),
        ("sustain 1", DetectConfig { sustain: 1, ..d }, four),
        (
            "min_slow_runs 1",
            DetectConfig {
                min_slow_runs: 1,
                ..d
            },
            four,
        ),
        (
            "min_slow_runs 1, sustain 1",
            DetectConfig {
                min_slow_runs: 1,
                sustain: 1,
                ..d
            },
            four,
        ),
        (
            "mad_k 0 (no MAD bound)",
            DetectConfig { mad_k: 0.0, ..d },
            four,
        ),
        ("factor 1.5", DetectConfig { factor: 1.5, ..d }, four),
        (
            "factor 1.5, mad_k 0",
            DetectConfig {
                factor: 1.5,
                mad_k: 0.0,
                ..d
            },
            four,
        ),
        (
            "min_delta_ms 0",
            DetectConfig {
                min_delta_ms: 0.0,
                ..d
            },
            four,
        ),
        (
            "pooled baseline only",
            DetectConfig {
                min_weeks: usize::MAX,
                ..d
            },
            four,
        ),
        ("no control but factor", no_controls(d), four),
    ];
    for (name, cfg, opts) in rows {
        print_row(name, &score(n, &cfg, opts));
    }
    println!("young probes (the pooled fallback, and the hour-of-day fallback):");
    let daily = DetectConfig {
        hour_of_day_fallback: true,
        ..d
    };
    for weeks in [1, 2, 3] {
        let opts = SynthOptions { weeks, ..four };
        print_row(&format!("{weeks} week(s) of history"), &score(n, &d, opts));
        print_row(
            &format!("{weeks} week(s), hour_of_day_fallback"),
            &score(n, &daily, opts),
        );
    }
    println!("recall by size of the slowdown (default configuration; factor is 2.0):");
    for magnitude in [1.5, 2.0, 2.5, 3.0, 5.0] {
        let opts = SynthOptions { magnitude, ..four };
        print_row(&format!("total x{magnitude}"), &score(n, &d, opts));
    }
    println!();
}

/// Every false-positive control of the detector off but the factor: one
/// slow evaluation, one slow run, no MAD or absolute bound, the pooled
/// baseline.
fn no_controls(d: DetectConfig) -> DetectConfig {
    DetectConfig {
        sustain: 1,
        min_slow_runs: 1,
        mad_k: 0.0,
        min_delta_ms: 0.0,
        min_weeks: usize::MAX,
        ..d
    }
}

fn print_row(name: &str, s: &ByKind) {
    let a = &s.all;
    println!(
        "{:<38} {:>9.3} {:>6.3} {:>6.3} {:>6.1}m {:>4}/{:<3} {:>6} {:>5} {:>5} {:>5} {:>5} {:>6} {:>8.1}",
        name,
        a.precision(),
        a.recall(),
        a.phase_accuracy(),
        a.mean_delay_minutes(),
        a.detected,
        a.injected,
        a.reopened,
        a.false_alarms,
        s.quiet_alarms,
        s.peak_alarms,
        s.volatile_alarms,
        s.slowdown_alarms,
        a.false_alarms_per_1000_hours()
    );
}

// ---------------------------------------------------------------- trends

#[derive(Default)]
struct TrendRow {
    creeps: usize,
    found: usize,
    flat: usize,
    hour_spike: usize,
    day_spike: usize,
    clean: usize,
}

fn trends(scale: &Scale) {
    let n = scale.trend_scenarios;
    println!(
        "trend: {n} scenarios (half +40 % over the last 7 days; the rest flat, a 6x hour, a 1.8x day), \
         14 daily medians after 4 weeks of hours"
    );
    println!(
        "{:<38} {:>9} {:>6} {:>9} {:>5} {:>5} {:>5}",
        "configuration", "precision", "recall", "found", "flat", "hour", "day"
    );
    let d = DetectConfig::default();
    let rows: Vec<(&str, DetectConfig, bool)> = vec![
        ("default (weekly pattern divided out)", d, true),
        ("raw daily medians", d, false),
        (
            "no Mann-Kendall test",
            DetectConfig {
                trend_min_z: f64::NEG_INFINITY,
                ..d
            },
            true,
        ),
        (
            "raw, no Mann-Kendall test",
            DetectConfig {
                trend_min_z: f64::NEG_INFINITY,
                ..d
            },
            false,
        ),
        (
            "trend_rise 0.15",
            DetectConfig {
                trend_rise: 0.15,
                ..d
            },
            true,
        ),
        (
            "trend_rise 0.15, no Mann-Kendall",
            DetectConfig {
                trend_rise: 0.15,
                trend_min_z: f64::NEG_INFINITY,
                ..d
            },
            true,
        ),
        (
            "trend_min_z 1.96",
            DetectConfig {
                trend_min_z: 1.96,
                ..d
            },
            true,
        ),
    ];
    for (name, cfg, weekly) in rows {
        let r = trend_row(n, &cfg, weekly);
        let precision = ratio(r.found, r.found + r.clean);
        println!(
            "{:<38} {:>9.3} {:>6.3} {:>5}/{:<3} {:>5} {:>5} {:>5}",
            name,
            precision,
            ratio(r.found, r.creeps),
            r.found,
            r.creeps,
            r.flat,
            r.hour_spike,
            r.day_spike
        );
    }
    println!();
}

fn trend_row(n: u64, cfg: &DetectConfig, weekly: bool) -> TrendRow {
    let mut r = TrendRow::default();
    for seed in 0..n {
        let kind = trend_kind(seed);
        let found = usize::from(scenario_trend(&trend_scenario(seed, kind), cfg, weekly).is_some());
        match kind {
            TrendKind::Creep { .. } => {
                r.creeps += 1;
                r.found += found;
            }
            TrendKind::Flat => r.flat += found,
            TrendKind::HourSpike => r.hour_spike += found,
            TrendKind::DaySpike => r.day_spike += found,
        }
        if !matches!(kind, TrendKind::Creep { .. }) {
            r.clean += found;
        }
    }
    r
}

fn ratio(n: usize, d: usize) -> f64 {
    match d {
        0 => 1.0,
        d => n as f64 / d as f64,
    }
}

// ---------------------------------------------------------------- costs

fn costs(scale: &Scale) {
    let cfg = DetectConfig::default();
    let scenario = anomaly_scenario(1, anomaly_kind(1, 3.0), 4);
    let learn_ns = per_call(scale.timing_reps, || {
        black_box(Baseline::learn(black_box(&scenario.hours), &cfg));
    });
    let baseline = Baseline::learn(&scenario.hours, &cfg);
    let evaluate_ns = evaluate_cost(&scenario.runs, &baseline, &cfg, scale.timing_reps);
    let days = trend_scenario(0, TrendKind::Creep { rise: 0.4 }).days;
    let trend_ns = per_call(scale.timing_reps * 10, || {
        black_box(trend(black_box(&days), &cfg));
    });
    println!("costs (release build, one core):");
    println!(
        "  Baseline::learn, {} hours (4 weeks): {:.1} us; baseline {} bytes on the heap",
        scenario.hours.len(),
        learn_ns / 1000.0,
        baseline.heap_bytes()
    );
    println!(
        "  Detector::evaluate, 30-run window:  {evaluate_ns:.0} ns; Detector {} bytes, PhaseReference {} bytes, \
         Sample {} bytes",
        std::mem::size_of::<Detector>(),
        std::mem::size_of::<PhaseReference>(),
        std::mem::size_of::<Sample>()
    );
    println!("  trend, 14 daily medians:            {trend_ns:.0} ns");
}

/// Mean nanoseconds of one `evaluate` call over the scenario's runs, each
/// with its 15-minute window, the detector state carried across calls.
fn evaluate_cost(runs: &[Sample], baseline: &Baseline, cfg: &DetectConfig, reps: usize) -> f64 {
    let windows: Vec<(usize, usize)> = (0..runs.len())
        .map(|i| {
            let now = runs[i].at;
            let from = runs[..=i]
                .iter()
                .position(|s| s.at > now - cfg.window)
                .unwrap_or(i);
            (from, i + 1)
        })
        .collect();
    let mut reference = PhaseReference::new();
    for r in runs.iter().take(60) {
        reference.observe(r);
    }
    let rounds = (reps / 10).max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        let mut detector = Detector::new(*cfg);
        for (i, &(from, to)) in windows.iter().enumerate() {
            let verdict = detector.evaluate(baseline, &runs[from..to], runs[i].at, &reference);
            black_box(verdict);
        }
    }
    started.elapsed().as_nanos() as f64 / (rounds * runs.len()) as f64
}

fn per_call(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let started = Instant::now();
    for _ in 0..reps {
        f();
    }
    started.elapsed().as_nanos() as f64 / reps as f64
}
