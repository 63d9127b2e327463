//! Integration tests: the `postgres` probe kind against real PostgreSQL
//! servers (see `harness::postgres_server`).

use std::time::{Duration, Instant};

use lookout::config::ProbeSpec;
use lookout::probe::{postgres, run_once, ProbeKind, Trace};
use lookout::result::{FailureClass, Phase, ProbeResult};

use crate::harness::postgres_server::{
    Options, PgServer, MONITOR_PASSWORD, TLS_PASSWORD, TLS_USER,
};
use crate::harness::{
    assert_failed, assert_first_error, detail, diagnostics, message, probe_with, targets,
};

/// A probe of `url` with extra `postgres:` keys (flow-mapping entries,
/// e.g. `query: "SELECT 1"`) and an `expect:` flow mapping.
fn pg(url: &str, extra: &str, expect: &str, timeout: &str) -> ProbeSpec {
    let section = if extra.is_empty() {
        format!("{{ url: \"{url}\" }}")
    } else {
        format!("{{ url: \"{url}\", {extra} }}")
    };
    probe_with("postgres", &section, expect, timeout)
}

fn has_phase(r: &ProbeResult, p: Phase) -> bool {
    r.phase(p).is_some()
}

fn assert_ok(r: &ProbeResult) {
    assert!(
        r.success,
        "expected success, got {:?}: {}",
        r.class(),
        message(r)
    );
}

/// Polls `f` until it returns true; panics after `within`. Waits on
/// tokio's clock so that the runtime keeps running spawned tasks.
async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn monitor_sessions(server: &PgServer) -> String {
    server.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'monitor'",
    )
}

#[tokio::test]
async fn success_reports_value_rows_phases_and_details() {
    let s = PgServer::shared();
    let spec = pg(
        &s.monitor_url("?sslmode=disable"),
        "query: \"SELECT count(*) FROM items\"",
        "{ value: 3, rows: 1, latency: < 5s }",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_ok(&r);
    for p in [Phase::Connect, Phase::Auth, Phase::Query] {
        assert!(has_phase(&r, p), "no {p:?} phase in {:?}", r.phases);
    }
    assert!(!has_phase(&r, Phase::Tls), "sslmode=disable used TLS");
    assert!(!has_phase(&r, Phase::Dns), "an IP address was resolved");
    assert_eq!(r.checks.len(), 3, "{:?}", r.checks);
    assert!(r.checks.iter().all(|c| c.passed), "{:?}", r.checks);
    assert_eq!(r.checks[0].expectation, "value == 3");
    assert_eq!(detail(&r, "value"), "3");
    assert_eq!(detail(&r, "rows"), 1);
    assert_eq!(detail(&r, "connection"), "new");
    assert!(
        detail(&r, "server_version")
            .as_str()
            .is_some_and(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit())),
        "{:?}",
        r.details
    );
    // The target never shows the password.
    let target = spec.kind.target();
    assert!(!target.contains(MONITOR_PASSWORD), "{target}");
    assert!(target.contains("monitor:***@127.0.0.1"), "{target}");

    // The default sslmode (prefer) uses TLS when the server has it.
    let spec = pg(&s.monitor_url(""), "", "", "10s");
    let r = run_once(&spec).await;
    assert_ok(&r);
    assert!(has_phase(&r, Phase::Tls), "{:?}", r.phases);
    assert!(detail(&r, "tls_version").is_string(), "{:?}", r.details);
}

#[tokio::test]
async fn values_of_common_types_are_matched() {
    let s = PgServer::shared();
    let url = s.monitor_url("?sslmode=disable");
    let table: &[(&str, &str, &str)] = &[
        ("SELECT true", "true", "true"),
        ("SELECT 42::bigint", "\"> 41\"", "42"),
        ("SELECT 2.50::numeric", "2.5", "2.5"),
        ("SELECT 1.25::float8", "\"< 2\"", "1.25"),
        ("SELECT 'abc'::text", "\"=~ ^ab\"", "abc"),
        ("SELECT NULL::int", "null", "null"),
        (
            "SELECT timestamptz '2024-01-02 03:04:05+00'",
            "\"2024-01-02T03:04:05Z\"",
            "2024-01-02T03:04:05Z",
        ),
        ("SELECT date '2024-02-29'", "\"2024-02-29\"", "2024-02-29"),
        ("SELECT interval '90 minutes'", "\"01:30:00\"", "01:30:00"),
        ("SELECT '{\\\"a\\\": 7}'::jsonb ->> 'a'", "7", "7"),
        ("SELECT name FROM items ORDER BY id", "one", "one"),
        ("SELECT inet_client_addr()", "127.0.0.1", "127.0.0.1"),
    ];
    for (query, want, shown) in table {
        let spec = pg(
            &url,
            &format!("query: \"{query}\""),
            &format!("{{ value: {want} }}"),
            "10s",
        );
        let r = run_once(&spec).await;
        assert!(
            r.success,
            "{query}: {:?} {} {:?}",
            r.class(),
            message(&r),
            r.checks
        );
        if *shown != "null" {
            assert_eq!(detail(&r, "value"), *shown, "{query}");
        }
    }

    // A type Lookout cannot read in binary says how to get it as text.
    let spec = pg(&url, "query: \"SELECT ARRAY[1, 2]\"", "{ value: 1 }", "10s");
    let r = run_once(&spec).await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert!(r.checks[0].observed.contains("::text"), "{:?}", r.checks);

    // No rows: the value expectation fails and says so; rows counts 0.
    let spec = pg(
        &url,
        "query: \"SELECT id FROM items WHERE id > 100\"",
        "{ value: 1, rows: 0 }",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert_eq!(r.checks[0].observed, "no rows");
    assert!(r.checks[1].passed, "{:?}", r.checks);
}

#[tokio::test]
async fn many_rows_are_counted() {
    let s = PgServer::shared();
    let spec = pg(
        &s.monitor_url("?sslmode=disable"),
        "query: \"SELECT g FROM generate_series(1, 2500) g\"",
        "{ value: 1, rows: 2500 }",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_ok(&r);
    assert_eq!(detail(&r, "rows"), 2500);
}

#[tokio::test]
async fn wrong_password_is_auth_with_the_server_text() {
    let s = PgServer::shared();
    let spec = pg(
        &s.url("monitor", "wrong-password-7781", "?sslmode=disable"),
        "",
        "",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_failed(
        &r,
        FailureClass::Auth,
        "password authentication failed for user \"monitor\"",
    );
    assert!(message(&r).contains("28P01"), "{}", message(&r));
    assert!(
        !message(&r).contains("wrong-password-7781"),
        "{}",
        message(&r)
    );
    assert!(has_phase(&r, Phase::Connect) && has_phase(&r, Phase::Auth));
    assert!(!has_phase(&r, Phase::Query));
}

#[tokio::test]
async fn unknown_database_is_connect_with_the_server_text() {
    let s = PgServer::shared();
    let url = format!(
        "postgres://monitor:{MONITOR_PASSWORD}@127.0.0.1:{}/nosuchdb?sslmode=disable",
        s.port()
    );
    let r = run_once(&pg(&url, "", "", "10s")).await;
    assert_failed(
        &r,
        FailureClass::Connect,
        "database \"nosuchdb\" does not exist",
    );
    assert!(!message(&r).contains(MONITOR_PASSWORD));
}

#[tokio::test]
async fn query_errors_are_query_with_the_server_text() {
    let s = PgServer::shared();
    let spec = pg(
        &s.monitor_url("?sslmode=disable"),
        "query: \"SELECT * FROM no_such_table\"",
        "",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_failed(
        &r,
        FailureClass::Query,
        "relation \"no_such_table\" does not exist",
    );
    assert!(has_phase(&r, Phase::Auth));
}

#[tokio::test]
async fn failing_expectations_name_what_was_seen() {
    let s = PgServer::shared();
    let spec = pg(
        &s.monitor_url("?sslmode=disable"),
        "query: \"SELECT count(*) FROM items\"",
        "{ value: \"> 100\", rows: 1 }",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_failed(&r, FailureClass::Expectation, "expected value > 100, got 3");
    assert!(!r.checks[0].passed && r.checks[1].passed, "{:?}", r.checks);
}

#[tokio::test]
async fn the_query_runs_in_a_read_only_transaction() {
    let s = PgServer::shared();
    let spec = pg(
        &s.monitor_url("?sslmode=disable"),
        "query: \"INSERT INTO items VALUES (99, 'written') RETURNING id\"",
        "",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_failed(&r, FailureClass::Query, "read-only transaction");
    assert_eq!(
        s.sql("app", "SELECT count(*) FROM items WHERE id = 99"),
        "0"
    );
}

#[tokio::test]
async fn tls_modes_against_a_tls_server() {
    let s = PgServer::shared();
    // require: TLS without verification.
    let r = run_once(&pg(&s.monitor_url("?sslmode=require"), "", "", "10s")).await;
    assert_ok(&r);
    assert!(has_phase(&r, Phase::Tls), "{:?}", r.phases);

    // A user that pg_hba.conf admits over TLS only.
    for mode in ["require", "prefer"] {
        let url = s.url(TLS_USER, TLS_PASSWORD, &format!("?sslmode={mode}"));
        assert_ok(&run_once(&pg(&url, "", "", "10s")).await);
    }
    let url = s.url(TLS_USER, TLS_PASSWORD, "?sslmode=disable");
    let r = run_once(&pg(&url, "", "", "10s")).await;
    assert_failed(&r, FailureClass::Auth, "pg_hba.conf rejects connection");
    assert!(message(&r).contains("no encryption"), "{}", message(&r));

    // verify-full against the test CA, with a certificate expectation.
    let ca = s.ca_file();
    let spec = pg(
        &s.monitor_url("?sslmode=verify-full"),
        &format!("ca: \"{}\"", ca.display()),
        "{ certificate_expires_in: \"> 30d\" }",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_ok(&r);
    assert!(detail(&r, "cert_issuer")
        .as_str()
        .is_some_and(|i| i.contains("Lookout Test CA")));

    // ... and against a CA that did not issue it.
    let spec = pg(
        &s.monitor_url("?sslmode=verify-full"),
        &format!("ca: \"{}\"", s.other_ca_file().display()),
        "",
        "10s",
    );
    let r = run_once(&spec).await;
    assert_failed(&r, FailureClass::Tls, "not trusted");
    assert!(!has_phase(&r, Phase::Auth));

    // ... and for a name the certificate does not cover (hostaddr connects
    // to 127.0.0.1 while the name checked is the URL's host).
    let url = format!(
        "postgres://monitor:{MONITOR_PASSWORD}@db.invalid:{}/app?hostaddr=127.0.0.1&sslmode=verify-full",
        s.port()
    );
    let spec = pg(&url, &format!("ca: \"{}\"", ca.display()), "", "10s");
    let r = run_once(&spec).await;
    assert_failed(&r, FailureClass::Tls, "not valid for name db.invalid");
}

#[tokio::test]
async fn a_server_without_tls() {
    let s = PgServer::new(Options { ssl: false });
    // prefer falls back to plain text on the same connection.
    let r = run_once(&pg(&s.monitor_url("?sslmode=prefer"), "", "", "10s")).await;
    assert_ok(&r);
    assert!(!has_phase(&r, Phase::Tls), "{:?}", r.phases);
    assert!(detail(&r, "tls_version").is_null());
    // require does not.
    let r = run_once(&pg(&s.monitor_url("?sslmode=require"), "", "", "10s")).await;
    assert_failed(&r, FailureClass::Tls, "does not accept TLS");
}

#[tokio::test]
async fn a_unix_socket_login() {
    let s = PgServer::shared();
    let dir = s.socket_dir().display().to_string().replace('/', "%2F");
    let url = format!(
        "postgresql://monitor:{MONITOR_PASSWORD}@{dir}:{}/app",
        s.port()
    );
    let r = run_once(&pg(&url, "", "{ value: 1 }", "10s")).await;
    assert_ok(&r);
    assert!(has_phase(&r, Phase::Connect) && has_phase(&r, Phase::Auth));
    assert!(detail(&r, "remote")
        .as_str()
        .is_some_and(|p| p.ends_with(&format!(".s.PGSQL.{}", s.port()))));
}

#[tokio::test]
async fn a_long_statement_ends_at_the_bound_and_is_cancelled() {
    let s = PgServer::shared();
    let marker = format!("lookout-cancel-{}", std::process::id());
    let spec = pg(
        &s.monitor_url("?sslmode=disable"),
        &format!("query: \"SELECT pg_sleep(10), '{marker}'\""),
        "",
        "1s",
    );
    let started = Instant::now();
    let r = run_once(&spec).await;
    let took = started.elapsed();
    // Ended by the probe's bound ("... while waiting for query") or, when
    // the run passes its timeout on as the statement timeout, by the server.
    assert_failed(&r, FailureClass::Timeout, "timeout");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1200),
        "took {took:?}"
    );
    // The cancel request sent when the run was dropped stops the
    // statement on the server.
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' \
         AND pid <> pg_backend_pid()"
    );
    eventually(Duration::from_secs(5), "the statement is cancelled", || {
        s.sql("postgres", &running) == "0"
    })
    .await;
}

#[tokio::test]
async fn the_statement_timeout_comes_from_the_probe_timeout() {
    let s = PgServer::shared();
    let spec = pg(
        &s.monitor_url("?sslmode=disable"),
        "query: \"SELECT pg_sleep(10)\"",
        "",
        "10s",
    );
    let ProbeKind::Postgres(p) = &spec.kind else {
        panic!("not a postgres probe")
    };
    let mut trace = Trace::new();
    let started = Instant::now();
    let outcome = postgres::run_bounded(p, &mut trace, Some(Duration::from_millis(700))).await;
    let f = outcome.expect_err("the server's statement timeout ends it");
    assert_eq!(f.class, FailureClass::Timeout, "{}", f.message);
    assert!(f.message.contains("statement timeout"), "{}", f.message);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // As run_once would run it once it passes the probe's timeout on: the
    // run ends at the bound whichever side stops it first.
    let mut trace = Trace::new();
    let bound = Duration::from_secs(1);
    let started = Instant::now();
    let outcome =
        tokio::time::timeout(bound, postgres::run_bounded(p, &mut trace, Some(bound))).await;
    if let Ok(done) = outcome {
        let f = done.expect_err("the statement is stopped");
        assert_eq!(f.class, FailureClass::Timeout, "{}", f.message);
    }
    assert!(
        started.elapsed() <= Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_silent_listener_times_out_at_the_bound() {
    let silent = targets::silent_tcp().await;
    let url = |mode: &str| {
        format!(
            "postgres://monitor:x@127.0.0.1:{}/app?sslmode={mode}",
            silent.addr.port()
        )
    };
    let plain = pg(&url("disable"), "", "", "1s");
    let tls = pg(&url("prefer"), "", "", "1s");
    let started = Instant::now();
    let (a, b) = tokio::join!(run_once(&plain), run_once(&tls));
    let took = started.elapsed();
    assert_failed(&a, FailureClass::Timeout, "while waiting for auth");
    assert_failed(&b, FailureClass::Timeout, "while waiting for tls");
    for r in [&a, &b] {
        assert!(
            r.duration >= Duration::from_secs(1) && r.duration <= Duration::from_millis(1100),
            "{:?}",
            r.duration
        );
    }
    assert!(took <= Duration::from_millis(1100), "{took:?}");
}

#[tokio::test]
async fn primary_and_replica_roles_and_lag() {
    let primary = PgServer::shared();
    let replica = PgServer::replica();
    let run = |s: &PgServer, expect: &str| {
        let spec = pg(&s.monitor_url("?sslmode=disable"), "", expect, "10s");
        async move { run_once(&spec).await }
    };
    let r = run(primary, "{ in_recovery: false, replication_lag: < 10s }").await;
    assert_ok(&r);
    assert_eq!(detail(&r, "in_recovery"), false);

    let r = run(replica, "{ in_recovery: true, replication_lag: < 10s }").await;
    assert_ok(&r);
    assert_eq!(detail(&r, "in_recovery"), true);
    assert_eq!(detail(&r, "replication_lag_seconds"), 0.0);

    let r = run(primary, "{ in_recovery: true }").await;
    assert_failed(&r, FailureClass::Expectation, "got false (a primary)");
    let r = run(replica, "{ in_recovery: false, replication_lag: \"> 1h\" }").await;
    assert_failed(&r, FailureClass::Expectation, "got true (a replica)");
    assert_eq!(r.checks[1].observed, "0s", "{:?}", r.checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_fails_then_succeeds_fresh_and_reused() {
    let tasks = tokio::runtime::Handle::current().metrics();
    let baseline = tasks.num_alive_tasks();
    let mut s = PgServer::new(Options { ssl: false });
    let url = s.monitor_url("?sslmode=disable");
    let query = "query: \"SELECT pg_backend_pid() FROM pg_sleep((SELECT secs FROM nap))\"";
    let fresh = pg(&url, query, "", "20s");
    let reused = pg(&url, &format!("{query}, reuse_connection: true"), "", "20s");
    let pid = |r: &ProbeResult| {
        assert_ok(r);
        detail(r, "value")
    };

    // A fresh run logs in every time; a reused connection is the same
    // backend, with no connect or auth phase after the first run.
    let (f1, f2) = (run_once(&fresh).await, run_once(&fresh).await);
    assert_ne!(pid(&f1), pid(&f2));
    let (r1, r2) = (run_once(&reused).await, run_once(&reused).await);
    assert_eq!(pid(&r1), pid(&r2));
    assert!(has_phase(&r1, Phase::Connect));
    assert!(!has_phase(&r2, Phase::Connect) && !has_phase(&r2, Phase::Auth));
    assert_eq!(detail(&r2, "connection"), "reused");
    let first_pid = pid(&r2);

    // Both kinds of run are in a statement when the server shuts down.
    s.sql("app", "UPDATE nap SET secs = 30");
    let in_flight = [fresh.clone(), reused.clone()]
        .map(|spec| tokio::spawn(async move { run_once(&spec).await }));
    let sleeping = "SELECT count(*) FROM pg_stat_activity \
                    WHERE usename = 'monitor' AND state = 'active' AND query LIKE '%pg_sleep%'";
    eventually(Duration::from_secs(10), "both runs are sleeping", || {
        s.sql("postgres", sleeping) == "2"
    })
    .await;
    s.stop();
    for task in in_flight {
        let r = task.await.expect("run task");
        assert_eq!(r.class(), Some(FailureClass::Connect), "{}", message(&r));
        assert!(
            r.duration < Duration::from_secs(10),
            "the run waited for its timeout: {:?}",
            r.duration
        );
    }
    for spec in [&fresh, &reused] {
        let r = run_once(spec).await;
        assert_failed(&r, FailureClass::Connect, "connection refused");
    }

    // Back up: the same specs succeed again, the reused one on a new
    // connection that it then keeps.
    s.start();
    s.sql("app", "UPDATE nap SET secs = 0");
    assert_ok(&run_once(&fresh).await);
    let r3 = run_once(&reused).await;
    assert!(has_phase(&r3, Phase::Connect), "{:?}", r3.phases);
    assert_ne!(pid(&r3), first_pid);
    let r4 = run_once(&reused).await;
    assert_eq!(pid(&r4), pid(&r3));

    // Nothing is left behind: only the kept connection is open, and once
    // the spec holding it is gone, nothing is, on the server or in tokio.
    eventually(Duration::from_secs(5), "one kept session", || {
        monitor_sessions(&s) == "1"
    })
    .await;
    drop(reused);
    eventually(Duration::from_secs(5), "no session left", || {
        monitor_sessions(&s) == "0"
    })
    .await;
    eventually(Duration::from_secs(5), "no task left", || {
        tasks.num_alive_tasks() == baseline
    })
    .await;
}

#[test]
fn configuration_errors_name_the_key_and_line() {
    let ok_url = "postgres://monitor:pw@db:5432/app";
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = targets::TestCa::new().write_pem(dir.path());
    assert_first_error(&[
        (
            "    postgres: { url: \"mysql://u:pw@db/app\" }\n",
            "probes[0].postgres.url",
            3,
            "postgres:// or postgresql://",
        ),
        (
            "    postgres:\n      url: \"postgres://u:pw@db/app?sslmode=sometimes\"\n",
            "probes[0].postgres.url",
            4,
            "invalid sslmode `sometimes`",
        ),
        (
            "    postgres: { url: \"postgres://u:pw@db:port/app\" }\n",
            "probes[0].postgres.url",
            3,
            "invalid URL",
        ),
        (
            &format!("    postgres: {{ url: \"{ok_url}\", querry: SELECT 2 }}\n"),
            "probes[0].postgres.querry",
            3,
            "did you mean `query`",
        ),
        (
            "    postgres: { query: SELECT 1 }\n",
            "probes[0].postgres",
            3,
            "missing required key `url`",
        ),
        (
            &format!("    postgres: {{ url: \"{ok_url}\" }}\n    expect: {{ value: \"=~ (\" }}\n"),
            "probes[0].expect.value",
            4,
            "invalid regex",
        ),
        (
            &format!("    postgres: {{ url: \"{ok_url}\" }}\n    expect: {{ rows: many }}\n"),
            "probes[0].expect.rows",
            4,
            "expected a number",
        ),
        (
            &format!(
                "    postgres: {{ url: \"{ok_url}\" }}\n    expect: {{ replication_lag: 10s }}\n"
            ),
            "probes[0].expect.replication_lag",
            4,
            "comparison",
        ),
        (
            &format!(
                "    postgres: {{ url: \"{ok_url}\" }}\n    expect: {{ in_recovery: maybe }}\n"
            ),
            "probes[0].expect.in_recovery",
            4,
            "true or false",
        ),
        (
            &format!("    postgres: {{ url: \"{ok_url}\" }}\n    expect: {{ status: 200 }}\n"),
            "probes[0].expect.status",
            4,
            "unknown key",
        ),
        (
            &format!(
                "    postgres: {{ url: \"{ok_url}?sslmode=require\", ca: \"{}\" }}\n",
                ca.display()
            ),
            "probes[0].postgres.ca",
            3,
            "verify-full",
        ),
    ]);
    // A password is never echoed, whatever is wrong with the URL.
    for d in diagnostics(
        "    postgres: { url: \"postgres://u:hunter2-secret@db:port/app?sslmode=x\" }\n",
    ) {
        assert!(!d.contains("hunter2-secret"), "{d}");
    }
}
