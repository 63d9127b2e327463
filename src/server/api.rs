//! The JSON API under `/api/v1`: probes, their results and statistics over
//! a window, incidents, and the OpenAPI document describing them.

use axum::Router;

use super::LiveState;

/// The `/api/v1` routes (the router in `mod.rs` adds auth).
pub fn routes() -> Router<LiveState> {
    Router::new()
}
