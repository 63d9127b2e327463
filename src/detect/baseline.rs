//! A probe's normal latency for each of the 168 hours of the week (UTC),
//! learned from its hourly rollups with robust statistics: the median and
//! the MAD of each hour's p95 (and the median of its p50) over past weeks.
//! An hour-of-week with too little history falls back to the figures
//! pooled over all hours, and a probe with under a day of usable history
//! has no baseline at all, so nothing is judged while it learns. Learning
//! is a pure function of the hours it is given: it reads no database and
//! no clock, and it keeps only a few bytes per hour.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};

use super::stats::{median, median_mad};
use super::DetectConfig;

/// Hours in a week: the number of slots a baseline keeps.
pub const HOURS_PER_WEEK: usize = 168;

/// One hour of a probe's history, as the hourly rollups give it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourStat {
    /// The start of the hour (UTC).
    pub start: DateTime<Utc>,
    /// Runs that hour.
    pub count: u64,
    /// Median total latency of those runs, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile total latency of those runs, in milliseconds.
    pub p95_ms: f64,
}

/// What is normal at one moment, as [`Baseline::expected`] gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    /// The median over past weeks of this hour's p50.
    pub p50_ms: f64,
    /// The median over past weeks of this hour's p95.
    pub p95_ms: f64,
    /// The median absolute deviation of this hour's p95 over past weeks
    /// (raw, not scaled to a σ).
    pub mad_p95_ms: f64,
    /// How many past weeks this hour was learned from; 0 when it had too
    /// few and the figures are the ones pooled over all hours.
    pub weeks: u32,
}

/// One hour-of-week slot. `f32` is plenty for milliseconds and halves the
/// footprint: each probe holds 168 of these, 16 bytes each.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    p50_ms: f32,
    p95_ms: f32,
    mad_p95_ms: f32,
    weeks: u32,
}

impl Slot {
    /// The slot's figures from its samples, or `None` with no usable ones.
    fn learn(p50s: &[f64], p95s: &[f64]) -> Option<Slot> {
        let (p95, mad) = median_mad(p95s)?;
        Some(Slot {
            p50_ms: median(p50s)? as f32,
            p95_ms: p95 as f32,
            mad_p95_ms: mad as f32,
            weeks: u32::try_from(p95s.len()).unwrap_or(u32::MAX),
        })
    }

    /// The slot's figures from the hours of `group`.
    fn learn_from<'a>(group: impl Iterator<Item = &'a HourStat>) -> Option<Slot> {
        let (p50s, p95s): (Vec<f64>, Vec<f64>) = group.map(|h| (h.p50_ms, h.p95_ms)).unzip();
        Slot::learn(&p50s, &p95s)
    }

    fn expected(self) -> Expected {
        Expected {
            p50_ms: f64::from(self.p50_ms),
            p95_ms: f64::from(self.p95_ms),
            mad_p95_ms: f64::from(self.mad_p95_ms),
            weeks: self.weeks,
        }
    }
}

/// A probe's learned normal latency per hour of the week.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// One entry per hour of the week (Monday 00:00 UTC first), a copy of
    /// the pooled figures (`weeks` = 0) where the hour has too little
    /// history of its own. Empty while learning.
    slots: Box<[Slot]>,
}

impl Baseline {
    /// Learns from `hours`, in any order. Hours with fewer than
    /// `cfg.min_hour_count` runs or a non-finite or negative figure are
    /// ignored; an hour-of-week slot with fewer than `cfg.min_weeks` usable
    /// hours uses the pooled figures (or, with
    /// `cfg.hour_of_day_fallback`, those of the same hour of every day
    /// when it has that many); with fewer than `cfg.min_history_hours`
    /// usable hours in all, the baseline is empty. Pass the weeks you want
    /// learned (four to eight): every hour given counts the same.
    pub fn learn(hours: &[HourStat], cfg: &DetectConfig) -> Baseline {
        let usable: Vec<&HourStat> = hours.iter().filter(|h| is_usable(h, cfg)).collect();
        if usable.len() < cfg.min_history_hours.max(1) {
            return Baseline::learning();
        }
        let Some(pooled) = Slot::learn_from(usable.iter().copied()) else {
            return Baseline::learning();
        };
        let pooled = Slot { weeks: 0, ..pooled };
        let enough = |group: &Vec<&HourStat>| group.len() >= cfg.min_weeks.max(1);
        let by_day_hour = group_by(&usable, 24, |h| h.start.hour() as usize);
        let fallback: Vec<Slot> = by_day_hour
            .iter()
            .map(|group| match cfg.hour_of_day_fallback && enough(group) {
                true => Slot::learn_from(group.iter().copied())
                    .map_or(pooled, |s| Slot { weeks: 0, ..s }),
                false => pooled,
            })
            .collect();
        let slots = group_by(&usable, HOURS_PER_WEEK, |h| hour_of_week(h.start))
            .iter()
            .enumerate()
            .map(|(i, group)| {
                let fallback = fallback.get(i % 24).copied().unwrap_or(pooled);
                match enough(group) {
                    true => Slot::learn_from(group.iter().copied()).unwrap_or(fallback),
                    false => fallback,
                }
            })
            .collect();
        Baseline { slots }
    }

    /// A baseline that knows nothing yet: [`Baseline::expected`] is always
    /// `None`.
    pub fn learning() -> Baseline {
        Baseline {
            slots: Box::default(),
        }
    }

    /// What is normal at `at` (its hour of the week, UTC), or `None` while
    /// the baseline is still learning.
    pub fn expected(&self, at: DateTime<Utc>) -> Option<Expected> {
        self.slots.get(hour_of_week(at)).map(|s| s.expected())
    }

    /// The median over the 24 hours of `weekday` of their expected p50: how
    /// slow that day of the week typically is. `None` while learning.
    pub fn typical_p50(&self, weekday: Weekday) -> Option<f64> {
        let first = weekday.num_days_from_monday() as usize * 24;
        let day = self.slots.get(first..first + 24)?;
        median(&day.iter().map(|s| f64::from(s.p50_ms)).collect::<Vec<_>>())
    }

    /// True once there is enough history for [`Baseline::expected`] to
    /// answer.
    pub fn is_ready(&self) -> bool {
        !self.slots.is_empty()
    }

    /// Hour-of-week slots learned from their own history (the rest use the
    /// pooled figures).
    pub fn own_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.weeks > 0).count()
    }

    /// Bytes this baseline holds on the heap (what a probe pays for it).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }
}

/// `hours` sorted into `n` groups by `key` (keys at or above `n` dropped).
fn group_by<'a>(
    hours: &[&'a HourStat],
    n: usize,
    key: impl Fn(&HourStat) -> usize,
) -> Vec<Vec<&'a HourStat>> {
    let mut groups = vec![Vec::new(); n];
    for h in hours {
        if let Some(g) = groups.get_mut(key(h)) {
            g.push(*h);
        }
    }
    groups
}

fn is_usable(h: &HourStat, cfg: &DetectConfig) -> bool {
    let sane = |v: f64| v.is_finite() && v >= 0.0;
    h.count >= cfg.min_hour_count && sane(h.p50_ms) && sane(h.p95_ms)
}

/// 0 for Monday 00:00–00:59 UTC, up to 167 for Sunday 23:00–23:59.
pub fn hour_of_week(at: DateTime<Utc>) -> usize {
    at.weekday().num_days_from_monday() as usize * 24 + at.hour() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    /// Monday 2026-01-05 00:00 UTC.
    fn monday() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
    }

    /// `weeks` weeks of hours ending at `monday()`, every hour at `p95`
    /// except those `slow` picks, at 3 × `p95`.
    fn weeks_of(weeks: i64, p95: f64, slow: impl Fn(DateTime<Utc>) -> bool) -> Vec<HourStat> {
        let start = monday() - TimeDelta::weeks(weeks);
        (0..weeks * 168)
            .map(|i| {
                let at = start + TimeDelta::hours(i);
                let f = if slow(at) { 3.0 } else { 1.0 };
                HourStat {
                    start: at,
                    count: 120,
                    p50_ms: p95 / 2.0 * f,
                    p95_ms: p95 * f + (i % 5) as f64,
                }
            })
            .collect()
    }

    #[test]
    fn hour_of_week_starts_on_monday_utc() {
        assert_eq!(hour_of_week(monday()), 0);
        assert_eq!(hour_of_week(monday() + TimeDelta::hours(30)), 30);
        assert_eq!(hour_of_week(monday() - TimeDelta::hours(1)), 167);
    }

    #[test]
    fn each_hour_of_the_week_learns_its_own_level() {
        // Tuesdays 09:00 are slow every week.
        let hours = weeks_of(4, 100.0, |at| {
            at.weekday().num_days_from_monday() == 1 && at.hour() == 9
        });
        let b = Baseline::learn(&hours, &DetectConfig::default());
        assert_eq!(b.own_slots(), 168);
        let tuesday_nine = monday() + TimeDelta::hours(24 + 9) + TimeDelta::minutes(40);
        let slow = b.expected(tuesday_nine).unwrap();
        assert!((slow.p95_ms - 300.0).abs() < 5.0, "{slow:?}");
        assert_eq!(slow.weeks, 4);
        let other = b.expected(tuesday_nine + TimeDelta::hours(1)).unwrap();
        assert!((other.p95_ms - 100.0).abs() < 5.0, "{other:?}");
        assert!(other.mad_p95_ms <= 2.0);
    }

    #[test]
    fn one_bad_week_does_not_move_the_median() {
        // Every hour of the last week was 3× slower.
        let cut = monday() - TimeDelta::weeks(1);
        let hours = weeks_of(4, 100.0, |at| at >= cut);
        let b = Baseline::learn(&hours, &DetectConfig::default());
        let e = b.expected(monday() + TimeDelta::hours(50)).unwrap();
        assert!(e.p95_ms < 110.0, "{e:?}");
    }

    #[test]
    fn too_few_weeks_fall_back_to_the_pooled_figures() {
        let hours = weeks_of(2, 100.0, |_| false);
        let b = Baseline::learn(&hours, &DetectConfig::default());
        assert!(b.is_ready());
        assert_eq!(b.own_slots(), 0);
        let e = b.expected(monday()).unwrap();
        assert_eq!(e.weeks, 0);
        assert!((e.p95_ms - 102.0).abs() < 1.0, "{e:?}");
        assert!(e.mad_p95_ms > 0.0);
    }

    #[test]
    fn with_the_hour_of_day_fallback_a_young_baseline_knows_the_daily_peak() {
        // Five days of history, 09:00 slow every day.
        let hours: Vec<HourStat> = weeks_of(1, 100.0, |at| at.hour() == 9)
            .into_iter()
            .skip(48)
            .collect();
        let nine = monday() + TimeDelta::hours(9);
        let pooled = Baseline::learn(&hours, &DetectConfig::default());
        assert!(pooled.expected(nine).unwrap().p95_ms < 110.0);
        let cfg = DetectConfig {
            hour_of_day_fallback: true,
            ..DetectConfig::default()
        };
        let daily = Baseline::learn(&hours, &cfg);
        let e = daily.expected(nine).unwrap();
        assert!((e.p95_ms - 300.0).abs() < 5.0, "{e:?}");
        assert_eq!(e.weeks, 0);
        assert!(daily.expected(nine + TimeDelta::hours(1)).unwrap().p95_ms < 110.0);
    }

    #[test]
    fn hours_with_few_runs_are_ignored() {
        let mut hours = weeks_of(4, 100.0, |_| false);
        // Every Wednesday 03:00 holds two runs, one of them very slow.
        for h in hours
            .iter_mut()
            .filter(|h| hour_of_week(h.start) == 2 * 24 + 3)
        {
            h.count = 2;
            h.p95_ms = 5_000.0;
        }
        hours.push(HourStat {
            start: monday(),
            count: 100,
            p50_ms: f64::NAN,
            p95_ms: 1.0,
        });
        let b = Baseline::learn(&hours, &DetectConfig::default());
        assert_eq!(b.own_slots(), 167);
        let e = b.expected(monday() + TimeDelta::hours(2 * 24 + 3)).unwrap();
        assert_eq!(e.weeks, 0);
        assert!(e.p95_ms < 110.0, "{e:?}");
    }

    #[test]
    fn under_a_day_of_history_there_is_no_baseline() {
        let hours: Vec<HourStat> = weeks_of(1, 100.0, |_| false).into_iter().take(23).collect();
        let b = Baseline::learn(&hours, &DetectConfig::default());
        assert!(!b.is_ready());
        assert_eq!(b.expected(monday()), None);
        assert_eq!(
            Baseline::learn(&[], &DetectConfig::default()).expected(monday()),
            None
        );
    }
}
