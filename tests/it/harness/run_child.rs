//! Fault-injection fixtures: a `lookout run` child whose log (stderr) is
//! collected in the background (so a busy daemon never blocks on a full
//! pipe, and a test can wait on any line or look at all of them after the
//! exit), signals, the child's `/proc` figures, read-only views of its
//! database, and a TCP target that accepts and never answers while
//! counting the connections it holds.
//!
//! Every wait here is on an event (a log line, a row, an exit) with a
//! deadline; polling intervals are short and never the thing asserted.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    /// The child closed stderr (it exited).
    closed: AtomicBool,
}

/// A `lookout run -c CONFIG` child, SIGKILLed and reaped on drop.
pub struct RunChild {
    child: Child,
    log: Arc<Log>,
}

impl RunChild {
    /// Starts the daemon on `config`.
    pub fn start(config: &Path) -> RunChild {
        Self::start_with(config, None)
    }

    /// Starts the daemon with its open-files limits set first by the
    /// shell's `ulimit` with `ulimit_args` (`-S -n 1024`: the soft limit a
    /// login shell or systemd's default gives; `-n 2048`: soft and hard).
    pub fn start_with(config: &Path, ulimit_args: Option<&str>) -> RunChild {
        let bin = env!("CARGO_BIN_EXE_lookout");
        let mut cmd = match ulimit_args {
            // `exec` keeps the pid: the child is the daemon itself.
            Some(args) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit {args} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.env_remove("LOOKOUT_CONFIG")
            .env("NO_COLOR", "1")
            .env("LOOKOUT_LOG", "info")
            .args(["run", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start lookout run");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Log::default());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                lock(&sink.lines).push(line);
            }
            sink.closed.store(true, Ordering::SeqCst);
        });
        RunChild { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.log.lines).clone()
    }

    /// The whole log so far, for failure messages.
    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// How many log lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        lock(&self.log.lines).iter().filter(|l| pred(l)).count()
    }

    /// Waits until `n` log lines match `pred`; panics with the log's tail
    /// after `within`, or when the daemon exits first.
    pub async fn wait_lines(&self, n: usize, within: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if self.count(&pred) >= n {
                return;
            }
            if self.log.closed.load(Ordering::SeqCst) {
                panic!(
                    "lookout exited before {n} matching lines; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "fewer than {n} matching log lines within {within:?}; log tail:\n{}",
                    tail(&self.lines(), 40)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// SIGKILL, as when the machine or the OOM killer ends the process, and
    /// reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for the exit, at most `within`; `None` if still running then.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the log reader has seen the end of stderr (after the
    /// exit: then [`RunChild::lines`] is the whole log).
    pub async fn wait_log_closed(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log.closed.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "stderr still open");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resident memory, threads and open descriptors now, from /proc.
    pub fn proc_figures(&self) -> Option<ProcFigures> {
        proc_figures(self.pid())
    }

    /// The soft open-files limit the process runs with now.
    pub fn soft_nofile(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines, joined.
pub fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What /proc/PID/status and /proc/PID/fd say about a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcFigures {
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

pub fn proc_figures(pid: u32) -> Option<ProcFigures> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcFigures {
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
        fds,
    })
}

/// The `probe=NAME` of a result log line (`... result probe=NAME ok=...`),
/// or `None` for any other line.
pub fn result_probe(line: &str) -> Option<&str> {
    if !line.contains(" result ") || !line.contains(" ok=") {
        return None;
    }
    let rest = &line[line.find(" probe=")? + " probe=".len()..];
    rest.split_whitespace().next()
}

/// Results logged per probe.
pub fn logged_per_probe(lines: &[String]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for l in lines {
        if let Some(p) = result_probe(l) {
            *out.entry(p.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// The probes whose stored rows differ from their logged results, in
/// words (`probe: logged N, stored M`); empty when every result is stored
/// exactly once.
pub fn logged_but_not_stored(
    logged: &BTreeMap<String, i64>,
    stored: &BTreeMap<String, i64>,
) -> Vec<String> {
    logged
        .iter()
        .filter(|(p, n)| stored.get(*p) != Some(n))
        .map(|(p, n)| format!("{p}: logged {n}, stored {:?}", stored.get(p)))
        .collect()
}

/// The daemon's shutdown flushed its results and dropped none.
pub fn assert_flushed_without_drops(lines: &[String]) {
    let flushed = lines
        .iter()
        .find(|l| l.contains("results flushed"))
        .unwrap_or_else(|| panic!("no flush line; log tail:\n{}", tail(lines, 30)));
    assert!(flushed.contains("dropped=0"), "{flushed}");
}

/// A read-only connection to the daemon's database (WAL: it never blocks
/// the daemon's writers, and sees what they committed).
pub fn open_ro(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

/// Rows in `results` per probe name (empty before the first write).
pub fn rows_per_probe(db: &Path) -> BTreeMap<String, i64> {
    if !db.exists() {
        return BTreeMap::new();
    }
    let conn = open_ro(db);
    let mut stmt = match conn.prepare(
        "SELECT p.name, count(*) FROM results r JOIN probes p ON p.id = r.probe_id GROUP BY p.name",
    ) {
        Ok(s) => s,
        // The schema is not there yet.
        Err(_) => return BTreeMap::new(),
    };
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("count results")
        .map(|r| r.expect("row"))
        .collect()
}

/// One query's single integer (0 while the table does not exist yet).
pub fn scalar(db: &Path, sql: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    open_ro(db).query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

/// Waits until `check` (run on a fresh read-only connection each time)
/// returns `Some`; panics with `what` after `within`.
pub async fn wait_db<T>(
    db: &Path,
    within: Duration,
    what: &str,
    mut check: impl FnMut(&Connection) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if db.exists() {
            if let Some(v) = check(&open_ro(db)) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the database within {within:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The database path of a configuration written with `storage.sqlite:
/// lookout.db` in `dir`.
pub fn db_in(dir: &Path) -> PathBuf {
    dir.join("lookout.db")
}

/// A TCP port that accepts every connection, reads and discards what the
/// client sends, and never answers: a hung service. Counts connections
/// accepted, open now and open at most; dropping it closes them all.
pub struct HangTarget {
    pub addr: SocketAddr,
    counts: Arc<HangCounts>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct HangCounts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
}

impl HangTarget {
    pub async fn start() -> HangTarget {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the hanging target");
        let addr = listener.local_addr().expect("address");
        let counts = Arc::new(HangCounts::default());
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut tcp, _)) = accepted else { continue };
                        shared.accepted.fetch_add(1, Ordering::SeqCst);
                        let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
                        shared.max_open.fetch_max(open, Ordering::SeqCst);
                        let counts = shared.clone();
                        conns.spawn(async move {
                            let mut sink = [0u8; 1024];
                            while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
                            counts.open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        HangTarget { addr, counts, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections held open right now.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// The most connections held open at once.
    pub fn max_open(&self) -> usize {
        self.counts.max_open.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections are held open at once.
    pub async fn wait_open(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.open() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} connections open after {within:?}",
                self.open()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for HangTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// GET `path` on 127.0.0.1:`port` (connection: close) with a deadline:
/// the whole raw answer, or `None` when there was none complete in time.
async fn get_raw(port: u16, path: &str, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncWriteExt;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out)
    };
    tokio::time::timeout(within, fut).await.ok().flatten()
}

/// GET `path` with a deadline; the status code, or `None` when there was
/// no complete answer in time.
pub async fn get_status(port: u16, path: &str, within: Duration) -> Option<u16> {
    let out = get_raw(port, path, within).await?;
    let head = String::from_utf8_lossy(&out);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// GET `path` and return the body as JSON (connection: close).
pub async fn get_json(port: u16, path: &str, within: Duration) -> Option<serde_json::Value> {
    let out = get_raw(port, path, within).await?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return serde_json::from_str(&dechunk(body)).ok();
    }
    serde_json::from_str(body).ok()
}

/// The payload of a chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
