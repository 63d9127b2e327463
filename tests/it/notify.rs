//! Integration tests: notifiers against real receivers: email to aiosmtpd
//! (plain, STARTTLS + AUTH, refusals, down then back), Slack and generic
//! webhooks to an in-process HTTP recorder, and `lookout notify-test`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use lookout::config::Notifier;
use lookout::notify::{self, Notice, NoticeKind, SendOptions};
use lookout::result::{Failure, FailureClass};
use sha2::Sha256;

use crate::harness::recorder::{Answer, Recorder};
use crate::harness::smtp_server::SmtpServer;
use crate::harness::targets::TestCa;

const SECRET: &str = "hunter2-notify-secret";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn notice(kind: NoticeKind) -> Notice {
    let since = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    Notice {
        kind,
        probe: "checkout-api".into(),
        state: if kind == NoticeKind::Resolved {
            "up"
        } else {
            "down"
        }
        .into(),
        probe_kind: "http".into(),
        target: "GET https://shop.example/health".into(),
        since,
        down_for: Some(Duration::from_secs(720)),
        first_failure: Some(Failure {
            class: FailureClass::Timeout,
            message: "no answer within 5s".into(),
        }),
        last_failure: Some(Failure {
            class: FailureClass::Connect,
            message: "connection refused by 10.0.0.7:443".into(),
        }),
        last_latency: Some(Duration::from_millis(5000)),
        streak: 3,
        dependents: vec!["cart".into()],
        incident: Some(42),
        link: Some("https://lookout.example/probes/checkout-api".into()),
        labels: BTreeMap::new(),
        at: since,
        incident_kind: Default::default(),
        reason: None,
        changes: Vec::new(),
        trace_id: None,
        trace_url: None,
    }
}

fn email(url: String) -> Notifier {
    Notifier::Email {
        smtp: url,
        from: "Lookout <lookout@example.com>".into(),
        to: vec!["ops@example.com".into(), "oncall@example.com".into()],
        ca: None,
    }
}

fn slack(url: String) -> Notifier {
    Notifier::Slack { webhook: url }
}

#[test]
fn email_over_starttls_with_auth_carries_everything_in_both_parts() {
    let ca = TestCa::new();
    let server = SmtpServer::builder()
        .starttls(&ca)
        .auth("alice", "s3cret-pw")
        .start();
    let opts = SendOptions::with_ca_pem(&ca.pem).expect("CA");
    let url = format!(
        "smtp://alice:s3cret-pw@127.0.0.1:{}?tls=required",
        server.port
    );
    let answer = rt()
        .block_on(notify::send_with(
            &email(url),
            &notice(NoticeKind::Opened),
            &opts,
        ))
        .expect("delivered");
    assert!(answer.starts_with("250 "), "{answer}");
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1, "{}", server.server_log());
    let m = &msgs[0];
    assert!(m.tls() && m.authenticated());
    assert_eq!(m.mail_from(), "lookout@example.com");
    assert_eq!(m.rcpt_tos(), ["ops@example.com", "oncall@example.com"]);
    assert_eq!(
        m.header("from").as_deref(),
        Some("Lookout <lookout@example.com>")
    );
    assert_eq!(
        m.header("to").as_deref(),
        Some("ops@example.com, oncall@example.com")
    );
    assert_eq!(
        m.header("subject").as_deref(),
        Some("[Lookout] DOWN checkout-api: connect")
    );
    assert_eq!(
        m.header("message-id").as_deref(),
        Some("<lookout.42.opened@example.com>")
    );
    assert_eq!(m.content_type(), "multipart/alternative");
    let text = m.part("text/plain").expect("a text part");
    let html = m.part("text/html").expect("an HTML part");
    for body in [&text, &html] {
        for want in [
            "checkout-api",
            "timeout",
            "no answer within 5s",
            "connection refused by 10.0.0.7:443",
            "https://lookout.example/probes/checkout-api",
            "cart",
        ] {
            assert!(body.contains(want), "`{want}` missing from:\n{body}");
        }
    }
}

#[test]
fn email_through_a_plain_local_relay() {
    let server = SmtpServer::plain();
    let url = format!("smtp://127.0.0.1:{}", server.port);
    let answer = rt()
        .block_on(notify::send(&email(url), &notice(NoticeKind::Resolved)))
        .expect("delivered");
    assert!(answer.contains("queued"), "{answer}");
    let m = &server.messages()[0];
    assert!(!m.tls());
    assert_eq!(
        m.header("subject").as_deref(),
        Some("[Lookout] RESOLVED checkout-api after 12m")
    );
    assert_eq!(
        m.header("in-reply-to").as_deref(),
        Some("<lookout.42.opened@example.com>")
    );
}

#[test]
fn email_wrong_password_is_permanent() {
    let ca = TestCa::new();
    let server = SmtpServer::builder()
        .starttls(&ca)
        .auth("alice", "right")
        .start();
    let opts = SendOptions::with_ca_pem(&ca.pem).expect("CA");
    let url = format!(
        "smtp://alice:wrong-pw@127.0.0.1:{}?tls=required",
        server.port
    );
    let err = rt()
        .block_on(notify::send_with(
            &email(url),
            &notice(NoticeKind::Opened),
            &opts,
        ))
        .expect_err("refused");
    assert!(err.permanent, "{err:?}");
    assert!(err.message.contains("535"), "{err:?}");
    assert!(!err.message.contains("wrong-pw"), "{err:?}");
    assert!(server.messages().is_empty());
}

#[test]
fn email_untrusted_certificate_is_transient_tls_error() {
    let server = SmtpServer::builder().starttls(&TestCa::new()).start();
    let url = format!("smtp://127.0.0.1:{}?tls=required", server.port);
    let err = rt()
        .block_on(notify::send(&email(url), &notice(NoticeKind::Opened)))
        .expect_err("untrusted");
    assert!(!err.permanent, "{err:?}");
    assert!(
        err.message
            .starts_with("TLS failed: invalid peer certificate: UnknownIssuer"),
        "{err:?}"
    );
}

#[test]
fn email_550_is_permanent_and_451_transient() {
    let server = SmtpServer::plain();
    let url = format!("smtp://127.0.0.1:{}", server.port);
    let rt = rt();
    server.reply_next("550 5.1.1 mailbox unavailable");
    let err = rt
        .block_on(notify::send(
            &email(url.clone()),
            &notice(NoticeKind::Opened),
        ))
        .expect_err("550");
    assert!(err.permanent, "{err:?}");
    assert!(
        err.message.contains("550") && err.message.contains("mailbox unavailable"),
        "{err:?}"
    );
    server.reply_next("451 4.3.0 try again later");
    let err = rt
        .block_on(notify::send(&email(url), &notice(NoticeKind::Opened)))
        .expect_err("451");
    assert!(!err.permanent, "{err:?}");
    assert!(err.message.contains("451"), "{err:?}");
    assert!(server.messages().is_empty());
}

#[test]
fn email_server_down_is_transient_then_delivers_when_back() {
    let mut server = SmtpServer::plain();
    let url = format!("smtp://127.0.0.1:{}", server.port);
    let rt = rt();
    server.stop();
    let err = rt
        .block_on(notify::send(
            &email(url.clone()),
            &notice(NoticeKind::Opened),
        ))
        .expect_err("down");
    assert!(!err.permanent, "{err:?}");
    assert_eq!(err.retry_after, None);
    server.start();
    rt.block_on(notify::send(&email(url), &notice(NoticeKind::Opened)))
        .expect("delivered once back");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_message_has_blocks_and_colour_by_state() {
    let rec = Recorder::start().await;
    let n = slack(rec.url("/services/T/B/X"));
    let answer = notify::send(&n, &notice(NoticeKind::Opened))
        .await
        .expect("sent");
    assert_eq!(answer, "HTTP 200: ok");
    notify::send(&n, &notice(NoticeKind::Resolved))
        .await
        .expect("sent");
    notify::send(&n, &Notice::test("ops", None))
        .await
        .expect("sent");
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/services/T/B/X");
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    let colours: Vec<String> = reqs
        .iter()
        .map(|r| {
            r.json()["attachments"][0]["color"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(colours, ["#d93025", "#2e7d32", "#9e9e9e"]);
    let v = reqs[0].json();
    assert_eq!(v["blocks"][0]["type"], "header");
    assert!(v["text"]
        .as_str()
        .unwrap_or("")
        .contains("checkout-api is DOWN"));
    let body = reqs[0].text();
    for want in [
        "*State*",
        "*Down for*",
        "*Class*",
        "*Last latency*",
        "*Streak*",
        "cart",
        "no answer within 5s",
        "\"button\"",
        "https://lookout.example/probes/checkout-api",
    ] {
        assert!(body.contains(want), "`{want}` missing from {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_answers_are_classified() {
    let rec = Recorder::start().await;
    let n = slack(rec.url("/hook"));
    let opened = notice(NoticeKind::Opened);
    rec.push(Answer::status(500, "oops"));
    let e = notify::send(&n, &opened).await.expect_err("500");
    assert!(!e.permanent && e.retry_after.is_none(), "{e:?}");
    assert!(e.message.contains("HTTP 500: oops"), "{e:?}");
    rec.push(Answer::status(429, "rate_limited").header("Retry-After", "7"));
    let e = notify::send(&n, &opened).await.expect_err("429");
    assert!(!e.permanent, "{e:?}");
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    rec.push(Answer::status(404, "no_service"));
    let e = notify::send(&n, &opened).await.expect_err("404");
    assert!(e.permanent, "{e:?}");
    assert!(e.message.contains("no_service"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_is_transient_within_the_bound() {
    let rec = Recorder::start().await;
    rec.push(Answer::Hang);
    let opts = SendOptions {
        timeout: Duration::from_secs(1),
        ..SendOptions::default()
    };
    let started = Instant::now();
    let e = notify::send_with(&slack(rec.url("/hook")), &notice(NoticeKind::Opened), &opts)
        .await
        .expect_err("hangs");
    let took = started.elapsed();
    assert!(!e.permanent, "{e:?}");
    assert!(e.message.contains("no answer within 1s"), "{e:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(notify::DEFAULT_TIMEOUT, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_transient() {
    let port = crate::harness::process::free_port();
    let e = notify::send(
        &slack(format!("http://127.0.0.1:{port}/hook")),
        &notice(NoticeKind::Opened),
    )
    .await
    .expect_err("refused");
    assert!(!e.permanent, "{e:?}");
    assert!(e.message.starts_with("cannot connect"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_body_is_the_notice_signed_with_the_secret() {
    let rec = Recorder::start().await;
    let n = Notifier::Webhook {
        url: rec.url("/lookout?team=shop"),
        headers: BTreeMap::from([
            ("X-Team".to_string(), "shop".to_string()),
            ("Authorization".to_string(), "Bearer abc".to_string()),
        ]),
        secret: Some("whsec-1234".into()),
        ca: None,
    };
    let sent = notice(NoticeKind::Reminder);
    let answer = notify::send(&n, &sent).await.expect("sent");
    assert_eq!(answer, "HTTP 200: ok");
    let r = rec.only_request();
    assert_eq!(r.path, "/lookout?team=shop");
    let back: Notice = serde_json::from_slice(&r.body).expect("the body is a Notice");
    assert_eq!(back, sent);
    assert_eq!(r.header("x-team"), Some("shop"));
    assert_eq!(r.header("authorization"), Some("Bearer abc"));
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec-1234").expect("key");
    mac.update(&r.body);
    let sig = r.header("x-lookout-signature").expect("signature header");
    let hex = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    mac.verify_slice(&bytes).expect("the signature verifies");
    let ts: i64 = r
        .header("x-lookout-timestamp")
        .expect("timestamp header")
        .parse()
        .expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    // Without a secret: no signature.
    let plain = Notifier::Webhook {
        url: rec.url("/plain"),
        headers: BTreeMap::new(),
        secret: None,
        ca: None,
    };
    notify::send(&plain, &sent).await.expect("sent");
    assert_eq!(rec.requests()[1].header("x-lookout-signature"), None);
}

#[test]
fn secrets_never_leave_in_any_notifier() {
    lookout::redact::register(SECRET);
    let mut n = notice(NoticeKind::Opened);
    n.last_failure = Some(Failure {
        class: FailureClass::Auth,
        message: format!("password {SECRET} refused for postgres://app:pw123@db/x"),
    });
    n.target = format!("postgres://app:{SECRET}@db:5432/app");
    let server = SmtpServer::plain();
    let rt = rt();
    rt.block_on(async {
        let rec = Recorder::start().await;
        notify::send(&email(format!("smtp://127.0.0.1:{}", server.port)), &n)
            .await
            .expect("email");
        notify::send(&slack(rec.url("/s")), &n)
            .await
            .expect("slack");
        let hook = Notifier::Webhook {
            url: rec.url("/w"),
            headers: BTreeMap::new(),
            secret: None,
            ca: None,
        };
        notify::send(&hook, &n).await.expect("webhook");
        let mut delivered: Vec<String> = rec.requests().iter().map(|r| r.text()).collect();
        delivered.push(server.messages()[0].raw().to_string());
        delivered.push(server.messages()[0].part("text/plain").unwrap_or_default());
        delivered.push(server.messages()[0].part("text/html").unwrap_or_default());
        for body in &delivered {
            assert!(!body.contains(SECRET), "secret in {body}");
            assert!(!body.contains("pw123"), "URL password in {body}");
            assert!(body.contains("***"), "nothing masked in {body}");
        }
    });
}

// `lookout notify-test`

fn write_config(dir: &std::path::Path, hook: &str) -> std::path::PathBuf {
    let path = dir.join("lookout.yaml");
    std::fs::write(
        &path,
        format!(
            "storage:\n  sqlite: data/lookout.db\nserver:\n  public_url: https://lookout.example\nnotifiers:\n  ops-hook:\n    webhook: {{ url: \"{hook}\" }}\nprobes:\n  - name: web\n    tcp: {{ host: 127.0.0.1, port: 9 }}\n    alert: {{ notify: [ops-hook] }}\n"
        ),
    )
    .expect("write config");
    path
}

async fn notify_test(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env_remove("LOOKOUT_CONFIG")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(config)
        .arg("notify-test")
        .args(args)
        .output()
        .await
        .expect("run lookout notify-test");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_prints_the_answer_or_the_error() {
    let rec = Recorder::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &rec.url("/hook"));

    let (code, out, err) = notify_test(&cfg, &["ops-hook"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ops-hook (webhook): delivered: HTTP 200: ok"),
        "{out}"
    );
    let sent: Notice = serde_json::from_slice(&rec.only_request().body).expect("a Notice");
    assert_eq!(sent.kind, NoticeKind::Test);
    assert_eq!(sent.link.as_deref(), Some("https://lookout.example"));

    rec.push(Answer::status(500, "receiver broke"));
    let (code, out, err) = notify_test(&cfg, &["ops-hook"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("HTTP 500: receiver broke"), "{out}");

    rec.push(Answer::status(503, "busy"));
    let (code, out, _) = notify_test(&cfg, &["--json", "ops-hook"]).await;
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["notifier"], "ops-hook");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "HTTP 503: busy");

    let (code, out, _) = notify_test(&cfg, &["--json", "ops-hook"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (v["ok"].clone(), v["answer"].clone()),
        (true.into(), "HTTP 200: ok".into())
    );

    let (code, _, err) = notify_test(&cfg, &["ops-hok"]).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("no notifier named `ops-hok`; did you mean `ops-hook`?"),
        "{err}"
    );
    assert_eq!(rec.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_ca_key_trusts_a_private_smtp_server() {
    let ca = TestCa::new();
    let server = SmtpServer::builder()
        .starttls(&ca)
        .auth("alice", "s3cret-pw")
        .start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write CA");
    let cfg = dir.path().join("lookout.yaml");
    let main = |with_ca: bool| {
        format!(
            "notifiers:\n  mail:\n    email:\n      smtp: \"smtp://alice:s3cret-pw@127.0.0.1:{}?tls=required\"\n      from: \"Lookout <lookout@example.com>\"\n      to: [ops@example.com]\n{}",
            server.port,
            if with_ca { "      ca: ca.pem\n" } else { "" }
        )
    };
    // Without the CA the private certificate is not trusted.
    std::fs::write(&cfg, main(false)).expect("write config");
    let (code, out, err) = notify_test(&cfg, &["mail"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(server.messages().is_empty());
    // With `ca:` (relative to the main file) it is, and the notice arrives.
    std::fs::write(&cfg, main(true)).expect("write config");
    let (code, out, err) = notify_test(&cfg, &["mail"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].tls() && msgs[0].authenticated());
    // A missing CA file is a configuration error naming the key.
    std::fs::write(&cfg, main(true).replace("ca.pem", "missing.pem")).expect("write config");
    let (code, _, err) = notify_test(&cfg, &["mail"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("notifiers.mail.email.ca"), "{err}");
}
