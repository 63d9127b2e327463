//! Integration tests: the `lookout` binary as an operator runs it: `run`
//! records one row per run and shuts down cleanly on SIGTERM; `probe`
//! prints phases and expectations with the right exit status; `history`
//! reads back what `run` wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{http_get, http_target, start_daemon};

use crate::harness::process::free_port;

fn lookout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env_remove("LOOKOUT_CONFIG")
        .env("NO_COLOR", "1")
        .env("LOOKOUT_LOG", "info");
    c
}

fn write_config(dir: &Path, listen: u16, target: u16) -> PathBuf {
    let path = dir.join("lookout.yaml");
    std::fs::write(
        &path,
        format!(
            "storage:\n  sqlite: data/lookout.db\nserver:\n  listen: 127.0.0.1:{listen}\ndefaults:\n  interval: 200ms\n  timeout: 200ms\nprobes:\n  - name: web\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n    expect: {{ status: 200, body_contains: ok }}\n  - name: web-down\n    http: {{ url: \"http://127.0.0.1:{target}/down\" }}\n    expect: {{ status: 200 }}\n"
        ),
    )
    .expect("write config");
    path
}

fn count_rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.query_row("SELECT count(*) FROM results", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn run_records_one_row_per_run_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = http_target();
    let listen = free_port();
    let config = write_config(dir.path(), listen, target);
    let mut d = start_daemon(&config, &[]);

    // Wait until each probe has logged a few results.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut lines = Vec::new();
    let (mut up, mut failed) = (0, 0);
    while up < 5 || failed < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d
            .log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no results in time; log:\n{}", lines.join("\n")));
        if line.contains("probe=web ") && line.contains("ok=true") {
            up += 1;
        }
        if line.contains("probe=web-down") && line.contains("ok=false") {
            assert!(line.contains("class=expectation"), "{line}");
            failed += 1;
        }
        lines.push(line);
    }
    // The API shows both probes with their last result.
    let api = http_get(listen, "/api/v1/probes").expect("GET the API");
    assert!(
        api.contains("\"name\":\"web\"") && api.contains("\"state\":\"up\""),
        "{api}"
    );

    let pid = d.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = d.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "lookout did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    // Every logged result is in the database: one row per run.
    for line in d.log.try_iter() {
        lines.push(line);
    }
    let logged = lines
        .iter()
        .filter(|l| l.contains(" result ") && l.contains("probe=web"))
        .count() as i64;
    let rows = count_rows(&dir.path().join("data/lookout.db"));
    assert_eq!(rows, logged, "rows in the database vs results logged");

    // history reads them back.
    let out = lookout()
        .args(["history", "web", "-c"])
        .arg(&config)
        .output()
        .expect("history");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("uptime") && text.contains("100.0"), "{text}");
    let out = lookout()
        .args(["history", "web-down", "--json", "-c"])
        .arg(&config)
        .output()
        .expect("history");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["stats"]["uptime"], 0.0, "{v}");
    assert_eq!(v["results"][0]["failure"]["class"], "expectation", "{v}");
}

#[test]
fn probe_command_prints_phases_and_checks_and_sets_the_exit_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = http_target();
    let config = write_config(dir.path(), free_port(), target);

    let out = lookout()
        .args(["probe", "web", "-c"])
        .arg(&config)
        .output()
        .expect("probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for word in ["PASS web", "connect", "first_byte", "total", "✓ status 200"] {
        assert!(text.contains(word), "missing {word:?} in:\n{text}");
    }

    let out = lookout()
        .args(["probe", "web", "web-down", "-c"])
        .arg(&config)
        .output()
        .expect("probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL web-down") && text.contains("✗ status 200"),
        "{text}"
    );
    assert!(text.contains("got 503"), "{text}");

    let out = lookout()
        .args(["probe", "--json", "web-down", "-c"])
        .arg(&config)
        .output()
        .expect("probe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["success"], false);
    assert_eq!(v[0]["failure"]["class"], "expectation");

    let out = lookout()
        .args(["probe", "wbe", "-c"])
        .arg(&config)
        .output()
        .expect("probe");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `web`"));
}

#[test]
fn probe_url_needs_no_configuration() {
    let target = http_target();
    let out = lookout()
        .args(["probe", "--url", &format!("http://127.0.0.1:{target}/")])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("probe --url");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lookout()
        .args(["probe", "--url", &format!("http://127.0.0.1:{target}/down")])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("probe --url");
    assert_eq!(out.status.code(), Some(1));
    let out = lookout()
        .args(["probe", "--url", "http://127.0.0.1:1/", "--timeout", "1s"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("probe --url");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("connect"));
}

#[test]
fn secrets_never_reach_output_logs_or_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = http_target();
    let listen = free_port();
    let config = dir.path().join("lookout.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  sqlite: lookout.db\nserver:\n  listen: 127.0.0.1:{listen}\nprobes:\n  - name: secret-web\n    http:\n      url: \"http://monitor:${{PASS}}@127.0.0.1:{target}/down?token=${{TOKEN}}\"\n      headers: {{ Authorization: \"Bearer ${{TOKEN}}\" }}\n    expect: {{ status: 200, body_contains: \"${{TOKEN}}\" }}\n    interval: 200ms\n    timeout: 200ms\n"
        ),
    )
    .expect("write config");
    let secrets = [
        ("PASS", "hunter2-password"),
        ("TOKEN", "tok-0123456789abcdef"),
    ];

    let mut cmd = lookout();
    cmd.args(["probe", "secret-web", "-c"]).arg(&config);
    for (k, v) in secrets {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("probe");
    assert_eq!(out.status.code(), Some(1));
    let mut seen = String::from_utf8_lossy(&out.stdout).to_string();
    seen.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(seen.contains("monitor:***@"), "{seen}");

    let mut d = start_daemon(&config, &secrets);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    while failures < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d.log.recv_timeout(left).expect("results in time");
        if line.contains("ok=false") {
            failures += 1;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    seen.push_str(&http_get(listen, "/api/v1/probes").expect("GET the API"));
    let pid = d.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = d.child.wait();
    for line in d.log.try_iter() {
        seen.push_str(&line);
    }
    let db = std::fs::read(dir.path().join("lookout.db")).expect("db");
    let wal = std::fs::read(dir.path().join("lookout.db-wal")).unwrap_or_default();
    for (_, secret) in secrets {
        assert!(!seen.contains(secret), "secret in output or logs:\n{seen}");
        let in_db = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!in_db(&db) && !in_db(&wal), "secret in the database");
    }
}

/// `--log-format json` with `LOOKOUT_LOG=warn`: every log line is one JSON
/// object with level, message and fields, and nothing below warn is
/// written. A first SIGTERM waits for a run in flight (here one whose
/// target never answers, timeout 20 s); a second exits at once, with
/// status 1.
#[test]
fn json_logs_at_the_chosen_level_and_a_second_signal_exits_at_once() {
    use std::io::BufRead;
    // Accepts connections and never answers; tells when one arrives.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hang_port = hang.local_addr().expect("addr").port();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().map_while(Result::ok) {
            held.push(s);
            let _ = accepted_tx.send(());
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_port();
    let down = free_port(); // nothing listens: connection refused
    let config = dir.path().join("lookout.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ listen: \"127.0.0.1:{listen}\" }}\nprobes:\n  - name: hangs\n    http: {{ url: \"http://127.0.0.1:{hang_port}/\" }}\n    interval: 30s\n    timeout: 20s\n  - name: refused\n    tcp: {{ host: 127.0.0.1, port: {down} }}\n    interval: 200ms\n    timeout: 200ms\n"
        ),
    )
    .expect("write config");
    let mut child = lookout()
        .env("LOOKOUT_LOG", "warn")
        .args(["--log-format", "json", "run", "-c"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start lookout run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, log) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    accepted
        .recv_timeout(Duration::from_secs(10))
        .expect("the hanging run started");
    // Three failed runs of `refused`, as JSON at warn.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|v: &&serde_json::Value| v["probe"] == "refused")
        .count()
        < 3
    {
        let line = log
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no failed runs logged; saw {seen:?}"));
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"] == "WARN" || v["level"] == "ERROR", "{line}");
        seen.push(v);
    }
    let failed = seen.iter().find(|v| v["probe"] == "refused").expect("one");
    assert_eq!(failed["message"], "result");
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["class"], "connect");

    let pid = child.id().to_string();
    let term = || {
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
    };
    assert!(term().success());
    // The first signal waits for the hanging run...
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "exited before the run finished"
    );
    // ...the second does not.
    let second = Instant::now();
    assert!(term().success());
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            second.elapsed() < Duration::from_secs(3),
            "a second SIGTERM did not exit at once"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(exit.code(), Some(1));
}
