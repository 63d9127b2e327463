//! The compile step: files in, a validated [`Config`] or every diagnostic out.
//!
//! Order of work: parse the main file; read `location` (overridden by the
//! `LOOKOUT_LOCATION` environment variable), `storage`, `server`,
//! `scheduler`, `notifiers` and `tracing`; expand `include` globs and parse those
//! files; merge `defaults` into each probe node; compile each probe (its
//! kind's module validates its own section); then the cross-probe checks:
//! unique names, `depends_on` targets and cycles, notifier names. Errors in
//! one part never stop the others from being checked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::diag::{Diagnostic, Diagnostics};
use super::read::{join, Cx, Map};
use super::yaml::{self, Node, Pos, Value};
use super::*;
use crate::expect::DurationCmp;
use crate::probe::{ProbeKind, KIND_KEYS};

const TOP_KEYS: &[&str] = &[
    "location",
    "storage",
    "server",
    "scheduler",
    "defaults",
    "notifiers",
    "include",
    "probes",
    "maintenance",
    "outbox",
    "tracing",
];
const INCLUDED_TOP_KEYS: &[&str] = &["probes"];
const PROBE_COMMON_KEYS: &[&str] = &[
    "name",
    "description",
    "interval",
    "cron",
    "timeout",
    "labels",
    "depends_on",
    "alert",
    "expect",
    "locations",
];
const ALERT_KEYS: &[&str] = &[
    "after",
    "recover_after",
    "remind",
    "notify",
    "degraded",
    "events_window",
    "locations",
];
const DEGRADED_KEYS: &[&str] = &["latency", "failures", "after", "recover_after", "anomaly"];
const ANOMALY_KEYS: &[&str] = &["factor", "min_delta", "window", "sustain", "min_runs"];
/// Files larger than this are refused rather than parsed.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// The environment variable that overrides the main file's `location`.
pub const LOCATION_ENV: &str = "LOOKOUT_LOCATION";

/// Loads and validates the configuration at `path` with the process
/// environment. On success the diagnostics hold only warnings.
pub fn load(path: &Path) -> Result<(Config, Diagnostics), Diagnostics> {
    load_with(path, Cx::default())
}

/// Like [`load`], with a caller-supplied context (tests inject variables).
pub fn load_with(path: &Path, mut cx: Cx) -> Result<(Config, Diagnostics), Diagnostics> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    cx.base_dir = base.clone();
    let main = match read_file(path) {
        Ok(n) => n,
        Err(d) => return Err(Diagnostics(vec![d])),
    };
    let config = compile_main(&mut cx, path, &base, main);
    let mut diags = cx.diags;
    dedupe(&mut diags);
    match config {
        Some(c) if !diags.has_errors() => Ok((c, diags)),
        _ => Err(diags),
    }
}

/// Compiles a configuration from text, as if read from `file` (for tests
/// and the fuzz/property tests: no filesystem access unless it includes).
pub fn load_str(file: &str, text: &str, mut cx: Cx) -> Result<(Config, Diagnostics), Diagnostics> {
    let node = match yaml::parse(file, text) {
        Ok(n) => n,
        Err(e) => {
            return Err(Diagnostics(vec![syntax_diag(&e)]));
        }
    };
    let path = PathBuf::from(file);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let config = compile_main(&mut cx, &path, &base, node);
    let mut diags = cx.diags;
    dedupe(&mut diags);
    match config {
        Some(c) if !diags.has_errors() => Ok((c, diags)),
        _ => Err(diags),
    }
}

fn syntax_diag(e: &yaml::SyntaxError) -> Diagnostic {
    Diagnostic::at(
        diag::Severity::Error,
        &e.pos,
        "",
        format!("invalid YAML: {}", e.message),
    )
}

fn read_file(path: &Path) -> Result<Node, Diagnostic> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| Diagnostic::file(&name, format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::file(
            &name,
            format!(
                "file is {} bytes; configuration files are limited to {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::file(&name, format!("cannot read: {e}")))?;
    yaml::parse(&name, &text).map_err(|e| syntax_diag(&e))
}

/// Compiles a parsed main file. The probe lists are taken out of the trees
/// and each probe's subtree is dropped as soon as it is compiled: with
/// 10,000 probes the tree is ~20 MB, and holding it beside the compiled
/// probes made loading the configuration the daemon's peak of memory
/// (BENCHMARKS.md, issue 6).
fn compile_main(cx: &mut Cx, path: &Path, base: &Path, mut main: Node) -> Option<Config> {
    if matches!(main.value, Value::Null) {
        main.value = Value::Map(Vec::new());
    }
    let main_probes = detach(&mut main, "probes");
    let top = cx.map(&main, "", TOP_KEYS)?;
    let location = compile_location(cx, &top, path);
    let storage = compile_storage(cx, &top, base);
    let server = compile_server(cx, &top);
    let scheduler = compile_scheduler(cx, &top);
    let notifiers = compile_notifiers(cx, &top);
    let outbox = compile_outbox(cx, &top);
    let tracing = crate::tracectx::compile(cx, &top);
    // What HTTP probes send; a broken `tracing` section is reported above
    // and fails the whole configuration, so the default here is never run.
    let propagation = tracing
        .as_ref()
        .map(crate::tracectx::Propagation::of)
        .unwrap_or_default();

    let mut files = vec![path.to_path_buf()];
    // (probe node, key path) from the main file and every include.
    let mut probe_nodes: Vec<(Node, String)> = Vec::new();
    collect_probes(cx, main_probes, &mut probe_nodes);
    if let Some(inc) = top.get("include") {
        for (file, mut node) in expand_includes(cx, inc, path, base) {
            files.push(file);
            let included_probes = detach(&mut node, "probes");
            if cx.map(&node, "", INCLUDED_TOP_KEYS).is_none() {
                continue;
            }
            collect_probes(cx, included_probes, &mut probe_nodes);
        }
    }

    let defaults = top.get("defaults").and_then(|d| check_defaults(cx, d));
    let names: Vec<NameAt> = probe_nodes.iter().filter_map(NameAt::of).collect();
    let mut probes = Vec::with_capacity(probe_nodes.len());
    let mut outlines = Vec::with_capacity(probe_nodes.len());
    for (node, path) in probe_nodes {
        let merged = match &defaults {
            Some(d) => merge_defaults(d, &node),
            None => node,
        };
        if let Some(mut p) = compile_probe(cx, &merged, &path, storage.as_ref()) {
            crate::tracectx::apply(&mut p.kind, propagation);
            probes.push(Arc::new(p));
        }
        outlines.extend(Outline::of(&merged, &path));
    }
    check_names(cx, &names);
    check_dependencies(cx, &outlines);
    let declared: Vec<String> = match top.get("notifiers").map(|n| &n.value) {
        Some(Value::Map(entries)) => entries.iter().map(|(k, _)| k.name.clone()).collect(),
        _ => Vec::new(),
    };
    check_notify(cx, &outlines, &declared);

    let maintenance = top
        .get("maintenance")
        .map(|n| crate::alert::maintenance::compile(cx, n))
        .unwrap_or_default();
    let known: Vec<&str> = outlines.iter().map(|o| o.name.as_str()).collect();
    for (pos, key, msg) in crate::alert::maintenance::unknown_probes(&maintenance, &known) {
        cx.error(&pos, &key, msg);
    }

    Some(Config {
        outbox,
        maintenance,
        main_file: path.to_path_buf(),
        files,
        storage: storage?,
        server: server?,
        scheduler: scheduler?,
        notifiers,
        probes,
        tracing: tracing?,
        location: location?.map(Arc::from),
    })
}

/// This instance's location: `LOOKOUT_LOCATION` when it is set and not
/// empty, else the main file's `location`, else none. Both are checked
/// when given. `None` after reporting an error.
fn compile_location(cx: &mut Cx, top: &Map<'_>, main: &Path) -> Option<Option<String>> {
    // A location is not a secret: a `${VAR}` in it is not registered as
    // one (it would mask every host name that holds it).
    let register = std::mem::replace(&mut cx.register_secrets, false);
    let from_file = top.parsed(cx, "location", |l| {
        check_location(l).map(|()| l.to_string())
    });
    let from_env = env_location(cx, top.pos());
    cx.register_secrets = register;
    if let Some(l) = &from_env {
        if let Err(e) = check_location(l) {
            cx.diags.0.push(Diagnostic {
                severity: diag::Severity::Error,
                file: main.display().to_string(),
                line: 0,
                column: 0,
                key: LOCATION_ENV.to_string(),
                message: format!("the environment variable {LOCATION_ENV}: {e}"),
            });
            return None;
        }
    }
    let from_file = from_file?;
    Some(from_env.or(from_file))
}

/// `LOOKOUT_LOCATION`, when set and not empty. Read through the context's
/// expansion so that the environment a caller (a test) gives applies.
fn env_location(cx: &mut Cx, pos: &Pos) -> Option<String> {
    cx.expand(&format!("${{{LOCATION_ENV}:-}}"), pos, LOCATION_ENV)
        .filter(|v| !v.is_empty())
}

/// Locations appear in results, metrics labels and the API: 1 to 63 of
/// `a-z 0-9 . _ -`, starting with a letter or a digit.
pub fn check_location(location: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&location.len())
        && location.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && location
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid location `{location}`: a location has 1 to 63 of `a-z 0-9 . _ -` and starts \
             with a letter or a digit, e.g. eu-west"
        ))
    }
}

/// `storage.buffer` unset: results held in memory while the database
/// cannot be written (a few hundred bytes each).
pub const DEFAULT_BUFFER: usize = 100_000;

fn compile_storage(cx: &mut Cx, top: &Map<'_>, base: &Path) -> Option<Storage> {
    let mut storage = Storage {
        sqlite: base.join("lookout.db"),
        postgres: None,
        retention_raw: Duration::from_secs(14 * 86400),
        retention_minute_rollups: Duration::from_secs(30 * 86400),
        retention_rollups: Duration::from_secs(400 * 86400),
        buffer: DEFAULT_BUFFER,
    };
    let Some(node) = top.get("storage") else {
        return Some(storage);
    };
    let m = cx.map(
        node,
        "storage",
        &["sqlite", "postgres", "retention", "buffer"],
    )?;
    let mut ok = true;
    if m.has("sqlite") && m.has("postgres") {
        m.error_at(
            cx,
            "postgres",
            "give storage.sqlite or storage.postgres, not both",
        );
        ok = false;
    }
    if let Some(p) = m.get("postgres") {
        match compile_postgres(cx, p) {
            Some(pg) => storage.postgres = Some(pg),
            None => ok = false,
        }
    }
    if let Some(b) = m.u64(cx, "buffer") {
        if (100..=10_000_000).contains(&b) {
            storage.buffer = b as usize;
        } else {
            m.error_at(cx, "buffer", "must be between 100 and 10000000 results");
            ok = false;
        }
    }
    if let Some(p) = m.get("sqlite") {
        match cx.string(p, "storage.sqlite") {
            Some(s) if !s.trim().is_empty() => storage.sqlite = resolve_path(base, &s),
            Some(_) => {
                cx.error(&p.pos, "storage.sqlite", "empty path");
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(r) = m.get("retention") {
        let keys = ["raw", "minute_rollups", "rollups"];
        if let Some(rm) = cx.map(r, "storage.retention", &keys) {
            compile_retention(cx, &rm, &mut storage);
        }
    }
    ok.then_some(storage)
}

/// `storage.postgres: { url }`: a `postgres://` or `postgresql://` URL the
/// PostgreSQL client accepts. The password (in the user part or a
/// `password=` parameter) is registered as a secret, even when written
/// literally, before anything is reported; messages never show it.
fn compile_postgres(cx: &mut Cx, node: &Node) -> Option<Postgres> {
    let m = cx.map(node, "storage.postgres", &["url"])?;
    let url = m.required_str(cx, "url")?;
    let url = url.trim().to_string();
    if cx.register_secrets {
        register_url_passwords(&url);
    }
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        m.error_at(
            cx,
            "url",
            "expected a postgres:// or postgresql:// URL, e.g. \
             postgres://lookout:${PGPASSWORD}@db.internal:5432/lookout",
        );
        return None;
    }
    // The client wants the scheme in lower case.
    let scheme_len = lower.find("://").unwrap_or(0);
    let normal = format!("{}{}", &lower[..scheme_len], &url[scheme_len..]);
    match tokio_postgres::Config::from_str(&normal) {
        Ok(_) => Some(Postgres { url: normal }),
        Err(e) => {
            let why = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            m.error_at(
                cx,
                "url",
                format!(
                    "invalid PostgreSQL URL `{}`: {why}",
                    crate::probe::postgres::shown_url(&url)
                ),
            );
            None
        }
    }
}

/// Registers a URL's password as a secret, as written and decoded, from
/// its user part and from any `password=` parameter.
fn register_url_passwords(url: &str) {
    use crate::probe::urlutil::percent_decode;
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("");
    let mut passwords: Vec<&str> = Vec::new();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        passwords.extend(userinfo.split_once(':').map(|(_, pw)| pw));
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if percent_decode(k) == "password" {
                    passwords.push(v);
                }
            }
        }
    }
    for pw in passwords {
        crate::redact::register(pw);
        crate::redact::register(&percent_decode(pw));
    }
}

/// `storage.retention`: every duration longer than zero, and minute
/// rollups kept no longer than hour rollups (hour rows answer where minute
/// rows have expired). Unset, `minute_rollups` is 30 days or `rollups` if
/// that is shorter.
fn compile_retention(cx: &mut Cx, rm: &Map<'_>, storage: &mut Storage) {
    let keys: [(&str, &mut Duration); 3] = [
        ("raw", &mut storage.retention_raw),
        ("minute_rollups", &mut storage.retention_minute_rollups),
        ("rollups", &mut storage.retention_rollups),
    ];
    for (key, slot) in keys {
        if let Some(d) = rm.duration(cx, key) {
            if d.is_zero() {
                rm.error_at(cx, key, "retention must be longer than zero");
            }
            *slot = d;
        }
    }
    let (minute, hour) = (storage.retention_minute_rollups, storage.retention_rollups);
    if minute <= hour {
        return;
    }
    if rm.get("minute_rollups").is_none() {
        storage.retention_minute_rollups = hour;
        return;
    }
    rm.error_at(
        cx,
        "minute_rollups",
        format!(
            "minute rollups ({}) cannot be kept longer than hour rollups \
             (storage.retention.rollups: {}); shorten minute_rollups or lengthen rollups",
            crate::duration::human(minute),
            crate::duration::human(hour)
        ),
    );
}

fn compile_server(cx: &mut Cx, top: &Map<'_>) -> Option<Server> {
    let mut server = Server::default();
    let Some(node) = top.get("server") else {
        return Some(server);
    };
    let m = cx.map(
        node,
        "server",
        &["listen", "token", "basic_auth", "public_url"],
    )?;
    if let Some(l) = m.str(cx, "listen") {
        match l.parse::<SocketAddr>() {
            Ok(a) => server.listen = a,
            Err(_) => {
                m.error_at(
                    cx,
                    "listen",
                    format!(
                        "invalid listen address `{l}`: expected IP:PORT such as {DEFAULT_LISTEN}"
                    ),
                );
                return None;
            }
        }
    }
    server.token = compile_token(cx, &m);
    server.basic_auth = compile_basic_auth(cx, &m);
    if let Some(node) = m.get("listen") {
        let open = !m.has("token") && !m.has("basic_auth");
        if open && !server.listen.ip().is_loopback() {
            cx.warning(
                &node.pos,
                "server.listen",
                format!(
                    "{} is reachable from other machines and neither server.token nor \
                     server.basic_auth is set: the API, /metrics and the pages are open to anyone \
                     who can reach it",
                    server.listen
                ),
            );
        }
    }
    if let Some(u) = m.str(cx, "public_url") {
        match url::Url::parse(&u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                server.public_url = Some(u.trim_end_matches('/').to_string());
            }
            Ok(parsed) => m.error_at(
                cx,
                "public_url",
                format!(
                    "expected an http:// or https:// URL, found scheme `{}`",
                    parsed.scheme()
                ),
            ),
            Err(e) => m.error_at(cx, "public_url", format!("invalid URL: {e}")),
        }
    }
    Some(server)
}

/// `server.token`: a secret sent in an HTTP header, so printable ASCII
/// without spaces. Registered as a secret even when written literally.
/// Messages never show the value.
fn compile_token(cx: &mut Cx, m: &Map<'_>) -> Option<String> {
    let token = m.str(cx, "token")?;
    if cx.register_secrets {
        crate::redact::register(&token);
    }
    if let Err(why) = header_safe(&token, false) {
        m.error_at(cx, "token", format!("the token {why}"));
        return None;
    }
    Some(token)
}

/// `server.basic_auth: { user, password }`, both required; the password is
/// registered as a secret. Messages never show the password.
fn compile_basic_auth(cx: &mut Cx, m: &Map<'_>) -> Option<BasicAuth> {
    let node = m.get("basic_auth")?;
    let b = cx.map(node, "server.basic_auth", &["user", "password"])?;
    let user = b.required_str(cx, "user");
    let password = b.required_str(cx, "password");
    if let (Some(p), true) = (&password, cx.register_secrets) {
        crate::redact::register(p);
    }
    let user = user.and_then(|u| match header_safe(&u, true) {
        Ok(()) if u.contains(':') => {
            b.error_at(cx, "user", "the user name must not contain `:`");
            None
        }
        Ok(()) => Some(u),
        Err(why) => {
            b.error_at(cx, "user", format!("the user name {why}"));
            None
        }
    });
    let password = password.and_then(|p| match header_safe(&p, true) {
        Ok(()) => Some(p),
        Err(why) => {
            b.error_at(cx, "password", format!("the password {why}"));
            None
        }
    });
    Some(BasicAuth {
        user: user?,
        password: password?,
    })
}

/// Whether a credential can travel in an HTTP header: not empty, no
/// control characters, and (for a token, `spaces` false) printable ASCII
/// without spaces. The error completes "the token ...".
fn header_safe(value: &str, spaces: bool) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("is empty");
    }
    if value.chars().any(char::is_control) {
        return Err("contains a control character (such as a newline)");
    }
    if !spaces && !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err("may contain only printable ASCII characters without spaces");
    }
    Ok(())
}

fn compile_outbox(cx: &mut Cx, top: &Map<'_>) -> OutboxConfig {
    let mut o = OutboxConfig::default();
    let Some(node) = top.get("outbox") else {
        return o;
    };
    let Some(m) = cx.map(node, "outbox", &["max_age", "retry_initial", "retry_max"]) else {
        return o;
    };
    if let Some(d) = m.duration(cx, "max_age") {
        if d < Duration::from_secs(60) {
            m.error_at(cx, "max_age", "notices must be kept at least 1m");
        } else {
            o.max_age = d;
        }
    }
    if let Some(d) = m.duration(cx, "retry_initial") {
        if d < Duration::from_millis(100) {
            m.error_at(
                cx,
                "retry_initial",
                "retries sooner than 100ms would hammer the receiver",
            );
        } else {
            o.retry_initial = d;
        }
    }
    if let Some(d) = m.duration(cx, "retry_max") {
        o.retry_max = d;
    }
    if o.retry_max < o.retry_initial {
        m.error_at(cx, "retry_max", "must not be shorter than retry_initial");
    }
    o
}

fn compile_scheduler(cx: &mut Cx, top: &Map<'_>) -> Option<SchedulerSettings> {
    let mut s = SchedulerSettings {
        concurrency: DEFAULT_CONCURRENCY,
        host_spacing: BTreeMap::new(),
    };
    let Some(node) = top.get("scheduler") else {
        return Some(s);
    };
    let m = cx.map(node, "scheduler", &["concurrency", "host_spacing"])?;
    if let Some(c) = m.u64(cx, "concurrency") {
        if c == 0 || c > 100_000 {
            m.error_at(cx, "concurrency", "must be between 1 and 100000");
        } else {
            s.concurrency = c as usize;
        }
    }
    if let Some(hs) = m.get("host_spacing") {
        match &hs.value {
            Value::Map(entries) => {
                for (key, v) in entries {
                    let path = join("scheduler.host_spacing", &key.name);
                    let host = key.name.trim().to_ascii_lowercase();
                    if host.is_empty() || host.contains(['/', ':', ' ']) {
                        cx.error(
                            &key.pos,
                            &path,
                            "expected a host name (like api.vendor.example) or `*`",
                        );
                        continue;
                    }
                    if let Some(d) = cx.duration(v, &path) {
                        if d > Duration::from_secs(3600) {
                            cx.error(&v.pos, &path, "at most 1h");
                        } else {
                            s.host_spacing.insert(host, d);
                        }
                    }
                }
            }
            _ => cx.error(
                &hs.pos,
                "scheduler.host_spacing",
                format!(
                    "expected a mapping of host names to durations, found {}",
                    hs.type_name()
                ),
            ),
        }
    }
    Some(s)
}

fn compile_notifiers(cx: &mut Cx, top: &Map<'_>) -> BTreeMap<String, Notifier> {
    let mut out = BTreeMap::new();
    let Some(node) = top.get("notifiers") else {
        return out;
    };
    let Value::Map(entries) = &node.value else {
        cx.error(
            &node.pos,
            "notifiers",
            format!(
                "expected a mapping of notifier names, found {}",
                node.type_name()
            ),
        );
        return out;
    };
    for (key, n) in entries {
        let path = join("notifiers", &key.name);
        let Some(m) = cx.map(n, &path, &["email", "slack", "webhook"]) else {
            continue;
        };
        let kinds: Vec<&str> = ["email", "slack", "webhook"]
            .into_iter()
            .filter(|k| m.has(k))
            .collect();
        if kinds.len() != 1 {
            cx.error(
                &n.pos,
                &path,
                "a notifier needs exactly one of `email`, `slack` or `webhook`",
            );
            continue;
        }
        let notifier = match kinds[0] {
            "email" => compile_email(cx, &m, &path),
            "slack" => compile_slack(cx, &m, &path),
            _ => compile_webhook(cx, &m, &path),
        };
        if let Some(nt) = notifier {
            out.insert(key.name.clone(), nt);
        }
    }
    out
}

fn compile_email(cx: &mut Cx, parent: &Map<'_>, path: &str) -> Option<Notifier> {
    let node = parent.get("email")?;
    let m = cx.map(node, &join(path, "email"), &["smtp", "from", "to", "ca"])?;
    let smtp = m.required_str(cx, "smtp");
    if let Some(s) = &smtp {
        match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => {}
            Ok(u) => m.error_at(
                cx,
                "smtp",
                format!("unsupported SMTP URL scheme `{}`: use smtp:// (with ?tls=required or ?tls=opportunistic) or smtps://", u.scheme()),
            ),
            Err(e) => m.error_at(cx, "smtp", format!("invalid SMTP URL: {e}")),
        }
    }
    let from = m.required_str(cx, "from");
    if let Some(f) = &from {
        if !f.contains('@') {
            m.error_at(cx, "from", format!("`{f}` is not an email address"));
        }
    }
    let to = m
        .required(cx, "to")
        .and_then(|n| cx.string_list(n, &m.path("to")));
    if let Some(list) = &to {
        if list.is_empty() {
            m.error_at(cx, "to", "needs at least one recipient");
        }
        for addr in list {
            if !addr.contains('@') {
                m.error_at(cx, "to", format!("`{addr}` is not an email address"));
            }
        }
    }
    let ca = notifier_ca(cx, &m);
    Some(Notifier::Email {
        smtp: smtp?,
        from: from?,
        to: to?,
        ca: ca?,
    })
}

fn compile_slack(cx: &mut Cx, parent: &Map<'_>, path: &str) -> Option<Notifier> {
    let node = parent.get("slack")?;
    let m = cx.map(node, &join(path, "slack"), &["webhook"])?;
    let webhook = m.required_str(cx, "webhook")?;
    check_http_url(cx, &m, "webhook", &webhook)?;
    Some(Notifier::Slack { webhook })
}

fn compile_webhook(cx: &mut Cx, parent: &Map<'_>, path: &str) -> Option<Notifier> {
    let node = parent.get("webhook")?;
    let m = cx.map(
        node,
        &join(path, "webhook"),
        &["url", "headers", "secret", "ca"],
    )?;
    let url = m.required_str(cx, "url")?;
    check_http_url(cx, &m, "url", &url)?;
    Some(Notifier::Webhook {
        url,
        headers: m.string_map(cx, "headers").unwrap_or_default(),
        secret: m.str(cx, "secret"),
        ca: notifier_ca(cx, &m)?,
    })
}

/// A notifier's `ca` key: a PEM file of extra trusted CA certificates,
/// relative to the main file, read and checked now. `Some(None)` when the
/// key is absent, `None` after reporting an error.
fn notifier_ca(
    cx: &mut Cx,
    m: &Map<'_>,
) -> Option<Option<std::sync::Arc<crate::probe::tlsutil::CustomCa>>> {
    let Some(path) = m.str(cx, "ca") else {
        return Some(None);
    };
    let full = resolve_path(&cx.base_dir.clone(), &path);
    match crate::probe::tlsutil::load_ca(&full) {
        Ok(ca) => Some(Some(std::sync::Arc::new(ca))),
        Err(e) => {
            m.error_at(cx, "ca", e);
            None
        }
    }
}

fn check_http_url(cx: &mut Cx, m: &Map<'_>, key: &str, value: &str) -> Option<()> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(()),
        Ok(u) => {
            m.error_at(
                cx,
                key,
                format!(
                    "expected an http:// or https:// URL, found scheme `{}`",
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            m.error_at(cx, key, format!("invalid URL: {e}"));
            None
        }
    }
}

/// Removes `key` from a mapping node and returns its value.
fn detach(node: &mut Node, key: &str) -> Option<Node> {
    let Value::Map(entries) = &mut node.value else {
        return None;
    };
    let i = entries.iter().position(|(k, _)| k.name == key)?;
    Some(entries.remove(i).1)
}

/// Takes the probe nodes out of a file's `probes` list.
fn collect_probes(cx: &mut Cx, list: Option<Node>, out: &mut Vec<(Node, String)>) {
    let Some(list) = list else {
        return;
    };
    match list.value {
        Value::Seq(items) => {
            for (i, item) in items.into_iter().enumerate() {
                out.push((item, format!("probes[{i}]")));
            }
        }
        Value::Null => {}
        _ => cx.error(
            &list.pos,
            "probes",
            format!("expected a list of probes, found {}", list.type_name()),
        ),
    }
}

/// Expands the `include` globs relative to the main file's folder. The main
/// file itself never matches, so `include: ["*.yaml"]` beside it is safe.
fn expand_includes(cx: &mut Cx, inc: &Node, main: &Path, base: &Path) -> Vec<(PathBuf, Node)> {
    let mut out = Vec::new();
    let Some(patterns) = cx.string_list(inc, "include") else {
        return out;
    };
    let main_canon = main.canonicalize().ok();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for (i, pat) in patterns.iter().enumerate() {
        let full = resolve_path(base, pat);
        let key = format!("include[{i}]");
        let pos = match &inc.value {
            Value::Seq(items) => items
                .get(i)
                .map(|n| n.pos.clone())
                .unwrap_or_else(|| inc.pos.clone()),
            _ => inc.pos.clone(),
        };
        let paths = match glob::glob(&full.to_string_lossy()) {
            Ok(p) => p,
            Err(e) => {
                cx.error(&pos, &key, format!("invalid glob `{pat}`: {e}"));
                continue;
            }
        };
        let mut matched: Vec<PathBuf> = paths
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        matched.sort();
        let is_glob = pat.contains(['*', '?', '[']);
        if matched.is_empty() {
            if is_glob {
                cx.warning(&pos, &key, format!("`{pat}` matches no files"));
            } else {
                cx.error(
                    &pos,
                    &key,
                    format!("included file `{}` does not exist", full.display()),
                );
            }
        }
        for file in matched {
            let canon = file.canonicalize().unwrap_or_else(|_| file.clone());
            if Some(&canon) == main_canon.as_ref() || !seen.insert(canon) {
                continue;
            }
            match read_file(&file) {
                Ok(node) if matches!(node.value, Value::Null) => {}
                Ok(node) => out.push((file, node)),
                Err(d) => cx.diags.0.push(d),
            }
        }
    }
    out
}

/// Validates `defaults` keys once, where they are written, and returns the
/// node to merge. Kind sections may be defaulted too (e.g. `http.headers`).
fn check_defaults(cx: &mut Cx, node: &Node) -> Option<Node> {
    let allowed: Vec<&str> = PROBE_COMMON_KEYS
        .iter()
        .chain(KIND_KEYS.iter())
        .copied()
        .filter(|k| *k != "name")
        .collect();
    let m = cx.map(node, "defaults", &allowed)?;
    if m.has("interval") && m.has("cron") {
        cx.error(
            &node.pos,
            "defaults",
            "give either `interval` or `cron`, not both",
        );
    }
    Some(node.clone())
}

/// Returns `probe` with `defaults` filled in: keys the probe lacks are
/// copied, mappings present in both are merged recursively (the probe
/// wins). A kind section is only merged into probes of that kind, and a
/// default `interval` does not apply to a probe with its own `cron`.
fn merge_defaults(defaults: &Node, probe: &Node) -> Node {
    let (Value::Map(d), Value::Map(p)) = (&defaults.value, &probe.value) else {
        return probe.clone();
    };
    let has = |k: &str| p.iter().any(|(key, _)| key.name == k);
    let mut entries = p.clone();
    for (dk, dv) in d {
        let name = dk.name.as_str();
        if KIND_KEYS.contains(&name) && !has(name) {
            continue;
        }
        if (name == "interval" && has("cron")) || (name == "cron" && has("interval")) {
            continue;
        }
        match entries.iter_mut().find(|(k, _)| k.name == name) {
            None => entries.push((dk.clone(), dv.clone())),
            Some((_, pv)) => {
                if matches!((&pv.value, &dv.value), (Value::Map(_), Value::Map(_))) {
                    *pv = merge_defaults(dv, pv);
                }
            }
        }
    }
    Node {
        value: Value::Map(entries),
        pos: probe.pos.clone(),
    }
}

/// One probe. `storage` (when it compiled) decides whether
/// `alert.locations` above 1 is possible.
fn compile_probe(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    storage: Option<&Storage>,
) -> Option<ProbeSpec> {
    let allowed: Vec<&str> = PROBE_COMMON_KEYS
        .iter()
        .chain(KIND_KEYS.iter())
        .copied()
        .collect();
    let m = cx.map(node, path, &allowed)?;
    let name = m.required_str(cx, "name");
    if let Some(n) = &name {
        if let Err(e) = check_name(n) {
            m.error_at(cx, "name", e);
        }
    }
    let kinds: Vec<&str> = KIND_KEYS.iter().copied().filter(|k| m.has(k)).collect();
    let kind = match kinds.as_slice() {
        [k] => Some(*k),
        [] => {
            cx.error(
                &node.pos,
                path,
                format!(
                    "a probe needs exactly one kind key: one of {}",
                    KIND_KEYS.join(", ")
                ),
            );
            None
        }
        many => {
            cx.error(
                &node.pos,
                path,
                format!(
                    "a probe has exactly one kind key, found {}",
                    many.join(" and ")
                ),
            );
            None
        }
    };
    let expect_map = match (kind, m.get("expect")) {
        (Some(k), Some(e)) => {
            let mut keys = vec!["latency"];
            keys.extend_from_slice(ProbeKind::expect_keys(k));
            cx.map(e, &m.path("expect"), &keys)
        }
        (None, Some(e)) => {
            // Still check the value's type so its errors are not lost.
            if !matches!(e.value, Value::Map(_)) {
                cx.error(
                    &e.pos,
                    &m.path("expect"),
                    format!("expected a mapping, found {}", e.type_name()),
                );
            }
            None
        }
        _ => None,
    };
    let expect_latency = expect_map.as_ref().and_then(|em| compile_latency(cx, em));
    let probe_kind = kind.and_then(|k| {
        let section = m.get(k)?;
        ProbeKind::compile(k, cx, section, &m.path(k), expect_map.as_ref())
    });

    let schedule = compile_schedule(cx, &m);
    let timeout = match m.get("timeout") {
        Some(_) => m.duration(cx, "timeout"),
        None => Some(DEFAULT_TIMEOUT),
    };
    if let Some(t) = timeout {
        if t.is_zero() {
            m.error_at(cx, "timeout", "timeout must be longer than zero");
        }
        if let Some(Schedule::Interval(i)) = &schedule {
            if t > *i {
                m.error_at(
                    cx,
                    "timeout",
                    format!(
                        "timeout {} is longer than the interval {}; a run would still be going when the next is due",
                        crate::duration::human(t),
                        crate::duration::human(*i)
                    ),
                );
            }
        }
    }
    let labels = match m.get("labels") {
        Some(_) => m.string_map(cx, "labels"),
        None => Some(BTreeMap::new()),
    };
    let depends_on = match m.get("depends_on") {
        Some(_) => m.string_list(cx, "depends_on"),
        None => Some(Vec::new()),
    };
    let alert = compile_alert(cx, &m, storage);
    let locations = compile_locations(cx, &m);
    if let (Some(a), Some(l)) = (&alert, &locations) {
        if !l.is_empty() && a.locations as usize > l.len() {
            let pos = m
                .get("alert")
                .and_then(|n| n.get("locations"))
                .map_or(&node.pos, |n| &n.pos);
            cx.error(
                pos,
                &join(&m.path("alert"), "locations"),
                format!(
                    "{} is more than the {} {} this probe runs in (`locations`: {})",
                    a.locations,
                    l.len(),
                    if l.len() == 1 {
                        "location"
                    } else {
                        "locations"
                    },
                    l.join(", ")
                ),
            );
        }
    }
    let description = m.str(cx, "description");

    Some(ProbeSpec {
        name: name?,
        description,
        kind: probe_kind?,
        schedule: schedule?,
        timeout: timeout?,
        expect_latency,
        labels: labels?,
        depends_on: depends_on?,
        alert: alert?,
        locations: locations?,
        defined_at: format!("{}:{}", node.pos.file, node.pos.line),
    })
}

/// Probe names appear in URLs, metrics labels and file names.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a probe name has 1 to 64 characters".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid probe name `{name}`: `{bad}` is not allowed; use lowercase letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// A probe's `locations`: each a valid location, none twice. Absent (or
/// empty): every location runs the probe.
fn compile_locations(cx: &mut Cx, m: &Map<'_>) -> Option<Vec<String>> {
    let Some(node) = m.get("locations") else {
        return Some(Vec::new());
    };
    // Like `location`, not a secret.
    let register = std::mem::replace(&mut cx.register_secrets, false);
    let list = m.string_list(cx, "locations");
    cx.register_secrets = register;
    let list = list?;
    let mut ok = true;
    for (i, l) in list.iter().enumerate() {
        let (pos, key) = match &node.value {
            Value::Seq(items) => (
                items.get(i).map_or(&node.pos, |n| &n.pos),
                format!("{}[{i}]", m.path("locations")),
            ),
            _ => (&node.pos, m.path("locations")),
        };
        let problem = match check_location(l) {
            Err(e) => Some(e),
            Ok(()) if list[..i].contains(l) => Some(format!("`{l}` is listed twice")),
            Ok(()) => None,
        };
        if let Some(e) = problem {
            cx.error(pos, &key, e);
            ok = false;
        }
    }
    ok.then_some(list)
}

fn compile_schedule(cx: &mut Cx, m: &Map<'_>) -> Option<Schedule> {
    match (m.get("interval"), m.get("cron")) {
        (Some(_), Some(c)) => {
            cx.error(
                &c.pos,
                &m.path("cron"),
                "give either `interval` or `cron`, not both",
            );
            None
        }
        (Some(_), None) => {
            let d = m.duration(cx, "interval")?;
            if d < Duration::from_millis(100) {
                m.error_at(
                    cx,
                    "interval",
                    "an interval shorter than 100ms would flood the target",
                );
                return None;
            }
            Some(Schedule::Interval(d))
        }
        (None, Some(c)) => {
            let expr = cx.string(c, &m.path("cron"))?;
            match croner::Cron::from_str(&expr) {
                Ok(cron) => Some(Schedule::Cron {
                    expr,
                    cron: Box::new(cron),
                }),
                Err(e) => {
                    cx.error(
                        &c.pos,
                        &m.path("cron"),
                        format!("invalid cron expression `{expr}`: {e}"),
                    );
                    None
                }
            }
        }
        (None, None) => Some(Schedule::Interval(DEFAULT_INTERVAL)),
    }
}

fn compile_alert(cx: &mut Cx, m: &Map<'_>, storage: Option<&Storage>) -> Option<AlertSpec> {
    let mut alert = AlertSpec::default();
    let Some(node) = m.get("alert") else {
        return Some(alert);
    };
    let path = m.path("alert");
    match &node.value {
        Value::Bool(false) => {
            alert.enabled = false;
            return Some(alert);
        }
        Value::Bool(true) => return Some(alert),
        _ => {}
    }
    let a = cx.map(node, &path, ALERT_KEYS)?;
    let mut ok = true;
    for (key, slot) in [
        ("after", &mut alert.after),
        ("recover_after", &mut alert.recover_after),
    ] {
        if let Some(v) = a.u64(cx, key) {
            if v == 0 || v > 10_000 {
                a.error_at(cx, key, "must be between 1 and 10000");
                ok = false;
            } else {
                *slot = v as u32;
            }
        }
    }
    if a.has("remind") {
        alert.remind = a.duration(cx, "remind");
        if alert.remind.is_some_and(|d| d < Duration::from_secs(60)) {
            a.error_at(
                cx,
                "remind",
                "reminders more often than every minute are noise; use 1m or more",
            );
            ok = false;
        }
    }
    if a.has("notify") {
        alert.notify = a.string_list(cx, "notify").unwrap_or_default();
    }
    if a.has("events_window") {
        match a.duration(cx, "events_window") {
            Some(w) if w <= crate::alert::runner::EVENTS_KEPT => alert.events_window = w,
            Some(_) => {
                a.error_at(
                    cx,
                    "events_window",
                    "at most 24h: older changes are not kept in memory",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(k) = a.u64(cx, "locations") {
        if !(1..=1000).contains(&k) {
            a.error_at(cx, "locations", "must be between 1 and 1000");
            ok = false;
        } else if k > 1 && storage.is_some_and(|s| s.postgres.is_none()) {
            a.error_at(
                cx,
                "locations",
                format!("{k} needs storage.postgres: one instance on SQLite has one location"),
            );
            ok = false;
        } else {
            alert.locations = k as u32;
        }
    } else if a.has("locations") {
        ok = false;
    }
    if let Some(node) = a.get("degraded") {
        match compile_degraded(cx, node, &a.path("degraded")) {
            Some(d) => alert.degraded = Some(d),
            None => ok = false,
        }
    }
    ok.then_some(alert)
}

/// `alert.degraded`: `latency` and/or `failures` (`F of N`), with their
/// own `after` and `recover_after`.
fn compile_degraded(cx: &mut Cx, node: &Node, path: &str) -> Option<DegradeSpec> {
    let d = cx.map(node, path, DEGRADED_KEYS)?;
    let mut ok = true;
    let latency = match d.get("latency") {
        None => None,
        Some(_) => match d.duration(cx, "latency") {
            Some(t) if t.is_zero() => {
                d.error_at(
                    cx,
                    "latency",
                    "the soft latency bound must be longer than zero",
                );
                ok = false;
                None
            }
            Some(t) => Some(t),
            None => {
                ok = false;
                None
            }
        },
    };
    let failures = match d.get("failures") {
        None => None,
        Some(_) => match d.str(cx, "failures").map(|t| parse_rate(&t)) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                d.error_at(cx, "failures", e);
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        },
    };
    let anomaly = match d.get("anomaly") {
        None => None,
        Some(n) => match compile_anomaly(cx, n, &d.path("anomaly")) {
            Some(a) => a,
            None => {
                ok = false;
                None
            }
        },
    };
    if ok && latency.is_none() && failures.is_none() && anomaly.is_none() {
        cx.error(
            &node.pos,
            path,
            "give `latency` (a soft bound such as 800ms), `failures` (such as \"3 of 20\"), `anomaly: true`, or several",
        );
        ok = false;
    }
    let mut counts = [3u32, 3u32];
    for (key, slot) in [("after", 0), ("recover_after", 1)] {
        if d.has(key) {
            match d.u64(cx, key) {
                Some(v) if (1..=10_000).contains(&v) => counts[slot] = v as u32,
                Some(_) => {
                    d.error_at(cx, key, "must be between 1 and 10000");
                    ok = false;
                }
                None => ok = false,
            }
        }
    }
    ok.then_some(DegradeSpec {
        latency,
        failures,
        after: counts[0],
        recover_after: counts[1],
        anomaly,
    })
}

/// `anomaly: true | false | { factor, min_delta, window, sustain, min_runs }`.
/// `Some(None)` is `false`.
fn compile_anomaly(cx: &mut Cx, node: &Node, path: &str) -> Option<Option<AnomalySpec>> {
    // A young probe (under three weeks of history) judges its daily busy
    // hour against the same hour of other days, not against all hours:
    // precision 0.97 instead of 0.65 with one week (BENCHMARKS.md).
    let mut detect = crate::detect::DetectConfig {
        hour_of_day_fallback: true,
        ..crate::detect::DetectConfig::default()
    };
    match &node.value {
        Value::Bool(on) => return Some(on.then_some(AnomalySpec { detect })),
        Value::Map(_) => {}
        _ => {
            cx.error(
                &node.pos,
                path,
                format!(
                    "expected true, false or a mapping of factor, min_delta, window, sustain, min_runs; found {}",
                    node.type_name()
                ),
            );
            return None;
        }
    }
    let a = cx.map(node, path, ANOMALY_KEYS)?;
    let mut ok = true;
    if a.has("factor") {
        match a
            .get("factor")
            .and_then(|n| cx.scalar_json(n, &a.path("factor"), "a number such as 2"))
        {
            Some(v) => match v.as_f64() {
                Some(f) if (1.1..=100.0).contains(&f) => detect.factor = f,
                _ => {
                    a.error_at(
                        cx,
                        "factor",
                        "must be a number from 1.1 to 100 (2 means twice the usual p95)",
                    );
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    if a.has("min_delta") {
        match a.duration(cx, "min_delta") {
            Some(d) => detect.min_delta_ms = d.as_secs_f64() * 1000.0,
            None => ok = false,
        }
    }
    if a.has("window") {
        match a.duration(cx, "window") {
            Some(w) if w >= Duration::from_secs(5) && w <= Duration::from_secs(6 * 3600) => {
                detect.window = chrono::TimeDelta::from_std(w).unwrap_or(detect.window);
            }
            Some(_) => {
                a.error_at(cx, "window", "must be from 5s to 6h");
                ok = false;
            }
            None => ok = false,
        }
    }
    for (key, slot) in [("sustain", 0), ("min_runs", 1)] {
        if a.has(key) {
            match a.u64(cx, key) {
                Some(v) if (1..=1000).contains(&v) => {
                    if slot == 0 {
                        detect.sustain = v as u32;
                    } else {
                        detect.min_samples = v as usize;
                    }
                }
                Some(_) => {
                    a.error_at(cx, key, "must be between 1 and 1000");
                    ok = false;
                }
                None => ok = false,
            }
        }
    }
    ok.then_some(Some(AnomalySpec { detect }))
}

/// `F of N` (or `F in N`, `F/N`): F failures among the last N runs.
fn parse_rate(text: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!("invalid failure rate `{text}`: write F of N, e.g. \"3 of 20\" (3 failed runs among the last 20)")
    };
    let t = text.trim();
    let (f, n) = t
        .split_once(" of ")
        .or_else(|| t.split_once(" in "))
        .or_else(|| t.split_once('/'))
        .ok_or_else(bad)?;
    let f: u32 = f.trim().parse().map_err(|_| bad())?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    if f == 0 || n < f {
        return Err(format!(
            "invalid failure rate `{text}`: F must be at least 1 and at most N"
        ));
    }
    if n > MAX_RATE_WINDOW {
        return Err(format!(
            "invalid failure rate `{text}`: N can be at most {MAX_RATE_WINDOW} runs"
        ));
    }
    Ok((f, n))
}

/// The cross-probe facts of one probe (after `defaults`), read from its
/// node whether or not the rest of the probe compiled, so a broken kind
/// section does not hide a dependency or notifier error.
struct Outline {
    name: String,
    path: String,
    depends_on: Vec<(String, Pos)>,
    depends_pos: Pos,
    notify: Vec<(String, Pos)>,
}

impl Outline {
    fn of(node: &Node, path: &str) -> Option<Outline> {
        let name = match &node.get("name")?.value {
            Value::Str { value, .. } => value.clone(),
            _ => return None,
        };
        let list = |n: Option<&Node>| -> Vec<(String, Pos)> {
            match n.map(|n| &n.value) {
                Some(Value::Seq(items)) => items
                    .iter()
                    .filter_map(|i| i.scalar_text().map(|t| (t, i.pos.clone())))
                    .collect(),
                Some(Value::Str { value, .. }) => n
                    .map(|n| vec![(value.clone(), n.pos.clone())])
                    .unwrap_or_default(),
                _ => Vec::new(),
            }
        };
        let deps = node.get("depends_on");
        Some(Outline {
            name,
            path: path.to_string(),
            depends_on: list(deps),
            depends_pos: deps
                .map(|d| d.pos.clone())
                .unwrap_or_else(|| node.pos.clone()),
            notify: list(node.get("alert").and_then(|a| a.get("notify"))),
        })
    }

    fn depends_key(&self) -> String {
        join(&self.path, "depends_on")
    }
}

/// A probe's name, where it is written and its key path: what
/// [`check_names`] needs once the probe's tree is gone.
struct NameAt {
    name: String,
    pos: Pos,
    path: String,
}

impl NameAt {
    fn of((n, path): &(Node, String)) -> Option<NameAt> {
        let nn = n.get("name")?;
        Some(NameAt {
            name: nn.scalar_text()?,
            pos: nn.pos.clone(),
            path: path.clone(),
        })
    }
}

fn check_names(cx: &mut Cx, names: &[NameAt]) {
    let mut first: HashMap<&str, &Pos> = HashMap::new();
    for n in names {
        match first.get(n.name.as_str()) {
            Some(p) => cx.error(
                &n.pos,
                &join(&n.path, "name"),
                format!("duplicate probe name `{}` (first defined at {p})", n.name),
            ),
            None => {
                first.insert(&n.name, &n.pos);
            }
        }
    }
}

fn check_dependencies(cx: &mut Cx, outlines: &[Outline]) {
    let names: Vec<&str> = outlines.iter().map(|o| o.name.as_str()).collect();
    for o in outlines {
        for (dep, pos) in &o.depends_on {
            if names.contains(&dep.as_str()) {
                if dep == &o.name {
                    cx.error(
                        pos,
                        &o.depends_key(),
                        format!("probe `{dep}` cannot depend on itself"),
                    );
                }
                continue;
            }
            let msg = match super::read::suggest(dep, &names) {
                Some(s) => format!("`{dep}` names no probe; did you mean `{s}`?"),
                None => format!("`{dep}` names no probe"),
            };
            cx.error(pos, &o.depends_key(), msg);
        }
    }
    // Cycles: depth-first search with colours; each cycle reported once, at
    // the first probe of the cycle, on its entry naming the next.
    let graph: HashMap<&str, Vec<&str>> = outlines
        .iter()
        .map(|o| {
            let deps = o
                .depends_on
                .iter()
                .map(|(d, _)| d.as_str())
                .filter(|d| *d != o.name)
                .collect();
            (o.name.as_str(), deps)
        })
        .collect();
    let mut state: HashMap<&str, u8> = HashMap::new();
    let mut cycles: Vec<Vec<&str>> = Vec::new();
    let mut reported: HashSet<Vec<&str>> = HashSet::new();
    for o in outlines {
        let mut stack: Vec<&str> = Vec::new();
        visit(
            o.name.as_str(),
            &graph,
            &mut state,
            &mut stack,
            &mut |cycle: Vec<&str>| {
                let mut key = cycle.clone();
                key.sort();
                if reported.insert(key) {
                    cycles.push(cycle);
                }
            },
        );
    }
    for cycle in cycles {
        let first = cycle[0];
        let next = cycle.get(1).copied().unwrap_or(first);
        let msg = format!("dependency cycle: {} -> {first}", cycle.join(" -> "));
        if let Some(o) = outlines.iter().find(|o| o.name == first) {
            let pos = o
                .depends_on
                .iter()
                .find(|(d, _)| d == next)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| o.depends_pos.clone());
            cx.error(&pos, &o.depends_key(), msg);
        }
    }
}

fn visit<'a>(
    node: &'a str,
    graph: &HashMap<&'a str, Vec<&'a str>>,
    state: &mut HashMap<&'a str, u8>,
    stack: &mut Vec<&'a str>,
    on_cycle: &mut dyn FnMut(Vec<&'a str>),
) {
    match state.get(node) {
        Some(2) => return,
        Some(1) => {
            if let Some(i) = stack.iter().position(|n| *n == node) {
                on_cycle(stack[i..].to_vec());
            }
            return;
        }
        _ => {}
    }
    state.insert(node, 1);
    stack.push(node);
    if let Some(deps) = graph.get(node) {
        for d in deps {
            if graph.contains_key(d) {
                visit(d, graph, state, stack, on_cycle);
            }
        }
    }
    stack.pop();
    state.insert(node, 2);
}

fn check_notify(cx: &mut Cx, outlines: &[Outline], declared: &[String]) {
    let known: Vec<&str> = declared.iter().map(String::as_str).collect();
    for o in outlines {
        for (name, pos) in &o.notify {
            if known.contains(&name.as_str()) {
                continue;
            }
            let msg = match super::read::suggest(name, &known) {
                Some(s) => format!(
                    "probe `{}` notifies `{name}`, which is not a notifier; did you mean `{s}`?",
                    o.name
                ),
                None if known.is_empty() => format!(
                    "probe `{}` notifies `{name}`, but no notifiers are configured",
                    o.name
                ),
                None => format!(
                    "probe `{}` notifies `{name}`, which is not a notifier (known: {})",
                    o.name,
                    known.join(", ")
                ),
            };
            cx.error(pos, &join(&o.path, "alert.notify"), msg);
        }
    }
}

/// The same problem reached through `defaults` is reported once per place.
fn dedupe(d: &mut Diagnostics) {
    let mut seen = HashSet::new();
    d.0.retain(|x| seen.insert((x.file.clone(), x.line, x.column, x.message.clone())));
}

/// `expect.latency` (`< 800ms`) of an opened `expect:` mapping, if given
/// and valid.
pub(crate) fn compile_latency(cx: &mut Cx, em: &Map<'_>) -> Option<DurationCmp> {
    let n = em.get("latency")?;
    let text = cx.string(n, &em.path("latency"))?;
    match DurationCmp::parse(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            cx.error(&n.pos, &em.path("latency"), e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles `yaml` as `lookout.yaml` with `env` as the environment.
    fn load_env(
        yaml: &str,
        env: &'static [(&'static str, &'static str)],
    ) -> Result<Config, String> {
        let cx = Cx::new(Box::new(move |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }));
        load_str("lookout.yaml", yaml, cx)
            .map(|(c, _)| c)
            .map_err(|d| d.to_string())
    }

    fn load(yaml: &str) -> Result<Config, String> {
        load_env(yaml, &[])
    }

    fn error(yaml: &str) -> String {
        match load(yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e,
        }
    }

    const PG: &str = "storage:\n  postgres:\n    url: postgres://lookout@db.internal/lookout\n";

    #[test]
    fn location_comes_from_the_file_or_the_environment() {
        let cfg = load("location: eu-west\nprobes: []\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.location.as_deref(), Some("eu-west"));
        let cfg = load("probes: []\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.location, None);

        // The variable wins over the file; empty, it is ignored.
        let env = &[("LOOKOUT_LOCATION", "us-east.2")];
        let cfg = load_env("location: eu-west\n", env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.location.as_deref(), Some("us-east.2"));
        let cfg = load_env("probes: []\n", env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.location.as_deref(), Some("us-east.2"));
        let env = &[("LOOKOUT_LOCATION", "")];
        let cfg = load_env("location: eu-west\n", env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.location.as_deref(), Some("eu-west"));

        // Neither way is it a secret: host names holding it stay readable.
        let env = &[
            ("REGION_T", "region-from-var-4"),
            ("LOOKOUT_LOCATION", "loc-from-env-4"),
        ];
        let cfg = load_env("location: ${REGION_T}\n", env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.location.as_deref(), Some("loc-from-env-4"));
        for l in ["region-from-var-4", "loc-from-env-4"] {
            assert_eq!(crate::redact::redact(l), l);
        }
    }

    #[test]
    fn invalid_locations_are_errors_naming_where_they_come_from() {
        for bad in ["EU-West", "-eu", "eu west", "\"\"", &"a".repeat(64)] {
            let e = error(&format!("probes: []\nlocation: {bad}\n"));
            assert!(
                e.contains("lookout.yaml:2:11: error: location: invalid location"),
                "{bad}: {e}"
            );
        }
        assert!(load(&format!("location: {}\n", "a".repeat(63))).is_ok());
        assert!(load("location: 9_z.x-y\n").is_ok());

        let e = match load_env("probes: []\n", &[("LOOKOUT_LOCATION", "Eu West")]) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        assert_eq!(
            e.trim(),
            "lookout.yaml: error: the environment variable LOOKOUT_LOCATION: invalid location \
             `Eu West`: a location has 1 to 63 of `a-z 0-9 . _ -` and starts with a letter or \
             a digit, e.g. eu-west"
        );
    }

    #[test]
    fn probe_locations_are_checked_and_defaulted() {
        let cfg = load(
            "defaults:\n  locations: [eu-west]\nprobes:\n  - name: a\n    tcp: {host: h, port: 1}\n    locations: [eu-west, us-east]\n  - name: b\n    tcp: {host: h, port: 1}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.probes[0].locations, ["eu-west", "us-east"]);
        assert_eq!(cfg.probes[1].locations, ["eu-west"]);
        let cfg = load("probes:\n  - name: a\n    tcp: {host: h, port: 1}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.probes[0].locations.is_empty());

        let e = error(
            "probes:\n  - name: a\n    tcp: {host: h, port: 1}\n    locations:\n      - eu-west\n      - US\n      - eu-west\n",
        );
        for want in [
            "lookout.yaml:6:9: error: probes[0].locations[1]: invalid location `US`",
            "lookout.yaml:7:9: error: probes[0].locations[2]: `eu-west` is listed twice",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn alert_locations_need_enough_locations_and_postgres() {
        let probe =
            |extra: &str| format!("probes:\n  - name: a\n    tcp: {{host: h, port: 1}}\n{extra}");
        let cfg = load(&probe("")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.probes[0].alert.locations, 1);
        let cfg = load(&format!(
            "{PG}{}",
            probe("    locations: [a, b, c]\n    alert:\n      locations: 2\n")
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.probes[0].alert.locations, 2);
        // Every location (no list) is no bound.
        let cfg = load(&format!("{PG}{}", probe("    alert: {locations: 5}\n")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.probes[0].alert.locations, 5);

        let e = error(&probe("    alert:\n      locations: 0\n"));
        assert!(
            e.contains(
                "lookout.yaml:5:18: error: probes[0].alert.locations: must be between 1 and 1000"
            ),
            "{e}"
        );
        let e = error(&probe("    alert:\n      locations: 2\n"));
        assert!(
            e.contains(
                "lookout.yaml:5:18: error: probes[0].alert.locations: 2 needs storage.postgres: \
                 one instance on SQLite has one location"
            ),
            "{e}"
        );
        let e = error(&format!(
            "{PG}{}",
            probe("    locations: [a, b]\n    alert:\n      locations: 3\n")
        ));
        assert!(
            e.contains(
                "lookout.yaml:9:18: error: probes[0].alert.locations: 3 is more than the 2 \
                 locations this probe runs in (`locations`: a, b)"
            ),
            "{e}"
        );
    }

    #[test]
    fn storage_postgres_is_read_and_its_password_kept_secret() {
        let env = &[("PG_PASSWORD_T", "pg-env-secret-5d2c")];
        let cfg = load_env(
            "storage:\n  postgres:\n    url: Postgres://lookout:${PG_PASSWORD_T}@db.internal:5432/lookout?sslmode=require\n",
            env,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pg = cfg.storage.postgres.as_ref().expect("postgres");
        assert_eq!(
            pg.url,
            "postgres://lookout:pg-env-secret-5d2c@db.internal:5432/lookout?sslmode=require"
        );

        // Written literally, in either place, it is still a secret.
        let cfg = load(
            "storage:\n  postgres:\n    url: postgres://u:pg-literal-8b1f@db/x?password=pg-param-3e7a\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{:?}", cfg.storage);
        for secret in ["pg-env-secret-5d2c", "pg-literal-8b1f", "pg-param-3e7a"] {
            assert!(!shown.contains(secret), "{shown}");
            assert_eq!(crate::redact::redact(&format!("x {secret} y")), "x *** y");
        }
        assert!(
            shown.contains("postgres://u:***@db/x?password=***"),
            "{shown}"
        );

        let e = error(
            "storage:\n  sqlite: a.db\n  postgres:\n    url: postgres://u:pg-both-4f9d@db/x\n",
        );
        assert!(
            e.contains("lookout.yaml:4:5: error: storage.postgres: give storage.sqlite or storage.postgres, not both"),
            "{e}"
        );
        let e = error("storage:\n  postgres:\n    url: mysql://u:pg-scheme-6a2b@db/x\n");
        assert!(
            e.contains("lookout.yaml:3:10: error: storage.postgres.url: expected a postgres://"),
            "{e}"
        );
        assert!(!e.contains("pg-scheme-6a2b"), "{e}");
        let e = error("storage:\n  postgres:\n    url: postgres://u:pg-port-1c3d@db:notaport/x\n");
        assert!(
            e.contains("lookout.yaml:3:10: error: storage.postgres.url: invalid PostgreSQL URL"),
            "{e}"
        );
        assert!(!e.contains("pg-port-1c3d"), "{e}");
        let e = error("storage:\n  postgres: {}\n");
        assert!(
            e.contains("storage.postgres: missing required key `url`"),
            "{e}"
        );
    }

    #[test]
    fn probes_run_where_they_are_listed() {
        let cfg = load(
            "probes:\n  - name: everywhere\n    tcp: {host: h, port: 1}\n  - name: eu\n    tcp: {host: h, port: 1}\n    locations: [eu-west]\n  - name: both\n    tcp: {host: h, port: 1}\n    locations: [eu-west, us-east]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let runs = |location: Option<&str>| -> Vec<&str> {
            cfg.probes
                .iter()
                .filter(|p| p.runs_in(location))
                .map(|p| p.name.as_str())
                .collect()
        };
        assert_eq!(runs(Some("eu-west")), ["everywhere", "eu", "both"]);
        assert_eq!(runs(Some("us-east")), ["everywhere", "both"]);
        assert_eq!(runs(Some("ap-south")), ["everywhere"]);
        // No location: only the probes that name none.
        assert_eq!(runs(None), ["everywhere"]);

        let here = Config {
            location: Some("us-east".into()),
            ..cfg.clone()
        };
        let local: Vec<String> = here.local_probes().iter().map(|p| p.name.clone()).collect();
        assert_eq!(local, ["everywhere", "both"]);
    }
}
