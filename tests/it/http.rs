//! Integration tests: http.
//!
//! Every test runs a real probe (`run_once`) against an in-process target
//! from `harness::targets` and checks what an operator would see: the
//! outcome, the failure class and message, phase timings and details.

use std::time::Duration;

use lookout::config::{read::Cx, ProbeSpec};
use lookout::probe::run_once;
use lookout::result::{FailureClass, Phase, ProbeResult};

use crate::harness::targets::{self, Behaviour, Reply, TestCa, Validity, NAMES};
use crate::harness::{detail, diagnostics, message, probe_with};

/// A probe with the given `http:` and `expect:` flow mappings.
fn probe(http: &str, expect: &str, timeout: &str) -> ProbeSpec {
    probe_with("http", http, expect, timeout)
}

async fn run(http: &str, expect: &str) -> ProbeResult {
    run_once(&probe(http, expect, "2s")).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test]
async fn each_status_class_against_status_expectations() {
    // (status served, expect mapping, expected failure class)
    let table: &[(u16, &str, Option<FailureClass>)] = &[
        (200, "", None),
        (204, "", None),
        (302, "", None), // no Location: the 3xx is the final answer
        (404, "", Some(FailureClass::Expectation)),
        (500, "", Some(FailureClass::Expectation)),
        (200, "{status: 200}", None),
        (201, "{status: 200}", Some(FailureClass::Expectation)),
        (201, "{status: \"2xx\"}", None),
        (404, "{status: [200, 404]}", None),
        (503, "{status: [200, 404]}", Some(FailureClass::Expectation)),
        (503, "{status: 5xx}", None),
        (302, "{status: 2xx}", Some(FailureClass::Expectation)),
    ];
    for (status, expect, want) in table {
        let target = targets::http(Behaviour::Respond(Reply::new(*status).body("hello"))).await;
        let url = target.http_url("/");
        let r = run(&format!("{{url: \"{url}\"}}"), expect).await;
        assert_eq!(
            r.class(),
            *want,
            "status {status} with expect {expect:?}: {:?}",
            r.failure
        );
        assert_eq!(
            detail(&r, "status"),
            serde_json::json!(status),
            "status detail"
        );
    }
}

#[tokio::test]
async fn a_failed_status_names_the_expectation_and_what_came_back() {
    let target = targets::http(Behaviour::Respond(Reply::new(503))).await;
    let r = run(&format!("{{url: \"{}\"}}", target.http_url("/")), "").await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert_eq!(
        message(&r),
        "expected status 2xx or 3xx, got 503 Service Unavailable"
    );
}

#[tokio::test]
async fn refused_credentials_fail_as_auth() {
    let target = targets::http(Behaviour::Respond(Reply::new(401))).await;
    let url = target.http_url("/");
    let r = run(
        &format!("{{url: \"{url}\", bearer_token: not-the-right-one}}"),
        "",
    )
    .await;
    assert_eq!(r.class(), Some(FailureClass::Auth));
    assert!(
        message(&r).contains("refused the credentials"),
        "{}",
        message(&r)
    );
    assert!(!message(&r).contains("not-the-right-one"));
    // Expecting the 401 (checking that a page is protected) passes.
    let r = run(&format!("{{url: \"{url}\"}}"), "{status: 401}").await;
    assert!(r.success, "{:?}", r.failure);
}

#[tokio::test]
async fn body_contains_and_body_matches() {
    let target = targets::http(Behaviour::Respond(
        Reply::new(200).body(r#"{"status":"ok","build":"v1.4.2"}"#),
    ))
    .await;
    let url = format!("{{url: \"{}\"}}", target.http_url("/healthz"));
    let pass = run(
        &url,
        r#"{body_contains: '"status":"ok"', body_matches: 'v1\.\d+\.\d+'}"#,
    )
    .await;
    assert!(pass.success, "{:?}", pass.failure);
    assert_eq!(
        pass.checks.len(),
        3,
        "status, body_contains, body_matches: {:?}",
        pass.checks
    );

    let fail = run(&url, r#"{body_contains: '"status":"down"'}"#).await;
    assert_eq!(fail.class(), Some(FailureClass::Expectation));
    assert_eq!(
        message(&fail),
        r#"expected body contains "\"status\":\"down\"", got "{\"status\":\"ok\",\"build\":\"v1.4.2\"}" (32 bytes)"#
    );

    let fail = run(&url, r#"{body_matches: ['^\{', 'v2\.']}"#).await;
    assert_eq!(fail.class(), Some(FailureClass::Expectation));
    assert!(
        message(&fail).starts_with(r"expected body matches /v2\./, got "),
        "{}",
        message(&fail)
    );
}

#[tokio::test]
async fn json_expectations_compare_values() {
    let body = r#"{"database":{"status":"UP","connections":12},"items":[{"n":3},{"n":5}],"version":"1.2"}"#;
    let target = targets::http(Behaviour::Respond(
        Reply::new(200)
            .header("content-type", "application/json")
            .body(body),
    ))
    .await;
    let url = format!("{{url: \"{}\"}}", target.http_url("/"));
    let pass = run(
        &url,
        r#"{json: {"$.database.status": UP, "$.database.connections": "> 0", "$.items[*].n": ">= 3", "$.items[0].n": 3, "$.version": "=~ ^1\\."}}"#,
    )
    .await;
    assert!(pass.success, "{:?} {:?}", pass.failure, pass.checks);

    let table: &[(&str, &str)] = &[
        (
            r#"{json: {"$.database.status": DOWN}}"#,
            "expected json $.database.status == DOWN, got UP",
        ),
        (
            r#"{json: {"$.database.connections": "< 10"}}"#,
            "expected json $.database.connections < 10, got 12",
        ),
        (
            r#"{json: {"$.items[*].n": "> 4"}}"#,
            "expected json $.items[*].n > 4, got 3, 5",
        ),
        (
            r#"{json: {"$.cache.status": UP}}"#,
            "expected json $.cache.status == UP, got nothing at $.cache.status",
        ),
    ];
    for (expect, want) in table {
        let r = run(&url, expect).await;
        assert_eq!(r.class(), Some(FailureClass::Expectation), "{expect}");
        assert_eq!(message(&r), *want);
    }

    let html = targets::http(Behaviour::Respond(
        Reply::new(200).body("<html>maintenance</html>"),
    ))
    .await;
    let r = run(
        &format!("{{url: \"{}\"}}", html.http_url("/")),
        r#"{json: {"$.status": ok}}"#,
    )
    .await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert!(
        message(&r).contains("a body that is not JSON"),
        "{}",
        message(&r)
    );
}

#[tokio::test]
async fn header_expectations() {
    let target = targets::http(Behaviour::Respond(
        Reply::new(200)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Version", "42"),
    ))
    .await;
    let url = format!("{{url: \"{}\"}}", target.http_url("/"));
    let pass = run(
        &url,
        r#"{headers: {content-type: "=~ json", X-Version: "> 40"}}"#,
    )
    .await;
    assert!(pass.success, "{:?}", pass.failure);
    let fail = run(&url, r#"{headers: {x-request-id: "=~ ."}}"#).await;
    assert_eq!(
        message(&fail),
        "expected header x-request-id =~ ., got no such header"
    );
    let fail = run(&url, r#"{headers: {content-type: text/html}}"#).await;
    assert_eq!(
        message(&fail),
        "expected header content-type == text/html, got application/json; charset=utf-8"
    );
}

#[tokio::test]
async fn the_request_carries_method_headers_body_and_credentials() {
    let target = targets::http(Behaviour::Echo).await;
    let url = target.http_url("/submit?x=1");
    let r = run(
        &format!(
            "{{url: \"{url}\", method: post, body: 'hello=world', headers: {{X-Trace: abc123, Content-Type: application/x-www-form-urlencoded}}, basic_auth: {{username: user, password: s3cr3t-pw}}}}"
        ),
        // base64("user:s3cr3t-pw")
        r#"{body_contains: ["POST /submit?x=1 HTTP/1.1", "x-trace: abc123", "authorization: Basic dXNlcjpzM2NyM3QtcHc=", "content-length: 11", "user-agent: Lookout/", "hello=world"]}"#,
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    let r = run(
        &format!("{{url: \"{url}\", bearer_token: tok-123456, user_agent: probe/1}}"),
        r#"{body_contains: ["GET /submit?x=1 HTTP/1.1", "authorization: Bearer tok-123456", "user-agent: probe/1"]}"#,
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
}

#[tokio::test]
async fn latency_of_a_slow_target_is_measured_precisely() {
    let target = targets::http(Behaviour::Respond(
        Reply::new(200).delay(Duration::from_millis(200)),
    ))
    .await;
    let r = run(&format!("{{url: \"{}\"}}", target.http_url("/")), "").await;
    assert!(r.success, "{:?}", r.failure);
    let first_byte = r.phase(Phase::FirstByte).expect("first_byte phase");
    assert!(
        (200.0..215.0).contains(&ms(first_byte)),
        "first byte {first_byte:?}"
    );
    assert!(
        (200.0..230.0).contains(&ms(r.duration)),
        "total {:?}",
        r.duration
    );
    assert!(
        r.phase(Phase::Connect).is_some(),
        "connect phase: {:?}",
        r.phases
    );
    assert!(
        r.phase(Phase::Transfer).is_some(),
        "transfer phase: {:?}",
        r.phases
    );
    assert!(
        r.phase(Phase::Dns).is_none(),
        "an IP literal needs no DNS: {:?}",
        r.phases
    );
}

#[tokio::test]
async fn a_target_that_never_answers_times_out_at_the_bound() {
    let target = targets::http(Behaviour::Silent).await;
    let r = run_once(&probe(
        &format!("{{url: \"{}\"}}", target.http_url("/")),
        "",
        "1s",
    ))
    .await;
    assert_eq!(r.class(), Some(FailureClass::Timeout));
    assert!(
        (1000.0..1100.0).contains(&ms(r.duration)),
        "took {:?}",
        r.duration
    );
    assert!(
        message(&r).ends_with("did not finish within the 1s timeout while waiting for first byte"),
        "{}",
        message(&r)
    );
}

#[tokio::test]
async fn a_dripping_target_times_out_at_the_bound() {
    let target = targets::http(Behaviour::Drip).await;
    let r = run_once(&probe(
        &format!("{{url: \"{}\"}}", target.http_url("/")),
        "",
        "1s",
    ))
    .await;
    assert_eq!(r.class(), Some(FailureClass::Timeout));
    assert!(
        (1000.0..1100.0).contains(&ms(r.duration)),
        "took {:?}",
        r.duration
    );
    assert!(
        message(&r).contains("while waiting for transfer"),
        "{}",
        message(&r)
    );
}

#[tokio::test]
async fn a_huge_body_fails_as_size_long_before_the_timeout() {
    for declare_length in [false, true] {
        let target = targets::http(Behaviour::Endless { declare_length }).await;
        let r = run_once(&probe(
            &format!("{{url: \"{}\", max_body: 256KiB}}", target.http_url("/")),
            "",
            "10s",
        ))
        .await;
        assert_eq!(r.class(), Some(FailureClass::Size), "{:?}", r.failure);
        assert!(message(&r).contains("max_body 256 KiB"), "{}", message(&r));
        assert!(
            r.duration < Duration::from_millis(500),
            "took {:?}",
            r.duration
        );
    }
}

#[tokio::test]
async fn a_run_that_ends_early_gives_its_connection_back() {
    // Stalled, dribbling and flooding targets: each run ends (timeout or
    // size) and the target sees the connection closed right after.
    let cases = [
        (Behaviour::Silent, "", FailureClass::Timeout),
        (Behaviour::Drip, "", FailureClass::Timeout),
        (
            Behaviour::Endless {
                declare_length: false,
            },
            ", max_body: 64KiB",
            FailureClass::Size,
        ),
    ];
    for (behaviour, extra, class) in cases {
        let target = targets::http(behaviour.clone()).await;
        let url = target.http_url("/");
        let r = run_once(&probe(&format!("{{url: \"{url}\"{extra}}}"), "", "300ms")).await;
        assert_eq!(r.class(), Some(class), "{behaviour:?}: {:?}", r.failure);
        let closed = tokio::time::timeout(Duration::from_secs(2), target.wait_closed(1)).await;
        assert!(
            closed.is_ok(),
            "{behaviour:?}: the connection was still open after the run"
        );
    }
}

#[tokio::test]
async fn a_redirect_loop_fails_as_protocol() {
    let target = targets::http(Behaviour::RedirectLoop).await;
    let r = run(
        &format!(
            "{{url: \"{}\", max_redirects: 3}}",
            target.http_url("/loop/0")
        ),
        "",
    )
    .await;
    assert_eq!(r.class(), Some(FailureClass::Protocol));
    let want = format!(
        "redirect loop: more than 3 redirects (last Location: {})",
        target.http_url("/loop/4")
    );
    assert_eq!(message(&r), want);
    assert_eq!(target.hits(), 4, "the first request and three redirects");
}

#[tokio::test]
async fn redirects_are_followed_without_leaking_credentials_to_another_origin() {
    let echo = targets::http(Behaviour::Echo).await;
    let redirect = targets::http(Behaviour::RedirectTo(echo.http_url("/landing"))).await;
    let url = redirect.http_url("/start");
    let r = run(
        &format!("{{url: \"{url}\", bearer_token: secret-token-1}}"),
        "{body_contains: GET /landing}",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(detail(&r, "redirects"), serde_json::json!(1));
    assert_eq!(
        detail(&r, "final_url"),
        serde_json::json!(echo.http_url("/landing"))
    );
    let leaked = run(
        &format!("{{url: \"{url}\", bearer_token: secret-token-1}}"),
        "{body_contains: authorization}",
    )
    .await;
    assert_eq!(
        leaked.class(),
        Some(FailureClass::Expectation),
        "the token must not follow the redirect"
    );

    let r = run(
        &format!("{{url: \"{url}\", follow_redirects: false}}"),
        "{status: 302}",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(
        echo.hits(),
        2,
        "not followed when follow_redirects is false"
    );
}

#[tokio::test]
async fn broken_responses_fail_as_protocol() {
    let table: &[(&[u8], &str)] = &[
        (
            b"",
            "the server closed the connection before sending a response",
        ),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed HTTP response"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
            "the server closed the connection before the body was complete (got 5 of 100 bytes)",
        ),
    ];
    for (raw, want) in table {
        let target = targets::http(Behaviour::Raw(raw.to_vec())).await;
        let r = run(&format!("{{url: \"{}\"}}", target.http_url("/")), "").await;
        assert_eq!(r.class(), Some(FailureClass::Protocol), "{:?}", r.failure);
        assert!(message(&r).contains(want), "{}", message(&r));
    }
}

#[tokio::test]
async fn refused_and_unresolvable_targets() {
    let addr = targets::closed_port().await;
    let r = run(&format!("{{url: \"http://{addr}/\"}}"), "").await;
    assert_eq!(r.class(), Some(FailureClass::Connect));
    assert_eq!(message(&r), format!("connection refused by {addr}"));

    let r = run("{url: \"http://no-such-host.invalid/\"}", "").await;
    assert_eq!(r.class(), Some(FailureClass::Dns), "{:?}", r.failure);
    assert!(
        message(&r).starts_with("cannot resolve no-such-host.invalid: "),
        "{}",
        message(&r)
    );
}

// --- HTTPS ---------------------------------------------------------------

#[tokio::test]
async fn https_with_an_untrusted_certificate_fails_as_tls() {
    let target = targets::https(
        Behaviour::Respond(Reply::new(200)),
        &targets::self_signed(NAMES),
    )
    .await;
    let r = run(&format!("{{url: \"{}\"}}", target.https_url("/")), "").await;
    assert_eq!(r.class(), Some(FailureClass::Tls));
    assert!(
        message(&r).contains("certificate is not trusted (self-signed or unknown issuer)"),
        "{}",
        message(&r)
    );
    assert_eq!(
        detail(&r, "cert_subject"),
        serde_json::json!("CN=lookout self-signed")
    );
    assert_eq!(
        target.hits(),
        0,
        "no request is sent over an untrusted connection"
    );

    // insecure: the same server passes and is still reported.
    let r = run(
        &format!("{{url: \"{}\", insecure: true}}", target.https_url("/")),
        "",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
    assert!(r.phase(Phase::Tls).is_some(), "{:?}", r.phases);
    assert_eq!(
        detail(&r, "cert_subject"),
        serde_json::json!("CN=lookout self-signed")
    );
}

#[tokio::test]
async fn https_with_an_expired_certificate_fails_as_tls() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.write_pem(dir.path());
    let target = targets::https(
        Behaviour::Respond(Reply::new(200)),
        &ca.issue(NAMES, Validity::expired()),
    )
    .await;
    let r = run(
        &format!(
            "{{url: \"{}\", ca: \"{}\"}}",
            target.https_url("/"),
            ca_file.display()
        ),
        "",
    )
    .await;
    assert_eq!(r.class(), Some(FailureClass::Tls));
    assert!(
        message(&r).ends_with("certificate has expired (not valid after 2001-01-01T00:00:00Z)"),
        "{}",
        message(&r)
    );
}

#[tokio::test]
async fn https_trusts_a_custom_ca_and_checks_the_name() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca.write_pem(dir.path());
    let validity = Validity::days_left(30);
    let good = targets::https(
        Behaviour::Respond(Reply::new(200).body("ok")),
        &ca.issue(NAMES, validity),
    )
    .await;
    let section = |url: String| format!("{{url: \"{url}\", ca: \"{}\"}}", ca_file.display());

    let r = run(
        &section(good.https_url("/")),
        "{certificate_expires_in: \"> 14d\"}",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(detail(&r, "http_version"), serde_json::json!("HTTP/1.1"));
    assert_eq!(detail(&r, "tls_version"), serde_json::json!("1.3"));
    assert_eq!(
        detail(&r, "cert_subject"),
        serde_json::json!("CN=lookout test server")
    );
    assert_eq!(
        detail(&r, "cert_not_after"),
        serde_json::json!(validity.not_after_rfc3339())
    );
    let days = detail(&r, "cert_expires_in_days").as_i64().unwrap_or(-1);
    assert!((29..=30).contains(&days), "{days}");
    assert_eq!(detail(&r, "size"), serde_json::json!(2));

    let r = run(
        &section(good.https_url("/")),
        "{certificate_expires_in: \"> 45d\"}",
    )
    .await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert!(
        message(&r).starts_with("expected certificate_expires_in > 45d, got "),
        "{}",
        message(&r)
    );

    // The same CA, but a certificate for another name.
    let wrong = targets::https(
        Behaviour::Respond(Reply::new(200)),
        &ca.issue(&["other.example"], validity),
    )
    .await;
    let r = run(&section(wrong.https_url("/")), "").await;
    assert_eq!(r.class(), Some(FailureClass::Tls));
    assert!(
        message(&r).ends_with(
            "certificate is not valid for name 127.0.0.1 (it is valid for: other.example)"
        ),
        "{}",
        message(&r)
    );
}

#[tokio::test]
async fn https_against_a_plain_port_and_a_silent_port() {
    let plain = targets::http(Behaviour::Respond(Reply::new(200))).await;
    let r = run(&format!("{{url: \"{}\"}}", plain.https_url("/")), "").await;
    assert_eq!(r.class(), Some(FailureClass::Tls));
    assert!(
        message(&r).contains("is this port speaking TLS?"),
        "{}",
        message(&r)
    );

    let silent = targets::silent_tcp().await;
    let r = run_once(&probe(
        &format!("{{url: \"{}\"}}", silent.https_url("/")),
        "",
        "500ms",
    ))
    .await;
    assert_eq!(r.class(), Some(FailureClass::Timeout));
    assert!(
        message(&r).ends_with("while waiting for tls"),
        "{}",
        message(&r)
    );
}

#[tokio::test]
async fn certificate_expectations_fail_on_plain_http() {
    let target = targets::http(Behaviour::Respond(Reply::new(200))).await;
    let r = run(
        &format!("{{url: \"{}\"}}", target.http_url("/")),
        "{certificate_expires_in: \"> 1d\"}",
    )
    .await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert!(message(&r).contains("no certificate"), "{}", message(&r));
}

// --- Configuration errors -------------------------------------------------

#[test]
fn configuration_errors_name_the_line_and_key() {
    let table: &[(&str, &str)] = &[
        ("    http: {url: \"not a url\"}\n", "3 probes[0].http.url: invalid URL `not a url`: relative URL without a base"),
        ("    http: {url: \"ftp://x.example/\"}\n", "3 probes[0].http.url: unsupported URL scheme `ftp`"),
        ("    http:\n      url: http://x.example/\n      method: GTE\n", "5 probes[0].http.method: unknown HTTP method `GTE`; did you mean `GET`?"),
        ("    http:\n      url: http://x.example/\n      max_body: 1XB\n", "5 probes[0].http.max_body: invalid size `1XB`"),
        ("    http:\n      url: http://x.example/\n      ca: /nonexistent/ca.pem\n", "5 probes[0].http.ca: cannot read CA file `/nonexistent/ca.pem`"),
        ("    http:\n      url: http://x.example/\n      folow_redirects: false\n", "5 probes[0].http.folow_redirects: unknown key `folow_redirects`; did you mean `follow_redirects`?"),
        ("    http:\n      url: http://x.example/\n      headers: {\"Bad Header\": x}\n", "5 probes[0].http.headers.Bad Header: invalid header name `Bad Header`"),
        ("    http: {method: GET}\n", "3 probes[0].http: missing required key `url`"),
        ("    http: {url: http://x.example/}\n    expect:\n      status: 6xx\n", "5 probes[0].expect.status: invalid status `6xx`"),
        ("    http: {url: http://x.example/}\n    expect:\n      status: [200, 99]\n", "5 probes[0].expect.status[1]: invalid status `99`"),
        ("    http: {url: http://x.example/}\n    expect:\n      body_matches: \"(unclosed\"\n", "5 probes[0].expect.body_matches: invalid regex `(unclosed`"),
        ("    http: {url: http://x.example/}\n    expect:\n      json:\n        \"$.a[\": 1\n", "6 probes[0].expect.json.$.a[: invalid JSONPath `$.a[`"),
        ("    http: {url: http://x.example/}\n    expect:\n      json:\n        status: UP\n", "6 probes[0].expect.json.status: invalid JSONPath `status`"),
        ("    http: {url: http://x.example/}\n    expect:\n      json: {\"$.n\": \"> abc\"}\n", "5 probes[0].expect.json.$.n: `> abc`"),
        ("    http: {url: http://x.example/}\n    expect:\n      certificate_expires_in: 14d\n", "5 probes[0].expect.certificate_expires_in: expected a comparison"),
        ("    http: {url: http://x.example/}\n    expect:\n      body_contain: ok\n", "5 probes[0].expect.body_contain: unknown key `body_contain`; did you mean `body_contains`?"),
    ];
    for (probe, want) in table {
        let got = diagnostics(probe);
        assert!(
            got.iter().any(|d| d.starts_with(want)),
            "for:\n{probe}\nwant a diagnostic starting with:\n  {want}\ngot:\n  {got:#?}"
        );
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let got = diagnostics(
        "    http:\n      url: \"::\"\n      method: FETCH\n      max_redirects: -1\n    expect:\n      status: 6xx\n      body_matches: \"[\"\n",
    );
    let keys: Vec<&str> = got.iter().filter_map(|d| d.split(' ').nth(1)).collect();
    for key in [
        "probes[0].http.url:",
        "probes[0].http.method:",
        "probes[0].http.max_redirects:",
        "probes[0].expect.status:",
        "probes[0].expect.body_matches:",
    ] {
        assert!(keys.contains(&key), "{key} missing from {got:#?}");
    }
}

#[test]
fn a_relative_ca_path_resolves_against_the_config_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    TestCa::new().write_pem(dir.path());
    let main = dir.path().join("lookout.yaml");
    std::fs::write(
        &main,
        "probes:\n  - name: t\n    http: {url: \"https://x.example/\", ca: test-ca.pem}\n",
    )
    .expect("write config");
    let loaded = lookout::config::load_with(&main, Cx::new(Box::new(|_| None)));
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}
