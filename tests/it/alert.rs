//! Integration tests: alerting.
