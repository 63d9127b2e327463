//! Integration tests: the history store and its recorder, against real
//! SQLite files in temporary folders. Another `rusqlite` connection plays
//! the part of whatever else can hold the database (a backup, an operator's
//! `sqlite3` shell).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use lookout::result::{Failure, FailureClass, Phase, ProbeResult};
use lookout::store::{spawn_recorder, RecorderSettings, Store};
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// The `i`th run of `probe`, a millisecond after the previous one.
fn result(probe: &str, i: i64) -> ProbeResult {
    // A fixed recent base, so the same `i` always gives the same result and
    // retention (14 days) keeps it.
    static BASE: OnceLock<i64> = OnceLock::new();
    let base = *BASE.get_or_init(|| Utc::now().timestamp_millis() - 3_600_000);
    let started_at = DateTime::from_timestamp_millis(base + i).expect("valid time");
    let failed = i % 7 == 0;
    ProbeResult {
        probe: probe.into(),
        started_at,
        duration: Duration::from_micros(1_000 + i as u64),
        success: !failed,
        failure: failed.then(|| Failure::new(FailureClass::Connect, "connection refused")),
        phases: vec![(Phase::Connect, Duration::from_micros(300))],
        checks: Vec::new(),
        details: serde_json::Map::new(),
    }
}

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("lookout.db")
}

/// Rows of `probe` as a reader (the API, `lookout history`) sees them.
fn rows(path: &Path, probe: &str) -> u64 {
    Store::open(path)
        .expect("open for reading")
        .count_results(probe)
        .expect("count")
}

/// Settings that flush and retry quickly, so tests finish fast.
fn quick() -> RecorderSettings {
    RecorderSettings {
        flush_interval: Duration::from_millis(20),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        ..RecorderSettings::new(RETENTION)
    }
}

/// Polls `cond` until it holds, failing the test after a generous deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Another connection holding the write lock until dropped or released.
fn lock(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("second connection");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn.execute_batch("BEGIN EXCLUSIVE")
        .expect("take the lock");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_writes_every_result_it_was_given() {
    let dir = TempDir::new().expect("temp dir");
    let store = Store::open(db(&dir)).expect("open");
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn_recorder(store, RecorderSettings::new(RETENTION), shutdown.clone());

    let probes = ["api", "db", "dns", "tls", "tcp"];
    for i in 0..5_000i64 {
        handle.record(result(probes[i as usize % probes.len()], i));
    }
    shutdown.cancel();
    let report = task.await.expect("recorder task");

    assert_eq!(report.written, 5_000);
    assert_eq!((report.dropped, report.still_buffered), (0, 0));
    let store = Store::open(db(&dir)).expect("reopen");
    assert_eq!(
        store.probe_names().expect("names"),
        vec!["api", "db", "dns", "tcp", "tls"]
    );
    for p in probes {
        assert_eq!(store.count_results(p).expect("count"), 1_000, "rows of {p}");
    }
    // What was written is what was recorded.
    let newest = store.last_result("api").expect("read").expect("a result");
    assert_eq!(newest, result("api", 4_995));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_neither_blocks_recording_nor_loses_results() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    let store = Store::open(&path).expect("open");
    let locker = lock(&path);
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn_recorder(store, quick(), shutdown.clone());

    for i in 0..500 {
        handle.record(result("api", i));
    }
    eventually("a write to fail on the lock", || {
        handle.counters().write_errors >= 1
    })
    .await;

    // Writes are failing now; recording must still return at once.
    let started = std::time::Instant::now();
    for i in 500..1_000 {
        handle.record(result("api", i));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "recording 500 results took {took:?}"
    );
    eventually("every result to be buffered", || {
        handle.counters().buffered == 1_000
    })
    .await;
    assert_eq!(rows(&path, "api"), 0, "nothing can be written while locked");

    locker.execute_batch("ROLLBACK").expect("release the lock");
    eventually("every result to be written", || rows(&path, "api") == 1_000).await;

    shutdown.cancel();
    let report = task.await.expect("recorder task");
    assert_eq!(
        (report.written, report.dropped, report.still_buffered),
        (1_000, 0, 0)
    );
    assert!(report.write_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_results_and_counts_them() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    let store = Store::open(&path).expect("open");
    let locker = lock(&path);
    let shutdown = CancellationToken::new();
    let settings = RecorderSettings {
        max_buffered: 100,
        ..quick()
    };
    let (handle, task) = spawn_recorder(store, settings, shutdown.clone());

    for i in 0..250 {
        handle.record(result("api", i));
    }
    eventually("150 results to be dropped and 100 kept", || {
        let c = handle.counters();
        (c.dropped, c.buffered) == (150, 100)
    })
    .await;

    drop(locker);
    eventually("the kept results to be written", || {
        rows(&path, "api") == 100
    })
    .await;
    let kept = Store::open(&path)
        .expect("open")
        .recent("api", 1_000)
        .expect("recent");
    assert_eq!(
        kept.last(),
        Some(&result("api", 150)),
        "the oldest kept is #150"
    );
    assert_eq!(
        kept.first(),
        Some(&result("api", 249)),
        "the newest is kept"
    );

    shutdown.cancel();
    let report = task.await.expect("recorder task");
    assert_eq!(
        (report.written, report.dropped, report.still_buffered),
        (100, 150, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_is_buffered() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    let store = Store::open(&path).expect("open");
    let shutdown = CancellationToken::new();
    // Nothing would be written before an hour or 10,000 results: only the
    // shutdown flush can write these.
    let settings = RecorderSettings {
        flush_interval: Duration::from_secs(3_600),
        flush_threshold: 10_000,
        ..RecorderSettings::new(RETENTION)
    };
    let (handle, task) = spawn_recorder(store, settings, shutdown.clone());
    for i in 0..300 {
        handle.record(result("api", i));
    }
    eventually("the recorder to take the results", || {
        handle.counters().buffered == 300
    })
    .await;
    assert_eq!(rows(&path, "api"), 0);

    shutdown.cancel();
    let report = task.await.expect("recorder task");
    assert_eq!(
        (report.written, report.dropped, report.still_buffered),
        (300, 0, 0)
    );
    assert_eq!(rows(&path, "api"), 300);

    // Recording after the recorder stopped loses the result, visibly.
    handle.record(result("api", 300));
    assert_eq!(handle.counters().dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_flushes_and_stops_the_recorder() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    let store = Store::open(&path).expect("open");
    let settings = RecorderSettings {
        flush_interval: Duration::from_secs(3_600),
        ..RecorderSettings::new(RETENTION)
    };
    let (handle, task) = spawn_recorder(store, settings, CancellationToken::new());
    let other = handle.clone();
    for i in 0..10 {
        handle.record(result("api", i));
        other.record(result("db", i));
    }
    drop(handle);
    drop(other);
    let report = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the recorder stops once every handle is gone")
        .expect("recorder task");
    assert_eq!(report.written, 20);
    assert_eq!((rows(&path, "api"), rows(&path, "db")), (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_sweep_runs_at_start_and_keeps_recent_rows() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    let mut store = Store::open(&path).expect("open");
    let old = |i: i64| ProbeResult {
        started_at: Utc::now() - TimeDelta::days(20) + TimeDelta::milliseconds(i),
        ..result("api", i)
    };
    let batch: Vec<ProbeResult> = (0..12_000)
        .map(old)
        .chain((0..50).map(|i| result("api", i)))
        .collect();
    store.insert_batch(&batch).expect("seed history");

    let shutdown = CancellationToken::new();
    let (handle, task) = spawn_recorder(store, quick(), shutdown.clone());
    // The sweep deletes in chunks while new results keep being written.
    for i in 50..100 {
        handle.record(result("api", i));
    }
    eventually("old rows to be swept", || rows(&path, "api") == 100).await;
    eventually("the sweep to be counted", || {
        handle.counters().swept == 12_000
    })
    .await;

    shutdown.cancel();
    let report = task.await.expect("recorder task");
    assert_eq!(report.written, 50);
}
