//! Integration tests: mysql.
