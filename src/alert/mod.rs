//! Alerting: per-probe state (pending, up, down), incidents, dependency
//! causes, maintenance windows and reminders.
//!
//! [`state`] is the pure per-probe state machine; [`engine`] runs one for
//! every probe, applies dependencies, maintenance windows and `alert`
//! settings, and turns transitions into [`crate::notify::Notice`]s, one per
//! notifier. [`quorum`] turns the results of several locations into the
//! outcome a probe's state machine sees (`alert.locations`). Everything
//! takes the current time as an argument, so the logic is tested without
//! sleeping.

pub mod board;
pub mod changes;
pub mod engine;
pub mod leader;
pub mod maintenance;
pub mod outbox;
pub mod quorum;
pub mod runner;
pub mod state;
pub mod watch;

pub use board::{AlertBoard, AlertView};
pub use engine::{Engine, Outgoing};
pub use state::{Incident, ProbeState, Status};
