//! History storage: every probe run as one row of a SQLite database, and
//! per-minute and per-hour rollups of them.
//!
//! This module owns the database file: its schema and migrations
//! (`schema.rs`), the row encoding (`codec.rs`), the rollups and the window
//! queries answered from them (`rollup.rs`, with the latency [`sketch`]),
//! the queries the CLI and API read history with, the retention sweep, and
//! the [`recorder`] task that is the only writer while Lookout runs.
//!
//! Invariants:
//! - A probe never touches the database. Results reach it through a
//!   [`RecorderHandle`], whose `record` never blocks or awaits; a slow, full or
//!   locked disk only grows the recorder's bounded in-memory buffer.
//! - [`Store`] is synchronous and is used only from blocking threads
//!   (`spawn_blocking`) or from synchronous code such as the CLI, never
//!   directly on the async runtime.
//! - A corrupt file is refused at open with an error naming it; Lookout
//!   never writes into a file it cannot check.
//! - Nothing stored is secret: messages are redacted before they reach a
//!   [`ProbeResult`], and this module adds no text of its own to rows.
//! - Rollups are written in the transaction that writes the raw rows they
//!   summarise, and a raw row is deleted only once it is in the rollups.
//!
//! The file is in WAL mode with `synchronous=NORMAL`: a power cut can lose
//! the last few transactions but never corrupts the file, and readers (the
//! API, `lookout history`) never block the writer. The busy timeout is short
//! so a locked database shows up as a write error the recorder retries,
//! instead of a thread stuck inside SQLite.

pub mod alert_state;
mod codec;
pub(crate) mod db;
pub mod events;
pub mod feed;
pub mod locations;
pub mod outbox;
pub mod recorder;
pub mod result_pages;
mod rollup;
mod schema;
pub mod sketch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode};

use db::{args, Db, DbError, DbResult};

use crate::result::ProbeResult;

pub use recorder::{
    spawn_recorder, RecorderCounters, RecorderHandle, RecorderReport, RecorderSettings,
    RecorderStats,
};
pub use rollup::{Counts, SeriesPoint};

/// How a notice kind is written in the outbox (`opened`, `resolved`...).
pub fn outbox_kind(kind: crate::notify::NoticeKind) -> &'static str {
    alert_state::kind_str(kind)
}

/// Why SQLite could not open `path`, in words a person can act on.
fn unwritable_why(path: &Path, e: &rusqlite::Error) -> String {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.is_dir() {
        return "it is a folder".into();
    }
    // A probe write in the folder tells read-only file systems and
    // permissions apart from SQLite's generic "unable to open".
    let probe = folder.join(format!(".lookout-write-test-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            format!("{e}")
        }
        Err(io) => format!("its folder {} is not writable ({io})", folder.display()),
    }
}

/// How long SQLite waits for a lock before reporting the database busy.
/// Short on purpose: the recorder retries with backoff and keeps results in
/// memory meanwhile, which is better than a blocking thread parked here.
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);
/// Each connection's page cache, as SQLite's `cache_size` (negative: KiB).
const PAGE_CACHE_KIB: i64 = -512;

/// Rows deleted per transaction by the retention sweep, so it never holds
/// the write lock for long.
pub const SWEEP_CHUNK: usize = 5_000;

/// The start of an insert into `results`; [`INSERT_RESULT`] is it for one
/// row.
const INSERT_RESULT_HEAD: &str = "INSERT INTO results (probe_id, started_at, duration_us, \
     success, class, message, phases, details, checks, location)";
const INSERT_RESULT: &str = "INSERT INTO results (probe_id, started_at, duration_us, \
     success, class, message, phases, details, checks, location) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Columns read back to rebuild a [`ProbeResult`]; `p` is `probes`, `r` is
/// `results`.
pub(crate) const RESULT_COLUMNS: &str = "p.name, r.started_at, r.duration_us, r.success, r.class, \
     r.message, r.phases, r.details, r.checks, r.location";

/// Why the history database could not be opened, read or written. Every
/// variant names the file, because a person reading the message has to
/// find it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not a SQLite database, or SQLite found it damaged.
    #[error(
        "history database {path} is corrupt or is not a SQLite database ({detail}); \
         move it aside to start a new history"
    )]
    Corrupt { path: PathBuf, detail: String },
    /// The file or its folder could not be created or read.
    #[error("history database {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file cannot be created or opened for writing where it is.
    #[error("history database {path} cannot be opened for writing: {why}")]
    Unwritable { path: PathBuf, why: String },
    /// The database reported an error: locked, disk full, read-only, I/O
    /// error, or (PostgreSQL) unreachable.
    #[error("history database {path}: {error}")]
    Db { path: PathBuf, error: DbError },
    /// The file was written by a newer Lookout whose schema this build does
    /// not know; it is left untouched.
    #[error(
        "history database {path} has schema version {found}, newer than this Lookout \
         understands ({supported}); upgrade Lookout or point storage.sqlite elsewhere"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A leader's save found that another instance has led since
    /// (`feed.rs`): nothing was saved.
    #[error("another Lookout instance leads alerting now")]
    Deposed,
}

impl StoreError {
    /// The database file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Corrupt { path, .. }
            | StoreError::Io { path, .. }
            | StoreError::Db { path, .. }
            | StoreError::TooNew { path, .. }
            | StoreError::Unwritable { path, .. } => path,
            StoreError::Deposed => Path::new(""),
        }
    }

    /// True when another connection holds the lock: the write may well
    /// succeed if tried again later.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Db { error, .. }
                if matches!(
                    error.sqlite_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                )
        )
    }

    fn sqlite(path: &Path, error: impl Into<DbError>) -> StoreError {
        let error = error.into();
        match error.sqlite_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: error.to_string(),
            },
            _ => StoreError::Db {
                path: path.to_path_buf(),
                error,
            },
        }
    }
}

/// Uptime and latency of one probe over a window, from the rollups.
///
/// Resolution: a run counts when the start of its minute lies in the
/// window, so the edges of a window are rounded up to whole minutes (the
/// minute that is still running counts). Where minute rollups have expired
/// (`storage.retention.minute_rollups`), a run counts when the start of its
/// hour lies in the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Runs that started in the window.
    pub count: u64,
    /// Runs among them that failed.
    pub failures: u64,
    /// Fraction of runs that succeeded, 0.0 to 1.0; `None` without runs.
    pub uptime: Option<f64>,
    /// Durations over every run in the window, failed ones included (a
    /// timeout is latency a user saw). `None` without runs.
    pub min: Option<Duration>,
    pub max: Option<Duration>,
    pub mean: Option<Duration>,
    /// Nearest-rank percentiles from the merged latency sketches: within
    /// 1% ([`sketch::RELATIVE_ERROR`]) of the exact value, and never outside
    /// `min..=max`. Count, failures, min, max and mean are exact.
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

/// Where one retention sweep cuts: rows that started before each time are
/// deleted; `None` keeps that kind of row for ever (a retention too long to
/// subtract from now).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCutoffs {
    /// Raw results (only once they are in the rollups).
    pub raw: Option<DateTime<Utc>>,
    /// Minute rollups; rounded down to a whole hour.
    pub minute_rollups: Option<DateTime<Utc>>,
    /// Hour rollups and day counts; rounded down to a whole UTC day.
    pub hour_rollups: Option<DateTime<Utc>>,
}

/// Rows deleted by a [`Store::sweep_step`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub raw: usize,
    pub minute_rollups: usize,
    pub hour_rollups: usize,
    pub day_counts: usize,
}

impl Swept {
    pub fn total(&self) -> usize {
        self.raw + self.minute_rollups + self.hour_rollups + self.day_counts
    }
}

/// The history database. Synchronous: use it from blocking threads only.
pub struct Store {
    db: Db,
    /// The SQLite file, or for PostgreSQL its URL without the password
    /// (what error messages name).
    path: PathBuf,
    /// Ids of probe names already known to be in `probes`, so a batch insert
    /// does not look a name up for every row.
    probe_ids: HashMap<String, i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`: creates the parent
    /// folder, checks the file, switches it to WAL, applies any missing
    /// migrations and, for a file from before rollups, rolls up its raw rows
    /// (once, in chunks). A corrupt file is refused with
    /// [`StoreError::Corrupt`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(error) = std::fs::create_dir_all(parent) {
                let why = match parent.metadata() {
                    Ok(m) if !m.is_dir() => {
                        format!("{} is a file, not a folder", parent.display())
                    }
                    _ => format!("cannot create the folder {}: {error}", parent.display()),
                };
                return Err(StoreError::Unwritable { path, why });
            }
        }
        let sql = |e| StoreError::sqlite(&path, e);
        let mut conn = match Connection::open(&path) {
            Ok(c) => c,
            Err(e) => {
                return Err(StoreError::Unwritable {
                    why: unwritable_why(&path, &e),
                    path,
                })
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;

        // Check before changing anything: SQLite opens any file lazily, and
        // garbage only shows up at the first read.
        let mut problems = Vec::new();
        conn.pragma_query(None, "quick_check", |row| {
            let line: String = row.get(0)?;
            if line != "ok" && problems.len() < 5 {
                problems.push(line);
            }
            Ok(())
        })
        .map_err(sql)?;
        if !problems.is_empty() {
            return Err(StoreError::Corrupt {
                path,
                detail: problems.join("; "),
            });
        }

        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal_mode = %mode,
                "history database is not in WAL mode; readers may block writes");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        // Four connections (recorder, alerting, outbox, server) each with
        // SQLite's default 2 MB page cache could hold 8 MB; pages not in
        // the cache come from the OS page cache, which costs little.
        conn.pragma_update(None, "cache_size", PAGE_CACHE_KIB)
            .map_err(sql)?;

        match schema::migrate(&mut conn).map_err(sql)? {
            schema::Migrated::TooNew { found } => {
                return Err(StoreError::TooNew {
                    path,
                    found,
                    supported: schema::current_version(),
                })
            }
            schema::Migrated::UpToDate { from } if from < schema::current_version() => {
                tracing::info!(path = %path.display(), from, to = schema::current_version(),
                    "history database schema migrated");
            }
            schema::Migrated::UpToDate { .. } => {}
        }
        let mut db = Db::sqlite(conn);
        rollup::backfill(&mut db, &path).map_err(|e| StoreError::sqlite(&path, e))?;
        Ok(Store {
            db,
            path,
            probe_ids: HashMap::new(),
        })
    }

    /// A store on the PostgreSQL database at `url`. Nothing is connected
    /// yet: the first statement connects and brings the schema up to date
    /// (`schema::migrate_pg`), and a connection lost later is made again by
    /// the next statement, so Lookout starts, probes and buffers while the
    /// database is away. A URL that cannot be parsed is refused here.
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let path = PathBuf::from(crate::redact::mask_url_passwords(url));
        let db = Db::postgres(url, schema::migrate_pg).map_err(|error| StoreError::Db {
            path: path.clone(),
            error,
        })?;
        Ok(Store {
            db,
            path,
            probe_ids: HashMap::new(),
        })
    }

    /// Opens the store `storage` configures: its PostgreSQL database when
    /// `storage.postgres` is set, else its SQLite file.
    pub fn open_configured(storage: &crate::config::Storage) -> Result<Store, StoreError> {
        match &storage.postgres {
            Some(pg) => Store::open_postgres(&pg.url),
            None => Store::open(&storage.sqlite),
        }
    }

    /// True on the PostgreSQL backend.
    pub fn is_postgres(&self) -> bool {
        self.db.is_postgres()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's schema version (SQLite's `PRAGMA user_version`,
    /// PostgreSQL's `lookout_schema` row).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        match self.db.as_sqlite() {
            Some(conn) => schema::version(conn).map_err(|e| self.err(e)),
            None => self
                .db
                .query_opt("SELECT version FROM lookout_schema", args![], |r| {
                    r.get::<u32>(0)
                })
                .map(Option::unwrap_or_default)
                .map_err(|e| self.err(e)),
        }
    }

    fn err(&self, e: impl Into<DbError>) -> StoreError {
        StoreError::sqlite(&self.path, e)
    }

    /// Writes `results` in one transaction, raw rows and the minute and hour
    /// rollups they fall in: all of it or none.
    pub fn insert_batch(&mut self, results: &[ProbeResult]) -> Result<(), StoreError> {
        self.insert(results, true)
    }

    /// The raw rows alone, without the rollups. Only for the benchmark that
    /// measures what rollups cost: the rollups of these results are lost.
    #[doc(hidden)]
    pub fn insert_batch_without_rollups(
        &mut self,
        results: &[ProbeResult],
    ) -> Result<(), StoreError> {
        self.insert(results, false)
    }

    fn insert(&mut self, results: &[ProbeResult], rollups: bool) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let sql = |e| StoreError::sqlite(path, e);
        // Take the write lock up front so a locked database fails here, at
        // once, rather than halfway through the batch.
        let tx = self.db.begin().map_err(sql)?;
        // Ids learnt inside this transaction are only trusted after commit:
        // a rolled-back insert into `probes` would leave a stale id cached.
        let mut new_ids: Vec<(String, i64)> = Vec::new();
        let mut runs = Vec::with_capacity(results.len());
        let mut rows = Vec::with_capacity(results.len());
        for r in results {
            let probe_id = match self.probe_ids.get(&r.probe) {
                Some(id) => *id,
                None => match new_ids.iter().find(|(n, _)| *n == r.probe) {
                    Some((_, id)) => *id,
                    None => {
                        let id = probe_id_or_add(&tx, &r.probe).map_err(sql)?;
                        new_ids.push((r.probe.clone(), id));
                        id
                    }
                },
            };
            let row = codec::encode(r);
            runs.push(rollup::Run {
                probe_id,
                started_ms: row.started_at_ms,
                duration_us: row.duration_us,
                success: row.success,
            });
            rows.push((probe_id, row, r.location.as_deref()));
        }
        // SQLite: one cached statement per row costs nothing; PostgreSQL:
        // every statement is a round trip, so rows go in multi-row inserts.
        let per_statement = if self.db.is_postgres() {
            db::ROWS_PER_STATEMENT
        } else {
            1
        };
        for chunk in rows.chunks(per_statement) {
            let sql_text = if chunk.len() == 1 {
                std::borrow::Cow::Borrowed(INSERT_RESULT)
            } else {
                std::borrow::Cow::Owned(format!(
                    "{INSERT_RESULT_HEAD} VALUES {}",
                    db::value_rows(chunk.len(), 10, 0)
                ))
            };
            let values: Vec<db::Arg<'_>> = chunk
                .iter()
                .flat_map(|(probe_id, row, location)| {
                    [
                        db::Arg::Int(*probe_id),
                        db::Arg::Int(row.started_at_ms),
                        db::Arg::Int(row.duration_us),
                        db::Arg::from(row.success),
                        db::Arg::from(row.class),
                        db::Arg::from(&row.message),
                        db::Arg::from(&row.phases),
                        db::Arg::from(&row.details),
                        db::Arg::from(&row.checks),
                        db::Arg::from(*location),
                    ]
                })
                .collect();
            tx.execute(&sql_text, &values).map_err(sql)?;
        }
        if rollups {
            rollup::fold(&tx, &runs).map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        self.probe_ids.extend(new_ids);
        Ok(())
    }

    /// Runs `sql` and rebuilds a [`ProbeResult`] from each row (columns
    /// [`RESULT_COLUMNS`]); a row that cannot be read is
    /// [`StoreError::Corrupt`].
    fn query_results(
        &self,
        sql: &str,
        params: &[db::Arg<'_>],
    ) -> Result<Vec<ProbeResult>, StoreError> {
        let rows = self
            .db
            .query(sql, params, stored_row)
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(|row| self.decode(row)).collect()
    }

    /// As [`Store::query_results`], with one more integer column after
    /// [`RESULT_COLUMNS`] returned beside the results.
    fn query_results_with_tx(
        &self,
        sql: &str,
        params: &[db::Arg<'_>],
    ) -> Result<(Vec<ProbeResult>, Vec<i64>), StoreError> {
        let rows = self
            .db
            .query(sql, params, |r| Ok((stored_row(r)?, r.get::<i64>(10)?)))
            .map_err(|e| self.err(e))?;
        let mut results = Vec::with_capacity(rows.len());
        let mut extra = Vec::with_capacity(rows.len());
        for (row, x) in rows {
            results.push(self.decode(row)?);
            extra.push(x);
        }
        Ok((results, extra))
    }

    fn decode(&self, row: codec::StoredRow) -> Result<ProbeResult, StoreError> {
        codec::decode(row).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("a stored result cannot be read: {e}"),
        })
    }

    /// The last `limit` results of `probe`, newest first.
    pub fn recent(&self, probe: &str, limit: usize) -> Result<Vec<ProbeResult>, StoreError> {
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM results r JOIN probes p ON p.id = r.probe_id \
             WHERE p.name = ?1 ORDER BY r.started_at DESC, r.id DESC LIMIT ?2"
        );
        self.query_results(&sql, args![probe, limit_param(limit)])
    }

    /// Results of `probe` that started in `[since, until)`, newest first, at
    /// most `limit` of them.
    pub fn results_between(
        &self,
        probe: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ProbeResult>, StoreError> {
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM results r JOIN probes p ON p.id = r.probe_id \
             WHERE p.name = ?1 AND r.started_at >= ?2 AND r.started_at < ?3 \
             ORDER BY r.started_at DESC, r.id DESC LIMIT ?4"
        );
        self.query_results(
            &sql,
            args![
                probe,
                since.timestamp_millis(),
                until.timestamp_millis(),
                limit_param(limit)
            ],
        )
    }

    /// The most recent result of `probe`, if it ever ran.
    pub fn last_result(&self, probe: &str) -> Result<Option<ProbeResult>, StoreError> {
        Ok(self.recent(probe, 1)?.into_iter().next())
    }

    /// Every probe name that has history (raw rows or hour rollups), sorted.
    pub fn probe_names(&self) -> Result<Vec<String>, StoreError> {
        self.db
            .query(
                "SELECT name FROM probes p \
                 WHERE EXISTS (SELECT 1 FROM results r WHERE r.probe_id = p.id) \
                 OR EXISTS (SELECT 1 FROM rollups_hour h WHERE h.probe_id = p.id) ORDER BY name",
                args![],
                |row| row.get::<String>(0),
            )
            .map_err(|e| self.err(e))
    }

    /// How many raw results of `probe` are stored.
    pub fn count_results(&self, probe: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .db
            .query_opt(
                "SELECT count(*) FROM results r JOIN probes p ON p.id = r.probe_id \
                 WHERE p.name = ?1",
                args![probe],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes every raw result that started before `older_than` and is in
    /// the rollups, in chunks of [`SWEEP_CHUNK`] rows per transaction.
    /// Returns how many were deleted.
    pub fn sweep(&mut self, older_than: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.sweep_chunk(older_than, SWEEP_CHUNK)?;
            total += n;
            if n < SWEEP_CHUNK {
                return Ok(total);
            }
        }
    }

    /// One transaction of the sweep: deletes at most `limit` results that
    /// started before `older_than`, oldest first within each probe. Rows of
    /// a database from before rollups are kept until the backfill has
    /// rolled them up. The recorder calls this between batches so writes
    /// are never held up for a whole sweep.
    pub fn sweep_chunk(
        &mut self,
        older_than: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let path = &self.path;
        let sql = |e| StoreError::sqlite(path, e);
        let cutoff = older_than.timestamp_millis();
        let tx = self.db.begin().map_err(sql)?;
        let mut deleted = 0usize;
        let rolled_up_through = rollup::backfilled_through(&tx)
            .map_err(sql)?
            .unwrap_or(i64::MAX);
        // Going probe by probe lets every delete use the
        // (probe_id, started_at) index instead of scanning the table.
        let ids: Vec<i64> = tx
            .query("SELECT id FROM probes", args![], |row| row.get(0))
            .map_err(sql)?;
        for id in ids {
            if deleted >= limit {
                break;
            }
            deleted += tx
                .execute(
                    "DELETE FROM results WHERE id IN (SELECT id FROM results \
                     WHERE probe_id = ?1 AND started_at < ?2 AND id <= ?4 \
                     ORDER BY started_at LIMIT ?3)",
                    args![id, cutoff, limit_param(limit - deleted), rolled_up_through],
                )
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(deleted)
    }

    /// One step of the retention sweep: at most `limit` rows in all, raw
    /// rows first (only those already rolled up), then minute rollups, then
    /// hour rollups and day counts, each kind in its own transaction. Returns what it
    /// deleted; when that is `limit` rows, there may be more.
    pub fn sweep_step(
        &mut self,
        cutoffs: &SweepCutoffs,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        if let Some(raw) = cutoffs.raw {
            swept.raw = self.sweep_chunk(raw, limit)?;
        }
        let kinds = [
            (rollup::Table::Minute, cutoffs.minute_rollups),
            (rollup::Table::Hour, cutoffs.hour_rollups),
            (rollup::Table::Day, cutoffs.hour_rollups),
        ];
        for (table, cutoff) in kinds {
            let left = limit.saturating_sub(swept.total());
            let Some(cutoff) = cutoff.filter(|_| left > 0) else {
                continue;
            };
            let n = rollup::sweep_chunk(&self.db, table, cutoff, left)
                .map_err(|e| StoreError::sqlite(&self.path, e))?;
            match table {
                rollup::Table::Minute => swept.minute_rollups = n,
                rollup::Table::Hour => swept.hour_rollups = n,
                rollup::Table::Day => swept.day_counts = n,
            }
        }
        Ok(swept)
    }

    /// Bytes the database occupies on disk: the main file plus its WAL
    /// (PostgreSQL: the whole database's size). For measuring bytes per
    /// stored result.
    pub fn bytes_on_disk(&self) -> Result<u64, StoreError> {
        if self.db.is_postgres() {
            let n: i64 = self
                .db
                .query_opt(
                    "SELECT pg_database_size(current_database())",
                    args![],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?
                .unwrap_or(0);
            return Ok(u64::try_from(n).unwrap_or(0));
        }
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let mut total = 0;
        for file in [self.path.clone(), PathBuf::from(wal)] {
            match std::fs::metadata(&file) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(StoreError::Io { path: file, error });
                }
            }
        }
        Ok(total)
    }
}

/// Reads the [`RESULT_COLUMNS`] of a row.
pub(crate) fn stored_row(row: &db::Row<'_>) -> DbResult<codec::StoredRow> {
    Ok(codec::StoredRow {
        probe: row.get(0)?,
        started_at_ms: row.get(1)?,
        duration_us: row.get(2)?,
        success: row.get(3)?,
        class: row.get(4)?,
        message: row.get(5)?,
        phases: row.get(6)?,
        details: row.get(7)?,
        checks: row.get(8)?,
        location: row.get(9)?,
    })
}

/// The id of probe `name` in `probes`, adding it when new. Safe against
/// another instance adding the same name at the same time (PostgreSQL):
/// the insert then does nothing and the select finds theirs.
fn probe_id_or_add(db: &Db, name: &str) -> DbResult<i64> {
    if let Some(id) = db.query_opt("SELECT id FROM probes WHERE name = ?1", args![name], |r| {
        r.get(0)
    })? {
        return Ok(id);
    }
    if let Some(id) = db.query_opt(
        "INSERT INTO probes (name) VALUES (?1) ON CONFLICT (name) DO NOTHING RETURNING id",
        args![name],
        |r| r.get(0),
    )? {
        return Ok(id);
    }
    db.query_opt("SELECT id FROM probes WHERE name = ?1", args![name], |r| {
        r.get(0)
    })?
    .ok_or_else(|| DbError::Column(format!("probe {name} vanished from probes")))
}

/// SQLite takes signed limits; anything beyond `i64::MAX` means "all".
fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
