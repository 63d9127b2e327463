//! The slot in which a dependency kind (`postgres`, `redis`, `mysql`)
//! keeps its connection between runs with `reuse_connection: true`.
//!
//! The slot lives in the spec, so every clone of a spec shares it. A run
//! holds the lock for its whole length (a probe never runs twice at once,
//! so the lock is never contended) and takes the connection out while it
//! uses it: a run dropped by its timeout drops the connection with it, and
//! the next run connects again. When a connection goes back is each kind's
//! decision.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

/// A connection kept between runs, if any; see the module documentation.
pub struct Kept<T>(Arc<Mutex<Option<T>>>);

impl<T> Kept<T> {
    /// Waits for the slot (cancel-safe) and holds it until the guard drops.
    pub async fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.0.lock().await
    }
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept(Arc::new(Mutex::new(None)))
    }
}

impl<T> Clone for Kept<T> {
    fn clone(&self) -> Self {
        Kept(self.0.clone())
    }
}

/// Shows only the slot's state, never the connection.
impl<T> fmt::Debug for Kept<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.0.try_lock() {
            Ok(g) if g.is_some() => "connected",
            Ok(_) => "none",
            Err(_) => "in use",
        };
        write!(f, "Kept({state})")
    }
}
