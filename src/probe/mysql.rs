//! The `mysql` probe kind (MySQL and MariaDB): log in, run one read-only
//! statement in a read-only transaction, and check its first value and its
//! row count.
//!
//! ```yaml
//! mysql:
//!   url: mysql://monitor:${MYSQL_PASSWORD}@db:3306/app   # required; mariadb:// works too
//!   query: SELECT COUNT(*) FROM orders                   # default SELECT 1
//!   reuse_connection: false   # default: a new connection every run
//!   tls: verify-full          # disable (default) | require | verify-full
//!   ca: /etc/ssl/db-ca.pem    # trust only this CA (implies tls: verify-full)
//!   server_name: db.internal  # the name the certificate must carry (default: the URL's host)
//!   statement_timeout: 5s     # server-side limit (default: what is left of the timeout)
//! expect:
//!   value: "> 0"              # first column of the first row: value matcher
//!   rows: ">= 1"              # the number of rows: number or comparison
//!   read_only: false          # @@global.read_only
//!   replication_lag: "< 30s"  # a replica's Seconds_Behind_Master
//! ```
//!
//! # A run
//!
//! Fresh mode (the default) opens a new connection every run, so a run sees
//! what a new client sees: DNS, TCP connect, TLS, login. The client library
//! (mysql_async) connects, negotiates TLS and logs in in one call and takes
//! no ready-made socket, so these cannot be timed apart without opening a
//! second connection: the `auth` phase is the whole handshake (TCP connect,
//! greeting, TLS, login) plus reading `VERSION()`. Then, in the `query`
//! phase, one round trip sets the statement time limit and starts a
//! `START TRANSACTION READ ONLY`, and the statement runs; every row is read
//! (only the first value is kept). With `read_only` one more round trip
//! reads `@@global.read_only`, and with `replication_lag` one more runs
//! `SHOW REPLICA STATUS` (`SHOW SLAVE STATUS` on servers that predate it).
//! The connection is then closed with `COM_QUIT`, which also ends the
//! transaction. A run cut short by its timeout closes its socket at once
//! and leaves nothing running (cut short during the handshake, the client
//! library spawns a clean-up task that only writes its goodbye and ends).
//!
//! With `reuse_connection: true` one connection is kept between runs: a run
//! on it has no `dns` or `auth` phase and ends with `ROLLBACK`, so no
//! locks are held between runs. After a run that fails with an error (any
//! class but `expectation`) it is closed and the next run connects again.
//! A kept connection that the server or a proxy closed while it sat idle
//! (killed, `wait_timeout`, a restart) is noticed by the first round trip
//! of the run, which then connects again once (detail `reconnected: true`).
//!
//! # Statement time limit
//!
//! The statement runs under a server-side time limit, so a statement the
//! probe gave up on does not keep running on the server: `statement_timeout`
//! when set, else what is left of the probe's `timeout` when the statement
//! is sent, less a margin of 5% (20ms to 500ms) for the answer to travel.
//! So with the default the server stops a slow statement just before the
//! probe would give up, says so ("the server stopped the query at the 949ms
//! statement time limit: ERROR 1969 ..."), and a kept connection survives.
//! (A run without a timeout, outside `run_once`, uses 10s.) Which variable
//! is set depends on the server, told by its version string (`VERSION()`
//! containing `MariaDB`):
//!
//! - MariaDB: `SET SESSION max_statement_time = <seconds>`, which limits
//!   every statement;
//! - MySQL (and other servers): `SET SESSION max_execution_time = <ms>`,
//!   which limits only `SELECT` statements (MySQL 5.7.8 and later).
//!
//! A server that knows neither variable (error 1193) runs the statement
//! without a limit; the run then has the detail `statement_time_limit:
//! unsupported`. A statement stopped by the limit fails as `timeout`.
//!
//! The query must be a single statement (a trailing `;` is allowed): the
//! connection allows multi-statements, and a second statement could end
//! the read-only transaction. The read-only transaction guards against
//! accidents, not against a hostile query: a stored procedure can still
//! commit. Give the monitoring account only the privileges it needs.
//!
//! # TLS
//!
//! `tls` takes PostgreSQL's `sslmode` names: `disable` (plain TCP),
//! `require` (encrypted, certificate not checked) and `verify-full` (the
//! chain must lead to a trusted CA and the certificate must name the host,
//! or `server_name`). MySQL's spellings (`DISABLED`, `REQUIRED`,
//! `VERIFY_IDENTITY`) are accepted too. `prefer` is refused: falling back
//! to plain text would take a second connection. `verify-ca` is refused
//! too: mysql_async's switch to skip only the name check does not work with
//! the rustls version in use (its verifier never skips), so it would behave
//! as `verify-full`; set `server_name` to a name the certificate carries
//! instead. With `ca` only that file's CAs are trusted; without it the
//! Mozilla roots (webpki-roots) are. Every run does a full TLS handshake
//! (ring provider, no session resumption). The URL may carry
//! `?ssl-mode=...&ssl-ca=...` (MySQL's URI parameters) instead of the keys.
//!
//! # Outcomes
//!
//! Classes: `dns` (the host does not resolve), `connect` (refused,
//! unreachable, closed during the handshake, too many connections (1040),
//! host blocked (1129), or the connection was lost during the run), `tls`,
//! `auth` (the server refused the login: wrong user or password (1045), no
//! access to the database (1044), unknown database (1049), and every other
//! error the server answers the login with), `query` (the server's error to
//! a statement, with its code, SQLSTATE and text), `timeout` (the probe's
//! timeout, or the statement time limit), `protocol` (the peer does not
//! speak the MySQL protocol) and `expectation`.
//!
//! Details: `server_version` (`VERSION()`), `connection_id` (the server's
//! thread id, as in `SHOW PROCESSLIST`), `rows`, `value` (the first value as
//! text, `NULL` for null, at most 200 characters), `replication_lag`
//! (seconds, when expected and replicating), and with `reuse_connection:
//! true` also `reused_connection` (and `reconnected`).
//!
//! `replication_lag` takes the largest `Seconds_Behind_Master` (or
//! `_Source`) over all channels; it fails with "not a replica" when no
//! replication is configured and "replication not running (IO thread: Yes,
//! SQL thread: No; ...)" when it is stopped.
//!
//! Values: integers (and YEAR, BIT) become numbers, FLOAT and DOUBLE too,
//! DECIMAL when a double holds it (whole numbers up to 64 bits, others up
//! to 15 significant digits; longer ones stay text, which value matchers
//! still compare as numbers), NULL is null, and everything else (dates,
//! times, JSON, text, binary) is text as the server sends it.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, IoError, OptsBuilder, ServerError, SslOpts};
use serde_json::Value as Json;

use crate::config::read::{suggest, Cx, Map};
use crate::config::yaml::Node;
use crate::expect::{shorten, text_of, DurationCmp, NumberCmp, ValueMatcher};
use crate::probe::kept::Kept;
use crate::probe::net::{self, Wording};
use crate::probe::sql::{self, VALUE_SHOWN};
use crate::probe::tlsutil::{self, CustomCa};
use crate::probe::urlutil::{self, percent_decode};
use crate::probe::Trace;
use crate::result::{Failure, FailureClass, Phase};

/// Keys accepted in the `mysql:` section.
pub const KEYS: &[&str] = &[
    "url",
    "query",
    "reuse_connection",
    "tls",
    "ca",
    "server_name",
    "statement_timeout",
];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &["value", "rows", "read_only", "replication_lag"];

pub const DEFAULT_PORT: u16 = 3306;
pub const DEFAULT_QUERY: &str = "SELECT 1";
/// The largest packet (and so row) the client accepts.
const MAX_PACKET: usize = 16 * 1024 * 1024;
/// URL parameters understood besides the keys.
const URL_PARAMS: &[&str] = &["ssl-mode", "ssl-ca"];

/// How the connection is secured; PostgreSQL's `sslmode` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Require,
    VerifyFull,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Reads a mode, accepting MySQL's spellings (`REQUIRED`,
    /// `VERIFY_IDENTITY`) as well as PostgreSQL's.
    pub fn parse(text: &str) -> Result<TlsMode, String> {
        let t = text.trim().to_ascii_lowercase().replace('_', "-");
        match t.as_str() {
            "disable" | "disabled" => Ok(TlsMode::Disable),
            "require" | "required" => Ok(TlsMode::Require),
            "verify-full" | "verify-identity" => Ok(TlsMode::VerifyFull),
            "verify-ca" => Err(
                "tls mode `verify-ca` is not available for mysql probes (the client library \
                 cannot skip only the name check); use `verify-full` with `server_name` set to \
                 a name in the server's certificate"
                    .to_string(),
            ),
            "prefer" | "preferred" | "allow" => Err(format!(
                "tls mode `{text}` is not supported: falling back to plain text would take a \
                 second connection; use `require` or `disable`"
            )),
            _ => {
                let names = ["disable", "require", "verify-full"];
                Err(match suggest(&t, &names) {
                    Some(s) => format!("unknown tls mode `{text}`; did you mean `{s}`?"),
                    None => format!(
                        "unknown tls mode `{text}`; expected one of: {}",
                        names.join(", ")
                    ),
                })
            }
        }
    }
}

/// A compiled `mysql` probe. Cloning shares the kept connection.
#[derive(Debug, Clone)]
pub struct MysqlSpec {
    pub config: Arc<MysqlConfig>,
    /// The kept connection (`reuse_connection: true`), if any.
    session: Kept<Live>,
}

/// What a `mysql` probe connects to and checks.
#[derive(Debug, Clone)]
pub struct MysqlConfig {
    /// The URL as written (shown with its password masked).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: Option<String>,
    /// A single statement, without a trailing `;`.
    pub query: String,
    pub reuse_connection: bool,
    pub tls: TlsMode,
    pub ca: Option<Arc<CustomCa>>,
    pub server_name: Option<String>,
    /// The server-side statement time limit, when set explicitly.
    pub statement_timeout: Option<Duration>,
    pub expect: MysqlExpect,
}

/// The `expect:` entries of a `mysql` probe (latency is handled by `run_once`).
#[derive(Debug, Clone, Default)]
pub struct MysqlExpect {
    pub value: Option<ValueMatcher>,
    pub rows: Option<NumberCmp>,
    pub read_only: Option<bool>,
    pub replication_lag: Option<DurationCmp>,
}

impl MysqlSpec {
    pub fn target(&self) -> String {
        crate::redact::redact(&self.config.url)
    }
}

impl MysqlConfig {
    /// `statement_timeout` when set; else what is left of the run's
    /// `timeout` after `elapsed`, less a margin for the server's answer to
    /// come back (5%, 20ms to 500ms), so that the server stops the
    /// statement and says so just before the probe would give up.
    fn statement_limit(&self, timeout: Option<Duration>, elapsed: Duration) -> Duration {
        if let Some(t) = self.statement_timeout {
            return t;
        }
        match timeout {
            Some(t) => {
                let margin = (t / 20).clamp(Duration::from_millis(20), Duration::from_millis(500));
                t.saturating_sub(elapsed + margin)
                    .max(Duration::from_millis(1))
            }
            None => crate::config::DEFAULT_TIMEOUT,
        }
    }

    /// `host:port` for messages.
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

// ---------------------------------------------------------------------------
// Compiling the configuration

/// The parts of a `mysql://` URL.
#[derive(Debug, Clone, PartialEq)]
struct UrlParts {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    database: Option<String>,
    ssl_mode: Option<String>,
    ssl_ca: Option<String>,
}

pub fn compile(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    expect: Option<&Map<'_>>,
) -> Option<MysqlSpec> {
    let m = cx.map(node, path, KEYS)?;
    let url_text = m.required_str(cx, "url");
    let parts = url_text.as_deref().and_then(|u| match parse_url(u) {
        Ok(p) => {
            if let Some(pw) = &p.password {
                crate::redact::register(pw);
            }
            Some(p)
        }
        Err(e) => {
            m.error_at(cx, "url", e);
            None
        }
    });
    let query = m
        .parsed(cx, "query", single_statement)
        .map(|q| q.unwrap_or_else(|| DEFAULT_QUERY.to_string()));
    let reuse_connection = m.bool_or(cx, "reuse_connection", false);

    // `tls` and `ca` may come from the keys or from the URL, not both.
    let (tls_text, mut tls_ok) = key_or_url(
        cx,
        &m,
        "tls",
        parts.as_ref().and_then(|p| p.ssl_mode.clone()),
        "the URL's `ssl-mode` already sets the TLS mode; give it once",
    );
    let tls_mode = match &tls_text {
        None => None,
        Some((key, t)) => match TlsMode::parse(t) {
            Ok(mode) => Some(mode),
            Err(e) => {
                m.error_at(cx, key, e);
                tls_ok = false;
                None
            }
        },
    };

    let (ca_text, mut ca_ok) = key_or_url(
        cx,
        &m,
        "ca",
        parts.as_ref().and_then(|p| p.ssl_ca.clone()),
        "the URL's `ssl-ca` already names a CA file; give it once",
    );
    let ca = match &ca_text {
        None => None,
        Some((key, text)) => {
            let p = crate::config::resolve_path(&cx.base_dir, text.trim());
            if text.trim().is_empty() {
                m.error_at(cx, key, "empty CA file path");
                ca_ok = false;
                None
            } else {
                match tlsutil::load_ca(&p) {
                    Ok(ca) => Some(Arc::new(ca)),
                    Err(e) => {
                        m.error_at(cx, key, e);
                        ca_ok = false;
                        None
                    }
                }
            }
        }
    };
    // With a CA and no mode, verify fully; without either, plain TCP.
    let tls = tls_mode.unwrap_or(if ca_text.is_some() {
        TlsMode::VerifyFull
    } else {
        TlsMode::Disable
    });
    if ca_text.is_some() && matches!(tls, TlsMode::Disable | TlsMode::Require) && tls_ok {
        let key = ca_text.as_ref().map(|(k, _)| *k).unwrap_or("ca");
        if let Some(n) = m.get(key) {
            cx.warning(
                &n.pos,
                &m.path(key),
                format!(
                    "the CA file is not used with `tls: {}`; use verify-full",
                    tls.as_str()
                ),
            );
        }
    }

    let server_name = m.parsed(cx, "server_name", |s| {
        tlsutil::server_name(s.trim()).map(|_| s.trim().to_string())
    });
    if let (Some(Some(_)), Some(n)) = (&server_name, m.get("server_name")) {
        if tls != TlsMode::VerifyFull && tls_ok {
            cx.warning(
                &n.pos,
                &m.path("server_name"),
                format!(
                    "`server_name` is only checked with `tls: verify-full`, not with `tls: {}`",
                    tls.as_str()
                ),
            );
        }
    }
    let statement_timeout = match m.get("statement_timeout") {
        None => Some(None),
        Some(_) => m.duration(cx, "statement_timeout").and_then(|d| {
            if d < Duration::from_millis(1) {
                m.error_at(
                    cx,
                    "statement_timeout",
                    "must be at least 1ms (0 would turn the limit off)",
                );
                None
            } else {
                Some(Some(d))
            }
        }),
    };
    let expect = compile_expect(cx, expect);

    if !(tls_ok && ca_ok) {
        return None;
    }
    let parts = parts?;
    Some(MysqlSpec {
        config: Arc::new(MysqlConfig {
            url: url_text?,
            host: parts.host,
            port: parts.port,
            user: parts.user,
            password: parts.password,
            database: parts.database,
            query: query?,
            reuse_connection: reuse_connection?,
            tls,
            ca,
            server_name: server_name?,
            statement_timeout: statement_timeout?,
            expect: expect?,
        }),
        session: Kept::default(),
    })
}

/// A setting that the key `key` or a parameter of the URL (`from_url`)
/// gives, but not both: its text and where it came from (`key` or "url"),
/// and false when the key is not text or both give it (`twice`, reported
/// at the key).
fn key_or_url(
    cx: &mut Cx,
    m: &Map<'_>,
    key: &'static str,
    from_url: Option<String>,
    twice: &str,
) -> (Option<(&'static str, String)>, bool) {
    let mut text = None;
    let mut ok = true;
    if m.has(key) {
        match m.str(cx, key) {
            Some(t) => text = Some((key, t)),
            None => ok = false,
        }
    }
    if let Some(from_url) = from_url {
        if text.is_some() {
            m.error_at(cx, key, twice);
            ok = false;
        } else {
            text = Some(("url", from_url));
        }
    }
    (text, ok)
}

fn compile_expect(cx: &mut Cx, expect: Option<&Map<'_>>) -> Option<MysqlExpect> {
    let Some(em) = expect else {
        return Some(MysqlExpect::default());
    };
    let value = sql::compile_value(cx, em, "a value or a comparison such as \"> 0\"");
    let rows = em.parsed(cx, "rows", NumberCmp::parse);
    let replication_lag = em.parsed(cx, "replication_lag", DurationCmp::parse);
    let read_only = em.opt_bool(cx, "read_only");
    Some(MysqlExpect {
        value: value?,
        rows: rows?,
        read_only: read_only?,
        replication_lag: replication_lag?,
    })
}

/// Parses `mysql://user:password@host:port/database?ssl-mode=...&ssl-ca=...`
/// (also `mariadb://`); the error says what is wrong in words.
fn parse_url(text: &str) -> Result<UrlParts, String> {
    let (url, shown) = urlutil::parse(text)?;
    if !matches!(url.scheme(), "mysql" | "mariadb") {
        return Err(format!(
            "unsupported URL scheme `{}`: a mysql probe needs a mysql:// or mariadb:// URL",
            url.scheme()
        ));
    }
    let host = urlutil::host(&url, &shown)?;
    let user = percent_decode(url.username());
    if user.is_empty() {
        return Err(format!(
            "the URL `{shown}` names no user; write mysql://USER:PASSWORD@HOST:PORT/DATABASE"
        ));
    }
    let password = url.password().map(percent_decode);
    let path = url.path().trim_start_matches('/');
    let database = match percent_decode(path) {
        d if d.is_empty() => None,
        d if d.contains('/') => {
            return Err(format!(
                "invalid URL `{shown}`: the path is the database name and cannot contain `/`"
            ))
        }
        d => Some(d),
    };
    let mut ssl_mode = None;
    let mut ssl_ca = None;
    for (k, v) in url.query_pairs() {
        let slot = match k.as_ref() {
            "ssl-mode" => &mut ssl_mode,
            "ssl-ca" => &mut ssl_ca,
            other => {
                let hint = match suggest(other, URL_PARAMS) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "the URL takes only {} (or use the keys `tls` and `ca`)",
                        URL_PARAMS.join(" and ")
                    ),
                };
                return Err(format!("unknown URL parameter `{other}`; {hint}"));
            }
        };
        if slot.is_some() {
            return Err(format!("the URL parameter `{k}` is given twice"));
        }
        *slot = Some(v.into_owned());
    }
    Ok(UrlParts {
        host,
        port: url.port().unwrap_or(DEFAULT_PORT),
        user,
        password,
        database,
        ssl_mode,
        ssl_ca,
    })
}

/// The query as one statement: a trailing `;` (and comments after it) are
/// dropped, a second statement is refused. Quotes, backticks and comments
/// are followed so that a `;` inside them does not count; a `;` inside an
/// executable comment (`/*! ... */`) is refused because the server runs it.
fn single_statement(text: &str) -> Result<String, String> {
    #[derive(PartialEq)]
    enum S {
        Code,
        Quote(char),
        Line,
        Block { executable: bool },
    }
    let chars: Vec<char> = text.chars().collect();
    let mut state = S::Code;
    let mut end: Option<usize> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match state {
            S::Code => match c {
                '\'' | '"' | '`' => state = S::Quote(c),
                '#' => state = S::Line,
                '-' if next == Some('-') && chars.get(i + 2).is_none_or(|c| c.is_whitespace()) => {
                    state = S::Line;
                    i += 1;
                }
                '/' if next == Some('*') => {
                    let executable = chars.get(i + 2) == Some(&'!')
                        || (chars.get(i + 2) == Some(&'M') && chars.get(i + 3) == Some(&'!'));
                    state = S::Block { executable };
                    i += 1;
                }
                ';' => {
                    if end.is_none() {
                        end = Some(i);
                    }
                }
                c if c.is_whitespace() => {}
                _ => {
                    if end.is_some() {
                        return Err(
                            "the query holds more than one statement; a probe runs exactly one"
                                .into(),
                        );
                    }
                }
            },
            S::Quote(q) => {
                if c == '\\' && q != '`' {
                    i += 1;
                } else if c == q {
                    state = S::Code;
                }
            }
            S::Line => {
                if c == '\n' {
                    state = S::Code;
                }
            }
            S::Block { executable } => {
                if c == '*' && next == Some('/') {
                    state = S::Code;
                    i += 1;
                } else if c == ';' && executable {
                    return Err(
                        "the query holds a `;` inside an executable comment (`/*! ... */`); a \
                         probe runs exactly one statement"
                            .into(),
                    );
                }
            }
        }
        i += 1;
    }
    match state {
        S::Quote(q) => return Err(format!("the query has an unterminated {q} quote")),
        S::Block { .. } => return Err("the query has an unterminated /* comment".into()),
        S::Code | S::Line => {}
    }
    let statement: String = chars[..end.unwrap_or(chars.len())].iter().collect();
    let statement = statement.trim().to_string();
    if statement.is_empty() {
        return Err("the query is empty".into());
    }
    Ok(statement)
}

// ---------------------------------------------------------------------------
// Running

/// Which variable limits a statement's run time on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// `max_statement_time`, in seconds, every statement.
    MariaDb,
    /// `max_execution_time`, in milliseconds, SELECT only.
    Mysql,
}

/// An open, logged-in connection and what we learnt about its server.
#[derive(Debug)]
struct Live {
    conn: Conn,
    version: String,
    flavor: Flavor,
    /// False once the server refused the limit variable (error 1193).
    limit_supported: bool,
}

/// Owns the connection while a run uses it. When a run is dropped (its
/// timeout) or fails, the connection is closed here and now: see [`close`].
struct Held(Option<Live>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(live) = self.0.take() {
            close(live.conn);
        }
    }
}

/// Closes a connection without leaving anything running. mysql_async's own
/// `Drop` would spawn a task that first reads the rest of any pending
/// result (which, against a hung server, never ends) and then says goodbye.
/// `Conn::disconnect` marks the connection closed as its very first step;
/// polling it once sends `COM_QUIT` if the socket takes it at once, and
/// dropping it then closes the socket with nothing spawned.
fn close(conn: Conn) {
    use std::future::Future;
    let mut quit = std::pin::pin!(conn.disconnect());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = quit.as_mut().poll(&mut cx);
}

pub async fn run(spec: &MysqlSpec, trace: &mut Trace) -> Result<(), Failure> {
    let cfg = &*spec.config;
    if !cfg.reuse_connection {
        // Dropping `held` at the end closes the connection (COM_QUIT).
        let mut held = Held(None);
        return exchange(cfg, trace, &mut held, false).await;
    }
    let mut slot = spec.session.lock().await;
    let mut held = Held(slot.take());
    let reused = held.0.is_some();
    trace.detail("reused_connection", reused);
    let outcome = exchange(cfg, trace, &mut held, reused).await;
    if outcome.is_ok() {
        if let Some(live) = held.0.as_mut() {
            // Ends the read-only transaction so no locks are held between runs.
            if live.conn.query_drop("ROLLBACK").await.is_ok() {
                *slot = held.0.take();
            }
        }
    }
    outcome
}

/// One run on `held`'s connection, connecting first when there is none.
async fn exchange(
    cfg: &MysqlConfig,
    trace: &mut Trace,
    held: &mut Held,
    reused: bool,
) -> Result<(), Failure> {
    if held.0.is_none() {
        connect(cfg, trace, held).await?;
    }
    trace.begin(Phase::Query);
    let mut limit = cfg.statement_limit(trace.timeout(), trace.elapsed());
    if let Err(e) = begin_transaction(limit, live(held)?).await {
        if !(reused && is_stale(&e)) {
            return Err(statement_failure(cfg, None, &e));
        }
        // The kept connection died while idle: connect again, once.
        if let Some(stale) = held.0.take() {
            close(stale.conn);
        }
        trace.detail("reconnected", true);
        connect(cfg, trace, held).await?;
        trace.begin(Phase::Query);
        limit = cfg.statement_limit(trace.timeout(), trace.elapsed());
        begin_transaction(limit, live(held)?)
            .await
            .map_err(|e| statement_failure(cfg, None, &e))?;
    }
    let limit = live(held)?.limit_supported.then_some(limit);
    let live = live(held)?;
    trace.detail("server_version", live.version.clone());
    trace.detail("connection_id", live.conn.id());
    if !live.limit_supported {
        trace.detail("statement_time_limit", "unsupported");
    }
    let (first, rows) = run_query(&mut live.conn, &cfg.query)
        .await
        .map_err(|e| statement_failure(cfg, limit, &e))?;
    let read_only = match cfg.expect.read_only {
        None => None,
        Some(_) => Some(
            read_only(&mut live.conn)
                .await
                .map_err(|e| statement_failure(cfg, limit, &e))?,
        ),
    };
    let replica = match cfg.expect.replication_lag {
        None => None,
        Some(_) => Some(
            replica_status(&mut live.conn)
                .await
                .map_err(|e| statement_failure(cfg, limit, &e))?,
        ),
    };
    if let Some(Replica::Lag(secs)) = &replica {
        trace.detail("replication_lag", *secs);
    }
    trace.end();

    trace.detail("rows", rows);
    if let Some(v) = &first {
        trace.detail("value", sql::shown(v));
    }
    let e = &cfg.expect;
    if let Some(m) = &e.value {
        sql::check_value(trace, m, first.as_ref().ok_or("no rows"));
    }
    if let Some(cmp) = &e.rows {
        trace.check(
            format!("rows {cmp}"),
            cmp.holds(rows as f64),
            rows.to_string(),
        );
    }
    if let (Some(want), Some(got)) = (e.read_only, read_only) {
        trace.check(format!("read_only {want}"), want == got, got.to_string());
    }
    if let (Some(cmp), Some(seen)) = (&e.replication_lag, &replica) {
        let (passed, observed) = match seen {
            Replica::Lag(secs) => {
                let lag = Duration::from_secs(*secs);
                (cmp.holds(lag), crate::duration::human(lag))
            }
            other => (false, other.describe()),
        };
        trace.check(format!("replication_lag {cmp}"), passed, observed);
    }
    Ok(())
}

fn live(held: &mut Held) -> Result<&mut Live, Failure> {
    held.0
        .as_mut()
        .ok_or_else(|| Failure::new(FailureClass::Internal, "the connection went missing"))
}

/// Resolves the host (phase `dns`), then connects, negotiates TLS and logs
/// in (phase `auth`, which also reads `VERSION()`), leaving the connection
/// in `held`.
async fn connect(cfg: &MysqlConfig, trace: &mut Trace, held: &mut Held) -> Result<(), Failure> {
    let ips: Vec<IpAddr> = net::resolve(&cfg.host, cfg.port, Wording::Tcp, trace)
        .await?
        .iter()
        .map(|a| a.ip())
        .collect();
    trace.begin(Phase::Auth);
    let conn = Conn::new(opts(cfg, ips))
        .await
        .map_err(|e| login_failure(cfg, &e))?;
    held.0 = Some(Live {
        conn,
        version: String::new(),
        flavor: Flavor::Mysql,
        limit_supported: true,
    });
    let live = live(held)?;
    let version: Option<String> = live
        .conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| statement_failure(cfg, None, &e))?;
    live.version = version.unwrap_or_default();
    live.flavor = if live.version.to_ascii_lowercase().contains("mariadb") {
        Flavor::MariaDb
    } else {
        Flavor::Mysql
    };
    trace.end();
    Ok(())
}

/// The client options for one connection; built afresh every time so that
/// no TLS session is resumed.
fn opts(cfg: &MysqlConfig, ips: Vec<IpAddr>) -> OptsBuilder {
    let mut b = OptsBuilder::default()
        .ip_or_hostname(cfg.host.clone())
        .tcp_port(cfg.port)
        .resolved_ips(Some(ips))
        .user(Some(cfg.user.clone()))
        .pass(cfg.password.clone())
        .db_name(cfg.database.clone())
        // Never switch to the server's Unix socket: that would be a second
        // connection and would skip TLS.
        .prefer_socket(false)
        .stmt_cache_size(0)
        // Known up front, so logging in sends no settings query.
        .max_allowed_packet(Some(MAX_PACKET))
        .wait_timeout(Some(28_800))
        .connect_attribute("program_name", "lookout");
    if cfg.tls != TlsMode::Disable {
        b = b.ssl_opts(Some(ssl_opts(cfg)));
    }
    b
}

fn ssl_opts(cfg: &MysqlConfig) -> SslOpts {
    let mut ssl = SslOpts::default();
    match cfg.tls {
        TlsMode::Disable => {}
        TlsMode::Require => ssl = ssl.with_danger_accept_invalid_certs(true),
        TlsMode::VerifyFull => {}
    }
    if let (Some(ca), TlsMode::VerifyFull) = (&cfg.ca, cfg.tls) {
        ssl = ssl
            .with_root_certs(
                ca.certs
                    .iter()
                    .map(|c| c.as_ref().to_vec().into())
                    .collect(),
            )
            .with_disable_built_in_roots(true);
    }
    if let Some(name) = &cfg.server_name {
        ssl = ssl.with_danger_tls_hostname_override(Some(name.clone()));
    }
    ssl
}

/// Sets the statement time limit and starts the read-only transaction, in
/// one round trip.
async fn begin_transaction(limit: Duration, live: &mut Live) -> Result<(), mysql_async::Error> {
    const START: &str = "START TRANSACTION READ ONLY";
    if !live.limit_supported {
        return live.conn.query_drop(START).await;
    }
    let set = match live.flavor {
        Flavor::MariaDb => format!(
            "SET SESSION max_statement_time = {:.3}",
            limit.as_secs_f64().max(0.001)
        ),
        Flavor::Mysql => format!(
            "SET SESSION max_execution_time = {}",
            limit.as_millis().clamp(1, u32::MAX as u128)
        ),
    };
    match live.conn.query_drop(format!("{set}; {START}")).await {
        Err(mysql_async::Error::Server(e)) if e.code == ER_UNKNOWN_SYSTEM_VARIABLE => {
            live.limit_supported = false;
            live.conn.query_drop(START).await
        }
        other => other,
    }
}

/// Runs the statement, reading every row of its first result set and
/// keeping only the first value; further result sets are read and dropped.
async fn run_query(
    conn: &mut Conn,
    query: &str,
) -> Result<(Option<Json>, u64), mysql_async::Error> {
    let mut result = conn.query_iter(query).await?;
    let mut first = None;
    let mut rows: u64 = 0;
    result
        .for_each(|row| {
            if rows == 0 {
                first = Some(match (row.as_ref(0), row.columns_ref().first()) {
                    (Some(v), Some(col)) => to_json(v, col.column_type(), col.flags()),
                    (Some(v), None) => {
                        to_json(v, ColumnType::MYSQL_TYPE_STRING, ColumnFlags::empty())
                    }
                    _ => Json::Null,
                });
            }
            rows += 1;
        })
        .await?;
    result.drop_result().await?;
    Ok((first, rows))
}

/// What `SHOW REPLICA STATUS` says about replication.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Replica {
    /// No replication is configured: the status is empty.
    Unconfigured,
    /// Replication is configured but not running; the threads' states and
    /// the last error.
    Stopped(String),
    /// Seconds behind the primary (the largest over all channels).
    Lag(u64),
}

impl Replica {
    fn describe(&self) -> String {
        match self {
            Replica::Unconfigured => "not a replica (SHOW REPLICA STATUS is empty)".to_string(),
            Replica::Stopped(why) => format!("replication not running ({why})"),
            Replica::Lag(secs) => crate::duration::human(Duration::from_secs(*secs)),
        }
    }
}

/// ER_PARSE_ERROR: how a server that predates `SHOW REPLICA STATUS` answers it.
const ER_PARSE_ERROR: u16 = 1064;

async fn replica_status(conn: &mut Conn) -> Result<Replica, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = match conn.query("SHOW REPLICA STATUS").await {
        Err(mysql_async::Error::Server(e)) if e.code == ER_PARSE_ERROR => {
            conn.query("SHOW SLAVE STATUS").await?
        }
        other => other?,
    };
    Ok(replica_from_rows(&rows))
}

/// Reads the status rows; MySQL 8.0.22+ names the columns `Replica_...`
/// and `..._Source`, MariaDB and older MySQL `Slave_...` and `..._Master`.
fn replica_from_rows(rows: &[mysql_async::Row]) -> Replica {
    let text = |row: &mysql_async::Row, names: &[&str]| -> Option<String> {
        let i = row
            .columns_ref()
            .iter()
            .position(|c| names.contains(&c.name_str().as_ref()))?;
        match row.as_ref(i)? {
            mysql_async::Value::NULL => None,
            mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            other => Some(text_of(&to_json(
                other,
                ColumnType::MYSQL_TYPE_STRING,
                ColumnFlags::empty(),
            ))),
        }
    };
    if rows.is_empty() {
        return Replica::Unconfigured;
    }
    let mut worst = 0;
    for row in rows {
        let lag = text(row, &["Seconds_Behind_Master", "Seconds_Behind_Source"])
            .and_then(|t| t.trim().parse::<u64>().ok());
        match lag {
            Some(l) => worst = worst.max(l),
            None => {
                let state = |names: &[&str]| text(row, names).unwrap_or_else(|| "?".into());
                let mut why = format!(
                    "IO thread: {}, SQL thread: {}",
                    state(&["Slave_IO_Running", "Replica_IO_Running"]),
                    state(&["Slave_SQL_Running", "Replica_SQL_Running"])
                );
                for key in ["Last_IO_Error", "Last_SQL_Error"] {
                    if let Some(err) = text(row, &[key]).filter(|e| !e.trim().is_empty()) {
                        why.push_str(&format!("; {key}: {}", shorten(err.trim(), VALUE_SHOWN)));
                    }
                }
                return Replica::Stopped(why);
            }
        }
    }
    Replica::Lag(worst)
}

async fn read_only(conn: &mut Conn) -> Result<bool, mysql_async::Error> {
    let v: Option<String> = conn.query_first("SELECT @@global.read_only").await?;
    Ok(match v.as_deref().map(str::trim) {
        None | Some("0") => false,
        Some(s) => !s.eq_ignore_ascii_case("off"),
    })
}

// ---------------------------------------------------------------------------
// Values

/// A value of the first column as JSON: integers, floats and decimals as
/// numbers (decimals only when a double holds them exactly enough), BIT as
/// an unsigned integer, NULL as null, everything else (dates, times, JSON,
/// text, binary) as text.
fn to_json(v: &mysql_async::Value, ty: ColumnType, flags: ColumnFlags) -> Json {
    use mysql_async::Value as V;
    match v {
        V::NULL => Json::Null,
        V::Int(i) => Json::from(*i),
        V::UInt(u) => Json::from(*u),
        V::Float(f) => float(f64::from(*f)).unwrap_or(Json::Null),
        V::Double(d) => float(*d).unwrap_or(Json::Null),
        V::Date(y, mo, d, h, mi, s, us) => Json::String(if (*h, *mi, *s, *us) == (0, 0, 0, 0) {
            format!("{y:04}-{mo:02}-{d:02}")
        } else if *us == 0 {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
        } else {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }),
        V::Time(neg, d, h, mi, s, us) => {
            let hours = u64::from(*d) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            Json::String(if *us == 0 {
                format!("{sign}{hours:02}:{mi:02}:{s:02}")
            } else {
                format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
            })
        }
        V::Bytes(b) => text_json(b, ty, flags),
    }
}

fn float(f: f64) -> Option<Json> {
    serde_json::Number::from_f64(f).map(Json::Number)
}

/// A text-protocol value (every value arrives as text) by its column type.
fn text_json(b: &[u8], ty: ColumnType, flags: ColumnFlags) -> Json {
    use ColumnType::*;
    let text = String::from_utf8_lossy(b);
    let t = text.trim();
    let parsed = match ty {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG
        | MYSQL_TYPE_INT24 | MYSQL_TYPE_YEAR => {
            if flags.contains(ColumnFlags::UNSIGNED_FLAG) {
                t.parse::<u64>().ok().map(Json::from)
            } else {
                t.parse::<i64>().ok().map(Json::from)
            }
        }
        MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => t.parse::<f64>().ok().and_then(float),
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => decimal(t),
        MYSQL_TYPE_BIT if b.len() <= 8 => Some(Json::from(
            b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
        )),
        _ => None,
    };
    parsed.unwrap_or_else(|| Json::String(text.into_owned()))
}

/// A decimal as a JSON number when that loses nothing that matters: whole
/// numbers that fit 64 bits, others with at most 15 significant digits.
/// Bigger ones stay text (value matchers still compare them as numbers).
fn decimal(t: &str) -> Option<Json> {
    if let Ok(i) = t.parse::<i64>() {
        return Some(Json::from(i));
    }
    let digits = t
        .trim_start_matches(['-', '+'])
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let significant = digits.trim_start_matches('0').len();
    let fraction_zero = t
        .split_once('.')
        .is_some_and(|(_, f)| f.chars().all(|c| c == '0'));
    if fraction_zero {
        if let Some(Ok(i)) = t.split_once('.').map(|(w, _)| w.parse::<i64>()) {
            return Some(Json::from(i));
        }
    }
    if significant <= 15 {
        return t.parse::<f64>().ok().and_then(float);
    }
    None
}

// ---------------------------------------------------------------------------
// Errors

/// Server error codes that decide a failure's class.
const ER_CON_COUNT_ERROR: u16 = 1040;
const ER_ACCESS_DENIED_ERROR: u16 = 1045;
const ER_SERVER_SHUTDOWN: u16 = 1053;
const ER_HOST_IS_BLOCKED: u16 = 1129;
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
/// MariaDB: "Query execution was interrupted (max_statement_time exceeded)".
const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MariaDB: "Connection was killed".
const ER_CONNECTION_KILLED: u16 = 1927;
/// MySQL: "maximum statement execution time exceeded".
const ER_QUERY_TIMEOUT: u16 = 3024;
/// MySQL 8.0.24+: the server closed an idle connection (`wait_timeout`).
const ER_CLIENT_INTERACTION_TIMEOUT: u16 = 4031;

/// Whether an error on a kept connection's first round trip means that the
/// connection died while idle (closed, killed, timed out, server restarted).
fn is_stale(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(se) => matches!(
            se.code,
            ER_CONNECTION_KILLED | ER_SERVER_SHUTDOWN | ER_CLIENT_INTERACTION_TIMEOUT
        ),
        other => other.is_fatal(),
    }
}

fn server_text(e: &ServerError) -> String {
    format!("ERROR {} ({}): {}", e.code, e.state, e.message.trim())
}

/// A failure while connecting, negotiating TLS or logging in.
fn login_failure(cfg: &MysqlConfig, e: &mysql_async::Error) -> Failure {
    let addr = cfg.addr();
    match e {
        mysql_async::Error::Server(se) => match se.code {
            ER_CON_COUNT_ERROR | ER_HOST_IS_BLOCKED | ER_SERVER_SHUTDOWN => Failure::new(
                FailureClass::Connect,
                format!("{addr} refused the connection: {}", server_text(se)),
            ),
            code => {
                let hint = if code == ER_ACCESS_DENIED_ERROR && cfg.tls == TlsMode::Disable {
                    " (if the account requires TLS, set `tls`)"
                } else {
                    ""
                };
                Failure::new(
                    FailureClass::Auth,
                    format!("{addr} refused the login: {}{hint}", server_text(se)),
                )
            }
        },
        mysql_async::Error::Io(IoError::Io(io)) => {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return tls_failure(cfg, tls);
            }
            connect_io_failure(&addr, io)
        }
        mysql_async::Error::Io(IoError::Tls(t)) => match t {
            mysql_async::TlsError::Tls(err) => tls_failure(cfg, err),
            other => Failure::new(
                FailureClass::Tls,
                format!("TLS with {addr} failed: {other}"),
            ),
        },
        mysql_async::Error::Driver(d) => match d {
            DriverError::NoClientSslFlagFromServer => Failure::new(
                FailureClass::Tls,
                format!(
                    "{addr} does not offer TLS, and this probe asks for it (tls: {})",
                    cfg.tls.as_str()
                ),
            ),
            DriverError::UnknownAuthPlugin { .. }
            | DriverError::CleartextPluginDisabled
            | DriverError::MysqlOldPasswordDisabled => {
                Failure::new(FailureClass::Auth, format!("cannot log in to {addr}: {d}"))
            }
            DriverError::ConnectionClosed => Failure::new(
                FailureClass::Connect,
                format!("{addr} closed the connection during the handshake"),
            ),
            other => Failure::new(
                FailureClass::Protocol,
                format!("{addr} broke the MySQL handshake (is this a MySQL server?): {other}"),
            ),
        },
        other => Failure::new(
            FailureClass::Protocol,
            format!("connecting to {addr} failed: {other}"),
        ),
    }
}

fn connect_io_failure(addr: &str, io: &io::Error) -> Failure {
    let msg = match io.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused by {addr}"),
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => {
            format!("{addr} closed the connection during the handshake ({io})")
        }
        io::ErrorKind::InvalidData => {
            return Failure::new(
                FailureClass::Protocol,
                format!("{addr} does not speak the MySQL protocol: {io}"),
            )
        }
        _ => format!("cannot connect to {addr}: {io}"),
    };
    Failure::new(FailureClass::Connect, msg)
}

fn tls_failure(cfg: &MysqlConfig, err: &rustls::Error) -> Failure {
    let addr = cfg.addr();
    let name = cfg.server_name.as_deref().unwrap_or(&cfg.host);
    let why = match tlsutil::server_name(name) {
        Ok(sn) => tlsutil::describe_error(
            &io::Error::new(io::ErrorKind::InvalidData, err.clone()),
            &sn,
            None,
        ),
        Err(_) => format!("TLS handshake failed: {err}"),
    };
    Failure::new(FailureClass::Tls, format!("TLS with {addr} failed: {why}"))
}

/// A failure of a statement on an open connection.
/// `limit` is the statement time limit in force, if any.
fn statement_failure(
    cfg: &MysqlConfig,
    limit: Option<Duration>,
    e: &mysql_async::Error,
) -> Failure {
    let addr = cfg.addr();
    match e {
        mysql_async::Error::Server(se) => match se.code {
            ER_STATEMENT_TIMEOUT | ER_QUERY_TIMEOUT => {
                let at = match limit {
                    Some(l) => format!(" at the {} statement time limit", human_limit(l)),
                    None => " at its statement time limit".to_string(),
                };
                Failure::new(
                    FailureClass::Timeout,
                    format!("the server stopped the query{at}: {}", server_text(se)),
                )
            }
            ER_SERVER_SHUTDOWN | ER_CONNECTION_KILLED => Failure::new(
                FailureClass::Connect,
                format!("{addr} ended the connection: {}", server_text(se)),
            ),
            _ => Failure::new(
                FailureClass::Query,
                format!("the query failed: {}", server_text(se)),
            ),
        },
        mysql_async::Error::Io(io) => Failure::new(
            FailureClass::Connect,
            format!("lost the connection to {addr}: {}", io_text(io)),
        ),
        mysql_async::Error::Driver(DriverError::ConnectionClosed) => Failure::new(
            FailureClass::Connect,
            format!("lost the connection to {addr}: it was closed"),
        ),
        other => Failure::new(
            FailureClass::Protocol,
            format!("{addr} answered the query wrongly: {other}"),
        ),
    }
}

/// A limit as people write it: `300ms`, `2s`, `1.95s`.
fn human_limit(d: Duration) -> String {
    if d.subsec_millis() == 0 || d < Duration::from_secs(1) {
        crate::duration::human(d)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

fn io_text(e: &IoError) -> String {
    match e {
        IoError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the server closed it".to_string()
        }
        IoError::Io(io) => io.to_string(),
        IoError::Tls(t) => format!("TLS error: {t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = parse_url("mysql://monitor:s%40cret@db.internal:3307/app").expect("valid");
        assert_eq!(
            p,
            UrlParts {
                host: "db.internal".into(),
                port: 3307,
                user: "monitor".into(),
                password: Some("s@cret".into()),
                database: Some("app".into()),
                ssl_mode: None,
                ssl_ca: None,
            }
        );
        let p = parse_url("mariadb://u@[::1]/?ssl-mode=REQUIRED&ssl-ca=ca.pem").expect("valid");
        assert_eq!((p.host.as_str(), p.port), ("::1", DEFAULT_PORT));
        assert_eq!(p.database, None);
        assert_eq!(p.ssl_mode.as_deref(), Some("REQUIRED"));
        assert_eq!(p.ssl_ca.as_deref(), Some("ca.pem"));
        for bad in [
            "postgres://u@h/db",
            "mysql://h/db",
            "mysql://u@:3306/db",
            "mysql://u@h:99999/db",
            "mysql://u@h/a/b",
            "mysql://u@h/db?sslmode=require",
            "not a url",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let e = parse_url("mysql://u:hunter2@h/db?x=1").expect_err("unknown parameter");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_modes() {
        assert_eq!(TlsMode::parse("VERIFY_IDENTITY"), Ok(TlsMode::VerifyFull));
        assert_eq!(TlsMode::parse("required"), Ok(TlsMode::Require));
        assert!(TlsMode::parse("VERIFY_CA")
            .expect_err("refused")
            .contains("server_name"));
        assert!(TlsMode::parse("preferred")
            .expect_err("refused")
            .contains("second connection"));
        assert!(TlsMode::parse("verify-fulll")
            .expect_err("typo")
            .contains("did you mean `verify-full`"));
    }

    #[test]
    fn statements() {
        for (q, want) in [
            ("SELECT 1", "SELECT 1"),
            ("SELECT 1;", "SELECT 1"),
            ("  SELECT ';' ; -- done\n", "SELECT ';'"),
            (
                "SELECT \"a;b\", `c;d` # x; y",
                "SELECT \"a;b\", `c;d` # x; y",
            ),
            ("SELECT 'it\\'s;' /* ; */", "SELECT 'it\\'s;' /* ; */"),
            ("SELECT 1 -- ; x", "SELECT 1 -- ; x"),
            ("SELECT 1; /* trailing */", "SELECT 1"),
        ] {
            assert_eq!(single_statement(q).as_deref(), Ok(want), "{q}");
        }
        for bad in [
            "",
            " ; ",
            "SELECT 1; SELECT 2",
            "SELECT 1; COMMIT",
            "SELECT 'open",
            "SELECT 1 /* open",
            "SELECT 1 /*! ; DELETE FROM t */",
            "SELECT 1 /*M!100100 ; DELETE FROM t */",
            "SELECT 1;--x\nDELETE FROM t",
        ] {
            assert!(single_statement(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values() {
        use serde_json::json;
        let none = ColumnFlags::empty();
        let cases: &[(&[u8], ColumnType, ColumnFlags, Json)] = &[
            (b"42", ColumnType::MYSQL_TYPE_LONGLONG, none, json!(42)),
            (
                b"18446744073709551615",
                ColumnType::MYSQL_TYPE_LONGLONG,
                ColumnFlags::UNSIGNED_FLAG,
                json!(18446744073709551615u64),
            ),
            (b"-7", ColumnType::MYSQL_TYPE_TINY, none, json!(-7)),
            (b"1.5", ColumnType::MYSQL_TYPE_DOUBLE, none, json!(1.5)),
            (
                b"12.50",
                ColumnType::MYSQL_TYPE_NEWDECIMAL,
                none,
                json!(12.5),
            ),
            (b"3.000", ColumnType::MYSQL_TYPE_NEWDECIMAL, none, json!(3)),
            (
                b"12345678901234567890.123",
                ColumnType::MYSQL_TYPE_NEWDECIMAL,
                none,
                json!("12345678901234567890.123"),
            ),
            (b"\x05", ColumnType::MYSQL_TYPE_BIT, none, json!(5)),
            (b"2024", ColumnType::MYSQL_TYPE_YEAR, none, json!(2024)),
            (
                b"2024-01-02 03:04:05",
                ColumnType::MYSQL_TYPE_DATETIME,
                none,
                json!("2024-01-02 03:04:05"),
            ),
            (b"ok", ColumnType::MYSQL_TYPE_VAR_STRING, none, json!("ok")),
        ];
        for (bytes, ty, flags, want) in cases {
            let got = to_json(&mysql_async::Value::Bytes(bytes.to_vec()), *ty, *flags);
            assert_eq!(&got, want, "{ty:?} {:?}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(
            to_json(&mysql_async::Value::NULL, ColumnType::MYSQL_TYPE_LONG, none),
            Json::Null
        );
    }

    #[test]
    fn statement_limit_defaults_to_what_is_left_of_the_timeout() {
        let mut cfg = MysqlConfig {
            url: "mysql://u@h/db".into(),
            host: "h".into(),
            port: DEFAULT_PORT,
            user: "u".into(),
            password: None,
            database: None,
            query: DEFAULT_QUERY.into(),
            reuse_connection: false,
            tls: TlsMode::Disable,
            ca: None,
            server_name: None,
            statement_timeout: None,
            expect: MysqlExpect::default(),
        };
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        assert_eq!(
            cfg.statement_limit(None, ms(5)),
            crate::config::DEFAULT_TIMEOUT
        );
        // 3s less 150ms (5%) less what has passed.
        assert_eq!(cfg.statement_limit(Some(s(3)), ms(50)), ms(2800));
        assert_eq!(cfg.statement_limit(Some(s(3)), ms(2900)), ms(1));
        assert_eq!(cfg.statement_limit(Some(s(60)), ms(0)), ms(59_500));
        assert_eq!(cfg.statement_limit(Some(ms(200)), ms(0)), ms(180));
        cfg.statement_timeout = Some(ms(500));
        assert_eq!(cfg.statement_limit(Some(s(3)), ms(50)), ms(500));
        assert_eq!(human_limit(ms(300)), "300ms");
        assert_eq!(human_limit(ms(1950)), "1.95s");
    }
}
