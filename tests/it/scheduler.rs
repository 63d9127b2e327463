//! Integration tests: scheduler.
