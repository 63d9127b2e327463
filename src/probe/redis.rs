//! The `redis` probe kind: connect (optionally over TLS), log in, run one
//! read-only command and check its reply and, when asked, fields of `INFO`.
//!
//! ```yaml
//! redis:
//!   url: redis://monitor:${REDIS_PASSWORD}@cache:6379/0   # rediss:// for TLS
//!   command: [GET, health:marker]   # default [PING]; read-only commands only
//!   reuse_connection: false         # default: a fresh connection every run
//! expect:
//!   reply: ok                       # a value matcher on the reply
//!   info:                           # fields of INFO, each a value matcher
//!     role: master
//!     connected_slaves: ">= 1"
//!     used_memory: "< 2gb"          # sizes in redis.conf units
//! ```
//!
//! The client is assembled here rather than taken from the `redis` crate's
//! connection types, so every step is our own await point and measured
//! exactly: `dns` (skipped for an IP), `connect`, `tls` (rediss://), `auth`
//! (`HELLO 2 [AUTH user pass] SETNAME lookout`, falling back to `AUTH` on
//! servers older than 6.0, then `SELECT db` when the URL names a database
//! other than 0) and `query` (the command, and `INFO` pipelined behind it).
//! Replies are read by a small RESP2/RESP3 reader with a bound (`max_reply`),
//! so a huge reply costs a bounded amount of memory; the `redis` crate packs
//! the commands. Nothing is spawned: the run owns its socket, so dropping the
//! run (the timeout in `run_once`) closes it, and the crate's own timeouts
//! and reconnect logic never come into play.
//!
//! With `reuse_connection: true` the connection is kept in the spec between
//! runs (a reused run has no connect or auth phases) and dropped after any
//! failure, so the next run reconnects. A kept connection that the server
//! has closed while idle (its `timeout`, a restart) is noticed before use
//! and replaced in the same run.
//!
//! Failure classes: `dns`, `connect`, `tls`, `auth` (NOAUTH, WRONGPASS,
//! NOPERM and other refusals while logging in), `query` (an error reply to
//! the command), `protocol` (the connection closed mid-exchange, or the peer
//! does not speak RESP), `size` (a reply larger than `max_reply`),
//! `expectation` and `timeout`. Messages carry the server's own error text;
//! the password is never part of one.
//!
//! Details: `remote`, `server_version` and `role` (from HELLO, or INFO when
//! read), `mode`, `client_id`, `reply` (its first 200 characters),
//! `reused_connection` (with `reuse_connection`), and for rediss://
//! `tls_version` and the certificate's subject, issuer and expiry.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde_json::Value as Json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::read::{join, suggest, Cx, Map};
use crate::config::yaml::{Node, Value};
use crate::expect::{shorten, text_of, Op, ValueMatcher};
use crate::probe::kept::Kept;
use crate::probe::net::{self, Wording};
use crate::probe::tlsutil::{self, CertInfo, TlsOptions};
use crate::probe::urlutil::{self, percent_decode};
use crate::probe::{http, Trace};
use crate::result::{Failure, FailureClass, Phase};

/// Keys accepted in the `redis:` section.
pub const KEYS: &[&str] = &[
    "url",
    "command",
    "username",
    "password",
    "reuse_connection",
    "insecure",
    "ca",
    "max_reply",
];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &["reply", "info"];

pub const DEFAULT_PORT: u16 = 6379;
/// Replies larger than this fail as `size` unless `max_reply` says otherwise.
pub const DEFAULT_MAX_REPLY: u64 = 1024 * 1024;
/// How much of a reply details and messages quote, in characters.
const REPLY_SHOWN: usize = 200;
/// Deeper nesting than this is not a reply any read-only command gives.
const MAX_DEPTH: usize = 32;
/// The name the probe's connections carry in `CLIENT LIST`.
const CLIENT_NAME: &str = "lookout";

// ---------------------------------------------------------------------------
// The compiled probe

/// A compiled `redis` probe.
#[derive(Debug, Clone)]
pub struct RedisSpec {
    pub host: String,
    pub port: u16,
    /// `Some` for rediss://: how the server's certificate is checked.
    pub tls: Option<TlsOptions>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: u32,
    pub command: Command,
    /// Send `INFO` after the command, for `info` expectations.
    pub send_info: bool,
    pub reuse_connection: bool,
    pub max_reply: usize,
    pub expect: RedisExpect,
    /// The kept connection (with `reuse_connection`), dropped after any
    /// failed run.
    kept: Kept<Conn>,
}

/// A password: shown as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The command a probe runs, checked against the read-only allow-list.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// As written (the name in any case), sent as is.
    pub args: Vec<String>,
    /// The upper-case name, with its subcommand for groups: `CLIENT LIST`.
    pub name: String,
}

impl Command {
    fn ping() -> Command {
        Command {
            args: vec!["PING".into()],
            name: "PING".into(),
        }
    }

    /// The command for messages, shortened when long.
    pub fn shown(&self) -> String {
        shorten(&self.args.join(" "), 80)
    }
}

/// What the reply and INFO must hold, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct RedisExpect {
    pub reply: Option<Matcher>,
    /// INFO field (or `field.key` inside a `k=v,...` value) and its matcher.
    pub info: Vec<(String, Matcher)>,
}

impl RedisSpec {
    pub fn target(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let user = self
            .username
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let db = if self.db == 0 {
            String::new()
        } else {
            format!("/{}", self.db)
        };
        format!("{scheme}://{user}{host}:{}{db}", self.port)
    }
}

// ---------------------------------------------------------------------------
// Matchers: value matchers, plus comparisons with byte sizes

/// A value matcher (`PONG`, `"> 0"`, `"=~ ^ok"`) or a comparison with a
/// byte size (`"< 2gb"`), for replies and INFO fields.
#[derive(Debug, Clone)]
pub enum Matcher {
    Value(ValueMatcher),
    /// A comparison against a size; `text` is the size as written.
    Size {
        op: Op,
        bytes: f64,
        text: String,
    },
}

impl Matcher {
    /// Reads a matcher from a YAML value already turned into JSON. A size
    /// unit is understood only after a comparison operator, so a plain
    /// `10k` still means the text "10k".
    pub fn parse(v: &Json) -> Result<Matcher, String> {
        if let Json::String(text) = v {
            if let Some((op, rest)) = Op::split(text) {
                if let Some(bytes) = parse_bytes(rest)? {
                    return Ok(Matcher::Size {
                        op,
                        bytes,
                        text: rest.to_string(),
                    });
                }
            }
        }
        ValueMatcher::from_json(v).map(Matcher::Value)
    }

    pub fn matches(&self, v: &Json) -> bool {
        match self {
            Matcher::Value(m) => m.matches(v),
            Matcher::Size { op, bytes, .. } => number(v).is_some_and(|n| op.holds(n, *bytes)),
        }
    }

    /// What was seen, as shown beside this matcher: a byte count compared
    /// with a size also reads as one (`1048576 (1.0 MiB)`).
    fn observed(&self, text: &str) -> String {
        match (self, text.trim().parse::<f64>()) {
            (Matcher::Size { .. }, Ok(n)) if n >= 1024.0 => {
                let (unit, div) = [("GiB", 1073741824.0), ("MiB", 1048576.0), ("KiB", 1024.0)]
                    .into_iter()
                    .find(|(_, d)| n >= *d)
                    .unwrap_or(("KiB", 1024.0));
                format!("{text} ({:.1} {unit})", n / div)
            }
            _ => text.to_string(),
        }
    }

    fn compares(&self) -> bool {
        matches!(
            self,
            Matcher::Size { .. } | Matcher::Value(ValueMatcher::Compare(_))
        )
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Value(m) => write!(f, "{m}"),
            Matcher::Size { op, text, .. } => write!(f, "{} {text}", op.as_str()),
        }
    }
}

fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The units of a size, as in redis.conf: `k`/`m`/`g` are powers of 1000,
/// `kb`/`mb`/`gb` powers of 1024 (as `maxmemory 2gb` means); `kib`, `mib`,
/// `gib` are also powers of 1024.
const SIZE_UNITS: &[(&str, f64)] = &[
    ("b", 1.0),
    ("k", 1e3),
    ("kb", 1024.0),
    ("kib", 1024.0),
    ("m", 1e6),
    ("mb", 1048576.0),
    ("mib", 1048576.0),
    ("g", 1e9),
    ("gb", 1073741824.0),
    ("gib", 1073741824.0),
    ("t", 1e12),
    ("tb", 1099511627776.0),
    ("tib", 1099511627776.0),
];

/// `2gb` as bytes; `Ok(None)` when the text has no unit (a plain number or
/// not a size at all), an error for a number with an unknown unit.
pub fn parse_bytes(text: &str) -> Result<Option<f64>, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() || unit.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) {
        return Ok(None);
    }
    let Ok(n) = num.parse::<f64>() else {
        return Ok(None);
    };
    let lower = unit.to_ascii_lowercase();
    match SIZE_UNITS.iter().find(|(u, _)| *u == lower) {
        Some((_, mult)) => Ok(Some(n * mult)),
        None => Err(format!(
            "unknown size unit `{unit}` in `{t}`: use b, k, kb, m, mb, g, gb (as in redis.conf: \
             1k = 1000 bytes, 1kb = 1024 bytes), or kib, mib, gib"
        )),
    }
}

// ---------------------------------------------------------------------------
// The read-only allow-list

/// Any number of arguments.
const MANY: usize = usize::MAX;

/// A command's name and the fewest and most arguments it takes.
type Arity = (&'static str, usize, usize);

/// Read-only commands.
const READ_ONLY: &[Arity] = &[
    ("PING", 0, 1),
    ("ECHO", 1, 1),
    ("GET", 1, 1),
    ("MGET", 1, MANY),
    ("EXISTS", 1, MANY),
    ("TTL", 1, 1),
    ("PTTL", 1, 1),
    ("EXPIRETIME", 1, 1),
    ("PEXPIRETIME", 1, 1),
    ("TYPE", 1, 1),
    ("STRLEN", 1, 1),
    ("GETRANGE", 3, 3),
    ("GETBIT", 2, 2),
    ("BITCOUNT", 1, 4),
    ("BITPOS", 2, 5),
    ("LLEN", 1, 1),
    ("LRANGE", 3, 3),
    ("LINDEX", 2, 2),
    ("LPOS", 2, MANY),
    ("SCARD", 1, 1),
    ("SISMEMBER", 2, 2),
    ("SMISMEMBER", 2, MANY),
    ("SMEMBERS", 1, 1),
    ("SRANDMEMBER", 1, 2),
    ("SINTERCARD", 2, MANY),
    ("ZCARD", 1, 1),
    ("ZSCORE", 2, 2),
    ("ZMSCORE", 2, MANY),
    ("ZRANGE", 3, MANY),
    ("ZRANGEBYSCORE", 3, MANY),
    ("ZREVRANGE", 3, 4),
    ("ZRANK", 2, 3),
    ("ZREVRANK", 2, 3),
    ("ZCOUNT", 3, 3),
    ("ZLEXCOUNT", 3, 3),
    ("HGET", 2, 2),
    ("HMGET", 2, MANY),
    ("HLEN", 1, 1),
    ("HEXISTS", 2, 2),
    ("HGETALL", 1, 1),
    ("HKEYS", 1, 1),
    ("HVALS", 1, 1),
    ("HSTRLEN", 2, 2),
    ("XLEN", 1, 1),
    ("XRANGE", 3, 5),
    ("XREVRANGE", 3, 5),
    ("XPENDING", 2, MANY),
    ("GEOPOS", 2, MANY),
    ("GEODIST", 3, 4),
    ("GEOHASH", 2, MANY),
    ("SCAN", 1, MANY),
    ("SSCAN", 2, MANY),
    ("HSCAN", 2, MANY),
    ("ZSCAN", 2, MANY),
    ("RANDOMKEY", 0, 0),
    ("SORT_RO", 1, MANY),
    ("INFO", 0, MANY),
    ("DBSIZE", 0, 0),
    ("TIME", 0, 0),
    ("LASTSAVE", 0, 0),
    ("ROLE", 0, 0),
];

/// Commands with subcommands, and their read-only subcommands (arguments
/// counted after the subcommand).
const GROUPS: &[(&str, &[Arity])] = &[
    (
        "CLIENT",
        &[
            ("LIST", 0, MANY),
            ("INFO", 0, 0),
            ("ID", 0, 0),
            ("GETNAME", 0, 0),
        ],
    ),
    ("CONFIG", &[("GET", 1, MANY)]),
    (
        "MEMORY",
        &[("USAGE", 1, 3), ("STATS", 0, 0), ("DOCTOR", 0, 0)],
    ),
    (
        "OBJECT",
        &[
            ("ENCODING", 1, 1),
            ("FREQ", 1, 1),
            ("IDLETIME", 1, 1),
            ("REFCOUNT", 1, 1),
        ],
    ),
    (
        "CLUSTER",
        &[
            ("INFO", 0, 0),
            ("NODES", 0, 0),
            ("MYID", 0, 0),
            ("SLOTS", 0, 0),
            ("SHARDS", 0, 0),
            ("KEYSLOT", 1, 1),
            ("COUNTKEYSINSLOT", 1, 1),
        ],
    ),
    ("SLOWLOG", &[("GET", 0, 1), ("LEN", 0, 0)]),
    (
        "LATENCY",
        &[("LATEST", 0, 0), ("HISTORY", 1, 1), ("DOCTOR", 0, 0)],
    ),
    (
        "XINFO",
        &[("STREAM", 1, 3), ("GROUPS", 1, 1), ("CONSUMERS", 2, 2)],
    ),
    (
        "PUBSUB",
        &[
            ("CHANNELS", 0, 1),
            ("NUMSUB", 0, MANY),
            ("NUMPAT", 0, 0),
            ("SHARDCHANNELS", 0, 1),
        ],
    ),
    ("ACL", &[("WHOAMI", 0, 0)]),
    ("MODULE", &[("LIST", 0, 0)]),
    (
        "SENTINEL",
        &[
            ("MASTERS", 0, 0),
            ("MASTER", 1, 1),
            ("REPLICAS", 1, 1),
            ("SENTINELS", 1, 1),
            ("GET-MASTER-ADDR-BY-NAME", 1, 1),
            ("CKQUORUM", 1, 1),
        ],
    ),
];

/// Commands refused for a reason other than writing.
const REFUSED: &[(&str, &str)] = &[
    (
        "KEYS",
        "walks every key and blocks the server while it does; use SCAN, EXISTS or DBSIZE",
    ),
    (
        "SELECT",
        "the database is chosen in the URL (redis://host:6379/2)",
    ),
    (
        "AUTH",
        "credentials go in the URL or in `username` and `password`",
    ),
    (
        "HELLO",
        "the probe sends HELLO itself; credentials go in the URL or in `username` and `password`",
    ),
    ("MONITOR", "never ends"),
    ("SUBSCRIBE", "never ends"),
    ("PSUBSCRIBE", "never ends"),
    ("SSUBSCRIBE", "never ends"),
    ("SYNC", "starts a replication stream"),
    ("PSYNC", "starts a replication stream"),
    ("QUIT", "closes the connection"),
    ("RESET", "resets the connection"),
    ("XREAD", "can block waiting for data; use XRANGE or XLEN"),
    ("XREADGROUP", "changes consumer group state"),
    ("WAIT", "blocks waiting for replicas"),
    ("WAITAOF", "blocks waiting for the AOF"),
    ("EVAL", "runs a script, and scripts can write"),
    ("EVALSHA", "runs a script, and scripts can write"),
    ("EVAL_RO", "runs a script; scripts are not allowed"),
    ("EVALSHA_RO", "runs a script; scripts are not allowed"),
    ("FCALL", "runs a function, and functions can write"),
    ("FCALL_RO", "runs a function; functions are not allowed"),
    ("DEBUG", "can stall or crash the server"),
];

/// Commands that change data or server state, named as such in errors.
#[rustfmt::skip]
const WRITES: &[&str] = &[
    "SET", "SETEX", "PSETEX", "SETNX", "SETRANGE", "GETSET", "GETDEL", "GETEX", "APPEND",
    "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "MSET", "MSETNX", "DEL", "UNLINK",
    "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST", "RENAME", "RENAMENX", "MOVE",
    "COPY", "RESTORE", "TOUCH", "LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "LPOP", "RPOP", "LSET",
    "LINSERT", "LREM", "LTRIM", "LMOVE", "RPOPLPUSH", "LMPOP", "BLPOP", "BRPOP", "BLMOVE",
    "BRPOPLPUSH", "BLMPOP", "SADD", "SREM", "SPOP", "SMOVE", "SINTERSTORE", "SUNIONSTORE",
    "SDIFFSTORE", "ZADD", "ZINCRBY", "ZREM", "ZREMRANGEBYRANK", "ZREMRANGEBYSCORE",
    "ZREMRANGEBYLEX", "ZPOPMIN", "ZPOPMAX", "BZPOPMIN", "BZPOPMAX", "ZMPOP", "BZMPOP",
    "ZRANGESTORE", "ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE", "HSET", "HSETNX", "HMSET",
    "HDEL", "HINCRBY", "HINCRBYFLOAT", "XADD", "XDEL", "XTRIM", "XGROUP", "XACK", "XCLAIM",
    "XAUTOCLAIM", "XSETID", "PFADD", "PFMERGE", "PFCOUNT", "SETBIT", "BITOP", "BITFIELD",
    "GEOADD", "GEORADIUS", "GEORADIUSBYMEMBER", "GEOSEARCHSTORE", "SORT", "PUBLISH", "SPUBLISH",
    "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "FLUSHALL", "FLUSHDB", "SWAPDB", "SAVE",
    "BGSAVE", "BGREWRITEAOF", "SHUTDOWN", "REPLICAOF", "SLAVEOF", "FAILOVER", "MIGRATE",
    "SCRIPT", "FUNCTION", "READONLY", "READWRITE", "ASKING",
];

/// Checks a command against the allow-list; the error says why in words.
pub fn check_command(args: &[String]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Err("the command is empty; write e.g. [PING] or [GET, some:key]".into());
    };
    let name = first.trim().to_ascii_uppercase();
    if name.is_empty() {
        return Err("the command name is empty".into());
    }
    let rest = &args[1..];
    if let Some((_, min, max)) = READ_ONLY.iter().find(|(n, _, _)| *n == name) {
        check_arity(&name, rest.len(), *min, *max)?;
        return Ok(Command {
            args: args.to_vec(),
            name,
        });
    }
    if let Some((_, subs)) = GROUPS.iter().find(|(n, _)| *n == name) {
        let allowed: Vec<String> = subs.iter().map(|(s, _, _)| format!("{name} {s}")).collect();
        let Some(sub) = rest.first() else {
            return Err(format!(
                "`{name}` needs a subcommand; allowed: {}",
                allowed.join(", ")
            ));
        };
        let sub_upper = sub.trim().to_ascii_uppercase();
        let full = format!("{name} {sub_upper}");
        let Some((_, min, max)) = subs.iter().find(|(s, _, _)| *s == sub_upper) else {
            let names: Vec<&str> = subs.iter().map(|(s, _, _)| *s).collect();
            let hint = match suggest(&sub_upper, &names) {
                Some(s) => format!("did you mean `{name} {s}`? "),
                None => String::new(),
            };
            return Err(format!(
                "`{full}` is not a read-only command Lookout allows; {hint}allowed: {}",
                allowed.join(", ")
            ));
        };
        check_arity(&full, rest.len() - 1, *min, *max)?;
        if full == "CONFIG GET" {
            for p in &rest[1..] {
                let lower = p.to_ascii_lowercase();
                if lower.contains(['*', '?', '['])
                    || lower.contains("pass")
                    || lower.contains("auth")
                {
                    return Err(format!(
                        "CONFIG GET `{p}` could copy a password into results; name one parameter \
                         without wildcards, such as maxmemory"
                    ));
                }
            }
        }
        return Ok(Command {
            args: args.to_vec(),
            name: full,
        });
    }
    if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
        return Err(format!("`{name}` is not allowed in a probe: it {why}"));
    }
    if WRITES.contains(&name.as_str()) {
        return Err(format!(
            "`{name}` writes or changes server state; a probe runs only read-only commands \
             (see the list in the README)"
        ));
    }
    let known: Vec<&str> = READ_ONLY
        .iter()
        .map(|(n, _, _)| *n)
        .chain(GROUPS.iter().map(|(n, _)| *n))
        .collect();
    match suggest(&name, &known) {
        Some(s) => Err(format!("unknown command `{name}`; did you mean `{s}`?")),
        None => Err(format!(
            "`{name}` is not a read-only command Lookout knows (see the list in the README)"
        )),
    }
}

fn check_arity(name: &str, n: usize, min: usize, max: usize) -> Result<(), String> {
    if n >= min && n <= max {
        return Ok(());
    }
    let plural = |k: usize| if k == 1 { "argument" } else { "arguments" };
    let want = if min == max {
        format!("{min} {}", plural(min))
    } else if max == MANY {
        format!("at least {min} {}", plural(min))
    } else {
        format!("{min} to {max} arguments")
    };
    Err(format!("`{name}` takes {want}, but {n} {} given", {
        if n == 1 {
            "is"
        } else {
            "are"
        }
    }))
}

// ---------------------------------------------------------------------------
// Compiling the configuration

/// What a redis:// or rediss:// URL says.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `?insecure` or `#insecure` (rediss:// only).
    pub insecure: bool,
}

/// Parses a redis:// or rediss:// URL; the error says what is wrong in words.
pub fn parse_url(text: &str) -> Result<RedisUrl, String> {
    let (url, shown) = urlutil::parse(text)?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        "unix" | "redis+unix" => {
            return Err(format!(
                "`{shown}`: Unix sockets are not supported; use redis://host:port"
            ))
        }
        other => {
            return Err(format!(
                "unsupported URL scheme `{other}`: a redis probe needs a redis:// or rediss:// URL"
            ))
        }
    };
    let host = urlutil::host(&url, &shown)?;
    let port = url.port().unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return Err(format!("invalid URL `{shown}`: port 0"));
    }
    let path = url.path().trim_start_matches('/');
    let db = if path.is_empty() {
        0
    } else {
        path.parse::<u32>().map_err(|_| {
            format!(
                "invalid URL `{shown}`: the path must be a database number such as /0, not `/{path}`"
            )
        })?
    };
    let username = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(percent_decode);
    let mut insecure = false;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "insecure" => {
                insecure = match v.as_ref() {
                    "" | "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => {
                        return Err(format!(
                    "invalid URL `{shown}`: `insecure={other}`; write ?insecure or ?insecure=true"
                ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "invalid URL `{shown}`: unknown parameter `{other}`; Lookout understands only \
                     `insecure` (for rediss://)"
                ))
            }
        }
    }
    match url.fragment() {
        None | Some("") => {}
        Some("insecure") => insecure = true,
        Some(other) => {
            return Err(format!(
                "invalid URL `{shown}`: unknown fragment `#{other}`"
            ))
        }
    }
    if insecure && !tls {
        return Err(format!(
            "`insecure` applies to rediss:// URLs only; `{shown}` does not use TLS"
        ));
    }
    Ok(RedisUrl {
        tls,
        host,
        port,
        db,
        username,
        password,
        insecure,
    })
}

pub fn compile(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    expect: Option<&Map<'_>>,
) -> Option<RedisSpec> {
    let m = cx.map(node, path, KEYS)?;
    let mut ok = true;

    let url = m.required_parsed(cx, "url", parse_url);
    let command = compile_command(cx, &m);
    let username = m.str(cx, "username");
    ok &= username.is_some() || !m.has("username");
    let password = m.str(cx, "password");
    ok &= password.is_some() || !m.has("password");
    let reuse_connection = m.bool_or(cx, "reuse_connection", false);
    let tls_opts = tlsutil::compile_options(cx, &m);
    let max_reply = match m.get("max_reply") {
        None => Some(DEFAULT_MAX_REPLY),
        Some(n) => http::compile_size(cx, n, &m.path("max_reply")),
    };
    let expect = compile_expect(cx, expect);

    let url = url?;
    if !url.tls {
        for key in ["insecure", "ca"] {
            if m.has(key) {
                m.error_at(
                    cx,
                    key,
                    format!("`{key}` applies to rediss:// URLs (TLS) only; this URL is redis://"),
                );
                ok = false;
            }
        }
    }
    if password.is_some() && url.password.is_some() {
        m.error_at(
            cx,
            "password",
            "the URL already holds a password; give it in one place",
        );
        ok = false;
    }
    if username.is_some() && url.username.is_some() {
        m.error_at(
            cx,
            "username",
            "the URL already names a user; give it in one place",
        );
        ok = false;
    }
    let password = password.or(url.password.clone()).filter(|p| !p.is_empty());
    if let Some(p) = &password {
        // A password written in the URL itself was not substituted from a
        // variable, so it is not registered yet; it must not show anywhere.
        crate::redact::register(p);
    }
    let user_key = if username.is_some() {
        "username"
    } else {
        "url"
    };
    let username = username.or(url.username.clone()).filter(|u| !u.is_empty());
    if username.is_some() && password.is_none() {
        m.error_at(
            cx,
            user_key,
            "a user name needs a password (redis://user:PASSWORD@host, or `password`)",
        );
        ok = false;
    }

    let (command, command_given) = command?;
    let expect = expect?;
    let mut tls = tls_opts?;
    tls.insecure |= url.insecure;
    // INFO expectations without a command of their own: the command is
    // INFO. With another command, INFO is sent behind it; when the command
    // is INFO itself, its reply is what `info` checks.
    let command = if !command_given && !expect.info.is_empty() {
        Command {
            args: vec!["INFO".into()],
            name: "INFO".into(),
        }
    } else {
        command
    };
    let send_info = !expect.info.is_empty() && command.name != "INFO";
    let max_reply = usize::try_from(max_reply?).ok()?;
    if !ok {
        return None;
    }
    Some(RedisSpec {
        host: url.host,
        port: url.port,
        tls: url.tls.then_some(tls),
        username,
        password: password.map(Secret),
        db: url.db,
        command,
        send_info,
        reuse_connection: reuse_connection?,
        max_reply,
        expect,
        kept: Kept::default(),
    })
}

/// The command and whether it was written (or is the default PING).
fn compile_command(cx: &mut Cx, m: &Map<'_>) -> Option<(Command, bool)> {
    let Some(node) = m.get("command") else {
        return Some((Command::ping(), false));
    };
    let path = m.path("command");
    let (args, pos) = match &node.value {
        // A single string is split at white space: `GET some:key`.
        Value::Str { .. } | Value::Int(_) => {
            let text = cx.string(node, &path)?;
            (
                text.split_whitespace().map(str::to_string).collect(),
                &node.pos,
            )
        }
        Value::Seq(items) => {
            let args = cx.string_list(node, &path)?;
            (args, items.first().map(|n| &n.pos).unwrap_or(&node.pos))
        }
        _ => {
            cx.error(
                &node.pos,
                &path,
                format!(
                    "expected a command as a list such as [GET, some:key], found {}",
                    node.type_name()
                ),
            );
            return None;
        }
    };
    match check_command(&args) {
        Ok(c) => Some((c, true)),
        Err(e) => {
            cx.error(pos, &path, e);
            None
        }
    }
}

fn compile_expect(cx: &mut Cx, expect: Option<&Map<'_>>) -> Option<RedisExpect> {
    let mut out = RedisExpect::default();
    let Some(em) = expect else {
        return Some(out);
    };
    let mut ok = true;
    if let Some(node) = em.get("reply") {
        let path = em.path("reply");
        match cx.json(node, &path).map(|j| Matcher::parse(&j)) {
            Some(Ok(m)) => out.reply = Some(m),
            Some(Err(e)) => {
                cx.error(&node.pos, &path, e);
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(node) = em.get("info") {
        let path = em.path("info");
        match &node.value {
            Value::Map(entries) if !entries.is_empty() => {
                for (k, v) in entries {
                    let p = join(&path, &k.name);
                    let name_ok = !k.name.is_empty()
                        && k.name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                    if !name_ok {
                        cx.error(
                            &k.pos,
                            &p,
                            format!(
                                "`{}` is not an INFO field name such as used_memory or db0.keys",
                                k.name
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    let json = cx.scalar_json(v, &p, "a value or a comparison such as \">= 1\"");
                    match json.map(|j| Matcher::parse(&j)) {
                        Some(Ok(m)) if m.compares() && k.name.ends_with("_human") => {
                            let bytes = k.name.trim_end_matches("_human");
                            cx.error(
                                &v.pos,
                                &p,
                                format!(
                                    "`{}` is text such as 1.50G; compare `{bytes}` (bytes) \
                                     instead, e.g. {bytes}: \"< 2gb\"",
                                    k.name
                                ),
                            );
                            ok = false;
                        }
                        Some(Ok(m)) => out.info.push((k.name.clone(), m)),
                        Some(Err(e)) => {
                            cx.error(&v.pos, &p, e);
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
            }
            _ => {
                cx.error(
                    &node.pos,
                    &path,
                    format!(
                        "expected a mapping of INFO field to expected value (role: master), found {}",
                        node.type_name()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

// ---------------------------------------------------------------------------
// Replies: a bounded RESP2/RESP3 reader

/// One reply as read off the wire (RESP3 types are read too, though the
/// probe asks for RESP2).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Double(f64),
    Bool(bool),
    BigNumber(String),
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// The reply as JSON: strings as strings, integers as numbers, nil as
    /// null, arrays as arrays, maps as objects.
    pub fn to_json(&self) -> Json {
        match self {
            Reply::Simple(s) | Reply::Error(s) | Reply::BigNumber(s) => Json::String(s.clone()),
            Reply::Int(i) => Json::from(*i),
            Reply::Bulk(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
            Reply::Nil => Json::Null,
            Reply::Array(items) => Json::Array(items.iter().map(Reply::to_json).collect()),
            Reply::Double(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Reply::Bool(b) => Json::Bool(*b),
            Reply::Map(pairs) => Json::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (text_of(&k.to_json()), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The reply as text for details and messages (strings unquoted).
    pub fn text(&self) -> String {
        match self {
            Reply::Nil => "(nil)".into(),
            other => text_of(&other.to_json()),
        }
    }

    fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// The outcome of parsing a buffer that may hold only part of a reply.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A whole reply and the bytes it took.
    Done(Reply, usize),
    /// Incomplete: the buffer must hold at least this many bytes first.
    Need(usize),
}

/// Parses one reply from the start of `buf`.
pub fn parse_reply(buf: &[u8]) -> Result<Parsed, String> {
    Ok(match parse_at(buf, 0, 0)? {
        Step::Done(r, end) => Parsed::Done(r, end),
        Step::Need(n) => Parsed::Need(n),
    })
}

enum Step {
    Done(Reply, usize),
    Need(usize),
}

/// Parses the reply starting at `pos`; `Need` carries an absolute length.
fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Step, String> {
    if depth > MAX_DEPTH {
        return Err(format!("replies nested deeper than {MAX_DEPTH} levels"));
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(Step::Need(pos + 1));
    };
    let Some(nl) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(Step::Need(buf.len() + 1));
    };
    let line = &buf[pos + 1..pos + nl];
    let after = pos + nl + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let int = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| format!("`{}` is not a number", shorten(&text(), 40)))
    };
    let reply = match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(int()?),
        b'_' => Reply::Nil,
        b'#' => Reply::Bool(line == b"t"),
        b'(' => Reply::BigNumber(text()),
        b',' => Reply::Double(
            text()
                .parse::<f64>()
                .map_err(|_| format!("`{}` is not a double", shorten(&text(), 40)))?,
        ),
        b'$' | b'!' | b'=' => {
            let n = int()?;
            if n < 0 {
                return Ok(Step::Done(Reply::Nil, after));
            }
            let end = after
                .checked_add(usize::try_from(n).map_err(|_| "length out of range")?)
                .ok_or("length out of range")?;
            if buf.len() < end + 2 {
                return Ok(Step::Need(end + 2));
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("a bulk string does not end with CRLF".into());
            }
            let data = &buf[after..end];
            let reply = match kind {
                b'!' => Reply::Error(String::from_utf8_lossy(data).into_owned()),
                // A verbatim string starts with its format: `txt:`.
                b'=' => Reply::Bulk(data.get(4..).unwrap_or_default().to_vec()),
                _ => Reply::Bulk(data.to_vec()),
            };
            return Ok(Step::Done(reply, end + 2));
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = int()?;
            if n < 0 {
                return Ok(Step::Done(Reply::Nil, after));
            }
            let pairs = matches!(kind, b'%' | b'|');
            let count = usize::try_from(n).map_err(|_| "length out of range")?;
            let items = if pairs {
                count.saturating_mul(2)
            } else {
                count
            };
            let mut out = Vec::with_capacity(items.min(1024));
            let mut at = after;
            for _ in 0..items {
                match parse_at(buf, at, depth + 1)? {
                    Step::Done(r, end) => {
                        out.push(r);
                        at = end;
                    }
                    Step::Need(n) => return Ok(Step::Need(n)),
                }
            }
            if kind == b'|' {
                // Attributes describe the reply that follows; keep the reply.
                return parse_at(buf, at, depth);
            }
            let reply = if pairs {
                let mut it = out.into_iter();
                let mut map = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    map.push((k, v));
                }
                Reply::Map(map)
            } else {
                Reply::Array(out)
            };
            return Ok(Step::Done(reply, at));
        }
        other => {
            return Err(format!(
                "unexpected `{}` where a reply should start",
                (other as char).escape_default()
            ))
        }
    };
    Ok(Step::Done(reply, after))
}

// ---------------------------------------------------------------------------
// INFO

/// INFO's `field:value` lines (section headers and blank lines skipped).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A field, or `field.key` inside a `k=v,k=v` value (`db0.keys`,
/// `slave0.state`).
pub fn info_lookup<'a>(info: &'a BTreeMap<String, String>, field: &str) -> Option<&'a str> {
    if let Some(v) = info.get(field) {
        return Some(v);
    }
    let (f, key) = field.split_once('.')?;
    info.get(f)?
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------
// Running

/// Anything the probe can talk RESP over: a TCP or a TLS stream.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What the connection learned when it was made; recorded every run.
#[derive(Debug, Default, Clone)]
struct Facts {
    remote: Option<SocketAddr>,
    server_version: Option<String>,
    role: Option<String>,
    mode: Option<String>,
    client_id: Option<i64>,
    tls_version: Option<String>,
    leaf: Option<CertInfo>,
}

impl Facts {
    fn record(&self, trace: &mut Trace) {
        if let Some(r) = self.remote {
            trace.detail("remote", r.to_string());
        }
        for (key, value) in [
            ("server_version", &self.server_version),
            ("role", &self.role),
            ("mode", &self.mode),
            ("tls_version", &self.tls_version),
        ] {
            if let Some(v) = value {
                trace.detail(key, v.clone());
            }
        }
        if let Some(v) = self.client_id {
            trace.detail("client_id", v);
        }
        if let Some(leaf) = &self.leaf {
            leaf.record(trace);
        }
    }
}

/// One connection: the stream and the bytes read but not yet parsed.
struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    facts: Facts,
    /// See [`Conn::is_stale`]; `None` when the socket could not be shared.
    peek: Option<std::net::TcpStream>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("facts", &self.facts).finish()
    }
}

/// Why reading a reply failed.
enum WireError {
    /// The peer closed the connection; `partial` when part of a reply came.
    Closed {
        partial: bool,
    },
    Io(std::io::Error),
    TooLarge,
    Malformed(String),
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), std::io::Error> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    async fn read_reply(&mut self, max: usize) -> Result<Reply, WireError> {
        let mut need = 1;
        loop {
            if self.buf.len() >= need {
                match parse_reply(&self.buf) {
                    Ok(Parsed::Done(reply, used)) => {
                        self.buf.drain(..used);
                        return Ok(reply);
                    }
                    Ok(Parsed::Need(n)) => need = n,
                    Err(e) => {
                        let start = String::from_utf8_lossy(&self.buf[..self.buf.len().min(60)])
                            .into_owned();
                        return Err(WireError::Malformed(format!(
                            "{e} (it sent {:?})",
                            shorten(&start, 60)
                        )));
                    }
                }
            }
            // `need` counts the CRLF after the reply; allow for it.
            if need > max.saturating_add(2) || self.buf.len() > max.saturating_add(2) {
                return Err(WireError::TooLarge);
            }
            self.buf.reserve(16 * 1024);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(WireError::Closed {
                        partial: !self.buf.is_empty(),
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WireError::Io(e)),
            }
        }
    }

    /// True when the server has closed this idle connection (or sent
    /// something unasked, or reset it), so it must not be used again. This
    /// peeks at the socket itself (a real system call that never waits)
    /// rather than polling the stream, whose readiness the runtime may not
    /// have updated yet.
    fn is_stale(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let Some(tcp) = &self.peek else {
            return false;
        };
        let mut byte = [0u8; 1];
        match tcp.peek(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
            // End of stream, a reset, or bytes nobody asked for.
            _ => true,
        }
    }
}

/// A second handle on the connection's socket, for [`Conn::is_stale`]. It
/// shares the socket's non-blocking mode, so `peek` never waits.
#[cfg(unix)]
fn peek_handle(tcp: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    tcp.as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

#[cfg(not(unix))]
fn peek_handle(_tcp: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    None
}

fn pack(args: &[String]) -> Vec<u8> {
    let mut c = ::redis::cmd(&args[0]);
    for a in &args[1..] {
        c.arg(a.as_str());
    }
    c.get_packed_command()
}

pub async fn run(spec: &RedisSpec, trace: &mut Trace) -> Result<(), Failure> {
    if !spec.reuse_connection {
        let mut conn = open(spec, trace).await?;
        let outcome = exchange(spec, &mut conn, trace).await;
        // A polite close: TLS sends close_notify; plain TCP just FIN.
        let _ = conn.io.shutdown().await;
        return outcome;
    }
    let mut kept = spec.kept.lock().await;
    // Taken out for the run: if the run is cut short by its timeout, the
    // connection is dropped with it and the next run reconnects.
    let reusable = kept.take().filter(|c| !c.is_stale());
    trace.detail("reused_connection", reusable.is_some());
    let mut conn = match reusable {
        Some(c) => c,
        None => open(spec, trace).await?,
    };
    let outcome = exchange(spec, &mut conn, trace).await;
    if outcome.is_ok() && trace.checks.iter().all(|c| c.passed) {
        *kept = Some(conn);
    }
    outcome
}

/// Resolves, connects, handshakes TLS and logs in.
async fn open(spec: &RedisSpec, trace: &mut Trace) -> Result<Conn, Failure> {
    // Built before any phase starts: loading system roots is not TLS time.
    let tls = match &spec.tls {
        Some(opts) => Some((net::tls_config(opts).await?, net::server_name(&spec.host)?)),
        None => None,
    };
    let addrs = net::resolve(&spec.host, spec.port, Wording::Http, trace).await?;
    let (tcp, _) = net::connect(&spec.host, &addrs, Wording::Http, trace).await?;
    let _ = tcp.set_nodelay(true);
    let mut facts = Facts {
        remote: tcp.peer_addr().ok(),
        ..Facts::default()
    };
    let peek = if spec.reuse_connection {
        peek_handle(&tcp)
    } else {
        None
    };
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp),
        Some((config, name)) => match net::handshake(tcp, name, &config, &[], trace).await {
            Ok((stream, hs)) => {
                facts.tls_version = Some(hs.version);
                facts.leaf = hs.leaf;
                Box::new(stream)
            }
            Err(f) => return Err(net::tls_failure(&f, &spec.target(), trace)),
        },
    };
    let mut conn = Conn {
        io,
        buf: Vec::new(),
        facts,
        peek,
    };
    conn.facts.record(trace);
    trace.begin(Phase::Auth);
    let done = login(spec, &mut conn).await;
    trace.end();
    done?;
    conn.facts.record(trace);
    Ok(conn)
}

/// HELLO (or AUTH on servers before 6.0), then SELECT.
async fn login(spec: &RedisSpec, conn: &mut Conn) -> Result<(), Failure> {
    let mut hello = vec!["HELLO".to_string(), "2".into()];
    let user = spec.username.clone().unwrap_or_else(|| "default".into());
    if let Some(p) = &spec.password {
        hello.extend(["AUTH".into(), user.clone(), p.0.clone()]);
    }
    hello.extend(["SETNAME".into(), CLIENT_NAME.into()]);
    let reply = round_trip(spec, conn, &hello, "HELLO").await?;
    match reply {
        Reply::Array(items) => {
            let mut it = items.iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let value = v.as_text();
                match k.as_text().as_deref() {
                    Some("version") => conn.facts.server_version = value,
                    Some("role") => conn.facts.role = value,
                    Some("mode") => conn.facts.mode = value,
                    Some("id") => {
                        if let Reply::Int(id) = v {
                            conn.facts.client_id = Some(*id);
                        }
                    }
                    _ => {}
                }
            }
        }
        Reply::Error(e) if is_unknown_command(&e) => {
            // Redis before 6.0 has no HELLO: log in the old way.
            if let Some(p) = &spec.password {
                let mut auth = vec!["AUTH".to_string()];
                if let Some(u) = &spec.username {
                    auth.push(u.clone());
                }
                auth.push(p.0.clone());
                if let Reply::Error(e) = round_trip(spec, conn, &auth, "AUTH").await? {
                    return Err(auth_failure(spec, &e));
                }
            }
        }
        Reply::Error(e) => return Err(auth_failure(spec, &e)),
        other => {
            return Err(Failure::new(
                FailureClass::Protocol,
                format!(
                    "{} answered HELLO with {}, not the expected array",
                    spec.target(),
                    shorten(&other.text(), 60)
                ),
            ))
        }
    }
    if spec.db != 0 {
        let select = vec!["SELECT".to_string(), spec.db.to_string()];
        if let Reply::Error(e) = round_trip(spec, conn, &select, "SELECT").await? {
            let class = match error_code(&e) {
                "NOAUTH" | "WRONGPASS" | "NOPERM" => FailureClass::Auth,
                _ => FailureClass::Query,
            };
            return Err(Failure::new(
                class,
                format!("SELECT {} failed: {e}", spec.db),
            ));
        }
    }
    Ok(())
}

fn is_unknown_command(e: &str) -> bool {
    let lower = e.to_ascii_lowercase();
    lower.starts_with("err unknown command") || lower.starts_with("noproto")
}

fn error_code(e: &str) -> &str {
    e.split_whitespace().next().unwrap_or("")
}

/// A refusal while logging in, in words, with the server's own text.
fn auth_failure(spec: &RedisSpec, e: &str) -> Failure {
    let class = match error_code(e) {
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" => FailureClass::Query,
        _ => FailureClass::Auth,
    };
    let msg = match (error_code(e), &spec.password) {
        ("NOAUTH", None) => format!(
            "{} requires a password and the probe has none; put it in the URL \
             (redis://:PASSWORD@host) or in `password` (server: {e})",
            spec.target()
        ),
        (_, Some(_)) if class == FailureClass::Auth => format!(
            "authentication as `{}` to {} failed: {e}",
            spec.username.as_deref().unwrap_or("default"),
            spec.target()
        ),
        _ => format!("{} refused the connection: {e}", spec.target()),
    };
    Failure::new(class, msg)
}

/// Sends one command and reads its reply (an error reply is a value here).
async fn round_trip(
    spec: &RedisSpec,
    conn: &mut Conn,
    args: &[String],
    what: &str,
) -> Result<Reply, Failure> {
    if let Err(e) = conn.send(&pack(args)).await {
        return Err(io_failure(spec, conn, what, Some(e), false));
    }
    read(spec, conn, what).await
}

async fn read(spec: &RedisSpec, conn: &mut Conn, what: &str) -> Result<Reply, Failure> {
    match conn.read_reply(spec.max_reply).await {
        Ok(r) => Ok(r),
        Err(WireError::Closed { partial }) => Err(io_failure(spec, conn, what, None, partial)),
        Err(WireError::Io(e)) => Err(io_failure(spec, conn, what, Some(e), false)),
        Err(WireError::TooLarge) => Err(Failure::new(
            FailureClass::Size,
            format!(
                "the reply to {what} is larger than max_reply ({}); ask for less or raise max_reply",
                http::human_size(spec.max_reply as u64)
            ),
        )),
        Err(WireError::Malformed(e)) => Err(Failure::new(
            FailureClass::Protocol,
            format!(
                "{} did not answer {what} in the Redis protocol: {e}; is this a Redis port?",
                remote_of(spec, conn)
            ),
        )),
    }
}

fn remote_of(spec: &RedisSpec, conn: &Conn) -> String {
    conn.facts
        .remote
        .map(|r| r.to_string())
        .unwrap_or_else(|| spec.target())
}

/// The connection broke or closed while sending or waiting for `what`.
fn io_failure(
    spec: &RedisSpec,
    conn: &Conn,
    what: &str,
    e: Option<std::io::Error>,
    partial: bool,
) -> Failure {
    let remote = remote_of(spec, conn);
    let how = match (e, partial) {
        (Some(e), _) => format!("the connection to {remote} broke ({e}) during {what}"),
        (None, true) => {
            format!("{remote} closed the connection in the middle of the reply to {what}")
        }
        (None, false) => format!("{remote} closed the connection before answering {what}"),
    };
    // A TLS port drops a plain-text client at its first bytes.
    let hint = if spec.tls.is_none() && what == "HELLO" {
        " (if this port expects TLS, use a rediss:// URL)"
    } else {
        ""
    };
    Failure::new(FailureClass::Protocol, format!("{how}{hint}"))
}

/// Sends the command (and INFO behind it), reads the replies, and checks
/// what is expected of them.
async fn exchange(spec: &RedisSpec, conn: &mut Conn, trace: &mut Trace) -> Result<(), Failure> {
    let shown = spec.command.shown();
    let mut bytes = pack(&spec.command.args);
    if spec.send_info {
        bytes.extend(pack(&["INFO".to_string()]));
    }
    trace.begin(Phase::Query);
    let done = async {
        if let Err(e) = conn.send(&bytes).await {
            return Err(io_failure(spec, conn, &shown, Some(e), false));
        }
        let reply = read(spec, conn, &shown).await?;
        if let Reply::Error(e) = &reply {
            return Err(command_failure(spec, &shown, e));
        }
        let info = if spec.send_info {
            match read(spec, conn, "INFO").await? {
                Reply::Error(e) => return Err(command_failure(spec, "INFO", &e)),
                r => Some(r),
            }
        } else {
            None
        };
        Ok((reply, info))
    }
    .await;
    trace.end();
    conn.facts.record(trace);
    let (reply, info) = done?;

    let text = reply.text();
    trace.detail("reply", crate::redact::redact(&shorten(&text, REPLY_SHOWN)));
    let json = reply.to_json();
    match &spec.expect.reply {
        Some(m) => trace.check(
            format!("reply {m}"),
            m.matches(&json),
            m.observed(&shorten(&text, REPLY_SHOWN)),
        ),
        None if spec.command.name == "PING" => {
            // Without an expectation, PING must still answer PONG (or echo
            // its argument).
            let want = spec
                .command
                .args
                .get(1)
                .map(String::as_str)
                .unwrap_or("PONG");
            trace.check(
                format!("reply {want}"),
                reply.as_text().as_deref() == Some(want),
                shorten(&text, REPLY_SHOWN),
            );
        }
        None => {}
    }

    let info_reply = match info {
        Some(r) => Some(r),
        None if spec.command.name == "INFO" => Some(reply),
        None => None,
    };
    if let Some(r) = info_reply {
        let fields = parse_info(&r.as_text().unwrap_or_default());
        if let Some(v) = fields.get("redis_version") {
            trace.detail("server_version", v.clone());
        }
        if let Some(v) = fields.get("role") {
            trace.detail("role", v.clone());
        }
        for (field, m) in &spec.expect.info {
            let expectation = format!("info {field} {m}");
            match info_lookup(&fields, field) {
                Some(v) => trace.check(
                    expectation,
                    m.matches(&Json::String(v.to_string())),
                    m.observed(v),
                ),
                None => {
                    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
                    let hint = suggest(field, &names)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    trace.check(
                        expectation,
                        false,
                        format!("no field `{field}` in INFO{hint}"),
                    );
                }
            }
        }
    }
    Ok(())
}

/// An error reply to the probe's command.
fn command_failure(spec: &RedisSpec, shown: &str, e: &str) -> Failure {
    match error_code(e) {
        "NOAUTH" => Failure::new(
            FailureClass::Auth,
            format!("{shown} was refused: the server requires a password ({e})"),
        ),
        "WRONGPASS" | "NOPERM" => Failure::new(
            FailureClass::Auth,
            format!(
                "`{}` may not run {shown}: {e}",
                spec.username.as_deref().unwrap_or("default")
            ),
        ),
        _ => Failure::new(FailureClass::Query, format!("{shown} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn replies_parse_whole_and_in_pieces() {
        let table: &[(&[u8], Reply)] = &[
            (b"+PONG\r\n", Reply::Simple("PONG".into())),
            (b"-ERR nope\r\n", Reply::Error("ERR nope".into())),
            (b":42\r\n", Reply::Int(42)),
            (b"$5\r\nhello\r\n", Reply::Bulk(b"hello".to_vec())),
            (b"$-1\r\n", Reply::Nil),
            (b"*-1\r\n", Reply::Nil),
            (b"_\r\n", Reply::Nil),
            (b",1.5\r\n", Reply::Double(1.5)),
            (b"#t\r\n", Reply::Bool(true)),
            (b"=8\r\ntxt:abcd\r\n", Reply::Bulk(b"abcd".to_vec())),
            (
                b"*3\r\n:1\r\n$1\r\na\r\n*0\r\n",
                Reply::Array(vec![
                    Reply::Int(1),
                    Reply::Bulk(b"a".to_vec()),
                    Reply::Array(vec![]),
                ]),
            ),
            (
                b"%1\r\n+k\r\n:1\r\n",
                Reply::Map(vec![(Reply::Simple("k".into()), Reply::Int(1))]),
            ),
            (b"|1\r\n+a\r\n+b\r\n:7\r\n", Reply::Int(7)),
        ];
        for (bytes, want) in table {
            assert_eq!(
                parse_reply(bytes),
                Ok(Parsed::Done(want.clone(), bytes.len())),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            // Every proper prefix is incomplete and asks for more bytes.
            for cut in 0..bytes.len() {
                match parse_reply(&bytes[..cut]) {
                    Ok(Parsed::Need(n)) => assert!(n > cut && n <= bytes.len(), "{cut} -> {n}"),
                    other => panic!("prefix {cut} of {bytes:?}: {other:?}"),
                }
            }
        }
        // A bulk string says how much it needs.
        assert_eq!(parse_reply(b"$1000\r\nab"), Ok(Parsed::Need(1009)));
        // Two replies back to back: the first is taken alone.
        assert_eq!(
            parse_reply(b"+OK\r\n:1\r\n"),
            Ok(Parsed::Done(Reply::Simple("OK".into()), 5))
        );
    }

    #[test]
    fn garbage_and_deep_nesting_are_refused() {
        assert!(parse_reply(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse_reply(b":abc\r\n").is_err());
        assert!(parse_reply(b"$3\r\nabcXY").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse_reply(deep.as_bytes()).is_err());
    }

    #[test]
    fn replies_become_json() {
        let r = Reply::Array(vec![Reply::Bulk(b"a".to_vec()), Reply::Int(3), Reply::Nil]);
        assert_eq!(r.to_json(), json!(["a", 3, null]));
        assert_eq!(Reply::Nil.text(), "(nil)");
        assert_eq!(Reply::Simple("PONG".into()).text(), "PONG");
    }

    #[test]
    fn sizes_follow_redis_conf_units() {
        assert_eq!(parse_bytes("2gb"), Ok(Some(2.0 * 1073741824.0)));
        assert_eq!(parse_bytes("100mb"), Ok(Some(104857600.0)));
        assert_eq!(parse_bytes("1k"), Ok(Some(1000.0)));
        assert_eq!(parse_bytes("1.5 KB"), Ok(Some(1536.0)));
        assert_eq!(parse_bytes("512MiB"), Ok(Some(536870912.0)));
        assert_eq!(parse_bytes("42"), Ok(None));
        assert_eq!(parse_bytes("abc"), Ok(None));
        assert!(parse_bytes("2xb").is_err());
    }

    #[test]
    fn matchers_with_and_without_sizes() {
        let table: &[(Json, Json, bool)] = &[
            (json!("< 2gb"), json!("1048576"), true),
            (json!("< 2gb"), json!("3000000000"), false),
            (json!(">= 1"), json!("1"), true),
            (json!("master"), json!("master"), true),
            (json!("=~ ^ma"), json!("master"), true),
            (json!(1), json!("1"), true),
            (json!(null), json!(null), true),
            (json!("10k"), json!("10k"), true),
            (json!("> 100mb"), json!("x"), false),
        ];
        for (spec, v, want) in table {
            let m = Matcher::parse(spec).expect("valid");
            assert_eq!(m.matches(v), *want, "{spec} vs {v}");
        }
        assert_eq!(
            Matcher::parse(&json!("<  2gb")).map(|m| m.to_string()).ok(),
            Some("< 2gb".into())
        );
        assert!(Matcher::parse(&json!("< 2zb")).is_err());
        let size = Matcher::parse(&json!("< 2gb")).expect("valid");
        assert_eq!(size.observed("1048576"), "1048576 (1.0 MiB)");
        assert_eq!(size.observed("512"), "512");
        let plain = Matcher::parse(&json!("> 5")).expect("valid");
        assert_eq!(plain.observed("1048576"), "1048576");
    }

    #[test]
    fn urls() {
        let u = parse_url("rediss://monitor:p%40ss@cache.internal:6380/3?insecure").expect("ok");
        assert_eq!(
            u,
            RedisUrl {
                tls: true,
                host: "cache.internal".into(),
                port: 6380,
                db: 3,
                username: Some("monitor".into()),
                password: Some("p@ss".into()),
                insecure: true,
            }
        );
        let u = parse_url("redis://:secret@[::1]").expect("ok");
        assert_eq!((u.host.as_str(), u.port, u.db), ("::1", DEFAULT_PORT, 0));
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert!(parse_url("rediss://h/0#insecure").expect("ok").insecure);
        for (bad, words) in [
            ("http://h", "unsupported URL scheme `http`"),
            ("redis://h/x", "database number"),
            ("redis://h?insecure", "rediss:// URLs only"),
            ("redis://h/0?db=1", "unknown parameter `db`"),
            ("redis://:pw@h:99999", "invalid URL"),
            ("unix:///tmp/redis.sock", "Unix sockets"),
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert!(e.contains(words), "{bad}: {e}");
            assert!(!e.contains(":pw@"), "{e}");
        }
    }

    #[test]
    fn only_read_only_commands_pass() {
        for ok in [
            &["PING"][..],
            &["get", "k"],
            &["CLIENT", "list"],
            &["CONFIG", "GET", "maxmemory"],
            &["INFO", "replication"],
            &["MGET", "a", "b", "c"],
        ] {
            check_command(&args(ok)).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        assert_eq!(
            check_command(&args(&["client", "id"])).map(|c| c.name).ok(),
            Some("CLIENT ID".into())
        );
        for (bad, words) in [
            (&["SET", "k", "v"][..], "`SET` writes"),
            (&["GTE", "k"], "did you mean `GET`?"),
            (&["KEYS", "*"], "use SCAN"),
            (&["SELECT", "1"], "in the URL"),
            (&["GET"], "`GET` takes 1 argument, but 0 are given"),
            (&["GET", "a", "b"], "but 2 are given"),
            (
                &["CLIENT", "KILL", "x"],
                "`CLIENT KILL` is not a read-only command",
            ),
            (&["CONFIG", "GET", "requirepass"], "password"),
            (&["CONFIG", "GET", "*"], "wildcards"),
            (&["CONFIG"], "needs a subcommand"),
            (&["FROBNICATE"], "not a read-only command Lookout knows"),
            (&[], "empty"),
        ] {
            let e = check_command(&args(bad)).expect_err("refused");
            assert!(e.contains(words), "{bad:?}: {e}");
        }
    }

    #[test]
    fn info_fields_and_sub_fields() {
        let info = parse_info(
            "# Server\r\nredis_version:7.0.15\r\n\r\n# Replication\r\nrole:master\r\n\
             slave0:ip=127.0.0.1,port=6380,state=online,offset=42,lag=0\r\n\
             # Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(info_lookup(&info, "role"), Some("master"));
        assert_eq!(info_lookup(&info, "db0.keys"), Some("3"));
        assert_eq!(info_lookup(&info, "slave0.state"), Some("online"));
        assert_eq!(info_lookup(&info, "db0.nope"), None);
        assert_eq!(info_lookup(&info, "used_memory"), None);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "***");
    }
}
