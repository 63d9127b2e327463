//! Aggregates over windows of history: latency series for charts and
//! uptime of every probe at once. (Interim implementation over the raw
//! rows; the per-minute/per-hour rollups replace it.)

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{codec, Store, StoreError};

/// One step of a latency series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Start of the step.
    pub start: DateTime<Utc>,
    pub count: u64,
    pub failures: u64,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
}

/// Run and failure counts of one probe over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub count: u64,
    pub failures: u64,
}

impl Counts {
    /// Fraction of runs that succeeded; `None` without runs.
    pub fn uptime(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.count - self.failures) as f64 / self.count as f64)
    }
}

impl Store {
    /// `probe`'s latency over `[since, until)` in steps of `step`, oldest
    /// first; steps without runs are included with a count of 0.
    pub fn latency_series(
        &self,
        probe: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
        let (from, to) = (since.timestamp_millis(), until.timestamp_millis());
        let n = usize::try_from(((to - from).max(0) + step_ms - 1) / step_ms).unwrap_or(0);
        let mut buckets: Vec<(Vec<i64>, u64)> = vec![(Vec::new(), 0); n];
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.started_at, r.duration_us, r.success FROM results r \
                 JOIN probes p ON p.id = r.probe_id \
                 WHERE p.name = ?1 AND r.started_at >= ?2 AND r.started_at < ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![probe, from, to], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, bool>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (at, us, ok) = row.map_err(|e| self.err(e))?;
            if let Some(b) = usize::try_from((at - from) / step_ms)
                .ok()
                .and_then(|i| buckets.get_mut(i))
            {
                b.0.push(us);
                if !ok {
                    b.1 += 1;
                }
            }
        }
        Ok(buckets
            .into_iter()
            .enumerate()
            .map(|(i, (mut d, failures))| {
                d.sort_unstable();
                let pct = |p: usize| {
                    (!d.is_empty())
                        .then(|| codec::from_micros(d[(p * d.len()).div_ceil(100).max(1) - 1]))
                };
                SeriesPoint {
                    start: since + chrono::TimeDelta::milliseconds(i as i64 * step_ms),
                    count: d.len() as u64,
                    failures,
                    p50: pct(50),
                    p95: pct(95),
                }
            })
            .collect())
    }

    /// Run and failure counts of every probe with history over
    /// `[since, until)`, by probe name.
    pub fn counts_all(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HashMap<String, Counts>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.name, count(*), sum(1 - r.success) FROM results r \
                 JOIN probes p ON p.id = r.probe_id \
                 WHERE r.started_at >= ?1 AND r.started_at < ?2 GROUP BY p.name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![since.timestamp_millis(), until.timestamp_millis()],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for row in rows {
            let (name, count, failures) = row.map_err(|e| self.err(e))?;
            out.insert(
                name,
                Counts {
                    count: u64::try_from(count).unwrap_or(0),
                    failures: u64::try_from(failures).unwrap_or(0),
                },
            );
        }
        Ok(out)
    }
}
