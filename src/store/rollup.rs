//! Per-minute and per-hour rollups of every probe's runs, and the window
//! queries answered from them: [`Store::stats`], [`Store::latency_series`]
//! and [`Store::counts_all`].
//!
//! A rollup row holds a probe's runs whose start falls in one minute (or
//! hour): count, failures, min, max and sum of durations, and a
//! [`Sketch`] of the durations for percentiles. Rows are built
//! incrementally: [`fold`] merges a batch into the rows it touches, in the
//! transaction that writes the raw rows. Raw rows are read for rollups only
//! once, by the backfill of a database created before rollups existed.
//!
//! Day rows hold only counts and failures, for [`Store::counts_all`],
//! which reads whole days from them, and hours and minutes at the edges.
//!
//! Windows are answered at minute resolution: a run counts toward a window
//! when the start of its minute lies in `[since, until)`. Whole hours inside
//! the window come from hour rows and the edges from minute rows, so a
//! 30-day window reads about 720 hour rows and at most 118 minute rows.
//! Before the minute floor (minute rows older than
//! `storage.retention.minute_rollups` are deleted a whole hour at a time),
//! resolution is the hour: a run counts when the start of its hour lies in
//! the window.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{args, value_rows, Arg, Db, DbError, DbResult, Row, ROWS_PER_STATEMENT};
use super::sketch::Sketch;
use super::{codec, limit_param, Store, StoreError, WindowStats};

pub(crate) const MINUTE_MS: i64 = 60_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Raw rows folded per transaction by the backfill.
const BACKFILL_CHUNK: i64 = 20_000;

/// Keys of `rollup_meta`.
const META_BACKFILL_DONE: &str = "backfill_done_id";
const META_BACKFILL_UNTIL: &str = "backfill_until_id";
const META_MINUTE_FLOOR: &str = "minute_floor_ms";

/// One step of a latency series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Start of the step.
    pub start: DateTime<Utc>,
    pub count: u64,
    pub failures: u64,
    /// Percentiles from the merged sketch: within 1% of the exact
    /// nearest-rank value. `None` without runs.
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
        (self.count > 0)
            .then(|| self.count.saturating_sub(self.failures) as f64 / self.count as f64)
    }
}

/// The rollup tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Minute,
    Hour,
    /// Counts and failures only.
    Day,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Minute => "rollups_minute",
            Table::Hour => "rollups_hour",
            Table::Day => "rollups_day",
        }
    }

    fn bucket_ms(self) -> i64 {
        match self {
            Table::Minute => MINUTE_MS,
            Table::Hour => HOUR_MS,
            Table::Day => DAY_MS,
        }
    }
}

/// One run as the rollups see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub probe_id: i64,
    pub started_ms: i64,
    pub duration_us: i64,
    pub success: bool,
}

/// What a rollup row holds: the aggregate of some runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Agg {
    pub count: u64,
    pub failures: u64,
    pub min_us: i64,
    pub max_us: i64,
    pub sum_us: i64,
    pub sketch: Sketch,
}

impl Agg {
    fn add(&mut self, duration_us: i64, success: bool) {
        let us = duration_us.max(0);
        if self.count == 0 {
            (self.min_us, self.max_us) = (us, us);
        } else {
            (self.min_us, self.max_us) = (self.min_us.min(us), self.max_us.max(us));
        }
        self.count = self.count.saturating_add(1);
        self.failures += u64::from(!success);
        self.sum_us = self.sum_us.saturating_add(us);
        self.sketch.add(us as u64);
    }

    pub(crate) fn merge(&mut self, other: &Agg) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.count = self.count.saturating_add(other.count);
        self.failures = self.failures.saturating_add(other.failures);
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.sketch.merge(&other.sketch);
    }

    /// A percentile from the sketch, kept inside the exact min and max
    /// (which only brings it closer to the true value).
    fn quantile(&self, q: f64) -> Option<Duration> {
        let us = self.sketch.quantile(q)?;
        let us = us.clamp(self.min_us as f64, self.max_us as f64);
        Some(Duration::from_nanos((us * 1_000.0).round() as u64))
    }

    pub(crate) fn window_stats(&self) -> WindowStats {
        if self.count == 0 {
            return WindowStats::default();
        }
        let mean = self.sum_us / i64::try_from(self.count).unwrap_or(i64::MAX);
        WindowStats {
            count: self.count,
            failures: self.failures,
            uptime: Some(self.count.saturating_sub(self.failures) as f64 / self.count as f64),
            min: Some(codec::from_micros(self.min_us)),
            max: Some(codec::from_micros(self.max_us)),
            mean: Some(codec::from_micros(mean)),
            p50: self.quantile(0.50),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
        }
    }

    /// The sketch column: NULL when every run had the same duration, since
    /// the sketch is then just `count` times `min_us`.
    fn sketch_column(&self) -> Option<Vec<u8>> {
        (self.min_us != self.max_us).then(|| self.sketch.encode())
    }

    /// Rebuilds a row read from the database. A sketch that cannot be
    /// decoded (only possible if the file was edited by hand) is replaced
    /// by the row's mean, with a warning, rather than making every query
    /// and write that touches the row fail.
    fn from_row(
        count: i64,
        failures: i64,
        min: i64,
        max: i64,
        sum: i64,
        blob: Option<Vec<u8>>,
    ) -> Agg {
        let count = u64::try_from(count).unwrap_or(0);
        let sketch = match blob {
            None => Sketch::repeated(u64::try_from(min).unwrap_or(0), count),
            Some(bytes) => Sketch::decode(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, "a stored latency sketch cannot be read; using the mean");
                let mean = sum / i64::try_from(count.max(1)).unwrap_or(1);
                Sketch::repeated(u64::try_from(mean).unwrap_or(0), count)
            }),
        };
        Agg {
            count,
            failures: u64::try_from(failures).unwrap_or(0),
            min_us: min,
            max_us: max,
            sum_us: sum,
            sketch,
        }
    }
}

/// Which rollup rows answer a window: hour rows whose start is in `hours`
/// and minute rows whose start is in either of `minutes`. Every range is
/// of bucket starts, unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub hours: Range<i64>,
    pub minutes: [Range<i64>; 2],
}

fn floor_to(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit
}

fn ceil_to(t: i64, unit: i64) -> i64 {
    floor_to(t, unit) + if t.rem_euclid(unit) == 0 { 0 } else { unit }
}

impl Plan {
    /// The rows for the runs whose bucket starts in `[since, until)`, with
    /// minute rows available from `minute_floor` (a whole hour) onwards.
    pub(crate) fn new(since: i64, until: i64, minute_floor: i64) -> Plan {
        let empty = 0..0;
        if until <= since {
            return Plan {
                hours: empty.clone(),
                minutes: [empty.clone(), empty],
            };
        }
        let floor = floor_to(minute_floor, HOUR_MS);
        // Below the floor: hour rows whose start is in the window.
        let old_hours = if since < floor {
            ceil_to(since, HOUR_MS)..ceil_to(until.min(floor), HOUR_MS)
        } else {
            empty.clone()
        };
        // From the floor: the minutes whose start is in the window, whole
        // hours among them from hour rows.
        let lo = ceil_to(since.max(floor), MINUTE_MS);
        let hi = ceil_to(until, MINUTE_MS);
        let (first_hour, last_hour) = (ceil_to(lo, HOUR_MS), floor_to(hi, HOUR_MS));
        let (new_hours, minutes) = if lo >= hi {
            (empty.clone(), [empty.clone(), empty])
        } else if first_hour < last_hour {
            (first_hour..last_hour, [lo..first_hour, last_hour..hi])
        } else {
            (empty.clone(), [lo..hi, empty])
        };
        let hours = match (old_hours.is_empty(), new_hours.is_empty()) {
            (true, _) => new_hours,
            (false, true) => old_hours,
            // Contiguous: the old ones end at the floor, where the new begin.
            (false, false) => old_hours.start..new_hours.end,
        };
        Plan { hours, minutes }
    }

    fn uses(&self, table: Table, start: i64) -> bool {
        match table {
            Table::Hour => self.hours.contains(&start),
            Table::Minute => self.minutes.iter().any(|r| r.contains(&start)),
            Table::Day => false,
        }
    }

    /// The hours split into whole UTC days (from day rows) and the hours
    /// at either edge.
    fn days(&self) -> (Range<i64>, [Range<i64>; 2]) {
        let h = &self.hours;
        let (first, last) = (ceil_to(h.start, DAY_MS), floor_to(h.end, DAY_MS));
        if h.is_empty() || first >= last {
            return (0..0, [h.clone(), 0..0]);
        }
        (first..last, [h.start..first, last..h.end])
    }
}

/// The advisory lock id that serializes rollup folds on PostgreSQL
/// ("lkru").
const FOLD_LOCK: i64 = 0x6c6b_7275;

/// Folds `runs` into the minute, hour and day rows they belong to: each
/// touched row is read, merged and written once (day rows are only added
/// to).
///
/// On PostgreSQL several instances fold into the same rows (a probe run
/// from several locations): each read-merge-write takes a transaction
/// advisory lock first, so no instance's runs are overwritten by
/// another's merge made from the same old row.
pub(crate) fn fold(tx: &Db, runs: &[Run]) -> DbResult<()> {
    if tx.is_postgres() && !runs.is_empty() {
        tx.execute("SELECT pg_advisory_xact_lock(?1)", args![FOLD_LOCK])?;
    }
    for table in [Table::Minute, Table::Hour] {
        let mut groups: BTreeMap<(i64, i64), Agg> = BTreeMap::new();
        for r in runs {
            let start = floor_to(r.started_ms, table.bucket_ms());
            groups
                .entry((r.probe_id, start))
                .or_default()
                .add(r.duration_us, r.success);
        }
        if tx.is_postgres() {
            merge_into_batched(tx, table, groups)?;
        } else {
            merge_into(tx, table, groups)?;
        }
    }
    add_day_counts(tx, runs)
}

/// [`merge_into`] in a few statements (PostgreSQL, where every statement
/// is a round trip, maybe to another region): the existing rows of a chunk
/// of groups are read with one query and written back, merged, with one
/// multi-row upsert (safe under the fold's lock).
fn merge_into_batched(tx: &Db, table: Table, groups: BTreeMap<(i64, i64), Agg>) -> DbResult<()> {
    let t = table.name();
    let groups: Vec<((i64, i64), Agg)> = groups.into_iter().collect();
    for chunk in groups.chunks(ROWS_PER_STATEMENT) {
        let keys: Vec<Arg<'_>> = chunk
            .iter()
            .flat_map(|((p, s), _)| [Arg::Int(*p), Arg::Int(*s)])
            .collect();
        let read = format!(
            "SELECT probe_id, start, count, failures, min_us, max_us, sum_us, sketch FROM {t} \
             WHERE (probe_id, start) IN (VALUES {})",
            value_rows(chunk.len(), 2, 2)
        );
        let old: HashMap<(i64, i64), Agg> = tx
            .query(&read, &keys, |row| {
                Ok(((row.get(0)?, row.get(1)?), read_agg(row, 2)?))
            })?
            .into_iter()
            .collect();
        // Each row's integer columns in order, and its sketch.
        let merged: Vec<([i64; 7], Option<Vec<u8>>)> = chunk
            .iter()
            .map(|(key, agg)| {
                let mut agg = agg.clone();
                if let Some(o) = old.get(key) {
                    agg.merge(o);
                }
                let ints = [
                    key.0,
                    key.1,
                    i64::try_from(agg.count).unwrap_or(i64::MAX),
                    i64::try_from(agg.failures).unwrap_or(i64::MAX),
                    agg.min_us,
                    agg.max_us,
                    agg.sum_us,
                ];
                (ints, agg.sketch_column())
            })
            .collect();
        let values: Vec<Arg<'_>> = merged
            .iter()
            .flat_map(|(ints, sketch)| ints.iter().map(|v| Arg::Int(*v)).chain([Arg::from(sketch)]))
            .collect();
        let write = format!(
            "INSERT INTO {t} (probe_id, start, count, failures, min_us, max_us, sum_us, sketch) \
             VALUES {} ON CONFLICT (probe_id, start) DO UPDATE SET count = excluded.count, \
             failures = excluded.failures, min_us = excluded.min_us, max_us = excluded.max_us, \
             sum_us = excluded.sum_us, sketch = excluded.sketch",
            value_rows(chunk.len(), 8, 0)
        );
        tx.execute(&write, &values)?;
    }
    Ok(())
}

/// Adds the runs' counts and failures to their day rows.
fn add_day_counts(tx: &Db, runs: &[Run]) -> DbResult<()> {
    let mut days: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for r in runs {
        let day = days
            .entry((r.probe_id, floor_to(r.started_ms, DAY_MS)))
            .or_default();
        day.0 += 1;
        day.1 += i64::from(!r.success);
    }
    // The old values are named by their table: PostgreSQL finds a bare
    // `count` ambiguous next to `excluded.count`.
    const ADD: &str = "INSERT INTO rollups_day (probe_id, start, count, failures) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (probe_id, start) DO UPDATE SET \
         count = rollups_day.count + excluded.count, \
         failures = rollups_day.failures + excluded.failures";
    if !tx.is_postgres() {
        for ((probe_id, start), (count, failures)) in days {
            tx.execute(ADD, args![probe_id, start, count, failures])?;
        }
        return Ok(());
    }
    // PostgreSQL: one multi-row upsert per chunk (see `merge_into_batched`).
    let days: Vec<Arg<'_>> = days
        .into_iter()
        .flat_map(|((p, s), (c, f))| [Arg::Int(p), Arg::Int(s), Arg::Int(c), Arg::Int(f)])
        .collect();
    for chunk in days.chunks(ROWS_PER_STATEMENT * 4) {
        let sql = format!(
            "INSERT INTO rollups_day (probe_id, start, count, failures) VALUES {} \
             ON CONFLICT (probe_id, start) DO UPDATE SET \
             count = rollups_day.count + excluded.count, \
             failures = rollups_day.failures + excluded.failures",
            value_rows(chunk.len() / 4, 4, 0)
        );
        tx.execute(&sql, chunk)?;
    }
    Ok(())
}

fn merge_into(tx: &Db, table: Table, groups: BTreeMap<(i64, i64), Agg>) -> DbResult<()> {
    let t = table.name();
    let read = format!(
        "SELECT count, failures, min_us, max_us, sum_us, sketch FROM {t} \
         WHERE probe_id = ?1 AND start = ?2"
    );
    // The read says whether the row exists, so each row is written with
    // the statement that needs no second look-up: an UPDATE by key for an
    // existing row, a plain INSERT for a new one (an upsert would first
    // try the insert, find the conflict, then seek again to update).
    let update = format!(
        "UPDATE {t} SET count = ?3, failures = ?4, min_us = ?5, max_us = ?6, sum_us = ?7, \
         sketch = ?8 WHERE probe_id = ?1 AND start = ?2"
    );
    let insert = format!(
        "INSERT INTO {t} (probe_id, start, count, failures, min_us, max_us, sum_us, sketch) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    );
    for ((probe_id, start), mut agg) in groups {
        let old = tx.query_opt(&read, args![probe_id, start], |row| read_agg(row, 0))?;
        let write = match &old {
            Some(old) => {
                agg.merge(old);
                &update
            }
            None => &insert,
        };
        let sketch = agg.sketch_column();
        tx.execute(
            write,
            args![
                probe_id,
                start,
                i64::try_from(agg.count).unwrap_or(i64::MAX),
                i64::try_from(agg.failures).unwrap_or(i64::MAX),
                agg.min_us,
                agg.max_us,
                agg.sum_us,
                &sketch,
            ],
        )?;
    }
    Ok(())
}

/// Reads `count, failures, min_us, max_us, sum_us, sketch` from column
/// `first` on.
fn read_agg(row: &Row<'_>, first: usize) -> DbResult<Agg> {
    Ok(Agg::from_row(
        row.get(first)?,
        row.get(first + 1)?,
        row.get(first + 2)?,
        row.get(first + 3)?,
        row.get(first + 4)?,
        row.get(first + 5)?,
    ))
}

pub(crate) fn meta(db: &Db, key: &str) -> DbResult<i64> {
    Ok(db
        .query_opt(
            "SELECT value FROM rollup_meta WHERE key = ?1",
            args![key],
            |row| row.get::<i64>(0),
        )?
        .unwrap_or(0))
}

fn set_meta(db: &Db, key: &str, value: i64) -> DbResult<()> {
    db.execute(
        "INSERT INTO rollup_meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        args![key, value],
    )?;
    Ok(())
}

/// The highest raw row id already in the rollups, or `None` once every
/// raw row is (the backfill is complete). Always `None` on PostgreSQL,
/// whose databases start with rollups.
pub(crate) fn backfilled_through(db: &Db) -> DbResult<Option<i64>> {
    if db.is_postgres() {
        return Ok(None);
    }
    let done = meta(db, META_BACKFILL_DONE)?;
    let until = meta(db, META_BACKFILL_UNTIL)?;
    Ok((done < until).then_some(done))
}

/// Folds one chunk of raw rows written before rollups existed. Returns
/// `(done, until)` after the chunk; the backfill is complete when equal.
fn backfill_chunk(db: &Db) -> DbResult<(i64, i64)> {
    let tx = db.begin()?;
    // Read under the write lock: another process may be backfilling too.
    let done = meta(&tx, META_BACKFILL_DONE)?;
    let until = meta(&tx, META_BACKFILL_UNTIL)?;
    if done >= until {
        return Ok((done, until));
    }
    let (runs, last) = {
        let mut last = until;
        let mut runs = Vec::new();
        tx.query(
            "SELECT id, probe_id, started_at, duration_us, success FROM results \
             WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
            args![done, until, BACKFILL_CHUNK],
            |row| {
                last = row.get::<i64>(0)?;
                runs.push(Run {
                    probe_id: row.get(1)?,
                    started_ms: row.get(2)?,
                    duration_us: row.get(3)?,
                    success: row.get(4)?,
                });
                Ok(())
            },
        )?;
        // A short chunk is the last one, whatever ids are missing after it.
        if (runs.len() as i64) < BACKFILL_CHUNK {
            last = until;
        }
        (runs, last)
    };
    fold(&tx, &runs)?;
    set_meta(&tx, META_BACKFILL_DONE, last)?;
    tx.commit()?;
    Ok((last, until))
}

/// Rolls up the raw rows of a database from before rollups, a chunk per
/// transaction, so a database from an older Lookout gives the same
/// answers after the upgrade. Does nothing once complete. When another
/// connection holds the lock (it is probably backfilling), leaves the rest
/// to it. SQLite only: a PostgreSQL database starts with rollups, so
/// there is nothing to do there.
pub(crate) fn backfill(db: &mut Db, path: &Path) -> DbResult<()> {
    if db.is_postgres() || backfilled_through(db)?.is_none() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut logged = started;
    loop {
        let (done, until) = match backfill_chunk(db) {
            Ok(progress) => progress,
            Err(e) if is_busy(&e) => {
                tracing::info!(path = %path.display(),
                    "history database is locked by another process; leaving the rollup \
                     backfill to it");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if done >= until {
            tracing::info!(path = %path.display(), rows_through_id = until,
                seconds = started.elapsed().as_secs_f64(),
                "history rollups built from the existing results");
            return Ok(());
        }
        if logged.elapsed() >= Duration::from_secs(5) {
            logged = std::time::Instant::now();
            tracing::info!(path = %path.display(), done, until,
                "building history rollups from the existing results");
        }
    }
}

fn is_busy(e: &DbError) -> bool {
    matches!(
        e.sqlite_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// One transaction of the rollup sweep: deletes at most `limit` rows of
/// `table` that start before `older_than`, rounded down to a whole hour for
/// minute rows and to a whole UTC day for hour and day rows (so a day row
/// never outlives its hours), oldest first within each probe. Sweeping
/// minute rows first raises the minute floor, so window queries switch to
/// hour rows where minute rows may be gone.
pub(crate) fn sweep_chunk(
    db: &Db,
    table: Table,
    older_than: DateTime<Utc>,
    limit: usize,
) -> DbResult<usize> {
    let unit = if table == Table::Minute {
        HOUR_MS
    } else {
        DAY_MS
    };
    let cutoff = floor_to(older_than.timestamp_millis(), unit);
    let tx = db.begin()?;
    if table == Table::Minute && meta(&tx, META_MINUTE_FLOOR)? < cutoff {
        set_meta(&tx, META_MINUTE_FLOOR, cutoff)?;
    }
    let mut deleted = 0usize;
    let ids = tx.query("SELECT id FROM probes", args![], |row| row.get::<i64>(0))?;
    let t = table.name();
    let delete = format!(
        "DELETE FROM {t} WHERE probe_id = ?1 AND start IN (SELECT start FROM {t} \
         WHERE probe_id = ?1 AND start < ?2 ORDER BY start LIMIT ?3)"
    );
    for id in ids {
        if deleted >= limit {
            break;
        }
        deleted += tx.execute(&delete, args![id, cutoff, limit_param(limit - deleted)])?;
    }
    tx.commit()?;
    Ok(deleted)
}

impl Store {
    fn probe_id(&self, probe: &str) -> Result<Option<i64>, StoreError> {
        self.db
            .query_opt(
                "SELECT id FROM probes WHERE name = ?1",
                args![probe],
                |row| row.get::<i64>(0),
            )
            .map_err(|e| self.err(e))
    }

    fn minute_floor(&self) -> Result<i64, StoreError> {
        meta(&self.db, META_MINUTE_FLOOR).map_err(|e| self.err(e))
    }

    /// Rows of `table` for `probe_id` starting in `range`, oldest first.
    fn rollup_rows(
        &self,
        table: Table,
        probe_id: i64,
        range: &Range<i64>,
        mut each: impl FnMut(i64, Agg),
    ) -> Result<(), StoreError> {
        if range.is_empty() {
            return Ok(());
        }
        let t = table.name();
        self.db
            .query(
                &format!(
                    "SELECT start, count, failures, min_us, max_us, sum_us, sketch FROM {t} \
                     WHERE probe_id = ?1 AND start >= ?2 AND start < ?3 ORDER BY start"
                ),
                args![probe_id, range.start, range.end],
                |row| {
                    each(row.get::<i64>(0)?, read_agg(row, 1)?);
                    Ok(())
                },
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The aggregate of each step `[from + i·step, from + (i+1)·step)` (the
    /// last one cut at `to`), each answered by its own [`Plan`] with two
    /// range reads in all.
    fn gather(&self, probe_id: i64, from: i64, to: i64, step: i64) -> Result<Vec<Agg>, StoreError> {
        let step = step.max(1);
        let n = steps(from, to, step);
        let floor = self.minute_floor()?;
        let plans: Vec<Plan> = (0..n as i64)
            .map(|i| Plan::new(from + i * step, (from + (i + 1) * step).min(to), floor))
            .collect();
        let mut aggs = vec![Agg::default(); n];
        let mut dispatch = |table: Table, start: i64, agg: Agg| {
            let i = usize::try_from((start - from).div_euclid(step)).unwrap_or(usize::MAX);
            if let (Some(plan), Some(acc)) = (plans.get(i), aggs.get_mut(i)) {
                if plan.uses(table, start) {
                    acc.merge(&agg);
                }
            }
        };
        let hours = span(plans.iter().map(|p| p.hours.clone()));
        if let Some(range) = hours {
            self.rollup_rows(Table::Hour, probe_id, &range, |s, a| {
                dispatch(Table::Hour, s, a)
            })?;
        }
        let minutes = coalesce(plans.iter().flat_map(|p| p.minutes.iter().cloned()));
        for range in &minutes {
            self.rollup_rows(Table::Minute, probe_id, range, |s, a| {
                dispatch(Table::Minute, s, a)
            })?;
        }
        Ok(aggs)
    }

    /// Uptime and latency of `probe` over `[since, until)`, from the
    /// rollups: exact counts, failures, min, max and mean, percentiles
    /// within 1% (see [`WindowStats`] for the resolution at the edges).
    pub fn stats(
        &self,
        probe: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<WindowStats, StoreError> {
        let Some(id) = self.probe_id(probe)? else {
            return Ok(WindowStats::default());
        };
        let (from, to) = (since.timestamp_millis(), until.timestamp_millis());
        let aggs = self.gather(id, from, to, (to - from).max(1))?;
        Ok(aggs.first().map(Agg::window_stats).unwrap_or_default())
    }

    /// `probe`'s latency over `[since, until)` in steps of `step` (at least
    /// a minute; shorter steps count as one minute), oldest first; steps
    /// without runs are included with a count of 0. Each step is answered
    /// like a [`stats`](Store::stats) window, from minute and hour rollups.
    pub fn latency_series(
        &self,
        probe: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let step_ms = i64::try_from(step.as_millis())
            .unwrap_or(i64::MAX)
            .max(MINUTE_MS);
        let (from, to) = (since.timestamp_millis(), until.timestamp_millis());
        let aggs = match self.probe_id(probe)? {
            Some(id) => self.gather(id, from, to, step_ms)?,
            None => {
                let n = steps(from, to, step_ms);
                vec![Agg::default(); n]
            }
        };
        Ok(aggs
            .into_iter()
            .enumerate()
            .map(|(i, agg)| SeriesPoint {
                start: since + chrono::TimeDelta::milliseconds(i as i64 * step_ms),
                count: agg.count,
                failures: agg.failures,
                p50: agg.quantile(0.50),
                p95: agg.quantile(0.95),
            })
            .collect())
    }

    /// Run and failure counts of every probe with runs in `[since, until)`
    /// (at the resolution [`stats`](Store::stats) uses), by probe name:
    /// sums of day rows for whole UTC days, and hour and minute rows at the
    /// edges, one indexed range per probe and range.
    pub fn counts_all(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HashMap<String, Counts>, StoreError> {
        let plan = Plan::new(
            since.timestamp_millis(),
            until.timestamp_millis(),
            self.minute_floor()?,
        );
        let mut by_id: HashMap<i64, Counts> = HashMap::new();
        let (days, [h1, h2]) = plan.days();
        let [m1, m2] = &plan.minutes;
        for (table, range) in [
            (Table::Day, &days),
            (Table::Hour, &h1),
            (Table::Hour, &h2),
            (Table::Minute, m1),
            (Table::Minute, m2),
        ] {
            if range.is_empty() {
                continue;
            }
            self.sum_counts(table, range, &mut by_id)?;
        }
        let mut out = HashMap::new();
        self.db
            .query("SELECT id, name FROM probes", args![], |row| {
                let id = row.get::<i64>(0)?;
                if let Some(c) = by_id.get(&id).filter(|c| c.count > 0) {
                    out.insert(row.get::<String>(1)?, *c);
                }
                Ok(())
            })
            .map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn sum_counts(
        &self,
        table: Table,
        range: &Range<i64>,
        into: &mut HashMap<i64, Counts>,
    ) -> Result<(), StoreError> {
        let t = table.name();
        // `probe_id IN (SELECT id FROM probes)` makes SQLite seek the
        // primary key once per probe instead of scanning the table.
        // The sums are cast: PostgreSQL sums BIGINTs to NUMERIC.
        self.db
            .query(
                &format!(
                    "SELECT probe_id, CAST(sum(count) AS BIGINT), CAST(sum(failures) AS BIGINT) \
                     FROM {t} WHERE probe_id IN (SELECT id FROM probes) \
                     AND start >= ?1 AND start < ?2 GROUP BY probe_id"
                ),
                args![range.start, range.end],
                |row| {
                    let (id, count, failures) =
                        (row.get::<i64>(0)?, row.get::<i64>(1)?, row.get::<i64>(2)?);
                    let c = into.entry(id).or_default();
                    c.count += u64::try_from(count).unwrap_or(0);
                    c.failures += u64::try_from(failures).unwrap_or(0);
                    Ok(())
                },
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// How many steps of `step` ms (at least 1) cover `[from, to)`.
fn steps(from: i64, to: i64, step: i64) -> usize {
    let span = u64::try_from(to.saturating_sub(from)).unwrap_or(0);
    usize::try_from(span.div_ceil(u64::try_from(step.max(1)).unwrap_or(1))).unwrap_or(0)
}

/// The smallest range holding every non-empty range, if any.
fn span(ranges: impl Iterator<Item = Range<i64>>) -> Option<Range<i64>> {
    ranges
        .filter(|r| !r.is_empty())
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
}

/// Non-empty ranges, sorted, with touching or overlapping ones joined.
fn coalesce(ranges: impl Iterator<Item = Range<i64>>) -> Vec<Range<i64>> {
    let mut v: Vec<Range<i64>> = ranges.filter(|r| !r.is_empty()).collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<i64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = MINUTE_MS;
    const H: i64 = HOUR_MS;

    #[test]
    fn a_window_inside_one_hour_reads_minutes_only() {
        let p = Plan::new(10 * H + 5 * M, 10 * H + 20 * M, 0);
        assert_eq!(p.hours, 0..0);
        assert_eq!(p.minutes, [10 * H + 5 * M..10 * H + 20 * M, 0..0]);
    }

    #[test]
    fn whole_hours_come_from_hour_rows_and_edges_from_minutes() {
        let p = Plan::new(10 * H + 30 * M, 14 * H + 10 * M, 0);
        assert_eq!(p.hours, 11 * H..14 * H);
        assert_eq!(
            p.minutes,
            [10 * H + 30 * M..11 * H, 14 * H..14 * H + 10 * M]
        );
    }

    #[test]
    fn a_minute_counts_where_it_starts() {
        // 10:00:30 to 10:01:30 holds the start of minute 10:01 only.
        let p = Plan::new(10 * H + 30_000, 10 * H + M + 30_000, 0);
        assert_eq!(p.minutes[0], 10 * H + M..10 * H + 2 * M);
        // Aligned hours need no minutes at all.
        let p = Plan::new(10 * H, 12 * H, 0);
        assert_eq!(
            (p.hours, p.minutes),
            (10 * H..12 * H, [10 * H..10 * H, 12 * H..12 * H])
        );
    }

    #[test]
    fn before_the_minute_floor_hours_count_where_they_start() {
        let floor = 20 * H;
        // Entirely old: only hours starting in the window.
        let p = Plan::new(10 * H + 30 * M, 14 * H + 10 * M, floor);
        assert_eq!(p.hours, 11 * H..15 * H);
        assert!(p.minutes.iter().all(|r| r.is_empty()));
        // Across the floor: old hours, then new hours and a minute edge.
        let p = Plan::new(18 * H + 30 * M, 21 * H + 10 * M, floor);
        assert_eq!(p.hours, 19 * H..21 * H);
        assert_eq!(p.minutes, [20 * H..20 * H, 21 * H..21 * H + 10 * M]);
    }

    #[test]
    fn counts_read_whole_days_from_day_rows() {
        let d = DAY_MS;
        let p = Plan::new(3 * d + 10 * H + 30 * M, 6 * d + 2 * H + 5 * M, 0);
        assert_eq!(p.hours, 3 * d + 11 * H..6 * d + 2 * H);
        assert_eq!(
            p.days(),
            (4 * d..6 * d, [3 * d + 11 * H..4 * d, 6 * d..6 * d + 2 * H])
        );
        let p = Plan::new(3 * d + 10 * H, 3 * d + 20 * H, 0);
        assert_eq!(p.days(), (0..0, [3 * d + 10 * H..3 * d + 20 * H, 0..0]));
    }

    #[test]
    fn coalesce_joins_touching_ranges() {
        let got = coalesce([5..7, 0..2, 2..3, 0..0, 6..9].into_iter());
        assert_eq!(got, vec![0..3, 5..9]);
    }
}
