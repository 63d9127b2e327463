//! Integration tests: tcp. Each test runs a real TCP server in-process on
//! a free loopback port that behaves well or badly on purpose.

use std::future::Future;
use std::net::SocketAddr;

use lookout::probe::run_once;
use lookout::result::{FailureClass, Phase, ProbeResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{assert_first_error, assert_timed_out_at_1s, failure, probe_from_yaml};

/// A server whose every connection is handled by `handle`; stops when dropped.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(handle: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    Server { addr, task }
}

/// Writes a banner, then holds the connection until the client hangs up.
async fn banner_server(banner: &'static [u8]) -> Server {
    serve(move |mut s| async move {
        if s.write_all(banner).await.is_ok() {
            let mut buf = [0u8; 64];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    })
    .await
}

/// Echoes every byte back until the client hangs up.
async fn echo_server() -> Server {
    serve(|mut s| async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// Accepts and closes at once.
async fn closing_server() -> Server {
    serve(|s| async move { drop(s) }).await
}

/// Accepts, reads whatever comes, and never writes.
async fn silent_server() -> Server {
    serve(|mut s| async move {
        let mut buf = [0u8; 64];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

async fn probe(tcp: &str, expect: &str, timeout: &str) -> ProbeResult {
    let mut yaml = format!("probes:\n  - name: t\n    tcp: {tcp}\n    timeout: {timeout}\n");
    if !expect.is_empty() {
        yaml.push_str(&format!("    expect: {expect}\n"));
    }
    run_once(&probe_from_yaml(&yaml)).await
}

#[tokio::test]
async fn a_banner_is_read_and_matched() {
    let server = banner_server(b"220 mail.test ESMTP ready\r\n").await;
    let port = server.addr.port();
    let r = probe(
        &format!("{{host: 127.0.0.1, port: {port}}}"),
        "{reply_contains: ESMTP, reply_matches: '^220 \\S+ ESMTP'}",
        "2s",
    )
    .await;
    assert!(r.success, "{:?} {:?}", r.failure, r.checks);
    assert_eq!(r.checks.len(), 2);
    assert!(r.checks.iter().all(|c| c.passed));
    assert_eq!(r.details["remote"], format!("127.0.0.1:{port}"));
    assert_eq!(r.details["reply"], "220 mail.test ESMTP ready\r\n");
    assert!(
        r.phase(Phase::Connect).is_some() && r.phase(Phase::FirstByte).is_some(),
        "{:?}",
        r.phases
    );
    assert!(
        r.phase(Phase::Dns).is_none(),
        "no dns phase for an IP: {:?}",
        r.phases
    );
}

#[tokio::test]
async fn a_wrong_banner_fails_the_expectation_with_what_came() {
    let banner = b"SSH-2.0-OpenSSH_9.6\r\n";
    let server = banner_server(banner).await;
    // read_bytes bounds the read: the server keeps the connection open.
    let r = probe(
        &format!(
            "{{host: 127.0.0.1, port: {}, read_bytes: {}}}",
            server.addr.port(),
            banner.len()
        ),
        "{reply_matches: '^220 '}",
        "2s",
    )
    .await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Expectation);
    assert_eq!(
        msg,
        r#"expected reply_matches ^220 , got reply "SSH-2.0-OpenSSH_9.6\r\n""#
    );
}

#[tokio::test]
async fn a_payload_is_sent_with_escapes_and_the_echo_matched() {
    let server = echo_server().await;
    let port = server.addr.port();
    // Single quotes: the probe's own escapes. Double quotes: YAML's.
    for send in [r"'PING\x20A\r\n'", r#""PING\x20A\r\n""#] {
        let r = probe(
            &format!("{{host: localhost, port: {port}, send: {send}}}"),
            r"{reply_matches: '^PING A\r\n$', reply_contains: 'A\r\n'}",
            "2s",
        )
        .await;
        assert!(
            r.success,
            "{send}: {:?} {:?} {:?}",
            r.failure, r.checks, r.details
        );
        assert!(
            r.phase(Phase::Dns).is_some(),
            "localhost is resolved: {:?}",
            r.phases
        );
    }
}

#[tokio::test]
async fn read_bytes_bounds_the_reply() {
    let server = echo_server().await;
    let r = probe(
        &format!(
            "{{host: 127.0.0.1, port: {}, send: 'PING PONG', read_bytes: 4}}",
            server.addr.port()
        ),
        "{reply_contains: PONG}",
        "2s",
    )
    .await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Expectation);
    assert_eq!(msg, r#"expected reply_contains "PONG", got reply "PING""#);
    assert_eq!(r.details["reply_bytes"], 4);
}

#[tokio::test]
async fn nothing_listening_fails_as_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let r = probe(&format!("{{host: 127.0.0.1, port: {port}}}"), "", "2s").await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Connect);
    assert_eq!(msg, format!("connection refused by 127.0.0.1:{port}"));
}

#[tokio::test]
async fn a_server_that_closes_without_replying_fails_as_protocol() {
    let server = closing_server().await;
    let r = probe(
        &format!("{{host: 127.0.0.1, port: {}}}", server.addr.port()),
        "{reply_contains: OK}",
        "2s",
    )
    .await;
    let (class, msg) = failure(&r);
    assert_eq!(class, FailureClass::Protocol);
    assert!(msg.starts_with(&format!("{} ", server.addr)), "{msg}");
    assert!(
        msg.contains("without replying") || msg.contains("before replying"),
        "{msg}"
    );
}

#[tokio::test]
async fn connecting_is_enough_without_reply_expectations() {
    let server = silent_server().await;
    let r = probe(
        &format!(
            "{{host: 127.0.0.1, port: {}, send: hello}}",
            server.addr.port()
        ),
        "",
        "2s",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
    assert!(r.phase(Phase::FirstByte).is_none(), "{:?}", r.phases);
}

#[tokio::test]
async fn a_server_that_never_replies_times_out_at_the_bound() {
    let server = silent_server().await;
    let r = probe(
        &format!(
            "{{host: 127.0.0.1, port: {}, send: 'HELLO\\n'}}",
            server.addr.port()
        ),
        "{reply_contains: HI}",
        "1s",
    )
    .await;
    assert_timed_out_at_1s(&r, "timeout while waiting for first byte");
}

/// (tcp section and expect, key of the first error, its line, words in its message)
const BAD: &[(&str, &str, usize, &str)] = &[
    (
        "    tcp: {port: 80}\n",
        "probes[0].tcp",
        3,
        "missing required key `host`",
    ),
    (
        "    tcp: {host: x.test}\n",
        "probes[0].tcp",
        3,
        "missing required key `port`",
    ),
    (
        "    tcp:\n      host: x.test\n      port: 70000\n",
        "probes[0].tcp.port",
        5,
        "out of range",
    ),
    (
        "    tcp:\n      host: x.test\n      port: http\n",
        "probes[0].tcp.port",
        5,
        "expected a whole number",
    ),
    (
        "    tcp:\n      host: 'tcp://x.test'\n      port: 80\n",
        "probes[0].tcp.host",
        4,
        "is a URL",
    ),
    (
        "    tcp:\n      host: x.test\n      port: 80\n      send: 'A\\q'\n",
        "probes[0].tcp.send",
        6,
        "unknown escape `\\q`",
    ),
    (
        "    tcp:\n      host: x.test\n      port: 80\n      read_bytes: 0\n",
        "probes[0].tcp.read_bytes",
        6,
        "must be between 1 and",
    ),
    (
        "    tcp:\n      host: x.test\n      port: 80\n      sned: x\n",
        "probes[0].tcp.sned",
        6,
        "did you mean `send`?",
    ),
    (
        "    tcp: {host: x.test, port: 80}\n    expect:\n      reply_matches: '(unclosed'\n",
        "probes[0].expect.reply_matches",
        5,
        "invalid regex `(unclosed`",
    ),
    (
        "    tcp: {host: x.test, port: 80}\n    expect:\n      reply_contains: 'A\\x4'\n",
        "probes[0].expect.reply_contains",
        5,
        "two hex digits",
    ),
];

#[test]
fn bad_tcp_configuration_is_reported_with_line_and_key() {
    assert_first_error(BAD);
}
