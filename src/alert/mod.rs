//! Alerting: per-probe state (pending, up, down), incidents, dependency
//! causes, maintenance windows and reminders. (Being written: issue 4.)

pub mod maintenance;
