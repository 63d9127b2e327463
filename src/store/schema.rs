//! The database schema as an ordered list of migrations.
//!
//! The version of a database file is SQLite's `PRAGMA user_version`: the
//! number of steps of [`MIGRATIONS`] already applied. Opening a file applies
//! the missing steps in order, each in its own transaction together with the
//! version bump, so a crash mid-migration leaves the file at the previous
//! version rather than half-changed. Steps are only ever appended: a released
//! step is never edited, because files in the field already ran it.

use rusqlite::{Connection, TransactionBehavior};

use super::db::DbError;

/// Every schema change, oldest first. Step `i` takes a file from version `i`
/// to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: raw results. Probe names live once in `probes` so a row carries a
    // small integer instead of the name. Times are integers (unix
    // milliseconds, microseconds) and optional columns are NULL rather than
    // empty, because a row is written for every run of every probe and its
    // size is the database's size.
    r#"
    CREATE TABLE probes (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE results (
        id          INTEGER PRIMARY KEY,
        probe_id    INTEGER NOT NULL REFERENCES probes(id),
        started_at  INTEGER NOT NULL, -- unix milliseconds, UTC
        duration_us INTEGER NOT NULL,
        success     INTEGER NOT NULL, -- 0 or 1
        class       TEXT,             -- failure class, NULL on success
        message     TEXT,             -- failure message, already redacted
        phases      TEXT,             -- {"dns":us,...} in the order they happened
        details     TEXT,             -- small kind-specific facts, compact JSON
        checks      TEXT              -- failed checks only, JSON array
    );
    CREATE INDEX results_probe_started ON results(probe_id, started_at);
    "#,
    // v2: the notice outbox. One row per notice per notifier, written before
    // anything is sent; `status` moves from `pending` to `delivered`,
    // `failed` (permanent error) or `expired` (too old). Times are unix
    // milliseconds, UTC; `payload` is the notice as JSON.
    r#"
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        notifier        TEXT NOT NULL,
        probe           TEXT NOT NULL,
        kind            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        status          TEXT NOT NULL, -- pending|delivered|failed|expired
        last_error      TEXT,
        delivered_at    INTEGER,
        answer          TEXT
    );
    CREATE INDEX outbox_status_next ON outbox(status, next_attempt_at);
    "#,
    // v3: alerting state. `alert_state` holds each probe's state machine
    // (status, streaks, open incident) as JSON, saved in the same
    // transaction as the notices it causes; `incidents` is the history,
    // one row per incident, identified by its probe and start.
    r#"
    CREATE TABLE alert_state (
        probe      TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE incidents (
        id            INTEGER PRIMARY KEY,
        probe         TEXT NOT NULL,
        started_at    INTEGER NOT NULL, -- first failure of the streak, unix ms
        opened_at     INTEGER NOT NULL,
        ended_at      INTEGER,          -- NULL while open
        caused_by     TEXT,             -- the dependency it is attributed to
        first_class   TEXT,
        first_message TEXT,
        last_class    TEXT,
        last_message  TEXT,
        streak        INTEGER NOT NULL,
        UNIQUE (probe, started_at)
    );
    CREATE INDEX incidents_started ON incidents(started_at);
    "#,
    // v4: rollups. One row per probe per minute and per hour holding the
    // runs that started in it: count, failures, min/max/sum of durations
    // (microseconds) and a latency sketch (`sketch.rs`; NULL when every run
    // had the same duration); per UTC day, counts and failures only (for
    // uptime of every probe at once). `start` is the bucket's start, unix
    // ms, UTC.
    // `rollup_meta` holds small integers: the backfill's progress through
    // the raw rows written before this step (`backfill_done_id` up to
    // `backfill_until_id`) and `minute_floor_ms`, before which minute rows
    // may have been swept.
    r#"
    CREATE TABLE rollups_minute (
        probe_id INTEGER NOT NULL REFERENCES probes(id),
        start    INTEGER NOT NULL,
        count    INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        min_us   INTEGER NOT NULL,
        max_us   INTEGER NOT NULL,
        sum_us   INTEGER NOT NULL,
        sketch   BLOB,
        PRIMARY KEY (probe_id, start)
    ) WITHOUT ROWID;
    CREATE TABLE rollups_hour (
        probe_id INTEGER NOT NULL REFERENCES probes(id),
        start    INTEGER NOT NULL,
        count    INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        min_us   INTEGER NOT NULL,
        max_us   INTEGER NOT NULL,
        sum_us   INTEGER NOT NULL,
        sketch   BLOB,
        PRIMARY KEY (probe_id, start)
    ) WITHOUT ROWID;
    CREATE TABLE rollups_day (
        probe_id INTEGER NOT NULL REFERENCES probes(id),
        start    INTEGER NOT NULL,
        count    INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        PRIMARY KEY (probe_id, start)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO rollup_meta (key, value)
        SELECT 'backfill_until_id', coalesce(max(id), 0) FROM results;
    INSERT INTO rollup_meta (key, value) VALUES ('backfill_done_id', 0), ('minute_floor_ms', 0);
    "#,
    // v5: why an incident ended. NULL: the probe recovered; 'removed': the
    // probe was removed from the configuration by a reload while down.
    r#"
    ALTER TABLE incidents ADD COLUMN ended_by TEXT;
    "#,
    // v6: degradations. An incident is an outage (`down`) or a
    // degradation (`degraded`, with its reason in words); a probe can have
    // one of each starting in the same millisecond, so the natural key
    // gains the kind. SQLite cannot change a UNIQUE constraint in place:
    // the table is rebuilt (ids kept, so notices and links still match).
    r#"
    CREATE TABLE incidents_v6 (
        id            INTEGER PRIMARY KEY,
        probe         TEXT NOT NULL,
        kind          TEXT NOT NULL DEFAULT 'down', -- down|degraded
        started_at    INTEGER NOT NULL,
        opened_at     INTEGER NOT NULL,
        ended_at      INTEGER,
        caused_by     TEXT,
        first_class   TEXT,
        first_message TEXT,
        last_class    TEXT,
        last_message  TEXT,
        streak        INTEGER NOT NULL,
        ended_by      TEXT,
        reason        TEXT,
        UNIQUE (probe, kind, started_at)
    );
    INSERT INTO incidents_v6 (id, probe, kind, started_at, opened_at, ended_at, caused_by,
        first_class, first_message, last_class, last_message, streak, ended_by)
        SELECT id, probe, 'down', started_at, opened_at, ended_at, caused_by,
        first_class, first_message, last_class, last_message, streak, ended_by FROM incidents;
    DROP TABLE incidents;
    ALTER TABLE incidents_v6 RENAME TO incidents;
    CREATE INDEX incidents_started ON incidents(started_at);
    "#,
    // v7: change events (deploys, configuration changes) posted to the
    // API, cited in notices and shown on incident timelines and charts.
    r#"
    CREATE TABLE events (
        id     INTEGER PRIMARY KEY,
        at     INTEGER NOT NULL, -- unix ms
        kind   TEXT NOT NULL,
        title  TEXT NOT NULL,
        labels TEXT NOT NULL,    -- JSON object of strings
        link   TEXT
    );
    CREATE INDEX events_at ON events(at);
    "#,
    // v8: where each run ran (`location` of the instance; NULL without one).
    r#"
    ALTER TABLE results ADD COLUMN location TEXT;
    "#,
];

/// The PostgreSQL schema, as its own list of steps (version in
/// `lookout_schema`). Step one is the SQLite schema as of its v8, with
/// the same tables and columns (integers are BIGINT, blobs BYTEA) so the
/// store's SQL runs on both, plus what only several instances need: each
/// result's inserting transaction (`tx`, for the leader's results feed,
/// `store/feed.rs`) and the feed's position (`alert_feed`), saved with the
/// alerting state.
pub(crate) const PG_MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE probes (
        id   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE results (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        probe_id    BIGINT NOT NULL REFERENCES probes(id),
        started_at  BIGINT NOT NULL,
        duration_us BIGINT NOT NULL,
        success     BIGINT NOT NULL,
        class       TEXT,
        message     TEXT,
        phases      TEXT,
        details     TEXT,
        checks      TEXT,
        location    TEXT,
        tx          xid8 NOT NULL DEFAULT pg_current_xact_id()
    );
    CREATE INDEX results_probe_started ON results(probe_id, started_at);
    CREATE INDEX results_tx ON results(tx);
    CREATE TABLE outbox (
        id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        notifier        TEXT NOT NULL,
        probe           TEXT NOT NULL,
        kind            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        status          TEXT NOT NULL,
        last_error      TEXT,
        delivered_at    BIGINT,
        answer          TEXT
    );
    CREATE INDEX outbox_status_next ON outbox(status, next_attempt_at);
    CREATE TABLE alert_state (
        probe      TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE incidents (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        probe         TEXT NOT NULL,
        kind          TEXT NOT NULL DEFAULT 'down',
        started_at    BIGINT NOT NULL,
        opened_at     BIGINT NOT NULL,
        ended_at      BIGINT,
        caused_by     TEXT,
        first_class   TEXT,
        first_message TEXT,
        last_class    TEXT,
        last_message  TEXT,
        streak        BIGINT NOT NULL,
        ended_by      TEXT,
        reason        TEXT,
        UNIQUE (probe, kind, started_at)
    );
    CREATE INDEX incidents_started ON incidents(started_at);
    CREATE TABLE rollups_minute (
        probe_id BIGINT NOT NULL REFERENCES probes(id),
        start    BIGINT NOT NULL,
        count    BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        min_us   BIGINT NOT NULL,
        max_us   BIGINT NOT NULL,
        sum_us   BIGINT NOT NULL,
        sketch   BYTEA,
        PRIMARY KEY (probe_id, start)
    );
    CREATE TABLE rollups_hour (
        probe_id BIGINT NOT NULL REFERENCES probes(id),
        start    BIGINT NOT NULL,
        count    BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        min_us   BIGINT NOT NULL,
        max_us   BIGINT NOT NULL,
        sum_us   BIGINT NOT NULL,
        sketch   BYTEA,
        PRIMARY KEY (probe_id, start)
    );
    CREATE TABLE rollups_day (
        probe_id BIGINT NOT NULL REFERENCES probes(id),
        start    BIGINT NOT NULL,
        count    BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        PRIMARY KEY (probe_id, start)
    );
    CREATE TABLE rollup_meta (
        key   TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    INSERT INTO rollup_meta (key, value)
        VALUES ('backfill_until_id', 0), ('backfill_done_id', 0), ('minute_floor_ms', 0);
    CREATE TABLE events (
        id     BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at     BIGINT NOT NULL,
        kind   TEXT NOT NULL,
        title  TEXT NOT NULL,
        labels TEXT NOT NULL,
        link   TEXT
    );
    CREATE INDEX events_at ON events(at);
    CREATE TABLE alert_feed (
        id      SMALLINT PRIMARY KEY CHECK (id = 1),
        epoch   BIGINT NOT NULL, -- bumped by every new leader
        through xid8 NOT NULL    -- results of transactions before it are evaluated
    );
    "#];

/// A lock id for PostgreSQL's advisory locks held while migrating, so
/// instances starting together apply each step once ("lkmg").
const PG_MIGRATE_LOCK: i64 = 0x6c6b_6d67;

/// Brings a PostgreSQL database up to [`PG_MIGRATIONS`]: each missing step
/// with its version bump in one transaction, under an advisory lock. A
/// database from a newer Lookout is refused. Runs on every new connection
/// (`db.rs`), so it costs one query when there is nothing to do.
pub(crate) fn migrate_pg(client: &mut postgres::Client) -> Result<(), DbError> {
    let current = PG_MIGRATIONS.len() as i64;
    fn version(c: &mut impl postgres::GenericClient) -> Result<i64, DbError> {
        // A scan of the catalog, not `to_regclass`: after waiting for the
        // lock, the catalog cache may not yet know of a table another
        // instance created meanwhile.
        let exists: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
                 WHERE schemaname = current_schema() AND tablename = 'lookout_schema')",
                &[],
            )?
            .try_get(0)?;
        if !exists {
            return Ok(0);
        }
        Ok(c.query_opt("SELECT version FROM lookout_schema", &[])?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .unwrap_or(0))
    }
    let found = version(client)?;
    if found > current {
        return Err(DbError::Column(format!(
            "the database has schema version {found}, newer than this Lookout understands \
             ({current}); upgrade Lookout"
        )));
    }
    if found == current {
        return Ok(());
    }
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATE_LOCK])?;
    // Read again under the lock: another instance may have migrated.
    let mut at = version(&mut tx)?;
    if at == current {
        return Ok(());
    }
    if at == 0 {
        tx.batch_execute(
            "CREATE TABLE lookout_schema (version BIGINT NOT NULL); \
             INSERT INTO lookout_schema (version) VALUES (0)",
        )?;
    }
    while at < current {
        let step = PG_MIGRATIONS[at as usize];
        tx.batch_execute(step)?;
        at += 1;
        tx.execute("UPDATE lookout_schema SET version = $1", &[&at])?;
    }
    tx.commit()?;
    tracing::info!(
        from = found,
        to = current,
        "PostgreSQL history schema migrated"
    );
    Ok(())
}

/// The schema version this build writes and understands.
pub(crate) fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Reads the file's schema version.
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))
}

/// What [`migrate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Migrated {
    /// The file is at the current version (possibly after applying steps).
    UpToDate { from: u32 },
    /// The file was written by a newer build; nothing was changed.
    TooNew { found: u32 },
}

/// Applies every missing step. Each step and its version bump commit
/// together; the write lock is taken up front so two processes opening the
/// same new file cannot both run step one.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Migrated> {
    let from = version(conn)?;
    if from > current_version() {
        return Ok(Migrated::TooNew { found: from });
    }
    // Only a file that needs a step takes the write lock: opening an
    // up-to-date file must work while another connection is writing.
    for (i, step) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let target = i as u32 + 1;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the write lock: another process may have migrated
        // the file between our first read and taking the lock.
        if version(&tx)? >= target {
            continue;
        }
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", target)?;
        tx.commit()?;
    }
    Ok(Migrated::UpToDate { from })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_apply_in_order_from_an_empty_database() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        assert_eq!(version(&conn).expect("version"), 0);
        assert_eq!(
            migrate(&mut conn).expect("migrate"),
            Migrated::UpToDate { from: 0 }
        );
        assert_eq!(version(&conn).expect("version"), current_version());
        // Running again is a no-op.
        assert_eq!(
            migrate(&mut conn).expect("migrate again"),
            Migrated::UpToDate {
                from: current_version()
            }
        );
    }

    #[test]
    fn a_version_5_file_keeps_its_incidents_as_outages_and_takes_degradations() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        for step in &MIGRATIONS[..5] {
            conn.execute_batch(step).expect("old step");
        }
        conn.pragma_update(None, "user_version", 5)
            .expect("version");
        conn.execute(
            "INSERT INTO incidents (id, probe, started_at, opened_at, streak, ended_by) \
             VALUES (7, 'api', 1000, 2000, 3, 'removed')",
            [],
        )
        .expect("old incident");
        migrate(&mut conn).expect("migrate");
        let row: (i64, String, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT id, kind, ended_by, reason FROM incidents WHERE probe = 'api'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("kept");
        assert_eq!(row, (7, "down".into(), Some("removed".into()), None));
        // A degradation may start in the same millisecond as an outage.
        conn.execute(
            "INSERT INTO incidents (probe, kind, started_at, opened_at, streak, reason) \
             VALUES ('api', 'degraded', 1000, 2000, 3, 'slow')",
            [],
        )
        .expect("a degradation beside it");
    }

    #[test]
    fn a_version_1_file_gains_the_outbox_and_the_alert_tables() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch(MIGRATIONS[0]).expect("step 1");
        conn.pragma_update(None, "user_version", 1)
            .expect("set version");
        assert_eq!(
            migrate(&mut conn).expect("migrate"),
            Migrated::UpToDate { from: 1 }
        );
        assert_eq!(version(&conn).expect("version"), current_version());
        for table in ["outbox", "alert_state", "incidents"] {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{table} exists: {e}"));
            assert_eq!(n, 0);
        }
    }

    #[test]
    fn a_version_3_file_gains_the_rollups_with_its_raw_rows_left_to_backfill() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        for step in &MIGRATIONS[..3] {
            conn.execute_batch(step).expect("old step");
        }
        conn.execute_batch(
            "INSERT INTO probes (id, name) VALUES (1, 'api'); \
             INSERT INTO results (probe_id, started_at, duration_us, success) \
             VALUES (1, 0, 5, 1), (1, 1, 6, 1);",
        )
        .expect("old rows");
        conn.pragma_update(None, "user_version", 3)
            .expect("set version");
        migrate(&mut conn).expect("migrate");
        let meta = |key: &str| -> i64 {
            conn.query_row("SELECT value FROM rollup_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .expect("meta row")
        };
        assert_eq!(meta("backfill_until_id"), 2);
        assert_eq!(meta("backfill_done_id"), 0);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM rollups_hour", [], |r| r.get(0))
            .expect("rollups_hour exists");
        assert_eq!(n, 0, "the backfill is the store's job, in chunks");
    }

    #[test]
    fn a_newer_file_is_left_alone() {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        conn.pragma_update(None, "user_version", current_version() + 1)
            .expect("set version");
        assert_eq!(
            migrate(&mut conn).expect("migrate"),
            Migrated::TooNew {
                found: current_version() + 1
            }
        );
    }
}
