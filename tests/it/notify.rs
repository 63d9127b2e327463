//! Integration tests: notifiers.
