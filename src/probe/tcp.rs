//! The `tcp` probe kind: connect, optionally send a payload, and optionally
//! expect something in the reply.
//!
//! ```yaml
//! tcp:
//!   host: billing.internal   # required: a host name or an IP address
//!   port: 7000               # required
//!   send: 'PING\r\n'         # optional payload, sent once connected
//!   read_bytes: 4096         # the most reply bytes read (default 4096)
//! expect:
//!   reply_contains: PONG     # the reply contains these bytes
//!   reply_matches: '^\+PONG' # the reply (as text) matches this regex
//! ```
//!
//! `send` and `reply_contains` understand the escapes `\r`, `\n`, `\t`,
//! `\0`, `\\` and `\xNN` (one byte, e.g. `\x00`). YAML double-quoted
//! strings already turn `\r\n` into the characters, so `"PING\r\n"` and
//! `'PING\r\n'` send the same bytes; a literal backslash is `\\` in single
//! quotes or plain scalars (and `\\\\` in double quotes). Any other escape
//! is a configuration error. `reply_matches` is applied to the reply read
//! as UTF-8 (invalid bytes replaced) and uses the regex's own escapes.
//!
//! Without reply expectations the run ends once connected (and the payload
//! sent). With them it reads until every reply expectation holds, the peer
//! closes, or `read_bytes` have been read, then checks them.
//!
//! Phases: `dns` (skipped for IP addresses), `connect`, `first_byte` (from
//! sending to the first reply byte) and `transfer` (the rest of the reply).
//! Failure classes: `dns` (the host does not resolve), `connect` ("connection
//! refused by 127.0.0.1:7000"), `protocol` (the peer closed or reset the
//! connection before replying), `expectation`, and `timeout`.
//! Details: `remote` (the address connected to), `reply` (its first 200
//! bytes as text), `reply_bytes`.

use std::io;
use std::net::{IpAddr, SocketAddr};

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::read::{Cx, Map};
use crate::config::yaml::Node;
use crate::probe::net::{self, Wording};
use crate::probe::Trace;
use crate::result::{Failure, FailureClass, Phase};

/// Keys accepted in the `tcp:` section.
pub const KEYS: &[&str] = &["host", "port", "send", "read_bytes"];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &["reply_contains", "reply_matches"];

/// The default and the largest `read_bytes`.
const DEFAULT_READ_BYTES: usize = 4096;
const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;
/// How much of the reply is kept in details and messages.
const REPLY_SHOWN: usize = 200;

/// One reply expectation, in configuration order.
#[derive(Debug, Clone)]
pub enum TcpExpect {
    /// `reply_contains`: the bytes, and the text as written.
    Contains(Vec<u8>, String),
    /// `reply_matches`: a regex over the reply as text.
    Matches(std::sync::Arc<Regex>),
}

impl TcpExpect {
    fn holds(&self, reply: &[u8], text: &str) -> bool {
        match self {
            TcpExpect::Contains(needle, _) => contains(reply, needle),
            TcpExpect::Matches(re) => re.is_match(text),
        }
    }

    fn describe(&self) -> String {
        match self {
            TcpExpect::Contains(_, written) => format!("reply_contains {written:?}"),
            TcpExpect::Matches(re) => format!("reply_matches {}", re.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TcpSpec {
    pub host: String,
    pub port: u16,
    pub send: Option<Vec<u8>>,
    pub read_bytes: usize,
    pub expect: Vec<TcpExpect>,
}

impl TcpSpec {
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub fn compile(cx: &mut Cx, node: &Node, path: &str, expect: Option<&Map<'_>>) -> Option<TcpSpec> {
    let m = cx.map(node, path, KEYS)?;
    let mut ok = true;

    let host = m.required_parsed(cx, "host", check_host);
    let port = m
        .required(cx, "port")
        .and_then(|_| m.u64(cx, "port"))
        .and_then(|p| {
            if (1..=65535).contains(&p) {
                Some(p as u16)
            } else {
                m.error_at(
                    cx,
                    "port",
                    format!("port {p} is out of range; expected 1 to 65535"),
                );
                None
            }
        });
    let send = match m.str(cx, "send") {
        Some(s) => match unescape(&s) {
            Ok(b) => Some(b),
            Err(e) => {
                m.error_at(cx, "send", e);
                ok = false;
                None
            }
        },
        None => {
            ok &= !m.has("send");
            None
        }
    };
    let read_bytes = match m.get("read_bytes") {
        None => Some(DEFAULT_READ_BYTES),
        Some(_) => m.u64(cx, "read_bytes").and_then(|n| {
            if (1..=MAX_READ_BYTES).contains(&n) {
                usize::try_from(n).ok()
            } else {
                m.error_at(
                    cx,
                    "read_bytes",
                    format!("must be between 1 and {MAX_READ_BYTES}"),
                );
                None
            }
        }),
    };

    let mut expectations = Vec::new();
    if let Some(em) = expect {
        for (key, node) in em.entries {
            let kpath = em.path(&key.name);
            match key.name.as_str() {
                "reply_contains" => match cx.string(node, &kpath) {
                    Some(text) => match unescape(&text) {
                        Ok(b) if b.is_empty() => {
                            cx.error(&node.pos, &kpath, "cannot be empty");
                            ok = false;
                        }
                        Ok(b) => expectations.push(TcpExpect::Contains(b, text)),
                        Err(e) => {
                            cx.error(&node.pos, &kpath, e);
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "reply_matches" => match cx.string(node, &kpath) {
                    Some(text) => match crate::expect::regex(&text) {
                        Ok(re) => expectations.push(TcpExpect::Matches(re)),
                        Err(e) => {
                            cx.error(&node.pos, &kpath, e);
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                _ => {}
            }
        }
    }

    if !ok {
        return None;
    }
    Some(TcpSpec {
        host: host?,
        port: port?,
        send,
        read_bytes: read_bytes?,
        expect: expectations,
    })
}

/// A host name or IP address (an IPv6 address may be bracketed).
fn check_host(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the host is empty".into());
    }
    if t.contains("://") {
        return Err(format!(
            "`{t}` is a URL; give only the host name or IP address, and the port in `port`"
        ));
    }
    let unbracketed = t.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Ok(unbracketed.to_string());
    }
    if t.contains(':') {
        return Err(format!(
            "`{t}` is not a host name or IP address; give the port in `port`"
        ));
    }
    if let Some(bad) = t
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err(format!(
            "`{t}` is not a valid host name: `{}` is not allowed",
            bad.escape_debug()
        ));
    }
    Ok(t.to_string())
}

/// Interprets `\r \n \t \0 \\ \xNN`; see the module documentation.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 => out.push(b),
                    _ => return Err(format!("invalid escape `\\x{hex}`: `\\x` takes two hex digits, e.g. `\\x0d`")),
                }
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape `\\{other}`; use \\r \\n \\t \\0 \\\\ or \\xNN (write `\\\\` for a backslash)"
                ))
            }
            None => return Err("a lone `\\` ends the text; write `\\\\` for a backslash".into()),
        }
    }
    Ok(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// The reply's first bytes as text, for details and messages.
fn shown(reply: &[u8]) -> String {
    String::from_utf8_lossy(&reply[..reply.len().min(REPLY_SHOWN)]).into_owned()
}

pub async fn run(spec: &TcpSpec, trace: &mut Trace) -> Result<(), Failure> {
    let addrs = net::resolve(&spec.host, spec.port, Wording::Tcp, trace).await?;
    let (mut stream, remote) = net::connect(&spec.host, &addrs, Wording::Tcp, trace).await?;
    trace.detail("remote", remote.to_string());

    if let Some(payload) = &spec.send {
        if let Err(e) = stream.write_all(payload).await {
            return Err(Failure::new(
                FailureClass::Protocol,
                format!(
                    "{remote} broke the connection while we sent {} bytes: {e}",
                    payload.len()
                ),
            ));
        }
    }
    if spec.expect.is_empty() {
        return Ok(());
    }

    let reply = read_reply(spec, &mut stream, remote, trace).await?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    let observed = format!("reply {:?}", shown(&reply));
    for e in &spec.expect {
        trace.check(e.describe(), e.holds(&reply, &text), observed.clone());
    }
    Ok(())
}

/// Reads until every expectation holds, the peer closes or `read_bytes`.
async fn read_reply(
    spec: &TcpSpec,
    stream: &mut TcpStream,
    remote: SocketAddr,
    trace: &mut Trace,
) -> Result<Vec<u8>, Failure> {
    let mut reply: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; spec.read_bytes.min(16 * 1024)];
    let mut reset: Option<io::Error> = None;
    trace.begin(Phase::FirstByte);
    while reply.len() < spec.read_bytes {
        let want = (spec.read_bytes - reply.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) => break,
            Ok(n) => {
                if reply.is_empty() {
                    trace.end();
                    trace.begin(Phase::Transfer);
                }
                reply.extend_from_slice(&chunk[..n]);
                // Kept current so that a run cut short by its timeout
                // still shows what had come.
                trace.detail("reply", shown(&reply));
                trace.detail("reply_bytes", reply.len());
                let text = String::from_utf8_lossy(&reply);
                if spec.expect.iter().all(|e| e.holds(&reply, &text)) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                reset = Some(e);
                break;
            }
        }
    }
    trace.end();
    let len = reply.len();
    trace.detail("reply", shown(&reply));
    trace.detail("reply_bytes", len);
    if reply.is_empty() {
        let sent = match &spec.send {
            Some(p) => format!(" to the {} bytes we sent", p.len()),
            None => String::new(),
        };
        let how = match reset {
            Some(e) => format!("{remote} broke the connection ({e}) before replying{sent}"),
            None => format!("{remote} closed the connection without replying{sent}"),
        };
        return Err(Failure::new(FailureClass::Protocol, how));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"PING\r\n").expect("valid"), b"PING\r\n");
        assert_eq!(
            unescape("PING\r\n").expect("already escaped by YAML"),
            b"PING\r\n"
        );
        assert_eq!(
            unescape(r"a\\b\t\x00\xff").expect("valid"),
            b"a\\b\t\x00\xff"
        );
        assert_eq!(unescape("é").expect("utf-8"), "é".as_bytes());
        assert!(unescape(r"\q").is_err());
        assert!(unescape(r"\x4").is_err());
        assert!(unescape(r"\xZZ").is_err());
        assert!(unescape("end\\").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(check_host("[::1]").expect("v6"), "::1");
        assert_eq!(
            check_host("billing.internal").expect("name"),
            "billing.internal"
        );
        assert!(check_host("tcp://x").is_err());
        assert!(check_host("x:80").is_err());
        assert!(check_host("a b").is_err());
        assert!(check_host("").is_err());
    }

    #[test]
    fn finding_bytes() {
        assert!(contains(b"+PONG\r\n", b"PONG"));
        assert!(!contains(b"PON", b"PONG"));
        assert_eq!(shown(&[b'a'; 300]).len(), REPLY_SHOWN);
    }
}
