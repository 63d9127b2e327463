//! A probe's figures split by the location its runs ran in, for probes
//! run by several instances (`location`). Rollups are per probe, across
//! locations; the split comes from the raw rows, so it covers windows
//! within `storage.retention.raw`.

use chrono::{DateTime, Utc};

use super::db::args;
use super::sketch::Sketch;
use super::{codec, Store, StoreError, WindowStats};

/// One location's runs of a probe over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationStats {
    /// `None` for runs of an instance without a location.
    pub location: Option<String>,
    pub stats: WindowStats,
    /// When its latest run in the window started, and whether it passed.
    pub last_at: Option<DateTime<Utc>>,
    pub last_success: Option<bool>,
}

impl Store {
    /// `probe`'s runs that started in `[since, until)`, per location
    /// (sorted by name, no location first): count, failures, uptime,
    /// min/max/mean and nearest-rank percentiles (the same sketch as the
    /// rollups), and the latest run.
    pub fn stats_by_location(
        &self,
        probe: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<LocationStats>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT r.location, r.duration_us, r.success, r.started_at \
                 FROM results r JOIN probes p ON p.id = r.probe_id \
                 WHERE p.name = ?1 AND r.started_at >= ?2 AND r.started_at < ?3 \
                 ORDER BY r.location IS NOT NULL, r.location, r.started_at",
                args![probe, since.timestamp_millis(), until.timestamp_millis()],
                |r| {
                    Ok((
                        r.get::<Option<String>>(0)?,
                        r.get::<i64>(1)?,
                        r.get::<bool>(2)?,
                        r.get::<i64>(3)?,
                    ))
                },
            )
            .map_err(|e| self.err(e))?;
        let mut out: Vec<(LocationStats, Sketch, i64)> = Vec::new();
        for (location, us, success, started) in rows {
            if out.last().is_none_or(|(l, _, _)| l.location != location) {
                out.push((
                    LocationStats {
                        location,
                        stats: WindowStats::default(),
                        last_at: None,
                        last_success: None,
                    },
                    Sketch::new(),
                    0,
                ));
            }
            let Some((l, sketch, sum)) = out.last_mut() else {
                continue;
            };
            let d = codec::from_micros(us);
            let s = &mut l.stats;
            s.count += 1;
            s.failures += u64::from(!success);
            s.min = Some(s.min.map_or(d, |m| m.min(d)));
            s.max = Some(s.max.map_or(d, |m| m.max(d)));
            *sum += us;
            sketch.add(u64::try_from(us).unwrap_or(0));
            l.last_at = DateTime::from_timestamp_millis(started);
            l.last_success = Some(success);
        }
        Ok(out
            .into_iter()
            .map(|(mut l, sketch, sum)| {
                let s = &mut l.stats;
                if s.count > 0 {
                    s.uptime = Some((s.count - s.failures) as f64 / s.count as f64);
                    s.mean = Some(codec::from_micros(sum / s.count as i64));
                    let q = |p: f64| {
                        sketch.quantile(p).map(|us| {
                            let d = std::time::Duration::from_secs_f64(us.max(0.0) / 1e6);
                            d.clamp(s.min.unwrap_or(d), s.max.unwrap_or(d))
                        })
                    };
                    s.p50 = q(0.50);
                    s.p95 = q(0.95);
                    s.p99 = q(0.99);
                }
                l
            })
            .collect())
    }
}
