//! Integration tests: authentication and identification of `http` probes
//! (`auth: basic | bearer | api_key | oauth2`, mTLS client certificates,
//! `User-Agent`), against in-process servers that record what they got.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use lookout::probe::run_once;
use lookout::result::{FailureClass, Phase, ProbeResult};

use crate::harness::http_server::{assert_no_leak, json, ok, serve, Answer, Server};
use crate::harness::targets::{TestCa, Validity};
use crate::harness::{assert_failed, assert_first_error, detail, probe_with};

fn phase(r: &ProbeResult, p: Phase) -> bool {
    r.phases.iter().any(|(q, _)| *q == p)
}

/// An OAuth2 token endpoint that issues `tok-N-<nonce>` tokens living
/// `expires_in` seconds, checks the client's Basic credentials, and an API
/// that accepts only the tokens it issued and has not revoked.
struct Idp {
    token: Server,
    api: Server,
    issued: Arc<AtomicUsize>,
    valid: Arc<Mutex<HashSet<String>>>,
}

impl Idp {
    async fn start(client_id: &str, secret: &str, expires_in: u64) -> Idp {
        let issued = Arc::new(AtomicUsize::new(0));
        let valid: Arc<Mutex<HashSet<String>>> = Arc::default();
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"))
        );
        let (n, v) = (issued.clone(), valid.clone());
        let token = serve(None, move |req| {
            if req.header("authorization") != Some(want.as_str())
                || !req.body.contains("grant_type=client_credentials")
            {
                return json(401, serde_json::json!({"error": "invalid_client"}));
            }
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            let tok = format!("tok-{i}-a8f3e1c9d2");
            v.lock().unwrap().insert(tok.clone());
            json(
                200,
                serde_json::json!({"access_token": tok, "token_type": "Bearer", "expires_in": expires_in}),
            )
        })
        .await;
        let v = valid.clone();
        let api = serve(None, move |req| {
            let ok_token = req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| v.lock().unwrap().contains(t));
            if ok_token {
                ok()
            } else {
                (401, "text/plain", "who are you".into())
            }
        })
        .await;
        Idp {
            token,
            api,
            issued,
            valid,
        }
    }

    fn count(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    fn probe(&self, client_id: &str, secret: &str) -> lookout::config::ProbeSpec {
        probe_with(
            "http",
            &format!(
                "{{url: \"http://127.0.0.1:{}/data\", auth: {{oauth2: {{token_url: \"http://127.0.0.1:{}/oauth/token\", client_id: {client_id}, client_secret: \"{secret}\", scopes: [read]}}}}}}",
                self.api.port, self.token.port
            ),
            "",
            "5s",
        )
    }
}

#[tokio::test]
async fn oauth2_token_is_fetched_once_reused_refreshed_after_expiry_and_after_a_401() {
    let secret = "client-secret-7q2w9e";
    let idp = Idp::start("cache-client", secret, 2).await;
    let spec = idp.probe("cache-client", secret);

    let first = run_once(&spec).await;
    assert!(first.success, "{:?}", first.failure);
    assert_eq!(idp.count(), 1);
    assert!(phase(&first, Phase::Auth), "{:?}", first.phases);
    assert_eq!(detail(&first, "auth_token"), "fetched");
    let fetched_at = tokio::time::Instant::now();
    let form = idp.token.last();
    assert_eq!(form.method, "POST");
    assert_eq!(form.target, "/oauth/token");
    assert!(form.body.contains("scope=read"), "{}", form.body);
    assert_eq!(
        form.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    // Reused while fresh: no new token request, no auth phase.
    let mut results = vec![first];
    for _ in 0..3 {
        let r = run_once(&spec).await;
        assert!(r.success, "{:?}", r.failure);
        assert_eq!(detail(&r, "auth_token"), "cached");
        assert!(!phase(&r, Phase::Auth));
        results.push(r);
    }
    assert_eq!(idp.count(), 1, "the token was reused");
    assert_eq!(idp.api.seen().len(), 4);

    // After expires_in (2 s) minus its margin (10%), a new one is fetched.
    tokio::time::sleep_until(fetched_at + Duration::from_millis(1800)).await;
    let r = run_once(&spec).await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(idp.count(), 2, "a fresh token after expiry");
    assert_eq!(detail(&r, "auth_token"), "fetched");
    results.push(r);

    // The API revokes the current token: that run fails as auth, the next
    // fetches a new token and passes.
    idp.valid.lock().unwrap().clear();
    let refused = run_once(&spec).await;
    assert_failed(&refused, FailureClass::Auth, "refused the credentials");
    assert_eq!(idp.count(), 2);
    let again = run_once(&spec).await;
    assert!(again.success, "{:?}", again.failure);
    assert_eq!(idp.count(), 3, "the 401 dropped the cached token");
    results.push(refused);
    results.push(again);

    let refs: Vec<&ProbeResult> = results.iter().collect();
    assert_no_leak(&refs, &[secret, "tok-1-", "tok-2-", "tok-3-", "a8f3e1c9d2"]);
}

#[tokio::test]
async fn probes_with_the_same_client_share_one_token() {
    let secret = "shared-secret-55x1";
    let idp = Idp::start("shared-client", secret, 3600).await;
    let a = idp.probe("shared-client", secret);
    let b = idp.probe("shared-client", secret);
    assert!(run_once(&a).await.success);
    let rb = run_once(&b).await;
    assert!(rb.success, "{:?}", rb.failure);
    assert_eq!(detail(&rb, "auth_token"), "cached");
    assert_eq!(idp.count(), 1);
}

#[tokio::test]
async fn a_wrong_client_secret_fails_as_auth_naming_the_endpoint() {
    let idp = Idp::start("wrong-client", "the-right-secret-1", 60).await;
    let spec = idp.probe("wrong-client", "the-wrong-secret-2");
    let r = run_once(&spec).await;
    let msg = assert_failed(&r, FailureClass::Auth, "OAuth2 token endpoint");
    assert!(
        msg.contains(&format!("127.0.0.1:{}/oauth/token", idp.token.port)),
        "{msg}"
    );
    assert!(
        msg.contains("401") && msg.contains("invalid_client"),
        "{msg}"
    );
    assert!(idp.api.seen().is_empty(), "no API request without a token");
    assert_no_leak(&[&r], &["the-wrong-secret-2"]);
}

#[tokio::test]
async fn token_endpoint_failures_fail_the_run_as_auth() {
    let secret = "failing-secret-3k8";
    let api = serve(None, |_| ok()).await;
    let cases: Vec<(Answer, &str)> = vec![
        (
            (500, "text/plain", format!("oops {secret}")),
            "answered 500 Internal Server Error",
        ),
        ((200, "application/json", "{not json".into()), "not JSON"),
        (
            json(
                200,
                serde_json::json!({"token_type": "bearer", "expires_in": 60}),
            ),
            "no access_token",
        ),
        (
            json(
                200,
                serde_json::json!({"access_token": "tok-mac-77aa11", "token_type": "mac"}),
            ),
            "`mac` is not supported",
        ),
    ];
    for (i, (reply, words)) in cases.into_iter().enumerate() {
        let token = serve(None, move |_| reply.clone()).await;
        let spec = probe_with(
            "http",
            &format!(
                "{{url: \"http://127.0.0.1:{}/\", auth: {{oauth2: {{token_url: \"http://127.0.0.1:{}/token\", client_id: fail-{i}, client_secret: \"{secret}\"}}}}}}",
                api.port, token.port
            ),
            "",
            "5s",
        );
        let r = run_once(&spec).await;
        let msg = assert_failed(&r, FailureClass::Auth, words);
        assert!(
            msg.contains(&format!("http://127.0.0.1:{}/token", token.port)),
            "{msg}"
        );
        assert!(phase(&r, Phase::Auth));
        assert_no_leak(&[&r], &[secret, "tok-mac-77aa11"]);
    }
    assert!(api.seen().is_empty());

    // Nothing listens at the token URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let spec = probe_with(
        "http",
        &format!(
            "{{url: \"http://127.0.0.1:{}/\", auth: {{oauth2: {{token_url: \"http://127.0.0.1:{closed}/token\", client_id: down, client_secret: \"{secret}\"}}}}}}",
            api.port
        ),
        "",
        "5s",
    );
    let r = run_once(&spec).await;
    let msg = assert_failed(&r, FailureClass::Auth, "connection refused");
    assert!(msg.contains(&format!("127.0.0.1:{closed}/token")), "{msg}");
}

#[tokio::test]
async fn oauth2_body_style_sends_credentials_scopes_and_audience_in_the_form() {
    let secret = "body-secret-9f8e7d";
    let token = serve(None, |_| {
        json(
            200,
            serde_json::json!({"access_token": "tok-body-c0ffee", "expires_in": 60}),
        )
    })
    .await;
    let api = serve(None, |_| ok()).await;
    let spec = probe_with(
        "http",
        &format!(
            "{{url: \"http://127.0.0.1:{}/\", user_agent: probe-ua/2, auth: {{oauth2: {{token_url: \"http://127.0.0.1:{}/t\", client_id: body-client, client_secret: \"{secret}\", scopes: [read, write], audience: \"https://api.example\", auth_style: body}}}}}}",
            api.port, token.port
        ),
        "",
        "5s",
    );
    let r = run_once(&spec).await;
    assert!(r.success, "{:?}", r.failure);
    let t = token.last();
    assert_eq!(t.header("authorization"), None);
    assert_eq!(
        t.body,
        format!("grant_type=client_credentials&scope=read+write&audience=https%3A%2F%2Fapi.example&client_id=body-client&client_secret={secret}")
    );
    assert_eq!(t.header("user-agent"), Some("probe-ua/2"));
    assert_eq!(
        api.last().header("authorization"),
        Some("Bearer tok-body-c0ffee")
    );
    assert_no_leak(&[&r], &[secret, "tok-body-c0ffee"]);
}

#[tokio::test]
async fn basic_bearer_and_api_keys_reach_the_server_and_stay_out_of_results() {
    let server = serve(None, |req| {
        if req.target.contains("fail") {
            (401, "text/plain", "no".into())
        } else {
            ok()
        }
    })
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", server.port);
    let b64 = base64::engine::general_purpose::STANDARD.encode("monitor:basic-pw-4u8i");
    let cases: Vec<(String, &str, String, &str)> = vec![
        (
            "{basic: {username: monitor, password: \"basic-pw-4u8i\"}}".into(),
            "authorization",
            format!("Basic {b64}"),
            "basic-pw-4u8i",
        ),
        (
            "{bearer: \"bearer-tok-6y7t\"}".into(),
            "authorization",
            "Bearer bearer-tok-6y7t".into(),
            "bearer-tok-6y7t",
        ),
        (
            "{api_key: {header: X-Api-Key, value: \"hdr-key-3e4r\"}}".into(),
            "x-api-key",
            "hdr-key-3e4r".into(),
            "hdr-key-3e4r",
        ),
    ];
    for (auth, header, want, secret) in &cases {
        for path in ["/ok", "/fail"] {
            let r = run_once(&probe_with(
                "http",
                &format!("{{url: \"{}\", auth: {auth}}}", url(path)),
                "",
                "5s",
            ))
            .await;
            assert_eq!(server.last().header(header), Some(want.as_str()), "{auth}");
            if path == "/ok" {
                assert!(r.success, "{auth}: {:?}", r.failure);
            } else {
                assert_failed(&r, FailureClass::Auth, "refused the credentials");
            }
            assert_no_leak(&[&r], &[secret, &b64]);
        }
    }

    // A query API key is added to the request, never to the URL shown.
    for path in ["/ok?x=1", "/fail?x=1"] {
        let spec = probe_with(
            "http",
            &format!(
                "{{url: \"{}\", auth: {{api_key: {{query: api_key, value: \"q-key-9o0p&\"}}}}}}",
                url(path)
            ),
            "",
            "5s",
        );
        assert!(!spec.kind.target().contains("q-key"));
        let r = run_once(&spec).await;
        let seen = server.last();
        assert!(
            seen.target.ends_with("?x=1&api_key=q-key-9o0p%26"),
            "{}",
            seen.target
        );
        assert_eq!(detail(&r, "final_url"), url(path).as_str());
        assert_no_leak(&[&r], &["q-key-9o0p"]);
    }
}

#[tokio::test]
async fn user_agent_is_lookout_by_default_and_can_be_set() {
    let server = serve(None, |_| ok()).await;
    let url = format!("http://127.0.0.1:{}/", server.port);
    let default = concat!("Lookout/", env!("CARGO_PKG_VERSION"));
    for (section, want) in [
        (format!("{{url: \"{url}\"}}"), default),
        (
            format!("{{url: \"{url}\", user_agent: \"acme-monitor/1.0\"}}"),
            "acme-monitor/1.0",
        ),
        (
            format!("{{url: \"{url}\", headers: {{User-Agent: from-headers/3}}}}"),
            "from-headers/3",
        ),
    ] {
        let r = run_once(&probe_with("http", &section, "", "5s")).await;
        assert!(r.success, "{:?}", r.failure);
        assert_eq!(server.last().header("user-agent"), Some(want), "{section}");
    }

    // The token request sends the default too.
    let token = serve(None, |_| {
        json(
            200,
            serde_json::json!({"access_token": "tok-ua-1a2b3c", "expires_in": 60}),
        )
    })
    .await;
    let spec = probe_with(
        "http",
        &format!("{{url: \"{url}\", auth: {{oauth2: {{token_url: \"http://127.0.0.1:{}/t\", client_id: ua-client, client_secret: ua-secret-5t6y}}}}}}", token.port),
        "",
        "5s",
    );
    assert!(run_once(&spec).await.success);
    assert_eq!(token.last().header("user-agent"), Some(default));
}

/// A TLS server whose certificate is issued by `ca` and that requires a
/// client certificate issued by `client_ca`.
fn mtls_config(ca: &TestCa, client_ca: &TestCa) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ca.issue(&["127.0.0.1", "localhost"], Validity::days_left(30));
    let mut roots = rustls::RootCertStore::empty();
    let client_ca_der = rustls::pki_types::CertificateDer::from_pem_slice(client_ca.pem.as_bytes())
        .expect("client CA");
    roots.add(client_ca_der).expect("client CA root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(server.chain.clone(), server.key())
            .expect("server cert"),
    )
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn mtls_client_certificate_is_presented_and_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let ca_path = ca.write_pem(dir.path());
    let client = client_ca.issue(&["lookout.client"], Validity::days_left(30));
    let cert_path = dir.path().join("client.pem");
    let key_path = dir.path().join("client.key");
    std::fs::write(&cert_path, client.chain_pem()).expect("write");
    std::fs::write(&key_path, client.key_pem()).expect("write");

    let server = serve(Some(mtls_config(&ca, &client_ca)), |_| ok()).await;
    let url = format!("https://127.0.0.1:{}/", server.port);
    let with = probe_with(
        "http",
        &format!(
            "{{url: \"{url}\", ca: \"{}\", tls: {{client_cert: \"{}\", client_key: \"{}\"}}}}",
            ca_path.display(),
            cert_path.display(),
            key_path.display()
        ),
        "",
        "5s",
    );
    let r = run_once(&with).await;
    assert!(r.success, "{:?}", r.failure);
    assert_eq!(server.seen().len(), 1);

    let without = probe_with(
        "http",
        &format!("{{url: \"{url}\", ca: \"{}\"}}", ca_path.display()),
        "",
        "5s",
    );
    let r = run_once(&without).await;
    let msg = assert_failed(&r, FailureClass::Tls, "");
    assert!(msg.contains("client certificate"), "{msg}");
    assert_eq!(server.seen().len(), 1, "no request got through");

    // A certificate from another CA is refused as well.
    let other = TestCa::new().issue(&["lookout.client"], Validity::days_left(30));
    std::fs::write(&cert_path, other.chain_pem()).expect("write");
    std::fs::write(&key_path, other.key_pem()).expect("write");
    let wrong = probe_with(
        "http",
        &format!(
            "{{url: \"{url}\", ca: \"{}\", tls: {{client_cert: \"{}\", client_key: \"{}\"}}}}",
            ca_path.display(),
            cert_path.display(),
            key_path.display()
        ),
        "",
        "5s",
    );
    assert_failed(&run_once(&wrong).await, FailureClass::Tls, "");
}

#[test]
fn auth_and_client_certificate_errors_name_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TestCa::new().issue(&["a.client"], Validity::days_left(30));
    let b = TestCa::new().issue(&["b.client"], Validity::days_left(30));
    let cert = dir.path().join("a.pem");
    let other_key = dir.path().join("b.key");
    let not_pem = dir.path().join("empty.pem");
    std::fs::write(&cert, a.chain_pem()).expect("write");
    std::fs::write(&other_key, b.key_pem()).expect("write");
    std::fs::write(&not_pem, "nothing here\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let tls = |c: &std::path::Path, k: &std::path::Path| {
        format!(
            "    http:\n      url: https://x/\n      tls:\n        client_cert: \"{}\"\n        client_key: \"{}\"\n",
            c.display(),
            k.display()
        )
    };
    let unreadable = tls(&missing, &other_key);
    let no_cert = tls(&not_pem, &other_key);
    let mismatch = tls(&cert, &other_key);
    let table: Vec<(&str, &str, usize, &str)> = vec![
        (
            "    http:\n      url: http://x/\n      auth:\n        basic: {username: u, password: pw12}\n        bearer: tok\n",
            "probes[0].http.auth",
            6,
            "exactly one kind of auth, not `basic` and `bearer`",
        ),
        (
            "    http:\n      url: http://x/\n      auth:\n        api_key: {header: X-Key, query: key, value: k123}\n",
            "probes[0].http.auth.api_key",
            6,
            "either `header` or `query`, not both",
        ),
        (
            "    http:\n      url: http://x/\n      auth:\n        api_key: {value: k123}\n",
            "probes[0].http.auth.api_key",
            6,
            "give `header`",
        ),
        (
            "    http:\n      url: http://x/\n      auth:\n        oauth2:\n          token_url: https://idp/t\n          client_secret: s3cr3t\n",
            "probes[0].http.auth.oauth2",
            7,
            "missing required key `client_id`",
        ),
        (
            "    http:\n      url: http://x/\n      auth:\n        oauth2:\n          token_url: ftp://idp/t\n          client_id: c\n          client_secret: s3cr3t\n",
            "probes[0].http.auth.oauth2.token_url",
            7,
            "scheme `ftp`",
        ),
        (
            "    http:\n      url: http://x/\n      auth:\n        oauth2:\n          token_url: https://idp/t\n          client_id: c\n          client_secret: s3cr3t\n          auth_style: header\n",
            "probes[0].http.auth.oauth2.auth_style",
            10,
            "unknown auth_style `header`",
        ),
        (
            "    http:\n      url: http://x/\n      bearer_token: abcd\n      auth:\n        bearer: efgh\n",
            "probes[0].http.auth",
            7,
            "either `auth` or `bearer_token`",
        ),
        (
            "    http:\n      url: http://x/\n      auth:\n        bearr: efgh\n",
            "probes[0].http.auth.bearr",
            6,
            "did you mean `bearer`",
        ),
        (&unreadable, "probes[0].http.tls.client_cert", 6, "cannot read client certificate"),
        (&no_cert, "probes[0].http.tls.client_cert", 6, "holds no certificate"),
        (&mismatch, "probes[0].http.tls.client_key", 7, "does not match the client certificate"),
    ];
    assert_first_error(&table);
}
