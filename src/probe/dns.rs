//! The `dns` probe kind: one query for one name and record type, sent to a
//! given server or to the system's resolver configuration, with
//! expectations on the response code and the answers.
//!
//! ```yaml
//! dns:
//!   name: api.example.com   # required; for PTR an IP address is accepted too
//!   type: A                 # A AAAA CNAME MX TXT NS SOA SRV CAA PTR (default A)
//!   server: 10.0.0.2:53     # optional: "ip", "ip:port" or "[v6]:port"; port 53 by default
//!   protocol: udp           # udp (default) or tcp
//! expect:
//!   answers_include: [203.0.113.10]   # every listed answer is present
//!   answers_exactly: [203.0.113.10]   # the answers are exactly these, in any order
//!   rcode: NOERROR                     # NOERROR NXDOMAIN SERVFAIL REFUSED FORMERR NOTIMP ...
//!   answer_count: ">= 2"               # a number or a comparison
//! ```
//!
//! Each run sends exactly one query (no cache, no retries, no search
//! domains: the name is always queried as written, as a fully qualified
//! name) and reads the full response. Over UDP a truncated response is asked
//! again over TCP, as every resolver does. The probe's `timeout` is the only
//! time limit, except when the system configuration lists several servers:
//! then each but the last gets the `timeout` of `/etc/resolv.conf` (5s by
//! default) before the next is asked.
//!
//! Without `server`, names in the hosts file (`/etc/hosts`) answer A, AAAA
//! and PTR queries first, so `name: localhost` works offline; everything
//! else goes to the first `nameserver` of `/etc/resolv.conf` (127.0.0.1:53
//! when it names none).
//!
//! # Answers
//!
//! Answers are the records of the asked type in the answer section (a CNAME
//! chain leading to them is not listed), written as:
//!
//! | type | answer text |
//! |---|---|
//! | A, AAAA | the address: `192.0.2.10`, `2001:db8::10` |
//! | CNAME, NS, PTR | the target name without the trailing dot: `www.example.com` |
//! | MX | `preference exchange`: `10 mail.example.com` |
//! | TXT | the record's strings joined with nothing between them: `v=spf1 -all` |
//! | SRV | `priority weight port target`: `10 60 5060 sip.example.com` |
//! | SOA | `mname rname serial refresh retry expire minimum` |
//! | CAA | `flags tag "value"`: `0 issue "letsencrypt.org"` |
//!
//! Expected answers are compared with names case-insensitively and ignoring
//! a trailing dot (`Mail.Example.com.` equals `mail.example.com`), addresses
//! as addresses (`2001:db8:0::10` equals `2001:db8::10`), and runs of spaces
//! as one space. TXT answers are compared exactly.
//!
//! # Outcomes
//!
//! Without an `rcode` expectation, a response code other than NOERROR
//! (NXDOMAIN, SERVFAIL, REFUSED, ...) is a failure of class `dns`, and so is
//! NOERROR with no answers of the asked type, unless `answer_count`,
//! `rcode` or an empty `answers_exactly` says that is what is expected. With
//! `rcode: NXDOMAIN`, an NXDOMAIN response is a success. A server that
//! cannot be reached is a `connect` failure, a malformed response a
//! `protocol` failure, and a server that does not answer a `timeout`.
//!
//! Phases: `query` (the round trip), plus `connect` over TCP.
//! Details: `rcode`, `answers` (list of answer texts), `server`, `protocol`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, Query};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::read::{suggest, Cx, Map};
use crate::config::yaml::Node;
use crate::expect::NumberCmp;
use crate::probe::Trace;
use crate::result::{Failure, FailureClass, Phase};

/// Keys accepted in the `dns:` section.
pub const KEYS: &[&str] = &["name", "type", "server", "protocol"];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &[
    "answers_include",
    "answers_exactly",
    "rcode",
    "answer_count",
];
/// The record types a probe may ask for.
pub const RECORD_TYPES: &[&str] = &[
    "A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "CAA", "PTR",
];

/// Response codes by number and name (RFC 1035, 2136, 6891, 2845, 7873).
const RCODES: &[(u16, &str)] = &[
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (6, "YXDOMAIN"),
    (7, "YXRRSET"),
    (8, "NXRRSET"),
    (9, "NOTAUTH"),
    (10, "NOTZONE"),
    (16, "BADVERS"),
    (17, "BADKEY"),
    (18, "BADTIME"),
    (19, "BADMODE"),
    (20, "BADNAME"),
    (21, "BADALG"),
    (22, "BADTRUNC"),
    (23, "BADCOOKIE"),
];

/// The EDNS payload size we advertise (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Where the system configuration lives, for messages.
const HOSTS_FILE: &str = "/etc/hosts";

/// How the query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One expectation on the response, in configuration order.
#[derive(Debug, Clone)]
pub enum DnsExpect {
    /// `answers_include`: every listed answer is present.
    Include(Vec<String>),
    /// `answers_exactly`: the answers are these, in any order.
    Exactly(Vec<String>),
    /// `rcode`: the response code, by number.
    Rcode(u16),
    /// `answer_count`: how many answers of the asked type.
    AnswerCount(NumberCmp),
}

#[derive(Debug, Clone)]
pub struct DnsSpec {
    /// The name as written in the configuration.
    pub name: String,
    /// The name queried: fully qualified; for PTR of an IP, its arpa name.
    pub qname: Name,
    pub record_type: RecordType,
    /// `None`: the system configuration.
    pub server: Option<SocketAddr>,
    pub protocol: Transport,
    pub expect: Vec<DnsExpect>,
}

impl DnsSpec {
    pub fn target(&self) -> String {
        match self.server {
            Some(s) => format!("{} {} @{s}", self.name, self.record_type),
            None => format!("{} {}", self.name, self.record_type),
        }
    }

    /// Whether the expectations accept a response with no answers, so that
    /// an empty NOERROR response is left to them rather than failed.
    fn expects_empty_possible(&self) -> bool {
        self.expect.iter().any(|e| match e {
            DnsExpect::Rcode(_) | DnsExpect::AnswerCount(_) => true,
            DnsExpect::Exactly(list) => list.is_empty(),
            DnsExpect::Include(_) => false,
        })
    }

    fn expects_rcode(&self) -> bool {
        self.expect.iter().any(|e| matches!(e, DnsExpect::Rcode(_)))
    }
}

pub fn compile(cx: &mut Cx, node: &Node, path: &str, expect: Option<&Map<'_>>) -> Option<DnsSpec> {
    let m = cx.map(node, path, KEYS)?;
    let mut ok = true;

    let record_type = match m.str(cx, "type") {
        None if m.has("type") => None,
        None => Some(RecordType::A),
        Some(t) => {
            let upper = t.trim().to_ascii_uppercase();
            if RECORD_TYPES.contains(&upper.as_str()) {
                upper.parse::<RecordType>().ok()
            } else {
                let msg = match suggest(&upper, RECORD_TYPES) {
                    Some(s) if s.len() > 1 => {
                        format!(
                            "unsupported record type `{t}`; did you mean `{s}`? (one of {})",
                            RECORD_TYPES.join(", ")
                        )
                    }
                    _ => format!(
                        "unsupported record type `{t}`; expected one of {}",
                        RECORD_TYPES.join(", ")
                    ),
                };
                m.error_at(cx, "type", msg);
                None
            }
        }
    };

    let name = m.required_str(cx, "name");
    let qname = match (&name, record_type) {
        (Some(n), Some(rt)) => match query_name(n, rt) {
            Ok(q) => Some(q),
            Err(e) => {
                m.error_at(cx, "name", e);
                None
            }
        },
        _ => None,
    };

    let server = match m.str(cx, "server") {
        Some(s) => match parse_server(&s) {
            Ok(a) => Some(a),
            Err(e) => {
                m.error_at(cx, "server", e);
                ok = false;
                None
            }
        },
        None => {
            ok &= !m.has("server");
            None
        }
    };

    let protocol = match m.str(cx, "protocol") {
        Some(p) => match p.trim().to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            _ => {
                m.error_at(
                    cx,
                    "protocol",
                    format!("unknown protocol `{p}`; expected udp or tcp"),
                );
                None
            }
        },
        None if m.has("protocol") => None,
        None => Some(Transport::Udp),
    };

    let expectations = match expect {
        Some(em) => compile_expect(cx, em, record_type),
        None => Some(Vec::new()),
    };

    if !ok {
        return None;
    }
    Some(DnsSpec {
        name: name?,
        qname: qname?,
        record_type: record_type?,
        server,
        protocol: protocol?,
        expect: expectations?,
    })
}

/// Reads this kind's keys of `expect:` in the order written.
fn compile_expect(
    cx: &mut Cx,
    em: &Map<'_>,
    record_type: Option<RecordType>,
) -> Option<Vec<DnsExpect>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (key, node) in em.entries {
        let path = em.path(&key.name);
        match key.name.as_str() {
            k @ ("answers_include" | "answers_exactly") => {
                let Some(list) = cx.string_list(node, &path) else {
                    ok = false;
                    continue;
                };
                for item in &list {
                    if let Err(e) = check_answer_text(item, record_type) {
                        cx.error(&node.pos, &path, e);
                        ok = false;
                    }
                }
                if k == "answers_include" {
                    if list.is_empty() {
                        cx.error(&node.pos, &path, "needs at least one answer");
                        ok = false;
                    }
                    out.push(DnsExpect::Include(list));
                } else {
                    out.push(DnsExpect::Exactly(list));
                }
            }
            "rcode" => match cx.string(node, &path) {
                Some(text) => match parse_rcode(&text) {
                    Some(code) => out.push(DnsExpect::Rcode(code)),
                    None => {
                        let names: Vec<&str> = RCODES.iter().map(|(_, n)| *n).collect();
                        let upper = text.trim().to_ascii_uppercase();
                        let msg = match suggest(&upper, &names) {
                            Some(s) => {
                                format!("unknown response code `{text}`; did you mean `{s}`?")
                            }
                            None => format!(
                                "unknown response code `{text}`; expected one of {}",
                                names[..11].join(", ")
                            ),
                        };
                        cx.error(&node.pos, &path, msg);
                        ok = false;
                    }
                },
                None => ok = false,
            },
            "answer_count" => match cx.string(node, &path) {
                Some(text) => match NumberCmp::parse(&text) {
                    Ok(c) => out.push(DnsExpect::AnswerCount(c)),
                    Err(e) => {
                        cx.error(&node.pos, &path, e);
                        ok = false;
                    }
                },
                None => ok = false,
            },
            _ => {}
        }
    }
    ok.then_some(out)
}

/// An expected answer must at least be a valid address for A and AAAA.
fn check_answer_text(text: &str, record_type: Option<RecordType>) -> Result<(), String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("an expected answer cannot be empty".into());
    }
    match record_type {
        Some(RecordType::A) if t.parse::<Ipv4Addr>().is_err() => Err(format!(
            "`{t}` is not an IPv4 address, which is what A answers are"
        )),
        Some(RecordType::AAAA) if t.parse::<std::net::Ipv6Addr>().is_err() => Err(format!(
            "`{t}` is not an IPv6 address, which is what AAAA answers are"
        )),
        _ => Ok(()),
    }
}

/// The name to query: as written and fully qualified, or for PTR of an IP
/// address its `in-addr.arpa`/`ip6.arpa` name.
fn query_name(name: &str, rt: RecordType) -> Result<Name, String> {
    let n = name.trim();
    if n.is_empty() {
        return Err("the name is empty".into());
    }
    if rt == RecordType::PTR {
        if let Ok(ip) = n
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            let mut q = Name::from(ip);
            q.set_fqdn(true);
            return Ok(q);
        }
    } else if n.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "`{n}` is an IP address, not a name; to look up its name use `type: PTR`"
        ));
    }
    match Name::from_utf8(n) {
        Ok(mut q) => {
            q.set_fqdn(true);
            Ok(q)
        }
        Err(e) => Err(format!("invalid DNS name `{n}`: {e}")),
    }
}

/// `10.0.0.2`, `10.0.0.2:53`, `2001:db8::53` or `[2001:db8::53]:53`.
pub fn parse_server(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let addr = if let Ok(a) = t.parse::<SocketAddr>() {
        Some(a)
    } else {
        t.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    };
    match addr {
        Some(a) if a.port() == 0 => Err(format!("invalid server `{t}`: port 0 is not a port a server listens on")),
        Some(a) => Ok(a),
        None => Err(format!(
            "invalid server `{t}`: expected an IP address with an optional port, such as 10.0.0.2, 10.0.0.2:53 or [2001:db8::53]:53"
        )),
    }
}

fn parse_rcode(text: &str) -> Option<u16> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u16>() {
        return (n < 4096).then_some(n);
    }
    RCODES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(t))
        .map(|(c, _)| *c)
}

/// The conventional name of a response code, or `RCODE37`.
pub fn rcode_name(code: u16) -> String {
    match RCODES.iter().find(|(c, _)| *c == code) {
        Some((_, n)) => (*n).to_string(),
        None => format!("RCODE{code}"),
    }
}

/// What one exchange produced.
struct Outcome {
    rcode: u16,
    answers: Vec<String>,
    server: String,
    protocol: String,
}

pub async fn run(spec: &DnsSpec, trace: &mut Trace) -> Result<(), Failure> {
    let outcome = match spec.server {
        Some(server) => {
            let (msg, protocol) = exchange(spec, server, spec.protocol, trace).await?;
            outcome_of(spec, &msg, server.to_string(), protocol)
        }
        None => system_query(spec, trace).await?,
    };
    trace.detail("rcode", rcode_name(outcome.rcode));
    trace.detail("answers", outcome.answers.clone());
    trace.detail("server", outcome.server.clone());
    trace.detail("protocol", outcome.protocol.clone());

    let rtype = spec.record_type;
    if outcome.rcode != 0 && !spec.expects_rcode() {
        let code = rcode_name(outcome.rcode);
        let hint = match outcome.rcode {
            3 => ": the name does not exist",
            2 => ": the server could not resolve it",
            5 => ": the server refuses to answer this query (check its access control or zone)",
            _ => "",
        };
        return Err(Failure::new(
            FailureClass::Dns,
            format!(
                "{code} for {} {rtype} from {} over {}{hint}",
                spec.name, outcome.server, outcome.protocol
            ),
        ));
    }
    if outcome.rcode == 0 && outcome.answers.is_empty() && !spec.expects_empty_possible() {
        return Err(Failure::new(
            FailureClass::Dns,
            format!(
                "no {rtype} records for {} (NOERROR with no {rtype} answers from {})",
                spec.name, outcome.server
            ),
        ));
    }

    let got = list_text(&outcome.answers);
    let have: Vec<String> = outcome
        .answers
        .iter()
        .map(|a| normalize(rtype, a))
        .collect();
    for e in &spec.expect {
        match e {
            DnsExpect::Include(want) => {
                let missing: Vec<&String> = want
                    .iter()
                    .filter(|w| !have.contains(&normalize(rtype, w)))
                    .collect();
                let observed = if missing.is_empty() {
                    got.clone()
                } else {
                    let m: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
                    format!("{got} (missing {})", m.join(", "))
                };
                trace.check(
                    format!("answers_include {}", list_text(want)),
                    missing.is_empty(),
                    observed,
                );
            }
            DnsExpect::Exactly(want) => {
                let mut a: Vec<String> = want.iter().map(|w| normalize(rtype, w)).collect();
                let mut b = have.clone();
                a.sort();
                a.dedup();
                b.sort();
                b.dedup();
                trace.check(
                    format!("answers_exactly {}", list_text(want)),
                    a == b,
                    got.clone(),
                );
            }
            DnsExpect::Rcode(code) => {
                trace.check(
                    format!("rcode {}", rcode_name(*code)),
                    *code == outcome.rcode,
                    rcode_name(outcome.rcode),
                );
            }
            DnsExpect::AnswerCount(cmp) => {
                let n = outcome.answers.len();
                let observed = format!("{n} {}", if n == 1 { "answer" } else { "answers" });
                trace.check(format!("answer_count {cmp}"), cmp.holds(n as f64), observed);
            }
        }
    }
    Ok(())
}

fn list_text(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// The comparison form of an answer: see the module documentation.
fn normalize(rtype: RecordType, text: &str) -> String {
    match rtype {
        RecordType::A | RecordType::AAAA => match text.trim().parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => text.trim().to_ascii_lowercase(),
        },
        RecordType::TXT => text.to_string(),
        _ => text
            .split_whitespace()
            .map(|t| {
                let t = if t.len() > 1 {
                    t.trim_end_matches('.')
                } else {
                    t
                };
                t.to_ascii_lowercase()
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn outcome_of(spec: &DnsSpec, msg: &Message, server: String, protocol: String) -> Outcome {
    Outcome {
        rcode: u16::from(msg.metadata.response_code),
        answers: answers_of(spec.record_type, &msg.answers),
        server,
        protocol,
    }
}

fn answers_of(rtype: RecordType, records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.record_type() == rtype)
        .filter_map(|r| answer_text(&r.data))
        .collect()
}

/// A name without its trailing dot; the root stays `.`.
fn name_text(n: &Name) -> String {
    let s = n.to_ascii();
    match s.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => s,
    }
}

fn answer_text(data: &RData) -> Option<String> {
    Some(match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => name_text(&n.0),
        RData::NS(n) => name_text(&n.0),
        RData::PTR(n) => name_text(&n.0),
        RData::MX(mx) => format!("{} {}", mx.preference, name_text(&mx.exchange)),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<String>(),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority,
            srv.weight,
            srv.port,
            name_text(&srv.target)
        ),
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            name_text(&soa.mname),
            name_text(&soa.rname),
            soa.serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.minimum
        ),
        RData::CAA(caa) => format!(
            "{} {} \"{}\"",
            caa.flags(),
            caa.tag,
            String::from_utf8_lossy(&caa.value)
        ),
        _ => return None,
    })
}

/// Without `server`: the hosts file, then the resolv.conf name servers.
async fn system_query(spec: &DnsSpec, trace: &mut Trace) -> Result<Outcome, Failure> {
    let rtype = spec.record_type;
    if matches!(rtype, RecordType::A | RecordType::AAAA | RecordType::PTR) {
        trace.begin(Phase::Query);
        let hosts = hickory_resolver::Hosts::from_system().unwrap_or_default();
        let found = hosts.lookup_static_host(&Query::query(spec.qname.clone(), rtype));
        trace.end();
        if let Some(lookup) = found {
            return Ok(Outcome {
                rcode: 0,
                answers: answers_of(rtype, lookup.answers()),
                server: HOSTS_FILE.to_string(),
                protocol: "hosts".to_string(),
            });
        }
    }
    let (servers, per_server) = system_servers();
    let mut last: Option<Failure> = None;
    for (i, server) in servers.iter().enumerate() {
        let is_last = i + 1 == servers.len();
        let attempt = exchange(spec, *server, spec.protocol, trace);
        let result = if is_last {
            attempt.await
        } else {
            match tokio::time::timeout(per_server, attempt).await {
                Ok(r) => r,
                Err(_) => Err(Failure::new(
                    FailureClass::Timeout,
                    format!(
                        "{server} did not answer within {}",
                        crate::duration::human(per_server)
                    ),
                )),
            }
        };
        match result {
            Ok((msg, protocol)) => return Ok(outcome_of(spec, &msg, server.to_string(), protocol)),
            Err(f)
                if matches!(f.class, FailureClass::Connect | FailureClass::Timeout) && !is_last =>
            {
                last = Some(f);
            }
            Err(f) => return Err(f),
        }
    }
    Err(last.unwrap_or_else(|| Failure::new(FailureClass::Dns, "no DNS servers are configured")))
}

/// The servers of `/etc/resolv.conf` and how long to wait for each but the
/// last; 127.0.0.1:53 when the file names none, as the C library does.
fn system_servers() -> (Vec<SocketAddr>, Duration) {
    match hickory_resolver::system_conf::read_system_conf() {
        Ok((config, opts)) => {
            let servers: Vec<SocketAddr> = config
                .name_servers
                .iter()
                .map(|ns| {
                    let port = ns.connections.first().map(|c| c.port).unwrap_or(53);
                    SocketAddr::new(ns.ip, port)
                })
                .collect();
            if servers.is_empty() {
                (vec![SocketAddr::from(([127, 0, 0, 1], 53))], opts.timeout)
            } else {
                (servers, opts.timeout)
            }
        }
        Err(_) => (
            vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            Duration::from_secs(5),
        ),
    }
}

/// Sends the query to `server` and returns the response and the protocol
/// that carried it (a truncated UDP response is asked again over TCP).
async fn exchange(
    spec: &DnsSpec,
    server: SocketAddr,
    protocol: Transport,
    trace: &mut Trace,
) -> Result<(Message, String), Failure> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(spec.qname.clone(), spec.record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    query.set_edns(edns);
    let id = query.metadata.id;
    let bytes = query.to_vec().map_err(|e| {
        Failure::new(
            FailureClass::Internal,
            format!("cannot encode the DNS query for {}: {e}", spec.name),
        )
    })?;

    if protocol == Transport::Udp {
        trace.begin(Phase::Query);
        let resp = udp_exchange(server, &bytes, id).await;
        trace.end();
        let resp = resp?;
        if !resp.metadata.truncation {
            return Ok((resp, "udp".to_string()));
        }
        let resp = tcp_exchange(server, &bytes, id, trace).await?;
        return Ok((resp, "tcp (udp answer truncated)".to_string()));
    }
    let resp = tcp_exchange(server, &bytes, id, trace).await?;
    Ok((resp, "tcp".to_string()))
}

fn io_failure(server: SocketAddr, proto: &str, e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::new(
            FailureClass::Connect,
            format!("connection refused by {server} ({proto}): is a DNS server listening there?"),
        ),
        _ => Failure::new(
            FailureClass::Connect,
            format!("cannot query {server} over {proto}: {e}"),
        ),
    }
}

fn decode(server: SocketAddr, buf: &[u8]) -> Result<Message, Failure> {
    Message::from_vec(buf).map_err(|e| {
        Failure::new(
            FailureClass::Protocol,
            format!("malformed DNS response from {server}: {e}"),
        )
    })
}

async fn udp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, Failure> {
    let local: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| io_failure(server, "udp", &e))?;
    socket
        .connect(server)
        .await
        .map_err(|e| io_failure(server, "udp", &e))?;
    socket
        .send(query)
        .await
        .map_err(|e| io_failure(server, "udp", &e))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| io_failure(server, "udp", &e))?;
        // A datagram too short for a header, or for another query, is stale
        // or stray: keep waiting for ours, as resolvers do.
        if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            continue;
        }
        let msg = decode(server, &buf[..n])?;
        if msg.metadata.message_type == MessageType::Response {
            return Ok(msg);
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    trace: &mut Trace,
) -> Result<Message, Failure> {
    trace.begin(Phase::Connect);
    let stream = TcpStream::connect(server).await;
    trace.end();
    let mut stream = stream.map_err(|e| io_failure(server, "tcp", &e))?;
    trace.begin(Phase::Query);
    let result = tcp_round_trip(&mut stream, server, query, id).await;
    trace.end();
    result
}

async fn tcp_round_trip(
    stream: &mut TcpStream,
    server: SocketAddr,
    query: &[u8],
    id: u16,
) -> Result<Message, Failure> {
    let len = u16::try_from(query.len())
        .map_err(|_| Failure::new(FailureClass::Internal, "DNS query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| io_failure(server, "tcp", &e))?;
    let closed = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Failure::new(
                FailureClass::Protocol,
                format!("{server} closed the TCP connection without answering the DNS query"),
            )
        } else {
            io_failure(server, "tcp", &e)
        }
    };
    let mut len_buf = [0u8; 2];
    stream.read_exact(&mut len_buf).await.map_err(closed)?;
    let len = usize::from(u16::from_be_bytes(len_buf));
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.map_err(closed)?;
    let msg = decode(server, &buf)?;
    if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
        return Err(Failure::new(
            FailureClass::Protocol,
            format!(
                "{server} answered over TCP with a message that is not the response to our query"
            ),
        ));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse() {
        assert_eq!(
            parse_server("10.0.0.2").ok(),
            Some(SocketAddr::from(([10, 0, 0, 2], 53)))
        );
        assert_eq!(
            parse_server("10.0.0.2:5353").ok(),
            Some(SocketAddr::from(([10, 0, 0, 2], 5353)))
        );
        assert_eq!(parse_server("::1").ok().map(|a| a.port()), Some(53));
        assert_eq!(parse_server("[::1]:54").ok().map(|a| a.port()), Some(54));
        assert!(parse_server("dns.example.com").is_err());
        assert!(parse_server("10.0.0.2:0").is_err());
        assert!(parse_server("10.0.0.2:99999").is_err());
    }

    #[test]
    fn names_and_ptr() {
        let q = query_name("192.0.2.10", RecordType::PTR).expect("ptr of ipv4");
        assert_eq!(q.to_ascii(), "10.2.0.192.in-addr.arpa.");
        let q = query_name("2001:db8::1", RecordType::PTR).expect("ptr of ipv6");
        assert!(q.to_ascii().ends_with(".8.b.d.0.1.0.0.2.ip6.arpa."), "{q}");
        assert_eq!(
            query_name("www.Test", RecordType::A)
                .expect("name")
                .to_ascii(),
            "www.test."
        );
        assert!(query_name("192.0.2.10", RecordType::A).is_err());
        assert!(query_name("", RecordType::A).is_err());
        assert!(query_name("a..b", RecordType::A).is_err());
    }

    #[test]
    fn rcodes() {
        assert_eq!(parse_rcode("nxdomain"), Some(3));
        assert_eq!(parse_rcode("REFUSED"), Some(5));
        assert_eq!(parse_rcode("2"), Some(2));
        assert_eq!(parse_rcode("NOPE"), None);
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(rcode_name(11), "RCODE11");
    }

    #[test]
    fn answers_normalize() {
        assert_eq!(
            normalize(RecordType::CNAME, "WWW.Test."),
            normalize(RecordType::CNAME, "www.test")
        );
        assert_eq!(normalize(RecordType::MX, "10  Mail.Test."), "10 mail.test");
        assert_eq!(
            normalize(RecordType::AAAA, "2001:db8:0::10"),
            normalize(RecordType::AAAA, "2001:db8::10")
        );
        assert_ne!(
            normalize(RecordType::TXT, "Hello"),
            normalize(RecordType::TXT, "hello")
        );
        assert_eq!(normalize(RecordType::SRV, "0 0 0 ."), "0 0 0 .");
    }
}
