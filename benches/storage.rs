//! Storage benchmark (issue 10): history results written per second to
//! PostgreSQL and to SQLite, at 1,000 and 10,000 probes, side by side in one
//! run.
//!
//! The load is the recorder's: every probe runs every 30 s at its own phase
//! offset (`scheduler::offset`, as the scheduler spreads them), so each
//! minute rollup of a probe gets two runs and each hour rollup 120; the
//! results, in the order they happen, are written through
//! `Store::insert_batch` in batches of 1,000 (the recorder's batch size:
//! raw rows plus minute, hour and day rollups in one transaction). The
//! first interval of every case (one result per probe: it registers the
//! probe names, connects, migrates) is written untimed; the timed batches
//! follow it.
//!
//! Cases, for each number of probes:
//! - SQLite: a fresh file on disk (WAL, `synchronous=NORMAL`, as
//!   `Store::open` sets them);
//! - PostgreSQL: one store, a fresh database;
//! - PostgreSQL, two writers: two threads with a store each, writing the
//!   same probes' results from two locations at once (the second
//!   instance's schedule 11.3 s later), as two instances sharing one
//!   database do: twice the results per interval. After every case the raw
//!   rows are compared with the counts in the minute, hour and day rollups.
//!
//! The timed batches of the three cases of one size are written in turns
//! ([`TURNS`]), so a change in the machine's load falls on all three.
//! Reported per case: results written per second (all writers, over wall
//! time), milliseconds per batch (median, p95), the ratio to SQLite's
//! results per second, and CPU per 1,000 results of this process (the
//! stores) and of the throwaway server (all its processes, from `/proc`).
//!
//! PostgreSQL is a throwaway server the bench starts itself (`initdb` and
//! `pg_ctl` from the newest `/usr/lib/postgresql/<version>/bin`, or
//! `LOOKOUT_PG_BIN`) in a temporary folder on a free loopback port, with
//! PostgreSQL's default settings (`fsync` and `synchronous_commit` on),
//! reached over TCP on 127.0.0.1; it is stopped and deleted at the end. Set
//! `LOOKOUT_BENCH_PG_URL` to use an existing database instead: the bench
//! creates Lookout's tables there and writes probes named
//! `bench-<time>-...` into them, so point it at a scratch database.
//!
//! Run with `cargo bench --bench storage`, or `-- quick` (a few batches
//! per case, seconds). Files go to a temporary folder (`LOOKOUT_BENCH_DIR`
//! to choose where), deleted afterwards. The store is only ever called
//! from plain threads, never from an async runtime.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::DateTime;
use lookout::result::{Failure, FailureClass, Phase, ProbeResult};
use lookout::store::Store;

/// Every probe's interval.
const INTERVAL_MS: i64 = 30_000;
/// The recorder's batch size (`RecorderSettings::new().batch_size`).
const BATCH: usize = 1_000;
/// The timed batches of each case are written in this many turns, the
/// cases of one size taking turns, so that a change in the machine's load
/// (other work on a shared VM) falls on every case alike.
const TURNS: usize = 4;
/// Where simulated time starts: 2026-01-05 00:00 UTC, a whole hour.
const T0_MS: i64 = 1_767_571_200_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this binary without --bench.
    if !args.iter().any(|a| a == "--bench") {
        println!("storage benchmark: run with `cargo bench --bench storage [-- quick]`");
        return;
    }
    let quick = args.iter().any(|a| a == "quick");
    let dir = match std::env::var_os("LOOKOUT_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary folder");
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );

    let (server, pg) = match std::env::var("LOOKOUT_BENCH_PG_URL") {
        Ok(url) => (None, Pg::External(url)),
        Err(_) => {
            let server = PgServer::start(dir.path());
            let (port, pid) = (server.port, server.pid());
            (Some(server), Pg::Throwaway { port, pid })
        }
    };

    println!(
        "storage benchmark: probes every {} s, written in batches of {BATCH} results \
         (raw rows + minute/hour/day rollups in one transaction)",
        INTERVAL_MS / 1_000
    );
    println!(
        "SQLite {}: a file in {} (WAL, synchronous=NORMAL, as Store::open sets them)",
        rusqlite::version(),
        dir.path().display()
    );
    match &pg {
        Pg::External(url) => println!(
            "PostgreSQL: LOOKOUT_BENCH_PG_URL ({})",
            lookout::redact::mask_url_passwords(url)
        ),
        Pg::Throwaway { port, .. } => println!(
            "PostgreSQL: throwaway server on 127.0.0.1:{port} over TCP, {}",
            pg.settings()
        ),
    }

    let mut rows = Vec::new();
    for probes in [1_000usize, 10_000] {
        // Timed batches per case: 20 min of simulated time at 1,000 probes
        // (40 batches), 4 min at 10,000 (80 batches).
        let batches = match (quick, probes) {
            (true, _) => TURNS,
            (false, 1_000) => 40,
            (false, _) => 80,
        };
        let load = |what: &str| Load::new(&format!("bench-{run}-{probes}-{what}-"), probes);
        let path = dir.path().join(format!("history-{probes}.db"));
        let mut cases = vec![Case::new(
            probes,
            "SQLite",
            vec![load("sqlite")],
            || Store::open(&path).expect("open the SQLite store"),
            Box::new({
                let path = path.clone();
                move |prefix| sqlite_counts(&path, prefix)
            }),
        )];
        for writers in [1usize, 2] {
            let name = match writers {
                1 => "PostgreSQL".to_string(),
                n => format!("PostgreSQL, {n} writers"),
            };
            let url = pg.database(&format!("w{writers}_{probes}"));
            let loads: Vec<Load> = (0..writers)
                .map(|w| {
                    let mut load = load(&format!("pg{writers}"));
                    if writers > 1 {
                        // Another instance's schedule is shifted by when
                        // it started.
                        load.location = Some(Arc::from(["eu-west", "us-east"][w % 2]));
                        load.shift_ms = w as i64 * 11_300;
                    }
                    load
                })
                .collect();
            let mut case = Case::new(
                probes,
                &name,
                loads,
                || Store::open_postgres(&url).expect("PostgreSQL URL"),
                Box::new({
                    let url = url.clone();
                    move |prefix| pg_counts(&url, prefix)
                }),
            );
            if let Pg::Throwaway { pid, .. } = pg {
                case.server = pid;
            }
            cases.push(case);
        }
        for _ in 0..TURNS {
            for case in &mut cases {
                case.turn(batches / TURNS);
            }
        }
        rows.extend(cases.into_iter().map(Case::finish));
    }
    report(&rows);
    drop(server);
}

/// One timed case: results written, wall time, per-batch times.
struct Outcome {
    probes: usize,
    store: String,
    writers: usize,
    batches: usize,
    rows: usize,
    secs: f64,
    /// Milliseconds per batch, every writer's, sorted.
    batch_ms: Vec<f64>,
    /// Batches written again after a failed transaction.
    retries: usize,
    first_error: Option<String>,
    /// Raw rows and the counts in the minute, hour and day rollups.
    counts: Option<[i64; 4]>,
    /// CPU seconds (user + system) of this process while timed.
    client_cpu: f64,
    /// CPU seconds of every process of the throwaway PostgreSQL server
    /// while timed; `None` for SQLite and an existing server.
    server_cpu: Option<f64>,
}

/// Reads the raw rows and rollup counts of the probes named `prefix...`.
type Counter = Box<dyn Fn(&str) -> Option<[i64; 4]>>;

/// A case being measured: its writers (a store and a stream of results
/// each) and what they have written so far.
struct Case {
    out: Outcome,
    writers: Vec<(Store, Load)>,
    /// The next batch of every writer's stream.
    next: usize,
    counts: Counter,
    /// The throwaway PostgreSQL server's postmaster, whose CPU is counted.
    server: Option<u32>,
}

impl Case {
    /// Opens a store per load and writes its first interval untimed (one
    /// writer after the other).
    fn new(
        probes: usize,
        store: &str,
        loads: Vec<Load>,
        open: impl Fn() -> Store,
        counts: Counter,
    ) -> Case {
        let warm_up = probes / BATCH;
        let writers = loads
            .into_iter()
            .map(|load| {
                let mut s = open();
                for b in 0..warm_up {
                    write(&mut s, &load.batch(b));
                }
                (s, load)
            })
            .collect::<Vec<_>>();
        Case {
            out: Outcome {
                probes,
                store: store.to_string(),
                writers: writers.len(),
                batches: 0,
                rows: 0,
                secs: 0.0,
                batch_ms: Vec::new(),
                retries: 0,
                first_error: None,
                counts: None,
                client_cpu: 0.0,
                server_cpu: None,
            },
            writers,
            next: warm_up,
            counts,
            server: None,
        }
    }

    /// The next `batches` batches of every writer, all writers at once,
    /// each from its own thread with its own store.
    fn turn(&mut self, batches: usize) {
        let start = Arc::new(Barrier::new(self.writers.len() + 1));
        let from = self.next;
        let threads: Vec<_> = self
            .writers
            .drain(..)
            .map(|(mut s, load)| {
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let timeline: Vec<Vec<ProbeResult>> =
                        (from..from + batches).map(|b| load.batch(b)).collect();
                    start.wait();
                    let mut times = Vec::with_capacity(batches);
                    let mut retries = 0;
                    let mut first_error = None;
                    for batch in &timeline {
                        let t = Instant::now();
                        let (r, e) = write(&mut s, batch);
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                        retries += r;
                        first_error = first_error.or(e);
                    }
                    (s, load, times, retries, first_error)
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let cpu_before = (cpu_secs("self"), self.server.map(server_cpu_secs));
        let out = &mut self.out;
        for t in threads {
            let (s, load, times, retries, first_error) = t.join().expect("writer thread");
            self.writers.push((s, load));
            out.rows += times.len() * BATCH;
            out.batch_ms.extend(times);
            out.retries += retries;
            out.first_error = out.first_error.take().or(first_error);
        }
        out.secs += began.elapsed().as_secs_f64();
        out.client_cpu += cpu_secs("self") - cpu_before.0;
        if let (Some(pid), Some(before)) = (self.server, cpu_before.1) {
            *out.server_cpu.get_or_insert(0.0) += server_cpu_secs(pid) - before;
        }
        out.batches += batches;
        self.next += batches;
    }

    /// The outcome, with the rollup check.
    fn finish(self) -> Outcome {
        let mut out = self.out;
        out.batch_ms.sort_by(|a, b| a.total_cmp(b));
        out.counts = self
            .writers
            .first()
            .and_then(|(_, l)| (self.counts)(&l.prefix));
        println!(
            "  {:>6} probes, {:<24} {:>7.0} results/s",
            out.probes,
            out.store,
            out.per_sec()
        );
        out
    }
}

impl Outcome {
    /// CPU milliseconds per batch of results, from CPU seconds of the
    /// whole case.
    fn per_batch(&self, cpu_secs: f64) -> f64 {
        cpu_secs * 1e3 * BATCH as f64 / self.rows.max(1) as f64
    }

    fn per_sec(&self) -> f64 {
        self.rows as f64 / self.secs
    }

    fn ms(&self, q: f64) -> f64 {
        let t = &self.batch_ms;
        t[((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1]
    }

    /// "ok" when every rollup counts every raw row, else each table's
    /// share of them.
    fn rollups(&self) -> String {
        match self.counts {
            None => "not checked".into(),
            Some([raw, m, h, d]) if raw == m && raw == h && raw == d => "ok".into(),
            Some([raw, m, h, d]) => format!(
                "{raw} raw rows; rollups count {} fewer (minute), {} (hour), {} (day)",
                raw - m,
                raw - h,
                raw - d
            ),
        }
    }
}

/// Writes `batch`, again after a failure as the recorder does (without
/// its backoff). Returns the retries and the first error.
fn write(store: &mut Store, batch: &[ProbeResult]) -> (usize, Option<String>) {
    let mut first_error = None;
    for attempt in 0..20 {
        match store.insert_batch(batch) {
            Ok(()) => return (attempt, first_error),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    panic!(
        "a batch failed 20 times: {}",
        first_error.unwrap_or_default()
    );
}

fn report(rows: &[Outcome]) {
    println!(
        "\n  {:>6}  {:<24} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>7}  rollups",
        "probes",
        "store",
        "writers",
        "batches",
        "results/s",
        "ms p50",
        "ms p95",
        "vs SQLite",
        "lookout cpu",
        "server cpu",
        "retries"
    );
    for r in rows {
        let sqlite = rows
            .iter()
            .find(|s| s.probes == r.probes && s.store == "SQLite")
            .map_or(f64::NAN, Outcome::per_sec);
        println!(
            "  {:>6}  {:<24} {:>7} {:>9} {:>9.0} {:>9.1} {:>9.1} {:>11.2} {:>11.1} {:>11} {:>7}  {}",
            r.probes,
            r.store,
            r.writers,
            r.batches * r.writers,
            r.per_sec(),
            r.ms(0.5),
            r.ms(0.95),
            r.per_sec() / sqlite,
            r.per_batch(r.client_cpu),
            r.server_cpu
                .map_or("-".to_string(), |c| format!("{:.1}", r.per_batch(c))),
            r.retries,
            r.rollups()
        );
    }
    for r in rows.iter().filter(|r| r.first_error.is_some()) {
        println!(
            "  {} probes, {}: first failed batch: {}",
            r.probes,
            r.store,
            r.first_error.as_deref().unwrap_or_default()
        );
    }
    println!(
        "\n  results/s: timed results over wall time (all writers); ms: per {BATCH}-result \
         insert_batch; vs SQLite: results/s over SQLite's at the same number of probes; \
         cpu: CPU ms per {BATCH} results of this process (the stores) and of the PostgreSQL \
         server (all its processes)"
    );
}

/// User + system CPU seconds of `/proc/<pid>` (`self`: this process, all
/// its threads). Linux reports them in ticks of 1/100 s.
fn cpu_secs(pid: &str) -> f64 {
    stat(pid).map_or(0.0, |(_, ticks)| ticks as f64 / 100.0)
}

/// The parent and user + system ticks of `/proc/<pid>/stat`.
fn stat(pid: &str) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state, ppid, ..., utime (12th), stime (13th).
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU seconds of the postmaster `pid` and every process it started
/// (backends, WAL writer, checkpointer...).
fn server_cpu_secs(pid: u32) -> f64 {
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.parse::<u32>().ok()?;
            stat(&name).filter(|(ppid, _)| *ppid == pid).map(|(_, t)| t)
        })
        .sum();
    cpu_secs(&pid.to_string()) + children as f64 / 100.0
}

/// One writer's stream of results: `probes` probes every 30 s, each at
/// its scheduler offset, in the order they happen.
#[derive(Clone)]
struct Load {
    prefix: String,
    /// (offset in the interval in ms, probe number), sorted.
    order: Arc<Vec<(i64, usize)>>,
    location: Option<Arc<str>>,
    /// Added to every start time.
    shift_ms: i64,
}

impl Load {
    fn new(prefix: &str, probes: usize) -> Load {
        let interval = Duration::from_millis(INTERVAL_MS as u64);
        let mut order: Vec<(i64, usize)> = (0..probes)
            .map(|p| {
                let name = format!("{prefix}{p:05}");
                let offset = lookout::scheduler::offset(&name, interval).as_millis() as i64;
                (offset, p)
            })
            .collect();
        order.sort_unstable();
        Load {
            prefix: prefix.to_string(),
            order: Arc::new(order),
            location: None,
            shift_ms: 0,
        }
    }

    /// The `b`th batch of the stream.
    fn batch(&self, b: usize) -> Vec<ProbeResult> {
        let n = self.order.len();
        (b * BATCH..(b + 1) * BATCH)
            .map(|i| {
                let round = (i / n) as i64;
                let (offset, p) = self.order[i % n];
                self.result(
                    p,
                    T0_MS + self.shift_ms + round * INTERVAL_MS + offset,
                    round,
                )
            })
            .collect()
    }

    /// An HTTP result as the probe stores it: five phases, the details an
    /// HTTP run records, 1 run in 211 failed.
    fn result(&self, p: usize, at_ms: i64, i: i64) -> ProbeResult {
        let us = duration_us(p, i);
        let d = Duration::from_micros;
        let name = format!("{}{p:05}", self.prefix);
        let mut details = serde_json::Map::new();
        details.insert("status".into(), 200.into());
        details.insert("http_version".into(), "HTTP/1.1".into());
        details.insert("redirects".into(), 0.into());
        details.insert(
            "final_url".into(),
            format!("https://service-{p:05}.example.com/health").into(),
        );
        details.insert("tls_version".into(), "TLSv1_3".into());
        details.insert("size".into(), 143.into());
        details.insert(
            "trace_id".into(),
            format!("{:016x}{:016x}", p as u64 * 0x9e37_79b9, i as u64).into(),
        );
        let failed = (p as i64 * 31 + i) % 211 == 0;
        ProbeResult {
            probe: name,
            started_at: DateTime::from_timestamp_millis(at_ms).expect("time"),
            duration: d(us),
            success: !failed,
            failure: failed.then(|| Failure::new(FailureClass::Expectation, "status 2xx: got 503")),
            phases: vec![
                (Phase::Dns, d(us / 20)),
                (Phase::Connect, d(us / 10)),
                (Phase::Tls, d(us / 4)),
                (Phase::FirstByte, d(us / 2)),
                (Phase::Transfer, d(us / 10)),
            ],
            checks: Vec::new(),
            details,
            location: self.location.clone(),
        }
    }
}

/// A probe's `i`th duration (µs): a base between 2 and 152 ms, 80% of runs
/// within ±20% of it, the rest up to 5× (as in benches/history.rs).
fn duration_us(probe: usize, i: i64) -> u64 {
    let base = 2_000 + (probe as u64 * 7_919) % 150_000;
    let mut x = (probe as u64) << 32 ^ i as u64;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    let r = x % 1_000;
    if r < 800 {
        base * (80 + r % 40) / 100
    } else {
        base * (100 + (r - 800) * 2) / 100
    }
}

/// Raw rows and rollup counts of the probes named `prefix...`; `p` is the
/// placeholder for the prefix pattern.
fn counts_sql(p: &str) -> String {
    let of = format!("probe_id IN (SELECT id FROM probes WHERE name LIKE {p})");
    format!(
        "SELECT (SELECT count(*) FROM results WHERE {of}), \
         (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM rollups_minute WHERE {of}), \
         (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM rollups_hour WHERE {of}), \
         (SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM rollups_day WHERE {of})"
    )
}

fn sqlite_counts(path: &Path, prefix: &str) -> Option<[i64; 4]> {
    let conn = rusqlite::Connection::open(path).ok()?;
    conn.query_row(&counts_sql("?1"), [format!("{prefix}%")], |r| {
        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?])
    })
    .ok()
}

fn pg_counts(url: &str, prefix: &str) -> Option<[i64; 4]> {
    let mut client = match postgres::Client::connect(url, postgres::NoTls) {
        Ok(c) => c,
        Err(e) => {
            println!("  (rollup check skipped: cannot connect without TLS: {e})");
            return None;
        }
    };
    let row = client
        .query_one(&counts_sql("$1"), &[&format!("{prefix}%")])
        .ok()?;
    Some([row.get(0), row.get(1), row.get(2), row.get(3)])
}

/// The PostgreSQL the bench writes to.
enum Pg {
    External(String),
    Throwaway { port: u16, pid: Option<u32> },
}

impl Pg {
    /// A URL for a case: a fresh database on the throwaway server, the
    /// given database otherwise.
    fn database(&self, name: &str) -> String {
        match self {
            Pg::External(url) => url.clone(),
            Pg::Throwaway { port, .. } => {
                let admin =
                    format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
                let mut client = postgres::Client::connect(&admin, postgres::NoTls)
                    .expect("connect as postgres");
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create the case's database");
                format!("postgres://postgres@127.0.0.1:{port}/{name}?sslmode=disable")
            }
        }
    }

    /// The server's version and the settings that decide write speed.
    fn settings(&self) -> String {
        let Pg::Throwaway { port, .. } = self else {
            return String::new();
        };
        let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
        let mut client =
            postgres::Client::connect(&admin, postgres::NoTls).expect("connect as postgres");
        let names = [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "shared_buffers",
            "max_wal_size",
        ];
        names
            .iter()
            .map(|n| {
                let v: String = client
                    .query_one(&format!("SHOW {n}"), &[])
                    .map(|r| r.get(0))
                    .unwrap_or_else(|e| e.to_string());
                format!("{n}={v}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A PostgreSQL server in a temporary folder with default settings,
/// stopped when dropped. A watchdog shell stops it and deletes the folder
/// if this process dies first (as tests/it/harness/postgres_server.rs).
struct PgServer {
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    data: PathBuf,
    port: u16,
    watchdog: Option<(Child, ChildStdin)>,
}

impl PgServer {
    fn start(base: &Path) -> PgServer {
        let bin = pg_bin();
        let run_as = run_as();
        let dir = base.join("pg");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).expect("PostgreSQL folder");
        for p in [base, &dir, &sock] {
            give(p, run_as);
        }
        let data = dir.join("data");
        let out = as_postgres(Command::new(bin.join("initdb")), run_as, &dir)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            bin,
            run_as,
            data,
            port: 0,
            watchdog: None,
        };
        // A port free now may be taken before the server binds it: try a
        // few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let out = as_postgres(Command::new(server.bin.join("pg_ctl")), run_as, &dir)
                .arg("-D")
                .arg(&server.data)
                .arg("-l")
                .arg(dir.join("postgres.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -c port={port} \
                     -c unix_socket_directories='{}'",
                    sock.display()
                ))
                .arg("start")
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                server.port = port;
                server.watch(&dir);
                return server;
            }
        }
        panic!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
        );
    }

    /// The postmaster's process id, from its pid file.
    fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn watch(&mut self, dir: &Path) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("lookout-pg-watchdog")
            .arg(&self.data)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog shell");
        let stdin = child.stdin.take().expect("watchdog stdin");
        self.watchdog = Some((child, stdin));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_postgres(
            Command::new(self.bin.join("pg_ctl")),
            self.run_as,
            &self.data,
        )
        .arg("-D")
        .arg(&self.data)
        .args(["-m", "fast", "-w", "stop"])
        .stdout(Stdio::null())
        .status();
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Stops the server when this process's end of the pipe closes, then
/// removes its folder.
const WATCHDOG: &str = r#"trap '' INT TERM HUP
read -r _ignored
if [ -f "$1/postmaster.pid" ]; then
  pid=$(head -n 1 "$1/postmaster.pid")
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -rf "$2"
"#;

/// The newest `/usr/lib/postgresql/<version>/bin`, or `LOOKOUT_PG_BIN`.
fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LOOKOUT_PG_BIN") {
        return PathBuf::from(p);
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
        .expect(
            "no /usr/lib/postgresql/<version>/bin/initdb: install PostgreSQL's server \
             (apt-get install postgresql), set LOOKOUT_PG_BIN, or set LOOKOUT_BENCH_PG_URL",
        )
}

/// The `postgres` user's uid and gid when this process runs as root
/// (PostgreSQL refuses to run as root).
fn run_as() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == "postgres")
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    });
    Some(ids.expect("running as root, and there is no `postgres` user to run PostgreSQL as"))
}

fn as_postgres(mut cmd: Command, run_as: Option<(u32, u32)>, cwd: &Path) -> Command {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.current_dir(cwd)
        .env_remove("PGDATA")
        .env_remove("PGHOST")
        .env_remove("PGPORT");
    cmd
}

fn give(path: &Path, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}
