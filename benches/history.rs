//! History benchmark: window queries over 30 days of rollups for 1,000
//! probes, database bytes per probe-day, and what rollups add to a write.
//!
//! The synthetic database holds, for every probe, one run every 60 s for
//! 30 days. Writing 43.2 million results through `insert_batch` would take
//! too long, so:
//! - days 2 to 30 (older than 24 h) are written as rollup rows directly, one
//!   minute row per run (count 1, as `insert_batch` would write it), one
//!   hour row per 60 runs with its encoded sketch and one day-count row per
//!   UTC day, with no raw rows (raw
//!   retention is 14 days, but those raw rows would only add size, which is
//!   measured separately from the last day);
//! - the last 24 h go through `Store::insert_batch` as real results (HTTP
//!   phases and details), a minute of every probe per batch, which builds
//!   their rollups as the recorder would.
//!
//! Run with `cargo bench --bench history` (1,000 probes × 30 days, a few
//! minutes to build), or `cargo bench --bench history -- quick` (20 probes
//! × 3 days, seconds). The database lives in a temporary folder
//! (`LOOKOUT_BENCH_DIR` to choose where) and is deleted afterwards.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use lookout::result::{Phase, ProbeResult};
use lookout::store::sketch::Sketch;
use lookout::store::Store;
use rusqlite::params;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

struct Scale {
    probes: usize,
    days: i64,
    /// Query repetitions per measurement.
    reps: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this binary without --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("history benchmark: run with `cargo bench --bench history [-- quick]`");
        return;
    }
    let scale = if args.iter().any(|a| a == "quick") {
        Scale {
            probes: 20,
            days: 3,
            reps: 20,
        }
    } else {
        Scale {
            probes: 1_000,
            days: 30,
            reps: 200,
        }
    };
    let dir = match std::env::var_os("LOOKOUT_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary folder");
    let path = dir.path().join("history.db");
    let now = Utc::now();
    println!(
        "history benchmark: {} probes × {} days, one run per probe every 60 s",
        scale.probes, scale.days
    );
    let built = Instant::now();
    let old_until = build_old_days(&path, &scale, now);
    let mut store = Store::open(&path).expect("open");
    let raw_secs = write_last_day(&mut store, &scale, old_until, now);
    println!(
        "built in {:.1}s (last day through insert_batch: {:.1}s, {:.0} results/s)",
        built.elapsed().as_secs_f64(),
        raw_secs,
        (scale.probes as f64 * 1_440.0) / raw_secs
    );
    checkpoint(&path);
    sizes(&path, &scale);
    queries(&store, &scale, now);
    insert_cost(&mut store, &scale);
    backfill_speed(dir.path(), &scale, now);
}

/// A probe's typical latency (µs) and its `i`th duration around it: a
/// log-ish spread with a tail, deterministic.
fn duration_us(probe: usize, i: i64) -> u64 {
    let base = 2_000 + (probe as u64 * 7_919) % 150_000;
    let mut x = (probe as u64) << 32 ^ i as u64;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    let r = x % 1_000;
    // 80% within ±20%, the rest up to 5× the base.
    if r < 800 {
        base * (80 + r % 40) / 100
    } else {
        base * (100 + (r - 800) * 2) / 100
    }
}

fn failed(probe: usize, i: i64) -> bool {
    (probe as i64 * 31 + i) % 211 == 0
}

fn probe_name(p: usize) -> String {
    format!("service-{p:04}")
}

/// Writes rollup rows for every day but the last, straight into the
/// tables. Returns where the last day starts (a whole hour).
fn build_old_days(path: &std::path::Path, scale: &Scale, now: DateTime<Utc>) -> i64 {
    // Creates the schema.
    drop(Store::open(path).expect("create"));
    let last_day = (now.timestamp_millis() - DAY) / HOUR * HOUR;
    let first = last_day - (scale.days - 1) * DAY;
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "synchronous", "OFF")
        .expect("pragma");
    for p in 0..scale.probes {
        let tx = conn.transaction().expect("transaction");
        tx.execute(
            "INSERT INTO probes (id, name) VALUES (?1, ?2)",
            params![p as i64 + 1, probe_name(p)],
        )
        .expect("probe");
        {
            let mut minute = tx
                .prepare(
                    "INSERT INTO rollups_minute (probe_id, start, count, failures, min_us, \
                     max_us, sum_us, sketch) VALUES (?1, ?2, 1, ?3, ?4, ?4, ?4, NULL)",
                )
                .expect("prepare");
            let mut hour = tx
                .prepare(
                    "INSERT INTO rollups_hour (probe_id, start, count, failures, min_us, \
                     max_us, sum_us, sketch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .expect("prepare");
            let mut day = tx
                .prepare(
                    "INSERT INTO rollups_day (probe_id, start, count, failures) VALUES \
                     (?1, ?2, ?3, ?4) ON CONFLICT (probe_id, start) DO UPDATE SET \
                     count = count + excluded.count, failures = failures + excluded.failures",
                )
                .expect("prepare");
            let id = p as i64 + 1;
            let mut h = first;
            while h < last_day {
                let mut sketch = Sketch::new();
                let (mut fails, mut min, mut max, mut sum) = (0i64, u64::MAX, 0u64, 0u64);
                for m in 0..60 {
                    let i = (h - first) / MINUTE + m;
                    let us = duration_us(p, i);
                    let f = failed(p, i);
                    minute
                        .execute(params![id, h + m * MINUTE, f as i64, us as i64])
                        .expect("minute row");
                    sketch.add(us);
                    fails += f as i64;
                    (min, max, sum) = (min.min(us), max.max(us), sum + us);
                }
                hour.execute(params![
                    id,
                    h,
                    60,
                    fails,
                    min as i64,
                    max as i64,
                    sum as i64,
                    sketch.encode()
                ])
                .expect("hour row");
                day.execute(params![id, h / DAY * DAY, 60, fails])
                    .expect("day row");
                h += HOUR;
            }
        }
        tx.commit().expect("commit");
    }
    last_day
}

fn result(p: usize, at_ms: i64, i: i64) -> ProbeResult {
    let us = duration_us(p, i);
    let d = Duration::from_micros;
    let mut details = serde_json::Map::new();
    details.insert("status".into(), 200.into());
    details.insert("http_version".into(), "HTTP/1.1".into());
    details.insert("redirects".into(), 0.into());
    details.insert(
        "final_url".into(),
        format!("https://{}.example.com/health", probe_name(p)).into(),
    );
    details.insert("tls_version".into(), "TLSv1_3".into());
    details.insert("size".into(), 143.into());
    let f = failed(p, i);
    ProbeResult {
        probe: probe_name(p),
        started_at: DateTime::from_timestamp_millis(at_ms).expect("time"),
        duration: d(us),
        success: !f,
        failure: f.then(|| {
            lookout::result::Failure::new(
                lookout::result::FailureClass::Expectation,
                "status 2xx: got 503",
            )
        }),
        phases: vec![
            (Phase::Dns, d(us / 20)),
            (Phase::Connect, d(us / 10)),
            (Phase::Tls, d(us / 4)),
            (Phase::FirstByte, d(us / 2)),
            (Phase::Transfer, d(us / 10)),
        ],
        checks: Vec::new(),
        details,
        location: None,
    }
}

/// The last 24 h through `insert_batch`, one minute of every probe per
/// batch (1,000 results at full scale, the recorder's batch size).
/// Returns the seconds it took.
fn write_last_day(store: &mut Store, scale: &Scale, from: i64, now: DateTime<Utc>) -> f64 {
    let first_old = from - (scale.days - 1) * DAY;
    let started = Instant::now();
    let mut t = from;
    let end = now.timestamp_millis();
    while t < end {
        let i = (t - first_old) / MINUTE;
        let batch: Vec<ProbeResult> = (0..scale.probes)
            // Spread over the minute like the scheduler's phase offsets.
            .map(|p| result(p, t + (p as i64 * 59_000 / scale.probes as i64), i))
            .filter(|r| r.started_at.timestamp_millis() < end)
            .collect();
        store.insert_batch(&batch).expect("insert");
        t += MINUTE;
    }
    started.elapsed().as_secs_f64()
}

fn checkpoint(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

/// Bytes of each table (with its indexes) per probe-day.
fn sizes(path: &std::path::Path, scale: &Scale) {
    let conn = rusqlite::Connection::open(path).expect("open");
    let bytes = |names: &[&str]| -> f64 {
        names
            .iter()
            .map(|n| {
                conn.query_row(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?1",
                    [n],
                    |r| r.get::<_, i64>(0),
                )
                .expect("dbstat")
            })
            .sum::<i64>() as f64
    };
    let rows = |t: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .expect("count")
    };
    let probes = scale.probes as f64;
    let raw = bytes(&["results", "results_probe_started"]);
    let raw_days = rows("results") as f64 / (1_440.0 * probes);
    let minute = bytes(&["rollups_minute"]);
    let hour = bytes(&["rollups_hour"]);
    let day = bytes(&["rollups_day"]);
    let file = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("\nsize (page bytes from dbstat, per probe-day; one run per minute)");
    println!(
        "  raw results + index : {:>9.0} B/probe-day  ({} rows, {:.0} B/row)",
        raw / (probes * raw_days),
        rows("results"),
        raw / rows("results") as f64
    );
    let days = scale.days as f64;
    println!(
        "  minute rollups      : {:>9.0} B/probe-day  ({} rows, {:.0} B/row)",
        minute / (probes * days),
        rows("rollups_minute"),
        minute / rows("rollups_minute") as f64
    );
    println!(
        "  hour rollups        : {:>9.0} B/probe-day  ({} rows, {:.0} B/row)",
        hour / (probes * days),
        rows("rollups_hour"),
        hour / rows("rollups_hour") as f64
    );
    println!(
        "  day counts          : {:>9.0} B/probe-day  ({} rows, {:.0} B/row)",
        day / (probes * days),
        rows("rollups_day"),
        day / rows("rollups_day") as f64
    );
    println!("  database file       : {:>9.1} MB", file as f64 / 1e6);
}

/// Times `f` `reps` times; returns (p50, p99, max) in milliseconds.
fn time(reps: usize, mut f: impl FnMut(usize)) -> (f64, f64, f64) {
    let mut t: Vec<f64> = (0..reps)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| t[((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
    (at(0.5), at(0.99), t[t.len() - 1])
}

fn report(what: &str, reps: usize, (p50, p99, max): (f64, f64, f64)) {
    println!("  {what:<38} {reps:>5} {p50:>9.3} {p99:>9.3} {max:>9.3}");
}

fn queries(store: &Store, scale: &Scale, now: DateTime<Utc>) {
    println!("\nqueries (ms; each call on a probe picked in turn; warm page cache)");
    println!(
        "  {:<38} {:>5} {:>9} {:>9} {:>9}",
        "query", "calls", "p50", "p99", "max"
    );
    let probe = |i: usize| probe_name((i * 7_919) % scale.probes);
    let windows = [
        ("stats 1h", TimeDelta::hours(1)),
        ("stats 24h", TimeDelta::hours(24)),
        ("stats 7d", TimeDelta::days(7.min(scale.days))),
        ("stats 30d", TimeDelta::days(30.min(scale.days))),
    ];
    for (name, w) in windows {
        let t = time(scale.reps, |i| {
            let s = store.stats(&probe(i), now - w, now).expect("stats");
            assert!(s.count > 0);
        });
        report(name, scale.reps, t);
    }
    // Arbitrary edges: 2/3 of the history back + 17 min 13 s, to 1 day back
    // − 23 min 7 s.
    let since = now - TimeDelta::days(scale.days * 2 / 3) + TimeDelta::seconds(17 * 60 + 13);
    let until = now - TimeDelta::days(1) - TimeDelta::seconds(23 * 60 + 7);
    let t = time(scale.reps, |i| {
        store.stats(&probe(i), since, until).expect("stats");
    });
    report("stats since/until (arbitrary edges)", scale.reps, t);
    for (name, step) in [
        ("latency_series 24h, 5 min steps", 300),
        ("latency_series 24h, 1 h steps", 3_600),
    ] {
        let t = time(scale.reps, |i| {
            let s = store
                .latency_series(
                    &probe(i),
                    now - TimeDelta::hours(24),
                    now,
                    Duration::from_secs(step),
                )
                .expect("series");
            assert!(s.iter().any(|p| p.count > 0));
        });
        report(name, scale.reps, t);
    }
    let reps = (scale.reps / 10).max(5);
    for (name, w) in [
        ("counts_all 24h (every probe)", TimeDelta::hours(24)),
        (
            "counts_all 7d (every probe)",
            TimeDelta::days(7.min(scale.days)),
        ),
        (
            "counts_all 30d (every probe)",
            TimeDelta::days(30.min(scale.days)),
        ),
    ] {
        let t = time(reps, |_| {
            let c = store.counts_all(now - w, now).expect("counts");
            assert_eq!(c.len(), scale.probes);
        });
        report(name, reps, t);
    }
}

/// Each batch written twice, with and without rollups (which goes first
/// alternates), into the full database, at the current minute.
fn insert_cost(store: &mut Store, scale: &Scale) {
    println!("\ninsert_batch (ms per batch; each batch both ways)");
    println!(
        "  {:<38} {:>5} {:>9} {:>9} {:>9}",
        "batch", "calls", "p50", "p99", "max"
    );
    let t0 = Utc::now().timestamp_millis();
    let reps = (scale.reps / 4).max(10);
    let mut sizes = vec![20usize];
    if scale.probes != 20 {
        sizes.push(scale.probes);
    }
    for size in sizes {
        let batch = |k: usize| -> Vec<ProbeResult> {
            (0..size)
                .map(|p| result(p % scale.probes, t0 + (k * size + p) as i64, k as i64))
                .collect()
        };
        let mut with = Vec::new();
        let mut without = Vec::new();
        for k in 0..reps {
            let b = batch(k);
            // Each batch both ways, the order alternating.
            for rollups in [k % 2 == 0, k % 2 != 0] {
                let s = Instant::now();
                if rollups {
                    store.insert_batch(&b).expect("insert");
                    with.push(s.elapsed().as_secs_f64() * 1e3);
                } else {
                    store.insert_batch_without_rollups(&b).expect("insert");
                    without.push(s.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        for (name, mut t) in [("with rollups", with), ("raw rows only", without)] {
            t.sort_by(|a, b| a.total_cmp(b));
            let at = |q: f64| t[((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1];
            report(
                &format!("{size} results, {name}"),
                t.len(),
                (at(0.5), at(0.99), t[t.len() - 1]),
            );
        }
    }
}

/// How fast a database from before rollups is rolled up when first opened:
/// one day of raw rows for a fifth of the probes, written without rollups
/// into a fresh file that is then marked as not yet backfilled.
fn backfill_speed(dir: &std::path::Path, scale: &Scale, now: DateTime<Utc>) {
    let path = dir.join("backfill.db");
    let probes = (scale.probes / 5).max(10);
    let mut store = Store::open(&path).expect("create");
    let from = (now.timestamp_millis() - DAY) / MINUTE * MINUTE;
    for m in 0..1_440i64 {
        let batch: Vec<ProbeResult> = (0..probes)
            .map(|p| result(p, from + m * MINUTE + p as i64, m))
            .collect();
        store.insert_batch_without_rollups(&batch).expect("insert");
    }
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "UPDATE rollup_meta SET value = (SELECT max(id) FROM results) \
         WHERE key = 'backfill_until_id'; \
         UPDATE rollup_meta SET value = 0 WHERE key = 'backfill_done_id';",
    )
    .expect("mark as before rollups");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM results", [], |r| r.get(0))
        .expect("count");
    drop(conn);
    let started = Instant::now();
    drop(Store::open(&path).expect("open and backfill"));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\nbackfill on upgrade: {rows} raw rows ({probes} probes × 1 day) rolled up in {secs:.2}s, \
         {:.0} rows/s",
        rows as f64 / secs
    );
}
