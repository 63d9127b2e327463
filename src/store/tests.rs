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

/// `got` is within the sketch's relative error of `want`.
fn near(got: Option<Duration>, want: Duration) -> bool {
    got.is_some_and(|g| {
        let (g, w) = (g.as_secs_f64(), want.as_secs_f64());
        (g - w).abs() <= w * sketch::RELATIVE_ERROR * (1.0 + 1e-9)
    })
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
    // A run outside the window (in the next minute) must not count.
    store
        .insert_batch(&[
            ok("api", 120_000, Duration::from_secs(60)),
            ok("other", 5_000, Duration::from_secs(9)),
        ])
        .expect("insert");

    let s = store.stats("api", at(0), at(120_000)).expect("stats");
    let ms = Duration::from_millis;
    assert_eq!(s.count, 100);
    assert_eq!(s.failures, 10);
    assert_eq!(s.uptime, Some(0.9));
    assert_eq!(s.min, Some(ms(1)));
    assert_eq!(s.max, Some(ms(100)));
    assert_eq!(s.mean, Some(Duration::from_micros(50_500)));
    assert!(near(s.p50, ms(50)), "p50 {:?}", s.p50);
    assert!(near(s.p95, ms(95)), "p95 {:?}", s.p95);
    assert!(near(s.p99, ms(99)), "p99 {:?}", s.p99);

    // One run: every percentile is that run, exactly (kept within min..max).
    let s = store.stats("other", at(0), at(100_000)).expect("stats");
    assert_eq!(
        (s.count, s.p50, s.p99),
        (
            1,
            Some(Duration::from_secs(9)),
            Some(Duration::from_secs(9))
        )
    );
}

#[test]
fn rollups_are_built_as_results_arrive() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let hour = 3_600_000;
    // Two batches touching the same minute and hour, and a second hour.
    store
        .insert_batch(&[
            ok("api", hour + 1_000, Duration::from_millis(10)),
            failed("api", hour + 2_000, Duration::from_millis(30)),
        ])
        .expect("insert");
    store
        .insert_batch(&[
            ok("api", hour + 3_000, Duration::from_millis(20)),
            ok("api", 2 * hour + 5, Duration::from_millis(5)),
        ])
        .expect("insert");
    let rows = |table: &str| -> Vec<(i64, i64, i64, i64, i64, i64, bool)> {
        store
            .conn
            .prepare(&format!(
                "SELECT start, count, failures, min_us, max_us, sum_us, sketch IS NULL \
                 FROM {table} ORDER BY start"
            ))
            .expect("prepare")
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    // A single-valued row stores no sketch: it is `count` times `min`.
    let want = vec![
        (hour, 3, 1, 10_000, 30_000, 60_000, false),
        (2 * hour, 1, 0, 5_000, 5_000, 5_000, true),
    ];
    assert_eq!(rows("rollups_minute"), want);
    assert_eq!(rows("rollups_hour"), want);
    let s = store.stats("api", at(0), at(3 * hour)).expect("stats");
    assert_eq!((s.count, s.failures), (4, 1));
    assert!(near(s.p50, Duration::from_millis(10)), "{:?}", s.p50);
}

#[test]
fn series_and_counts_come_from_the_rollups() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let minute = 60_000;
    // "a": one run a minute for two hours, 10 ms, every fifth failed.
    let batch: Vec<ProbeResult> = (0..120)
        .map(|i| {
            let d = Duration::from_millis(10);
            if i % 5 == 0 {
                failed("a", i * minute + 7, d)
            } else {
                ok("a", i * minute + 7, d)
            }
        })
        .chain([ok("b", 30 * minute, Duration::from_millis(1))])
        .collect();
    store.insert_batch(&batch).expect("insert");

    let series = store
        .latency_series("a", at(0), at(120 * minute), Duration::from_secs(1_800))
        .expect("series");
    assert_eq!(series.len(), 4);
    for (i, p) in series.iter().enumerate() {
        assert_eq!(p.start, at(i as i64 * 30 * minute));
        assert_eq!((p.count, p.failures), (30, 6));
        assert_eq!(p.p95, Some(Duration::from_millis(10)));
    }
    // Steps shorter than a minute count as a minute.
    let fine = store
        .latency_series("a", at(0), at(3 * minute), Duration::from_secs(1))
        .expect("series");
    assert_eq!(
        fine.iter().map(|p| p.count).collect::<Vec<_>>(),
        vec![1, 1, 1]
    );
    let none = store
        .latency_series("nobody", at(0), at(2 * minute), Duration::from_secs(60))
        .expect("series");
    assert_eq!((none.len(), none[0].count, none[0].p50), (2, 0, None));

    let all = store.counts_all(at(0), at(60 * minute)).expect("counts");
    assert_eq!(all.len(), 2);
    assert_eq!(
        all["a"],
        Counts {
            count: 60,
            failures: 12
        }
    );
    assert_eq!(
        all["b"],
        Counts {
            count: 1,
            failures: 0
        }
    );
    assert_eq!(all["a"].uptime(), Some(0.8));
    let later = store
        .counts_all(at(60 * minute), at(90 * minute))
        .expect("counts");
    assert_eq!(later.keys().collect::<Vec<_>>(), vec!["a"]);
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
        vec!["a", "b"],
        "a probe whose raw rows are gone still has history in its rollups"
    );
    let s = store
        .stats("b", now - TimeDelta::days(21), now)
        .expect("stats");
    assert_eq!(s.count, 7, "swept runs are still counted");
}

#[test]
fn the_sweep_deletes_expired_rollups_and_windows_fall_back_to_hours() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let hour = 3_600_000;
    let now = Utc::now();
    let base = (now - TimeDelta::days(60)).timestamp_millis() / hour * hour;
    // Runs at minutes 10 and 50 of one hour 60 days ago, and one recent.
    store
        .insert_batch(&[
            ok("a", base + 10 * 60_000, Duration::from_millis(4)),
            ok("a", base + 50 * 60_000, Duration::from_millis(8)),
            ok(
                "a",
                now.timestamp_millis() - 60_000,
                Duration::from_millis(2),
            ),
        ])
        .expect("insert");
    // Before the sweep, a window of minutes 0..30 holds one run.
    let half = |store: &Store| {
        store
            .stats("a", at(base), at(base + 30 * 60_000))
            .expect("stats")
            .count
    };
    assert_eq!(half(&store), 1);

    let cutoffs = SweepCutoffs {
        raw: Some(now - TimeDelta::days(14)),
        minute_rollups: Some(now - TimeDelta::days(30)),
        hour_rollups: Some(now - TimeDelta::days(400)),
    };
    let swept = store.sweep_step(&cutoffs, 1_000).expect("sweep");
    assert_eq!(
        swept,
        Swept {
            raw: 2,
            minute_rollups: 2,
            ..Swept::default()
        }
    );
    // Minute rows are gone: the hour counts where it starts.
    assert_eq!(half(&store), 2);
    let s = store
        .stats("a", at(base + 5 * 60_000), at(base + 55 * 60_000))
        .expect("stats");
    assert_eq!(s.count, 0, "the hour starts before this window");

    // In chunks: the limit holds across kinds.
    let cutoffs = SweepCutoffs {
        hour_rollups: Some(now - TimeDelta::days(40)),
        ..cutoffs
    };
    let steps: Vec<Swept> = (0..3)
        .map(|_| store.sweep_step(&cutoffs, 1).expect("sweep"))
        .collect();
    assert_eq!(
        steps,
        [
            Swept {
                hour_rollups: 1,
                ..Swept::default()
            },
            Swept {
                day_counts: 1,
                ..Swept::default()
            },
            Swept::default()
        ]
    );
    let s = store
        .stats("a", at(base), at(now.timestamp_millis()))
        .expect("stats");
    assert_eq!(s.count, 1, "only the recent run is left");
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
         ALTER TABLE incidents DROP COLUMN ended_by; \
         PRAGMA user_version = 3;",
    )
    .expect("downgrade");
    schema::migrate(&mut conn).expect("migrate");
    let mut store = Store {
        conn,
        path: path.clone(),
        probe_ids: HashMap::new(),
    };
    let cutoffs = SweepCutoffs {
        raw: Some(now - TimeDelta::days(14)),
        ..SweepCutoffs::default()
    };
    assert_eq!(store.sweep_step(&cutoffs, 1_000).expect("sweep").raw, 0);
    assert_eq!(store.count_results("api").expect("count"), 100);

    rollup::backfill(&mut store.conn, &path).expect("backfill");
    assert_eq!(store.sweep_step(&cutoffs, 1_000).expect("sweep").raw, 100);
    let s = store.stats("api", at(old - 60_000), now).expect("stats");
    assert_eq!((s.count, s.min), (100, Some(Duration::from_millis(3))));
}

#[test]
fn counts_over_days_agree_with_stats() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    let day = 86_400_000;
    // One run every 7 minutes for five days; every third failed.
    let batch: Vec<ProbeResult> = (0..5 * 24 * 60 / 7)
        .map(|i| {
            let t = 10 * day + i * 7 * 60_000 + 11;
            if i % 3 == 0 {
                failed("a", t, Duration::from_millis(2))
            } else {
                ok("a", t, Duration::from_millis(2))
            }
        })
        .collect();
    store.insert_batch(&batch).expect("insert");
    for (since, until) in [
        (10 * day, 15 * day),
        (
            10 * day + 3_600_000 * 5 + 60_000 * 13,
            14 * day + 3_600_000 * 2 + 60_000 * 3 + 5,
        ),
        (11 * day + 60_000 * 30, 11 * day + 60_000 * 90),
    ] {
        let s = store.stats("a", at(since), at(until)).expect("stats");
        let c = store.counts_all(at(since), at(until)).expect("counts");
        assert_eq!(
            c["a"],
            Counts {
                count: s.count,
                failures: s.failures
            },
            "{since}..{until}"
        );
    }
    let all = store.counts_all(at(0), at(20 * day)).expect("counts");
    assert_eq!(all["a"].count, batch.len() as u64);
}

#[test]
fn a_damaged_sketch_falls_back_to_the_mean_instead_of_failing() {
    let dir = TempDir::new().expect("temp dir");
    let mut store = open(&dir);
    store
        .insert_batch(&[
            ok("api", 1_000, Duration::from_millis(10)),
            ok("api", 2_000, Duration::from_millis(30)),
        ])
        .expect("insert");
    store
        .conn
        .execute_batch(
            "UPDATE rollups_minute SET sketch = x'ff00'; UPDATE rollups_hour SET sketch = x'01'",
        )
        .expect("damage the sketches");
    let s = store
        .stats("api", at(0), at(60_000))
        .expect("stats still answer");
    assert_eq!(
        (s.count, s.min, s.max),
        (
            2,
            Some(Duration::from_millis(10)),
            Some(Duration::from_millis(30))
        )
    );
    assert!(near(s.p50, Duration::from_millis(20)), "{:?}", s.p50);
    // Writing into the damaged rows works too.
    store
        .insert_batch(&[ok("api", 3_000, Duration::from_millis(40))])
        .expect("insert");
    assert_eq!(
        store.stats("api", at(0), at(60_000)).expect("stats").count,
        3
    );
}
