//! Integration tests: tls.
//!
//! The `tls` kind against in-process TLS servers with certificates made for
//! each test: trusted through a test CA, self-signed, expired, for the
//! wrong name, and a server limited to TLS 1.2.

use lookout::config::ProbeSpec;
use lookout::probe::run_once;
use lookout::result::{FailureClass, Phase, ProbeResult};
use serde_json::json;

use crate::harness::targets::{
    self, Behaviour, Reply, ServerCert, Target, TestCa, Validity, NAMES,
};
use crate::harness::{detail, diagnostics, message, probe_with};

fn probe(tls: &str, expect: &str, timeout: &str) -> ProbeSpec {
    probe_with("tls", tls, expect, timeout)
}

async fn run(tls: &str, expect: &str) -> ProbeResult {
    run_once(&probe(tls, expect, "2s")).await
}

/// A test CA written to a temporary folder, for `ca:`.
struct Pki {
    ca: TestCa,
    _dir: tempfile::TempDir,
    ca_file: String,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = ca.write_pem(dir.path()).display().to_string();
        Pki {
            ca,
            _dir: dir,
            ca_file,
        }
    }

    fn cert(&self, names: &[&str], validity: Validity) -> ServerCert {
        self.ca.issue(names, validity)
    }
}

async fn server(cert: &ServerCert) -> Target {
    targets::https(Behaviour::Respond(Reply::new(200)), cert).await
}

#[tokio::test]
async fn reports_the_certificate_version_and_cipher() {
    let pki = Pki::new();
    let validity = Validity::days_left(30);
    let target = server(&pki.cert(NAMES, validity)).await;
    let r = run(
        &format!(
            "{{host: 127.0.0.1, port: {}, ca: \"{}\"}}",
            target.port(),
            pki.ca_file
        ),
        "{certificate_expires_in: \"> 14d\", tls_version: \">= 1.2\"}",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(detail(&r, "tls_version"), json!("1.3"));
    assert!(
        detail(&r, "cipher_suite")
            .as_str()
            .is_some_and(|s| s.starts_with("TLS13_")),
        "{:?}",
        r.details
    );
    assert_eq!(detail(&r, "cert_subject"), json!("CN=lookout test server"));
    assert_eq!(detail(&r, "cert_issuer"), json!("CN=Lookout Test CA"));
    assert_eq!(
        detail(&r, "cert_not_after"),
        json!(validity.not_after_rfc3339())
    );
    let days = detail(&r, "cert_expires_in_days").as_i64().unwrap_or(-1);
    assert!((29..=30).contains(&days), "{days}");
    assert_eq!(detail(&r, "cert_sans"), json!(["localhost", "127.0.0.1"]));
    assert!(
        r.phase(Phase::Connect).is_some() && r.phase(Phase::Tls).is_some(),
        "{:?}",
        r.phases
    );
    assert!(
        r.phase(Phase::Dns).is_none(),
        "an IP literal needs no DNS: {:?}",
        r.phases
    );
    assert_eq!(r.checks.len(), 2, "{:?}", r.checks);
}

#[tokio::test]
async fn a_host_name_is_resolved_and_verified() {
    let pki = Pki::new();
    let target = server(&pki.cert(&["localhost"], Validity::days_left(30))).await;
    let r = run(
        &format!(
            "{{host: localhost, port: {}, ca: \"{}\"}}",
            target.port(),
            pki.ca_file
        ),
        "",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
    assert!(r.phase(Phase::Dns).is_some(), "{:?}", r.phases);

    // Connecting by address but verifying the name on the certificate.
    let r = run(
        &format!(
            "{{host: 127.0.0.1, port: {}, server_name: localhost, ca: \"{}\"}}",
            target.port(),
            pki.ca_file
        ),
        "",
    )
    .await;
    assert!(r.success, "{:?}", r.failure);
}

#[tokio::test]
async fn certificate_expires_in_passes_and_fails() {
    let pki = Pki::new();
    let target = server(&pki.cert(NAMES, Validity::days_left(10))).await;
    let tls = format!(
        "{{host: 127.0.0.1, port: {}, ca: \"{}\"}}",
        target.port(),
        pki.ca_file
    );
    let r = run(&tls, "{certificate_expires_in: \"> 5d\"}").await;
    assert!(r.success, "{:?}", r.failure);
    let r = run(&tls, "{certificate_expires_in: \"> 14d\"}").await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert!(
        message(&r).starts_with("expected certificate_expires_in > 14d, got 9."),
        "{}",
        message(&r)
    );
}

#[tokio::test]
async fn untrusted_expired_and_misnamed_certificates_fail_as_tls() {
    let pki = Pki::new();
    let self_signed = server(&targets::self_signed(NAMES)).await;
    let expired = server(&pki.cert(NAMES, Validity::expired())).await;
    let misnamed = server(&pki.cert(&["other.example"], Validity::days_left(30))).await;
    let table: &[(&Target, bool, String)] = &[
        (&self_signed, false, "certificate is not trusted (self-signed or unknown issuer): `CN=lookout self-signed` is self-signed".into()),
        (&expired, true, "certificate has expired (not valid after 2001-01-01T00:00:00Z)".into()),
        (&misnamed, true, "certificate is not valid for name 127.0.0.1 (it is valid for: other.example)".into()),
    ];
    for (target, with_ca, reason) in table {
        let ca = if *with_ca {
            format!(", ca: \"{}\"", pki.ca_file)
        } else {
            String::new()
        };
        let r = run(
            &format!("{{host: 127.0.0.1, port: {}{ca}}}", target.port()),
            "",
        )
        .await;
        assert_eq!(r.class(), Some(FailureClass::Tls), "{:?}", r.failure);
        assert_eq!(
            message(&r),
            format!("127.0.0.1:{}: {reason}", target.port())
        );
        // The rejected certificate is still reported.
        assert!(detail(&r, "cert_subject").is_string(), "{:?}", r.details);
    }
}

#[tokio::test]
async fn insecure_skips_verification_but_still_reports() {
    let target = server(&targets::self_signed_with(
        &["other.example"],
        Validity::expired(),
    ))
    .await;
    let tls = format!(
        "{{host: 127.0.0.1, port: {}, insecure: true}}",
        target.port()
    );
    let r = run(&tls, "").await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(detail(&r, "cert_not_after"), json!("2001-01-01T00:00:00Z"));
    assert_eq!(detail(&r, "cert_subject"), json!("CN=lookout self-signed"));
    assert!(
        detail(&r, "cert_expires_in_days")
            .as_i64()
            .is_some_and(|d| d < -8000),
        "{:?}",
        r.details
    );

    let r = run(&tls, "{certificate_expires_in: \"> 1d\"}").await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert!(message(&r).contains("got expired "), "{}", message(&r));
}

#[tokio::test]
async fn tls_version_expectations() {
    let pki = Pki::new();
    let old = targets::https_tls12(
        Behaviour::Respond(Reply::new(200)),
        &pki.cert(NAMES, Validity::days_left(30)),
    )
    .await;
    let tls = format!(
        "{{host: 127.0.0.1, port: {}, ca: \"{}\"}}",
        old.port(),
        pki.ca_file
    );
    let r = run(&tls, "{tls_version: 1.2}").await;
    assert!(r.success, "{:?}", r.failure);
    assert!(
        detail(&r, "cipher_suite")
            .as_str()
            .is_some_and(|s| s.starts_with("TLS_ECDHE_")),
        "{:?}",
        r.details
    );
    let r = run(&tls, "{tls_version: \">= 1.3\"}").await;
    assert_eq!(r.class(), Some(FailureClass::Expectation));
    assert_eq!(message(&r), "expected tls_version >= 1.3, got 1.2");
}

#[tokio::test]
async fn silent_and_closed_ports() {
    let silent = targets::silent_tcp().await;
    let r = run_once(&probe(
        &format!("{{host: 127.0.0.1, port: {}}}", silent.port()),
        "",
        "500ms",
    ))
    .await;
    assert_eq!(r.class(), Some(FailureClass::Timeout));
    assert!(
        (500.0..550.0).contains(&(r.duration.as_secs_f64() * 1000.0)),
        "took {:?}",
        r.duration
    );
    assert!(
        message(&r).ends_with("while waiting for tls"),
        "{}",
        message(&r)
    );

    let addr = targets::closed_port().await;
    let r = run(&format!("{{host: 127.0.0.1, port: {}}}", addr.port()), "").await;
    assert_eq!(r.class(), Some(FailureClass::Connect));
    assert_eq!(message(&r), format!("connection refused by {addr}"));

    let plain = targets::http(Behaviour::Respond(Reply::new(200))).await;
    let r = run(&format!("{{host: 127.0.0.1, port: {}}}", plain.port()), "").await;
    assert_eq!(r.class(), Some(FailureClass::Tls));
    assert!(
        message(&r).contains("is this port speaking TLS?"),
        "{}",
        message(&r)
    );
}

#[test]
fn configuration_errors_name_the_line_and_key() {
    let table: &[(&str, &str)] = &[
        (
            "    tls: {port: 443}\n",
            "3 probes[0].tls: missing required key `host`",
        ),
        (
            "    tls:\n      hots: example.com\n",
            "4 probes[0].tls.hots: unknown key `hots`; did you mean `host`?",
        ),
        (
            "    tls:\n      host: example.com\n      port: 70000\n",
            "5 probes[0].tls.port: port 70000 is out of range",
        ),
        (
            "    tls:\n      host: https://example.com\n",
            "4 probes[0].tls.host: `https://example.com` is not a host name",
        ),
        (
            "    tls:\n      host: example.com\n      ca: missing.pem\n",
            "5 probes[0].tls.ca: cannot read CA file `./missing.pem`",
        ),
        (
            "    tls:\n      host: example.com\n      server_name: \"bad name!\"\n",
            "5 probes[0].tls.server_name: `bad name!` is not a valid TLS server name",
        ),
        (
            "    tls: {host: example.com}\n    expect:\n      tls_version: \"~ 1.3\"\n",
            "5 probes[0].expect.tls_version: invalid TLS version `~ 1.3`",
        ),
        (
            "    tls: {host: example.com}\n    expect:\n      certificate_expires_in: \"> 14x\"\n",
            "5 probes[0].expect.certificate_expires_in: invalid duration `14x`",
        ),
        (
            "    tls: {host: example.com}\n    expect:\n      status: 200\n",
            "5 probes[0].expect.status: unknown key `status`",
        ),
    ];
    for (probe, want) in table {
        let got = diagnostics(probe);
        assert!(
            got.iter().any(|d| d.starts_with(want)),
            "for:\n{probe}\nwant a diagnostic starting with:\n  {want}\ngot:\n  {got:#?}"
        );
    }
}
