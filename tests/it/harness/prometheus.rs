//! A throwaway Prometheus server: Debian's `prometheus` binary on a free
//! loopback port, with its configuration and TSDB in a temporary directory
//! and its output in a log file there (shown when something fails). It
//! scrapes the given targets every second, optionally with a bearer token
//! read from a `credentials_file`, and is killed when dropped.
//!
//! [`PrometheusServer::wait_for`] polls the query API until an instant
//! query returns what a test expects, with a deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{free_port, log_to, on_a_free_port, wait_ready, Process};

/// Overrides where the binary is looked for.
pub const PROMETHEUS_ENV: &str = "LOOKOUT_PROMETHEUS";
/// Set (to anything) to skip the Prometheus tests when the binary is
/// missing, instead of failing them.
pub const SKIP_ENV: &str = "LOOKOUT_SKIP_PROMETHEUS";

/// Debian's path.
const DEFAULT_BINARY: &str = "/usr/bin/prometheus";

/// The binary, or `None` when it is missing and [`SKIP_ENV`] says to skip;
/// panics when it is missing otherwise.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os(PROMETHEUS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os(SKIP_ENV).is_some() {
        eprintln!(
            "SKIPPED: {} is missing and {SKIP_ENV} is set; install Debian's `prometheus` \
             package (tests/run.sh does) to run this test",
            path.display()
        );
        return None;
    }
    panic!(
        "{} is missing: install Debian's `prometheus` package (tests/run.sh does), point \
         {PROMETHEUS_ENV} at the binary, or set {SKIP_ENV}=1 to skip this test",
        path.display()
    );
}

/// One scrape job.
pub struct Job {
    pub name: String,
    /// The target's loopback port (`/metrics` is scraped).
    pub port: u16,
    /// Sent as `Authorization: Bearer ...`, read from a file.
    pub token: Option<String>,
}

/// One series of an instant query's answer.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

pub struct PrometheusServer {
    process: Process,
    pub port: u16,
    dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `jobs` every second and waits until it
    /// says it is ready.
    pub fn start(binary: &std::path::Path, jobs: &[Job]) -> PrometheusServer {
        on_a_free_port("prometheus", free_port, |port| {
            let dir = tempfile::tempdir().expect("temporary directory for prometheus");
            let config = write_config(dir.path(), jobs);
            let data = dir.path().join("data");
            let mut server = PrometheusServer {
                process: Process::default(),
                port,
                dir,
            };
            let mut cmd = Command::new(binary);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=info");
            let log_path = server.log_path();
            log_to(&mut cmd, &log_path);
            server.process = Process::spawn(&mut cmd);
            let log = || server_log(&log_path);
            let ready = || match get(port, "/-/ready") {
                Some((200, _)) => Ok(()),
                Some((status, body)) => Err(format!("/-/ready answered {status}: {body}")),
                None => Err("not listening yet".into()),
            };
            wait_ready(
                &mut server.process,
                "prometheus",
                Duration::from_secs(30),
                Duration::from_millis(50),
                log,
                ready,
            )
            .map(|()| server)
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// Everything Prometheus wrote so far.
    pub fn log(&self) -> String {
        server_log(&self.log_path())
    }

    /// An instant query through `/api/v1/query`; the error says why there
    /// is no answer.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>, String> {
        let q: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let (status, body) = get(self.port, &format!("/api/v1/query?query={q}"))
            .ok_or_else(|| "prometheus is not answering".to_string())?;
        if status != 200 {
            return Err(format!("query answered {status}: {body}"));
        }
        parse_vector(&body)
    }

    /// Polls `expr` until `done` accepts its answer; panics after `within`
    /// with the last answer and Prometheus's log.
    pub fn wait_for(
        &self,
        expr: &str,
        within: Duration,
        done: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.query(expr) {
                Ok(samples) if done(&samples) => return samples,
                Ok(samples) => format!("{samples:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!(
                    "`{expr}` not as expected within {within:?}; last answer: {last}\n\
                     prometheus log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Writes `prometheus.yml` (and each job's token file) into `dir`.
fn write_config(dir: &std::path::Path, jobs: &[Job]) -> PathBuf {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for job in jobs {
        yaml.push_str(&format!(
            "  - job_name: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            job.name, job.port
        ));
        if let Some(token) = &job.token {
            let file = dir.join(format!("{}.token", job.name));
            std::fs::write(&file, token).expect("write the token file");
            yaml.push_str(&format!(
                "    authorization:\n      type: Bearer\n      credentials_file: {}\n",
                file.display()
            ));
        }
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, yaml).expect("write prometheus.yml");
    path
}

fn server_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// GET over HTTP/1.0 (so the answer is never chunked): status and body, or
/// `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The samples of a `vector` answer.
fn parse_vector(body: &str) -> Result<Vec<Sample>, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    if v["status"] != "success" {
        return Err(format!("query failed: {body}"));
    }
    let results = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result list: {body}"))?;
    results
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("no value in {r}"))?;
            Ok(Sample { labels, value })
        })
        .collect()
}
