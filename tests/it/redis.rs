//! Integration tests: redis. Each test starts its own throwaway
//! redis-server (harness/redis_server.rs) and runs probes built from YAML
//! through `run_once`, exactly as the scheduler does.

use std::time::{Duration, Instant};

use lookout::config::ProbeSpec;
use lookout::probe::run_once;
use lookout::result::{FailureClass, Phase, ProbeResult};

use crate::harness::redis_server::{info_field, run_cmd, unread_bytes_at, RedisServer};
use crate::harness::targets::{self, TestCa};
use crate::harness::{
    assert_failed, assert_failed_starting, assert_first_error, detail, failure, message,
    probe_from_yaml,
};

/// A probe of `redis: {url: URL, ...}` with optional extra section keys and
/// `expect:` (flow mappings, without braces for the section).
fn spec(url: &str, extra: &str, expect: &str) -> ProbeSpec {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    let expect = if expect.is_empty() {
        String::new()
    } else {
        format!("    expect: {expect}\n")
    };
    probe_from_yaml(&format!(
        "probes:\n  - name: r\n    redis: {{url: '{url}'{extra}}}\n    timeout: 5s\n{expect}"
    ))
}

fn assert_ok(r: &ProbeResult) {
    assert!(
        r.success,
        "expected success: {:?}\nchecks: {:?}\ndetails: {:?}",
        r.failure, r.checks, r.details
    );
}

fn connected_clients(con: &mut redis::Connection) -> u64 {
    info_field(con, "connected_clients")
        .and_then(|v| v.parse().ok())
        .expect("connected_clients in INFO")
}

/// Polls until the server counts `want` clients, or fails after 5 s.
async fn wait_clients(con: &mut redis::Connection, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = connected_clients(con);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connected_clients stayed at {n}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn ping_succeeds_with_phases_and_details() {
    let server = RedisServer::start();
    let r = run_once(&spec(&server.url(), "", "")).await;
    assert_ok(&r);
    for p in [Phase::Connect, Phase::Auth, Phase::Query] {
        assert!(r.phase(p).is_some(), "{p:?} missing: {:?}", r.phases);
    }
    assert!(
        r.phase(Phase::Dns).is_none() && r.phase(Phase::Tls).is_none(),
        "{:?}",
        r.phases
    );
    assert_eq!(r.checks.len(), 1, "{:?}", r.checks);
    assert_eq!(r.checks[0].expectation, "reply PONG");
    assert!(r.checks[0].passed);
    assert_eq!(detail(&r, "reply"), "PONG");
    assert_eq!(detail(&r, "remote"), format!("127.0.0.1:{}", server.port()));
    assert!(
        detail(&r, "server_version")
            .as_str()
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())),
        "{:?}",
        r.details
    );
    assert!(detail(&r, "client_id").is_number(), "{:?}", r.details);
    assert_eq!(detail(&r, "role"), "master");
}

#[tokio::test]
async fn a_host_name_adds_a_dns_phase() {
    let server = RedisServer::start();
    let url = format!("redis://localhost:{}", server.port());
    let r = run_once(&spec(&url, "", "")).await;
    assert_ok(&r);
    assert!(r.phase(Phase::Dns).is_some(), "{:?}", r.phases);
}

#[tokio::test]
async fn get_reads_a_key_the_test_set() {
    let server = RedisServer::start();
    let () = server.cmd(&["SET", "health:marker", "ok-42"]);
    let url = server.url();
    let r = run_once(&spec(
        &url,
        "command: [GET, 'health:marker']",
        "{reply: ok-42}",
    ))
    .await;
    assert_ok(&r);
    assert_eq!(detail(&r, "reply"), "ok-42");
    assert_eq!(r.checks[0].expectation, "reply == ok-42");

    let r = run_once(&spec(&url, "command: GET health:marker", "{reply: ok-43}")).await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Expectation);
    assert_eq!(msg, "expected reply == ok-43, got ok-42");

    // Without a reply expectation, any reply that is not an error passes.
    let r = run_once(&spec(&url, "command: [GET, missing]", "")).await;
    assert_ok(&r);
    assert!(r.checks.is_empty(), "{:?}", r.checks);
    assert_eq!(detail(&r, "reply"), "(nil)");
}

#[tokio::test]
async fn reply_matchers_pass_and_fail() {
    let server = RedisServer::start();
    let () = server.cmd(&["SET", "greeting", "hello world"]);
    let n: i64 = server.cmd(&["RPUSH", "queue", "a", "b", "c"]);
    assert_eq!(n, 3);
    let url = server.url();
    let table: &[(&str, &str, bool)] = &[
        ("[GET, greeting]", "'=~ ^hello'", true),
        ("[GET, greeting]", "'=~ ^bye'", false),
        ("[GET, greeting]", "'!= hello world'", false),
        ("[LLEN, queue]", "'> 2'", true),
        ("[LLEN, queue]", "'< 3'", false),
        ("[LLEN, queue]", "3", true),
        ("[EXISTS, queue, greeting, nothing]", "2", true),
        ("[GET, nothing]", "null", true),
        ("[GET, nothing]", "'> 0'", false),
        ("[LRANGE, queue, 0, -1]", "[a, b, c]", true),
        ("[LRANGE, queue, 0, -1]", "[a, b]", false),
        ("[STRLEN, greeting]", "'< 1kb'", true),
        ("[DBSIZE]", "'>= 2'", true),
    ];
    for (command, want, pass) in table {
        let r = run_once(&spec(
            &url,
            &format!("command: {command}"),
            &format!("{{reply: {want}}}"),
        ))
        .await;
        assert_eq!(
            r.success, *pass,
            "{command} {want}: {:?} {:?}",
            r.failure, r.checks
        );
        if !pass {
            assert_eq!(
                r.class(),
                Some(FailureClass::Expectation),
                "{command} {want}"
            );
        }
    }
}

#[tokio::test]
async fn info_expectations_on_master_and_replica() {
    let master = RedisServer::start();
    let replica = RedisServer::builder().replica_of(&master).start();
    replica.wait_for_info("master_link_status", "up");
    master.wait_for_info("slave0.state", "online");
    let () = master.cmd(&["SET", "k", "v"]);

    let r = run_once(&spec(
        &master.url(),
        "",
        "{info: {role: master, connected_slaves: '>= 1', used_memory: '< 2gb', \
         maxmemory: 0, db0.keys: '>= 1', slave0.state: online}}",
    ))
    .await;
    assert_ok(&r);
    assert_eq!(r.checks.len(), 6, "{:?}", r.checks);
    assert_eq!(r.checks[2].expectation, "info used_memory < 2gb");
    assert_eq!(detail(&r, "role"), "master");
    // Only INFO was sent: its reply is the reply.
    assert!(detail(&r, "reply")
        .as_str()
        .is_some_and(|t| t.contains("redis_version")));

    let r = run_once(&spec(
        &replica.url(),
        "command: [PING]",
        "{info: {role: slave, master_link_status: up}}",
    ))
    .await;
    assert_ok(&r);
    assert_eq!(
        r.checks.len(),
        3,
        "PING's own check and two INFO checks: {:?}",
        r.checks
    );
    assert_eq!(detail(&r, "reply"), "PONG");
    assert_eq!(detail(&r, "role"), "slave");

    // Failing comparisons name the field and what was seen.
    let r = run_once(&spec(
        &master.url(),
        "",
        "{info: {used_memory: '< 1kb', connected_slaves: '>= 2', usd_memory: 1}}",
    ))
    .await;
    let msg = assert_failed_starting(
        &r,
        FailureClass::Expectation,
        "expected info used_memory < 1kb, got ",
    );
    assert!(msg.ends_with("(and 2 more failed expectations)"), "{msg}");
    let missing = &r.checks[2];
    assert_eq!(
        missing.observed,
        "no field `usd_memory` in INFO; did you mean `used_memory`?"
    );
    let r = run_once(&spec(&replica.url(), "", "{info: {role: master}}")).await;
    assert_eq!(message(&r), "expected info role == master, got slave");
}

#[tokio::test]
async fn wrong_password_is_auth_with_the_server_text() {
    let server = RedisServer::builder().password("s3cret-pass").start();
    let url = format!("redis://:wr0ng-pass@127.0.0.1:{}", server.port());
    let r = run_once(&spec(&url, "", "")).await;
    let msg = assert_failed(&r, FailureClass::Auth, "WRONGPASS");
    assert!(msg.contains("authentication as `default`"), "{msg}");
    let everything = serde_json::to_string(&r).expect("json");
    assert!(!everything.contains("wr0ng-pass"), "{everything}");
    assert!(r.phase(Phase::Auth).is_some(), "{:?}", r.phases);

    let url = format!("redis://:s3cret-pass@127.0.0.1:{}", server.port());
    assert_ok(&run_once(&spec(&url, "", "")).await);
}

#[tokio::test]
async fn no_password_is_noauth() {
    let server = RedisServer::builder().password("s3cret-pass").start();
    let r = run_once(&spec(&server.url(), "", "")).await;
    let msg = assert_failed(
        &r,
        FailureClass::Auth,
        "requires a password and the probe has none",
    );
    assert!(msg.contains("NOAUTH"), "{msg}");
}

#[tokio::test]
async fn acl_users_log_in_and_noperm_is_auth() {
    let server = RedisServer::builder()
        .password("admin-pass")
        .user("monitor on >mon-secret ~* +@read +ping +info +select")
        .start();
    let () = server.cmd(&["SET", "k", "v"]);
    let url = format!("redis://monitor:mon-secret@127.0.0.1:{}", server.port());
    let r = run_once(&spec(&url, "command: [GET, k]", "{reply: v}")).await;
    assert_ok(&r);

    // The same user with the password in its own key.
    let url = format!("redis://127.0.0.1:{}", server.port());
    let r = run_once(&spec(
        &url,
        "username: monitor, password: mon-secret",
        "{info: {role: master}}",
    ))
    .await;
    assert_ok(&r);

    let url = format!("redis://monitor:mon-secret@127.0.0.1:{}", server.port());
    let r = run_once(&spec(&url, "command: [CONFIG, GET, maxmemory]", "")).await;
    assert_failed_starting(
        &r,
        FailureClass::Auth,
        "`monitor` may not run CONFIG GET maxmemory: NOPERM",
    );

    let url = format!("redis://monitor:nope-nope@127.0.0.1:{}", server.port());
    let r = run_once(&spec(&url, "", "")).await;
    assert_failed(&r, FailureClass::Auth, "authentication as `monitor`");
}

#[tokio::test]
async fn an_error_reply_is_query() {
    let server = RedisServer::start();
    let n: i64 = server.cmd(&["RPUSH", "list", "x"]);
    assert_eq!(n, 1);
    let r = run_once(&spec(&server.url(), "command: [GET, list]", "")).await;
    assert_failed_starting(&r, FailureClass::Query, "GET list failed: WRONGTYPE");
    assert!(r.phase(Phase::Query).is_some(), "{:?}", r.phases);
}

#[tokio::test]
async fn the_database_comes_from_the_url() {
    let server = RedisServer::start();
    let mut con = server.admin();
    let () = run_cmd(&mut con, &["SELECT", "3"]);
    let () = run_cmd(&mut con, &["SET", "in3", "yes"]);
    let url = format!("{}/3", server.url());
    let r = run_once(&spec(&url, "command: [GET, in3]", "{reply: 'yes'}")).await;
    assert_ok(&r);
    let r = run_once(&spec(&server.url(), "command: [GET, in3]", "{reply: null}")).await;
    assert_ok(&r);

    let url = format!("{}/99", server.url());
    let r = run_once(&spec(&url, "", "")).await;
    assert_failed_starting(
        &r,
        FailureClass::Query,
        "SELECT 99 failed: ERR DB index is out of range",
    );
}

#[tokio::test]
async fn tls_with_the_right_ca_passes_and_otherwise_fails() {
    let ca = TestCa::new();
    let server = RedisServer::builder().tls(&ca).password("tls-pass").start();
    let ca_file = ca.write_pem(server.dir());
    let url = format!("rediss://:tls-pass@127.0.0.1:{}", server.port());
    let ca_key = format!("ca: '{}'", ca_file.display());

    let r = run_once(&spec(&url, &ca_key, "")).await;
    assert_ok(&r);
    assert!(r.phase(Phase::Tls).is_some(), "{:?}", r.phases);
    assert!(detail(&r, "tls_version").is_string(), "{:?}", r.details);
    assert_eq!(detail(&r, "cert_subject"), "CN=lookout test server");

    // A kept TLS connection is reused.
    let kept = spec(&url, &format!("{ca_key}, reuse_connection: true"), "");
    assert_ok(&run_once(&kept).await);
    let again = run_once(&kept).await;
    assert_ok(&again);
    assert_eq!(detail(&again, "reused_connection"), true);
    assert_eq!(detail(&again, "tls_version"), detail(&r, "tls_version"));

    // `?insecure` accepts the certificate without the CA.
    let r = run_once(&spec(&format!("{url}?insecure"), "", "")).await;
    assert_ok(&r);

    let other = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let other_file = other.write_pem(dir.path());
    let r = run_once(&spec(&url, &format!("ca: '{}'", other_file.display()), "")).await;
    // Both test CAs have the same name, so the verifier finds the other one
    // and rejects the signature; a CA it cannot find is "not trusted".
    assert_failed(&r, FailureClass::Tls, "certificate");
    let r = run_once(&spec(&url, "", "")).await;
    assert_failed(&r, FailureClass::Tls, "certificate is not trusted");

    let plain = format!("redis://:tls-pass@127.0.0.1:{}", server.port());
    let r = run_once(&spec(&plain, "", "")).await;
    assert_failed(&r, FailureClass::Protocol, "use a rediss:// URL");
}

#[tokio::test]
async fn a_silent_listener_times_out_at_the_bound() {
    let silent = targets::silent_tcp().await;
    let url = format!("redis://127.0.0.1:{}", silent.port());
    let p = probe_from_yaml(&format!(
        "probes:\n  - name: r\n    redis: {{url: '{url}'}}\n    timeout: 1s\n"
    ));
    let started = Instant::now();
    let r = run_once(&p).await;
    let took = started.elapsed();
    assert_failed(&r, FailureClass::Timeout, "while waiting for auth");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1100),
        "took {took:?}"
    );
    // The run gave its socket back.
    silent.wait_closed(1).await;
}

#[tokio::test]
async fn a_refused_connection_is_connect() {
    let addr = targets::closed_port().await;
    let r = run_once(&spec(&format!("redis://{addr}"), "", "")).await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Connect);
    assert_eq!(msg, format!("connection refused by {addr}"));
}

#[tokio::test]
async fn a_restarted_server_fails_then_recovers_with_fresh_connections() {
    let mut server = RedisServer::start();
    let p = spec(&server.url(), "", "");
    let first = run_once(&p).await;
    assert_ok(&first);
    server.stop();
    let r = run_once(&p).await;
    assert_eq!(r.class(), Some(FailureClass::Connect), "{:?}", r.failure);
    server.restart();
    let r = run_once(&p).await;
    assert_ok(&r);
    assert!(r.phase(Phase::Connect).is_some());
}

#[tokio::test]
async fn reuse_keeps_one_connection_and_reconnects_after_a_restart() {
    let mut server = RedisServer::start();
    let p = spec(&server.url(), "reuse_connection: true", "");
    let first = run_once(&p).await;
    assert_ok(&first);
    assert_eq!(detail(&first, "reused_connection"), false);
    let id = detail(&first, "client_id");
    assert!(id.is_number(), "{:?}", first.details);

    let second = run_once(&p).await;
    assert_ok(&second);
    assert_eq!(detail(&second, "reused_connection"), true);
    assert_eq!(detail(&second, "client_id"), id);
    assert_eq!(
        second.phases.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![Phase::Query],
        "a reused run has no connect or auth phase"
    );
    // The server agrees: the same client asks.
    let p_id = spec(
        &server.url(),
        "reuse_connection: true, command: [CLIENT, ID]",
        "",
    );
    let a = run_once(&p_id).await;
    let b = run_once(&p_id).await;
    assert_ok(&a);
    assert_eq!(detail(&a, "reply"), detail(&b, "reply"));
    assert_eq!(detail(&a, "reply"), detail(&a, "client_id").to_string());

    // A kept connection the server has closed (here CLIENT KILL, as its
    // idle `timeout` would) is noticed before use and replaced in the run.
    let killed: i64 = server.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]);
    assert_eq!(killed, 1);
    let r = run_once(&p).await;
    assert_ok(&r);
    assert_eq!(detail(&r, "reused_connection"), false);
    assert_ne!(detail(&r, "client_id"), id);

    server.stop();
    let r = run_once(&p).await;
    assert_eq!(r.class(), Some(FailureClass::Connect), "{:?}", r.failure);
    server.restart();
    let r = run_once(&p).await;
    assert_ok(&r);
    assert_eq!(detail(&r, "reused_connection"), false);
    let again = run_once(&p).await;
    assert_eq!(detail(&again, "reused_connection"), true);
    assert_eq!(detail(&again, "client_id"), detail(&r, "client_id"));
}

#[tokio::test]
async fn a_server_killed_mid_run_fails_the_run_and_the_next_one_recovers() {
    let mut server = RedisServer::start();
    let port = server.port();
    for extra in ["", "reuse_connection: true"] {
        let p = spec(&server.url(), extra, "");
        assert_ok(&run_once(&p).await);
        // Frozen, the server's kernel still accepts the probe's connection
        // and receives its HELLO (or, reused, its PING), and nobody answers.
        server.freeze();
        let run = tokio::spawn(async move {
            let r = run_once(&p).await;
            (r, p)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while unread_bytes_at(port) == 0 {
            assert!(
                Instant::now() < deadline,
                "the probe never sent its request"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.stop();
        let (r, p) = run.await.expect("the run finishes");
        let (class, msg) = failure(&r);
        assert_eq!(class, FailureClass::Protocol, "{msg}");
        assert!(msg.contains("broke") || msg.contains("closed"), "{msg}");
        assert!(r.duration < Duration::from_secs(5), "{:?}", r.duration);
        server.restart();
        let r = run_once(&p).await;
        assert_ok(&r);
    }
}

#[tokio::test]
async fn runs_leave_no_connections_or_tasks_behind() {
    let server = RedisServer::start();
    let mut admin = server.admin();
    let baseline = connected_clients(&mut admin);
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    let fresh = spec(&server.url(), "command: [INFO, clients]", "");
    for _ in 0..5 {
        assert_ok(&run_once(&fresh).await);
    }
    wait_clients(&mut admin, baseline).await;

    let kept = spec(&server.url(), "reuse_connection: true", "");
    for _ in 0..5 {
        assert_ok(&run_once(&kept).await);
    }
    wait_clients(&mut admin, baseline + 1).await;
    // A failed run drops the kept connection.
    let failing = spec(&server.url(), "reuse_connection: true", "{reply: not-pong}");
    assert_ok(&run_once(&kept).await);
    assert!(!run_once(&failing).await.success);
    drop(kept);
    wait_clients(&mut admin, baseline).await;
    drop(failing);
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        tasks,
        "a run left a task behind"
    );
}

const BAD: &[(&str, &str, usize, &str)] = &[
    (
        "    redis:\n      url: redis://cache:6379/0\n      command: [SET, k, v]\n",
        "probes[0].redis.command",
        5,
        "`SET` writes or changes server state",
    ),
    (
        "    redis:\n      url: redis://cache:6379/0\n      command:\n        - GTE\n        - k\n",
        "probes[0].redis.command",
        6,
        "unknown command `GTE`; did you mean `GET`?",
    ),
    (
        "    redis:\n      url: redis://cache:6379\n      command: KEYS *\n",
        "probes[0].redis.command",
        5,
        "use SCAN",
    ),
    (
        "    redis:\n      url: http://cache:6379\n",
        "probes[0].redis.url",
        4,
        "unsupported URL scheme `http`",
    ),
    (
        "    redis:\n      url: redis://cache:6379/zero\n",
        "probes[0].redis.url",
        4,
        "database number",
    ),
    (
        "    redis: {url: 'redis://cache'}\n    expect:\n      info:\n        used_memory: '< 2xb'\n",
        "probes[0].expect.info.used_memory",
        6,
        "unknown size unit `xb`",
    ),
    (
        "    redis: {url: 'redis://cache'}\n    expect:\n      info:\n        used_memory_human: '< 2gb'\n",
        "probes[0].expect.info.used_memory_human",
        6,
        "compare `used_memory` (bytes)",
    ),
    (
        "    redis: {url: 'redis://cache'}\n    expect:\n      info: [role]\n",
        "probes[0].expect.info",
        5,
        "expected a mapping of INFO field",
    ),
    (
        "    redis: {url: 'redis://cache'}\n    expect:\n      reply: '=~ (unclosed'\n",
        "probes[0].expect.reply",
        5,
        "invalid regex",
    ),
    (
        "    redis:\n      url: redis://cache\n      ca: /nonexistent.pem\n",
        "probes[0].redis.ca",
        5,
        "cannot read CA file",
    ),
    (
        "    redis:\n      url: redis://cache\n      comand: [PING]\n",
        "probes[0].redis.comand",
        5,
        "did you mean `command`?",
    ),
    (
        "    redis:\n      command: [PING]\n",
        "probes[0].redis",
        4,
        "missing required key `url`",
    ),
];

#[test]
fn bad_redis_configuration_is_reported_with_line_and_key() {
    assert_first_error(BAD);
}
