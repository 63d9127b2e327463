//! Integration tests: the `mysql` probe kind against throwaway MariaDB
//! servers (see `harness::mysql_server`), through `run_once` as the
//! scheduler runs it.

use std::time::{Duration, Instant};

use lookout::config::ProbeSpec;
use lookout::probe::run_once;
use lookout::result::{FailureClass, Phase, ProbeResult};
use serde_json::json;

use crate::harness::mysql_server::{MysqlServer, ITEMS, MONITOR, SECURE};
use crate::harness::targets::{self, TestCa, Validity};
use crate::harness::{assert_first_error, assert_timed_out_at_1s, detail, message, probe_with};

/// A probe of `url` running `query` (YAML flow scalars, single-quoted).
fn spec(url: &str, query: &str, extra: &str, expect: &str, timeout: &str) -> ProbeSpec {
    let query = query.replace('\'', "''");
    probe_with(
        "mysql",
        &format!("{{ url: '{url}', query: '{query}'{extra} }}"),
        expect,
        timeout,
    )
}

fn phases(r: &ProbeResult) -> Vec<Phase> {
    r.phases.iter().map(|(p, _)| *p).collect()
}

fn assert_class(r: &ProbeResult, class: FailureClass) {
    assert_eq!(r.class(), Some(class), "{r:#?}");
}

#[tokio::test]
async fn success_reports_value_rows_phases_and_checks() {
    let db = MysqlServer::start();
    let url = db.monitor_url();

    let r = run_once(&spec(
        &url,
        "SELECT COUNT(*) FROM items",
        "",
        "{ value: 3, rows: 1, latency: '< 5s' }",
        "5s",
    ))
    .await;
    assert!(r.success, "{r:#?}");
    assert_eq!(phases(&r), vec![Phase::Auth, Phase::Query]);
    assert_eq!(detail(&r, "rows"), json!(1));
    assert_eq!(detail(&r, "value"), json!("3"));
    let version = detail(&r, "server_version");
    assert!(
        version.as_str().is_some_and(|v| v.contains("MariaDB")),
        "{version}"
    );
    let checks: Vec<(&str, bool)> = r
        .checks
        .iter()
        .map(|c| (c.expectation.as_str(), c.passed))
        .collect();
    assert_eq!(
        checks,
        vec![
            ("value == 3", true),
            ("rows == 1", true),
            ("latency < 5s", true)
        ]
    );

    // Several rows: the first value of the first row, every row counted;
    // a host name adds the dns phase; the default query is SELECT 1.
    let named = url.replace("127.0.0.1", "localhost");
    let r = run_once(&spec(
        &named,
        "SELECT name, price FROM items ORDER BY id;",
        "",
        "{ value: '=~ ^ap', rows: '> 2' }",
        "5s",
    ))
    .await;
    assert!(r.success, "{r:#?}");
    assert_eq!(phases(&r), vec![Phase::Dns, Phase::Auth, Phase::Query]);
    assert_eq!(detail(&r, "rows"), json!(ITEMS));
    let r = run_once(&probe_with(
        "mysql",
        &format!("{{ url: '{url}' }}"),
        "{ value: 1 }",
        "5s",
    ))
    .await;
    assert!(r.success, "{r:#?}");

    // Values keep their types: decimals compare as numbers, NULL is null,
    // no rows is "no rows".
    for (query, expect, ok) in [
        (
            "SELECT price FROM items WHERE id = 1",
            "{ value: 1.25 }",
            true,
        ),
        (
            "SELECT price FROM items WHERE id = 2",
            "{ value: '< 1' }",
            true,
        ),
        (
            "SELECT price FROM items WHERE id = 3",
            "{ value: null }",
            true,
        ),
        (
            "SELECT added FROM items WHERE id = 1",
            "{ value: '2024-01-01' }",
            true,
        ),
        ("SELECT name FROM items WHERE id = 99", "{ rows: 0 }", true),
        (
            "SELECT name FROM items WHERE id = 99",
            "{ value: apple }",
            false,
        ),
    ] {
        let r = run_once(&spec(&url, query, "", expect, "5s")).await;
        assert_eq!(r.success, ok, "{query} {expect}: {r:#?}");
        if !ok {
            assert_class(&r, FailureClass::Expectation);
            assert_eq!(message(&r), "expected value == apple, got no rows");
        }
    }
}

#[tokio::test]
async fn login_and_query_failures_have_their_class_and_the_servers_text() {
    let db = MysqlServer::start();
    let wrong = db.url((MONITOR.0, "not-the-Pa55word"), "app");
    let r = run_once(&spec(&wrong, "SELECT 1", "", "", "5s")).await;
    assert_class(&r, FailureClass::Auth);
    let msg = message(&r);
    assert!(
        msg.contains("ERROR 1045 (28000): Access denied for user 'monitor'@'127.0.0.1'"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-Pa55word"), "{msg}");
    assert_eq!(
        phases(&r),
        Vec::<Phase>::new(),
        "auth failed: no phase completed"
    );

    // MariaDB tells an account without global privileges only that it
    // may not use the database; root (no password) learns it is unknown.
    let r = run_once(&spec(&db.url(MONITOR, "nope"), "SELECT 1", "", "", "5s")).await;
    assert_class(&r, FailureClass::Auth);
    assert!(
        message(&r).contains(
            "ERROR 1044 (42000): Access denied for user 'monitor'@'%' to database 'nope'"
        ),
        "{}",
        message(&r)
    );
    let root = format!("mysql://root@127.0.0.1:{}/nope", db.port());
    let r = run_once(&spec(&root, "SELECT 1", "", "", "5s")).await;
    assert_class(&r, FailureClass::Auth);
    assert!(
        message(&r).contains("ERROR 1049 (42000): Unknown database 'nope'"),
        "{}",
        message(&r)
    );

    let url = db.monitor_url();
    let r = run_once(&spec(&url, "SELECT * FROM missing", "", "", "5s")).await;
    assert_class(&r, FailureClass::Query);
    assert_eq!(
        message(&r),
        "the query failed: ERROR 1146 (42S02): Table 'app.missing' doesn't exist"
    );
    assert_eq!(
        phases(&r),
        vec![Phase::Auth],
        "the query phase did not complete"
    );

    let r = run_once(&spec(
        &url,
        "SELECT COUNT(*) FROM items",
        "",
        "{ value: 4 }",
        "5s",
    ))
    .await;
    assert_class(&r, FailureClass::Expectation);
    assert_eq!(message(&r), "expected value == 4, got 3");
    assert_eq!(phases(&r), vec![Phase::Auth, Phase::Query]);

    // The plain server offers no TLS.
    let r = run_once(&spec(&url, "SELECT 1", ", tls: require", "", "5s")).await;
    assert_class(&r, FailureClass::Tls);
    assert!(
        message(&r).contains("does not offer TLS"),
        "{}",
        message(&r)
    );

    // Nothing listens: connect.
    let closed = targets::closed_port().await;
    let r = run_once(&spec(
        &format!("mysql://monitor:x@{closed}/app"),
        "SELECT 1",
        "",
        "",
        "5s",
    ))
    .await;
    assert_class(&r, FailureClass::Connect);
    assert_eq!(message(&r), format!("connection refused by {closed}"));
}

#[tokio::test]
async fn the_read_only_transaction_refuses_writes_and_read_only_is_checked() {
    let db = MysqlServer::start();
    let url = db.monitor_url();
    let r = run_once(&spec(
        &url,
        "INSERT INTO items VALUES (9, 'fig', 1, NULL)",
        "",
        "",
        "5s",
    ))
    .await;
    assert_class(&r, FailureClass::Query);
    assert!(
        message(&r)
            .contains("ERROR 1792 (25006): Cannot execute statement in a READ ONLY transaction"),
        "{}",
        message(&r)
    );
    let n: Vec<u64> = db.root_query("SELECT COUNT(*) FROM app.items").await;
    assert_eq!(n, vec![ITEMS as u64]);

    let probe = spec(&url, "SELECT 1", "", "{ read_only: false }", "5s");
    let r = run_once(&probe).await;
    assert!(r.success, "{r:#?}");
    db.root_query::<u8>("SET GLOBAL read_only = 1").await;
    let r = run_once(&probe).await;
    assert_class(&r, FailureClass::Expectation);
    assert_eq!(message(&r), "expected read_only false, got true");
}

#[tokio::test]
async fn replication_lag_is_read_from_the_replica_status() {
    let primary = MysqlServer::start_primary();
    let replica = MysqlServer::start_replica_of(&primary);
    let lag = spec(
        &replica.monitor_url(),
        "SELECT COUNT(*) FROM items",
        "",
        "{ value: 3, replication_lag: '< 30s' }",
        "5s",
    );
    let r = run_once(&lag).await;
    assert!(r.success, "{r:#?}");
    assert_eq!(detail(&r, "replication_lag"), json!(0));
    assert_eq!(r.checks[1].expectation, "replication_lag < 30s");
    assert_eq!(r.checks[1].observed, "0s");

    replica.root_query::<u8>("STOP SLAVE SQL_THREAD").await;
    let r = run_once(&lag).await;
    assert_class(&r, FailureClass::Expectation);
    assert_eq!(
        message(&r),
        "expected replication_lag < 30s, got replication not running \
         (IO thread: Yes, SQL thread: No)"
    );

    let r = run_once(&spec(
        &primary.monitor_url(),
        "SELECT 1",
        "",
        "{ replication_lag: '< 30s' }",
        "5s",
    ))
    .await;
    assert_class(&r, FailureClass::Expectation);
    assert_eq!(
        message(&r),
        "expected replication_lag < 30s, got not a replica (SHOW REPLICA STATUS is empty)"
    );
}

#[tokio::test]
async fn tls_required_account_fails_without_tls_and_passes_with_it() {
    let ca = TestCa::new();
    let db = MysqlServer::start_tls(&ca.issue(&["db.test"], Validity::days_left(90)));
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca_file = ca.write_pem(dir.path());
    let ca_file = ca_file.display();
    let url = db.url(SECURE, "app");
    let query = "SELECT COUNT(*) FROM items";

    let r = run_once(&spec(&url, query, "", "", "5s")).await;
    assert_class(&r, FailureClass::Auth);
    assert!(
        message(&r).contains("Access denied for user 'secure'"),
        "{}",
        message(&r)
    );
    assert!(!message(&r).contains(SECURE.1));

    for extra in [
        format!(", ca: '{ca_file}', server_name: db.test"),
        format!(", tls: verify-full, ca: '{ca_file}', server_name: db.test"),
        ", tls: require".to_string(),
    ] {
        let r = run_once(&spec(&url, query, &extra, "{ value: 3 }", "5s")).await;
        assert!(r.success, "{extra}: {r:#?}");
        assert_eq!(phases(&r), vec![Phase::Auth, Phase::Query]);
    }
    // The same through the URL's own parameters.
    let r = run_once(&spec(
        &format!("{url}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca_file}"),
        query,
        ", server_name: db.test",
        "",
        "5s",
    ))
    .await;
    assert!(r.success, "{r:#?}");

    // The certificate names db.test, not 127.0.0.1.
    let r = run_once(&spec(&url, query, &format!(", ca: '{ca_file}'"), "", "5s")).await;
    assert_class(&r, FailureClass::Tls);
    assert!(
        message(&r).contains("certificate is not valid for name 127.0.0.1"),
        "{}",
        message(&r)
    );
    // A CA that did not sign it.
    let other = tempfile::tempdir().expect("temporary directory");
    let wrong_ca = TestCa::new().write_pem(other.path());
    let r = run_once(&spec(
        &url,
        query,
        &format!(", ca: '{}', server_name: db.test", wrong_ca.display()),
        "",
        "5s",
    ))
    .await;
    assert_class(&r, FailureClass::Tls);
    // Both test CAs have the same name, so the chain is found and its
    // signature does not verify.
    assert!(
        message(&r).contains("certificate is not trusted")
            || message(&r).contains("certificate signature is invalid"),
        "{}",
        message(&r)
    );
    // Without a CA the Mozilla roots do not know the test CA either.
    let r = run_once(&spec(
        &url,
        query,
        ", tls: verify-full, server_name: db.test",
        "",
        "5s",
    ))
    .await;
    assert_class(&r, FailureClass::Tls);
}

/// Counts the statements `sql` running on the server.
async fn running(db: &MysqlServer, sql: &str) -> u64 {
    let n: Vec<u64> = db
        .root_query(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = '{sql}'"
        ))
        .await;
    n.first().copied().unwrap_or_default()
}

/// Polls until `sql` no longer runs on the server; panics at `deadline`.
async fn wait_gone(db: &MysqlServer, sql: &str, deadline: Instant) {
    while running(db, sql).await > 0 {
        assert!(
            Instant::now() < deadline,
            "`{sql}` still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_long_query_ends_at_the_timeout_and_the_server_stops_it() {
    let db = MysqlServer::start();
    let url = db.monitor_url();

    // The limit derived from the probe's timeout: the server stops the
    // statement just before the probe would give up.
    let probe = spec(&url, "SELECT SLEEP(10)", "", "", "1s");
    let started = Instant::now();
    let r = run_once(&probe).await;
    assert_class(&r, FailureClass::Timeout);
    assert!(
        r.duration <= Duration::from_millis(1100),
        "{:?}",
        r.duration
    );
    assert!(
        message(&r).starts_with("the server stopped the query at the 9")
            || message(&r).ends_with("timeout while waiting for query"),
        "{}",
        message(&r)
    );
    // MariaDB would notice the closed connection only after 5 seconds.
    wait_gone(&db, "SELECT SLEEP(10)", started + Duration::from_secs(2)).await;

    // An explicit limit above the timeout: the probe gives up at its
    // timeout, and the server stops the statement at the limit.
    let started = Instant::now();
    let r = run_once(&spec(
        &url,
        "SELECT SLEEP(10)",
        ", statement_timeout: 2s",
        "",
        "1s",
    ))
    .await;
    assert_timed_out_at_1s(
        &r,
        "did not finish within the 1s timeout while waiting for query",
    );
    wait_gone(
        &db,
        "SELECT SLEEP(10)",
        started + Duration::from_millis(3500),
    )
    .await;
    db.wait_connections(MONITOR.0, 0, Duration::from_secs(2))
        .await;

    // An explicit limit below the timeout: the server stops the statement
    // and says so.
    let r = run_once(&spec(
        &url,
        "SELECT SLEEP(10)",
        ", statement_timeout: 300ms",
        "",
        "5s",
    ))
    .await;
    assert_class(&r, FailureClass::Timeout);
    assert!(
        message(&r).starts_with(
            "the server stopped the query at the 300ms statement time limit: ERROR 1969 (70100)"
        ),
        "{}",
        message(&r)
    );
    assert!(r.duration < Duration::from_secs(2), "{:?}", r.duration);
}

#[tokio::test]
async fn a_silent_listener_ends_as_timeout_at_the_bound() {
    let silent = targets::silent_tcp().await;
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let r = run_once(&spec(
        &format!("mysql://monitor:x@{}/app", silent.addr),
        "SELECT 1",
        "",
        "",
        "1s",
    ))
    .await;
    assert_timed_out_at_1s(&r, "timeout while waiting for auth");
    // The abandoned handshake's socket is closed, not left behind.
    tokio::time::timeout(Duration::from_secs(2), silent.wait_closed(1))
        .await
        .expect("the probe closed its connection");
    wait_tasks(baseline).await;
}

#[tokio::test]
async fn a_stopped_server_fails_the_probe_until_it_is_back() {
    let mut db = MysqlServer::start();
    let url = db.monitor_url();
    let fresh = spec(&url, "SELECT COUNT(*) FROM items", "", "{ value: 3 }", "5s");
    let reuse = spec(
        &url,
        "SELECT COUNT(*) FROM items",
        ", reuse_connection: true",
        "{ value: 3 }",
        "5s",
    );
    for p in [&fresh, &reuse] {
        let r = run_once(p).await;
        assert!(r.success, "{r:#?}");
    }

    db.stop();
    let refused = format!("connection refused by 127.0.0.1:{}", db.port());
    for p in [&fresh, &reuse] {
        let r = run_once(p).await;
        assert_class(&r, FailureClass::Connect);
        assert_eq!(message(&r), refused);
    }

    db.start_again();
    for p in [&fresh, &reuse] {
        let r = run_once(p).await;
        assert!(r.success, "{r:#?}");
    }
    assert_eq!(
        detail(&run_once(&reuse).await, "reused_connection"),
        json!(true)
    );
    drop(reuse);
    db.wait_connections(MONITOR.0, 0, Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn a_server_killed_during_the_query_fails_as_connect_then_recovers() {
    let mut db = MysqlServer::start();
    let url = db.monitor_url();
    for extra in ["", ", reuse_connection: true"] {
        let slow = spec(&url, "SELECT SLEEP(5)", extra, "", "8s");
        let quick = spec(&url, "SELECT 1", extra, "{ value: 1 }", "5s");
        let run = tokio::spawn(async move { run_once(&slow).await });
        // Wait until the statement runs, then kill the server under it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(&db, "SELECT SLEEP(5)").await == 0 {
            assert!(Instant::now() < deadline, "the query never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        db.stop();
        let r = run.await.expect("the run");
        assert_class(&r, FailureClass::Connect);
        assert!(
            message(&r).starts_with(&format!("lost the connection to 127.0.0.1:{}", db.port())),
            "{}",
            message(&r)
        );
        assert!(r.duration < Duration::from_secs(4), "{:?}", r.duration);

        db.start_again();
        let r = run_once(&quick).await;
        assert!(r.success, "{extra}: {r:#?}");
    }
}

#[tokio::test]
async fn reuse_connection_keeps_one_connection_until_a_run_fails() {
    let db = MysqlServer::start();
    let url = db.monitor_url();
    let id = |r: &ProbeResult| {
        assert!(r.success, "{r:#?}");
        detail(r, "value")
    };

    let fresh = spec(&url, "SELECT CONNECTION_ID()", "", "", "5s");
    let a = id(&run_once(&fresh).await);
    let b = id(&run_once(&fresh).await);
    assert_ne!(a, b, "fresh runs use new connections");

    let reuse = spec(
        &url,
        "SELECT CONNECTION_ID()",
        ", reuse_connection: true",
        "",
        "5s",
    );
    let first = run_once(&reuse).await;
    assert_eq!(phases(&first), vec![Phase::Auth, Phase::Query]);
    assert_eq!(detail(&first, "reused_connection"), json!(false));
    let second = run_once(&reuse).await;
    assert_eq!(id(&first), id(&second), "the connection is reused");
    assert_eq!(
        phases(&second),
        vec![Phase::Query],
        "a reused run has no auth phase"
    );
    assert_eq!(detail(&second, "reused_connection"), json!(true));
    assert_eq!(
        detail(&second, "connection_id"),
        detail(&first, "connection_id")
    );
    assert_eq!(
        detail(&second, "connection_id").to_string(),
        detail(&second, "value").as_str().unwrap_or_default()
    );
    assert_eq!(db.connections_of(MONITOR.0).await, 1);

    // The server drops the idle connection: the next run notices and
    // connects again, once.
    let killed = id(&second);
    db.root_query::<u8>(&format!("KILL {}", killed.as_str().expect("an id")))
        .await;
    let third = run_once(&reuse).await;
    assert_ne!(id(&third), killed);
    assert_eq!(detail(&third, "reconnected"), json!(true));

    // A failed expectation keeps the connection; a failed run closes it,
    // and the next run opens a new one.
    let unexpected = spec(
        &url,
        "SELECT CONNECTION_ID()",
        ", reuse_connection: true",
        "{ value: 0 }",
        "5s",
    );
    let x = run_once(&unexpected).await;
    let y = run_once(&unexpected).await;
    assert_class(&x, FailureClass::Expectation);
    assert_class(&y, FailureClass::Expectation);
    assert_eq!(detail(&y, "reused_connection"), json!(true));
    assert_eq!(detail(&x, "value"), detail(&y, "value"));
    let failing = spec(
        &url,
        "SELECT * FROM missing",
        ", reuse_connection: true",
        "",
        "5s",
    );
    let x = run_once(&failing).await;
    let y = run_once(&failing).await;
    assert_class(&x, FailureClass::Query);
    assert_class(&y, FailureClass::Query);
    assert_eq!(detail(&y, "reused_connection"), json!(false));
    assert_ne!(detail(&x, "connection_id"), detail(&y, "connection_id"));
    drop((reuse, unexpected, failing));
    db.wait_connections(MONITOR.0, 0, Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn fresh_runs_leave_no_connections_behind() {
    let db = MysqlServer::start();
    let url = db.monitor_url();
    let ok = spec(&url, "SELECT name FROM items", "", "{ rows: 3 }", "5s");
    let failing = spec(&url, "SELECT * FROM missing", "", "", "5s");
    let slow = spec(
        &url,
        "SELECT SLEEP(3)",
        ", statement_timeout: 500ms",
        "",
        "200ms",
    );
    for _ in 0..5 {
        assert!(run_once(&ok).await.success);
        assert_class(&run_once(&failing).await, FailureClass::Query);
        assert_class(&run_once(&slow).await, FailureClass::Timeout);
    }
    db.wait_connections(MONITOR.0, 0, Duration::from_secs(3))
        .await;
    wait_tasks(0).await;
}

#[test]
fn configuration_errors_name_their_line_and_key() {
    assert_first_error(&[
        (
            "    mysql:\n      url: http://db/app\n",
            "probes[0].mysql.url",
            4,
            "mysql:// or mariadb://",
        ),
        (
            "    mysql:\n      url: mysql://db:3306/app\n",
            "probes[0].mysql.url",
            4,
            "names no user",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n      qeury: SELECT 2\n",
            "probes[0].mysql.qeury",
            5,
            "did you mean `query`",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n      tls: preferred\n",
            "probes[0].mysql.tls",
            5,
            "second connection",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app?ssl-mode=sometimes\n",
            "probes[0].mysql.url",
            4,
            "unknown tls mode `sometimes`",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n    expect:\n      value: '> lots'\n",
            "probes[0].expect.value",
            6,
            "is not a number",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n    expect:\n      rows: some\n",
            "probes[0].expect.rows",
            6,
            "expected a number or a comparison",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n      query: SELECT 1; DELETE FROM t\n",
            "probes[0].mysql.query",
            5,
            "more than one statement",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n      ca: /nonexistent/ca.pem\n",
            "probes[0].mysql.ca",
            5,
            "cannot read CA file",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n    expect:\n      replication_lag: 10s\n",
            "probes[0].expect.replication_lag",
            6,
            "expected a comparison such as `< 800ms`",
        ),
        (
            "    mysql:\n      url: mysql://u@db/app\n    expect:\n      status: 200\n",
            "probes[0].expect.status",
            6,
            "unknown key `status`",
        ),
    ]);
}

/// A MySQL 5.7 greeting offering TLS, as one packet.
fn greeting_offering_tls() -> Vec<u8> {
    // LONG_PASSWORD CONNECT_WITH_DB PROTOCOL_41 SSL TRANSACTIONS
    // SECURE_CONNECTION MULTI_STATEMENTS MULTI_RESULTS PLUGIN_AUTH
    let caps: u32 = 0x1 | 0x8 | 0x200 | 0x800 | 0x2000 | 0x8000 | 0x10000 | 0x20000 | 0x80000;
    let mut p = vec![0x0a];
    p.extend_from_slice(b"5.7.99\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    let mut packet = (p.len() as u32).to_le_bytes()[..3].to_vec();
    packet.push(0);
    packet.extend_from_slice(&p);
    packet
}

#[tokio::test]
async fn a_stall_in_the_tls_handshake_ends_as_timeout_and_leaves_nothing_running() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Greets, offers TLS, then reads the TLS request and ClientHello and
    // never answers; returns once the client closes the connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(&greeting_offering_tls()).await.expect("greet");
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let r = run_once(&spec(
        &format!("mysql://monitor:x@{addr}/app"),
        "SELECT 1",
        ", tls: require",
        "",
        "1s",
    ))
    .await;
    assert_class(&r, FailureClass::Timeout);
    assert!(r.duration < Duration::from_millis(1100), "{:?}", r.duration);
    assert!(
        message(&r).ends_with("timeout while waiting for auth"),
        "{}",
        message(&r)
    );
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the probe closed its connection")
        .expect("the server task");
    // Not a task left behind, ours or the client library's.
    wait_tasks(0).await;
}

/// Polls until the test's runtime has `n` tasks alive; panics after 2s.
async fn wait_tasks(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if alive == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{alive} tasks alive, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
