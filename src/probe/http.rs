//! The `http` probe kind: one HTTP/1.1 request (following redirects when
//! asked) over a fresh connection, timed phase by phase, with expectations
//! on the status, headers, body, JSON values and the TLS certificate.
//!
//! The client is built by hand from hyper's connection API so each phase
//! (dns, connect, tls, first byte, transfer) is measured exactly and nothing
//! is pooled: every run resolves, connects and handshakes from scratch. The
//! run is bounded from outside by `run_once`'s timeout, so everything here is
//! cancel-safe: dropping the run drops the socket and aborts the connection
//! task. The body is read into memory up to `max_body` and no further.
//! Every request (each redirect hop) carries the run's W3C trace context
//! with its own span id, as the spec's `propagation` says
//! ([`crate::tracectx::inject`]).

use std::error::Error as StdError;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use regex::Regex;
use serde_json::Value as Json;
use serde_json_path::JsonPath;
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

use crate::config::read::{join, suggest, Cx, Map};
use crate::config::yaml::{Node, Value};
use crate::expect::{text_of, DurationCmp, StatusMatcher, ValueMatcher};
use crate::probe::net::{self, Wording};
use crate::probe::oauth2;
use crate::probe::tlsutil::{self, Handshake, TlsOptions};
use crate::probe::urlutil::percent_decode;
use crate::probe::Trace;
use crate::result::{Failure, FailureClass, Phase};
use crate::tracectx::Propagation;

/// Keys accepted in the `http:` section.
pub const KEYS: &[&str] = &[
    "url",
    "method",
    "headers",
    "body",
    "basic_auth",
    "bearer_token",
    "follow_redirects",
    "max_redirects",
    "insecure",
    "ca",
    "max_body",
    "user_agent",
    "auth",
    "tls",
];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &[
    "status",
    "body_contains",
    "body_matches",
    "json",
    "headers",
    "certificate_expires_in",
];

/// Bodies larger than this fail as `size` unless `max_body` says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// The largest `max_body` accepted: one probe must not hold gigabytes.
pub const MAX_MAX_BODY: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;
const MAX_MAX_REDIRECTS: u64 = 100;
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];
const BASIC_AUTH_KEYS: &[&str] = &["username", "password"];
/// The kinds of `auth`, exactly one of which is given.
const AUTH_KEYS: &[&str] = &["basic", "bearer", "api_key", "oauth2"];
const API_KEY_KEYS: &[&str] = &["header", "query", "value"];
/// How much of a body an expectation's failure message quotes.
const SNIPPET_CHARS: usize = 120;

/// A compiled `http` probe.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub url: Url,
    pub method: Method,
    /// Every request header except `Host`: defaults (`User-Agent`,
    /// `Accept`), the configured ones, and `Authorization` (marked
    /// sensitive) from `basic_auth`, `bearer_token` or the URL's user info.
    /// Probes whose headers are exactly the defaults share one map (see
    /// `shared_headers`): with 10,000 probes that is 6 MB not held.
    pub headers: Arc<HeaderMap>,
    pub body: Option<Bytes>,
    pub follow_redirects: bool,
    pub max_redirects: u32,
    pub tls: TlsOptions,
    pub max_body: u64,
    /// `auth.oauth2`: a token fetched (and cached) before each request.
    pub oauth2: Option<Arc<oauth2::OAuth2Spec>>,
    /// `auth.api_key.query`: a (name, value) query pair added to requests
    /// to the configured origin, never to the URL shown.
    pub api_key_query: Option<Arc<QueryKey>>,
    /// Whether the probe sends credentials (any `auth`, `basic_auth`,
    /// `bearer_token`, or an `Authorization` header).
    pub credentials: bool,
    /// The trace headers every request carries (`traceparent`, maybe a
    /// vendor header), from the configuration's `tracing` section.
    pub propagation: Propagation,
    /// Boxed to keep `ProbeKind` small: most of a spec is its expectations.
    pub expect: Box<HttpExpect>,
}

/// `auth.api_key.query`: the parameter's name and the key. `Debug` never
/// shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryKey {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for QueryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The `expect:` entries of an `http` probe (latency is handled by `run_once`).
#[derive(Debug, Clone, Default)]
pub struct HttpExpect {
    /// Defaults to any 2xx or 3xx.
    pub status: StatusMatcher,
    pub body_contains: Vec<String>,
    pub body_matches: Vec<std::sync::Arc<Regex>>,
    pub json: Vec<JsonExpect>,
    pub headers: Vec<(HeaderName, ValueMatcher)>,
    pub certificate_expires_in: Option<DurationCmp>,
}

/// One `json:` entry: a JSONPath and what every value it selects must be.
#[derive(Debug, Clone)]
pub struct JsonExpect {
    /// The path as written, for messages.
    pub text: String,
    pub path: JsonPath,
    pub matcher: ValueMatcher,
}

impl HttpSpec {
    pub fn target(&self) -> String {
        crate::redact::redact(self.url.as_str())
    }
}

/// A default GET probe of `url` (for `lookout probe --url URL`).
pub fn from_url(url: &str) -> Result<HttpSpec, String> {
    let url = parse_url(url)?;
    let mut headers = default_headers();
    if let Some(auth) = url_credentials(&url) {
        headers.insert(header::AUTHORIZATION, auth);
    }
    let credentials = headers.contains_key(header::AUTHORIZATION);
    Ok(HttpSpec {
        url,
        method: Method::GET,
        headers: shared_headers(headers),
        body: None,
        follow_redirects: true,
        max_redirects: DEFAULT_MAX_REDIRECTS,
        tls: TlsOptions::default(),
        max_body: DEFAULT_MAX_BODY,
        oauth2: None,
        api_key_query: None,
        credentials,
        propagation: Propagation::default(),
        expect: Box::default(),
    })
}

// ---------------------------------------------------------------------------
// Compiling the configuration

pub fn compile(cx: &mut Cx, node: &Node, path: &str, expect: Option<&Map<'_>>) -> Option<HttpSpec> {
    let m = cx.map(node, path, KEYS)?;
    let url = m.required_parsed(cx, "url", parse_url);
    let method = m
        .parsed(cx, "method", parse_method)
        .map(|given| given.unwrap_or(Method::GET));
    let headers = compile_headers(cx, &m);
    let body = m.str(cx, "body").map(Bytes::from);
    let follow_redirects = m.bool_or(cx, "follow_redirects", true);
    let max_redirects = match m.get("max_redirects") {
        None => Some(DEFAULT_MAX_REDIRECTS),
        Some(_) => m.u64(cx, "max_redirects").and_then(|n| {
            if n > MAX_MAX_REDIRECTS {
                m.error_at(
                    cx,
                    "max_redirects",
                    format!("at most {MAX_MAX_REDIRECTS} redirects can be followed"),
                );
                return None;
            }
            u32::try_from(n).ok()
        }),
    };
    let max_body = match m.get("max_body") {
        None => Some(DEFAULT_MAX_BODY),
        Some(n) => compile_size(cx, n, &m.path("max_body")),
    };
    let tls = tlsutil::compile_options(cx, &m);
    let client = tlsutil::compile_client(cx, &m);
    let auth = compile_auth(cx, &m, headers.as_ref());
    let expect = compile_expect(cx, expect);

    let mut headers = headers?;
    let auth = auth?;
    for (name, value) in auth.headers {
        headers.insert(name, value);
    }
    if let Some(url) = &url {
        if !headers.contains_key(header::AUTHORIZATION) {
            if let Some(auth) = url_credentials(url) {
                headers.insert(header::AUTHORIZATION, auth);
            }
        }
    }
    let mut tls = tls?;
    tls.client = client?;
    let credentials = headers.contains_key(header::AUTHORIZATION) || auth.any;
    Some(HttpSpec {
        url: url?,
        method: method?,
        headers: shared_headers(headers),
        body,
        follow_redirects: follow_redirects?,
        max_redirects: max_redirects?,
        tls,
        max_body: max_body?,
        oauth2: auth.oauth2.map(Arc::new),
        api_key_query: auth.query.map(Arc::new),
        credentials,
        // The `tracing` section's choice is applied after every probe
        // compiled (`tracectx::apply`).
        propagation: Propagation::default(),
        expect: Box::new(expect?),
    })
}

/// Parses an http(s) URL; the error says what is wrong in words.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported URL scheme `{}`: an http probe needs an http:// or https:// URL",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL `{text}`: no host"));
    }
    Ok(url)
}

fn parse_method(text: &str) -> Result<Method, String> {
    let upper = text.trim().to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        return Method::from_bytes(upper.as_bytes())
            .map_err(|e| format!("invalid method `{text}`: {e}"));
    }
    Err(match suggest(&upper, METHODS) {
        Some(s) => format!("unknown HTTP method `{text}`; did you mean `{s}`?"),
        None => format!(
            "unknown HTTP method `{text}`; expected one of: {}",
            METHODS.join(", ")
        ),
    })
}

/// `headers` as a spec holds them: the one shared default map when they
/// are exactly the defaults (the common case), their own map otherwise.
/// A `HeaderMap` with two entries costs about 600 bytes.
fn shared_headers(headers: HeaderMap) -> Arc<HeaderMap> {
    static DEFAULT: LazyLock<Arc<HeaderMap>> = LazyLock::new(|| Arc::new(default_headers()));
    if headers == **DEFAULT {
        DEFAULT.clone()
    } else {
        Arc::new(headers)
    }
}

fn default_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("Lookout/", env!("CARGO_PKG_VERSION"))),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    h
}

/// Headers that carry credentials: sent only to the configured origin.
pub(crate) fn is_credential(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION || name == header::COOKIE || name == header::PROXY_AUTHORIZATION
}

pub(crate) fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn basic(user: &str, password: &str) -> Option<HeaderValue> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    crate::redact::register(&token);
    sensitive(&format!("Basic {token}"))
}

/// Basic credentials written in the URL (`https://user:pass@host/`).
fn url_credentials(url: &Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let user = percent_decode(url.username());
    let password = percent_decode(url.password().unwrap_or(""));
    crate::redact::register(&password);
    basic(&user, &password)
}

/// `headers`, `user_agent`, `basic_auth` and `bearer_token` into one map.
fn compile_headers(cx: &mut Cx, m: &Map<'_>) -> Option<HeaderMap> {
    let mut out = default_headers();
    let mut ok = true;
    if let Some(ua) = m.str(cx, "user_agent") {
        match HeaderValue::from_str(&ua) {
            Ok(v) => {
                out.insert(header::USER_AGENT, v);
            }
            Err(_) => {
                m.error_at(
                    cx,
                    "user_agent",
                    "invalid header value (control characters are not allowed)",
                );
                ok = false;
            }
        }
    } else if m.has("user_agent") {
        ok = false;
    }
    if let Some(node) = m.get("headers") {
        let path = m.path("headers");
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let key_path = join(&path, &k.name);
                    let name = match HeaderName::from_bytes(k.name.as_bytes()) {
                        Ok(n) => n,
                        Err(_) => {
                            cx.error(
                                &k.pos,
                                &key_path,
                                format!("invalid header name `{}`", k.name),
                            );
                            ok = false;
                            continue;
                        }
                    };
                    let Some(text) = cx.string(v, &key_path) else {
                        ok = false;
                        continue;
                    };
                    let value = if is_credential(&name) {
                        sensitive(&text)
                    } else {
                        HeaderValue::from_str(&text).ok()
                    };
                    match value {
                        Some(value) => {
                            out.insert(name, value);
                        }
                        None => {
                            cx.error(
                                &v.pos,
                                &key_path,
                                "invalid header value (control characters are not allowed)",
                            );
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                cx.error(
                    &node.pos,
                    &path,
                    format!(
                        "expected a mapping of header names to values, found {}",
                        node.type_name()
                    ),
                );
                ok = false;
            }
        }
    }
    let explicit_auth = out.contains_key(header::AUTHORIZATION);
    if let Some(node) = m.get("basic_auth") {
        let path = m.path("basic_auth");
        if let Some(b) = cx.map(node, &path, BASIC_AUTH_KEYS) {
            let user = b.required_str(cx, "username");
            let password = match b.get("password") {
                None => Some(String::new()),
                Some(_) => b.str(cx, "password"),
            };
            match (user, password) {
                (Some(u), Some(p)) => {
                    if u.contains(':') {
                        b.error_at(cx, "username", "a basic auth username cannot contain `:`");
                        ok = false;
                    }
                    crate::redact::register(&p);
                    match basic(&u, &p) {
                        Some(v) => {
                            out.insert(header::AUTHORIZATION, v);
                        }
                        None => {
                            cx.error(
                                &node.pos,
                                &path,
                                "credentials hold characters that cannot be sent in a header",
                            );
                            ok = false;
                        }
                    }
                }
                _ => ok = false,
            }
        } else {
            ok = false;
        }
    }
    if m.has("bearer_token") {
        match m.str(cx, "bearer_token") {
            Some(t) => {
                crate::redact::register(&t);
                if m.has("basic_auth") {
                    m.error_at(
                        cx,
                        "bearer_token",
                        "give either `basic_auth` or `bearer_token`, not both",
                    );
                    ok = false;
                } else {
                    match sensitive(&format!("Bearer {}", t.trim())) {
                        Some(v) => {
                            out.insert(header::AUTHORIZATION, v);
                        }
                        None => {
                            m.error_at(
                                cx,
                                "bearer_token",
                                "the token holds characters that cannot be sent in a header",
                            );
                            ok = false;
                        }
                    }
                }
            }
            None => ok = false,
        }
    }
    if explicit_auth && (m.has("basic_auth") || m.has("bearer_token")) {
        let key = if m.has("basic_auth") {
            "basic_auth"
        } else {
            "bearer_token"
        };
        m.error_at(
            cx,
            key,
            "an `Authorization` header is already set in `headers`; give the credentials once",
        );
        ok = false;
    }
    ok.then_some(out)
}

/// What `auth` adds to a probe.
#[derive(Default)]
struct CompiledAuth {
    any: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    oauth2: Option<oauth2::OAuth2Spec>,
    query: Option<QueryKey>,
}

fn register_secret(cx: &Cx, value: &str) {
    if cx.register_secrets {
        crate::redact::register(value);
    }
}

/// `auth`: exactly one of `basic`, `bearer`, `api_key` or `oauth2`.
/// `headers` is what `headers`/`basic_auth`/`bearer_token` gave (when they
/// were valid), to refuse credentials given twice.
fn compile_auth(cx: &mut Cx, m: &Map<'_>, headers: Option<&HeaderMap>) -> Option<CompiledAuth> {
    let Some(node) = m.get("auth") else {
        return Some(CompiledAuth::default());
    };
    let path = m.path("auth");
    let a = cx.map(node, &path, AUTH_KEYS)?;
    let given: Vec<&str> = AUTH_KEYS.iter().copied().filter(|k| a.has(k)).collect();
    if given.len() != 1 {
        let msg = if given.is_empty() {
            format!("give one of: {}", AUTH_KEYS.join(", "))
        } else {
            format!(
                "give exactly one kind of auth, not {}",
                given
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        };
        cx.error(&node.pos, &path, msg);
        return None;
    }
    let kind = given[0];
    let mut out = CompiledAuth {
        any: true,
        ..CompiledAuth::default()
    };
    if kind != "api_key" {
        for other in ["basic_auth", "bearer_token"] {
            if m.has(other) {
                cx.error(
                    &node.pos,
                    &path,
                    format!("give either `auth` or `{other}`, not both"),
                );
                return None;
            }
        }
        if headers.is_some_and(|h| h.contains_key(header::AUTHORIZATION)) {
            cx.error(
                &node.pos,
                &path,
                "an `Authorization` header is already set in `headers`; give the credentials once",
            );
            return None;
        }
    }
    let kpath = a.path(kind);
    let knode = a.get(kind)?;
    match kind {
        "basic" => {
            let b = cx.map(knode, &kpath, BASIC_AUTH_KEYS)?;
            let user = b.required_str(cx, "username");
            let password = match b.get("password") {
                None => Some(String::new()),
                Some(_) => b.str(cx, "password"),
            };
            let (user, password) = (user?, password?);
            register_secret(cx, &password);
            if user.contains(':') {
                b.error_at(cx, "username", "a basic auth username cannot contain `:`");
                return None;
            }
            let Some(v) = basic(&user, &password) else {
                cx.error(
                    &knode.pos,
                    &kpath,
                    "credentials hold characters that cannot be sent in a header",
                );
                return None;
            };
            out.headers.push((header::AUTHORIZATION, v));
        }
        "bearer" => {
            let t = cx.string(knode, &kpath)?;
            register_secret(cx, t.trim());
            if t.trim().is_empty() {
                cx.error(&knode.pos, &kpath, "the bearer token is empty");
                return None;
            }
            let Some(v) = sensitive(&format!("Bearer {}", t.trim())) else {
                cx.error(
                    &knode.pos,
                    &kpath,
                    "the token holds characters that cannot be sent in a header",
                );
                return None;
            };
            out.headers.push((header::AUTHORIZATION, v));
        }
        "api_key" => {
            let k = cx.map(knode, &kpath, API_KEY_KEYS)?;
            let value = k.required_str(cx, "value");
            if let Some(v) = &value {
                register_secret(cx, v);
                let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
                register_secret(cx, &encoded);
            }
            let (h, q) = (k.get("header"), k.get("query"));
            if h.is_some() == q.is_some() {
                let msg = if h.is_some() {
                    "give either `header` or `query`, not both"
                } else {
                    "give `header` (the header's name) or `query` (the query parameter's name)"
                };
                cx.error(&knode.pos, &kpath, msg);
                return None;
            }
            let value = value?;
            if value.is_empty() {
                k.error_at(cx, "value", "the API key is empty");
                return None;
            }
            if h.is_some() {
                let name = k.str(cx, "header")?;
                let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) else {
                    k.error_at(cx, "header", format!("invalid header name `{name}`"));
                    return None;
                };
                if name == header::HOST {
                    k.error_at(
                        cx,
                        "header",
                        "the API key cannot be sent as the Host header",
                    );
                    return None;
                }
                let defaults = default_headers();
                if headers.is_some_and(|hm| hm.contains_key(&name) && !defaults.contains_key(&name))
                {
                    k.error_at(
                        cx,
                        "header",
                        format!("a `{name}` header is already set in `headers`; give it once"),
                    );
                    return None;
                }
                let Some(v) = sensitive(&value) else {
                    k.error_at(
                        cx,
                        "value",
                        "the API key holds characters that cannot be sent in a header",
                    );
                    return None;
                };
                out.headers.push((name, v));
            } else {
                let name = k.str(cx, "query")?;
                if name.trim().is_empty() {
                    k.error_at(cx, "query", "the query parameter's name is empty");
                    return None;
                }
                out.query = Some(QueryKey {
                    name: name.trim().to_string(),
                    value,
                });
            }
        }
        _ => {
            out.oauth2 = Some(oauth2::compile(cx, knode, &kpath)?);
        }
    }
    Some(out)
}

/// A byte size (see [`parse_size`]) at `path`.
pub(crate) fn compile_size(cx: &mut Cx, node: &Node, path: &str) -> Option<u64> {
    let text = match &node.value {
        Value::Int(i) => i.to_string(),
        Value::Str { .. } => cx.string(node, path)?,
        _ => {
            cx.error(
                &node.pos,
                path,
                format!("expected a size such as 1MiB, found {}", node.type_name()),
            );
            return None;
        }
    };
    match parse_size(&text) {
        Ok(n) => Some(n),
        Err(e) => {
            cx.error(&node.pos, path, e);
            None
        }
    }
}

/// Parses a byte size: `1048576`, `512KiB`, `1MiB`, `10MB`, `1GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size `{t}`: write e.g. 1048576, 512KiB, 1MiB or 10MB");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("invalid size `{t}`: must be more than zero"));
    }
    if bytes > MAX_MAX_BODY {
        return Err(format!("size `{t}` is more than the largest allowed, 1GiB"));
    }
    Ok(bytes)
}

/// A byte count the way it was probably written: `1 MiB`, `512 KiB`, `10 MB`.
pub fn human_size(n: u64) -> String {
    for (unit, size) in [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("kB", 1_000),
    ] {
        if n >= size && n % size == 0 {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// The list items of a key that takes one value or a list.
fn items(node: &Node) -> Vec<(&Node, Option<usize>)> {
    match &node.value {
        Value::Seq(list) => list.iter().enumerate().map(|(i, n)| (n, Some(i))).collect(),
        _ => vec![(node, None)],
    }
}

fn item_path(path: &str, i: Option<usize>) -> String {
    match i {
        Some(i) => format!("{path}[{i}]"),
        None => path.to_string(),
    }
}

fn compile_expect(cx: &mut Cx, expect: Option<&Map<'_>>) -> Option<HttpExpect> {
    let mut out = HttpExpect {
        certificate_expires_in: tlsutil::compile_expiry(cx, expect)?,
        ..HttpExpect::default()
    };
    let Some(em) = expect else { return Some(out) };
    let mut ok = true;
    if let Some(node) = em.get("status") {
        let path = em.path("status");
        let mut parsed = Vec::new();
        for (item, i) in items(node) {
            let p = item_path(&path, i);
            let text = match &item.value {
                Value::Int(_) | Value::Str { .. } => cx.string(item, &p),
                _ => {
                    cx.error(
                        &item.pos,
                        &p,
                        format!(
                            "expected a status code or a class such as 2xx, found {}",
                            item.type_name()
                        ),
                    );
                    None
                }
            };
            match text.map(|t| StatusMatcher::parse_item(&t)) {
                Some(Ok(s)) => parsed.push(s),
                Some(Err(e)) => {
                    cx.error(&item.pos, &p, e);
                    ok = false;
                }
                None => ok = false,
            }
        }
        if parsed.is_empty() && ok {
            cx.error(&node.pos, &path, "give at least one status code or class");
            ok = false;
        }
        out.status = StatusMatcher { items: parsed };
    }
    if let Some(node) = em.get("body_contains") {
        let path = em.path("body_contains");
        for (item, i) in items(node) {
            match cx.string(item, &item_path(&path, i)) {
                Some(s) => out.body_contains.push(s),
                None => ok = false,
            }
        }
    }
    if let Some(node) = em.get("body_matches") {
        let path = em.path("body_matches");
        for (item, i) in items(node) {
            let p = item_path(&path, i);
            match cx.string(item, &p).map(|s| crate::expect::regex(&s)) {
                Some(Ok(re)) => out.body_matches.push(re),
                Some(Err(e)) => {
                    cx.error(&item.pos, &p, e);
                    ok = false;
                }
                None => ok = false,
            }
        }
    }
    if let Some(node) = em.get("json") {
        let path = em.path("json");
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let p = join(&path, &k.name);
                    let jp = match JsonPath::parse(&k.name) {
                        Ok(jp) => Some(jp),
                        Err(e) => {
                            let hint = if k.name.starts_with('$') {
                                ""
                            } else {
                                " (a JSONPath starts with `$`, e.g. `$.status`)"
                            };
                            cx.error(
                                &k.pos,
                                &p,
                                format!("invalid JSONPath `{}`: {e}{hint}", k.name),
                            );
                            None
                        }
                    };
                    let matcher = cx.value_matcher(v, &p);
                    match (jp, matcher) {
                        (Some(path), Some(matcher)) => out.json.push(JsonExpect {
                            text: k.name.clone(),
                            path,
                            matcher,
                        }),
                        _ => ok = false,
                    }
                }
            }
            _ => {
                cx.error(
                    &node.pos,
                    &path,
                    format!(
                        "expected a mapping of JSONPath to expected value, found {}",
                        node.type_name()
                    ),
                );
                ok = false;
            }
        }
    }
    if let Some(node) = em.get("headers") {
        let path = em.path("headers");
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let p = join(&path, &k.name);
                    let name = match HeaderName::from_bytes(k.name.as_bytes()) {
                        Ok(n) => Some(n),
                        Err(_) => {
                            cx.error(&k.pos, &p, format!("invalid header name `{}`", k.name));
                            None
                        }
                    };
                    let matcher = cx.value_matcher(v, &p);
                    match (name, matcher) {
                        (Some(n), Some(m)) => out.headers.push((n, m)),
                        _ => ok = false,
                    }
                }
            }
            _ => {
                cx.error(
                    &node.pos,
                    &path,
                    format!(
                        "expected a mapping of header names to expected values, found {}",
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
// Running

/// Keeps a connection alive while its response is read; dropping it aborts
/// the task that drives the connection, which closes the socket.
pub(crate) struct ConnGuard {
    task: tokio::task::JoinHandle<()>,
    sender: SendRequest<Full<Bytes>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request/response exchange: the response head and what it came over.
struct Hop {
    response: Response<Incoming>,
    tls: Option<Handshake>,
    _conn: ConnGuard,
}

pub async fn run(spec: &HttpSpec, trace: &mut Trace) -> Result<(), Failure> {
    fetch_body(spec, trace).await.map(drop)
}

/// [`run`], returning the final response's body (read within `max_body`)
/// for kinds that interpret it, such as `statuspage`.
pub(crate) async fn fetch_body(spec: &HttpSpec, trace: &mut Trace) -> Result<Vec<u8>, Failure> {
    fetch_response(spec, trace).await.map(|f| f.body)
}

/// The final response of a run, for kinds that read more than its status:
/// a flow step captures values from its headers and body.
pub(crate) struct Fetched {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// [`run`], returning the final response's headers and body.
pub(crate) async fn fetch_response(spec: &HttpSpec, trace: &mut Trace) -> Result<Fetched, Failure> {
    let mut headers = spec.headers.clone();
    let mut token = None;
    if let Some(o) = &spec.oauth2 {
        let t = oauth2::token(o, &spec.tls, spec.headers.get(header::USER_AGENT), trace).await?;
        let value = sensitive(&format!("Bearer {t}")).ok_or_else(|| {
            Failure::new(
                FailureClass::Auth,
                format!(
                    "OAuth2 token endpoint {}: the token cannot be sent in a header",
                    o.endpoint()
                ),
            )
        })?;
        let mut h = (*spec.headers).clone();
        h.insert(header::AUTHORIZATION, value);
        headers = Arc::new(h);
        token = Some(t);
    }
    let mut url = spec.url.clone();
    let mut method = spec.method.clone();
    let mut body = spec.body.clone();
    let mut redirects: u32 = 0;
    let origin = spec.url.origin();
    let hop = loop {
        let with_credentials = url.origin() == origin;
        let hop = fetch(
            spec,
            &headers,
            &url,
            &method,
            body.clone(),
            with_credentials,
            trace,
        )
        .await?;
        let status = hop.response.status();
        if !(spec.follow_redirects && is_redirect(status)) {
            break hop;
        }
        let Some(location) = hop.response.headers().get(header::LOCATION) else {
            break hop;
        };
        let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
        let next = url.join(location.trim()).map_err(|e| {
            Failure::new(
                FailureClass::Protocol,
                format!("{url} redirected to an invalid Location `{location}`: {e}"),
            )
        })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(Failure::new(
                FailureClass::Protocol,
                format!("{url} redirected to `{next}`, which is not an http(s) URL"),
            ));
        }
        if redirects >= spec.max_redirects {
            return Err(Failure::new(
                FailureClass::Protocol,
                format!(
                    "redirect loop: more than {} redirects (last Location: {next})",
                    spec.max_redirects
                ),
            ));
        }
        redirects += 1;
        // Browsers (and RFC 9110) turn a 303, and a 301/302 after POST, into
        // a GET without a body; 307 and 308 repeat the request as it was.
        let to_get = status == StatusCode::SEE_OTHER && method != Method::HEAD
            || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                && method == Method::POST;
        if to_get {
            method = Method::GET;
            body = None;
        }
        url = next;
    };
    if hop.response.status() == StatusCode::UNAUTHORIZED {
        // The API refused the token: the next run fetches a fresh one.
        if let (Some(o), Some(t)) = (&spec.oauth2, &token) {
            oauth2::invalidate(o, t);
        }
    }
    finish(spec, hop, &url, &method, redirects, trace).await
}

/// How a response's version is shown (as `Version`'s `Debug` writes it),
/// without formatting on every run.
fn version_name(v: Version) -> String {
    let name = match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        other => return format!("{other:?}"),
    };
    name.to_string()
}

fn is_redirect(s: StatusCode) -> bool {
    matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Resolves, connects, handshakes and sends one request; returns once the
/// response head has arrived.
async fn fetch(
    spec: &HttpSpec,
    headers: &HeaderMap,
    url: &Url,
    method: &Method,
    body: Option<Bytes>,
    with_credentials: bool,
    trace: &mut Trace,
) -> Result<Hop, Failure> {
    let https = url.scheme() == "https";
    // Built (and cached) before any phase starts, so loading the system's
    // trust store once per process never counts as TLS time.
    let tls_config = if https {
        Some(net::tls_config(&spec.tls).await?)
    } else {
        None
    };
    let mut request = build_request(spec, headers, url, method, body, with_credentials)?;
    // Every hop is its own request with its own span id, in the run's trace.
    crate::tracectx::inject(spec.propagation, request.headers_mut(), trace);
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = net::resolve(bare, port, Wording::Http, trace).await?;
    let (tcp, _) = net::connect(bare, &addrs, Wording::Http, trace).await?;
    // Requests are small and sent at once; don't let Nagle delay them.
    let _ = tcp.set_nodelay(true);
    match tls_config {
        Some(config) => {
            let name = net::server_name(host)?;
            let done = net::handshake(tcp, name, &config, &[b"http/1.1"], trace).await;
            let (stream, hs) = done.map_err(|f| net::tls_failure(&f, &host_port(url), trace))?;
            let (response, conn) = exchange(stream, request, trace).await?;
            Ok(Hop {
                response,
                tls: Some(hs),
                _conn: conn,
            })
        }
        None => {
            let (response, conn) = exchange(tcp, request, trace).await?;
            Ok(Hop {
                response,
                tls: None,
                _conn: conn,
            })
        }
    }
}

fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

fn build_request(
    spec: &HttpSpec,
    headers: &HeaderMap,
    url: &Url,
    method: &Method,
    body: Option<Bytes>,
    with_credentials: bool,
) -> Result<Request<Full<Bytes>>, Failure> {
    let keyed;
    let sent = match (&spec.api_key_query, with_credentials) {
        (Some(q), true) => {
            let mut u = url.clone();
            u.query_pairs_mut().append_pair(&q.name, &q.value);
            keyed = u;
            &keyed
        }
        _ => url,
    };
    let target = &sent[url::Position::BeforePath..url::Position::AfterQuery];
    let mut headers = headers.clone();
    if !with_credentials {
        for name in [
            header::AUTHORIZATION,
            header::COOKIE,
            header::PROXY_AUTHORIZATION,
        ] {
            headers.remove(name);
        }
        // An API key header (any other sensitive header) stays home too.
        let sensitive: Vec<HeaderName> = headers
            .iter()
            .filter(|(_, v)| v.is_sensitive())
            .map(|(n, _)| n.clone())
            .collect();
        for name in sensitive {
            headers.remove(name);
        }
    }
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let host = HeaderValue::from_str(&host).map_err(|_| {
        Failure::new(
            FailureClass::Protocol,
            format!("cannot send a Host header for {url}"),
        )
    })?;
    headers.insert(header::HOST, host);
    let mut request = Request::builder()
        .method(method.clone())
        .uri(target)
        .version(Version::HTTP_11)
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| {
            Failure::new(
                FailureClass::Protocol,
                format!("cannot build a request for {url}: {e}"),
            )
        })?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Sends `request` over `io` and waits for the response head.
pub(crate) async fn exchange<S>(
    io: S,
    request: Request<Full<Bytes>>,
    trace: &mut Trace,
) -> Result<(Response<Incoming>, ConnGuard), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| hyper_failure(&e, "before the request was sent"))?;
    // The guard exists before the first await below, so a run cancelled by
    // its timeout aborts the connection task (and closes the socket) instead
    // of leaving it running.
    let mut guard = ConnGuard {
        task: tokio::spawn(async move {
            // Errors surface through the request and body futures.
            let _ = conn.await;
        }),
        sender,
    };
    trace.begin(Phase::FirstByte);
    let sent = guard.sender.send_request(request).await;
    trace.end();
    match sent {
        Ok(response) => Ok((response, guard)),
        Err(e) => Err(hyper_failure(&e, "before sending a response")),
    }
}

fn hyper_failure(e: &hyper::Error, stage: &str) -> Failure {
    let text = chain(e);
    if text.contains("received fatal alert") {
        // TLS 1.3 servers refuse a client certificate (or its absence)
        // after the client's side of the handshake is done: the alert
        // arrives with the response.
        let hint = if text.contains("CertificateRequired") {
            " (the server requires a client certificate: set `tls.client_cert` and `tls.client_key`)"
        } else {
            ""
        };
        return Failure::new(
            FailureClass::Tls,
            format!("the server ended the TLS session: {text}{hint}"),
        );
    }
    let msg = if e.is_incomplete_message() {
        format!("the server closed the connection {stage}")
    } else if e.is_parse_too_large() {
        "the response head is too large".to_string()
    } else if e.is_parse() || e.is_parse_status() {
        format!(
            "malformed HTTP response: {} (is this port speaking HTTP/1.1?)",
            chain(e)
        )
    } else {
        format!("HTTP exchange failed: {}", chain(e))
    };
    Failure::new(FailureClass::Protocol, msg)
}

/// Whether the peer closed the connection in the middle of a message.
fn closed_early(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut src = e.source();
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// An error and its sources, joined: hyper's top-level messages are terse.
pub(crate) fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// Records the final response's details, reads its body within
/// `max_body`, and checks every expectation.
async fn finish(
    spec: &HttpSpec,
    hop: Hop,
    url: &Url,
    method: &Method,
    redirects: u32,
    trace: &mut Trace,
) -> Result<Fetched, Failure> {
    let Hop {
        response,
        tls,
        _conn,
    } = hop;
    let (parts, incoming) = response.into_parts();
    let status = parts.status;
    let code = status.as_u16();
    trace.detail("status", code);
    // The target asks for a pause: the scheduler honours it (429, 503).
    if matches!(code, 429 | 503) {
        if let Some(wait) = parts
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::duration::retry_after)
        {
            trace.detail("retry_after_s", wait.as_secs_f64());
        }
    }
    trace.detail("http_version", version_name(parts.version));
    trace.detail("redirects", redirects);
    trace.detail("final_url", crate::redact::redact(url.as_str()));
    if let Some(hs) = &tls {
        trace.detail("tls_version", hs.version.clone());
        if let Some(leaf) = &hs.leaf {
            leaf.record(trace);
        }
    }

    let status_text = match status.canonical_reason() {
        Some(r) => format!("{code} {r}"),
        None => code.to_string(),
    };
    let status_ok = spec.expect.status.matches(code);
    trace.check(
        format!("status {}", spec.expect.status),
        status_ok,
        status_text.clone(),
    );
    if !status_ok && matches!(code, 401 | 403 | 407) {
        let why = if spec.credentials {
            "the server refused the credentials"
        } else {
            "the server wants credentials (set `auth`)"
        };
        return Err(Failure::new(
            FailureClass::Auth,
            format!("{} answered {status_text}: {why}", spec.target()),
        ));
    }
    for (name, matcher) in &spec.expect.headers {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let expectation = format!("header {name} {matcher}");
        if values.is_empty() {
            trace.check(expectation, false, "no such header");
        } else {
            let passed = values
                .iter()
                .any(|v| matcher.matches(&Json::String(v.clone())));
            trace.check(expectation, passed, values.join(", "));
        }
    }
    if let Some(cmp) = &spec.expect.certificate_expires_in {
        tlsutil::check_expiry(trace, cmp, tls.as_ref().and_then(|h| h.leaf.as_ref()));
    }

    let body = read_body(spec, method, status, &parts.headers, incoming, trace).await?;
    trace.detail("size", body.len());
    check_body(spec, &body, trace);
    Ok(Fetched {
        headers: parts.headers,
        body,
    })
}

async fn read_body(
    spec: &HttpSpec,
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    mut incoming: Incoming,
    trace: &mut Trace,
) -> Result<Vec<u8>, Failure> {
    let limit = spec.max_body;
    let bodiless =
        method == Method::HEAD || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if !bodiless {
        if let Some(n) = declared.filter(|n| *n > limit) {
            return Err(Failure::new(
                FailureClass::Size,
                format!(
                    "response body is {n} bytes (Content-Length), more than max_body {}; raise `max_body` if this is expected",
                    human_size(limit)
                ),
            ));
        }
    }
    trace.begin(Phase::Transfer);
    let mut buf: Vec<u8> = Vec::with_capacity(declared.map_or(0, |n| n.min(limit)) as usize);
    loop {
        match incoming.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if (buf.len() + data.len()) as u64 > limit {
                        trace.end();
                        return Err(Failure::new(
                            FailureClass::Size,
                            format!(
                                "response body exceeds max_body {}; reading stopped there (raise `max_body` if this is expected)",
                                human_size(limit)
                            ),
                        ));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                trace.end();
                let got = match declared {
                    Some(n) => format!(" (got {} of {n} bytes)", buf.len()),
                    None => format!(" (after {} bytes)", buf.len()),
                };
                let msg = if closed_early(&e) {
                    format!("the server closed the connection before the body was complete{got}")
                } else {
                    format!("reading the body failed{got}: {}", chain(&e))
                };
                return Err(Failure::new(FailureClass::Protocol, msg));
            }
        }
    }
    trace.end();
    Ok(buf)
}

fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().count() > SNIPPET_CHARS {
        s.push('…');
    }
    format!("{s:?}")
}

fn check_body(spec: &HttpSpec, body: &[u8], trace: &mut Trace) {
    let e = &spec.expect;
    if e.body_contains.is_empty() && e.body_matches.is_empty() && e.json.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(body);
    let seen = || format!("{} ({} bytes)", snippet(&text), body.len());
    for needle in &e.body_contains {
        let found = text.contains(needle.as_str());
        trace.check(
            format!("body contains {needle:?}"),
            found,
            if found { "found".to_string() } else { seen() },
        );
    }
    for re in &e.body_matches {
        let found = re.find(&text);
        let observed = match found {
            Some(m) => format!("matched {}", snippet(m.as_str())),
            None => seen(),
        };
        trace.check(
            format!("body matches /{}/", re.as_str()),
            found.is_some(),
            observed,
        );
    }
    if e.json.is_empty() {
        return;
    }
    let doc: Result<Json, String> = serde_json::from_slice(body).map_err(|err| err.to_string());
    for je in &e.json {
        let expectation = format!("json {} {}", je.text, je.matcher);
        let doc = match &doc {
            Ok(d) => d,
            Err(err) => {
                trace.check(
                    expectation,
                    false,
                    format!("a body that is not JSON ({err}): {}", snippet(&text)),
                );
                continue;
            }
        };
        let found = je.path.query(doc).all();
        if found.is_empty() {
            trace.check(expectation, false, format!("nothing at {}", je.text));
            continue;
        }
        let passed = found.iter().all(|v| je.matcher.matches(v));
        let values: Vec<String> = found.iter().map(|v| text_of(v)).collect();
        let observed = values.join(", ");
        let observed = if observed.chars().count() > SNIPPET_CHARS {
            snippet(&observed)
        } else {
            observed
        };
        trace.check(expectation, passed, observed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("1048576", Ok(1 << 20)),
            ("512KiB", Ok(512 << 10)),
            ("1MiB", Ok(1 << 20)),
            ("10MB", Ok(10_000_000)),
            ("1 GiB", Ok(1 << 30)),
        ] {
            assert_eq!(parse_size(text), want, "{text}");
        }
        for bad in ["", "0", "1XB", "2GiB", "MiB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human_size(1 << 20), "1 MiB");
        assert_eq!(human_size(10_000_000), "10 MB");
        assert_eq!(human_size(1500), "1500 bytes");
    }

    #[test]
    fn versions_are_named_as_debug_writes_them() {
        for v in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            assert_eq!(version_name(v), format!("{v:?}"));
        }
    }

    #[test]
    fn default_headers_are_shared_and_others_are_not() {
        let a = from_url("http://a.example/").unwrap();
        let b = from_url("http://b.example/").unwrap();
        assert!(Arc::ptr_eq(&a.headers, &b.headers));
        let c = from_url("http://user:pw-123456@c.example/").unwrap();
        assert!(!Arc::ptr_eq(&a.headers, &c.headers));
        assert!(c.headers.contains_key(header::AUTHORIZATION));
        assert!(!a.headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn from_url_builds_a_default_get() {
        let spec = from_url("https://user:pa%40ss@example.com/health").expect("valid");
        assert_eq!(spec.method, Method::GET);
        assert_eq!(spec.max_body, DEFAULT_MAX_BODY);
        assert!(spec.follow_redirects);
        let auth = spec
            .headers
            .get(header::AUTHORIZATION)
            .expect("credentials from the URL");
        assert!(auth.is_sensitive());
        let want = base64::engine::general_purpose::STANDARD.encode("user:pa@ss");
        assert_eq!(auth.to_str().ok(), Some(format!("Basic {want}").as_str()));
        assert_eq!(spec.target(), "https://user:***@example.com/health");
        assert!(from_url("ftp://example.com/")
            .err()
            .unwrap_or_default()
            .contains("scheme `ftp`"));
        assert!(from_url("not a url").is_err());
    }

    #[test]
    fn methods_are_validated_with_suggestions() {
        assert_eq!(parse_method("post").ok(), Some(Method::POST));
        assert!(parse_method("GTE")
            .err()
            .unwrap_or_default()
            .contains("did you mean `GET`"));
    }

    #[test]
    fn api_keys_go_only_to_the_configured_origin() {
        let mut spec = from_url("http://a.example/p?x=1").expect("valid");
        spec.api_key_query = Some(Arc::new(QueryKey {
            name: "key".into(),
            value: "v 1&2".into(),
        }));
        assert!(!format!("{spec:?}").contains("v 1&2"));
        let mut headers = (*spec.headers).clone();
        headers.insert(
            HeaderName::from_static("x-api-key"),
            sensitive("hdr-key").expect("value"),
        );
        let url = spec.url.clone();
        let req = build_request(&spec, &headers, &url, &Method::GET, None, true).expect("request");
        assert_eq!(req.uri(), "/p?x=1&key=v+1%262");
        assert!(req.headers().contains_key("x-api-key"));
        let req = build_request(&spec, &headers, &url, &Method::GET, None, false).expect("request");
        assert_eq!(req.uri(), "/p?x=1");
        assert!(!req.headers().contains_key("x-api-key"));
        assert!(req.headers().contains_key(header::USER_AGENT));
        assert_eq!(spec.target(), "http://a.example/p?x=1");
    }

    #[test]
    fn credentials_are_dropped_for_other_origins() {
        let spec = from_url("http://u:secret-pass@a.example/").expect("valid");
        let url = Url::parse("http://b.example/x?y=1").expect("url");
        let req =
            build_request(&spec, &spec.headers, &url, &Method::GET, None, false).expect("request");
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(req.uri(), "/x?y=1");
        assert_eq!(
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok()),
            Some("b.example")
        );
    }
}
