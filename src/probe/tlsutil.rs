//! TLS plumbing shared by the kinds that speak TLS (`http`, `tls`, `redis`,
//! `postgres`, and `mysql` for its CA files and error wording): reading the
//! `insecure` and `ca` keys, building rustls client configurations (system
//! roots, a custom CA, or no verification), running a handshake, and
//! reading the leaf certificate's subject and expiry.
//!
//! Loading the system's trust store is expensive, so the roots are loaded
//! once per process and each client configuration is cached per
//! (`insecure`, custom CA). Session resumption is disabled in every
//! configuration: each run does a full handshake, so the TLS time a probe
//! reports is what a new client would see. We use the ring provider only.
//!
//! This module never decides whether a run failed: it reports what the
//! handshake saw and describes certificate problems in words.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::read::{Cx, Map};
use crate::expect::DurationCmp;
use crate::probe::Trace;

/// How a kind wants the server's certificate checked.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Skip verification entirely; the certificate is still read and reported.
    pub insecure: bool,
    /// Extra trust anchors, added to the system roots.
    pub ca: Option<Arc<CustomCa>>,
    /// A client certificate and key to present when the server asks (mTLS).
    pub client: Option<Arc<ClientIdentity>>,
}

/// A client certificate chain and its private key (`tls.client_cert`,
/// `tls.client_key`), read and checked to match when the configuration is
/// compiled. `Debug` never shows the key.
pub struct ClientIdentity {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.certs == other.certs && self.key.secret_der() == other.key.secret_der()
    }
}

/// Reads a client certificate chain and its private key (PEM) and checks
/// that the key belongs to the first certificate. Errors name the file and
/// never quote the key. Returns the message and whether it is about the key
/// file (`true`) or the certificate file (`false`).
pub fn load_client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, (bool, String)> {
    let shown = cert.display();
    let bytes = std::fs::read(cert).map_err(|e| {
        (
            false,
            format!("cannot read client certificate `{shown}`: {e}"),
        )
    })?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(c) => certs.push(c),
            Err(e) => {
                return Err((
                    false,
                    format!("client certificate `{shown}` is not valid PEM: {e}"),
                ))
            }
        }
    }
    if certs.is_empty() {
        return Err((
            false,
            format!(
                "client certificate `{shown}` holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)"
            ),
        ));
    }
    let kshown = key.display();
    let kbytes = std::fs::read(key)
        .map_err(|e| (true, format!("cannot read client key `{kshown}`: {e}")))?;
    let private = PrivateKeyDer::from_pem_slice(&kbytes).map_err(|_| {
        (
            true,
            format!(
                "client key `{kshown}` holds no private key (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)"
            ),
        )
    })?;
    let mismatch =
        || format!("client key `{kshown}` does not match the client certificate `{shown}`");
    let certified =
        rustls::sign::CertifiedKey::from_der(certs.clone(), private.clone_key(), &provider())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => (true, mismatch()),
                e => (true, format!("client key `{kshown}` cannot be used: {e}")),
            })?;
    certified.keys_match().map_err(|_| (true, mismatch()))?;
    Ok(ClientIdentity {
        cert_path: cert.to_path_buf(),
        key_path: key.to_path_buf(),
        certs,
        key: private,
    })
}

/// Keys accepted in a kind's `tls:` mapping.
pub const TLS_KEYS: &[&str] = &["client_cert", "client_key"];

/// Reads an optional `tls: { client_cert, client_key }` mapping of a kind's
/// section: `Some(None)` when absent, `None` when invalid (reported).
pub fn compile_client(cx: &mut Cx, m: &Map<'_>) -> Option<Option<Arc<ClientIdentity>>> {
    let Some(node) = m.get("tls") else {
        return Some(None);
    };
    let t = cx.map(node, &m.path("tls"), TLS_KEYS)?;
    let cert = t.required_str(cx, "client_cert");
    let key = t.required_str(cx, "client_key");
    let (cert, key) = (cert?, key?);
    let base = cx.base_dir.clone();
    let cert_path = crate::config::resolve_path(&base, cert.trim());
    let key_path = crate::config::resolve_path(&base, key.trim());
    match load_client_identity(&cert_path, &key_path) {
        Ok(id) => Some(Some(Arc::new(id))),
        Err((is_key, msg)) => {
            t.error_at(cx, if is_key { "client_key" } else { "client_cert" }, msg);
            None
        }
    }
}

/// A PEM file of CA certificates, read and checked when the configuration
/// is compiled.
#[derive(Debug, PartialEq)]
pub struct CustomCa {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

/// Reads a PEM file of CA certificates; the error says what is wrong in words.
pub fn load_ca(path: &Path) -> Result<CustomCa, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read CA file `{shown}`: {e}"))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(c) => certs.push(c),
            Err(e) => return Err(format!("CA file `{shown}` is not valid PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "CA file `{shown}` holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    let mut store = RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        store.add(c.clone()).map_err(|e| {
            format!(
                "certificate {} in CA file `{shown}` cannot be used as a CA: {e}",
                i + 1
            )
        })?;
    }
    Ok(CustomCa {
        path: path.to_path_buf(),
        certs,
    })
}

/// Reads the `insecure` and `ca` keys of a kind's section. Every problem is
/// reported; `None` means at least one was found.
pub fn compile_options(cx: &mut Cx, m: &Map<'_>) -> Option<TlsOptions> {
    let insecure = m.bool_or(cx, "insecure", false);
    let base = cx.base_dir.clone();
    let ca = m.parsed(cx, "ca", |text| match text.trim() {
        "" => Err("empty path".to_string()),
        t => load_ca(&crate::config::resolve_path(&base, t)).map(Arc::new),
    });
    if insecure == Some(true) && matches!(ca, Some(Some(_))) {
        if let Some(n) = m.get("ca") {
            cx.warning(
                &n.pos,
                &m.path("ca"),
                "`ca` has no effect with `insecure: true`",
            );
        }
    }
    Some(TlsOptions {
        insecure: insecure?,
        ca: ca?,
        client: None,
    })
}

/// Reads `certificate_expires_in` from an `expect:` mapping: `Some(None)`
/// when absent, `None` when invalid (reported).
pub fn compile_expiry(cx: &mut Cx, expect: Option<&Map<'_>>) -> Option<Option<DurationCmp>> {
    let Some(em) = expect else { return Some(None) };
    em.parsed(cx, "certificate_expires_in", DurationCmp::parse)
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust anchors, or webpki-roots' when the system has none.
/// Loaded once: reading and parsing the system store costs milliseconds.
/// Also used by the notifiers' HTTP client.
pub fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(native.certs);
        if store.is_empty() {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        store
    })
}

/// A cached client configuration and the verifier inside it, so a run can
/// wrap the verifier to see the certificate even when verification fails.
#[derive(Debug)]
pub struct BaseConfig {
    config: Arc<ClientConfig>,
    verifier: Arc<dyn ServerCertVerifier>,
}

type CacheKey = (bool, Vec<Vec<u8>>, Option<(Vec<Vec<u8>>, Vec<u8>)>);
/// Configurations are few (one per distinct CA); the bound only guards
/// against a reload loop with ever-changing CA files.
const CACHE_LIMIT: usize = 64;

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<BaseConfig>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<BaseConfig>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cache_key(opts: &TlsOptions) -> CacheKey {
    let ca = match (&opts.ca, opts.insecure) {
        (Some(ca), false) => ca.certs.iter().map(|c| c.as_ref().to_vec()).collect(),
        _ => Vec::new(),
    };
    let client = opts.client.as_ref().map(|c| {
        (
            c.certs.iter().map(|c| c.as_ref().to_vec()).collect(),
            c.key.secret_der().to_vec(),
        )
    });
    (opts.insecure, ca, client)
}

fn build_base(opts: &TlsOptions) -> Result<BaseConfig, String> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if opts.insecure {
        Arc::new(InsecureVerifier {
            provider: provider.clone(),
        })
    } else {
        let mut roots = system_roots().clone();
        if let Some(ca) = &opts.ca {
            for c in &ca.certs {
                roots
                    .add(c.clone())
                    .map_err(|e| format!("CA file `{}`: {e}", ca.path.display()))?;
            }
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("cannot build the certificate verifier: {e}"))?
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot build the TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let mut config = match &opts.client {
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .map_err(|e| {
                format!(
                    "client certificate `{}` cannot be used: {e}",
                    id.cert_path.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(BaseConfig {
        config: Arc::new(config),
        verifier,
    })
}

/// The cached configuration for `opts`, built on first use. Building reads
/// the system trust store, so it runs on the blocking pool, never on the
/// probing path's worker threads.
pub async fn base_config(opts: &TlsOptions) -> Result<Arc<BaseConfig>, String> {
    let key = cache_key(opts);
    if let Some(hit) = lock(cache()).get(&key) {
        return Ok(hit.clone());
    }
    let owned = opts.clone();
    // The blocking task fills the cache itself, so the work is kept even
    // when this run is cancelled by its timeout while waiting.
    tokio::task::spawn_blocking(move || {
        let built = Arc::new(build_base(&owned)?);
        let mut map = lock(cache());
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(key, built.clone());
        Ok(built)
    })
    .await
    .map_err(|e| format!("building the TLS configuration failed: {e}"))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Accepts any certificate (`insecure: true`) but still checks that the
/// server holds the key of the certificate it sent, which the handshake
/// needs anyway.
#[derive(Debug)]
struct InsecureVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for InsecureVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Wraps the real verifier to keep the leaf certificate, so a failed
/// verification can still say whose certificate it was and when it expires.
#[derive(Debug)]
struct Capturing {
    inner: Arc<dyn ServerCertVerifier>,
    leaf: Arc<Mutex<Option<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for Capturing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *lock(&self.leaf) = Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a completed handshake negotiated and presented.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// `1.2` or `1.3`.
    pub version: String,
    pub cipher_suite: String,
    pub leaf: Option<CertInfo>,
}

/// A failed handshake: a one-line reason and, when the server got as far
/// as sending one, its certificate.
#[derive(Debug, Clone)]
pub struct TlsFailure {
    pub message: String,
    pub leaf: Option<CertInfo>,
}

/// The server name to verify and send as SNI: an IP literal is verified
/// against the certificate's IP addresses, anything else as a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("`{host}` is not a valid TLS server name"))
}

/// Runs a full TLS handshake over `tcp`, offering `alpn` protocols.
pub async fn handshake(
    tcp: TcpStream,
    name: ServerName<'static>,
    base: &BaseConfig,
    alpn: &[&[u8]],
) -> Result<(TlsStream<TcpStream>, Handshake), TlsFailure> {
    let leaf_slot = Arc::new(Mutex::new(None));
    let mut config = (*base.config).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(Capturing {
            inner: base.verifier.clone(),
            leaf: leaf_slot.clone(),
        }));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match connector.connect(name.clone(), tcp).await {
        Ok(stream) => {
            let conn = stream.get_ref().1;
            let version = conn
                .protocol_version()
                .map(version_text)
                .unwrap_or_default();
            let cipher_suite = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default();
            let leaf = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| parse_cert(c));
            Ok((
                stream,
                Handshake {
                    version,
                    cipher_suite,
                    leaf,
                },
            ))
        }
        Err(e) => {
            let leaf = lock(&leaf_slot).as_ref().and_then(|c| parse_cert(c));
            Err(TlsFailure {
                message: describe_error(&e, &name, leaf.as_ref()),
                leaf,
            })
        }
    }
}

fn version_text(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "1.2".into(),
        rustls::ProtocolVersion::TLSv1_1 => "1.1".into(),
        rustls::ProtocolVersion::TLSv1_0 => "1.0".into(),
        other => format!("{other:?}"),
    }
}

/// A handshake error in words an operator can act on.
pub fn describe_error(
    e: &std::io::Error,
    name: &ServerName<'_>,
    leaf: Option<&CertInfo>,
) -> String {
    if let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return describe_rustls(err, name, leaf);
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the TLS handshake (is this port speaking TLS?)"
                .into()
        }
        std::io::ErrorKind::ConnectionReset => {
            "the connection was reset during the TLS handshake".into()
        }
        _ => format!("TLS handshake failed: {e}"),
    }
}

fn describe_rustls(err: &rustls::Error, name: &ServerName<'_>, leaf: Option<&CertInfo>) -> String {
    match err {
        rustls::Error::InvalidCertificate(ce) => describe_cert_error(ce, name, leaf),
        rustls::Error::AlertReceived(alert) => format!(
            "the server rejected the TLS handshake ({} alert)",
            format!("{alert:?}").to_lowercase()
        ),
        rustls::Error::PeerIncompatible(p) => {
            format!("no TLS version or cipher suite in common with the server ({p:?})")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server sent something that is not TLS (is this port speaking TLS?)".into()
        }
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".into(),
        other => format!("TLS handshake failed: {other}"),
    }
}

fn describe_cert_error(
    ce: &CertificateError,
    name: &ServerName<'_>,
    leaf: Option<&CertInfo>,
) -> String {
    let not_after = leaf.map(|l| format!(" (not valid after {})", rfc3339(l.not_after)));
    match ce {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("certificate has expired{}", not_after.unwrap_or_default())
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            let since = leaf.map(|l| format!(" (not valid before {})", rfc3339(l.not_before)));
            format!("certificate is not valid yet{}", since.unwrap_or_default())
        }
        CertificateError::UnknownIssuer => {
            let who = match leaf {
                Some(l) if l.subject == l.issuer => format!(": `{}` is self-signed", l.subject),
                Some(l) => format!(": issued by `{}`", l.issuer),
                None => String::new(),
            };
            format!("certificate is not trusted (self-signed or unknown issuer){who}")
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let host = match name {
                ServerName::DnsName(d) => d.as_ref().to_string(),
                ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
                other => format!("{other:?}"),
            };
            let valid = match leaf {
                Some(l) if !l.sans.is_empty() => {
                    format!(" (it is valid for: {})", l.sans.join(", "))
                }
                Some(l) => format!(" (it names only `{}`)", l.subject),
                None => String::new(),
            };
            format!("certificate is not valid for name {host}{valid}")
        }
        CertificateError::Revoked => "certificate has been revoked".into(),
        CertificateError::BadSignature => "certificate signature is invalid".into(),
        CertificateError::BadEncoding => "certificate is malformed".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate is not valid for TLS server authentication (wrong extended key usage)"
                .into()
        }
        other => format!("certificate is invalid: {other:?}"),
    }
}

/// The facts about a certificate that probes report.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// DNS names and IP addresses from the subjectAltName extension.
    pub sans: Vec<String>,
}

/// Reads a DER certificate; `None` when it cannot be parsed.
pub fn parse_cert(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = cert.validity();
    let not_before = DateTime::from_timestamp(validity.not_before.timestamp(), 0)?;
    let not_after = DateTime::from_timestamp(validity.not_after.timestamp(), 0)?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for gn in &ext.value.general_names {
            match gn {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push((*d).to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Some(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before,
        not_after,
        sans,
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl CertInfo {
    /// Time left until expiry; negative once expired.
    pub fn expires_in(&self) -> chrono::Duration {
        self.not_after - Utc::now()
    }

    /// Records `cert_subject`, `cert_issuer`, `cert_not_after` and
    /// `cert_expires_in_days` (whole days, negative once expired).
    pub fn record(&self, trace: &mut Trace) {
        trace.detail("cert_subject", self.subject.clone());
        trace.detail("cert_issuer", self.issuer.clone());
        trace.detail("cert_not_after", rfc3339(self.not_after));
        trace.detail(
            "cert_expires_in_days",
            self.expires_in().num_seconds().div_euclid(86_400),
        );
    }
}

/// Records the `certificate_expires_in` expectation against `leaf`.
pub fn check_expiry(trace: &mut Trace, cmp: &DurationCmp, leaf: Option<&CertInfo>) {
    let expectation = format!("certificate_expires_in {cmp}");
    let Some(leaf) = leaf else {
        trace.check(
            expectation,
            false,
            "no certificate (the connection did not use TLS)",
        );
        return;
    };
    let left = leaf.expires_in();
    let when = rfc3339(leaf.not_after);
    match left.to_std() {
        Ok(d) => trace.check(
            expectation,
            cmp.holds(d),
            format!("{} (expires {when})", crate::duration::human(d)),
        ),
        Err(_) => {
            let ago = (-left).to_std().unwrap_or_default();
            trace.check(
                expectation,
                cmp.holds(std::time::Duration::ZERO),
                format!("expired {} ago ({when})", crate::duration::human(ago)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(subject: &str, issuer: &str) -> CertInfo {
        CertInfo {
            subject: subject.into(),
            issuer: issuer.into(),
            not_before: DateTime::from_timestamp(946_684_800, 0).unwrap_or_default(),
            not_after: DateTime::from_timestamp(978_307_200, 0).unwrap_or_default(),
            sans: vec!["a.example".into()],
        }
    }

    #[test]
    fn certificate_errors_read_as_reasons() {
        let name = server_name("api.example.com").expect("valid name");
        let self_signed = leaf("CN=x", "CN=x");
        let table: &[(CertificateError, Option<&CertInfo>, &str)] = &[
            (
                CertificateError::Expired,
                Some(&self_signed),
                "certificate has expired (not valid after 2001-01-01T00:00:00Z)",
            ),
            (
                CertificateError::UnknownIssuer,
                Some(&self_signed),
                "certificate is not trusted (self-signed or unknown issuer): `CN=x` is self-signed",
            ),
            (
                CertificateError::UnknownIssuer,
                None,
                "certificate is not trusted (self-signed or unknown issuer)",
            ),
            (
                CertificateError::NotValidForName,
                Some(&self_signed),
                "certificate is not valid for name api.example.com (it is valid for: a.example)",
            ),
            (
                CertificateError::NotValidYet,
                None,
                "certificate is not valid yet",
            ),
        ];
        for (err, l, want) in table {
            assert_eq!(describe_cert_error(err, &name, *l), *want);
        }
    }

    #[test]
    fn io_errors_carrying_rustls_errors_are_unwrapped() {
        let name = server_name("127.0.0.1").expect("ip name");
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        );
        assert_eq!(
            describe_error(&e, &name, None),
            "certificate is not valid for name 127.0.0.1"
        );
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(describe_error(&eof, &name, None).contains("closed the connection"));
    }

    #[test]
    fn server_names_accept_ip_literals_in_brackets() {
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name!").is_err());
    }

    #[test]
    fn missing_or_empty_ca_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("lookout-tlsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        assert!(load_ca(&dir.join("missing.pem"))
            .err()
            .unwrap_or_default()
            .contains("cannot read CA file"));
        assert!(load_ca(&empty)
            .err()
            .unwrap_or_default()
            .contains("holds no certificate"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expiry_check_reports_time_left_or_since() {
        let mut trace = Trace::new();
        let cmp = DurationCmp::parse("> 14d").expect("cmp");
        check_expiry(&mut trace, &cmp, Some(&leaf("CN=x", "CN=y")));
        check_expiry(&mut trace, &cmp, None);
        assert!(!trace.checks[0].passed);
        assert!(
            trace.checks[0].observed.starts_with("expired "),
            "{}",
            trace.checks[0].observed
        );
        assert!(!trace.checks[1].passed);
    }
}
