//! The slow-creep finding: a Theil–Sen line through a probe's last
//! `trend_days` daily medians, reported only when its rise over the span is
//! large in relative and absolute terms and the Mann–Kendall statistic says
//! the days rise in order rather than by one bad day. Both estimators use
//! ranks or medians of pairs, so a one-off spike neither tilts the line nor
//! makes the rise look monotone. A finding is information for a report, not
//! an incident: this module never alerts, reads no clock and stores nothing.

use chrono::{Datelike, NaiveDate, Weekday};

use super::stats::median;
use super::{Baseline, DetectConfig};

/// A slow upward trend over days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    /// The Theil–Sen slope: the median of the slopes between every pair of
    /// days, in milliseconds per day.
    pub slope_ms_per_day: f64,
    /// The fitted latency at the start of the first day of the span.
    pub from_ms: f64,
    /// The fitted latency at the end of the last day of the span.
    pub to_ms: f64,
    /// Daily medians the line was fitted through.
    pub days: usize,
    /// The first day of the span.
    pub since: NaiveDate,
}

impl Finding {
    /// `to_ms / from_ms - 1`: 0.4 for a 40 % rise.
    pub fn relative_rise(&self) -> f64 {
        self.to_ms / self.from_ms - 1.0
    }
}

/// The trend through the last `cfg.trend_days` of `days` (one daily p50 in
/// milliseconds per UTC day, in any order; a day given twice counts once,
/// the last given; missing days are allowed and spaced by their dates), or
/// `None` when there are fewer days than that or the rise is too small,
/// too small in milliseconds, or not monotone enough (see
/// [`DetectConfig`]).
pub fn trend(days: &[(NaiveDate, f64)], cfg: &DetectConfig) -> Option<Finding> {
    let span = last_days(days, cfg.trend_days.max(3))?;
    let first = span.first()?.0;
    let xy: Vec<(f64, f64)> = span
        .iter()
        .map(|(d, y)| ((*d - first).num_days() as f64, *y))
        .collect();
    let slope = theil_sen_slope(&xy)?;
    let intercept = median(&xy.iter().map(|(x, y)| y - slope * x).collect::<Vec<_>>())?;
    // Each daily median stands for the middle of its day, so the line is
    // read from the start of the first day to the end of the last: seven
    // daily medians span seven days, and a creep of 40 % over them reads
    // as 40 %, not 6/7 of it.
    let last_x = xy.last()?.0;
    let finding = Finding {
        slope_ms_per_day: slope,
        from_ms: intercept - slope * 0.5,
        to_ms: intercept + slope * (last_x + 0.5),
        days: xy.len(),
        since: first,
    };
    let rise = finding.to_ms - finding.from_ms;
    let big_enough = finding.from_ms > 0.0
        && finding.relative_rise() >= cfg.trend_rise
        && rise >= cfg.min_delta_ms;
    (big_enough && mann_kendall_z(&xy) >= cfg.trend_min_z).then_some(finding)
}

/// `days` with the weekly pattern the baseline learned divided out: each
/// day's value × (the typical day's p50 / its weekday's typical p50), so
/// that a Monday after a quiet weekend is not read as a rise. Seven daily
/// medians hold at most one weekend, which alone can tilt a line by 10 %
/// or more. Unchanged while the baseline is learning.
pub fn weekly_adjusted(days: &[(NaiveDate, f64)], baseline: &Baseline) -> Vec<(NaiveDate, f64)> {
    let week = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    let typical: Vec<f64> = week
        .iter()
        .filter_map(|w| baseline.typical_p50(*w))
        .collect();
    let Some(overall) = median(&typical) else {
        return days.to_vec();
    };
    let adjust = |d: NaiveDate, v: f64| match baseline.typical_p50(d.weekday()) {
        Some(t) if t > 0.0 => v * overall / t,
        _ => v,
    };
    days.iter().map(|(d, v)| (*d, adjust(*d, *v))).collect()
}

/// The last `n` usable days in date order, or `None` with fewer.
fn last_days(days: &[(NaiveDate, f64)], n: usize) -> Option<Vec<(NaiveDate, f64)>> {
    let mut usable: Vec<(NaiveDate, f64)> = days
        .iter()
        .copied()
        .filter(|(_, y)| y.is_finite() && *y >= 0.0)
        .collect();
    // A stable sort keeps the order given within a day; the last one wins.
    usable.sort_by_key(|(d, _)| *d);
    usable.reverse();
    usable.dedup_by_key(|(d, _)| *d);
    usable.truncate(n);
    usable.reverse();
    (usable.len() >= n).then_some(usable)
}

/// The median of the slopes between every pair of points with distinct x.
fn theil_sen_slope(xy: &[(f64, f64)]) -> Option<f64> {
    let slopes: Vec<f64> = pairs(xy)
        .filter(|((x1, _), (x2, _))| x2 > x1)
        .map(|((x1, y1), (x2, y2))| (y2 - y1) / (x2 - x1))
        .collect();
    median(&slopes)
}

/// The Mann–Kendall Z: S (rising pairs minus falling pairs, in x order)
/// over its standard deviation under random order, with the usual
/// continuity correction. Ties count as neither and are not corrected
/// for (daily medians of real latencies rarely tie).
fn mann_kendall_z(xy: &[(f64, f64)]) -> f64 {
    let s: f64 = pairs(xy).map(|((_, y1), (_, y2))| sign(y2 - y1)).sum();
    let n = xy.len() as f64;
    let sd = (n * (n - 1.0) * (2.0 * n + 5.0) / 18.0).sqrt();
    match s {
        s if s > 0.0 => (s - 1.0) / sd,
        s if s < 0.0 => (s + 1.0) / sd,
        _ => 0.0,
    }
}

fn pairs(xy: &[(f64, f64)]) -> impl Iterator<Item = ((f64, f64), (f64, f64))> + '_ {
    xy.iter()
        .enumerate()
        .flat_map(move |(i, a)| xy.iter().skip(i + 1).map(move |b| (*a, *b)))
}

fn sign(v: f64) -> f64 {
    match v {
        v if v > 0.0 => 1.0,
        v if v < 0.0 => -1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(i: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + chrono::TimeDelta::days(i)
    }

    fn series(values: &[f64]) -> Vec<(NaiveDate, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (day(i as i64), *v))
            .collect()
    }

    #[test]
    fn a_steady_creep_is_found() {
        // 200 ms rising 6 % a day, with a little noise.
        let v: Vec<f64> = (0..10)
            .map(|i| 200.0 * (1.0 + 0.06 * i as f64) + [3.0, -2.0, 1.0][i % 3])
            .collect();
        let f = trend(&series(&v), &DetectConfig::default()).expect("a finding");
        assert_eq!(f.days, 7);
        assert_eq!(f.since, day(3));
        assert!((f.slope_ms_per_day - 12.0).abs() < 2.0, "{f:?}");
        assert!(
            f.relative_rise() > 0.25 && f.to_ms - f.from_ms > 50.0,
            "{f:?}"
        );
    }

    #[test]
    fn flat_noise_and_one_bad_day_are_not_trends() {
        let cfg = DetectConfig::default();
        let flat = [200.0, 210.0, 195.0, 205.0, 198.0, 207.0, 202.0];
        assert_eq!(trend(&series(&flat), &cfg), None);
        // A bad last day: the line stays flat.
        let spike_last = [200.0, 210.0, 195.0, 205.0, 198.0, 207.0, 900.0];
        assert_eq!(trend(&series(&spike_last), &cfg), None);
        let spike_mid = [200.0, 210.0, 195.0, 900.0, 198.0, 207.0, 202.0];
        assert_eq!(trend(&series(&spike_mid), &cfg), None);
    }

    #[test]
    fn a_rise_that_is_not_monotone_is_not_a_trend() {
        // A fitted rise of 55 %, but back and forth: the pairs of days do
        // not agree (S = 8, 14.5 of 21 pairs rising).
        let v = [200.0, 200.0, 320.0, 190.0, 330.0, 340.0, 310.0];
        let cfg = DetectConfig::default();
        assert!(mann_kendall_z(&series_xy(&v)) < cfg.trend_min_z);
        assert_eq!(trend(&series(&v), &cfg), None);
        let loose = DetectConfig {
            trend_min_z: f64::NEG_INFINITY,
            ..cfg
        };
        assert!(trend(&series(&v), &loose).is_some());
    }

    #[test]
    fn small_rises_are_not_trends() {
        let cfg = DetectConfig::default();
        // +20 %: under trend_rise.
        let v: Vec<f64> = (0..7)
            .map(|i| 300.0 * (1.0 + 0.2 * i as f64 / 6.0))
            .collect();
        assert_eq!(trend(&series(&v), &cfg), None);
        // +100 % of 20 ms: under min_delta_ms.
        let v: Vec<f64> = (0..7).map(|i| 20.0 * (1.0 + i as f64 / 6.0)).collect();
        assert_eq!(trend(&series(&v), &cfg), None);
    }

    #[test]
    fn too_few_days_missing_days_and_duplicates() {
        let cfg = DetectConfig::default();
        let rising = |i: i64| 100.0 + 30.0 * i as f64;
        let six: Vec<_> = (0..6).map(|i| (day(i), rising(i))).collect();
        assert_eq!(trend(&six, &cfg), None);
        // Seven days out of ten, given backwards, one of them twice (the
        // later copy wins): spaced by their dates.
        let mut gappy: Vec<_> = [0, 1, 3, 5, 6, 8, 9]
            .iter()
            .map(|&i| (day(i), rising(i)))
            .collect();
        gappy.insert(2, (day(9), 5.0));
        gappy.reverse();
        gappy.push((day(9), rising(9)));
        let f = trend(&gappy, &cfg).expect("a finding");
        assert!((f.slope_ms_per_day - 30.0).abs() < 1e-9, "{f:?}");
        assert_eq!(f.since, day(0));
        assert!((f.to_ms - (rising(9) + 15.0)).abs() < 1e-9);
        assert!((f.from_ms - (rising(0) - 15.0)).abs() < 1e-9);
    }

    #[test]
    fn mann_kendall_matches_the_table_for_seven_days() {
        // Monotone: S = 21, Z = 20 / sqrt(7·6·19/18) ≈ 3.00.
        let up: Vec<f64> = (0..7).map(f64::from).collect();
        assert!((mann_kendall_z(&series_xy(&up)) - 3.004).abs() < 0.01);
        // S = 13 (17 rising pairs) is the least that passes 1.645;
        // S = 11 is not.
        let s13 = [1.0, 0.0, 3.0, 2.0, 6.0, 4.0, 5.0];
        let s11 = [1.0, 0.0, 3.0, 2.0, 6.0, 5.0, 4.0];
        let z13 = mann_kendall_z(&series_xy(&s13));
        let z11 = mann_kendall_z(&series_xy(&s11));
        assert!((z13 - 12.0 / 6.658).abs() < 0.01, "{z13}");
        let min_z = DetectConfig::default().trend_min_z;
        assert!(z13 >= min_z && z11 < min_z, "{z13} {z11}");
    }

    fn series_xy(values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, *v))
            .collect()
    }
}
