//! Unit tests of [`Store`] against real database files in temporary
//! folders.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::result::{Check, Failure, FailureClass, Phase};

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
    }
}

fn failed(probe: &str, started_ms: i64, duration: Duration) -> ProbeResult {
    ProbeResult {
        success: false,
        failure: Some(Failure::new(FailureClass::Timeout, "no answer within 10s")),
        ..ok(probe, started_ms, duration)
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
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    assert_eq!(store.probe_names().expect("names"), Vec::<String>::new());
}

#[test]
fn reopening_keeps_the_data() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut store = open(&dir);
        store
            .insert_batch(&[
                ok("api", 1_000, Duration::from_millis(5)),
                ok("db", 2_000, Duration::from_millis(7)),
            ])
            .expect("insert");
    }
    let mut store = open(&dir);
    assert_eq!(store.probe_names().expect("names"), vec!["api", "db"]);
    assert_eq!(store.count_results("api").expect("count"), 1);
    // A reopened store resolves existing probe names rather than adding
    // them again.
    store
        .insert_batch(&[ok("api", 3_000, Duration::from_millis(5))])
        .expect("insert");
    assert_eq!(store.count_results("api").expect("count"), 2);
    let probes: i64 = store
        .conn
        .query_row("SELECT count(*) FROM probes", [], |r| r.get(0))
        .expect("count probes");
    assert_eq!(probes, 2);
}

#[test]
fn a_result_round_trips_with_phases_details_and_failed_checks() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let mut details = serde_json::Map::new();
    details.insert("status".into(), json!(503));
    details.insert("bytes".into(), json!(1234));
    details.insert("answers".into(), json!(["10.0.0.1", "10.0.0.2"]));
    let result = ProbeResult {
        probe: "checkout-api".into(),
        started_at: at(1_700_000_000_123),
        duration: Duration::from_micros(45_678),
        success: false,
        failure: Some(Failure::new(
            FailureClass::Expectation,
            "status 2xx: got 503",
        )),
        phases: vec![
            (Phase::Dns, Duration::from_micros(1_200)),
            (Phase::Connect, Duration::from_micros(800)),
            (Phase::Tls, Duration::from_micros(9_000)),
            (Phase::FirstByte, Duration::from_micros(30_000)),
            (Phase::Transfer, Duration::from_micros(4_000)),
        ],
        checks: vec![
            Check {
                expectation: "status 2xx".into(),
                passed: false,
                observed: "got 503".into(),
            },
            Check {
                expectation: "latency < 800ms".into(),
                passed: true,
                observed: "45.7ms".into(),
            },
        ],
        details,
    };
    store
        .insert_batch(std::slice::from_ref(&result))
        .expect("insert");

    let back = store
        .last_result("checkout-api")
        .expect("read")
        .expect("one result");
    // Passed checks are not stored; everything else comes back as written.
    let expected = ProbeResult {
        checks: vec![result.checks[0].clone()],
        ..result
    };
    assert_eq!(back, expected);
}

#[test]
fn absent_parts_are_stored_as_null() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let mut r = ok("api", 1_000, Duration::from_millis(3));
    r.checks.push(Check {
        expectation: "status 2xx".into(),
        passed: true,
        observed: "got 200".into(),
    });
    store.insert_batch(&[r]).expect("insert");
    let nulls: i64 = store
        .conn
        .query_row(
            "SELECT (class IS NULL) + (message IS NULL) + (phases IS NULL) \
             + (details IS NULL) + (checks IS NULL) FROM results",
            [],
            |row| row.get(0),
        )
        .expect("query");
    assert_eq!(nulls, 5);
}

#[test]
fn recent_is_newest_first_and_limited_to_one_probe() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let batch: Vec<ProbeResult> = (0..10)
        .map(|i| {
            ok(
                if i % 2 == 0 { "a" } else { "b" },
                i * 1_000,
                Duration::from_millis(1),
            )
        })
        .collect();
    store.insert_batch(&batch).expect("insert");
    let got: Vec<i64> = store
        .recent("a", 3)
        .expect("recent")
        .iter()
        .map(|r| r.started_at.timestamp_millis())
        .collect();
    assert_eq!(got, vec![8_000, 6_000, 4_000]);
    assert!(store.recent("nobody", 10).expect("recent").is_empty());
    assert_eq!(store.last_result("nobody").expect("last"), None);

    let between: Vec<i64> = store
        .results_between("a", at(2_000), at(8_000), 100)
        .expect("between")
        .iter()
        .map(|r| r.started_at.timestamp_millis())
        .collect();
    assert_eq!(
        between,
        vec![6_000, 4_000, 2_000],
        "since is inclusive, until exclusive"
    );
}

#[test]
fn stats_use_nearest_rank_percentiles_over_the_window() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    // Durations 1..=100 ms, shuffled in time; every tenth run failed.
    let batch: Vec<ProbeResult> = (1..=100i64)
        .map(|ms| {
            let start = ((ms * 37) % 100) * 1_000;
            let d = Duration::from_millis(ms as u64);
            if ms % 10 == 0 {
                failed("api", start, d)
            } else {
                ok("api", start, d)
            }
        })
        .collect();
    store.insert_batch(&batch).expect("insert");
    // A run outside the window must not count.
    store
        .insert_batch(&[
            ok("api", 100_000, Duration::from_secs(60)),
            ok("other", 5_000, Duration::from_secs(9)),
        ])
        .expect("insert");

    let s = store.stats("api", at(0), at(100_000)).expect("stats");
    let ms = |n: u64| Some(Duration::from_millis(n));
    assert_eq!(s.count, 100);
    assert_eq!(s.failures, 10);
    assert_eq!(s.uptime, Some(0.9));
    assert_eq!(s.min, ms(1));
    assert_eq!(s.max, ms(100));
    assert_eq!(s.mean, Some(Duration::from_micros(50_500)));
    assert_eq!((s.p50, s.p95, s.p99), (ms(50), ms(95), ms(99)));

    // Nearest rank on a small set: p50 of 4 values is the 2nd, p95/p99 the 4th.
    let s = store.stats("other", at(0), at(100_000)).expect("stats");
    assert_eq!(
        (s.count, s.p50, s.p99),
        (
            1,
            Some(Duration::from_secs(9)),
            Some(Duration::from_secs(9))
        )
    );
    let small = window_stats(vec![40, 10, 30, 20], 1);
    assert_eq!(
        (small.p50, small.p95, small.p99, small.uptime),
        (
            Some(Duration::from_micros(20)),
            Some(Duration::from_micros(40)),
            Some(Duration::from_micros(40)),
            Some(0.75)
        )
    );
}

#[test]
fn stats_of_an_empty_window_have_no_figures() {
    let dir = TempDir::new().expect("temp dir");
    let store = open(&dir);
    let s = store.stats("api", at(0), at(1_000)).expect("stats");
    assert_eq!(s, WindowStats::default());
    assert_eq!((s.count, s.uptime, s.p50), (0, None, None));
}

#[test]
fn sweep_deletes_only_rows_older_than_the_cutoff() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let now = Utc::now();
    let old = (now - TimeDelta::days(20)).timestamp_millis();
    let new = (now - TimeDelta::days(1)).timestamp_millis();
    let mut batch = Vec::new();
    for i in 0..7 {
        batch.push(ok("a", old + i, Duration::from_millis(1)));
        batch.push(ok("b", old + i, Duration::from_millis(1)));
    }
    for i in 0..3 {
        batch.push(ok("a", new + i, Duration::from_millis(1)));
    }
    store.insert_batch(&batch).expect("insert");

    let cutoff = now - TimeDelta::days(14);
    // In chunks: never more than the limit per call, across probes.
    assert_eq!(store.sweep_chunk(cutoff, 5).expect("chunk"), 5);
    assert_eq!(store.sweep(cutoff).expect("sweep"), 9);
    assert_eq!(store.sweep(cutoff).expect("sweep again"), 0);

    assert_eq!(store.count_results("a").expect("count"), 3);
    assert_eq!(store.count_results("b").expect("count"), 0);
    let kept: Vec<i64> = store
        .recent("a", 10)
        .expect("recent")
        .iter()
        .map(|r| r.started_at.timestamp_millis())
        .collect();
    assert_eq!(kept, vec![new + 2, new + 1, new]);
    assert_eq!(
        store.probe_names().expect("names"),
        vec!["a"],
        "a probe with no rows left has no history"
    );
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
            .conn
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
