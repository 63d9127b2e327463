//! Anomaly detection with dynamic baselines (issue 9), the pure part: each
//! probe's normal latency per hour of the week learned from its hourly
//! rollups ([`baseline`]), the sustained-deviation detector that judges the
//! last minutes of runs against it and names the phase that moved
//! ([`anomaly`]), the slow-creep finding over daily medians ([`mod@trend`]),
//! their knobs ([`DetectConfig`], each a documented false-positive control)
//! and the synthetic histories they are evaluated on ([`synth`]). Nothing
//! here reads a clock, the database or the network, or decides who is
//! told: callers pass `now` and the data, and turn verdicts into incidents.

mod config;
mod stats;

pub mod anomaly;
pub mod baseline;
pub mod synth;
pub mod trend;

pub use anomaly::{Anomaly, Detector, PhaseReference, PhaseShift, Sample, Verdict, PHASES};
pub use baseline::{Baseline, Expected, HourStat};
pub use config::DetectConfig;
pub use trend::{trend, weekly_adjusted, Finding};
