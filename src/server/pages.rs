//! The HTML pages: the status page at `/` and a page per probe at
//! `/probes/{name}`, rendered on the server (they work without JavaScript),
//! with their assets embedded in the binary.

use axum::Router;

use super::LiveState;

/// `/`, `/probes/{name}` and `/assets/...`.
pub fn routes() -> Router<LiveState> {
    Router::new()
}
