//! In-process HTTP, TCP and TLS targets that behave well or badly on purpose.
//!
//! Each target listens on a fresh 127.0.0.1 port, speaks HTTP/1.1 as raw
//! bytes (so a misbehaviour is exactly what the test asked for), answers one
//! request per connection, and runs until the [`Target`] is dropped: dropping
//! it aborts the accept loop and, with it, every connection task.
//! Certificates for the TLS variants come from [`TestCa`] and
//! [`self_signed`] (rcgen, ring); [`ServerCert`] also writes them as PEM for
//! the servers the other harness modules start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use chrono::{Datelike, Utc};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The names every test server certificate is issued for, unless a test
/// asks for others.
pub const NAMES: &[&str] = &["localhost", "127.0.0.1"];
/// The interval at which [`Behaviour::Drip`] sends each byte.
pub const DRIP_EVERY: Duration = Duration::from_millis(100);

/// What a target does with each request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers with this reply (after its delay).
    Respond(Reply),
    /// Answers 200 with the raw request (head and body) as the body, so a
    /// test can see exactly what the probe sent.
    Echo,
    /// Reads the request and never answers, holding the connection open.
    Silent,
    /// Sends a head announcing a 1 MB body, then one byte every
    /// [`DRIP_EVERY`], forever.
    Drip,
    /// Sends 200 and an endless body; with `declare_length` the head claims
    /// 1 GiB, without it the body is delimited by closing the connection.
    Endless { declare_length: bool },
    /// Redirects `/loop/N` to `/loop/N+1`, forever.
    RedirectLoop,
    /// Redirects every request to this Location.
    RedirectTo(String),
    /// Writes these bytes and closes, whatever was asked.
    Raw(Vec<u8>),
}

/// A canned response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Time between reading the request and sending the response.
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// What a target has seen, shared with its connection tasks.
#[derive(Default)]
struct Stats {
    /// Requests read (for TLS targets: after a completed handshake).
    hits: AtomicUsize,
    /// Connections the client closed while the target was stalling or
    /// streaming ([`Behaviour::Silent`], [`Behaviour::Drip`],
    /// [`Behaviour::Endless`], [`silent_tcp`]).
    closed: watch::Sender<usize>,
}

impl Stats {
    fn peer_closed(&self) {
        self.closed.send_modify(|n| *n += 1);
    }
}

/// A running target. Dropping it stops the server and closes every
/// connection it holds.
pub struct Target {
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Target {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// How many requests (or, for TLS targets, completed handshakes that
    /// sent a request) the target has read so far.
    pub fn hits(&self) -> usize {
        self.stats.hits.load(Ordering::SeqCst)
    }

    /// Waits until the client has closed `n` stalled or streaming
    /// connections: proof that a run gave its socket back.
    pub async fn wait_closed(&self, n: usize) {
        let mut rx = self.stats.closed.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// A plain-HTTP target.
pub async fn http(behaviour: Behaviour) -> Target {
    let (listener, addr) = listen().await;
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    let task = tokio::spawn(accept_loop(listener, move |tcp| {
        let behaviour = behaviour.clone();
        let stats = shared.clone();
        async move { handle(tcp, behaviour, stats).await }
    }));
    Target { addr, stats, task }
}

/// A TLS target presenting `cert`, TLS 1.2 and 1.3.
pub async fn https(behaviour: Behaviour, cert: &ServerCert) -> Target {
    https_with(behaviour, cert, rustls::DEFAULT_VERSIONS).await
}

/// A TLS target that only speaks TLS 1.2.
pub async fn https_tls12(behaviour: Behaviour, cert: &ServerCert) -> Target {
    https_with(behaviour, cert, &[&rustls::version::TLS12]).await
}

async fn https_with(
    behaviour: Behaviour,
    cert: &ServerCert,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Target {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(cert.chain.clone(), cert.key())
    .expect("server certificate and key");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (listener, addr) = listen().await;
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    let task = tokio::spawn(accept_loop(listener, move |tcp| {
        let behaviour = behaviour.clone();
        let stats = shared.clone();
        let acceptor = acceptor.clone();
        async move {
            // A client that rejects the certificate ends the handshake; that
            // is the test passing, not a server error.
            if let Ok(tls) = acceptor.accept(tcp).await {
                handle(tls, behaviour, stats).await;
            }
        }
    }));
    Target { addr, stats, task }
}

/// Accepts forever, one task per connection, all owned by a `JoinSet` so
/// that aborting this loop aborts them too.
async fn accept_loop<F, Fut>(listener: TcpListener, on_conn: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(on_conn(tcp));
                }
                Err(_) => return,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A request as read off the wire.
struct Request {
    path: String,
    raw: Vec<u8>,
}

/// What arrived on a connection.
enum Incoming {
    Request(Request),
    /// Bytes that cannot start an HTTP request (e.g. a TLS ClientHello).
    NotHttp,
}

/// Reads one request head and its Content-Length body; `None` when the
/// client goes away first or sends more than 64 KiB of head.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<Incoming> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            return Some(Incoming::NotHttp);
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    Some(Incoming::Request(Request { path, raw: buf }))
}

fn head(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) {
    let mut all = headers.to_vec();
    all.push(("content-length".into(), body.len().to_string()));
    all.push(("connection".into(), "close".into()));
    let mut bytes = head(status, &all);
    bytes.extend_from_slice(body);
    if s.write_all(&bytes).await.is_ok() {
        let _ = s.shutdown().await;
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    behaviour: Behaviour,
    stats: Arc<Stats>,
) {
    let req = match read_request(&mut s).await {
        Some(Incoming::Request(req)) => req,
        // What a real HTTP server does with a TLS handshake or other noise.
        Some(Incoming::NotHttp) => return respond(&mut s, 400, &[], b"not HTTP").await,
        None => return,
    };
    stats.hits.fetch_add(1, Ordering::SeqCst);
    match behaviour {
        Behaviour::Respond(r) => {
            if !r.delay.is_zero() {
                tokio::time::sleep(r.delay).await;
            }
            respond(&mut s, r.status, &r.headers, &r.body).await;
        }
        Behaviour::Echo => {
            let ct = [("content-type".to_string(), "text/plain".to_string())];
            respond(&mut s, 200, &ct, &req.raw).await;
        }
        Behaviour::Silent => {
            read_until_closed(&mut s).await;
            stats.peer_closed();
        }
        Behaviour::Drip => {
            let h = head(200, &[("content-length".into(), "1000000".into())]);
            if s.write_all(&h).await.is_ok() {
                while s.write_all(b"x").await.is_ok() && s.flush().await.is_ok() {
                    tokio::time::sleep(DRIP_EVERY).await;
                }
            }
            stats.peer_closed();
        }
        Behaviour::Endless { declare_length } => {
            let headers: Vec<(String, String)> = if declare_length {
                vec![("content-length".into(), (1u64 << 30).to_string())]
            } else {
                vec![("connection".into(), "close".into())]
            };
            if s.write_all(&head(200, &headers)).await.is_ok() {
                let chunk = vec![b'a'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            }
            stats.peer_closed();
        }
        Behaviour::RedirectLoop => {
            let n: u64 = req
                .path
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let loc = [("location".to_string(), format!("/loop/{}", n + 1))];
            respond(&mut s, 302, &loc, b"").await;
        }
        Behaviour::RedirectTo(location) => {
            respond(&mut s, 302, &[("location".to_string(), location)], b"").await;
        }
        Behaviour::Raw(bytes) => {
            if s.write_all(&bytes).await.is_ok() {
                let _ = s.shutdown().await;
            }
        }
    }
}

/// A free loopback port with nothing listening on it (connections are refused).
pub async fn closed_port() -> SocketAddr {
    let (listener, addr) = listen().await;
    drop(listener);
    addr
}

/// A port that accepts TCP connections and never sends a byte, not even a
/// TLS handshake.
pub async fn silent_tcp() -> Target {
    let (listener, addr) = listen().await;
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    let task = tokio::spawn(accept_loop(listener, move |mut tcp| {
        let stats = shared.clone();
        async move {
            read_until_closed(&mut tcp).await;
            stats.peer_closed();
        }
    }));
    Target { addr, stats, task }
}

/// Reads and discards until the peer closes (or resets) the connection.
async fn read_until_closed<S: AsyncRead + Unpin>(s: &mut S) {
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// A server certificate chain and its key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl ServerCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The chain as PEM, leaf first: what a server's certificate file holds.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
    }

    /// The key as PEM (PKCS #8): what a server's key file holds.
    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_der)
    }
}

/// DER bytes as a PEM block with `label` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Validity of a test certificate, as calendar dates (UTC midnight).
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: (i32, u8, u8),
    pub not_after: (i32, u8, u8),
}

impl Validity {
    /// Valid from a year ago until `days` from today (midnight UTC).
    pub fn days_left(days: i64) -> Validity {
        Validity {
            not_before: ymd(Utc::now() - chrono::Duration::days(365)),
            not_after: ymd(Utc::now() + chrono::Duration::days(days)),
        }
    }

    /// Expired on 2001-01-01.
    pub fn expired() -> Validity {
        Validity {
            not_before: (2000, 1, 1),
            not_after: (2001, 1, 1),
        }
    }

    /// `not_after` as RFC 3339, the way probes report it.
    pub fn not_after_rfc3339(&self) -> String {
        let (y, m, d) = self.not_after;
        format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
    }

    fn apply(&self, params: &mut CertificateParams) {
        let (y, m, d) = self.not_before;
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = self.not_after;
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
}

fn ymd(t: chrono::DateTime<Utc>) -> (i32, u8, u8) {
    (t.year(), t.month() as u8, t.day() as u8)
}

fn leaf_params(cn: &str, names: &[&str], validity: Validity) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("certificate names");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    validity.apply(&mut params);
    params
}

/// A self-signed certificate for `names`, valid for another 90 days.
pub fn self_signed(names: &[&str]) -> ServerCert {
    self_signed_with(names, Validity::days_left(90))
}

/// A self-signed certificate for `names` with the given validity.
pub fn self_signed_with(names: &[&str], validity: Validity) -> ServerCert {
    let key = KeyPair::generate().expect("key pair");
    let cert = leaf_params("lookout self-signed", names, validity)
        .self_signed(&key)
        .expect("self-signed certificate");
    ServerCert {
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
    }
}

/// A throwaway certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    /// The CA certificate as PEM, what a `ca:` file holds.
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key pair");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Lookout Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (CN `lookout test server`) signed by this
    /// CA; the chain holds the leaf then the CA.
    pub fn issue(&self, names: &[&str], validity: Validity) -> ServerCert {
        let key = KeyPair::generate().expect("key pair");
        let cert = leaf_params("lookout test server", names, validity)
            .signed_by(&key, &self.issuer)
            .expect("signed certificate");
        ServerCert {
            chain: vec![cert.der().clone(), self.der.clone()],
            key_der: key.serialize_der(),
        }
    }

    /// Writes the CA's PEM into `dir` and returns the file's path.
    pub fn write_pem(&self, dir: &Path) -> std::path::PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.pem).expect("write CA file");
        path
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
