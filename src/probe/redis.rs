//! The `redis` probe kind. (Being written: see issue 3.)

use crate::config::read::{Cx, Map};
use crate::config::yaml::Node;
use crate::probe::Trace;
use crate::result::{Failure, FailureClass};

/// Keys accepted in the `redis:` section.
pub const KEYS: &[&str] = &[];
/// Keys accepted in `expect:` for this kind, besides `latency`.
pub const EXPECT_KEYS: &[&str] = &[];

#[derive(Debug, Clone)]
pub struct RedisSpec {}

impl RedisSpec {
    pub fn target(&self) -> String {
        String::new()
    }
}

pub fn compile(cx: &mut Cx, node: &Node, path: &str, _expect: Option<&Map<'_>>) -> Option<RedisSpec> {
    cx.map(node, path, KEYS)?;
    Some(RedisSpec {})
}

pub async fn run(_spec: &RedisSpec, _trace: &mut Trace) -> Result<(), Failure> {
    Err(Failure::new(FailureClass::Internal, "not implemented yet"))
}
