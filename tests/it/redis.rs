//! Integration tests: redis.
