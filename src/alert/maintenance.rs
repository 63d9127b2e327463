//! Maintenance windows: configuration and evaluation. (Being written: issue 4.)

use crate::config::read::Cx;
use crate::config::yaml::Node;

/// One configured maintenance window.
#[derive(Debug, Clone)]
pub struct MaintenanceWindow {}

/// Compiles the top-level `maintenance:` list, reporting problems into `cx`.
pub fn compile(cx: &mut Cx, node: &Node) -> Vec<MaintenanceWindow> {
    cx.error(&node.pos, "maintenance", "maintenance windows are not implemented yet");
    Vec::new()
}
