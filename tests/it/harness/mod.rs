//! Test fixtures: real servers on free loopback ports (started and stopped
//! through `process`), temporary directories, helpers to build probe specs
//! from YAML, and assertions on what a run returned.

#![allow(dead_code)]

pub mod browser;
pub mod daemon;
pub mod dns_server;
pub mod http_server;
pub mod mysql_server;
pub mod postgres_server;
pub mod process;
pub mod prometheus;
pub mod recorder;
pub mod redis_server;
pub mod run_child;
pub mod smtp_server;
pub mod targets;

use std::time::Duration;

use lookout::config::{load_str, read::Cx, ProbeSpec};
use lookout::result::{FailureClass, ProbeResult};

/// Compiles a configuration given as YAML text and returns its probes,
/// panicking with every diagnostic when it is invalid.
pub fn probes_from_yaml(yaml: &str) -> Vec<ProbeSpec> {
    match load_str("test.yaml", yaml, Cx::new(Box::new(|_| None))) {
        Ok((cfg, _)) => cfg.probes.into_iter().map(|p| (*p).clone()).collect(),
        Err(d) => panic!("test configuration is invalid:\n{d}"),
    }
}

/// The single probe of a configuration.
pub fn probe_from_yaml(yaml: &str) -> ProbeSpec {
    let mut p = probes_from_yaml(yaml);
    assert_eq!(p.len(), 1, "expected exactly one probe");
    p.remove(0)
}

/// A probe of the given kind (`http`, `tls`, ...) whose `kind:` section and
/// `expect:` are YAML flow mappings; an empty `expect` leaves it out.
pub fn probe_with(kind: &str, section: &str, expect: &str, timeout: &str) -> ProbeSpec {
    let expect = if expect.is_empty() {
        String::new()
    } else {
        format!("    expect: {expect}\n")
    };
    probe_from_yaml(&format!(
        "probes:\n  - name: t\n    {kind}: {section}\n    timeout: {timeout}\n{expect}"
    ))
}

/// The failure message of a result, or "" when it succeeded.
pub fn message(r: &ProbeResult) -> String {
    r.failure
        .as_ref()
        .map(|f| f.message.clone())
        .unwrap_or_default()
}

/// The class and message of a failed result; panics when it succeeded.
pub fn failure(r: &ProbeResult) -> (FailureClass, String) {
    let f = r
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure, got success: {r:?}"));
    (f.class, f.message.clone())
}

/// Asserts that a run failed with `class` and a message that contains
/// `words`; returns the message.
pub fn assert_failed(r: &ProbeResult, class: FailureClass, words: &str) -> String {
    let (got, msg) = failure(r);
    assert_eq!(got, class, "{msg}");
    assert!(msg.contains(words), "`{words}` not in `{msg}`");
    msg
}

/// Asserts that a run failed with `class` and a message that starts with
/// `start`; returns the message.
pub fn assert_failed_starting(r: &ProbeResult, class: FailureClass, start: &str) -> String {
    let (got, msg) = failure(r);
    assert_eq!(got, class, "{msg}");
    assert!(
        msg.starts_with(start),
        "`{msg}` does not start with `{start}`"
    );
    msg
}

/// Asserts that a run with a 1s timeout ended as `timeout` at its bound
/// (within 100ms after it), with a message ending in `ending`.
pub fn assert_timed_out_at_1s(r: &ProbeResult, ending: &str) {
    let (class, msg) = failure(r);
    assert_eq!(class, FailureClass::Timeout, "{msg}");
    assert!(
        r.duration >= Duration::from_secs(1) && r.duration < Duration::from_millis(1100),
        "took {:?}",
        r.duration
    );
    assert!(msg.ends_with(ending), "`{ending}` does not end `{msg}`");
}

/// One detail of a result, or `null` when it was not reported.
pub fn detail(r: &ProbeResult, key: &str) -> serde_json::Value {
    r.details
        .get(key)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Compiles `probe` (the lines of one list item under `probes:`) and returns
/// every diagnostic as "line key: message".
pub fn diagnostics(probe: &str) -> Vec<String> {
    let yaml = format!("probes:\n  - name: t\n{probe}");
    match load_str("test.yaml", &yaml, Cx::new(Box::new(|_| None))) {
        Ok(_) => Vec::new(),
        Err(d) => {
            d.0.iter()
                .map(|d| format!("{} {}: {}", d.line, d.key, d.message))
                .collect()
        }
    }
}

/// For each (lines of one list item under `probes:`, key, line, words):
/// the configuration is rejected and its first diagnostic is at that key and
/// line with those words in its message.
pub fn assert_first_error(table: &[(&str, &str, usize, &str)]) {
    for (section, key, line, words) in table {
        let yaml = format!("probes:\n  - name: t\n{section}");
        let diags = match load_str("bad.yaml", &yaml, Cx::new(Box::new(|_| None))) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(d) => d,
        };
        let first = &diags.0[0];
        assert_eq!(
            (first.key.as_str(), first.line),
            (*key, *line),
            "for:\n{yaml}\n{diags:?}"
        );
        assert!(
            first.message.contains(words),
            "`{words}` not in `{}`",
            first.message
        );
    }
}

/// A blocking HTTP server on its own thread answering every request with
/// `200 ok`, or 503 for paths containing "down". Lives for the test process.
pub fn http_target() -> u16 {
    http_target_with(|_, request_line| !request_line.contains("down"))
}

/// A blocking HTTP server on its own thread that answers its n-th request
/// (from 0) with `200 ok` when `healthy(n, request_line)`, else `503 down`.
/// Lives for the test process.
pub fn http_target_with(healthy: impl Fn(usize, &str) -> bool + Send + Sync + 'static) -> u16 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let healthy = std::sync::Arc::new(healthy);
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let healthy = healthy.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let line = head.lines().next().unwrap_or("");
                let resp: &[u8] = if healthy(n, line) {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown"
                };
                let _ = s.write_all(resp);
            });
        }
    });
    port
}

/// GET `path` from a server on 127.0.0.1 and return the raw response (head
/// and body); `None` while nothing listens there yet.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A `lookout run` child process, killed on drop, whose log (stderr)
/// lines arrive on `log`.
pub struct Daemon {
    pub child: std::process::Child,
    pub log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lookout run -c config` with extra environment variables.
pub fn start_daemon(config: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.env_remove("LOOKOUT_CONFIG")
        .env("NO_COLOR", "1")
        .env("LOOKOUT_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["run", "-c"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start lookout run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Daemon { child, log: rx }
}
