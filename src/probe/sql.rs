//! What the SQL kinds (`postgres` and `mysql`) share about the value a
//! query returns: the `value` expectation on the first column of the first
//! row, and how that value is shown in details and checks (`NULL` for
//! null, text as it is, at most [`VALUE_SHOWN`] characters).

use serde_json::Value as Json;

use crate::config::read::{Cx, Map};
use crate::expect::{shorten, text_of, ValueMatcher};
use crate::probe::Trace;

/// How much of a value is kept in details and messages, in characters.
pub const VALUE_SHOWN: usize = 200;

/// Reads `value` from `expect:`: `Some(None)` when absent, `None` when
/// invalid (reported). `expected` says what a valid one is, for the error.
pub fn compile_value(cx: &mut Cx, em: &Map<'_>, expected: &str) -> Option<Option<ValueMatcher>> {
    let Some(node) = em.get("value") else {
        return Some(None);
    };
    let path = em.path("value");
    match cx
        .scalar_json(node, &path, expected)
        .map(|j| ValueMatcher::from_json(&j))?
    {
        Ok(m) => Some(Some(m)),
        Err(e) => {
            cx.error(&node.pos, &path, e);
            None
        }
    }
}

/// A value as shown in details and checks: `NULL` for null, text as it is,
/// shortened to [`VALUE_SHOWN`] characters.
pub fn shown(v: &Json) -> String {
    shorten(
        &match v {
            Json::Null => "NULL".to_string(),
            other => text_of(other),
        },
        VALUE_SHOWN,
    )
}

/// Checks the `value` expectation against the first value, or against the
/// reason there is none (such as "no rows").
pub fn check_value(trace: &mut Trace, m: &ValueMatcher, first: Result<&Json, &str>) {
    let (passed, observed) = match first {
        Ok(v) => (m.matches(v), shown(v)),
        Err(why) => (false, why.to_string()),
    };
    trace.check(format!("value {m}"), passed, observed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_shortened_with_null_as_null() {
        assert_eq!(shown(&Json::Null), "NULL");
        assert_eq!(shown(&Json::from("ok")), "ok");
        assert_eq!(shown(&Json::from(1.5)), "1.5");
        let long = shown(&Json::from("x".repeat(300)));
        assert_eq!(long.chars().count(), VALUE_SHOWN + 1);
        assert!(long.ends_with('…'));
    }
}
