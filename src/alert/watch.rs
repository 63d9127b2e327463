//! The alerting task's anomaly watch: for every probe with
//! `alert.degraded.anomaly`, the recent runs (the detector's window), the
//! per-phase reference, the [`Detector`] and the probe's learned
//! [`Baseline`], relearned from the hourly rollups once an hour, when the
//! slow-trend finding is recomputed from daily medians too.
//!
//! It turns the detector's verdicts into changes the engine acts on (a
//! deviation opened, still open with new figures, cleared) and describes
//! them in words that name the phase that moved. Probes without the
//! setting cost nothing here.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, NaiveDate, TimeDelta, Utc};

use super::Engine;
use crate::detect::{
    trend, weekly_adjusted, Anomaly, Baseline, DetectConfig, Detector, HourStat, PhaseReference,
    Sample,
};
use crate::duration::human;
use crate::result::ProbeResult;
use crate::store::{Store, StoreError};

/// How often a probe's baseline and trend are relearned.
pub const RELEARN: Duration = Duration::from_secs(3600);
/// How much history a baseline is learned from.
const HISTORY: TimeDelta = TimeDelta::weeks(4);

/// What an evaluation changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A deviation is open (new, or with new figures): its words and start.
    Open {
        reason: String,
        since: DateTime<Utc>,
    },
    /// The deviation cleared.
    Cleared,
}

struct Watch {
    cfg: DetectConfig,
    detector: Detector,
    reference: PhaseReference,
    window: VecDeque<Sample>,
    baseline: Baseline,
    loaded: Option<Instant>,
    /// The last reason reported, so unchanged figures are not re-sent.
    said: Option<String>,
}

impl Watch {
    fn new(cfg: DetectConfig) -> Watch {
        Watch {
            cfg,
            detector: Detector::new(cfg),
            reference: PhaseReference::new(),
            window: VecDeque::new(),
            baseline: Baseline::learning(),
            loaded: None,
            said: None,
        }
    }
}

/// Every watched probe, by name.
#[derive(Default)]
pub struct Watches {
    probes: HashMap<String, Watch>,
}

impl Watches {
    /// Follows the engine's configuration: probes that keep the same
    /// settings keep their watch, others start learning afresh.
    pub fn configure(&mut self, engine: &Engine) {
        let mut next = HashMap::new();
        for (name, _) in engine.states() {
            let Some(cfg) = engine
                .alert_spec(name)
                .and_then(|a| a.degraded.as_ref())
                .and_then(|d| d.anomaly.as_ref())
                .map(|a| a.detect)
            else {
                continue;
            };
            let watch = match self.probes.remove(name) {
                Some(w) if w.cfg == cfg => w,
                _ => Watch::new(cfg),
            };
            next.insert(name.to_string(), watch);
        }
        self.probes = next;
    }

    /// Takes one result of a watched probe; returns what changed.
    pub fn observe(&mut self, r: &ProbeResult) -> Option<Change> {
        let w = self.probes.get_mut(&r.probe)?;
        let sample = Sample::from_result(r)?;
        let now = sample.at;
        w.window.push_back(sample);
        let floor = now - w.cfg.window;
        while w.window.front().is_some_and(|s| s.at <= floor) {
            w.window.pop_front();
        }
        w.detector.learn_phases(&mut w.reference, &sample);
        let samples = w.window.make_contiguous();
        w.detector.evaluate(&w.baseline, samples, now, &w.reference);
        match w.detector.open() {
            Some(a) => {
                let reason = describe(a, w.cfg.window);
                if w.said.as_deref() == Some(reason.as_str()) {
                    return None;
                }
                w.said = Some(reason.clone());
                Some(Change::Open {
                    reason,
                    since: a.since,
                })
            }
            None if w.said.take().is_some() => Some(Change::Cleared),
            None => None,
        }
    }

    /// Up to `max` watched probes whose baseline is due to be (re)learned.
    pub fn due(&self, max: usize) -> Vec<String> {
        self.probes
            .iter()
            .filter(|(_, w)| w.loaded.is_none_or(|t| t.elapsed() >= RELEARN))
            .take(max)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Takes what [`load`] read for `name`; returns the trend finding in
    /// words (or `None` when there is none).
    pub fn learned(&mut self, name: &str, history: &History) -> Option<String> {
        let w = self.probes.get_mut(name)?;
        w.baseline = Baseline::learn(&history.hours, &w.cfg);
        w.loaded = Some(Instant::now());
        let f = trend(&weekly_adjusted(&history.days, &w.baseline), &w.cfg)?;
        Some(format!(
            "latency creeping up: p50 from {} to {} over {} days (+{}/day) since {}",
            ms(f.from_ms),
            ms(f.to_ms),
            f.days,
            ms(f.slope_ms_per_day),
            f.since
        ))
    }

    /// Marks `name`'s baseline as just read, without changing it (a read
    /// that failed is retried after [`RELEARN`], not every tick).
    pub fn postpone(&mut self, name: &str) {
        if let Some(w) = self.probes.get_mut(name) {
            w.loaded = Some(Instant::now());
        }
    }
}

/// A probe's history as the detector learns from it.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub hours: Vec<HourStat>,
    pub days: Vec<(NaiveDate, f64)>,
}

/// Reads `name`'s hourly figures over the last four weeks and its daily
/// medians over the last eight days from the rollups.
pub fn load(store: &Store, name: &str, now: DateTime<Utc>) -> Result<History, StoreError> {
    let hour = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let hours = store
        .latency_series(name, hour - HISTORY, hour, Duration::from_secs(3600))?
        .into_iter()
        .filter_map(|p| {
            Some(HourStat {
                start: p.start,
                count: p.count,
                p50_ms: p.p50?.as_secs_f64() * 1000.0,
                p95_ms: p.p95?.as_secs_f64() * 1000.0,
            })
        })
        .collect();
    let day = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
    let days = store
        .latency_series(
            name,
            day - TimeDelta::days(8),
            day,
            Duration::from_secs(86_400),
        )?
        .into_iter()
        .filter_map(|p| Some((p.start.date_naive(), p.p50?.as_secs_f64() * 1000.0)))
        .collect();
    Ok(History { hours, days })
}

fn ms(v: f64) -> String {
    human(Duration::from_secs_f64(v.max(0.0) / 1000.0))
}

/// `p95 620ms over the last 15m, 3.1× the usual 200ms for this hour of the
/// week; first byte 180ms → 590ms`.
pub fn describe(a: &Anomaly, window: TimeDelta) -> String {
    let mut s = format!(
        "p95 {} over the last {}, {:.1}× the usual {} for this hour of the week",
        ms(a.observed_p95_ms),
        human(window.to_std().unwrap_or_default()),
        a.ratio,
        ms(a.expected_p95_ms)
    );
    if let Some(p) = &a.phase {
        s.push_str(&format!(
            "; {} {} → {}",
            p.phase.as_str().replace('_', " "),
            ms(p.normal_ms),
            ms(p.now_ms)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::PhaseShift;
    use crate::result::Phase;

    #[test]
    fn an_anomaly_reads_as_a_sentence_naming_the_phase() {
        let mut a = Anomaly {
            since: Utc::now(),
            observed_p95_ms: 620.0,
            expected_p95_ms: 200.0,
            ratio: 3.1,
            phase: Some(PhaseShift {
                phase: Phase::FirstByte,
                normal_ms: 180.0,
                now_ms: 590.0,
            }),
        };
        assert_eq!(
            describe(&a, TimeDelta::minutes(15)),
            "p95 620ms over the last 15m, 3.1× the usual 200ms for this hour of the week; first byte 180ms → 590ms"
        );
        a.phase = None;
        assert!(describe(&a, TimeDelta::minutes(15)).ends_with("for this hour of the week"));
    }
}
