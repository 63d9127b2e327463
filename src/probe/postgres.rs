//! The `postgres` probe kind. (Being written: see issue 3.)

use crate::config::read::{Cx, Map};
use crate::config::yaml::Node;
use crate::probe::Trace;
use crate::result::{Failure, FailureClass};

/// Keys accepted in the `postgres:` section.
pub const KEYS: &[&str] = &[];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &[];

#[derive(Debug, Clone)]
pub struct PostgresSpec {}

impl PostgresSpec {
    pub fn target(&self) -> String {
        String::new()
    }
}

pub fn compile(cx: &mut Cx, node: &Node, path: &str, _expect: Option<&Map<'_>>) -> Option<PostgresSpec> {
    cx.map(node, path, KEYS)?;
    Some(PostgresSpec {})
}

pub async fn run(_spec: &PostgresSpec, _trace: &mut Trace) -> Result<(), Failure> {
    Err(Failure::new(FailureClass::Internal, "not implemented yet"))
}
