//! The server's read connection to the history database.
//!
//! [`History`] owns one [`Store`] of its own (SQLite in WAL mode lets it
//! read while the recorder writes) behind a mutex, and runs every query on
//! a blocking thread so no request handler blocks the runtime.

use std::sync::{Arc, Mutex, PoisonError};

use crate::store::{Store, StoreError};

/// Cheaply cloned handle on the server's read connection.
#[derive(Clone)]
pub struct History {
    store: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

/// Why a history query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("history query task failed: {0}")]
    Task(String),
}

impl History {
    pub fn new(store: Store) -> History {
        History {
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs `query` on the read connection on a blocking thread.
    pub async fn read<R, F>(&self, query: F) -> Result<R, HistoryError>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let guard = store.lock().unwrap_or_else(PoisonError::into_inner);
            query(&guard)
        })
        .await
        .map_err(|e| HistoryError::Task(e.to_string()))?
        .map_err(HistoryError::Store)
    }
}
