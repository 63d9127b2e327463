//! OAuth2 client credentials (RFC 6749 §4.4) for `http` probes:
//! `auth: { oauth2: { token_url, client_id, client_secret, scopes,
//! audience, auth_style } }`.
//!
//! A run asks [`token`] for an access token before its request. Tokens are
//! kept in one small process-wide cache keyed by (token URL, client id,
//! scopes, audience), so every run of a probe, and every probe with the same
//! client, shares one token until shortly before it expires (`expires_in`
//! minus 10% or 30 s, whichever is less). A 401 answered to a cached token
//! drops it ([`invalidate`]), so the next run fetches a fresh one.
//!
//! Fetching is the run's `auth` phase: its own connection (dns, connect and
//! tls happen inside it and are not added to the API request's phases), a
//! form POST, and a bounded JSON answer. Any failure is class `auth` and
//! names the token endpoint; the client secret and the tokens are
//! registered in [`crate::redact`] and never quoted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Full};
use serde_json::Value as Json;
use tokio::time::Instant;
use url::Url;

use crate::config::read::Cx;
use crate::config::yaml::Node;
use crate::probe::net::{self, Wording};
use crate::probe::tlsutil::TlsOptions;
use crate::probe::Trace;
use crate::result::{Failure, FailureClass, Phase};

/// Keys accepted in `auth.oauth2`.
pub const KEYS: &[&str] = &[
    "token_url",
    "client_id",
    "client_secret",
    "scopes",
    "audience",
    "auth_style",
];

/// The most of a token endpoint's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;
/// How long a token without `expires_in` is reused (or until a 401).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The most a token is refreshed ahead of its expiry.
const MAX_MARGIN: Duration = Duration::from_secs(30);
/// Distinct clients kept; the bound only guards against reload loops.
const CACHE_LIMIT: usize = 1024;

/// Where the client credentials go in the token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Basic` (RFC 6749 §2.3.1), the default.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// A compiled `auth.oauth2` section. `Debug` never shows the secret.
#[derive(Clone)]
pub struct OAuth2Spec {
    pub token_url: Url,
    pub client_id: String,
    client_secret: String,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub auth_style: AuthStyle,
}

impl std::fmt::Debug for OAuth2Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Spec")
            .field("token_url", &crate::redact::redact(self.token_url.as_str()))
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("auth_style", &self.auth_style)
            .finish_non_exhaustive()
    }
}

impl OAuth2Spec {
    /// The token endpoint as shown in messages.
    pub fn endpoint(&self) -> String {
        crate::redact::redact(self.token_url.as_str())
    }

    fn key(&self) -> CacheKey {
        (
            self.token_url.as_str().to_string(),
            self.client_id.clone(),
            self.scopes.clone(),
            self.audience.clone(),
        )
    }
}

/// Compiles `auth.oauth2` (`node`, at `path`); every problem is reported.
pub fn compile(cx: &mut Cx, node: &Node, path: &str) -> Option<OAuth2Spec> {
    let m = cx.map(node, path, KEYS)?;
    let token_url = m.required_parsed(cx, "token_url", crate::probe::http::parse_url);
    let client_id = m.required_str(cx, "client_id").and_then(|id| {
        if id.trim().is_empty() {
            m.error_at(cx, "client_id", "the client id is empty");
            None
        } else {
            Some(id)
        }
    });
    let client_secret = m.required_str(cx, "client_secret").and_then(|s| {
        if s.is_empty() {
            m.error_at(cx, "client_secret", "the client secret is empty");
            None
        } else {
            Some(s)
        }
    });
    if let Some(s) = &client_secret {
        if cx.register_secrets {
            crate::redact::register(s);
        }
    }
    let scopes = match m.get("scopes") {
        None => Some(Vec::new()),
        Some(_) => m.string_list(cx, "scopes").and_then(|list| {
            if let Some(bad) = list
                .iter()
                .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace()))
            {
                m.error_at(
                    cx,
                    "scopes",
                    format!("invalid scope {bad:?}: a scope is one word without spaces"),
                );
                None
            } else {
                Some(list)
            }
        }),
    };
    let audience = match m.get("audience") {
        None => Some(None),
        Some(_) => m.str(cx, "audience").map(Some),
    };
    let auth_style = m
        .parsed(cx, "auth_style", |t| match t.trim() {
            "basic" => Ok(AuthStyle::Basic),
            "body" => Ok(AuthStyle::Body),
            other => Err(format!(
                "unknown auth_style `{other}`; expected `basic` (credentials in the Authorization header) or `body` (in the form)"
            )),
        })
        .map(|s| s.unwrap_or(AuthStyle::Basic));
    Some(OAuth2Spec {
        token_url: token_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes: scopes?,
        audience: audience?,
        auth_style: auth_style?,
    })
}

// ---------------------------------------------------------------------------
// The token cache

type CacheKey = (String, String, Vec<String>, Option<String>);

struct Cached {
    token: Arc<str>,
    fresh_until: Instant,
}

fn cache() -> &'static Mutex<HashMap<CacheKey, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Cached>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a token that lives `expires_in` is reused: its lifetime minus
/// 10% of it or 30 s, whichever is less.
pub fn reuse_for(expires_in: Duration) -> Duration {
    let margin = (expires_in / 10).min(MAX_MARGIN);
    expires_in.saturating_sub(margin)
}

/// Drops the cached token of `spec`'s client if it is still `token` (the
/// API refused it), so the next run fetches a fresh one.
pub fn invalidate(spec: &OAuth2Spec, token: &str) {
    let mut map = lock(cache());
    let key = spec.key();
    if map.get(&key).is_some_and(|c| &*c.token == token) {
        map.remove(&key);
    }
}

/// An access token for `spec`: the cached one while it is fresh, else a
/// new one fetched in phase `auth`. Records `auth_token` (`cached` or
/// `fetched`) as a detail. `user_agent` is sent with the token request.
pub async fn token(
    spec: &OAuth2Spec,
    tls: &TlsOptions,
    user_agent: Option<&HeaderValue>,
    trace: &mut Trace,
) -> Result<Arc<str>, Failure> {
    let key = spec.key();
    if let Some(c) = lock(cache()).get(&key) {
        if Instant::now() < c.fresh_until {
            trace.detail("auth_token", "cached");
            return Ok(c.token.clone());
        }
    }
    // Built before the phase starts, like the API request's configuration.
    let tls_config = if spec.token_url.scheme() == "https" {
        Some(
            crate::probe::tlsutil::base_config(tls)
                .await
                .map_err(|e| Failure::new(FailureClass::Internal, e))?,
        )
    } else {
        None
    };
    trace.begin(Phase::Auth);
    let fetched = fetch(spec, tls_config.as_deref(), user_agent).await;
    trace.end();
    let (token, lifetime) = fetched.map_err(|why| {
        Failure::new(
            FailureClass::Auth,
            format!("OAuth2 token endpoint {}: {why}", spec.endpoint()),
        )
    })?;
    trace.detail("auth_token", "fetched");
    let token: Arc<str> = Arc::from(token.as_str());
    let now = Instant::now();
    let mut map = lock(cache());
    if map.len() >= CACHE_LIMIT {
        map.retain(|_, c| c.fresh_until > now);
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
    }
    let replaced = map.insert(
        key,
        Cached {
            token: token.clone(),
            fresh_until: now + reuse_for(lifetime),
        },
    );
    drop(map);
    // The token it replaces is no longer sent anywhere: stop scanning for it.
    if let Some(old) = replaced.filter(|old| old.token != token) {
        crate::redact::unregister(&old.token);
    }
    Ok(token)
}

/// The form body of the token request.
fn form(spec: &OAuth2Spec) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    f.append_pair("grant_type", "client_credentials");
    if !spec.scopes.is_empty() {
        f.append_pair("scope", &spec.scopes.join(" "));
    }
    if let Some(a) = &spec.audience {
        f.append_pair("audience", a);
    }
    if spec.auth_style == AuthStyle::Body {
        f.append_pair("client_id", &spec.client_id);
        f.append_pair("client_secret", &spec.client_secret);
    }
    f.finish()
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn build_request(
    spec: &OAuth2Spec,
    user_agent: Option<&HeaderValue>,
) -> Result<Request<Full<Bytes>>, String> {
    let url = &spec.token_url;
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let body = form(spec);
    if spec.auth_style == AuthStyle::Body {
        // The encoded secret appears in the body; keep it out of messages.
        crate::redact::register(&encode(&spec.client_secret));
    }
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(target)
        .version(Version::HTTP_11)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json");
    if let Some(ua) = user_agent {
        req = req.header(header::USER_AGENT, ua.clone());
    }
    if spec.auth_style == AuthStyle::Basic {
        let pair = format!(
            "{}:{}",
            encode(&spec.client_id),
            encode(&spec.client_secret)
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
        crate::redact::register(&b64);
        let mut v = HeaderValue::from_str(&format!("Basic {b64}"))
            .map_err(|_| "the client credentials cannot be sent in a header".to_string())?;
        v.set_sensitive(true);
        req = req.header(header::AUTHORIZATION, v);
    }
    req.body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the token request: {e}"))
}

/// One token request over a fresh connection: the token and how long it
/// lives, or why there is none (in words, without secrets).
async fn fetch(
    spec: &OAuth2Spec,
    tls_config: Option<&crate::probe::tlsutil::BaseConfig>,
    user_agent: Option<&HeaderValue>,
) -> Result<(String, Duration), String> {
    let url = &spec.token_url;
    let request = build_request(spec, user_agent)?;
    // The steps inside the fetch are timed on a scratch trace: the probe's
    // own phases belong to the API request; the fetch is its `auth` phase.
    let mut scratch = Trace::new();
    let https = url.scheme() == "https";
    let port = url
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = net::resolve(bare, port, Wording::Http, &mut scratch)
        .await
        .map_err(|f| f.message)?;
    let (tcp, _) = net::connect(bare, &addrs, Wording::Http, &mut scratch)
        .await
        .map_err(|f| f.message)?;
    let _ = tcp.set_nodelay(true);
    let (response, _conn) = match tls_config {
        Some(config) => {
            let name = net::server_name(host).map_err(|f| f.message)?;
            let (stream, _) = net::handshake(tcp, name, config, &[b"http/1.1"], &mut scratch)
                .await
                .map_err(|f| format!("TLS: {}", f.message))?;
            crate::probe::http::exchange(stream, request, &mut scratch)
                .await
                .map_err(|f| f.message)?
        }
        None => crate::probe::http::exchange(tcp, request, &mut scratch)
            .await
            .map_err(|f| f.message)?,
    };
    let status = response.status();
    let mut incoming = response.into_body();
    let mut body: Vec<u8> = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer failed: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if body.len() + data.len() > MAX_ANSWER {
                return Err(format!(
                    "the answer is larger than {} KiB",
                    MAX_ANSWER / 1024
                ));
            }
            body.extend_from_slice(&data);
        }
    }
    let doc: Option<Json> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let code = match status.canonical_reason() {
            Some(r) => format!("{} {r}", status.as_u16()),
            None => status.as_u16().to_string(),
        };
        // The OAuth2 error code (`invalid_client`, ...) is safe to show;
        // the description may quote anything, so it is left out.
        let error = doc
            .as_ref()
            .and_then(|d| d.get("error"))
            .and_then(Json::as_str)
            .filter(|e| e.len() <= 64 && e.chars().all(|c| c.is_ascii_graphic()))
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!("answered {code}{error}"));
    }
    let Some(doc) = doc else {
        return Err(format!(
            "answered {} with a body that is not JSON ({} bytes)",
            status.as_u16(),
            body.len()
        ));
    };
    parse_answer(&doc)
}

/// The token and its lifetime from a token endpoint's JSON answer.
pub fn parse_answer(doc: &Json) -> Result<(String, Duration), String> {
    let Some(obj) = doc.as_object() else {
        return Err("the answer is not a JSON object".to_string());
    };
    let token = match obj.get("access_token") {
        Some(Json::String(t)) if !t.is_empty() => t.clone(),
        Some(Json::String(_)) => return Err("the answer's access_token is empty".to_string()),
        Some(_) => return Err("the answer's access_token is not a string".to_string()),
        None => return Err("the answer has no access_token".to_string()),
    };
    // From here on, nothing may quote the token.
    crate::redact::register(&token);
    if token.chars().any(|c| !c.is_ascii_graphic()) {
        return Err("the answer's access_token cannot be sent in a header".to_string());
    }
    match obj.get("token_type") {
        None => {}
        Some(Json::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Json::String(t)) if t.len() <= 32 => {
            return Err(format!(
                "token_type `{t}` is not supported (only bearer tokens are)"
            ))
        }
        Some(_) => return Err("the answer's token_type is not a bearer type".to_string()),
    }
    let lifetime = match obj.get("expires_in") {
        None | Some(Json::Null) => DEFAULT_LIFETIME,
        Some(Json::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(1e9)),
            _ => {
                return Err(format!(
                    "the answer's expires_in `{n}` is not a number of seconds"
                ))
            }
        },
        Some(Json::String(s)) => match s.trim().parse::<u64>() {
            Ok(n) => Duration::from_secs(n.min(1_000_000_000)),
            Err(_) => return Err("the answer's expires_in is not a number of seconds".to_string()),
        },
        Some(_) => return Err("the answer's expires_in is not a number of seconds".to_string()),
    };
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reused_until_shortly_before_they_expire() {
        assert_eq!(
            reuse_for(Duration::from_secs(3600)),
            Duration::from_secs(3570)
        );
        assert_eq!(reuse_for(Duration::from_secs(100)), Duration::from_secs(90));
        assert_eq!(
            reuse_for(Duration::from_secs(2)),
            Duration::from_millis(1800)
        );
        assert_eq!(reuse_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn answers_are_checked() {
        let ok = serde_json::json!({"access_token": "tok-1234", "token_type": "Bearer", "expires_in": 60});
        assert_eq!(
            parse_answer(&ok),
            Ok(("tok-1234".to_string(), Duration::from_secs(60)))
        );
        let no_expiry = serde_json::json!({"access_token": "tok-5678"});
        assert_eq!(parse_answer(&no_expiry).map(|a| a.1), Ok(DEFAULT_LIFETIME));
        let as_text = serde_json::json!({"access_token": "tok-5678", "expires_in": "30"});
        assert_eq!(
            parse_answer(&as_text).map(|a| a.1),
            Ok(Duration::from_secs(30))
        );
        for (bad, words) in [
            (
                serde_json::json!({"token_type": "bearer"}),
                "no access_token",
            ),
            (serde_json::json!({"access_token": ""}), "empty"),
            (serde_json::json!({"access_token": 5}), "not a string"),
            (
                serde_json::json!({"access_token": "tok-secret-9", "token_type": "mac"}),
                "`mac` is not supported",
            ),
            (
                serde_json::json!({"access_token": "tok-secret-9", "expires_in": "soon"}),
                "expires_in",
            ),
            (serde_json::json!([1]), "not a JSON object"),
        ] {
            let e = parse_answer(&bad).err().unwrap_or_default();
            assert!(e.contains(words), "{bad}: {e}");
            assert!(!e.contains("tok-secret-9"), "{e}");
        }
    }

    #[test]
    fn the_form_carries_the_grant_and_only_body_credentials() {
        let mut spec = OAuth2Spec {
            token_url: Url::parse("https://idp.example/oauth/token").expect("url"),
            client_id: "lookout".into(),
            client_secret: "s3cret value&x".into(),
            scopes: vec!["read".into(), "write".into()],
            audience: Some("https://api.example".into()),
            auth_style: AuthStyle::Basic,
        };
        assert_eq!(
            form(&spec),
            "grant_type=client_credentials&scope=read+write&audience=https%3A%2F%2Fapi.example"
        );
        assert!(!format!("{spec:?}").contains("s3cret"));
        spec.auth_style = AuthStyle::Body;
        assert!(form(&spec).ends_with("&client_id=lookout&client_secret=s3cret+value%26x"));
    }
}
