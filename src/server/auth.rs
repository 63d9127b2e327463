//! Access control for the HTTP surface, as an axum middleware.
//!
//! `server.token` guards the API (`/api/v1/...`) and `/metrics`: requests
//! must send `Authorization: Bearer <token>`. `server.basic_auth` guards
//! the pages (`Authorization: Basic ...`, with a `WWW-Authenticate`
//! challenge so browsers ask for it) and is also accepted by the API, so
//! the status page's script, which the browser sends the credentials with,
//! can call it; with only `basic_auth` set the API needs it too. With
//! neither set everything is open. Badges, `/healthz` and `/readyz` are
//! never wrapped. Presented credentials are compared in constant time (as
//! SHA-256 digests, so not even their length shows) and never logged or
//! echoed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::LiveState;
use crate::config::Server;

/// Which credentials an area of the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/api/v1/...` and `/metrics`: the bearer token, or basic auth.
    Api,
    /// The HTML pages: basic auth.
    Pages,
}

/// Wraps `routes` in the check `area` needs under `state`'s settings;
/// returns them unchanged when nothing is configured for the area.
pub fn protect(routes: Router<LiveState>, area: Area, state: &LiveState) -> Router<LiveState> {
    match Guard::new(area, &state.settings) {
        Some(guard) => routes.route_layer(middleware::from_fn_with_state(Arc::new(guard), check)),
        None => routes,
    }
}

/// A SHA-256 digest: what is kept of a secret and compared.
type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// Equality that takes the same time wherever the digests differ.
fn same(a: &Digest, b: &Digest) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What one area accepts, as digests of the configured credentials.
struct Guard {
    area: Area,
    token: Option<Digest>,
    /// Digests of the user name and the password.
    basic: Option<(Digest, Digest)>,
}

impl Guard {
    /// `None` when the area is open under `settings`.
    fn new(area: Area, settings: &Server) -> Option<Guard> {
        let token = match area {
            Area::Api => settings.token.as_deref().map(|t| digest(t.as_bytes())),
            Area::Pages => None,
        };
        let basic = settings
            .basic_auth
            .as_ref()
            .map(|b| (digest(b.user.as_bytes()), digest(b.password.as_bytes())));
        (token.is_some() || basic.is_some()).then_some(Guard { area, token, basic })
    }

    /// Whether `headers` carry credentials this area accepts.
    fn admits(&self, headers: &HeaderMap) -> Verdict {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Verdict::Missing;
        };
        let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.trim().split_once(' '))
        else {
            return Verdict::Wrong;
        };
        let rest = rest.trim();
        let ok = if scheme.eq_ignore_ascii_case("bearer") {
            self.token
                .as_ref()
                .is_some_and(|t| same(t, &digest(rest.as_bytes())))
        } else if scheme.eq_ignore_ascii_case("basic") {
            self.basic.as_ref().is_some_and(|b| basic_matches(b, rest))
        } else {
            false
        };
        if ok {
            Verdict::Ok
        } else {
            Verdict::Wrong
        }
    }

    /// The 401 answer: JSON for the API, text for the pages, with a
    /// challenge for each scheme the area accepts.
    fn refuse(&self, verdict: Verdict) -> Response {
        let mut res = match self.area {
            Area::Api => {
                let error = match (verdict, self.token.is_some()) {
                    (Verdict::Missing, true) => {
                        "authentication required: send the API token as \
                         `Authorization: Bearer <token>`"
                    }
                    (Verdict::Missing, false) => {
                        "authentication required: send the user and password \
                         (basic authentication)"
                    }
                    _ => "invalid credentials",
                };
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({ "error": error })),
                )
                    .into_response()
            }
            Area::Pages => (
                StatusCode::UNAUTHORIZED,
                "authentication required: sign in with the user and password set in \
                 server.basic_auth\n",
            )
                .into_response(),
        };
        let h = res.headers_mut();
        if self.token.is_some() {
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"Lookout\""),
            );
        }
        if self.basic.is_some() {
            h.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Lookout\", charset=\"UTF-8\""),
            );
        }
        res
    }
}

/// How a request's credentials fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Missing,
    Wrong,
}

/// Whether `encoded` (base64 of `user:password`) matches; both parts are
/// always compared.
fn basic_matches((user, password): &(Digest, Digest), encoded: &str) -> bool {
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    let (u, p) = (&decoded[..colon], &decoded[colon + 1..]);
    same(user, &digest(u)) & same(password, &digest(p))
}

async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match guard.admits(req.headers()) {
        Verdict::Ok => next.run(req).await,
        verdict => {
            tracing::debug!(path = %req.uri().path(), ?verdict, "request refused: credentials");
            guard.refuse(verdict)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BasicAuth;

    fn guard(area: Area, token: Option<&str>, basic: Option<(&str, &str)>) -> Option<Guard> {
        let settings = Server {
            token: token.map(str::to_string),
            basic_auth: basic.map(|(u, p)| BasicAuth {
                user: u.into(),
                password: p.into(),
            }),
            ..Server::default()
        };
        Guard::new(area, &settings)
    }

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn basic(user_pass: &str) -> HeaderMap {
        with(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        ))
    }

    #[test]
    fn open_without_settings_and_pages_ignore_the_token() {
        assert!(guard(Area::Api, None, None).is_none());
        assert!(guard(Area::Pages, None, None).is_none());
        assert!(guard(Area::Pages, Some("tok-123"), None).is_none());
    }

    #[test]
    fn api_takes_the_token_or_basic_credentials() {
        let g = guard(Area::Api, Some("tok-123"), Some(("ops", "pa:ss"))).unwrap();
        assert_eq!(g.admits(&HeaderMap::new()), Verdict::Missing);
        assert_eq!(g.admits(&with("Bearer tok-123")), Verdict::Ok);
        assert_eq!(g.admits(&with("bearer  tok-123 ")), Verdict::Ok);
        assert_eq!(g.admits(&with("Bearer tok-12")), Verdict::Wrong);
        assert_eq!(g.admits(&with("Bearer")), Verdict::Wrong);
        assert_eq!(g.admits(&with("Token tok-123")), Verdict::Wrong);
        // The password may contain a colon: the user ends at the first.
        assert_eq!(g.admits(&basic("ops:pa:ss")), Verdict::Ok);
        assert_eq!(g.admits(&basic("ops:pa:s")), Verdict::Wrong);
        assert_eq!(g.admits(&basic("opx:pa:ss")), Verdict::Wrong);
        assert_eq!(g.admits(&with("Basic !!!")), Verdict::Wrong);
        // Without basic_auth, basic credentials are not accepted.
        let g = guard(Area::Api, Some("tok-123"), None).unwrap();
        assert_eq!(g.admits(&basic("ops:tok-123")), Verdict::Wrong);
        // Without a token, a bearer token is not accepted.
        let g = guard(Area::Api, None, Some(("ops", "pass"))).unwrap();
        assert_eq!(g.admits(&with("Bearer pass")), Verdict::Wrong);
        assert_eq!(g.admits(&basic("ops:pass")), Verdict::Ok);
    }

    #[test]
    fn refusals_challenge_and_never_echo() {
        let g = guard(Area::Pages, Some("tok-123"), Some(("ops", "pass"))).unwrap();
        let res = g.refuse(Verdict::Missing);
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let challenges: Vec<_> = res
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .collect();
        assert_eq!(challenges, ["Basic realm=\"Lookout\", charset=\"UTF-8\""]);
        let g = guard(Area::Api, Some("tok-123"), None).unwrap();
        let res = g.refuse(Verdict::Wrong);
        let challenges: Vec<_> = res
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .collect();
        assert_eq!(challenges, ["Bearer realm=\"Lookout\""]);
    }

    #[test]
    fn digests_compare() {
        assert!(same(&digest(b"a"), &digest(b"a")));
        assert!(!same(&digest(b"a"), &digest(b"b")));
    }
}
