//! Status badges (`/badge/{name}.svg`): status, uptime or latency of one
//! probe as a small SVG for READMEs.

use axum::Router;

use super::LiveState;

/// `/badge/{name}.svg` (public).
pub fn routes() -> Router<LiveState> {
    Router::new()
}
