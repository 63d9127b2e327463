//! The `postgres` probe kind: log in to a PostgreSQL server the way a new
//! client would, run one query in a read-only transaction, and check what
//! came back.
//!
//! ```yaml
//! postgres:
//!   url: postgres://monitor:${PG_PASSWORD}@db:5432/orders?sslmode=verify-full
//!   query: SELECT count(*) FROM pg_stat_activity   # default SELECT 1
//!   ca: /etc/ssl/private-ca.pem                    # for verify-full with a private CA
//!   reuse_connection: false                        # default: a new connection every run
//! expect:
//!   value: "< 180"          # first column of the first row
//!   rows: 1                 # number of rows (a number or a comparison)
//!   in_recovery: false      # a primary (true: a replica)
//!   replication_lag: < 10s  # on a replica
//! ```
//!
//! Every run is measured step by step: `dns` (for a host name), `connect`
//! (the TCP connection, made here rather than inside tokio-postgres so it
//! can be timed on its own), `tls` (the SSLRequest exchange and the TLS
//! handshake, also done here with the shared rustls configurations of
//! [`tlsutil`]), `auth` (startup and authentication through
//! `Config::connect_raw`) and `query` (`BEGIN READ ONLY`, the query, the
//! optional status query and `ROLLBACK`).
//!
//! `sslmode` (in the URL; default `prefer`, as libpq):
//! - `disable`: no TLS.
//! - `prefer`: ask for TLS; if the server answers that it has none, or the
//!   handshake fails, continue without TLS (on a new connection after a
//!   failed handshake, as libpq does). The certificate is not verified.
//! - `require`: TLS or fail; the certificate is not verified (libpq's
//!   `require` without a root certificate file).
//! - `verify-full`: TLS with the chain verified against the system roots
//!   plus `ca`, and the certificate valid for the host of the URL.
//!
//! `allow` and `verify-ca` are refused at load time, as are client
//! certificates. The TLS stream is handed to tokio-postgres as an ordinary
//! stream, so SCRAM runs without channel binding (`channel_binding=require`
//! is refused).
//!
//! The query is one statement. It runs in a read-only transaction, through
//! a portal read in batches so that a query returning many rows costs
//! bounded memory; the first column of the first row becomes a JSON value
//! (see [`cell_json`]) for `value`. When the run knows its timeout
//! ([`run_bounded`]) the transaction sets `statement_timeout` to what is left
//! of it, so the server stops the statement too. Independently of that, a
//! run dropped by its timeout while a statement is running sends the server
//! a cancel request (from a detached task bounded by [`CANCEL_WITHIN`]).
//!
//! With `reuse_connection: true` the connection is kept between runs (in the
//! spec, behind a mutex) and runs that reuse it have only a `query` phase. It
//! is dropped after any run that fails (other than by an expectation), and
//! replaced when the server has closed it, so the next run connects again.
//!
//! Failure classes: `dns`, `connect` (refused, unreachable, the server
//! closed the connection, shutting down or starting up, too many
//! connections, an unknown database), `tls`, `auth` (SQLSTATE class 28, such
//! as a wrong password or no `pg_hba.conf` entry, and a missing CONNECT
//! privilege), `query` (the server's error for the query, e.g. "cannot
//! execute INSERT in a read-only transaction"), `timeout` (the probe's bound,
//! or the server's statement timeout), `protocol` (the port does not speak
//! PostgreSQL), `expectation`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{ChannelBinding, Host, TargetSessionAttrs};
use tokio_postgres::types::{FromSql, Kind, Type};
use tokio_postgres::{CancelToken, Client, Config, NoTls};

use crate::config::read::{Cx, Map};
use crate::config::yaml::Node;
use crate::expect::{shorten, text_of, DurationCmp, NumberCmp, ValueMatcher};
use crate::probe::kept::Kept;
use crate::probe::net::{self, Wording};
use crate::probe::sql::{self, VALUE_SHOWN};
use crate::probe::tlsutil::{self, Handshake, TlsOptions};
use crate::probe::urlutil::percent_decode;
use crate::probe::Trace;
use crate::result::{Failure, FailureClass, Phase};

/// Keys accepted in the `postgres:` section.
pub const KEYS: &[&str] = &["url", "query", "reuse_connection", "ca"];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &[
    "value",
    "rows",
    "in_recovery",
    "replication_lag",
    "certificate_expires_in",
];

/// The query run when none is given.
pub const DEFAULT_QUERY: &str = "SELECT 1";
/// The port when the URL gives none.
const DEFAULT_PORT: u16 = 5432;
/// Rows fetched per round trip while counting a result.
const FETCH_BATCH: i32 = 1000;
/// The longest a detached cancel request may take.
pub const CANCEL_WITHIN: Duration = Duration::from_secs(2);
/// The longest a successful fresh run waits for its connection to close
/// politely (Terminate sent) before the task is aborted.
const CLOSE_WITHIN: Duration = Duration::from_millis(200);

/// The role (primary or replica) and replication lag, in one statement.
/// Lag is 0 on a primary and on a replica whose WAL receiver is connected
/// and has replayed everything it received; otherwise it is the age of the
/// last replayed transaction, or NULL when none was replayed since the
/// replica started.
const STATUS_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN NOT pg_is_in_recovery() THEN 0::float8 \
          WHEN EXISTS (SELECT 1 FROM pg_stat_wal_receiver) \
               AND pg_last_wal_receive_lsn() IS NOT NULL \
               AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
          ELSE GREATEST(0, EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()))::float8 \
     END";

/// `sslmode`, as far as Lookout supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Result<SslMode, String> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(
                "sslmode=allow is not supported; use `prefer` (TLS when the server offers it) or `disable`"
                    .into(),
            ),
            "verify-ca" => Err(
                "sslmode=verify-ca is not supported; use `verify-full`, which also checks the host name"
                    .into(),
            ),
            other => Err(format!(
                "invalid sslmode `{other}`: expected disable, prefer, require or verify-full"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or IP address; `addr` is the URL's `hostaddr`, connected
    /// to instead of resolving `host` (which still names the server for TLS).
    Tcp {
        host: String,
        port: u16,
        addr: Option<IpAddr>,
    },
    /// A directory holding the server's Unix socket `.s.PGSQL.<port>`.
    Unix { dir: PathBuf, port: u16 },
}

/// What the server returned must be.
#[derive(Debug, Clone, Default)]
pub struct PostgresExpect {
    pub value: Option<ValueMatcher>,
    pub rows: Option<NumberCmp>,
    pub in_recovery: Option<bool>,
    pub replication_lag: Option<DurationCmp>,
    pub certificate_expires_in: Option<DurationCmp>,
}

impl PostgresExpect {
    fn wants_status(&self) -> bool {
        self.in_recovery.is_some() || self.replication_lag.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct PostgresSpec {
    /// The URL as written, password masked.
    pub shown: String,
    /// Login settings for `connect_raw` (TLS is done here, so its sslmode
    /// is always `disable`).
    pub config: Arc<Config>,
    pub endpoint: Endpoint,
    pub sslmode: SslMode,
    pub tls: TlsOptions,
    pub query: String,
    pub reuse_connection: bool,
    pub expect: Box<PostgresExpect>,
    kept: Kept<Session>,
}

impl PostgresSpec {
    pub fn target(&self) -> String {
        self.shown.clone()
    }
}

// ---------------------------------------------------------------------------
// Compiling the configuration

pub fn compile(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    expect: Option<&Map<'_>>,
) -> Option<PostgresSpec> {
    let m = cx.map(node, path, KEYS)?;
    let url = m.required_parsed(cx, "url", parse_url);
    let query = m
        .parsed(cx, "query", |q| match q.trim() {
            "" => Err("the query is empty".to_string()),
            _ => Ok(q.to_string()),
        })
        .map(|q| q.unwrap_or_else(|| DEFAULT_QUERY.to_string()));
    let reuse_connection = m.bool_or(cx, "reuse_connection", false);
    let tls = tlsutil::compile_options(cx, &m);
    let mut ok = true;
    if let (Some(u), Some(t)) = (&url, &tls) {
        if t.ca.is_some() && u.sslmode != SslMode::VerifyFull {
            m.error_at(
                cx,
                "ca",
                format!(
                    "`ca` is used only with sslmode=verify-full, and the URL has sslmode={} \
                     (which does not verify the certificate); add ?sslmode=verify-full to the URL",
                    u.sslmode.as_str()
                ),
            );
            ok = false;
        }
    }
    let expect = compile_expect(cx, expect, url.as_ref().map(|u| u.sslmode));

    let url = url?;
    let mut tls = tls?;
    // prefer and require encrypt without verifying, as libpq does.
    tls.insecure = url.sslmode != SslMode::VerifyFull;
    if !ok {
        return None;
    }
    Some(PostgresSpec {
        shown: url.shown,
        config: Arc::new(url.config),
        endpoint: url.endpoint,
        sslmode: url.sslmode,
        tls,
        query: query?,
        reuse_connection: reuse_connection?,
        expect: Box::new(expect?),
        kept: Kept::default(),
    })
}

/// A URL taken apart: what [`parse_url`] returns.
#[derive(Debug, Clone)]
pub struct ParsedUrl {
    pub shown: String,
    pub config: Config,
    pub endpoint: Endpoint,
    pub sslmode: SslMode,
}

/// Parses and checks a `postgres://` or `postgresql://` URL. Errors say
/// what is wrong in words and never contain the password.
pub fn parse_url(text: &str) -> Result<ParsedUrl, String> {
    let text = text.trim();
    let shown = shown_url(text);
    let lower = text.to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err(match text.find("://") {
            Some(i) => format!(
                "unsupported URL scheme `{}`: a postgres probe needs a postgres:// or postgresql:// URL",
                &text[..i]
            ),
            None => format!(
                "invalid URL `{shown}`: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ),
        });
    }
    // tokio-postgres wants the scheme in lower case.
    let scheme_len = text.find("://").unwrap_or(0);
    let normal = format!("{}{}", &lower[..scheme_len], &text[scheme_len..]);

    // Take out what Lookout handles itself (sslmode) or refuses in words.
    let (base, query) = match normal.split_once('?') {
        Some((b, q)) => (b.to_string(), q.to_string()),
        None => (normal.clone(), String::new()),
    };
    let mut sslmode = SslMode::Prefer;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        let value = percent_decode(v);
        match key.as_str() {
            "sslmode" => sslmode = SslMode::parse(&value)?,
            "sslrootcert" => {
                return Err(
                    "sslrootcert is not read from the URL: give the CA file in the probe's `ca` key"
                        .into(),
                )
            }
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!(
                    "`{key}`: client certificates are not supported; log in with a password"
                ))
            }
            "sslnegotiation" if value == "postgres" => {}
            "sslnegotiation" => {
                return Err(format!(
                    "sslnegotiation={value} is not supported; Lookout asks for TLS with an SSLRequest (sslnegotiation=postgres)"
                ))
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let rebuilt = if kept.is_empty() {
        base
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = Config::from_str(&rebuilt).map_err(|e| {
        let why = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        format!("invalid URL `{shown}`: {why}")
    })?;

    let endpoint = endpoint(&config)?;
    if matches!(endpoint, Endpoint::Unix { .. })
        && matches!(sslmode, SslMode::Require | SslMode::VerifyFull)
    {
        return Err(format!(
            "sslmode={} cannot be used with a Unix socket (TLS is not used over Unix sockets); use sslmode=disable",
            sslmode.as_str()
        ));
    }
    match config.get_user() {
        Some(u) if !u.is_empty() => {}
        _ => {
            return Err(format!(
                "`{shown}` names no user: write postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ))
        }
    }
    if config.get_target_session_attrs() != TargetSessionAttrs::Any {
        return Err(
            "target_session_attrs is not supported: to check that the server is a primary or a \
             replica, use `expect: { in_recovery: false }` (or `true`)"
                .into(),
        );
    }
    if config.get_channel_binding() == ChannelBinding::Require {
        return Err(
            "channel_binding=require is not supported: Lookout authenticates with SCRAM without channel binding"
                .into(),
        );
    }
    if let Some(pw) = config.get_password() {
        crate::redact::register(&String::from_utf8_lossy(pw));
    }
    if config.get_application_name().is_none() {
        config.application_name("lookout");
    }
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    Ok(ParsedUrl {
        shown,
        config,
        endpoint,
        sslmode,
    })
}

fn endpoint(config: &Config) -> Result<Endpoint, String> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    if hosts.len() > 1 || addrs.len() > 1 || ports.len() > 1 {
        return Err(
            "the URL names more than one host or port; a probe checks one server, so write one probe per server"
                .into(),
        );
    }
    let port = ports.first().copied().unwrap_or(DEFAULT_PORT);
    let addr = addrs.first().copied();
    match hosts.first() {
        Some(Host::Tcp(h)) if !h.is_empty() => Ok(Endpoint::Tcp {
            host: h.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            addr,
        }),
        Some(Host::Unix(dir)) => Ok(Endpoint::Unix {
            dir: dir.clone(),
            port,
        }),
        _ => match addr {
            Some(ip) => Ok(Endpoint::Tcp {
                host: ip.to_string(),
                port,
                addr: Some(ip),
            }),
            None => Err(
                "the URL names no host: write postgres://USER:PASSWORD@HOST:PORT/DATABASE".into(),
            ),
        },
    }
}

/// The URL with the password masked, in the user part and in a
/// `password=` parameter.
pub fn shown_url(text: &str) -> String {
    let masked = crate::redact::mask_url_passwords(text);
    match masked.split_once('?') {
        None => masked,
        Some((base, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if percent_decode(k) == "password" => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
    }
}

fn compile_expect(
    cx: &mut Cx,
    expect: Option<&Map<'_>>,
    sslmode: Option<SslMode>,
) -> Option<PostgresExpect> {
    let Some(em) = expect else {
        return Some(PostgresExpect::default());
    };
    let value = sql::compile_value(cx, em, "a value or a comparison such as `> 0`");
    let rows = em.parsed(cx, "rows", NumberCmp::parse);
    let in_recovery = em.opt_bool(cx, "in_recovery");
    let replication_lag = em.parsed(cx, "replication_lag", DurationCmp::parse);
    let mut certificate_expires_in = tlsutil::compile_expiry(cx, Some(em));
    if let (Some(Some(_)), Some(SslMode::Disable)) = (&certificate_expires_in, sslmode) {
        em.error_at(
            cx,
            "certificate_expires_in",
            "needs TLS, and the URL has sslmode=disable",
        );
        certificate_expires_in = None;
    }
    Some(PostgresExpect {
        value: value?,
        rows: rows?,
        in_recovery: in_recovery?,
        replication_lag: replication_lag?,
        certificate_expires_in: certificate_expires_in?,
    })
}

// ---------------------------------------------------------------------------
// Values

/// The first column of the first row, as read from the server (binary
/// format) and turned into JSON by [`cell_json`].
struct Cell(Result<Json, String>);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Cell, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(cell_json(ty, raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Cell, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Ok(Json::Null)))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Turns one value in PostgreSQL's binary format into JSON: integers and
/// floats as numbers, `numeric` as a number when it is finite (its text
/// otherwise), `bool`, text types, enums, `json`/`jsonb` as their JSON,
/// `timestamptz` as RFC 3339 in UTC (`2024-01-02T03:04:05Z`), `timestamp`,
/// `date` and `time` as ISO 8601 text, `interval` as PostgreSQL writes it,
/// `uuid`, `inet`/`cidr`, `bytea` as `\x...`. Any other type is taken as
/// text when its bytes are printable UTF-8; otherwise the error names the
/// type (cast it to `::text` in the query).
pub fn cell_json(ty: &Type, raw: &[u8]) -> Result<Json, String> {
    if let Kind::Domain(base) = ty.kind() {
        return cell_json(base, raw);
    }
    if let Kind::Enum(_) = ty.kind() {
        return Ok(Json::String(String::from_utf8_lossy(raw).into_owned()));
    }
    let bad = || format!("cannot read a `{}` value of {} bytes", ty.name(), raw.len());
    let v = match *ty {
        Type::BOOL => Json::Bool(raw.first().is_some_and(|b| *b != 0)),
        Type::INT2 => Json::from(i16::from_be_bytes(fixed(raw).ok_or_else(bad)?)),
        Type::INT4 => Json::from(i32::from_be_bytes(fixed(raw).ok_or_else(bad)?)),
        Type::INT8 => Json::from(i64::from_be_bytes(fixed(raw).ok_or_else(bad)?)),
        Type::OID | Type::XID | Type::CID => {
            Json::from(u32::from_be_bytes(fixed(raw).ok_or_else(bad)?))
        }
        Type::FLOAT4 => float_json(f64::from(f32::from_be_bytes(
            fixed(raw).ok_or_else(bad)?,
        ))),
        Type::FLOAT8 => float_json(f64::from_be_bytes(fixed(raw).ok_or_else(bad)?)),
        Type::NUMERIC => {
            let text = numeric_text(raw).ok_or_else(bad)?;
            number_or_text(&text)
        }
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::CHAR
        | Type::XML
        | Type::REGCLASS
        | Type::REGTYPE
        | Type::REGPROC => Json::String(String::from_utf8_lossy(raw).into_owned()),
        Type::JSON => json_or_text(raw),
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => json_or_text(rest),
            _ => return Err(bad()),
        },
        Type::TIMESTAMPTZ => {
            let us = i64::from_be_bytes(fixed(raw).ok_or_else(bad)?);
            Json::String(timestamp_text(us, true))
        }
        Type::TIMESTAMP => {
            let us = i64::from_be_bytes(fixed(raw).ok_or_else(bad)?);
            Json::String(timestamp_text(us, false))
        }
        Type::DATE => {
            let days = i32::from_be_bytes(fixed(raw).ok_or_else(bad)?);
            Json::String(date_text(days))
        }
        Type::TIME => {
            let us = i64::from_be_bytes(fixed(raw).ok_or_else(bad)?);
            Json::String(time_text(us))
        }
        Type::INTERVAL => Json::String(interval_text(raw).ok_or_else(bad)?),
        Type::UUID => {
            let b: [u8; 16] = fixed(raw).ok_or_else(bad)?;
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Json::String(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ))
        }
        Type::INET | Type::CIDR => Json::String(inet_text(raw).ok_or_else(bad)?),
        Type::BYTEA => {
            let h: String = raw.iter().map(|x| format!("{x:02x}")).collect();
            Json::String(format!("\\x{h}"))
        }
        _ => match std::str::from_utf8(raw) {
            Ok(s) if !s.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
                Json::String(s.to_string())
            }
            _ => {
                return Err(format!(
                    "a value of type `{}` that Lookout cannot read; cast it to text in the query (`::text`)",
                    ty.name()
                ))
            }
        },
    };
    Ok(v)
}

fn fixed<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
    <[u8; N]>::try_from(raw).ok()
}

fn float_json(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::String("NaN".into()),
        None if f > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

fn number_or_text(text: &str) -> Json {
    if let Ok(i) = text.parse::<i64>() {
        return Json::from(i);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => float_json(f),
        _ => Json::String(text.to_string()),
    }
}

fn json_or_text(raw: &[u8]) -> Json {
    let text = String::from_utf8_lossy(raw);
    serde_json::from_str(&text).unwrap_or_else(|_| Json::String(text.into_owned()))
}

fn be_i16(raw: &[u8], at: usize) -> Option<i16> {
    raw.get(at..at + 2)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(i16::from_be_bytes)
}

/// `numeric` in binary (base-10000 digits) as PostgreSQL prints it.
fn numeric_text(raw: &[u8]) -> Option<String> {
    let ndigits = usize::try_from(be_i16(raw, 0)?).ok()?;
    let weight = i32::from(be_i16(raw, 2)?);
    let sign = be_i16(raw, 4)? as u16;
    let dscale = usize::try_from(be_i16(raw, 6)?).ok()?;
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(be_i16(raw, 8 + 2 * i)?);
    }
    let digit = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                out.push_str(&digit(i).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Some(out)
}

/// Microseconds from 2000-01-01 00:00:00 (PostgreSQL's epoch).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

fn timestamp_text(us: i64, utc: bool) -> String {
    match us {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    let Some(t) = us
        .checked_add(PG_EPOCH_US)
        .and_then(chrono::DateTime::from_timestamp_micros)
    else {
        return format!("{us} microseconds after 2000-01-01");
    };
    if utc {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    } else {
        t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
    }
}

fn date_text(days: i32) -> String {
    match days {
        i32::MAX => return "infinity".into(),
        i32::MIN => return "-infinity".into(),
        _ => {}
    }
    chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("{days} days after 2000-01-01"))
}

fn time_text(us: i64) -> String {
    clock(us.div_euclid(1_000_000), us.rem_euclid(1_000_000))
}

/// `HH:MM:SS` from seconds, and `.ffffff` (without trailing zeros) when
/// `frac`, in microseconds, is not zero.
fn clock(secs: i64, frac: i64) -> String {
    let mut s = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// `interval` as PostgreSQL's default style writes it: `1 year 2 mons 3
/// days 04:05:06.5`.
fn interval_text(raw: &[u8]) -> Option<String> {
    let us = i64::from_be_bytes(fixed(raw.get(0..8)?)?);
    let days = i32::from_be_bytes(fixed(raw.get(8..12)?)?);
    let months = i32::from_be_bytes(fixed(raw.get(12..16)?)?);
    let mut parts = Vec::new();
    let (years, mons) = (months / 12, months % 12);
    let unit = |n: i32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if years != 0 {
        parts.push(unit(years, "year", "years"));
    }
    if mons != 0 {
        parts.push(unit(mons, "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days, "day", "days"));
    }
    if us != 0 || parts.is_empty() {
        let sign = if us < 0 { "-" } else { "" };
        // |i64::MIN| / 10^6 and anything % 10^6 fit an i64.
        let abs = us.unsigned_abs();
        let (secs, frac) = ((abs / 1_000_000) as i64, (abs % 1_000_000) as i64);
        parts.push(format!("{sign}{}", clock(secs, frac)));
    }
    Some(parts.join(" "))
}

fn inet_text(raw: &[u8]) -> Option<String> {
    let (&family, rest) = raw.split_first()?;
    let (&bits, rest) = rest.split_first()?;
    let (&is_cidr, rest) = rest.split_first()?;
    let (_, addr) = rest.split_first()?;
    let (ip, full) = match family {
        2 => (IpAddr::from(<[u8; 4]>::try_from(addr).ok()?), 32),
        3 => (IpAddr::from(<[u8; 16]>::try_from(addr).ok()?), 128),
        _ => return None,
    };
    Some(if bits == full && is_cidr == 0 {
        ip.to_string()
    } else {
        format!("{ip}/{bits}")
    })
}

// ---------------------------------------------------------------------------
// Running

/// Aborts the task that drives a connection when dropped, which closes the
/// socket; nothing of a run outlives it.
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a cancel request goes: the address the session is connected to.
#[derive(Debug, Clone)]
enum Remote {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remote::Tcp(a) => write!(f, "{a}"),
            Remote::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A logged-in connection.
struct Session {
    client: Client,
    task: ConnTask,
    remote: Remote,
    server_version: String,
    tls: Option<Handshake>,
}

impl Session {
    /// Closes politely (Terminate), bounded; the task is aborted after that.
    async fn close(self) {
        let Session { client, task, .. } = self;
        drop(client);
        let mut task = task;
        let _ = tokio::time::timeout(CLOSE_WITHIN, &mut task.0).await;
    }
}

/// Sends a cancel request for the session's running statement when the run
/// is dropped (by its timeout) while the statement is still running.
struct CancelOnDrop {
    token: CancelToken,
    remote: Remote,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let token = self.token.clone();
        let remote = self.remote.clone();
        handle.spawn(async move {
            let _ = tokio::time::timeout(CANCEL_WITHIN, send_cancel(token, remote)).await;
        });
    }
}

async fn send_cancel(token: CancelToken, remote: Remote) {
    let _ = match remote {
        Remote::Tcp(a) => match TcpStream::connect(a).await {
            Ok(s) => token.cancel_query_raw(s, NoTls).await,
            Err(_) => return,
        },
        Remote::Unix(p) => match UnixStream::connect(p).await {
            Ok(s) => token.cancel_query_raw(s, NoTls).await,
            Err(_) => return,
        },
    };
}

pub async fn run(spec: &PostgresSpec, trace: &mut Trace) -> Result<(), Failure> {
    let timeout = trace.timeout();
    run_bounded(spec, trace, timeout).await
}

/// One run. With `timeout` (the probe's), the transaction's
/// `statement_timeout` is set to what is left of it (at least 1 ms), so
/// the server gives up on the statement when the probe does.
pub async fn run_bounded(
    spec: &PostgresSpec,
    trace: &mut Trace,
    timeout: Option<Duration>,
) -> Result<(), Failure> {
    let mut slot = if spec.reuse_connection {
        Some(spec.kept.lock().await)
    } else {
        None
    };
    let kept = slot
        .as_mut()
        .and_then(|s| s.take())
        .filter(|s| !s.client.is_closed());
    let reused = kept.is_some();
    let mut session = match kept {
        Some(s) => s,
        None => connect(spec, trace).await?,
    };
    trace.detail("connection", if reused { "reused" } else { "new" });
    trace.detail("remote", session.remote.to_string());
    trace.detail("server_version", session.server_version.clone());
    if let Some(hs) = &session.tls {
        trace.detail("tls_version", hs.version.clone());
        if let Some(leaf) = &hs.leaf {
            leaf.record(trace);
        }
    }
    if let Some(cmp) = &spec.expect.certificate_expires_in {
        let leaf = session.tls.as_ref().and_then(|h| h.leaf.as_ref());
        tlsutil::check_expiry(trace, cmp, leaf);
    }

    let outcome = query(spec, &mut session, trace, timeout).await;
    match (outcome.is_ok(), slot.as_mut()) {
        (true, Some(slot)) => **slot = Some(session),
        // After a failure the connection is not kept, but still closed
        // politely when the server is there to hear it.
        _ => session.close().await,
    }
    outcome
}

/// What the query returned.
struct Answer {
    rows: u64,
    first: Option<Result<Json, String>>,
    columns: usize,
}

async fn query(
    spec: &PostgresSpec,
    session: &mut Session,
    trace: &mut Trace,
    timeout: Option<Duration>,
) -> Result<(), Failure> {
    trace.begin(Phase::Query);
    // Armed while the server may be running our statement: a run dropped
    // by its timeout then asks the server to cancel it.
    let mut guard = CancelOnDrop {
        token: session.client.cancel_token(),
        remote: session.remote.clone(),
        armed: true,
    };
    let statement_timeout = timeout.map(|t| {
        t.saturating_sub(trace.elapsed())
            .max(Duration::from_millis(1))
    });
    let done = exchange(spec, &mut session.client, statement_timeout).await;
    guard.armed = false;
    trace.end();
    let (answer, status) = done?;
    record(spec, trace, &answer, status);
    Ok(())
}

/// Role and replication lag in seconds, from [`STATUS_SQL`].
type Status = (bool, Option<f64>);

/// The transaction: the query read in batches, the status query when
/// asked, and the rollback.
async fn exchange(
    spec: &PostgresSpec,
    client: &mut Client,
    statement_timeout: Option<Duration>,
) -> Result<(Answer, Option<Status>), Failure> {
    let db = |e: tokio_postgres::Error| failure(&e, Stage::Query);
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(db)?;
    if let Some(left) = statement_timeout {
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            left.as_millis().max(1)
        ))
        .await
        .map_err(db)?;
    }
    let stmt = tx.prepare(&spec.query).await.map_err(db)?;
    let columns = stmt.columns().len();
    let portal = tx.bind(&stmt, &[]).await.map_err(db)?;
    let mut rows: u64 = 0;
    let mut first = None;
    loop {
        let batch = tx.query_portal(&portal, FETCH_BATCH).await.map_err(db)?;
        if first.is_none() && columns > 0 {
            if let Some(row) = batch.first() {
                first = Some(match row.try_get::<_, Cell>(0) {
                    Ok(c) => c.0,
                    Err(e) => Err(e.to_string()),
                });
            }
        }
        rows += batch.len() as u64;
        if batch.len() < FETCH_BATCH as usize {
            break;
        }
    }
    let status = if spec.expect.wants_status() {
        let row = tx.query_one(STATUS_SQL, &[]).await.map_err(db)?;
        let bad = |e: tokio_postgres::Error| {
            Failure::new(FailureClass::Protocol, format!("status query: {e}"))
        };
        Some((row.try_get(0).map_err(bad)?, row.try_get(1).map_err(bad)?))
    } else {
        None
    };
    drop(portal);
    tx.rollback().await.map_err(db)?;
    Ok((
        Answer {
            rows,
            first,
            columns,
        },
        status,
    ))
}

/// Records details and checks expectations.
fn record(spec: &PostgresSpec, trace: &mut Trace, answer: &Answer, status: Option<Status>) {
    trace.detail("rows", answer.rows);
    let first = match &answer.first {
        Some(Ok(v)) => {
            trace.detail("value", shorten(&text_of(v), VALUE_SHOWN));
            Ok(v)
        }
        Some(Err(e)) => Err(e.as_str()),
        None if answer.columns == 0 => Err("the query returns no columns"),
        None => Err("no rows"),
    };
    if let Some(m) = &spec.expect.value {
        sql::check_value(trace, m, first);
    }
    if let Some(cmp) = &spec.expect.rows {
        trace.check(
            format!("rows {cmp}"),
            cmp.holds(answer.rows as f64),
            format!("{} rows", answer.rows),
        );
    }
    if let Some((in_recovery, lag)) = status {
        trace.detail("in_recovery", in_recovery);
        let role = if in_recovery {
            "a replica"
        } else {
            "a primary"
        };
        if let Some(want) = spec.expect.in_recovery {
            trace.check(
                format!("in_recovery {want}"),
                in_recovery == want,
                format!("{in_recovery} ({role})"),
            );
        }
        if let Some(lag) = lag {
            trace.detail("replication_lag_seconds", lag);
        }
        if let Some(cmp) = &spec.expect.replication_lag {
            let expectation = format!("replication_lag {cmp}");
            match lag {
                Some(secs) => {
                    let d = Duration::try_from_secs_f64(secs).unwrap_or_default();
                    let shown = if in_recovery {
                        crate::duration::human(d)
                    } else {
                        format!("{} ({role})", crate::duration::human(d))
                    };
                    trace.check(expectation, cmp.holds(d), shown);
                }
                None => trace.check(
                    expectation,
                    false,
                    "unknown: the replica is not streaming and has replayed no transaction since it started",
                ),
            }
        }
    }
}

/// Where in the run an error happened, for its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Startup and authentication.
    Login,
    Query,
}

/// The class of a server error (by SQLSTATE) at a stage of the run.
pub fn class_of(code: &str, message: &str, stage: Stage) -> FailureClass {
    match code {
        c if c.starts_with("28") => FailureClass::Auth,
        "42501" if stage == Stage::Login => FailureClass::Auth,
        "3D000" => FailureClass::Connect,
        "57014" if message.contains("statement timeout") => FailureClass::Timeout,
        c if c.starts_with("57P") || c.starts_with("08") => FailureClass::Connect,
        "53300" => FailureClass::Connect,
        _ if stage == Stage::Login => FailureClass::Connect,
        _ => FailureClass::Query,
    }
}

/// A tokio-postgres error as a failure with the server's own words.
fn failure(e: &tokio_postgres::Error, stage: Stage) -> Failure {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let class = class_of(code, db.message(), stage);
        let mut text = format!("{} (SQLSTATE {code})", db.message());
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        let msg = match (stage, class) {
            (Stage::Login, FailureClass::Auth) => format!("login refused: {text}"),
            (Stage::Login, _) => format!("the server refused the connection: {text}"),
            (Stage::Query, FailureClass::Timeout) => {
                format!("the query ran longer than the statement timeout: {text}")
            }
            (Stage::Query, FailureClass::Connect) => {
                format!("the server ended the connection during the query: {text}")
            }
            (Stage::Query, _) => format!("query failed: {text}"),
        };
        return Failure::new(class, msg);
    }
    let during = match stage {
        Stage::Login => "during login",
        Stage::Query => "during the query",
    };
    if e.is_closed() {
        return Failure::new(
            FailureClass::Connect,
            format!("the server closed the connection {during}"),
        );
    }
    let kind = e.to_string();
    let source = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let detail = if source.is_empty() {
        kind.clone()
    } else {
        format!("{kind}: {source}")
    };
    let class = if kind.starts_with("authentication error") {
        FailureClass::Auth
    } else if kind.starts_with("invalid configuration") && source.contains("password") {
        return Failure::new(
            FailureClass::Auth,
            "the server asks for a password and the URL gives none",
        );
    } else if kind.starts_with("unexpected message") || kind.starts_with("error parsing") {
        return Failure::new(
            FailureClass::Protocol,
            format!(
                "the server does not speak the PostgreSQL protocol as expected ({detail} {during})"
            ),
        );
    } else if kind.starts_with("error communicating")
        || kind.starts_with("error encoding")
        || stage == Stage::Login
    {
        FailureClass::Connect
    } else {
        FailureClass::Query
    };
    Failure::new(class, format!("{detail} ({during})"))
}

/// Connects, negotiates TLS and logs in.
async fn connect(spec: &PostgresSpec, trace: &mut Trace) -> Result<Session, Failure> {
    match &spec.endpoint {
        Endpoint::Unix { dir, port } => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            trace.begin(Phase::Connect);
            let done = UnixStream::connect(&path).await;
            trace.end();
            let stream = done
                .map_err(|e| net::connect_failure(&path.display().to_string(), &e, Wording::Tcp))?;
            trace.begin(Phase::Auth);
            login(spec, stream, Remote::Unix(path), None, trace).await
        }
        Endpoint::Tcp { host, port, addr } => {
            // Built (and cached) before any phase starts, so loading the
            // trust store never counts as TLS time.
            let tls_config = match spec.sslmode {
                SslMode::Disable => None,
                _ => Some(net::tls_config(&spec.tls).await?),
            };
            let addrs = match addr {
                Some(ip) => vec![SocketAddr::new(*ip, *port)],
                None => net::resolve(host, *port, Wording::Tcp, trace).await?,
            };
            let (mut tcp, remote) = connect_tcp(host, &addrs, trace).await?;
            let Some(config) = tls_config else {
                trace.begin(Phase::Auth);
                return login(spec, tcp, Remote::Tcp(remote), None, trace).await;
            };
            trace.begin(Phase::Tls);
            let answer = ssl_request(&mut tcp).await.map_err(|e| {
                Failure::new(
                    FailureClass::Connect,
                    format!("{remote} closed the connection when asked for TLS: {e}"),
                )
            })?;
            match answer {
                b'S' => {}
                b'N' if spec.sslmode == SslMode::Prefer => {
                    // The server has no TLS: log in in plain text, as libpq
                    // does; the refusal counts as part of the login.
                    trace.waiting_for = Some(Phase::Auth);
                    return login(spec, tcp, Remote::Tcp(remote), None, trace).await;
                }
                b'N' => {
                    return Err(Failure::new(
                        FailureClass::Tls,
                        format!(
                            "{remote} does not accept TLS connections (sslmode={} needs ssl = on on the server)",
                            spec.sslmode.as_str()
                        ),
                    ))
                }
                other => {
                    return Err(Failure::new(
                        FailureClass::Protocol,
                        format!(
                            "{remote} answered the TLS request with byte 0x{other:02x}, not as a PostgreSQL server would"
                        ),
                    ))
                }
            }
            let name = net::server_name(host)?;
            let done = tlsutil::handshake(tcp, name, &config, &[b"postgresql"]).await;
            trace.end();
            match done {
                Ok((stream, hs)) => {
                    trace.begin(Phase::Auth);
                    login(spec, stream, Remote::Tcp(remote), Some(hs), trace).await
                }
                Err(f) if spec.sslmode == SslMode::Prefer => {
                    // As libpq: a failed handshake with `prefer` is retried
                    // without TLS on a new connection.
                    trace.detail("tls_fallback", f.message);
                    let (tcp, remote) = connect_tcp(host, &[remote], trace).await?;
                    trace.begin(Phase::Auth);
                    login(spec, tcp, Remote::Tcp(remote), None, trace).await
                }
                Err(f) => Err(net::tls_failure(&f, &remote.to_string(), trace)),
            }
        }
    }
}

/// Sends PostgreSQL's SSLRequest and reads the one-byte answer. Exactly
/// one byte is read, so nothing sent before the handshake can be mistaken
/// for part of it.
async fn ssl_request(tcp: &mut TcpStream) -> std::io::Result<u8> {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    tcp.write_all(&SSL_REQUEST).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    Ok(answer[0])
}

/// Connects to `host` at one of `addrs` (phase `connect`).
async fn connect_tcp(
    host: &str,
    addrs: &[SocketAddr],
    trace: &mut Trace,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let (tcp, remote) = net::connect(host, addrs, Wording::Tcp, trace).await?;
    let _ = tcp.set_nodelay(true);
    Ok((tcp, remote))
}

/// Startup and authentication over an established stream (the `auth`
/// phase, begun by the caller); spawns the task that drives the connection.
async fn login<S>(
    spec: &PostgresSpec,
    stream: S,
    remote: Remote,
    tls: Option<Handshake>,
    trace: &mut Trace,
) -> Result<Session, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let done = spec.config.connect_raw(stream, NoTls).await;
    trace.end();
    let (client, connection) = done.map_err(|e| {
        let mut f = failure(&e, Stage::Login);
        f.message = format!("{remote}: {}", f.message);
        f
    })?;
    let server_version = connection
        .parameter("server_version")
        .unwrap_or_default()
        .to_string();
    let task = ConnTask(tokio::spawn(async move {
        let _ = connection.await;
    }));
    Ok(Session {
        client,
        task,
        remote,
        server_version,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_sslmode_taken_out() {
        let p = parse_url("postgres://monitor:pw-secret-1@db.example:6432/orders?sslmode=require")
            .expect("valid");
        assert_eq!(p.sslmode, SslMode::Require);
        assert_eq!(
            p.endpoint,
            Endpoint::Tcp {
                host: "db.example".into(),
                port: 6432,
                addr: None
            }
        );
        assert_eq!(p.config.get_user(), Some("monitor"));
        assert_eq!(p.config.get_dbname(), Some("orders"));
        assert_eq!(p.config.get_application_name(), Some("lookout"));
        assert_eq!(
            p.shown,
            "postgres://monitor:***@db.example:6432/orders?sslmode=require"
        );

        let p = parse_url("POSTGRESQL://u@127.0.0.1/x").expect("valid");
        assert_eq!(p.sslmode, SslMode::Prefer);
        assert!(matches!(p.endpoint, Endpoint::Tcp { port: 5432, .. }));

        let p = parse_url("postgres://u@%2Frun%2Fpg:5433/x").expect("unix socket");
        assert_eq!(
            p.endpoint,
            Endpoint::Unix {
                dir: PathBuf::from("/run/pg"),
                port: 5433
            }
        );
        let p = parse_url("postgres://u@[::1]:5433/x").expect("ipv6");
        assert!(matches!(p.endpoint, Endpoint::Tcp { ref host, .. } if host == "::1"));
    }

    #[test]
    fn bad_urls_are_explained_without_the_password() {
        let table: &[(&str, &str)] = &[
            (
                "mysql://u:pw-secret-2@h/db",
                "unsupported URL scheme `mysql`",
            ),
            ("host=db user=u", "expected postgres://"),
            (
                "postgres://u:pw-secret-2@h/db?sslmode=sometimes",
                "invalid sslmode `sometimes`",
            ),
            (
                "postgres://u:pw-secret-2@h/db?sslmode=verify-ca",
                "verify-ca is not supported",
            ),
            (
                "postgres://u:pw-secret-2@h/db?sslrootcert=/x.pem",
                "`ca` key",
            ),
            (
                "postgres://u:pw-secret-2@h:notaport/db",
                "invalid URL `postgres://u:***@h:notaport/db`",
            ),
            ("postgres://u:pw-secret-2@h/db?bogus=1", "bogus"),
            ("postgres://h/db", "names no user"),
            ("postgres://u@a,b/db", "more than one host"),
            ("postgres://u@/db", "names no host"),
            (
                "postgres://u@h/db?target_session_attrs=read-write",
                "in_recovery",
            ),
            ("postgres://u@%2Frun/db?sslmode=require", "Unix socket"),
            (
                "postgres://u:pw-secret-2@h/db?password=pw-secret-2&port=x",
                "invalid URL",
            ),
        ];
        for (url, words) in table {
            let e = parse_url(url).expect_err(url);
            assert!(e.contains(words), "`{words}` not in `{e}` for {url}");
            assert!(!e.contains("pw-secret-2"), "password echoed: {e}");
        }
    }

    #[test]
    fn shown_urls_mask_passwords_in_both_places() {
        assert_eq!(
            shown_url("postgres://u:p4ss@h/db?password=p4ss&sslmode=disable"),
            "postgres://u:***@h/db?password=***&sslmode=disable"
        );
    }

    #[test]
    fn server_errors_are_classed_by_sqlstate() {
        let table: &[(&str, &str, Stage, FailureClass)] = &[
            (
                "28P01",
                "password authentication failed",
                Stage::Login,
                FailureClass::Auth,
            ),
            (
                "28000",
                "no pg_hba.conf entry",
                Stage::Login,
                FailureClass::Auth,
            ),
            (
                "42501",
                "permission denied for database",
                Stage::Login,
                FailureClass::Auth,
            ),
            (
                "3D000",
                "database \"x\" does not exist",
                Stage::Login,
                FailureClass::Connect,
            ),
            (
                "57P03",
                "the database system is starting up",
                Stage::Login,
                FailureClass::Connect,
            ),
            (
                "53300",
                "too many clients",
                Stage::Login,
                FailureClass::Connect,
            ),
            (
                "57P01",
                "terminating connection",
                Stage::Query,
                FailureClass::Connect,
            ),
            (
                "57014",
                "canceling statement due to statement timeout",
                Stage::Query,
                FailureClass::Timeout,
            ),
            (
                "57014",
                "canceling statement due to user request",
                Stage::Query,
                FailureClass::Query,
            ),
            (
                "42P01",
                "relation does not exist",
                Stage::Query,
                FailureClass::Query,
            ),
            (
                "25006",
                "cannot execute INSERT in a read-only transaction",
                Stage::Query,
                FailureClass::Query,
            ),
        ];
        for (code, msg, stage, want) in table {
            assert_eq!(class_of(code, msg, *stage), *want, "{code} {msg}");
        }
    }

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ndigits.to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn binary_values_become_json() {
        let j = |ty: Type, raw: &[u8]| cell_json(&ty, raw).expect("readable");
        assert_eq!(j(Type::INT4, &42i32.to_be_bytes()), Json::from(42));
        assert_eq!(j(Type::INT8, &(-7i64).to_be_bytes()), Json::from(-7));
        assert_eq!(j(Type::BOOL, &[1]), Json::Bool(true));
        assert_eq!(j(Type::FLOAT8, &1.5f64.to_be_bytes()), Json::from(1.5));
        assert_eq!(j(Type::FLOAT8, &f64::NAN.to_be_bytes()), Json::from("NaN"));
        assert_eq!(j(Type::TEXT, b"ok"), Json::from("ok"));
        // 12345.678 = [1, 2345, 6780], weight 1, dscale 3
        assert_eq!(
            j(Type::NUMERIC, &numeric(3, 1, 0, 3, &[1, 2345, 6780])),
            Json::from(12345.678)
        );
        // -0.0012 = [12], weight -1, dscale 4
        assert_eq!(
            j(Type::NUMERIC, &numeric(1, -1, 0x4000, 4, &[12])),
            Json::from(-0.0012)
        );
        // 20000 = [2], weight 1, dscale 0
        assert_eq!(
            j(Type::NUMERIC, &numeric(1, 1, 0, 0, &[2])),
            Json::from(20000)
        );
        assert_eq!(
            j(Type::NUMERIC, &numeric(0, 0, 0xC000, 0, &[])),
            Json::from("NaN")
        );
        // 2024-01-02 03:04:05 UTC
        let us = (1_704_164_645i64 - 946_684_800) * 1_000_000;
        assert_eq!(
            j(Type::TIMESTAMPTZ, &us.to_be_bytes()),
            Json::from("2024-01-02T03:04:05Z")
        );
        assert_eq!(
            j(Type::TIMESTAMP, &(us + 500_000).to_be_bytes()),
            Json::from("2024-01-02T03:04:05.500")
        );
        assert_eq!(j(Type::DATE, &0i32.to_be_bytes()), Json::from("2000-01-01"));
        assert_eq!(
            j(Type::JSONB, b"\x01{\"a\":1}"),
            serde_json::json!({"a": 1})
        );
        let mut iv = Vec::new();
        iv.extend_from_slice(&3_723_500_000i64.to_be_bytes());
        iv.extend_from_slice(&1i32.to_be_bytes());
        iv.extend_from_slice(&14i32.to_be_bytes());
        assert_eq!(
            j(Type::INTERVAL, &iv),
            Json::from("1 year 2 mons 1 day 01:02:03.5")
        );
        let mut iv = (-3_723_000_000i64).to_be_bytes().to_vec();
        iv.extend_from_slice(&[0; 8]);
        assert_eq!(j(Type::INTERVAL, &iv), Json::from("-01:02:03"));
        assert_eq!(
            j(Type::TIME, &3_723_500_000i64.to_be_bytes()),
            Json::from("01:02:03.5")
        );
        assert_eq!(
            j(Type::INET, &[2, 32, 0, 4, 127, 0, 0, 1]),
            Json::from("127.0.0.1")
        );
        assert!(cell_json(&Type::INT4_ARRAY, &[0, 0, 0, 1, 0, 0, 0, 0])
            .expect_err("binary array")
            .contains("_int4"));
    }
}
