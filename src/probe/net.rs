//! Socket plumbing shared by the kinds that open their own connections
//! (`http`, `tcp`, `tls`, `redis` and `postgres`; `mysql`, whose client
//! library connects by itself, only resolves here): resolving a host
//! (phase `dns`, skipped for an IP address), connecting to its addresses in
//! turn (phase `connect`), saying in words why that failed, and the TLS
//! handshake over a connected socket (phase `tls`) with the configurations
//! of [`tlsutil`].
//!
//! Each step is one await point of the run and spawns nothing, so a run
//! dropped by its timeout drops whatever socket it holds. Whether a socket
//! sends small writes at once (`TCP_NODELAY`) is left to the kind.
//!
//! The kinds word an unreachable target in one of two ways ([`Wording`]);
//! messages are part of what a kind promises, so both are kept.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::probe::tlsutil::{self, BaseConfig, Handshake, TlsFailure, TlsOptions};
use crate::probe::Trace;
use crate::result::{Failure, FailureClass, Phase};

/// How a kind words a host that cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wording {
    /// `http`, `tls` and `redis`: "cannot resolve HOST: no addresses";
    /// unreachable hosts and networks are named as such; after several
    /// addresses, "(and N other addresses failed)".
    Http,
    /// `tcp`, `postgres` and `mysql`: "HOST resolves to no addresses";
    /// after several addresses, "(tried N addresses of HOST)".
    Tcp,
}

/// The addresses of `host` (an IP address, or a name looked up in phase
/// `dns`), each with `port`. `host` is given without IPv6 brackets.
pub async fn resolve(
    host: &str,
    port: u16,
    wording: Wording,
    trace: &mut Trace,
) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    trace.begin(Phase::Dns);
    let found = tokio::net::lookup_host((host, port)).await;
    trace.end();
    let addrs: Vec<SocketAddr> = found
        .map_err(|e| Failure::new(FailureClass::Dns, format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        let msg = match wording {
            Wording::Http => format!("cannot resolve {host}: no addresses"),
            Wording::Tcp => format!("{host} resolves to no addresses"),
        };
        return Err(Failure::new(FailureClass::Dns, msg));
    }
    Ok(addrs)
}

/// Connects to each of `host`'s addresses in turn until one answers
/// (phase `connect`), and returns the stream and the address it reached.
/// A failure gives the last address's error and how many were tried.
pub async fn connect(
    host: &str,
    addrs: &[SocketAddr],
    wording: Wording,
    trace: &mut Trace,
) -> Result<(TcpStream, SocketAddr), Failure> {
    trace.begin(Phase::Connect);
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                trace.end();
                return Ok((s, *addr));
            }
            Err(e) => last = Some((*addr, e)),
        }
    }
    trace.end();
    let Some((addr, e)) = last else {
        return Err(Failure::new(
            FailureClass::Connect,
            "no address to connect to",
        ));
    };
    let mut msg = connect_message(&addr.to_string(), &e, wording);
    if addrs.len() > 1 {
        msg = match wording {
            Wording::Http => format!("{msg} (and {} other addresses failed)", addrs.len() - 1),
            Wording::Tcp => format!("{msg} (tried {} addresses of {host})", addrs.len()),
        };
    }
    Err(Failure::new(FailureClass::Connect, msg))
}

/// A failed connection to `addr` (an address, or a Unix socket's path).
pub fn connect_failure(addr: &str, e: &io::Error, wording: Wording) -> Failure {
    Failure::new(FailureClass::Connect, connect_message(addr, e, wording))
}

fn connect_message(addr: &str, e: &io::Error, wording: Wording) -> String {
    use io::ErrorKind as K;
    match (e.kind(), wording) {
        (K::ConnectionRefused, _) => format!("connection refused by {addr}"),
        (K::HostUnreachable, Wording::Http) => format!("{addr} is unreachable (no route to host)"),
        (K::NetworkUnreachable, Wording::Http) => {
            format!("{addr} is unreachable (network unreachable)")
        }
        (K::TimedOut, _) => format!("connecting to {addr} timed out"),
        (K::NotFound, Wording::Tcp) => format!("no server socket at {addr}"),
        _ => format!("cannot connect to {addr}: {e}"),
    }
}

/// The client configuration for `opts`. Called before any phase starts:
/// the first call loads the system's trust store, which is not TLS time.
pub async fn tls_config(opts: &TlsOptions) -> Result<Arc<BaseConfig>, Failure> {
    tlsutil::base_config(opts)
        .await
        .map_err(|e| Failure::new(FailureClass::Internal, e))
}

/// The name a handshake with `host` sends and verifies.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Failure> {
    tlsutil::server_name(host).map_err(|e| Failure::new(FailureClass::Tls, e))
}

/// A full TLS handshake over `tcp`, offering the `alpn` protocols, timed as
/// phase `tls`.
pub async fn handshake(
    tcp: TcpStream,
    name: ServerName<'static>,
    config: &BaseConfig,
    alpn: &[&[u8]],
    trace: &mut Trace,
) -> Result<(TlsStream<TcpStream>, Handshake), TlsFailure> {
    trace.begin(Phase::Tls);
    let done = tlsutil::handshake(tcp, name, config, alpn).await;
    trace.end();
    done
}

/// A failed handshake as the run's failure: records the certificate the
/// server sent (the one verification refused) and names the peer, `who`.
pub fn tls_failure(f: &TlsFailure, who: &str, trace: &mut Trace) -> Failure {
    if let Some(leaf) = &f.leaf {
        leaf.record(trace);
    }
    Failure::new(FailureClass::Tls, format!("{who}: {}", f.message))
}
