//! History storage (being written: issue 2).
