//! Lookout's one integration-test crate. Each module tests one area against
//! real servers started by `harness` (in-process HTTP/TCP/TLS targets,
//! throwaway DNS servers, temporary directories and databases).

#![allow(clippy::unwrap_used)]

mod harness;

mod alert;
mod anomaly;
mod api;
mod auth;
mod browser;
mod changes;
mod cli;
mod cluster;
mod config;
mod degraded;
mod deploy;
mod dns;
mod faults;
mod flow;
mod http;
mod http_auth;
mod metrics;
mod mysql;
mod notify;
mod outbox;
mod pages;
mod postgres;
mod prometheus;
mod redis;
mod reload;
mod scheduler;
mod statuspage;
mod storage_faults;
mod store;
mod store_suite;
mod tcp;
mod tls;
mod tracing;
