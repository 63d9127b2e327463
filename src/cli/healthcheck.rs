//! `lookout healthcheck [--url URL]`: one plain HTTP/1.1 `GET` of a running
//! daemon's `/healthz` (by default `http://127.0.0.1:9464/healthz`, or the
//! URL in `LOOKOUT_HEALTHCHECK_URL`), for container health checks where no
//! curl or shell exists (the distroless image). It exits 0 when the answer
//! is a 200 and 1 otherwise, printing one line on stderr that names the URL
//! and what went wrong; a URL it cannot use is 1 too, because Docker's
//! `HEALTHCHECK` reserves every other status. It speaks only `http://`
//! over a blocking `std::net::TcpStream`, with a 2 s bound on connecting and
//! a 2 s bound on the answer, so it needs no runtime, no TLS and no
//! configuration, and it never reads past the status line.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use clap::Args;

use super::Exit;

/// Where a daemon with the default `server.listen` answers.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9464/healthz";

/// The bound on connecting, and separately on receiving the status line.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The most bytes read while looking for the end of the status line.
const MAX_STATUS_LINE: usize = 8 * 1024;

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The URL to GET; only http:// URLs.
    #[arg(long, env = "LOOKOUT_HEALTHCHECK_URL", default_value = DEFAULT_URL)]
    pub url: String,
}

/// An `http://` URL taken apart for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host to connect to: a name, or an IP address without brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header: the host as written (IPv6 in brackets), with the
    /// port when it is not 80.
    pub host_header: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
}

/// Reads an `http://` URL. Anything else (another scheme, no scheme,
/// credentials, no host) is an error in words.
pub fn parse_url(text: &str) -> Result<Target, String> {
    let text = text.trim();
    match text.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {}
        Some((scheme, _)) => {
            return Err(format!(
            "only http:// URLs are supported, not {scheme}:// (the health endpoint is plain HTTP)"
        ))
        }
        None => {
            return Err(
                "not a URL: expected http://HOST[:PORT]/PATH, e.g. http://127.0.0.1:9464/healthz"
                    .into(),
            )
        }
    }
    let url = url::Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not supported (/healthz needs none)".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err("the URL has no host".into()),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let mut host_header = url.host_str().unwrap_or_default().to_string();
    if let Some(p) = url.port() {
        host_header.push_str(&format!(":{p}"));
    }
    let mut path = url.path().to_string();
    if path.is_empty() {
        path.push('/');
    }
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(Target {
        host,
        port,
        host_header,
        path,
    })
}

/// The status code and reason phrase of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: String,
}

/// Reads `HTTP/1.x CODE REASON` (the reason may be empty).
pub fn parse_status_line(line: &str) -> Option<Status> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut parts = rest.splitn(3, ' ');
    let minor = parts.next()?;
    if minor.len() != 1 || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Status {
        code: code.parse().ok()?,
        reason: parts.next().unwrap_or("").trim().to_string(),
    })
}

/// Sends one `GET` to `target` and returns the answer's status, or what
/// went wrong in words. Connecting and receiving the status line are each
/// bounded by `timeout`.
pub fn fetch_status(target: &Target, timeout: Duration) -> Result<Status, String> {
    let addrs = resolve(target)?;
    let mut stream = connect(&addrs, timeout)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lookout-healthcheck/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_header,
        env!("CARGO_PKG_VERSION")
    );
    let deadline = Instant::now() + timeout;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| format!("cannot set a write timeout: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the request failed: {e}"))?;
    let line = read_status_line(&mut stream, deadline, timeout)?;
    parse_status_line(&line).ok_or_else(|| {
        let shown: String = line.chars().take(60).collect();
        format!("not an HTTP response: {shown:?}")
    })
}

fn resolve(target: &Target) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{} resolves to no addresses", target.host));
    }
    Ok(addrs)
}

/// Connects to each address in turn within one shared deadline; the error
/// is the last address's.
fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                last = format!(
                    "connection refused by {addr} (is Lookout running and listening there?)"
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                last = format!("no connection to {addr} within {}", secs(timeout));
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    if last.is_empty() {
        last = format!("no connection within {}", secs(timeout));
    }
    Err(last)
}

/// Reads until the first line break, within `deadline`.
fn read_status_line(
    stream: &mut TcpStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<String, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..end]);
            return Ok(line.trim_end_matches('\r').to_string());
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(format!(
                "not an HTTP response: no line break in the first {MAX_STATUS_LINE} bytes"
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {}", secs(timeout)));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => {
                return Err("the server closed the connection without answering".into())
            }
            Ok(0) => {
                let shown: String = String::from_utf8_lossy(&buf).chars().take(60).collect();
                return Err(format!("not an HTTP response: {shown:?}"));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no answer within {}", secs(timeout)));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the answer failed: {e}")),
        }
    }
}

fn secs(d: Duration) -> String {
    crate::duration::human(d)
}

pub fn run(args: &HealthcheckArgs) -> Exit {
    let url = args.url.trim();
    let outcome = parse_url(url).and_then(|t| fetch_status(&t, TIMEOUT));
    match outcome {
        Ok(s) if s.code == 200 => {
            println!("{url}: {} {}", s.code, s.reason);
            Exit::Ok
        }
        Ok(s) => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", s.reason)
            };
            eprintln!(
                "lookout healthcheck: {url}: answered {}{reason}, expected 200",
                s.code
            );
            Exit::Failed
        }
        Err(e) => {
            eprintln!("lookout healthcheck: {url}: {e}");
            Exit::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, host_header: &str, path: &str) -> Target {
        Target {
            host: host.into(),
            port,
            host_header: host_header.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parses_http_urls() {
        let cases = [
            (
                DEFAULT_URL,
                target("127.0.0.1", 9464, "127.0.0.1:9464", "/healthz"),
            ),
            (
                "http://localhost",
                target("localhost", 80, "localhost", "/"),
            ),
            (
                "http://Example.COM:80/",
                target("example.com", 80, "example.com", "/"),
            ),
            (
                "HTTP://[::1]:8080/readyz?x=1#frag",
                target("::1", 8080, "[::1]:8080", "/readyz?x=1"),
            ),
            (
                "  http://lookout:9464/healthz\n",
                target("lookout", 9464, "lookout:9464", "/healthz"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_url(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let cases = [
            ("https://127.0.0.1:9464/healthz", "only http:// URLs"),
            ("ftp://host/", "not ftp://"),
            ("127.0.0.1:9464/healthz", "not a URL"),
            ("localhost:9464", "not a URL"),
            ("", "not a URL"),
            ("http://", "not a valid URL"),
            ("http://:9464/", "not a valid URL"),
            ("http://host:99999/", "not a valid URL"),
            ("http://user:pw@host/", "credentials"),
        ];
        for (text, want) in cases {
            let err = parse_url(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(
            parse_status_line("HTTP/1.1 200 OK"),
            Some(Status {
                code: 200,
                reason: "OK".into()
            })
        );
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(Status {
                code: 503,
                reason: "Service Unavailable".into()
            })
        );
        assert_eq!(
            parse_status_line("HTTP/1.1 204"),
            Some(Status {
                code: 204,
                reason: String::new()
            })
        );
        for bad in [
            "",
            "SSH-2.0-OpenSSH",
            "HTTP/2 200",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 abc",
        ] {
            assert_eq!(parse_status_line(bad), None, "{bad}");
        }
    }
}
