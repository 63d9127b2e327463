//! The scheduler (being written: issue 2).
