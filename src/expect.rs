//! Expectation matchers shared by every probe kind: comparisons such as
//! `< 800ms` or `>= 1`, value matchers for JSONPath results and query values
//! (`UP`, `"> 0"`, `"=~ ^ok"`), HTTP status matchers (`200`, `[200, 204]`,
//! `"2xx"`), and how an observed value is shown beside them ([`text_of`],
//! [`shorten`]).
//!
//! Parsing returns a message in words; the configuration compiler attaches
//! the file, line and key. Evaluation is pure and never panics.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use regex::Regex;
use serde_json::Value as Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// Splits a leading operator (`<=`, `>=`, `==`, `!=`, `<`, `>`) off
    /// `text`, ignoring white space around it: `">= 1.2"` gives
    /// `(Op::Ge, "1.2")`. `None` when `text` does not start with one.
    pub fn split(text: &str) -> Option<(Op, &str)> {
        let t = text.trim_start();
        for (p, op) in [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if let Some(rest) = t.strip_prefix(p) {
                return Some((op, rest.trim()));
            }
        }
        None
    }

    pub fn holds<T: PartialOrd>(self, lhs: T, rhs: T) -> bool {
        match self {
            Op::Lt => lhs < rhs,
            Op::Le => lhs <= rhs,
            Op::Gt => lhs > rhs,
            Op::Ge => lhs >= rhs,
            Op::Eq => lhs == rhs,
            Op::Ne => lhs != rhs,
        }
    }
}

/// A comparison against a fixed duration, e.g. `latency: < 800ms` or
/// `certificate_expires_in: "> 14d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationCmp {
    pub op: Op,
    pub rhs: Duration,
}

impl DurationCmp {
    pub fn parse(text: &str) -> Result<DurationCmp, String> {
        let (op, rest) = Op::split(text).ok_or_else(|| {
            format!("expected a comparison such as `< 800ms` or `> 14d`, found `{text}`")
        })?;
        let rhs = crate::duration::parse(rest)?;
        Ok(DurationCmp { op, rhs })
    }

    pub fn holds(&self, d: Duration) -> bool {
        self.op.holds(d, self.rhs)
    }
}

impl fmt::Display for DurationCmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.op.as_str(),
            crate::duration::human(self.rhs)
        )
    }
}

/// A comparison against a number, e.g. `rows: "> 0"` or `answer_count: ">= 2"`.
/// A bare number means equality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberCmp {
    pub op: Op,
    pub rhs: f64,
}

impl NumberCmp {
    pub fn parse(text: &str) -> Result<NumberCmp, String> {
        let (op, rest) = Op::split(text).unwrap_or((Op::Eq, text.trim()));
        let rhs = rest.parse::<f64>().map_err(|_| {
            format!("expected a number or a comparison such as `> 0`, found `{text}`")
        })?;
        if !rhs.is_finite() {
            return Err(format!("`{text}` is not a finite number"));
        }
        Ok(NumberCmp { op, rhs })
    }

    pub fn holds(&self, v: f64) -> bool {
        self.op.holds(v, self.rhs)
    }
}

impl fmt::Display for NumberCmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.rhs)
    }
}

/// What a value (a JSONPath match, a query's first column, a reply) must be.
#[derive(Debug, Clone)]
pub enum ValueMatcher {
    /// Equal to this value; numbers compare numerically and a string that
    /// holds a number equals that number.
    Equals(Json),
    NotEquals(Json),
    /// A numeric comparison; a string holding a number is compared as one.
    Compare(NumberCmp),
    /// `=~ regex`: the value's text matches.
    Matches(Arc<Regex>),
    /// `!~ regex`: the value's text does not match.
    NotMatches(Arc<Regex>),
}

impl ValueMatcher {
    /// Builds a matcher from a YAML scalar already read as JSON: non-string
    /// values mean equality; strings may carry an operator.
    pub fn from_json(v: &Json) -> Result<ValueMatcher, String> {
        let Json::String(text) = v else {
            return Ok(ValueMatcher::Equals(v.clone()));
        };
        let t = text.trim_start();
        if let Some(re) = t.strip_prefix("=~") {
            return regex(re.trim()).map(ValueMatcher::Matches);
        }
        if let Some(re) = t.strip_prefix("!~") {
            return regex(re.trim()).map(ValueMatcher::NotMatches);
        }
        match Op::split(t) {
            Some((Op::Eq, rest)) => Ok(ValueMatcher::Equals(scalar_json(rest))),
            Some((Op::Ne, rest)) => Ok(ValueMatcher::NotEquals(scalar_json(rest))),
            Some((op, rest)) => {
                let rhs = rest.parse::<f64>().map_err(|_| {
                    format!(
                        "`{text}`: `{}` compares numbers, but `{rest}` is not a number",
                        op.as_str()
                    )
                })?;
                Ok(ValueMatcher::Compare(NumberCmp { op, rhs }))
            }
            None => Ok(ValueMatcher::Equals(Json::String(text.clone()))),
        }
    }

    pub fn matches(&self, v: &Json) -> bool {
        match self {
            ValueMatcher::Equals(want) => json_eq(v, want),
            ValueMatcher::NotEquals(want) => !json_eq(v, want),
            ValueMatcher::Compare(cmp) => as_number(v).is_some_and(|n| cmp.holds(n)),
            ValueMatcher::Matches(re) => re.is_match(&text_of(v)),
            ValueMatcher::NotMatches(re) => !re.is_match(&text_of(v)),
        }
    }
}

impl fmt::Display for ValueMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueMatcher::Equals(v) => write!(f, "== {}", text_of(v)),
            ValueMatcher::NotEquals(v) => write!(f, "!= {}", text_of(v)),
            ValueMatcher::Compare(c) => write!(f, "{c}"),
            ValueMatcher::Matches(re) => write!(f, "=~ {}", re.as_str()),
            ValueMatcher::NotMatches(re) => write!(f, "!~ {}", re.as_str()),
        }
    }
}

/// Reads `200` as a number, `true` as a bool, anything else as a string.
fn scalar_json(text: &str) -> Json {
    if let Ok(i) = text.parse::<i64>() {
        return Json::from(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        if let Some(n) = serde_json::Number::from_f64(f) {
            return Json::Number(n);
        }
    }
    match text {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        "null" => Json::Null,
        _ => Json::String(text.to_string()),
    }
}

fn as_number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        Json::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn json_eq(v: &Json, want: &Json) -> bool {
    match (v, want) {
        (Json::Number(_), Json::Number(_))
        | (Json::String(_), Json::Number(_))
        | (Json::Number(_), Json::String(_)) => match (as_number(v), as_number(want)) {
            (Some(a), Some(b)) => a == b,
            _ => text_of(v) == text_of(want),
        },
        (Json::String(a), Json::Bool(b)) | (Json::Bool(b), Json::String(a)) => {
            a.eq_ignore_ascii_case(if *b { "true" } else { "false" })
                || a == if *b { "t" } else { "f" }
        }
        _ => v == want,
    }
}

/// The value as text: strings without quotes, everything else as JSON.
pub fn text_of(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `text` cut to its first `chars` characters, ending in `…` when cut: how
/// long observed values are quoted in details and checks.
pub fn shorten(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// An HTTP status expectation: codes and classes such as `2xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    pub items: Vec<StatusItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Code(u16),
    /// `2xx`: the hundreds digit.
    Class(u16),
}

impl StatusMatcher {
    /// Parses one item: `200` or `2xx`.
    pub fn parse_item(text: &str) -> Result<StatusItem, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        if lower.len() == 3 && lower.ends_with("xx") {
            if let Some(d) = lower.chars().next().and_then(|c| c.to_digit(10)) {
                if (1..=5).contains(&d) {
                    return Ok(StatusItem::Class(d as u16));
                }
            }
        }
        match t.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(StatusItem::Code(c)),
            _ => Err(format!(
                "invalid status `{t}`: expected a code from 100 to 599 or a class such as 2xx"
            )),
        }
    }

    pub fn matches(&self, code: u16) -> bool {
        self.items.iter().any(|i| match i {
            StatusItem::Code(c) => *c == code,
            StatusItem::Class(d) => code / 100 == *d,
        })
    }
}

impl Default for StatusMatcher {
    /// Without an expectation, any 2xx or 3xx final status is a success.
    fn default() -> Self {
        StatusMatcher {
            items: vec![StatusItem::Class(2), StatusItem::Class(3)],
        }
    }
}

impl fmt::Display for StatusMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .items
            .iter()
            .map(|i| match i {
                StatusItem::Code(c) => c.to_string(),
                StatusItem::Class(d) => format!("{d}xx"),
            })
            .collect();
        f.write_str(&parts.join(" or "))
    }
}

/// A compiled regex with the message style the rest of the crate uses,
/// shared by every probe that writes the same pattern.
///
/// A `Regex` is large (compiled program plus a pool of per-thread search
/// caches of several KB each), and a fleet of probes typically repeats a
/// handful of patterns (`body_matches: ok` on ten thousand endpoints), so
/// equal patterns are compiled once and handed out as one `Arc`: one
/// program, one cache per worker thread. Patterns no probe holds any more
/// are forgotten as new ones arrive, so reloads do not accumulate them.
pub fn regex(text: &str) -> Result<Arc<Regex>, String> {
    static SHARED: LazyLock<Mutex<HashMap<String, Weak<Regex>>>> = LazyLock::new(Default::default);
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(re) = shared.get(text).and_then(Weak::upgrade) {
        return Ok(re);
    }
    let re = Arc::new(
        Regex::new(text)
            .map_err(|e| format!("invalid regex `{text}`: {}", first_line(&e.to_string())))?,
    );
    if shared.len() >= 64 && shared.len().is_power_of_two() {
        shared.retain(|_, w| w.strong_count() > 0);
    }
    shared.insert(text.to_string(), Arc::downgrade(&re));
    Ok(re)
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(s)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_patterns_share_one_compiled_regex() {
        let (a, b) = (regex("^sh[a]red$"), regex("^sh[a]red$"));
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("valid pattern refused")
        };
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.is_match("shared"));
        let other = regex("^other$").unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&a, &other));
        assert!(regex("(").is_err_and(|e| e.contains("invalid regex `(`")));
    }

    #[test]
    fn duration_comparisons() {
        let c = DurationCmp::parse("< 800ms").expect("parses");
        assert!(c.holds(Duration::from_millis(799)));
        assert!(!c.holds(Duration::from_millis(800)));
        assert!(DurationCmp::parse("800ms").is_err());
        assert!(DurationCmp::parse("> 14x").is_err());
    }

    #[test]
    fn value_matchers() {
        let table: &[(Json, Json, bool)] = &[
            (json!("UP"), json!("UP"), true),
            (json!("UP"), json!("DOWN"), false),
            (json!("> 0"), json!(3), true),
            (json!("> 0"), json!("3"), true),
            (json!("< 180"), json!(180), false),
            (json!(1), json!("1"), true),
            (json!(1), json!(1.0), true),
            (json!("=~ ^ok"), json!("okay"), true),
            (json!("!~ ^ok"), json!("okay"), false),
            (json!("!= 5"), json!(4), true),
            (json!(true), json!(true), true),
            (json!("> 0"), json!(null), false),
        ];
        for (spec, value, want) in table {
            let m = ValueMatcher::from_json(spec).expect("valid matcher");
            assert_eq!(m.matches(value), *want, "{spec} vs {value}");
        }
        assert!(ValueMatcher::from_json(&json!("> abc")).is_err());
        assert!(ValueMatcher::from_json(&json!("=~ (")).is_err());
    }

    #[test]
    fn status_matchers() {
        let m = StatusMatcher {
            items: vec![
                StatusMatcher::parse_item("2xx").expect("class"),
                StatusMatcher::parse_item("404").expect("code"),
            ],
        };
        assert!(m.matches(204) && m.matches(404) && !m.matches(500));
        assert!(StatusMatcher::parse_item("6xx").is_err());
        assert!(StatusMatcher::parse_item("99").is_err());
    }

    #[test]
    fn shortening() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("ééé", 2), "éé…");
    }
}
