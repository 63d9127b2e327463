//! Integration tests of what only the SQLite history has: a database held
//! locked by another process (another `rusqlite` connection plays a backup
//! or an operator's `sqlite3` shell), the recorder's bounded buffer while
//! it is, databases from before rollups backfilled, and retention settings
//! checked. What both backends do alike is in `store_suite.rs`, which
//! shares this file's synthetic history (`runs`, `assert_stats`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lookout::result::{Failure, FailureClass, Phase, ProbeResult};
use lookout::store::{spawn_recorder, RecorderSettings, Store};
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) const RETENTION: Duration = Duration::from_secs(14 * 86_400);

/// The `i`th run of `probe`, a millisecond after the previous one.
pub(crate) fn result(probe: &str, i: i64) -> ProbeResult {
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
        location: None,
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
pub(crate) fn quick() -> RecorderSettings {
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

// ---- Rollups and retention -------------------------------------------------

pub(crate) const MINUTE: i64 = 60_000;
pub(crate) const HOUR: i64 = 3_600_000;

/// One run of the synthetic history, as the exact figures see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) at_ms: i64,
    pub(crate) us: i64,
    pub(crate) ok: bool,
}

/// `n` runs of probe "api" every `every_ms` from `start_ms`, with durations
/// spread over 1 to ~400 ms (a long tail) and about 1 in 9 failed.
pub(crate) fn runs(start_ms: i64, every_ms: i64, n: usize) -> Vec<Run> {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|i| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = (seed >> 33) % 10_000;
            let us = 1_000 + (r * r / 250) as i64 + (seed >> 20) as i64 % 997;
            Run {
                at_ms: start_ms + i as i64 * every_ms,
                us,
                ok: (seed >> 40) % 9 != 0,
            }
        })
        .collect()
}

pub(crate) fn as_result(probe: &str, r: &Run) -> ProbeResult {
    ProbeResult {
        probe: probe.into(),
        started_at: at(r.at_ms),
        duration: Duration::from_micros(r.us as u64),
        success: r.ok,
        failure: (!r.ok).then(|| Failure::new(FailureClass::Timeout, "no answer")),
        phases: Vec::new(),
        checks: Vec::new(),
        details: serde_json::Map::new(),
        location: None,
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("valid time")
}

/// Exact figures over the runs whose minute starts in `[since, until)`
/// (the documented resolution), or whose hour does when `by_hour`.
#[derive(Debug, PartialEq)]
struct Exact {
    count: u64,
    failures: u64,
    min_us: i64,
    max_us: i64,
    mean_us: i64,
    /// p50, p95, p99 by nearest rank.
    pct_us: [i64; 3],
}

fn exact(runs: &[Run], since: i64, until: i64, bucket: i64) -> Exact {
    let mut us: Vec<i64> = Vec::new();
    let mut failures = 0;
    for r in runs {
        let start = r.at_ms.div_euclid(bucket) * bucket;
        if start >= since && start < until {
            us.push(r.us);
            failures += u64::from(!r.ok);
        }
    }
    assert!(!us.is_empty(), "a test window must hold runs");
    us.sort_unstable();
    let n = us.len();
    let pct = |p: usize| us[(p * n).div_ceil(100).max(1) - 1];
    Exact {
        count: n as u64,
        failures,
        min_us: us[0],
        max_us: us[n - 1],
        mean_us: us.iter().sum::<i64>() / n as i64,
        pct_us: [pct(50), pct(95), pct(99)],
    }
}

/// Asserts the store's figures for `[since, until)` are the exact ones:
/// counts, min, max and mean exactly, percentiles within 1%.
pub(crate) fn assert_stats(store: &Store, runs: &[Run], since: i64, until: i64, bucket: i64) {
    let want = exact(runs, since, until, bucket);
    let got = store.stats("api", at(since), at(until)).expect("stats");
    let us = |d: Option<Duration>| d.map(|d| d.as_micros() as i64);
    assert_eq!(
        (
            got.count,
            got.failures,
            us(got.min),
            us(got.max),
            us(got.mean)
        ),
        (
            want.count,
            want.failures,
            Some(want.min_us),
            Some(want.max_us),
            Some(want.mean_us)
        ),
        "window {since}..{until}"
    );
    let uptime = (want.count - want.failures) as f64 / want.count as f64;
    assert_eq!(got.uptime, Some(uptime));
    // Uptime of every probe at once counts the same runs.
    let all = store.counts_all(at(since), at(until)).expect("counts");
    assert_eq!(
        (all["api"].count, all["api"].failures),
        (want.count, want.failures),
        "counts over {since}..{until}"
    );
    for (name, got, want) in [
        ("p50", got.p50, want.pct_us[0]),
        ("p95", got.p95, want.pct_us[1]),
        ("p99", got.p99, want.pct_us[2]),
    ] {
        let got = got.expect("a percentile").as_secs_f64() * 1e6;
        let want = want as f64;
        assert!(
            (got - want).abs() <= want * lookout::store::sketch::RELATIVE_ERROR + 1e-3,
            "{name} over {since}..{until}: {got} µs, exact {want} µs"
        );
    }
}

/// Turns a current database back into what Lookout wrote before rollups
/// (schema version 3): its raw rows, no rollup tables.
fn make_version_3(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "DROP TABLE rollups_minute; DROP TABLE rollups_hour; DROP TABLE rollups_day; \
         DROP TABLE rollup_meta; DROP TABLE events; ALTER TABLE results DROP COLUMN location; \
         ALTER TABLE incidents DROP COLUMN ended_by; \
         PRAGMA user_version = 3;",
    )
    .expect("downgrade to version 3");
}

#[test]
fn a_database_from_before_rollups_is_backfilled_and_gives_the_same_stats() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    let start = (Utc::now().timestamp_millis() - 3 * 86_400_000) / HOUR * HOUR;
    // 25,000 runs (more than one backfill chunk), every 10 s for 2.9 days.
    let history = runs(start, 10_000, 25_000);
    {
        let mut store = Store::open(&path).expect("open");
        let batch: Vec<ProbeResult> = history.iter().map(|r| as_result("api", r)).collect();
        for chunk in batch.chunks(5_000) {
            store.insert_batch(chunk).expect("insert");
        }
        store
            .insert_batch(&[as_result("db", &history[0])])
            .expect("insert");
    }
    make_version_3(&path);

    let store = Store::open(&path).expect("open and backfill");
    assert_eq!(store.schema_version().expect("version"), 8);
    let end = history.last().map(|r| r.at_ms).unwrap_or(start) + 1;
    assert_stats(&store, &history, start, end, MINUTE);
    assert_stats(
        &store,
        &history,
        start + 7 * HOUR + 11 * MINUTE,
        start + 40 * HOUR + 3 * MINUTE,
        MINUTE,
    );
    assert_eq!(
        store.count_results("api").expect("count"),
        25_000,
        "raw rows are kept"
    );
    let counts = store.counts_all(at(start), at(end)).expect("counts");
    assert_eq!((counts["api"].count, counts["db"].count), (25_000, 1));
    drop(store);

    // Backfilled once: opening again changes nothing, and new results are
    // added to the same rollups.
    let mut store = Store::open(&path).expect("reopen");
    let more = runs(end + 1_000, 5_000, 10);
    let batch: Vec<ProbeResult> = more.iter().map(|r| as_result("api", r)).collect();
    store.insert_batch(&batch).expect("insert");
    let all: Vec<Run> = history.iter().chain(&more).copied().collect();
    assert_stats(&store, &all, start, end + HOUR, MINUTE);
}

#[test]
fn retention_settings_are_checked_with_file_line_and_key() {
    use lookout::config::{load_str, read::Cx};
    let load = |yaml: &str| load_str("lookout.yaml", yaml, Cx::new(Box::new(|_| None)));
    let storage = |retention: &str| format!("storage:\n  retention:\n{retention}probes: []\n");

    let (cfg, _) = load(&storage(
        "    raw: 7d\n    minute_rollups: 10d\n    rollups: 90d\n",
    ))
    .expect("valid");
    let s = &cfg.storage;
    let days = |n: u64| Duration::from_secs(n * 86_400);
    assert_eq!(
        (
            s.retention_raw,
            s.retention_minute_rollups,
            s.retention_rollups
        ),
        (days(7), days(10), days(90))
    );
    // Unset, minute rollups default to 30 days, or to `rollups` if shorter.
    let (cfg, _) = load("probes: []\n").expect("valid");
    assert_eq!(
        (
            cfg.storage.retention_minute_rollups,
            cfg.storage.retention_rollups
        ),
        (days(30), days(400))
    );
    let (cfg, _) = load(&storage("    rollups: 20d\n")).expect("valid");
    assert_eq!(cfg.storage.retention_minute_rollups, days(20));

    for (retention, line, key, words) in [
        (
            "    minute_rollups: 45d\n    rollups: 30d\n",
            3,
            "storage.retention.minute_rollups",
            "cannot be kept longer than hour rollups",
        ),
        (
            "    minute_rollups: 500d\n",
            3,
            "storage.retention.minute_rollups",
            "(storage.retention.rollups: 400d)",
        ),
        (
            "    rollups: 0s\n",
            3,
            "storage.retention.rollups",
            "longer than zero",
        ),
        (
            "    raw: 1d\n    minute_rollups: 0s\n",
            4,
            "storage.retention.minute_rollups",
            "longer than zero",
        ),
        (
            "    minute_rollup: 1d\n",
            3,
            "storage.retention.minute_rollup",
            "did you mean `minute_rollups`",
        ),
    ] {
        let diags = match load(&storage(retention)) {
            Ok(_) => panic!("accepted:\n{retention}"),
            Err(d) => d,
        };
        let d = &diags.0[0];
        assert_eq!(
            (d.file.as_str(), d.line, d.key.as_str()),
            ("lookout.yaml", line, key),
            "{retention}: {diags:?}"
        );
        assert!(
            d.message.contains(words),
            "`{words}` not in `{}`",
            d.message
        );
    }
}
