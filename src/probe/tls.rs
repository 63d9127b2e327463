//! The `tls` probe kind: connect, run a full TLS handshake with hostname and
//! chain verification, and report the protocol version, cipher suite and
//! the leaf certificate (subject, issuer, expiry, names). Expectations cover
//! the certificate's remaining lifetime and the negotiated version.
//!
//! With `insecure: true` verification is skipped but the certificate is still
//! read and reported, so expiry can be watched on hosts with private chains.
//! A failed verification still reports the certificate it rejected.

use crate::config::read::{Cx, Map};
use crate::config::yaml::Node;
use crate::expect::{DurationCmp, Op};
use crate::probe::net::{self, Wording};
use crate::probe::tlsutil::{self, TlsOptions};
use crate::probe::Trace;
use crate::result::Failure;

/// Keys accepted in the `tls:` section.
pub const KEYS: &[&str] = &["host", "port", "server_name", "insecure", "ca"];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &["certificate_expires_in", "tls_version"];

pub const DEFAULT_PORT: u16 = 443;

#[derive(Debug, Clone)]
pub struct TlsSpec {
    pub host: String,
    pub port: u16,
    /// The name sent as SNI and verified against the certificate.
    pub server_name: String,
    pub tls: TlsOptions,
    pub certificate_expires_in: Option<DurationCmp>,
    pub tls_version: Option<VersionCmp>,
}

impl TlsSpec {
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A TLS version expectation: `1.3`, `>= 1.2`. Versions compare as
/// (major, minor) so `1.2 < 1.3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionCmp {
    pub op: Op,
    pub version: (u8, u8),
}

impl VersionCmp {
    pub fn parse(text: &str) -> Result<VersionCmp, String> {
        let (op, rest) = Op::split(text).unwrap_or((Op::Eq, text.trim()));
        let version = parse_version(rest).ok_or_else(|| {
            format!("invalid TLS version `{text}`: write e.g. 1.3 or a comparison such as `>= 1.2`")
        })?;
        Ok(VersionCmp { op, version })
    }

    pub fn holds(&self, negotiated: &str) -> bool {
        parse_version(negotiated).is_some_and(|v| self.op.holds(v, self.version))
    }
}

impl std::fmt::Display for VersionCmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}.{}",
            self.op.as_str(),
            self.version.0,
            self.version.1
        )
    }
}

/// `1.3`, `TLS1.3`, `TLSv1.3`, `tls 1.3`, and `1` (YAML's reading of `1.0`).
fn parse_version(text: &str) -> Option<(u8, u8)> {
    let lower = text.trim().to_ascii_lowercase();
    let t = lower.strip_prefix("tls").unwrap_or(&lower).trim_start();
    let t = t.strip_prefix('v').unwrap_or(t).trim();
    let (major, minor) = t.split_once('.').unwrap_or((t, "0"));
    let v = (major.parse().ok()?, minor.parse().ok()?);
    matches!(v, (1, 0..=3)).then_some(v)
}

pub fn compile(cx: &mut Cx, node: &Node, path: &str, expect: Option<&Map<'_>>) -> Option<TlsSpec> {
    let m = cx.map(node, path, KEYS)?;
    let host = m.required_str(cx, "host").and_then(|h| {
        let h = h
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if h.is_empty() {
            m.error_at(cx, "host", "empty host");
            return None;
        }
        if h.contains("://") || h.contains('/') {
            m.error_at(
                cx,
                "host",
                format!("`{h}` is not a host name; give only the host, e.g. api.example.com"),
            );
            return None;
        }
        if h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_err() {
            m.error_at(
                cx,
                "host",
                format!("`{h}` is not a host name; give the port with `port`"),
            );
            return None;
        }
        Some(h)
    });
    let port = match m.get("port") {
        None => Some(DEFAULT_PORT),
        Some(_) => m.u64(cx, "port").and_then(|p| match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                m.error_at(cx, "port", format!("port {p} is out of range (1-65535)"));
                None
            }
        }),
    };
    let server_name = match m.get("server_name") {
        None => host.clone(),
        Some(_) => m.str(cx, "server_name").and_then(|s| {
            let s = s.trim().to_string();
            match tlsutil::server_name(&s) {
                Ok(_) => Some(s),
                Err(e) => {
                    m.error_at(cx, "server_name", e);
                    None
                }
            }
        }),
    };
    if !m.has("server_name") {
        if let Some(h) = &host {
            if let Err(e) = tlsutil::server_name(h) {
                m.error_at(
                    cx,
                    "host",
                    format!("{e}; set `server_name` to the name on the certificate"),
                );
            }
        }
    }
    let tls = tlsutil::compile_options(cx, &m);
    let certificate_expires_in = tlsutil::compile_expiry(cx, expect);
    let tls_version = match expect {
        None => Some(None),
        Some(em) => em.parsed(cx, "tls_version", VersionCmp::parse),
    };
    Some(TlsSpec {
        host: host?,
        port: port?,
        server_name: server_name?,
        tls: tls?,
        certificate_expires_in: certificate_expires_in?,
        tls_version: tls_version?,
    })
}

pub async fn run(spec: &TlsSpec, trace: &mut Trace) -> Result<(), Failure> {
    // Built before any phase starts: loading system roots is not TLS time.
    let config = net::tls_config(&spec.tls).await?;
    let name = net::server_name(&spec.server_name)?;
    let addrs = net::resolve(&spec.host, spec.port, Wording::Http, trace).await?;
    let (tcp, _) = net::connect(&spec.host, &addrs, Wording::Http, trace).await?;
    let _ = tcp.set_nodelay(true);
    let (_stream, hs) = match net::handshake(tcp, name, &config, &[], trace).await {
        Ok(ok) => ok,
        Err(f) => {
            if let Some(leaf) = &f.leaf {
                trace.detail("cert_sans", leaf.sans.clone());
            }
            return Err(net::tls_failure(&f, &spec.target(), trace));
        }
    };
    trace.detail("tls_version", hs.version.clone());
    trace.detail("cipher_suite", hs.cipher_suite.clone());
    if let Some(leaf) = &hs.leaf {
        leaf.record(trace);
        trace.detail("cert_sans", leaf.sans.clone());
    }
    if let Some(cmp) = &spec.certificate_expires_in {
        tlsutil::check_expiry(trace, cmp, hs.leaf.as_ref());
    }
    if let Some(v) = &spec.tls_version {
        trace.check(
            format!("tls_version {v}"),
            v.holds(&hs.version),
            hs.version.clone(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_expectations() {
        let table = [
            ("1.3", "1.3", true),
            ("1.3", "1.2", false),
            (">= 1.2", "1.3", true),
            (">= 1.2", "1.2", true),
            ("> 1.2", "1.2", false),
            ("TLSv1.2", "1.2", true),
            ("< 1.3", "1.2", true),
        ];
        for (spec, got, want) in table {
            let v = VersionCmp::parse(spec).expect("valid");
            assert_eq!(v.holds(got), want, "{spec} vs {got}");
        }
        assert_eq!(VersionCmp::parse("1").map(|v| v.version).ok(), Some((1, 0)));
        assert!(VersionCmp::parse("2.0").is_err());
        assert!(VersionCmp::parse(">= x").is_err());
        assert_eq!(
            VersionCmp::parse(">=1.2")
                .map(|v| v.to_string())
                .ok()
                .as_deref(),
            Some(">= 1.2")
        );
    }
}
