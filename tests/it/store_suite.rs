//! Integration tests: one suite of the history store's behaviour, run on
//! both backends behind `lookout::store::Store`: SQLite (a fresh file in a
//! temporary folder) and PostgreSQL (a fresh database per test on the
//! harness's shared server). `suite!` generates every test once per
//! backend, in `sqlite::` and `postgres::`, so the same body runs on both:
//! results, rollups and window queries, sweeps, the recorder, the outbox,
//! alerting state and incidents, events and result pages.
//!
//! `postgres_only::` holds what only several instances sharing one
//! PostgreSQL need: migrations run once by instances starting together, a
//! reconnect after the server closed the connection, leadership with its
//! epochs, and the results feed.
//!
//! Store methods never run on an async runtime thread (the PostgreSQL
//! client blocks): tests are plain `#[test]`s, and those that drive the
//! recorder read through `spawn_blocking`.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use lookout::alert::changes::ChangeEvent;
use lookout::alert::state::{Degradation, IncidentKind};
use lookout::alert::{Incident, Outgoing, ProbeState, Status};
use lookout::notify::{Notice, NoticeKind};
use lookout::result::{Check, Failure, FailureClass, Phase, ProbeResult};
use lookout::store::alert_state::IncidentQuery;
use lookout::store::outbox::{OutboxCounts, OutboxStatus};
use lookout::store::result_pages::PageQuery;
use lookout::store::{
    spawn_recorder, Counts, RecorderSettings, Store, StoreError, SweepCutoffs, Swept, WindowStats,
};
use serde_json::json;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::harness::postgres_server::{PgServer, MONITOR_PASSWORD, MONITOR_USER};
use crate::store::{
    as_result, assert_stats, quick, result as recent_result, runs, HOUR, MINUTE, RETENTION,
};

// ---- The backends ------------------------------------------------------------

/// The database one test runs on. Opens any number of stores on it, and
/// runs plain SQL on it for what the store's interface does not show
/// (NULL columns, rollup rows, damage, a trigger that refuses a row).
struct Backend {
    kind: Kind,
}

enum Kind {
    Sqlite(TempDir),
    /// A database of its own on the shared server, and the store's URL.
    Postgres {
        name: String,
        url: String,
    },
}

impl Backend {
    /// A new SQLite file in a temporary folder.
    fn sqlite() -> Backend {
        Backend {
            kind: Kind::Sqlite(TempDir::new().expect("temp dir")),
        }
    }

    /// A new, empty database on the shared PostgreSQL server, owned by the
    /// user the stores log in as.
    fn postgres() -> Backend {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let server = PgServer::shared();
        let name = format!(
            "store_suite_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        server.sql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {MONITOR_USER}"),
        );
        let url = format!(
            "postgres://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{}/{name}?sslmode=disable",
            server.port()
        );
        Backend {
            kind: Kind::Postgres { name, url },
        }
    }

    fn is_postgres(&self) -> bool {
        matches!(self.kind, Kind::Postgres { .. })
    }

    fn sqlite_path(dir: &TempDir) -> PathBuf {
        dir.path().join("history.db")
    }

    /// Another store on this database (PostgreSQL: connected, and the
    /// schema migrated, on first use).
    fn open(&self) -> Store {
        match &self.kind {
            Kind::Sqlite(dir) => {
                Store::open(Self::sqlite_path(dir)).expect("open the SQLite store")
            }
            Kind::Postgres { url, .. } => {
                Store::open_postgres(url).expect("open the PostgreSQL store")
            }
        }
    }

    /// Runs `sql` (statements without output) as an administrator would.
    fn exec(&self, sql: &str) {
        match &self.kind {
            Kind::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(Self::sqlite_path(dir)).expect("connect");
                conn.busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
            }
            Kind::Postgres { name, .. } => {
                PgServer::shared().sql(name, sql);
            }
        }
    }

    /// The rows of `sql`, whose every column is a non-NULL integer.
    fn ints(&self, sql: &str) -> Vec<Vec<i64>> {
        match &self.kind {
            Kind::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(Self::sqlite_path(dir)).expect("connect");
                let mut stmt = conn.prepare(sql).expect("prepare");
                let n = stmt.column_count();
                stmt.query_map([], |row| (0..n).map(|i| row.get::<_, i64>(i)).collect())
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
            }
            Kind::Postgres { name, .. } => PgServer::shared()
                .sql(name, sql)
                .lines()
                .map(|line| {
                    line.split('|')
                        .map(|v| {
                            v.parse()
                                .unwrap_or_else(|e| panic!("`{sql}` gave `{line}`: {e}"))
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// Runs `sql` as the superuser in this PostgreSQL database; its output.
    fn psql(&self, sql: &str) -> String {
        match &self.kind {
            Kind::Postgres { name, .. } => PgServer::shared().sql(name, sql),
            Kind::Sqlite(_) => panic!("psql on a SQLite backend"),
        }
    }
}

impl Drop for Backend {
    /// A passed test's database is dropped; a failed one's is left on the
    /// (throwaway) server to look at.
    fn drop(&mut self) {
        if let Kind::Postgres { name, .. } = &self.kind {
            if !std::thread::panicking() {
                PgServer::shared().sql(
                    "postgres",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                );
            }
        }
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` for each suite function
/// `NAME(Backend)`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::sqlite());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::postgres());
                }
            )*
        }
    };
}

suite!(
    reopening_keeps_the_data,
    a_result_round_trips_with_phases_details_and_failed_checks,
    absent_parts_are_stored_as_null,
    the_location_round_trips,
    stats_split_by_location,
    recent_is_newest_first_and_limited_to_one_probe,
    stats_use_nearest_rank_percentiles_over_the_window,
    rollups_are_built_as_results_arrive,
    series_and_counts_come_from_the_rollups,
    stats_of_an_empty_window_have_no_figures,
    sweep_deletes_only_rows_older_than_the_cutoff,
    the_sweep_deletes_expired_rollups_and_windows_fall_back_to_hours,
    a_failed_batch_writes_nothing,
    counts_over_days_agree_with_stats,
    a_damaged_sketch_falls_back_to_the_mean_instead_of_failing,
    result_pages_split_a_shared_millisecond_without_gaps_or_repeats,
    the_recorder_writes_every_result_it_was_given,
    shutdown_flushes_what_is_buffered,
    dropping_every_handle_flushes_and_stops_the_recorder,
    the_retention_sweep_runs_at_start_and_keeps_recent_rows,
    stats_over_hours_of_history_are_the_exact_figures,
    old_raw_rows_are_swept_but_their_stats_still_answer_from_rollups,
    the_outbox_moves_rows_from_pending_to_an_end,
    alert_state_incidents_and_their_notices_are_saved_together,
    incident_pages_split_a_shared_start_and_filter,
    events_round_trip_newest_first_within_the_range,
);

// ---- Results -----------------------------------------------------------------

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

fn failed(probe: &str, started_ms: i64, duration: Duration) -> ProbeResult {
    ProbeResult {
        success: false,
        failure: Some(Failure::new(FailureClass::Timeout, "no answer within 10s")),
        ..ok(probe, started_ms, duration)
    }
}

fn reopening_keeps_the_data(b: Backend) {
    {
        let mut store = b.open();
        store
            .insert_batch(&[
                ok("api", 1_000, Duration::from_millis(5)),
                ok("db", 2_000, Duration::from_millis(7)),
            ])
            .expect("insert");
    }
    let mut store = b.open();
    assert_eq!(store.probe_names().expect("names"), vec!["api", "db"]);
    assert_eq!(store.count_results("api").expect("count"), 1);
    // A reopened store resolves existing probe names rather than adding
    // them again.
    store
        .insert_batch(&[ok("api", 3_000, Duration::from_millis(5))])
        .expect("insert");
    assert_eq!(store.count_results("api").expect("count"), 2);
    assert_eq!(b.ints("SELECT count(*) FROM probes"), [[2]]);
}

fn a_result_round_trips_with_phases_details_and_failed_checks(b: Backend) {
    let mut store = b.open();
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
        location: None,
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

fn absent_parts_are_stored_as_null(b: Backend) {
    let mut store = b.open();
    let mut r = ok("api", 1_000, Duration::from_millis(3));
    r.checks.push(Check {
        expectation: "status 2xx".into(),
        passed: true,
        observed: "got 200".into(),
    });
    store
        .insert_batch(std::slice::from_ref(&r))
        .expect("insert");
    let null = |column: &str| format!("(CASE WHEN {column} IS NULL THEN 1 ELSE 0 END)");
    let sql = format!(
        "SELECT {} FROM results",
        ["class", "message", "phases", "details", "checks", "location"]
            .map(null)
            .join(" + ")
    );
    assert_eq!(b.ints(&sql), [[6]]);
    // And they come back empty.
    r.checks.clear();
    assert_eq!(store.last_result("api").expect("read"), Some(r));
}

fn the_location_round_trips(b: Backend) {
    let mut store = b.open();
    let west = ProbeResult {
        location: Some("eu-west".into()),
        ..failed("api", 1_000, Duration::from_millis(4))
    };
    let nowhere = ok("api", 2_000, Duration::from_millis(3));
    store
        .insert_batch(&[west.clone(), nowhere.clone()])
        .expect("insert");
    assert_eq!(
        store.recent("api", 10).expect("recent"),
        vec![nowhere.clone(), west.clone()]
    );
    let page = store
        .results_page(
            "api",
            &PageQuery {
                limit: 10,
                ..PageQuery::default()
            },
        )
        .expect("page");
    let locations: Vec<Option<&str>> = page.iter().map(|(_, r)| r.location.as_deref()).collect();
    assert_eq!(locations, [None, Some("eu-west")]);
    // A reader that connects afresh sees the same.
    let reader = b.open();
    assert_eq!(
        reader
            .results_between("api", at(0), at(1_500), 10)
            .expect("between"),
        vec![west]
    );
}

/// The split by location: per location (none first, then by name) its
/// runs, failures, uptime, latency bounds and latest run.
fn stats_split_by_location(b: Backend) {
    let mut store = b.open();
    let at_ms = |i: i64| 10_000 + i * 1_000;
    let mut batch = Vec::new();
    for i in 0..10 {
        let west = ProbeResult {
            location: Some("eu-west".into()),
            ..ok("api", at_ms(i), Duration::from_millis(10 + i as u64))
        };
        // us-east fails its last three runs.
        let east = ProbeResult {
            location: Some("us-east".into()),
            ..if i >= 7 {
                failed("api", at_ms(i), Duration::from_millis(100))
            } else {
                ok("api", at_ms(i), Duration::from_millis(100))
            }
        };
        batch.extend([west, east, ok("api", at_ms(i), Duration::from_millis(1))]);
    }
    batch.push(ok("other", at_ms(1), Duration::from_millis(1)));
    store.insert_batch(&batch).expect("insert");
    let split = store
        .stats_by_location("api", at(0), at(at_ms(10)))
        .expect("split");
    let names: Vec<Option<&str>> = split.iter().map(|l| l.location.as_deref()).collect();
    assert_eq!(names, [None, Some("eu-west"), Some("us-east")]);
    let counts: Vec<(u64, u64)> = split
        .iter()
        .map(|l| (l.stats.count, l.stats.failures))
        .collect();
    assert_eq!(counts, [(10, 0), (10, 0), (10, 3)]);
    let west = &split[1].stats;
    assert_eq!(west.min, Some(Duration::from_millis(10)));
    assert_eq!(west.max, Some(Duration::from_millis(19)));
    assert!(west
        .p50
        .is_some_and(|p| (Duration::from_millis(13)..=Duration::from_millis(15)).contains(&p)));
    assert_eq!(split[2].stats.uptime, Some(0.7));
    assert_eq!(split[2].last_success, Some(false));
    assert_eq!(split[2].last_at, Some(at(at_ms(9))));
    // A window without runs has no locations.
    assert!(store
        .stats_by_location("api", at(at_ms(20)), at(at_ms(30)))
        .expect("split")
        .is_empty());
}

fn recent_is_newest_first_and_limited_to_one_probe(b: Backend) {
    let mut store = b.open();
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
        (g - w).abs() <= w * lookout::store::sketch::RELATIVE_ERROR * (1.0 + 1e-9)
    })
}

fn stats_use_nearest_rank_percentiles_over_the_window(b: Backend) {
    let mut store = b.open();
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

fn rollups_are_built_as_results_arrive(b: Backend) {
    let mut store = b.open();
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
    let rows = |table: &str| {
        b.ints(&format!(
            "SELECT start, count, failures, min_us, max_us, sum_us, \
             CASE WHEN sketch IS NULL THEN 1 ELSE 0 END FROM {table} ORDER BY start"
        ))
    };
    // A single-valued row stores no sketch: it is `count` times `min`.
    let want = vec![
        vec![hour, 3, 1, 10_000, 30_000, 60_000, 0],
        vec![2 * hour, 1, 0, 5_000, 5_000, 5_000, 1],
    ];
    assert_eq!(rows("rollups_minute"), want);
    assert_eq!(rows("rollups_hour"), want);
    let s = store.stats("api", at(0), at(3 * hour)).expect("stats");
    assert_eq!((s.count, s.failures), (4, 1));
    assert!(near(s.p50, Duration::from_millis(10)), "{:?}", s.p50);
}

fn series_and_counts_come_from_the_rollups(b: Backend) {
    let mut store = b.open();
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

fn stats_of_an_empty_window_have_no_figures(b: Backend) {
    let store = b.open();
    let s = store.stats("api", at(0), at(1_000)).expect("stats");
    assert_eq!(s, WindowStats::default());
    assert_eq!((s.count, s.uptime, s.p50), (0, None, None));
}

fn sweep_deletes_only_rows_older_than_the_cutoff(b: Backend) {
    let mut store = b.open();
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

fn the_sweep_deletes_expired_rollups_and_windows_fall_back_to_hours(b: Backend) {
    let mut store = b.open();
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

fn a_failed_batch_writes_nothing(b: Backend) {
    let mut store = b.open();
    // Brings the schema up (PostgreSQL migrates on first use).
    assert!(store.probe_names().expect("names").is_empty());
    // The database refuses any row whose message is `refused`.
    b.exec(if b.is_postgres() {
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.message = 'refused' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON results FOR EACH ROW EXECUTE FUNCTION refuse();"
    } else {
        "CREATE TRIGGER refuse BEFORE INSERT ON results WHEN NEW.message = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
    });
    let refused = ProbeResult {
        failure: Some(Failure::new(FailureClass::Connect, "refused")),
        ..failed("a", 3_000, Duration::from_millis(1))
    };
    let err = store
        .insert_batch(&[
            ok("a", 1_000, Duration::from_millis(1)),
            ok("b", 2_000, Duration::from_millis(1)),
            refused,
        ])
        .expect_err("the third row is refused");
    assert!(err.to_string().contains("refused by the test"), "{err}");
    // Neither the rows before it, nor their probes, nor their rollups.
    assert_eq!(store.count_results("a").expect("count"), 0);
    assert_eq!(store.count_results("b").expect("count"), 0);
    assert!(store.probe_names().expect("names").is_empty());
    assert_eq!(store.stats("a", at(0), at(60_000)).expect("stats").count, 0);
    assert_eq!(b.ints("SELECT count(*) FROM probes"), [[0]]);

    // The same probes written again get rows of their own.
    store
        .insert_batch(&[
            ok("a", 4_000, Duration::from_millis(1)),
            ok("b", 5_000, Duration::from_millis(1)),
        ])
        .expect("insert");
    assert_eq!(store.probe_names().expect("names"), vec!["a", "b"]);
    assert_eq!(store.count_results("a").expect("count"), 1);
    assert_eq!(store.stats("b", at(0), at(60_000)).expect("stats").count, 1);
}

fn counts_over_days_agree_with_stats(b: Backend) {
    let mut store = b.open();
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

fn a_damaged_sketch_falls_back_to_the_mean_instead_of_failing(b: Backend) {
    let mut store = b.open();
    store
        .insert_batch(&[
            ok("api", 1_000, Duration::from_millis(10)),
            ok("api", 2_000, Duration::from_millis(30)),
        ])
        .expect("insert");
    b.exec(if b.is_postgres() {
        "UPDATE rollups_minute SET sketch = '\\xff00'::bytea; \
         UPDATE rollups_hour SET sketch = '\\x01'::bytea"
    } else {
        "UPDATE rollups_minute SET sketch = x'ff00'; UPDATE rollups_hour SET sketch = x'01'"
    });
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

fn result_pages_split_a_shared_millisecond_without_gaps_or_repeats(b: Backend) {
    let mut store = b.open();
    // 7 rows in the same millisecond between others, and another probe.
    let mut rows: Vec<ProbeResult> = (0..7)
        .map(|i| ok("web", 5_000, Duration::from_millis(i + 1)))
        .collect();
    rows.extend([1_000, 9_000, 4_999, 5_001].map(|t| failed("web", t, Duration::from_millis(9))));
    rows.push(ok("db", 5_000, Duration::from_millis(1)));
    store.insert_batch(&rows).expect("insert");

    // Every page of `q`, walked with the cursor; the positions seen.
    let walk = |mut q: PageQuery| {
        let mut seen = Vec::new();
        loop {
            let page = store.results_page("web", &q).expect("page");
            let Some((last, _)) = page.last() else {
                return seen;
            };
            q.before = Some(*last);
            seen.extend(page.iter().map(|(c, r)| {
                assert_eq!(c.started_at_ms, r.started_at.timestamp_millis());
                (c.started_at_ms, c.id)
            }));
        }
    };
    for limit in [1, 2, 3, 100] {
        let seen = walk(PageQuery {
            limit,
            ..PageQuery::default()
        });
        assert_eq!(seen.len(), 11, "limit {limit}: {seen:?}");
        let mut sorted = seen.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(sorted, seen, "limit {limit}: newest first, no repeats");
    }
    // The window is [since, until).
    let seen = walk(PageQuery {
        since: Some(at(4_999)),
        until: Some(at(5_001)),
        limit: 2,
        ..PageQuery::default()
    });
    let times: Vec<i64> = seen.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [[5_000; 7].as_slice(), &[4_999]].concat());
}

// ---- The recorder ------------------------------------------------------------

/// The runtime a recorder test drives the recorder on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A store read from async code, on blocking threads, as the API does.
#[derive(Clone)]
struct Reader(Arc<Mutex<Store>>);

impl Reader {
    fn new(store: Store) -> Reader {
        Reader(Arc::new(Mutex::new(store)))
    }

    async fn with<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> T + Send + 'static) -> T {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || {
            f(&store.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .expect("reading thread")
    }

    /// Rows of `probe`, as a reader (the API, `lookout history`) sees them.
    async fn rows(&self, probe: &'static str) -> u64 {
        self.with(move |s| s.count_results(probe).expect("count"))
            .await
    }
}

/// Polls `cond` until it holds, failing the test after a generous deadline.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn the_recorder_writes_every_result_it_was_given(b: Backend) {
    let store = b.open();
    let probes = ["api", "db", "dns", "tls", "tcp"];
    let report = runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let (handle, task) =
            spawn_recorder(store, RecorderSettings::new(RETENTION), shutdown.clone());
        for i in 0..5_000i64 {
            handle.record(recent_result(probes[i as usize % probes.len()], i));
        }
        shutdown.cancel();
        task.await.expect("recorder task")
    });

    assert_eq!(report.written, 5_000);
    assert_eq!((report.dropped, report.still_buffered), (0, 0));
    let store = b.open();
    assert_eq!(
        store.probe_names().expect("names"),
        vec!["api", "db", "dns", "tcp", "tls"]
    );
    for p in probes {
        assert_eq!(store.count_results(p).expect("count"), 1_000, "rows of {p}");
    }
    // What was written is what was recorded.
    let newest = store.last_result("api").expect("read").expect("a result");
    assert_eq!(newest, recent_result("api", 4_995));
}

fn shutdown_flushes_what_is_buffered(b: Backend) {
    let store = b.open();
    let reader = Reader::new(b.open());
    // Nothing would be written before an hour or 10,000 results: only the
    // shutdown flush can write these.
    let settings = RecorderSettings {
        flush_interval: Duration::from_secs(3_600),
        flush_threshold: 10_000,
        ..RecorderSettings::new(RETENTION)
    };
    runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn_recorder(store, settings, shutdown.clone());
        for i in 0..300 {
            handle.record(recent_result("api", i));
        }
        eventually("the recorder to take the results", || {
            let buffered = handle.counters().buffered;
            async move { buffered == 300 }
        })
        .await;
        assert_eq!(reader.rows("api").await, 0);

        shutdown.cancel();
        let report = task.await.expect("recorder task");
        assert_eq!(
            (report.written, report.dropped, report.still_buffered),
            (300, 0, 0)
        );
        assert_eq!(reader.rows("api").await, 300);

        // Recording after the recorder stopped loses the result, visibly.
        handle.record(recent_result("api", 300));
        assert_eq!(handle.counters().dropped, 1);
    });
}

fn dropping_every_handle_flushes_and_stops_the_recorder(b: Backend) {
    let store = b.open();
    let settings = RecorderSettings {
        flush_interval: Duration::from_secs(3_600),
        ..RecorderSettings::new(RETENTION)
    };
    let report = runtime().block_on(async {
        let (handle, task) = spawn_recorder(store, settings, CancellationToken::new());
        let other = handle.clone();
        for i in 0..10 {
            handle.record(recent_result("api", i));
            other.record(recent_result("db", i));
        }
        drop(handle);
        drop(other);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the recorder stops once every handle is gone")
            .expect("recorder task")
    });
    assert_eq!(report.written, 20);
    let store = b.open();
    assert_eq!(
        (
            store.count_results("api").expect("count"),
            store.count_results("db").expect("count")
        ),
        (10, 10)
    );
}

fn the_retention_sweep_runs_at_start_and_keeps_recent_rows(b: Backend) {
    let mut store = b.open();
    let old = |i: i64| ProbeResult {
        started_at: Utc::now() - TimeDelta::days(20) + TimeDelta::milliseconds(i),
        ..recent_result("api", i)
    };
    let batch: Vec<ProbeResult> = (0..12_000)
        .map(old)
        .chain((0..50).map(|i| recent_result("api", i)))
        .collect();
    store.insert_batch(&batch).expect("seed history");
    let reader = Reader::new(b.open());

    let report = runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn_recorder(store, quick(), shutdown.clone());
        // The sweep deletes in chunks while new results keep being written.
        for i in 50..100 {
            handle.record(recent_result("api", i));
        }
        eventually("old rows to be swept", || {
            let reader = reader.clone();
            async move { reader.rows("api").await == 100 }
        })
        .await;
        eventually("the sweep to be counted", || {
            let swept = handle.counters().swept;
            async move { swept == 12_000 }
        })
        .await;
        shutdown.cancel();
        task.await.expect("recorder task")
    });
    assert_eq!(report.written, 50);
}

// ---- Rollups against exact figures (the history of `store.rs`) ----------------

fn stats_over_hours_of_history_are_the_exact_figures(b: Backend) {
    // Five hours of runs every 7 s, ending a little before now, written by
    // the recorder in whatever batches it makes.
    let start = (Utc::now().timestamp_millis() - 6 * HOUR) / HOUR * HOUR + 17 * MINUTE + 3_000;
    let history = runs(start, 7_000, 5 * 3_600 / 7);
    let store = b.open();
    let report = runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn_recorder(store, quick(), shutdown.clone());
        for r in &history {
            handle.record(as_result("api", r));
        }
        shutdown.cancel();
        task.await.expect("recorder")
    });
    assert_eq!(report.written, history.len() as u64);

    let store = b.open();
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

fn old_raw_rows_are_swept_but_their_stats_still_answer_from_rollups(b: Backend) {
    let now = Utc::now().timestamp_millis();
    let hour_at = |days: i64| (now - days * 86_400_000) / HOUR * HOUR;
    // Three hours of runs every 30 s at 20 days old (past raw retention:
    // minute rollups remain), 40 days old (past minute retention too: hour
    // rollups remain) and 500 days old (past every retention).
    let recent_old = runs(hour_at(20) + 5 * MINUTE, 30_000, 360);
    let older = runs(hour_at(40) + 5 * MINUTE, 30_000, 360);
    let ancient = runs(hour_at(500), 30_000, 100);
    let mut store = b.open();
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
    let reader = Reader::new(b.open());
    runtime().block_on(async {
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn_recorder(store, settings, shutdown.clone());
        let (since, until) = (at(hour_at(501)), at(hour_at(499)));
        eventually("every raw row and the oldest rollups to be swept", || {
            let reader = reader.clone();
            async move {
                reader.rows("api").await == 0
                    && reader
                        .with(move |s| s.stats("api", since, until).expect("stats").count)
                        .await
                        == 0
            }
        })
        .await;
        assert_eq!(handle.counters().swept, batch.len() as u64);
        shutdown.cancel();
        task.await.expect("recorder");
    });

    let store = b.open();
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

// ---- The outbox --------------------------------------------------------------

fn notice(kind: NoticeKind, probe: &str, incident: Option<i64>) -> Notice {
    Notice {
        kind,
        probe: probe.into(),
        state: if kind == NoticeKind::Resolved {
            "up"
        } else {
            "down"
        }
        .into(),
        incident,
        ..Notice::test("hook", None)
    }
}

fn outgoing(notifier: &str, notice: Notice) -> Outgoing {
    Outgoing {
        notifier: notifier.into(),
        notice,
    }
}

fn the_outbox_moves_rows_from_pending_to_an_end(b: Backend) {
    let mut store = b.open();
    let now = at(1_700_000_000_000);
    let second = TimeDelta::seconds(1);
    let items = [
        outgoing("hook", notice(NoticeKind::Opened, "api", Some(7))),
        outgoing("mail", notice(NoticeKind::Opened, "api", Some(7))),
    ];
    let ids = store.enqueue(&items, now).expect("enqueue");
    assert_eq!(ids.len(), 2);
    let (first, other) = (ids[0], ids[1]);
    assert!(store.enqueue(&[], now).expect("nothing").is_empty());

    let row = store.outbox_row(first).expect("row").expect("exists");
    assert_eq!(
        (
            row.notifier.as_str(),
            row.probe.as_str(),
            row.kind.as_str(),
            row.status,
            row.attempts,
            row.created_at,
            row.next_attempt_at
        ),
        ("hook", "api", "opened", OutboxStatus::Pending, 0, now, now)
    );
    assert_eq!(row.notice().expect("payload"), items[0].notice);
    assert_eq!(store.outbox_row(first + 1_000).expect("row"), None);

    // Due from their creation, earliest first.
    let due = |store: &Store, t: DateTime<Utc>| -> Vec<i64> {
        store
            .due(t, 10)
            .expect("due")
            .iter()
            .map(|r| r.id)
            .collect()
    };
    assert!(due(&store, now - second).is_empty());
    assert_eq!(due(&store, now), [first, other]);
    assert_eq!(store.due(now, 1).expect("due").len(), 1, "the limit holds");

    // A transient failure: pending, counted, due later.
    store
        .reschedule(first, 1, now + TimeDelta::seconds(60), "HTTP 500")
        .expect("reschedule");
    assert_eq!(due(&store, now), [other]);
    assert_eq!(due(&store, now + TimeDelta::seconds(60)), [other, first]);
    let row = store.outbox_row(first).expect("row").expect("exists");
    assert_eq!(
        (row.status, row.attempts, row.last_error.as_deref()),
        (OutboxStatus::Pending, 1, Some("HTTP 500"))
    );

    // Delivered, with the receiver's answer.
    store
        .mark_delivered(other, "200 OK", now + second)
        .expect("delivered");
    let row = store.outbox_row(other).expect("row").expect("exists");
    assert_eq!(
        (
            row.status,
            row.attempts,
            row.delivered_at,
            row.answer.as_deref()
        ),
        (
            OutboxStatus::Delivered,
            1,
            Some(now + second),
            Some("200 OK")
        )
    );

    // A permanent failure is final: a late reschedule changes nothing.
    store.mark_failed(first, "HTTP 404").expect("failed");
    store
        .reschedule(first, 9, now, "too late")
        .expect("reschedule");
    let row = store.outbox_row(first).expect("row").expect("exists");
    assert_eq!(
        (row.status, row.attempts, row.last_error.as_deref()),
        (OutboxStatus::Failed, 2, Some("HTTP 404"))
    );
    assert!(due(&store, now + TimeDelta::hours(1)).is_empty());

    // Rows pending too long expire, with the reason and their last error.
    let stale = store
        .enqueue(
            &[outgoing("hook", notice(NoticeKind::Reminder, "db", None))],
            now - TimeDelta::days(2),
        )
        .expect("enqueue")[0];
    store
        .reschedule(stale, 3, now, "timed out")
        .expect("reschedule");
    assert_eq!(
        store
            .expire_older_than(now - TimeDelta::days(1))
            .expect("expire"),
        1
    );
    assert_eq!(
        store
            .expire_older_than(now - TimeDelta::days(1))
            .expect("expire"),
        0
    );
    let row = store.outbox_row(stale).expect("row").expect("exists");
    assert_eq!(row.status, OutboxStatus::Expired);
    let why = row.last_error.unwrap_or_default();
    assert!(
        why.starts_with("expired: not delivered after 3 attempt(s)")
            && why.ends_with("; last error: timed out"),
        "{why}"
    );

    // Notices sent while the database could not be written.
    let sent = outgoing("hook", notice(NoticeKind::Resolved, "api", Some(7)));
    let ok_id = store
        .record_sent(&sent, now, 1, &Ok("202 Accepted".into()), now + second)
        .expect("record");
    let err_id = store
        .record_sent(&sent, now, 2, &Err("HTTP 410".into()), now + second)
        .expect("record");
    let row = store.outbox_row(ok_id).expect("row").expect("exists");
    assert_eq!(
        (row.status, row.attempts, row.answer.as_deref()),
        (OutboxStatus::Delivered, 1, Some("202 Accepted"))
    );
    let row = store.outbox_row(err_id).expect("row").expect("exists");
    assert_eq!(
        (row.status, row.attempts, row.last_error.as_deref()),
        (OutboxStatus::Failed, 2, Some("HTTP 410"))
    );

    assert_eq!(
        store.outbox_counts().expect("counts"),
        OutboxCounts {
            pending: 0,
            delivered: 2,
            failed: 2,
            expired: 1
        }
    );
    assert_eq!(
        store.outbox_undelivered_counts().expect("counts"),
        OutboxCounts {
            pending: 0,
            delivered: 0,
            failed: 2,
            expired: 1
        }
    );
    // Every notice about incident 7 of `api`, oldest first.
    let about: Vec<i64> = store
        .notices_of_incident("api", 7)
        .expect("notices")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(about, [first, other, ok_id, err_id]);
}

// ---- Alerting state and incidents --------------------------------------------

fn connect_failure() -> Failure {
    Failure::new(FailureClass::Connect, "connection refused")
}

fn incident(kind: IncidentKind, started: DateTime<Utc>, opened: DateTime<Utc>) -> Incident {
    Incident {
        id: None,
        started_at: started,
        opened_at: opened,
        ended_at: None,
        first_failure: Some(connect_failure()),
        last_failure: Some(connect_failure()),
        streak: 3,
        caused_by: None,
        notified: true,
        last_notice_at: Some(opened),
        ended_by: None,
        kind,
        reason: (kind == IncidentKind::Degraded).then(|| "latency over 800ms".to_string()),
    }
}

/// A probe down since `opened`, its incident open.
fn down(started: DateTime<Utc>, opened: DateTime<Utc>) -> ProbeState {
    ProbeState {
        status: Status::Down,
        since: Some(opened),
        fail_streak: 3,
        last_latency: Some(Duration::from_millis(500)),
        last_run: Some(opened),
        incident: Some(Box::new(incident(IncidentKind::Down, started, opened))),
        ..ProbeState::new()
    }
}

fn alert_state_incidents_and_their_notices_are_saved_together(b: Backend) {
    let mut store = b.open();
    assert!(store.load_alert_states().expect("states").is_empty());
    let t = |s: i64| at(1_700_000_000_000 + s * 1_000);

    // `api` goes down: its state, incident and notice in one save. The
    // notice learns the incident's id.
    let api = down(t(0), t(20));
    let saved = store
        .save_alert(
            &[("api".into(), api.clone())],
            &[],
            &[outgoing("hook", notice(NoticeKind::Opened, "api", None))],
            t(20),
            None,
        )
        .expect("save");
    let id = match saved.incidents.as_slice() {
        [(probe, IncidentKind::Down, started, id)] if probe == "api" && *started == t(0) => *id,
        other => panic!("saved incidents {other:?}"),
    };
    assert_eq!(saved.outbox.len(), 1);
    let mut api_saved = api.clone();
    if let Some(inc) = api_saved.incident.as_mut() {
        inc.id = Some(id);
    }
    // Another store (a restart) reads back what was saved.
    let reader = b.open();
    assert_eq!(
        reader.load_alert_states().expect("states"),
        vec![("api".to_string(), api_saved)]
    );
    let stored = reader.incident(id).expect("incident").expect("exists");
    assert_eq!(
        (
            stored.probe.as_str(),
            stored.started_at,
            stored.opened_at,
            stored.ended_at,
            stored.kind,
            stored.streak
        ),
        ("api", t(0), t(20), None, IncidentKind::Down, 3)
    );
    assert_eq!(
        (
            stored.first_class.as_deref(),
            stored.first_message.as_deref()
        ),
        (Some("connect"), Some("connection refused"))
    );
    let notices = reader.notices_of_incident("api", id).expect("notices");
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].id, saved.outbox[0]);
    assert_eq!(notices[0].notice().expect("payload").incident, Some(id));
    assert_eq!(reader.incident(id + 1_000).expect("incident"), None);

    // `db` degrades while `api` recovers: the closed incident keeps its id.
    let mut ended = api.incident.as_deref().cloned().expect("incident");
    ended.id = Some(id);
    ended.ended_at = Some(t(90));
    let db_state = ProbeState {
        status: Status::Up,
        since: Some(t(0)),
        degraded: Some(Box::new(Degradation {
            bad_streak: 4,
            bad_started: Some(t(30)),
            incident: Some(Box::new(incident(IncidentKind::Degraded, t(30), t(60)))),
            ..Degradation::default()
        })),
        ..ProbeState::new()
    };
    let up = ProbeState {
        status: Status::Up,
        since: Some(t(90)),
        ok_streak: 2,
        ..ProbeState::new()
    };
    let saved = store
        .save_alert(
            &[("api".into(), up.clone()), ("db".into(), db_state)],
            &[("api".into(), ended)],
            &[
                outgoing("hook", notice(NoticeKind::Resolved, "api", Some(id))),
                outgoing(
                    "hook",
                    Notice {
                        incident_kind: IncidentKind::Degraded,
                        ..notice(NoticeKind::Opened, "db", None)
                    },
                ),
            ],
            t(90),
            None,
        )
        .expect("save");
    let kinds: Vec<(&str, IncidentKind)> = saved
        .incidents
        .iter()
        .map(|(p, k, _, _)| (p.as_str(), *k))
        .collect();
    assert_eq!(
        kinds,
        [("db", IncidentKind::Degraded), ("api", IncidentKind::Down)]
    );
    assert_eq!(saved.incidents[1].3, id, "the same incident, updated");
    let degraded = saved.incidents[0].3;

    let states = reader.load_alert_states().expect("states");
    assert_eq!(states.len(), 2);
    assert_eq!(states[0], ("api".to_string(), up));
    let db_incident = states[1]
        .1
        .degraded
        .as_ref()
        .and_then(|d| d.incident.as_ref())
        .expect("db's degradation");
    assert_eq!(db_incident.id, Some(degraded));

    let all = reader.incidents(None, 10).expect("incidents");
    assert_eq!(
        all.iter().map(|i| i.id).collect::<Vec<_>>(),
        [degraded, id],
        "newest first"
    );
    assert_eq!(all[1].ended_at, Some(t(90)));
    assert_eq!(all[0].reason.as_deref(), Some("latency over 800ms"));
    assert_eq!(
        reader.incidents(Some("api"), 10).expect("incidents").len(),
        1
    );
    assert_eq!(reader.incidents(None, 1).expect("incidents").len(), 1);
    let notices: Vec<String> = reader
        .notices_of_incident("api", id)
        .expect("notices")
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(notices, ["opened", "resolved"]);
    let of_db = reader.notices_of_incident("db", degraded).expect("notices");
    assert_eq!(of_db.len(), 1);
    assert_eq!(reader.outbox_counts().expect("counts").pending, 3);
}

fn incident_pages_split_a_shared_start_and_filter(b: Backend) {
    let mut store = b.open();
    // Five probes' incidents start in the same millisecond; two more
    // around them; `b`'s is resolved, as are `a`'s first and last.
    let mut closed = Vec::new();
    for p in ["a", "b", "c", "d", "e"] {
        let mut inc = incident(IncidentKind::Down, at(5_000), at(5_000));
        if p == "b" {
            inc.ended_at = Some(at(6_000));
        }
        closed.push((p.to_string(), inc));
    }
    let mut first = incident(IncidentKind::Down, at(1_000), at(1_000));
    first.ended_at = Some(at(2_000));
    closed.push(("a".into(), first));
    closed.push((
        "a".into(),
        incident(IncidentKind::Down, at(9_000), at(9_000)),
    ));
    let saved = store
        .save_alert(&[], &closed, &[], at(10_000), None)
        .expect("save");
    assert_eq!(saved.incidents.len(), 7);

    let walk = |q: IncidentQuery| {
        let mut q = q;
        let mut seen = Vec::new();
        loop {
            let page = store.incidents_page(&q).expect("page");
            let Some(last) = page.last() else {
                return seen;
            };
            q.before = Some((last.started_at.timestamp_millis(), last.id));
            seen.extend(page.iter().map(|i| (i.started_at.timestamp_millis(), i.id)));
        }
    };
    for limit in [1, 2, 3, 50] {
        let seen = walk(IncidentQuery {
            limit,
            ..IncidentQuery::default()
        });
        let mut want = seen.clone();
        want.sort_unstable_by(|a, b| b.cmp(a));
        want.dedup();
        assert_eq!((seen.len(), &want), (7, &seen), "limit {limit}");
    }
    let open = walk(IncidentQuery {
        open: Some(true),
        limit: 2,
        ..IncidentQuery::default()
    });
    assert_eq!(open.len(), 5);
    let resolved_a = store
        .incidents_page(&IncidentQuery {
            probe: Some("a".into()),
            open: Some(false),
            limit: 10,
            ..IncidentQuery::default()
        })
        .expect("page");
    assert_eq!(resolved_a.len(), 1);
    assert_eq!(resolved_a[0].ended_at, Some(at(2_000)));
}

// ---- Events ------------------------------------------------------------------

fn events_round_trip_newest_first_within_the_range(b: Backend) {
    let mut store = b.open();
    let now = at(1_700_000_000_000);
    let mut ids = Vec::new();
    for (i, mins) in [30, 10, 5, 0].iter().enumerate() {
        let e = ChangeEvent {
            id: None,
            at: now - TimeDelta::minutes(*mins),
            kind: if i == 1 { "config" } else { "deploy" }.into(),
            title: format!("v{i}"),
            labels: BTreeMap::from([("service".to_string(), "checkout".to_string())]),
            link: (i == 2).then(|| "https://ci.example/run/7".to_string()),
        };
        ids.push(store.insert_event(&e).expect("insert"));
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 4, "ids {ids:?}");

    // `since` inclusive, `until` exclusive, newest first.
    let got = store
        .events_between(now - TimeDelta::minutes(10), now, 10)
        .expect("events");
    let titles: Vec<&str> = got.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(titles, ["v2", "v1"]);
    assert_eq!(got[0].id, Some(ids[2]));
    assert_eq!(got[0].link.as_deref(), Some("https://ci.example/run/7"));
    assert_eq!(got[0].labels["service"], "checkout");
    assert_eq!(
        (got[1].kind.as_str(), got[1].link.as_deref()),
        ("config", None)
    );
    let latest = store
        .events_between(now - TimeDelta::hours(1), now + TimeDelta::minutes(1), 1)
        .expect("events");
    assert_eq!(latest.len(), 1, "the limit holds");
    assert_eq!(latest[0].title, "v3");
}

// ---- PostgreSQL only: several instances sharing one database -----------------

/// Polls `f` until it gives `Some`, failing the test after a deadline.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

mod postgres_only {
    use super::*;

    #[test]
    fn migrations_run_once_when_two_stores_connect_at_the_same_time() {
        for _ in 0..3 {
            let b = Backend::postgres();
            let start = Barrier::new(2);
            let versions: Vec<u32> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            let store = b.open();
                            start.wait();
                            // The first statement connects and migrates.
                            assert!(store.probe_names().expect("first use").is_empty());
                            store.schema_version().expect("version")
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().expect("thread"))
                    .collect()
            });
            assert!(
                versions[0] > 0 && versions[0] == versions[1],
                "{versions:?}"
            );
            assert_eq!(
                b.ints("SELECT count(*), min(version) FROM lookout_schema"),
                [[1, i64::from(versions[0])]]
            );
            // Both work on the same tables.
            let mut store = b.open();
            store
                .insert_batch(&[ok("api", 1_000, Duration::from_millis(1))])
                .expect("insert");
            assert_eq!(store.count_results("api").expect("count"), 1);
        }
    }

    #[test]
    fn a_store_reconnects_after_the_server_closed_its_connection() {
        let b = Backend::postgres();
        let mut store = b.open();
        store
            .insert_batch(&[ok("api", 1_000, Duration::from_millis(1))])
            .expect("insert");
        let ended = b.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'lookout' AND datname = current_database()",
        );
        assert_eq!(ended, "t", "the store's one session was ended");
        store
            .insert_batch(&[ok("api", 2_000, Duration::from_millis(1))])
            .expect("the next insert connects again");
        assert_eq!(store.count_results("api").expect("count"), 2);
        assert_eq!(
            store.stats("api", at(0), at(60_000)).expect("stats").count,
            2
        );
    }

    #[test]
    fn leadership_passes_on_with_a_new_epoch_and_fences_the_old_leader() {
        let b = Backend::postgres();
        let first = b.open();
        let mut second = b.open();
        let mark = first
            .try_lead()
            .expect("try to lead")
            .expect("the first store leads");
        assert_eq!(second.try_lead().expect("try to lead"), None);
        assert!(first.still_leads().expect("still leads"));
        assert!(!second.still_leads().expect("still leads"));

        // The first instance goes away: its session ends, the lock is free.
        drop(first);
        let next = wait_for("the second store to lead", || {
            second.try_lead().expect("try to lead")
        });
        assert_eq!(next.epoch, mark.epoch + 1);
        assert!(second.still_leads().expect("still leads"));

        // The old leader, still running (here: reconnected), saves nothing.
        let state = || vec![("api".to_string(), down(at(1_000), at(5_000)))];
        let items = || vec![outgoing("hook", notice(NoticeKind::Opened, "api", None))];
        let mut deposed = b.open();
        let err = deposed
            .save_alert(&state(), &[], &items(), at(5_000), Some(mark))
            .expect_err("the old epoch is refused");
        assert!(matches!(err, StoreError::Deposed), "{err:?}");
        assert!(deposed.load_alert_states().expect("states").is_empty());
        assert!(deposed.incidents(None, 10).expect("incidents").is_empty());
        assert_eq!(
            deposed.outbox_counts().expect("counts"),
            OutboxCounts::default()
        );

        // The new leader's save goes through.
        let saved = second
            .save_alert(&state(), &[], &items(), at(5_000), Some(next))
            .expect("the leader saves");
        assert_eq!((saved.incidents.len(), saved.outbox.len()), (1, 1));
        assert_eq!(deposed.load_alert_states().expect("states").len(), 1);

        // Giving the lock back lets another lead.
        second.release_lead().expect("release");
        let third = deposed
            .try_lead()
            .expect("try to lead")
            .expect("free again");
        assert_eq!(third.epoch, next.epoch + 1);
    }

    #[test]
    fn the_feed_hands_the_leader_every_writers_results_exactly_once() {
        const BATCHES: i64 = 60;
        const PER_BATCH: i64 = 4;
        let b = Backend::postgres();
        let leader = b.open();
        let mark = leader
            .try_lead()
            .expect("try to lead")
            .expect("the leader leads");
        let expected: HashSet<(String, i64)> = ["w0", "w1"]
            .iter()
            .flat_map(|w| (0..BATCHES * PER_BATCH).map(move |i| (w.to_string(), i)))
            .collect();

        let mut seen: Vec<(String, i64)> = Vec::new();
        let mut through = mark.through;
        let feed = |through: &mut i64, seen: &mut Vec<(String, i64)>| {
            let (results, next) = leader.feed_since(*through).expect("feed");
            assert!(next >= *through, "the position never goes back");
            *through = next;
            let n = results.len();
            seen.extend(
                results
                    .into_iter()
                    .map(|r| (r.probe, r.started_at.timestamp_millis())),
            );
            n
        };
        std::thread::scope(|s| {
            let writers: Vec<_> = ["w0", "w1"]
                .into_iter()
                .map(|w| {
                    let b = &b;
                    s.spawn(move || {
                        let mut store = b.open();
                        for batch in 0..BATCHES {
                            let rows: Vec<ProbeResult> = (0..PER_BATCH)
                                .map(|i| ok(w, batch * PER_BATCH + i, Duration::from_millis(1)))
                                .collect();
                            store.insert_batch(&rows).expect("insert");
                        }
                    })
                })
                .collect();
            // The leader reads while both write.
            while !writers.iter().all(|w| w.is_finished()) {
                feed(&mut through, &mut seen);
            }
            for w in writers {
                w.join().expect("writer");
            }
        });
        wait_for("every result to reach the feed", || {
            feed(&mut through, &mut seen);
            (seen.len() >= expected.len()).then_some(())
        });
        assert_eq!(feed(&mut through, &mut seen), 0, "nothing more");
        let unique: HashSet<(String, i64)> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "no result twice");
        assert_eq!(unique, expected, "every result once");
    }

    /// Two instances probing the same target write into the same minute
    /// and hour rollup rows at once: every run counts, none is lost to a
    /// concurrent read-merge-write.
    #[test]
    fn two_writers_into_the_same_rollup_rows_lose_no_run() {
        const WRITERS: i64 = 4;
        const BATCHES: i64 = 100;
        const PER_BATCH: i64 = 2;
        let b = Backend::postgres();
        let start = &Barrier::new(WRITERS as usize);
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let b = &b;
                s.spawn(move || {
                    let mut store = b.open();
                    // Connected and migrated before the race starts.
                    store.schema_version().expect("connect");
                    start.wait();
                    for batch in 0..BATCHES {
                        let rows: Vec<ProbeResult> = (0..PER_BATCH)
                            .map(|i| {
                                // Both writers, all in the same minute.
                                let t = (batch * PER_BATCH + i) * WRITERS + w;
                                ProbeResult {
                                    location: Some(format!("l{w}").into()),
                                    ..ok("api", t, Duration::from_millis(5))
                                }
                            })
                            .collect();
                        store.insert_batch(&rows).expect("insert");
                    }
                });
            }
        });
        let store = b.open();
        let total = WRITERS * BATCHES * PER_BATCH;
        let stats = store.stats("api", at(0), at(3_600_000)).expect("stats");
        assert_eq!(stats.count, total as u64, "runs counted by the rollups");
        assert_eq!(store.count_results("api").expect("raw"), total as u64);
    }
}
