//! Commands (being written: issue 2).
