//! Access control against the running daemon: with `server.token` and
//! `server.basic_auth` set, the API and `/metrics` take the token (or the
//! basic credentials), the pages take the basic credentials and challenge
//! browsers for them, `/healthz`, `/readyz` and badges stay public, refusals
//! are 401 with a JSON error for the API, and neither secret ever appears
//! in an answer or the log. Also the configuration's checks of both keys.

use std::time::{Duration, Instant};

use base64::Engine as _;
use lookout::config::{load_str, read::Cx};

use crate::harness::process::free_port;
use crate::harness::{http_target, start_daemon, Daemon};

const TOKEN: &str = "api-token-7c1e0b93";
const PASSWORD: &str = "pw-Quartz-4491";

/// One answer: status, head (lower-cased) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn challenges(&self) -> Vec<&str> {
        self.head
            .lines()
            .filter_map(|l| l.strip_prefix("www-authenticate: "))
            .collect()
    }
}

/// GET `path` with an optional `Authorization` value; `None` while the
/// daemon is not listening.
fn get(port: u16, path: &str, auth: Option<&str>) -> Option<Answer> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let auth = auth
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

fn basic(user: &str, password: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b}")
}

/// Starts the daemon with `server_extra` lines under `server:` and waits
/// until `/healthz` answers.
fn daemon(dir: &std::path::Path, server_extra: &str) -> (Daemon, u16) {
    let target = http_target();
    let listen = free_port();
    let config = dir.join("lookout.yaml");
    std::fs::write(
        &config,
        format!(
            "storage: {{ sqlite: lookout.db }}\nserver:\n  listen: 127.0.0.1:{listen}\n{server_extra}probes:\n  - name: web\n    http: {{ url: \"http://127.0.0.1:{target}/\" }}\n    interval: 200ms\n    timeout: 200ms\n"
        ),
    )
    .expect("write config");
    let mut d = start_daemon(
        &config,
        &[("API_TOKEN", TOKEN), ("LOOKOUT_PASSWORD", PASSWORD)],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(listen, "/healthz", None).is_none() {
        if let Some(status) = d.child.try_wait().expect("try_wait") {
            let log: Vec<String> = d.log.try_iter().collect();
            panic!("lookout run exited with {status}:\n{}", log.join("\n"));
        }
        assert!(Instant::now() < deadline, "daemon not listening within 20s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (d, listen)
}

/// Asserts the status of each (path, credentials) and returns every answer.
fn expect(port: u16, cases: &[(&str, Option<&str>, u16)]) -> Vec<Answer> {
    cases
        .iter()
        .map(|(path, auth, status)| {
            let a = get(port, path, *auth).expect("daemon answers");
            assert_eq!(
                a.status, *status,
                "GET {path} with {auth:?}:\n{}\n\n{}",
                a.head, a.body
            );
            a
        })
        .collect()
}

fn assert_no_secret(text: &str) {
    for secret in [TOKEN, PASSWORD] {
        assert!(!text.contains(secret), "a secret leaked:\n{text}");
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("ops:{PASSWORD}"));
    assert!(
        !text.contains(&encoded),
        "basic credentials leaked:\n{text}"
    );
}

#[test]
fn token_and_basic_auth_guard_the_api_and_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, port) = daemon(
        dir.path(),
        "  token: ${API_TOKEN}\n  basic_auth: { user: ops, password: \"${LOOKOUT_PASSWORD}\" }\n",
    );
    let bearer = format!("Bearer {TOKEN}");
    let good_basic = basic("ops", PASSWORD);
    let wrong_basic = basic("ops", "pw-Quartz-4492");
    let mut answers = expect(
        port,
        &[
            // Public.
            ("/healthz", None, 200),
            ("/readyz", None, 200),
            // API and metrics: token, or the basic credentials.
            ("/api/v1/probes", None, 401),
            ("/api/v1/probes", Some("Bearer api-token-7c1e0b94"), 401),
            ("/api/v1/probes", Some(TOKEN), 401),
            ("/api/v1/probes", Some(&bearer), 200),
            ("/api/v1/probes", Some(&good_basic), 200),
            ("/api/v1/probes", Some(&wrong_basic), 401),
            ("/metrics", None, 401),
            ("/metrics", Some(&bearer), 200),
            ("/metrics", Some(&good_basic), 200),
            // Pages: the basic credentials only.
            ("/", None, 401),
            ("/", Some(&bearer), 401),
            ("/", Some(&wrong_basic), 401),
            ("/", Some(&good_basic), 200),
        ],
    );
    // The API's refusals are JSON with an error and a challenge.
    let refused = &answers[2];
    let json: serde_json::Value = serde_json::from_str(&refused.body).expect("JSON error");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization: Bearer")),
        "{json}"
    );
    assert!(refused.head.contains("content-type: application/json"));
    assert!(refused.challenges().contains(&"bearer realm=\"lookout\""));
    let wrong: serde_json::Value = serde_json::from_str(&answers[3].body).expect("JSON");
    assert_eq!(wrong["error"], "invalid credentials");
    // Browsers are asked for the basic credentials on the pages.
    let page = &answers[11];
    assert_eq!(
        page.challenges(),
        ["basic realm=\"lookout\", charset=\"utf-8\""]
    );
    assert!(
        answers[5].body.contains("\"name\":\"web\""),
        "{}",
        answers[5].body
    );

    // Badges stay public: whatever they answer, it is not a refusal.
    let badge = get(port, "/badge/web.svg", None).expect("badge");
    assert_ne!(badge.status, 401, "{}", badge.head);
    answers.push(badge);

    for a in &answers {
        assert_no_secret(&a.head);
        assert_no_secret(&a.body);
    }
    drop_and_check_log(daemon);
}

/// Stops the daemon and asserts its log never showed a secret.
fn drop_and_check_log(mut daemon: Daemon) {
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
    let lines: Vec<String> = daemon.log.iter().collect();
    assert!(!lines.is_empty(), "no log lines");
    assert_no_secret(&lines.join("\n"));
}

#[test]
fn basic_auth_alone_guards_the_api_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, port) = daemon(
        dir.path(),
        "  basic_auth: { user: ops, password: \"${LOOKOUT_PASSWORD}\" }\n",
    );
    let good = basic("ops", PASSWORD);
    let answers = expect(
        port,
        &[
            ("/api/v1/probes", None, 401),
            ("/api/v1/probes", Some(&format!("Bearer {PASSWORD}")), 401),
            ("/api/v1/probes", Some(&good), 200),
            ("/metrics", None, 401),
            ("/metrics", Some(&good), 200),
            ("/", None, 401),
            ("/healthz", None, 200),
        ],
    );
    assert_eq!(
        answers[0].challenges(),
        ["basic realm=\"lookout\", charset=\"utf-8\""]
    );
}

#[test]
fn a_token_alone_leaves_the_pages_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, port) = daemon(dir.path(), "  token: ${API_TOKEN}\n");
    expect(
        port,
        &[
            ("/api/v1/probes", None, 401),
            ("/api/v1/probes", Some(&basic("ops", TOKEN)), 401),
            ("/api/v1/probes", Some(&format!("bearer {TOKEN}")), 200),
            ("/", None, 200),
        ],
    );
}

/// A compile context that knows `LOOKOUT_PASSWORD` and registers no
/// secrets (this test's values would otherwise be masked in every later
/// message of the test process).
fn quiet_cx() -> Cx {
    let mut cx = Cx::new(Box::new(|k| {
        (k == "LOOKOUT_PASSWORD").then(|| PASSWORD.to_string())
    }));
    cx.register_secrets = false;
    cx
}

/// Each configuration problem, as "line key: message".
fn diagnostics(server: &str) -> Vec<String> {
    let yaml = format!("server:\n{server}");
    match load_str("lookout.yaml", &yaml, quiet_cx()) {
        Ok(_) => Vec::new(),
        Err(d) => {
            d.0.iter()
                .map(|d| format!("{} {}: {}", d.line, d.key, d.message))
                .collect()
        }
    }
}

#[test]
fn credentials_are_checked_with_line_and_key_and_never_shown() {
    let ok = diagnostics(
        "  token: abc-123\n  basic_auth: { user: ops, password: \"${LOOKOUT_PASSWORD}\" }\n",
    );
    assert!(ok.is_empty(), "{ok:?}");
    for (server, want) in [
        (
            "  basic_auth: { user: ops }\n",
            "2 server.basic_auth: missing required key `password`",
        ),
        (
            "  basic_auth:\n    password: x\n",
            "3 server.basic_auth: missing required key `user`",
        ),
        (
            "  basic_auth: { user: \"a:b\", password: pw }\n",
            "2 server.basic_auth.user: the user name must not contain `:`",
        ),
        ("  token: \"\"\n", "2 server.token: the token is empty"),
        (
            "  token: \"two words-secret\"\n",
            "2 server.token: the token may contain only printable ASCII",
        ),
        (
            "  basic_auth: { user: ops, password: \"${NOPE}\" }\n",
            "2 server.basic_auth.password: environment variable `NOPE` is not set",
        ),
        (
            "  basic_auth: { user: ops, pasword: x }\n",
            "2 server.basic_auth.pasword: ",
        ),
    ] {
        let d = diagnostics(server);
        assert!(
            d.iter().any(|l| l.starts_with(want)),
            "want {want:?} for {server:?}, got {d:?}"
        );
        assert!(!d.join("\n").contains("secret"), "{d:?}");
    }
    // Listening beyond loopback with nothing set is allowed, with a warning.
    let (_, warnings) = load_str(
        "lookout.yaml",
        "server:\n  listen: 0.0.0.0:9464\n",
        quiet_cx(),
    )
    .expect("valid");
    let w = &warnings.0[0];
    assert_eq!(
        (w.line, w.key.as_str()),
        (2, "server.listen"),
        "{warnings:?}"
    );
    assert!(
        w.message
            .contains("neither server.token nor server.basic_auth"),
        "{}",
        w.message
    );
    let (_, quiet) = load_str(
        "lookout.yaml",
        "server: { listen: \"0.0.0.0:9464\", token: tok-abcdef }\n",
        quiet_cx(),
    )
    .expect("valid");
    assert!(quiet.0.is_empty(), "{quiet:?}");

    // The Debug form never shows the credentials.
    let (cfg, _) = load_str(
        "lookout.yaml",
        "server: { token: tok-abcdef, basic_auth: { user: ops, password: pw-abcdef } }\n",
        quiet_cx(),
    )
    .expect("valid");
    let shown = format!("{:?}", cfg.server);
    assert!(
        shown.contains("ops") && !shown.contains("tok-abcdef") && !shown.contains("pw-abcdef"),
        "{shown}"
    );
}
