//! Lookout: a synthetic health-check and dependency prober.
//!
//! The library holds everything the `lookout` binary does; `main.rs` only
//! parses arguments and turns typed errors into messages and exit codes.
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod alert;
pub mod cli;
pub mod config;
pub mod detect;
pub mod duration;
pub mod expect;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod otlp;
pub mod probe;
pub mod redact;
pub mod result;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tracectx;
