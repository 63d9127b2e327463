//! Test fixtures: real servers on free loopback ports, temporary
//! directories, and helpers to build probe specs from YAML.

#![allow(dead_code)]

pub mod dns_server;
pub mod targets;

use lookout::config::{load_str, read::Cx, ProbeSpec};

/// Compiles a configuration given as YAML text and returns its probes,
/// panicking with every diagnostic when it is invalid.
pub fn probes_from_yaml(yaml: &str) -> Vec<ProbeSpec> {
    match load_str("test.yaml", yaml, Cx::new(Box::new(|_| None))) {
        Ok((cfg, _)) => cfg.probes,
        Err(d) => panic!("test configuration is invalid:\n{d}"),
    }
}

/// The single probe of a configuration.
pub fn probe_from_yaml(yaml: &str) -> ProbeSpec {
    let mut p = probes_from_yaml(yaml);
    assert_eq!(p.len(), 1, "expected exactly one probe");
    p.remove(0)
}
