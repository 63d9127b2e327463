//! The HTTP server (being written: issue 2).
