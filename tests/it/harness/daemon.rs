//! `lookout run` as a child process for end-to-end tests (reload, disk
//! full): its log lines on a channel, its database read read-only, its
//! HTTP answers, signals, and a webhook receiver's notices.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::http_get;
use super::recorder::Recorder;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Writes the configuration `config` makes for a free port to
/// `dir/lookout.yaml` and starts `lookout run` on it.
pub fn start_in(dir: &Path, config: impl FnOnce(u16) -> String) -> Daemon {
    let port = free_port();
    let cfg = dir.join("lookout.yaml");
    std::fs::write(&cfg, config(port)).expect("write config");
    Daemon::start(&cfg, port)
}

/// A running daemon: the child, its log lines, its HTTP port.
pub struct Daemon {
    pub child: Child,
    pub log: UnboundedReceiver<String>,
    pub port: u16,
    pub db: PathBuf,
}

impl Daemon {
    pub fn start(cfg: &Path, port: u16) -> Daemon {
        Daemon::start_with_env(cfg, port, &[])
    }

    /// [`Daemon::start`] with extra environment variables (e.g.
    /// `LOOKOUT_LOCATION`, or values the configuration's `${VAR}` reads).
    pub fn start_with_env(cfg: &Path, port: u16, env: &[(&str, &str)]) -> Daemon {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
            .env_remove("LOOKOUT_CONFIG")
            .env_remove("LOOKOUT_LOCATION")
            .env("NO_COLOR", "1")
            .env("LOOKOUT_LOG", "info")
            .envs(env.iter().copied())
            .args(["run", "-c"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start lookout run");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let db = cfg.with_file_name("lookout.db");
        Daemon {
            child,
            log,
            port,
            db,
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("pid").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// The first log line containing every one of `words`, within `secs`;
    /// panics with the lines seen otherwise.
    pub async fn log_line(&mut self, words: &[&str], secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.log.recv()).await {
                Ok(Some(l)) => {
                    if words.iter().all(|w| l.contains(w)) {
                        return l;
                    }
                    seen.push(l);
                }
                _ => panic!(
                    "no log line with {words:?} within {secs}s; saw:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    pub fn get(&self, path: &str) -> String {
        http_get(self.port, path).unwrap_or_default()
    }

    /// `(probe, started_at ms)` of every stored result, oldest first
    /// (none while the daemon has not created the database yet).
    pub fn results(&self) -> Vec<(String, i64)> {
        let Ok(conn) = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) else {
            return Vec::new();
        };
        let mut q = conn
            .prepare(
                "SELECT p.name, r.started_at FROM results r JOIN probes p ON p.id = r.probe_id \
                 ORDER BY r.started_at",
            )
            .ok();
        let Some(q) = q.as_mut() else {
            return Vec::new();
        };
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .filter_map(Result::ok)
            .collect();
        rows
    }

    /// Waits until `probe` has at least `n` stored results.
    pub async fn wait_results(&self, probe: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.results().iter().filter(|(p, _)| p == probe).count();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{probe}: {got} results of {n} within 20s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `(probe, ended_at is set, ended_by)` of every incident.
    pub fn incidents(&self) -> Vec<(String, bool, Option<String>)> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the database");
        let mut q = conn
            .prepare("SELECT probe, ended_at IS NOT NULL, ended_by FROM incidents ORDER BY id")
            .expect("query");
        let rows = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .filter_map(Result::ok)
            .collect();
        rows
    }

    /// SIGTERM and wait for exit 0.
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("exit status");
        assert_eq!(status.code(), Some(0));
    }
}

/// Waits until the webhook receiver has `n` requests; returns the notices.
pub async fn notices(rec: &Recorder, n: usize) -> Vec<lookout::notify::Notice> {
    rec.wait_for(n, "notices")
        .await
        .iter()
        .map(|r| serde_json::from_value(r.json()).expect("a notice"))
        .collect()
}
