//! Integration tests: the history store and its recorder, against real
//! SQLite files in temporary folders: writes, retention, and the rollups
//! that answer window queries (exact counts, percentiles within 1%, old
//! raw rows swept, databases from before rollups backfilled). Another
//! `rusqlite` connection plays the part of whatever else can hold the
//! database (a backup, an operator's `sqlite3` shell).

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

// ---- Rollups and retention -------------------------------------------------

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// One run of the synthetic history, as the exact figures see it.
#[derive(Debug, Clone, Copy)]
struct Run {
    at_ms: i64,
    us: i64,
    ok: bool,
}

/// `n` runs of probe "api" every `every_ms` from `start_ms`, with durations
/// spread over 1 to ~400 ms (a long tail) and about 1 in 9 failed.
fn runs(start_ms: i64, every_ms: i64, n: usize) -> Vec<Run> {
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

fn as_result(probe: &str, r: &Run) -> ProbeResult {
    ProbeResult {
        probe: probe.into(),
        started_at: at(r.at_ms),
        duration: Duration::from_micros(r.us as u64),
        success: r.ok,
        failure: (!r.ok).then(|| Failure::new(FailureClass::Timeout, "no answer")),
        phases: Vec::new(),
        checks: Vec::new(),
        details: serde_json::Map::new(),
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
fn assert_stats(store: &Store, runs: &[Run], since: i64, until: i64, bucket: i64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_over_hours_of_history_are_the_exact_figures() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    // Five hours of runs every 7 s, ending a little before now, written by
    // the recorder in whatever batches it makes.
    let start = (Utc::now().timestamp_millis() - 6 * HOUR) / HOUR * HOUR + 17 * MINUTE + 3_000;
    let history = runs(start, 7_000, 5 * 3_600 / 7);
    let shutdown = CancellationToken::new();
    let store = Store::open(&path).expect("open");
    let (handle, task) = spawn_recorder(store, quick(), shutdown.clone());
    for r in &history {
        handle.record(as_result("api", r));
    }
    shutdown.cancel();
    assert_eq!(task.await.expect("recorder").written, history.len() as u64);

    let store = Store::open(&path).expect("open for reading");
    let end = history.last().map(|r| r.at_ms).unwrap_or(start) + 1;
    for (since, until) in [
        // Everything.
        (start - HOUR, end + HOUR),
        // Arbitrary edges, hours in the middle.
        (
            start + 37 * MINUTE + 13_456,
            start + 4 * HOUR + 2 * MINUTE + 55_000,
        ),
        // Inside one hour; across one hour boundary; a whole hour.
        (start + 61 * MINUTE, start + 95 * MINUTE),
        (start + 30 * MINUTE, start + 80 * MINUTE),
        (
            start - 17 * MINUTE - 3_000 + 2 * HOUR,
            start - 17 * MINUTE - 3_000 + 3 * HOUR,
        ),
    ] {
        assert_stats(&store, &history, since, until, MINUTE);
    }

    // The series splits the same runs into steps; each step is exact too.
    let (since, step) = (start - 17 * MINUTE - 3_000, 30 * MINUTE);
    let series = store
        .latency_series(
            "api",
            at(since),
            at(since + 12 * step),
            Duration::from_secs(1_800),
        )
        .expect("series");
    assert_eq!(series.len(), 12);
    for (i, point) in series.iter().enumerate() {
        let lo = since + i as i64 * step;
        let n = history
            .iter()
            .filter(|r| r.at_ms >= lo && r.at_ms < lo + step)
            .count() as u64;
        assert_eq!(point.count, n, "step {i}");
    }
    let counts = store.counts_all(at(since), at(end)).expect("counts");
    assert_eq!(counts["api"].count, history.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_raw_rows_are_swept_but_their_stats_still_answer_from_rollups() {
    let dir = TempDir::new().expect("temp dir");
    let path = db(&dir);
    let now = Utc::now().timestamp_millis();
    let hour_at = |days: i64| (now - days * 86_400_000) / HOUR * HOUR;
    // Three hours of runs every 30 s at 20 days old (past raw retention:
    // minute rollups remain), 40 days old (past minute retention too: hour
    // rollups remain) and 500 days old (past every retention).
    let recent_old = runs(hour_at(20) + 5 * MINUTE, 30_000, 360);
    let older = runs(hour_at(40) + 5 * MINUTE, 30_000, 360);
    let ancient = runs(hour_at(500), 30_000, 100);
    let mut store = Store::open(&path).expect("open");
    let batch: Vec<ProbeResult> = [&recent_old, &older, &ancient]
        .into_iter()
        .flatten()
        .map(|r| as_result("api", r))
        .collect();
    store.insert_batch(&batch).expect("seed history");
    assert_stats(
        &store,
        &older,
        hour_at(40) + 20 * MINUTE,
        hour_at(40) + 150 * MINUTE,
        MINUTE,
    );

    let settings = RecorderSettings {
        retention_minute_rollups: Duration::from_secs(30 * 86_400),
        ..quick()
    };
    let shutdown = CancellationToken::new();
    let (handle, task) = spawn_recorder(store, settings, shutdown.clone());
    let ancient_gone = || {
        Store::open(&path)
            .expect("open")
            .stats("api", at(hour_at(501)), at(hour_at(499)))
            .expect("stats")
            .count
            == 0
    };
    eventually("every raw row and the oldest rollups to be swept", || {
        rows(&path, "api") == 0 && ancient_gone()
    })
    .await;
    assert_eq!(handle.counters().swept, batch.len() as u64);
    shutdown.cancel();
    task.await.expect("recorder");

    let store = Store::open(&path).expect("open");
    // 20 days old: minute resolution, even at arbitrary edges.
    assert_stats(
        &store,
        &recent_old,
        hour_at(20) + 20 * MINUTE + 1,
        hour_at(20) + 150 * MINUTE,
        MINUTE,
    );
    assert_stats(&store, &recent_old, hour_at(21), hour_at(19), MINUTE);
    // 40 days old: hour resolution (an hour counts where it starts).
    assert_stats(
        &store,
        &older,
        hour_at(40) + 20 * MINUTE,
        hour_at(40) + 150 * MINUTE,
        HOUR,
    );
    assert_stats(&store, &older, hour_at(41), hour_at(39), HOUR);
    assert_eq!(store.probe_names().expect("names"), vec!["api"]);
}

/// Turns a current database back into what Lookout wrote before rollups
/// (schema version 3): its raw rows, no rollup tables.
fn make_version_3(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "DROP TABLE rollups_minute; DROP TABLE rollups_hour; DROP TABLE rollups_day; \
         DROP TABLE rollup_meta; DROP TABLE events; \
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
    assert_eq!(store.schema_version().expect("version"), 7);
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
