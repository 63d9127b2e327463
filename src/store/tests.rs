//! Unit tests of what only the SQLite backend of [`Store`] has, against
//! real database files in temporary folders: the file and its folders,
//! WAL mode, corrupt and newer files, size on disk, a locked database, the
//! one-time rollup backfill. Behaviour both backends share is tested once
//! for both by `tests/it/store_suite.rs`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tempfile::TempDir;

use super::*;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("valid time")
}

fn ok(probe: &str, started_ms: i64, duration: Duration) -> ProbeResult {
    ProbeResult {
        probe: probe.into(),
        started_at: at(started_ms),
        duration,
        success: true,
        failure: None,
        phases: Vec::new(),
        checks: Vec::new(),
        details: serde_json::Map::new(),
        location: None,
    }
}

fn open(dir: &TempDir) -> Store {
    Store::open(dir.path().join("history.db")).expect("open store")
}

#[test]
fn opening_an_empty_folder_creates_the_current_schema() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("nested/deeper/history.db");
    let store = Store::open(&path).expect("open");
    assert!(path.exists(), "the file and its folders are created");
    assert_eq!(
        store.schema_version().expect("version"),
        schema::current_version()
    );
    let mode: String = store
        .db
        .as_sqlite()
        .expect("a SQLite store")
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    assert_eq!(store.probe_names().expect("names"), Vec::<String>::new());
}

#[test]
fn a_corrupt_file_is_refused_with_an_error_naming_it() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("history.db");
    std::fs::write(
        &path,
        b"this is not a database, just some text that went wrong ".repeat(200),
    )
    .expect("write garbage");
    let err = Store::open(&path).expect_err("garbage must be refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "got {err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message names the file: {msg}"
    );
    assert!(msg.contains("corrupt"), "message says what is wrong: {msg}");
    assert_eq!(err.path(), path);
}

#[test]
fn a_damaged_database_is_refused() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("history.db");
    {
        let mut store = Store::open(&path).expect("open");
        let batch: Vec<ProbeResult> = (0..2_000)
            .map(|i| ok("api", i, Duration::from_millis(1)))
            .collect();
        store.insert_batch(&batch).expect("insert");
        store
            .db
            .as_sqlite()
            .expect("a SQLite store")
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    // Scribble over pages past the header: a valid SQLite file whose
    // b-trees are broken.
    let mut bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() > 16_384);
    for b in &mut bytes[4_096..16_384] {
        *b = 0x5a;
    }
    std::fs::write(&path, &bytes).expect("write");
    let err = Store::open(&path).expect_err("damaged file must be refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "got {err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn a_file_from_a_newer_lookout_is_refused_untouched() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("history.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", 99)
            .expect("set version");
    }
    let err = Store::open(&path).expect_err("newer schema must be refused");
    assert!(
        matches!(err, StoreError::TooNew { found: 99, .. }),
        "got {err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn bytes_on_disk_grows_with_rows() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let before = store.bytes_on_disk().expect("size");
    let batch: Vec<ProbeResult> = (0..1_000)
        .map(|i| ok("api", i, Duration::from_millis(1)))
        .collect();
    store.insert_batch(&batch).expect("insert");
    assert!(store.bytes_on_disk().expect("size") > before);
}

#[test]
fn a_failed_batch_writes_nothing() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let other = rusqlite::Connection::open(store.path()).expect("second connection");
    other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let err = store
        .insert_batch(&[ok("api", 1, Duration::from_millis(1))])
        .expect_err("locked database");
    assert!(err.is_busy(), "got {err:?}");
    other.execute_batch("ROLLBACK").expect("unlock");
    store
        .insert_batch(&[ok("api", 2, Duration::from_millis(1))])
        .expect("insert");
    assert_eq!(store.count_results("api").expect("count"), 1);
}

#[test]
fn raw_rows_wait_for_the_backfill_before_they_are_swept() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("history.db");
    let now = Utc::now();
    let old = (now - TimeDelta::days(20)).timestamp_millis();
    {
        let mut store = Store::open(&path).expect("open");
        let batch: Vec<ProbeResult> = (0..100)
            .map(|i| ok("api", old + i * 1_000, Duration::from_millis(3)))
            .collect();
        store.insert_batch(&batch).expect("insert");
    }
    // Back to version 3, then migrated without the backfill: the state
    // of a file whose backfill another process has not finished.
    let mut conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "DROP TABLE rollups_minute; DROP TABLE rollups_hour; DROP TABLE rollups_day; \
         DROP TABLE rollup_meta; DROP TABLE events; \
         ALTER TABLE incidents DROP COLUMN ended_by; ALTER TABLE results DROP COLUMN location; \
         PRAGMA user_version = 3;",
    )
    .expect("downgrade");
    schema::migrate(&mut conn).expect("migrate");
    let mut store = Store {
        db: db::Db::sqlite(conn),
        path: path.clone(),
        probe_ids: HashMap::new(),
    };
    let cutoffs = SweepCutoffs {
        raw: Some(now - TimeDelta::days(14)),
        ..SweepCutoffs::default()
    };
    assert_eq!(store.sweep_step(&cutoffs, 1_000).expect("sweep").raw, 0);
    assert_eq!(store.count_results("api").expect("count"), 100);

    rollup::backfill(&mut store.db, &path).expect("backfill");
    assert_eq!(store.sweep_step(&cutoffs, 1_000).expect("sweep").raw, 100);
    let s = store.stats("api", at(old - 60_000), now).expect("stats");
    assert_eq!((s.count, s.min), (100, Some(Duration::from_millis(3))));
}
