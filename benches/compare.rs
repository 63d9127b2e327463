//! Lookout side by side with Prometheus's blackbox_exporter (issue 6): the
//! real `lookout run` daemon and `/usr/bin/prometheus-blackbox-exporter`
//! probe the same local targets (an HTTP server answering 200 "ok", the same
//! server with a fixed 50 ms delay before the response head, a TCP
//! listener), one after the other in the same run. The targets run in a
//! separate process (this binary in target mode) so their CPU is not
//! counted. blackbox_exporter is driven the way Prometheus drives it: this
//! process sends `GET /probe?module=...&target=...` at a fixed rate over
//! kept-alive connections and reads `probe_success` and
//! `probe_duration_seconds` from each answer; only the exporter's own CPU
//! is counted. Each tool's CPU (utime + stime from `/proc/<pid>/stat`) is
//! read over a measured interval after a warm-up, and its peak RSS from
//! `VmHWM`. Lookout's completed runs come from its `/metrics`, its
//! durations from its database after a clean shutdown. Under each
//! fixed-delay row, "own err" joins every reported duration to the
//! target's log of that very request (see [`own_errors`]): the error
//! against what the target really took rather than the nominal delay.
//!
//! `cargo bench --bench compare` runs the full suite (about five minutes);
//! `cargo bench --bench compare -- quick` runs a few seconds of it.
//! `cargo test --all-targets` runs the quick mode with the debug binary
//! when blackbox_exporter is installed, asserting only that both tools
//! completed probes (HTTP, TCP and the fixed-delay target), so this code
//! cannot rot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ROLE: &str = "LOOKOUT_COMPARE_ROLE";
const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";
/// The fixed delay of the slow target, before the response head.
const DELAY: Duration = Duration::from_millis(50);

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("target") => target(),
        Ok("inproc") => inproc(),
        _ if std::env::args().any(|a| a == "--bench") => {
            let quick = std::env::args().any(|a| a == "quick");
            orchestrate(quick);
        }
        // `cargo test --all-targets`: the quick mode, only where the
        // exporter is installed (tests/run.sh installs it).
        _ if Path::new(BLACKBOX).exists() => orchestrate(true),
        _ => println!("compare benchmark: {BLACKBOX} is not installed; skipped"),
    }
}

// ---------------------------------------------------------------- targets

/// Three listeners: HTTP 200 "ok", the same after [`DELAY`], and a TCP
/// listener that accepts and closes. Prints their ports on one line.
fn target() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let (fast, slow, tcp) = (
            bind().await.expect("bind"),
            bind().await.expect("bind"),
            bind().await.expect("bind"),
        );
        let port = |l: &tokio::net::TcpListener| l.local_addr().expect("addr").port();
        println!("{} {} {}", port(&fast), port(&slow), port(&tcp));
        std::io::stdout().flush().expect("flush");
        tokio::spawn(serve_http(fast));
        tokio::spawn(serve_http_precise(slow, DELAY));
        loop {
            // Accept and close: a TCP connect check.
            let _ = tcp.accept().await;
        }
    });
}

/// Prints the p50, p99 and max of `late_us` on stderr and clears it.
fn report_lateness(late_us: &mut Vec<u64>) {
    if late_us.is_empty() {
        return;
    }
    late_us.sort_unstable();
    let q = |f: f64| late_us[((late_us.len() - 1) as f64 * f) as usize];
    eprintln!(
        "target: {} responses, late p50 {} us, p99 {} us, max {} us",
        late_us.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    late_us.clear();
}

/// Reads until the end of the request head and returns the request
/// target (`/p12`); `None` if the peer went away.
async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&seen);
                    return Some(head.split(' ').nth(1).unwrap_or("").to_string());
                }
            }
        }
    }
}

async fn serve_http(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if read_head(&mut sock).await.is_none() {
                return;
            }
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            let _ = sock.shutdown().await;
        });
    }
}

/// One request to the slow target, on its way to the releaser thread.
struct Held {
    sock: std::net::TcpStream,
    path: String,
    /// When `accept` returned, on both clocks.
    accepted: Instant,
    accepted_unix_us: i64,
    /// When the response is due: [`DELAY`] after the head was read.
    deadline: Instant,
}

/// The slow target: requests are read on the async runtime, then handed to
/// one releaser thread that sleeps (nanosleep; Linux's default 50 µs timer
/// slack) until exactly `delay` after the head was read and writes the
/// response. The delay is fixed, so deadlines arrive in order and a FIFO is
/// a timer queue. tokio's own timer rounds a sleep up to its next 1 ms tick
/// (up to ~1.6 ms late), and a thread per connection costs the target
/// enough CPU at 2,000/s to disturb both probers; this does neither.
///
/// With `LOOKOUT_COMPARE_TARGET_LOG=<file>` the releaser appends one line
/// per response, `path accepted_unix_us span_us late_us`: the span from
/// `accept` returning to the response written (what the target really
/// took, its own lateness included) and how late the write was past the
/// deadline. The orchestrator joins these lines to each tool's reported
/// durations (see [`own_errors`]).
async fn serve_http_precise(listener: tokio::net::TcpListener, delay: Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<Held>();
    // LOOKOUT_COMPARE_TARGET_STATS=1: every 5 s, how late the target
    // itself wrote its responses (past the deadline), on stderr.
    let stats = std::env::var_os("LOOKOUT_COMPARE_TARGET_STATS").is_some();
    let mut log = std::env::var_os("LOOKOUT_COMPARE_TARGET_LOG")
        .map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("create the target log")));
    std::thread::spawn(move || {
        let mut late_us: Vec<u64> = Vec::new();
        let mut since = Instant::now();
        let mut flushed = Instant::now();
        loop {
            // Flush the log whenever the queue runs dry (and at least once
            // a second), so what a finished run asked for is on disk.
            let h = match rx.try_recv() {
                Ok(h) => h,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if let Some(w) = log.as_mut() {
                        let _ = w.flush();
                    }
                    flushed = Instant::now();
                    match rx.recv() {
                        Ok(h) => h,
                        Err(_) => return,
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            };
            let Held {
                mut sock,
                path,
                accepted,
                accepted_unix_us,
                deadline,
            } = h;
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let written = Instant::now();
            let late = written.saturating_duration_since(deadline).as_micros() as u64;
            if let Some(w) = log.as_mut() {
                let span = written.saturating_duration_since(accepted).as_micros();
                let _ = writeln!(w, "{path} {accepted_unix_us} {span} {late}");
                if flushed.elapsed() >= Duration::from_secs(1) {
                    let _ = w.flush();
                    flushed = Instant::now();
                }
            }
            if stats {
                late_us.push(late);
                if since.elapsed() >= Duration::from_secs(5) {
                    report_lateness(&mut late_us);
                    since = Instant::now();
                }
            }
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
    });
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let (accepted, accepted_unix_us) = (Instant::now(), unix_us());
        let tx = tx.clone();
        tokio::spawn(async move {
            let Some(path) = read_head(&mut sock).await else {
                return;
            };
            let deadline = Instant::now() + delay;
            let Ok(sock) = sock.into_std() else {
                return;
            };
            if sock.set_nonblocking(false).is_ok() {
                let _ = tx.send(Held {
                    sock,
                    path,
                    accepted,
                    accepted_unix_us,
                    deadline,
                });
            }
        });
    }
}

#[derive(Clone, Copy)]
struct Ports {
    fast: u16,
    slow: u16,
    tcp: u16,
}

/// A child process killed when dropped, so a failed run leaves nothing
/// behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn start_targets(exe: &Path, log: &Path) -> (Proc, Ports) {
    let mut child = Proc(
        Command::new(exe)
            .env(ROLE, "target")
            .env("LOOKOUT_COMPARE_TARGET_LOG", log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start targets"),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("target ports");
    let p: Vec<u16> = line
        .split_whitespace()
        .map(|v| v.parse().expect("port"))
        .collect();
    (
        child,
        Ports {
            fast: p[0],
            slow: p[1],
            tcp: p[2],
        },
    )
}

// ---------------------------------------------------------------- work

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Http,
    Slow,
    Tcp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Slow => "http+50ms",
            Kind::Tcp => "tcp",
        }
    }
}

/// N probes of one kind, each every `interval_ms`: N * 1000 / interval_ms
/// probes per second.
#[derive(Clone, Copy)]
struct Work {
    kind: Kind,
    n: usize,
    interval_ms: u64,
}

impl Work {
    fn rate(&self) -> f64 {
        self.n as f64 * 1000.0 / self.interval_ms as f64
    }
}

/// How long to wait before measuring, and how long to measure.
#[derive(Clone, Copy)]
struct Timing {
    warm: Duration,
    secs: Duration,
}

/// What one tool did over the measured interval.
#[derive(Default)]
struct Figures {
    probes: u64,
    failed: u64,
    wall: f64,
    cpu_s: f64,
    rss_mb: f64,
    /// Reported durations of the runs in the interval, in ms.
    durations_ms: Vec<f64>,
    /// Beside each duration: the request's path on the target (`/p12`)
    /// and when the tool started it (unix µs; Lookout stores ms), for
    /// [`own_errors`].
    asked: Vec<(String, i64)>,
    /// Lookout only: p99 upper bound of the scheduler lag, in ms.
    lag_p99_ms: Option<f64>,
    /// Lookout only: process start to `/readyz` 200, in ms.
    ready_ms: Option<f64>,
    /// Lookout only: database file bytes per stored result.
    db_bytes_per_result: Option<(f64, u64)>,
}

impl Figures {
    fn cpu_us(&self) -> f64 {
        self.cpu_s * 1e6 / self.probes.max(1) as f64
    }
    fn per_s(&self) -> f64 {
        self.probes as f64 / self.wall.max(1e-9)
    }
}

// ---------------------------------------------------------------- /proc

fn proc_cpu_s(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/<pid>/stat: utime and stime in clock ticks
    // (USER_HZ, 100 on Linux), for all the process's threads.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn proc_hwm_mb(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A blocking `GET path` on 127.0.0.1:port: (status, body), `None` if the
/// server is not answering.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `path` until it answers 200; the time it took.
fn wait_ok(port: u16, path: &str, child: &mut Child, what: &str) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        if let Some((200, _)) = http_get(port, path) {
            return started.elapsed();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it was ready: {status}");
        }
        assert!(Instant::now() < deadline, "{what} not ready within 120s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------- Lookout

/// Each probe's timeout: its interval, at most 2 s.
fn probe_timeout_ms(w: &Work) -> u64 {
    w.interval_ms.min(2000)
}

fn lookout_yaml(w: &Work, ports: Ports, listen: u16) -> String {
    let timeout = probe_timeout_ms(w);
    let mut y = format!(
        "storage: {{ sqlite: lookout.db }}\nserver: {{ listen: \"127.0.0.1:{listen}\" }}\nscheduler: {{ concurrency: 512 }}\nprobes:\n"
    );
    for i in 0..w.n {
        let section = match w.kind {
            Kind::Http | Kind::Slow => {
                let port = if w.kind == Kind::Http {
                    ports.fast
                } else {
                    ports.slow
                };
                format!("    http: {{ url: \"http://127.0.0.1:{port}/p{i}\" }}\n    expect: {{ status: 200, body_matches: \"ok\" }}\n")
            }
            Kind::Tcp => format!("    tcp: {{ host: 127.0.0.1, port: {} }}\n", ports.tcp),
        };
        y.push_str(&format!(
            "  - name: p{i}\n{section}    interval: {}ms\n    timeout: {timeout}ms\n",
            w.interval_ms
        ));
    }
    y
}

/// Runs finished and failed, and the lag histogram (le, cumulative), from
/// one `/metrics` scrape.
struct Scrape {
    runs: u64,
    failed: u64,
    lag: Vec<(f64, f64)>,
}

fn scrape(port: u16) -> Scrape {
    let (_, text) = http_get(port, "/metrics").expect("scrape /metrics");
    let mut s = Scrape {
        runs: 0,
        failed: 0,
        lag: Vec::new(),
    };
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        if series.starts_with("lookout_results_total{") {
            s.runs += v as u64;
            if !series.contains("outcome=\"success\"") {
                s.failed += v as u64;
            }
        } else if let Some(rest) = series.strip_prefix("lookout_scheduler_lag_seconds_bucket{le=\"")
        {
            let le = rest.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            s.lag.push((le, v));
        }
    }
    s
}

/// The smallest bucket bound holding 99% of the runs between two scrapes.
fn lag_p99_ms(a: &Scrape, b: &Scrape) -> Option<f64> {
    let total = b.lag.last()?.1 - a.lag.last()?.1;
    if total <= 0.0 {
        return None;
    }
    b.lag
        .iter()
        .zip(&a.lag)
        .find(|((_, cb), (_, ca))| cb - ca >= 0.99 * total)
        .map(|((le, _), _)| le * 1000.0)
}

fn unix_ms() -> i64 {
    unix_us() / 1000
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Starts `lookout run` on `w`, measures, stops it with SIGTERM and reads
/// its database. With `scrapes`, runs and lag come from `/metrics` at both
/// ends of the interval; without, runs come from the database and nothing
/// is asked of the daemon (a 10,000-probe scrape is itself megabytes of
/// text, which would show in the peak RSS).
fn run_lookout(bin: &Path, w: &Work, ports: Ports, t: Timing, scrapes: bool) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let cfg = dir.path().join("lookout.yaml");
    std::fs::write(&cfg, lookout_yaml(w, ports, listen)).expect("write config");
    let log = std::fs::File::create(dir.path().join("lookout.log")).expect("log file");
    let mut child = Proc(
        Command::new(bin)
            .args(["run", "-c"])
            .arg(&cfg)
            .env("LOOKOUT_LOG", "warn")
            .env_remove("LOOKOUT_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lookout run"),
    );
    let pid = child.id();
    let ready = wait_ok(listen, "/readyz", &mut child, "lookout");
    std::thread::sleep(t.warm);
    let a = scrapes.then(|| scrape(listen));
    let (cpu0, ms0, t0) = (proc_cpu_s(pid), unix_ms(), Instant::now());
    std::thread::sleep(t.secs);
    let (cpu1, ms1, wall) = (proc_cpu_s(pid), unix_ms(), t0.elapsed());
    let rss_before = proc_hwm_mb(&pid.to_string());
    let b = scrapes.then(|| scrape(listen));
    stop(&mut child);
    let mut f = Figures {
        wall: wall.as_secs_f64(),
        cpu_s: cpu1 - cpu0,
        rss_mb: rss_before,
        ready_ms: Some(ready.as_secs_f64() * 1000.0),
        ..Figures::default()
    };
    read_db(&dir.path().join("lookout.db"), ms0, ms1, &mut f);
    if let (Some(a), Some(b)) = (a, b) {
        f.probes = b.runs - a.runs;
        f.failed = b.failed - a.failed;
        f.lag_p99_ms = lag_p99_ms(&a, &b);
    }
    f
}

/// SIGTERM, then wait for a clean exit (the recorder flushes); SIGKILL
/// after 30 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Durations of the runs started in `[ms0, ms1)`, and file bytes per
/// stored result.
fn read_db(db: &Path, ms0: i64, ms1: i64, f: &mut Figures) {
    let conn = rusqlite::Connection::open(db).expect("open lookout.db");
    let mut q = conn
        .prepare(
            "SELECT p.name, r.started_at, r.duration_us, r.success FROM results r \
             JOIN probes p ON p.id = r.probe_id WHERE started_at >= ?1 AND started_at < ?2",
        )
        .expect("query");
    let runs: Vec<(String, i64, i64, bool)> = q
        .query_map([ms0, ms1], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .expect("durations")
        .filter_map(Result::ok)
        .collect();
    f.probes = runs.len() as u64;
    f.failed = runs.iter().filter(|r| !r.3).count() as u64;
    f.durations_ms = runs.iter().map(|r| r.2 as f64 / 1000.0).collect();
    f.asked = runs
        .into_iter()
        .map(|(name, ms, _, _)| (format!("/{name}"), ms * 1000))
        .collect();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM results", [], |r| r.get(0))
        .unwrap_or(0);
    drop(q);
    drop(conn);
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes = size(db.to_path_buf()) + size(db.with_extension("db-wal"));
    if rows > 0 {
        f.db_bytes_per_result = Some((bytes as f64 / rows as f64, rows as u64));
    }
}

// ---------------------------------------------------------------- in-process

/// The same probes through `lookout::scheduler::run` in this process with
/// a sink that only counts: no database, no server, no alerting.
fn inproc() {
    let yaml = std::fs::read_to_string(std::env::var("YAML_FILE").expect("YAML_FILE"))
        .expect("read the generated configuration");
    let warm = Duration::from_millis(env_u64("WARM_MS"));
    let secs = Duration::from_millis(env_u64("SECS_MS"));
    let (cfg, _) =
        lookout::config::load_str("bench.yaml", &yaml, lookout::config::read::Cx::default())
            .unwrap_or_else(|d| panic!("{d}"));
    let probes: Vec<_> = cfg.probes;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runs = Arc::new(AtomicU64::new(0));
    let sink: lookout::scheduler::Sink = {
        let runs = runs.clone();
        Arc::new(move |_r, _meta| {
            runs.fetch_add(1, Ordering::Relaxed);
        })
    };
    let stop = CancellationToken::new();
    let task = rt.spawn(lookout::scheduler::run(probes, 512, sink, stop.clone()));
    std::thread::sleep(warm);
    let (n0, cpu0, t0) = (runs.load(Ordering::Relaxed), self_cpu(), Instant::now());
    std::thread::sleep(secs);
    let (n1, cpu1, wall) = (runs.load(Ordering::Relaxed), self_cpu(), t0.elapsed());
    stop.cancel();
    let _ = rt.block_on(task);
    println!(
        "{} {} {} {}",
        n1 - n0,
        cpu1 - cpu0,
        wall.as_secs_f64(),
        proc_hwm_mb("self")
    );
}

fn self_cpu() -> f64 {
    proc_cpu_s(std::process::id())
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} must be set"))
}

fn run_inproc(exe: &Path, w: &Work, ports: Ports, t: Timing) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, lookout_yaml(w, ports, 1)).expect("write config");
    let out = Command::new(exe)
        .env(ROLE, "inproc")
        .env("YAML_FILE", &file)
        .env("WARM_MS", t.warm.as_millis().to_string())
        .env("SECS_MS", t.secs.as_millis().to_string())
        .env("LOOKOUT_LOG", "off")
        .output()
        .expect("in-process scenario");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(
        v.len(),
        4,
        "in-process scenario failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Figures {
        probes: v[0] as u64,
        cpu_s: v[1],
        wall: v[2],
        rss_mb: v[3],
        ..Figures::default()
    }
}

// ---------------------------------------------------------------- blackbox

const MODULES: &str = "modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      valid_status_codes: [200]
      preferred_ip_protocol: ip4
      fail_if_body_not_matches_regexp: [\"ok\"]
  tcp_connect:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
";

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Kept-alive connections to the exporter, as Prometheus keeps them.
struct Pool {
    port: u16,
    idle: Mutex<Vec<Sender>>,
    /// The scrape timeout Prometheus would send (the probe's timeout in
    /// Lookout's configuration); the exporter subtracts its 0.5 s offset.
    timeout: Duration,
}

impl Pool {
    fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        let mut s = match self.take() {
            Some(s) => s,
            None => self.connect().await?,
        };
        let req = http::Request::get(path)
            .header("host", "127.0.0.1")
            .header(
                "x-prometheus-scrape-timeout-seconds",
                format!("{}", self.timeout.as_secs_f64()),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(s);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// A completed `/probe` request.
#[derive(Clone)]
struct Answer {
    at: Instant,
    /// `probe_duration_seconds`, in ms.
    ms: f64,
    ok: bool,
    /// The path the exporter was asked to probe (`/p12`; empty for TCP)
    /// and when the request was sent (unix µs).
    path: String,
    sent_unix_us: i64,
}

type Done = Arc<Mutex<Vec<Answer>>>;

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Sends the `/probe` requests at `rate` per second, in turn over `paths`
/// (each path once per `paths.len() / rate` seconds), until `stop`.
async fn drive(
    pool: Arc<Pool>,
    paths: Arc<Vec<String>>,
    rate: f64,
    done: Done,
    stop: CancellationToken,
) {
    let start = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let path = paths[(sent % paths.len() as u64) as usize].clone();
            sent += 1;
            let (pool, done) = (pool.clone(), done.clone());
            let sent_unix_us = unix_us();
            tokio::spawn(async move {
                // Like a scrape, a request is abandoned after its timeout
                // (and counted as failed).
                let body = tokio::time::timeout(pool.timeout, pool.get(&path))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let ok = metric(&body, "probe_success") == Some(1.0);
                let ms = metric(&body, "probe_duration_seconds").unwrap_or(f64::NAN) * 1000.0;
                let target = path
                    .rsplit_once("%2F")
                    .map(|(_, p)| format!("/{p}"))
                    .unwrap_or_default();
                if let Ok(mut d) = done.lock() {
                    d.push(Answer {
                        at: Instant::now(),
                        ms,
                        ok,
                        path: target,
                        sent_unix_us,
                    });
                }
            });
        }
    }
}

fn probe_paths(w: &Work, ports: Ports) -> Vec<String> {
    (0..w.n)
        .map(|i| match w.kind {
            Kind::Http => format!(
                "/probe?module=http_2xx&target=http%3A%2F%2F127.0.0.1%3A{}%2Fp{i}",
                ports.fast
            ),
            Kind::Slow => format!(
                "/probe?module=http_2xx&target=http%3A%2F%2F127.0.0.1%3A{}%2Fp{i}",
                ports.slow
            ),
            Kind::Tcp => format!("/probe?module=tcp_connect&target=127.0.0.1%3A{}", ports.tcp),
        })
        .collect()
}

fn run_blackbox(rt: &tokio::runtime::Runtime, w: &Work, ports: Ports, t: Timing) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("blackbox.yml");
    std::fs::write(&cfg, MODULES).expect("write modules");
    let listen = free_port();
    let mut child = Proc(
        Command::new(BLACKBOX)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{listen}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start blackbox_exporter"),
    );
    let pid = child.id();
    wait_ok(listen, "/-/healthy", &mut child, "blackbox_exporter");
    let pool = Arc::new(Pool {
        port: listen,
        idle: Mutex::new(Vec::new()),
        timeout: Duration::from_millis(probe_timeout_ms(w)),
    });
    let done: Done = Arc::new(Mutex::new(Vec::with_capacity(
        (w.rate() * (t.warm + t.secs).as_secs_f64() * 1.2) as usize,
    )));
    let stop = CancellationToken::new();
    let paths = Arc::new(probe_paths(w, ports));
    let driver = rt.spawn(drive(pool, paths, w.rate(), done.clone(), stop.clone()));
    std::thread::sleep(t.warm);
    let (cpu0, t0) = (proc_cpu_s(pid), Instant::now());
    std::thread::sleep(t.secs);
    let (cpu1, t1) = (proc_cpu_s(pid), Instant::now());
    let rss_mb = proc_hwm_mb(&pid.to_string());
    stop.cancel();
    let _ = rt.block_on(driver);
    let _ = child.kill();
    let _ = child.wait();
    let d = done.lock().map(|d| d.clone()).unwrap_or_default();
    let window: Vec<&Answer> = d.iter().filter(|a| a.at >= t0 && a.at < t1).collect();
    // A request that timed out has no reported duration.
    let timed: Vec<&&Answer> = window.iter().filter(|a| a.ms.is_finite()).collect();
    Figures {
        probes: window.len() as u64,
        failed: window.iter().filter(|a| !a.ok).count() as u64,
        wall: (t1 - t0).as_secs_f64(),
        cpu_s: cpu1 - cpu0,
        rss_mb,
        durations_ms: timed.iter().map(|a| a.ms).collect(),
        asked: timed
            .iter()
            .map(|a| (a.path.clone(), a.sent_unix_us))
            .collect(),
        ..Figures::default()
    }
}

// ---------------------------------------------------------------- report

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[idx]
}

/// The slow target's log: per path, `(accepted unix µs, span µs, late µs)`
/// in the order accepted.
type TargetLog = std::collections::HashMap<String, Vec<(i64, i64, i64)>>;

fn read_target_log(path: &Path) -> TargetLog {
    let mut log = TargetLog::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
        if let (Some(path), Some(at), Some(span), Some(late)) = (f.first(), num(1), num(2), num(3))
        {
            log.entry(path.to_string())
                .or_default()
                .push((at, span, late));
        }
    }
    for v in log.values_mut() {
        v.sort_unstable();
    }
    log
}

/// Each reported duration joined to the target's own record of that
/// request (same path, the first request the target accepted at or after
/// the tool started it, within 500 ms): `reported − span` is what the
/// tool added to what the target really took — connecting, writing the
/// request, the target's `accept` wake-up, and reading the answer after it
/// was written. Returns those errors, the target's lateness past its
/// deadline for the same requests (ms), and how many durations found no
/// record.
fn own_errors(f: &Figures, log: &TargetLog) -> (Vec<f64>, Vec<f64>, usize) {
    let (mut own, mut late, mut unmatched) = (Vec::new(), Vec::new(), 0);
    for (ms, (path, asked)) in f.durations_ms.iter().zip(&f.asked) {
        let rec = log.get(path).and_then(|v| {
            let i = v.partition_point(|r| r.0 < *asked);
            v.get(i).filter(|r| r.0 < asked + 500_000)
        });
        match rec {
            Some(&(_, span, l)) => {
                own.push(ms - span as f64 / 1000.0);
                late.push(l as f64 / 1000.0);
            }
            None => unmatched += 1,
        }
    }
    (own, late, unmatched)
}

/// The line under a fixed-delay row: the tool's own share of the error.
fn own_line(cx: &Ctx, tool: &str, f: &Figures) {
    let (own, late, unmatched) = own_errors(f, &read_target_log(&cx.target_log));
    println!(
        "{:>10} {:>9}  own err p50 {:.2}ms p99 {:.2}ms (reported - target span; {} joined, {unmatched} not); target late p50 {:.2}ms p99 {:.2}ms",
        "",
        tool,
        pct(&own, 0.5),
        pct(&own, 0.99),
        own.len(),
        pct(&late, 0.5),
        pct(&late, 0.99),
    );
}

/// Error of the reported durations against the true [`DELAY`], in ms.
fn errors(f: &Figures) -> (f64, f64) {
    let delay = DELAY.as_secs_f64() * 1000.0;
    let e: Vec<f64> = f.durations_ms.iter().map(|d| d - delay).collect();
    (pct(&e, 0.50), pct(&e, 0.99))
}

fn header() {
    println!(
        "{:>10} {:>9} {:>7} {:>8} {:>8} {:>7} {:>8} {:>10} {:>7} {:>9} {:>9} {:>8}",
        "work",
        "tool",
        "probes",
        "offered",
        "done/s",
        "failed",
        "cpu s",
        "cpu us/pr",
        "rss MB",
        "err p50",
        "err p99",
        "lag p99"
    );
}

fn row(w: &Work, tool: &str, f: &Figures) {
    let (e50, e99) = if w.kind == Kind::Slow {
        let (a, b) = errors(f);
        (format!("{a:.2}ms"), format!("{b:.2}ms"))
    } else {
        ("-".into(), "-".into())
    };
    let lag = f
        .lag_p99_ms
        .map(|l| format!("<={l}ms"))
        .unwrap_or_else(|| "-".into());
    let rss = if f.rss_mb > 0.0 {
        format!("{:.1}", f.rss_mb)
    } else {
        "-".into()
    };
    println!(
        "{:>10} {:>9} {:>7} {:>8.0} {:>8.0} {:>7} {:>8.2} {:>10.1} {:>7} {:>9} {:>9} {:>8}",
        w.kind.name(),
        tool,
        w.n,
        w.rate(),
        f.per_s(),
        f.failed,
        f.cpu_s,
        f.cpu_us(),
        rss,
        e50,
        e99,
        lag
    );
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn machine() {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let version = Command::new(BLACKBOX)
        .arg("--version")
        .output()
        .map(|o| {
            let all = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&all)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    println!("machine: {cpus} CPUs, {model}; {version}");
}

// ---------------------------------------------------------------- suites

struct Ctx {
    exe: PathBuf,
    /// The slow target's per-request log (see [`serve_http_precise`]).
    target_log: PathBuf,
    lookout: PathBuf,
    ports: Ports,
    rt: tokio::runtime::Runtime,
}

/// Both tools on `w`; Lookout first, then blackbox_exporter.
fn both(cx: &Ctx, w: Work, t: Timing, scrapes: bool) -> (Figures, Figures) {
    let l = run_lookout(&cx.lookout, &w, cx.ports, t, scrapes);
    row(&w, "lookout", &l);
    let b = run_blackbox(&cx.rt, &w, cx.ports, t);
    row(&w, "blackbox", &b);
    if w.kind == Kind::Slow {
        own_line(cx, "lookout", &l);
        own_line(cx, "blackbox", &b);
    }
    println!(
        "{:>10} {:>9}  cpu/probe {}  rss {}",
        "",
        "ratio L/B",
        ratio(l.cpu_us(), b.cpu_us()),
        ratio(l.rss_mb, b.rss_mb)
    );
    (l, b)
}

fn orchestrate(quick: bool) {
    let exe = std::env::current_exe().expect("current exe");
    let lookout = PathBuf::from(env!("CARGO_BIN_EXE_lookout"));
    let log_dir = tempfile::tempdir().expect("temp dir");
    let target_log = log_dir.path().join("target.log");
    let (mut targets, ports) = start_targets(&exe, &target_log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cx = Ctx {
        exe,
        target_log,
        lookout,
        ports,
        rt,
    };
    println!("compare benchmark: lookout = {}", cx.lookout.display());
    machine();
    if quick {
        quick_suite(&cx);
    } else if std::env::args().any(|a| a == "rss") {
        rss_section(&cx);
    } else if std::env::args().any(|a| a == "latency") {
        latency_section(&cx);
    } else {
        full_suite(&cx);
    }
    let _ = targets.kill();
    let _ = targets.wait();
}

fn quick_suite(cx: &Ctx) {
    let t = Timing {
        warm: Duration::from_millis(700),
        secs: Duration::from_millis(1500),
    };
    header();
    for kind in [Kind::Http, Kind::Tcp, Kind::Slow] {
        let w = Work {
            kind,
            n: 20,
            interval_ms: 200,
        };
        let (l, b) = both(cx, w, t, true);
        for (tool, f) in [("lookout", &l), ("blackbox_exporter", &b)] {
            assert!(f.probes > 0, "{tool} completed no {} probes", kind.name());
            assert!(
                f.cpu_us().is_finite() && f.rss_mb > 0.0,
                "{tool}: bad figures"
            );
        }
    }
}

/// `-- latency`: only the fixed-delay rows, both tools.
fn latency_section(cx: &Ctx) {
    let t = Timing {
        warm: Duration::from_secs(3),
        secs: Duration::from_secs(10),
    };
    header();
    for n in [20, 500, 2000] {
        let w = Work {
            kind: Kind::Slow,
            n,
            interval_ms: 1000,
        };
        both(cx, w, t, true);
    }
}

fn full_suite(cx: &Ctx) {
    let t = Timing {
        warm: Duration::from_secs(3),
        secs: Duration::from_secs(10),
    };
    println!(
        "\nCPU per probe and accuracy: {}s warm-up, {}s measured",
        t.warm.as_secs(),
        t.secs.as_secs()
    );
    header();
    for (kind, n) in [
        (Kind::Http, 500),
        (Kind::Http, 2000),
        (Kind::Tcp, 500),
        (Kind::Tcp, 2000),
        // The floor: the same target at a rate where nothing queues.
        (Kind::Slow, 20),
        (Kind::Slow, 500),
        (Kind::Slow, 2000),
    ] {
        both(
            cx,
            Work {
                kind,
                n,
                interval_ms: 1000,
            },
            t,
            true,
        );
    }

    rss_section(cx);

    println!("\nLookout only: scheduler lag p99 (bucket bound) as the rate rises");
    header();
    for n in [2000, 3000, 4000, 5000] {
        let w = Work {
            kind: Kind::Http,
            n,
            interval_ms: 1000,
        };
        let l = run_lookout(&cx.lookout, &w, cx.ports, t, true);
        row(&w, "lookout", &l);
        if let Some((b, rows)) = l.db_bytes_per_result {
            println!(
                "{:>10} database: {b:.0} bytes per result ({rows} results)",
                ""
            );
        }
    }

    println!(
        "\nLookout daemon (SQLite, server, alerting) vs the scheduler alone (sink counts only)"
    );
    header();
    for (n, interval_ms) in [(500, 1000), (2000, 1000), (10_000, 10_000)] {
        let w = Work {
            kind: Kind::Http,
            n,
            interval_ms,
        };
        // No scrapes at 10,000 probes, so the peak RSS is the daemon's own.
        let l = run_lookout(&cx.lookout, &w, cx.ports, t, n < 10_000);
        row(&w, "daemon", &l);
        let i = run_inproc(&cx.exe, &w, cx.ports, t);
        row(&w, "sched", &i);
        println!(
            "{:>10} {:>9}  cpu/probe {}",
            "",
            "ratio D/S",
            ratio(l.cpu_us(), i.cpu_us())
        );
        println!(
            "{:>10} {:>9}  rss {}",
            "",
            "ratio D/S",
            ratio(l.rss_mb, i.rss_mb)
        );
    }
}

/// Peak RSS with 100, 1,000 and 10,000 configured probes, both tools.
fn rss_section(cx: &Ctx) {
    let t_rss = Timing {
        warm: Duration::from_secs(3),
        secs: Duration::from_secs(10),
    };
    println!("\npeak RSS with N configured probes, each every 10 s (N/10 probes/s)");
    header();
    for n in [100, 1000, 10_000] {
        let (l, _) = both(
            cx,
            Work {
                kind: Kind::Http,
                n,
                interval_ms: 10_000,
            },
            t_rss,
            false,
        );
        if let Some(ms) = l.ready_ms {
            println!(
                "{:>10} lookout start-up to /readyz 200 with {n} probes: {ms:.0} ms",
                ""
            );
        }
    }
}
