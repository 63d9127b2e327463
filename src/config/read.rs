//! Typed reading of YAML nodes with error collection: the toolkit every
//! part of the configuration compiler (including each probe kind's module)
//! uses to turn nodes into validated values.
//!
//! Every reader reports a problem as a diagnostic and returns `None`; it
//! never stops the compile. Strings are expanded (`${VAR}`, `${VAR:-default}`,
//! `${file:PATH}`) as they are read, and every substituted value is
//! registered as a secret.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use super::diag::{Diagnostic, Diagnostics, Severity};
use super::yaml::{Key, Node, Pos, Value};

/// Looks up an environment variable (replaceable in tests).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send>;

/// The compile context: collected diagnostics and how to expand variables.
pub struct Cx {
    pub diags: Diagnostics,
    env: EnvLookup,
    /// Directory that relative `${file:...}` paths are resolved against.
    pub base_dir: PathBuf,
    /// Whether substituted values are registered as secrets (always, except
    /// in property tests, whose random values would otherwise mask ordinary
    /// words in every later message of the test process).
    pub register_secrets: bool,
    /// Set while a `flow` probe's step is compiled: each `${steps.S.V}`
    /// read is recorded here and replaced by a placeholder token
    /// ([`crate::probe::flow::token`]) that the run fills in. Outside a
    /// flow such a reference is an error.
    pub step_refs: Option<Vec<StepRef>>,
}

/// A `${steps.STEP.VAR}` reference read inside a flow step: the capture it
/// names and where it was written.
#[derive(Debug, Clone)]
pub struct StepRef {
    pub step: String,
    pub var: String,
    pub pos: Pos,
    pub path: String,
}

impl Default for Cx {
    fn default() -> Self {
        Cx::new(Box::new(|k| std::env::var(k).ok()))
    }
}

impl Cx {
    pub fn new(env: EnvLookup) -> Cx {
        Cx {
            diags: Diagnostics::default(),
            env,
            base_dir: PathBuf::from("."),
            register_secrets: true,
            step_refs: None,
        }
    }

    pub fn error(&mut self, pos: &Pos, key: &str, message: impl Into<String>) {
        self.diags
            .0
            .push(Diagnostic::at(Severity::Error, pos, key, message));
    }

    pub fn warning(&mut self, pos: &Pos, key: &str, message: impl Into<String>) {
        self.diags
            .0
            .push(Diagnostic::at(Severity::Warning, pos, key, message));
    }

    /// Opens a mapping, reporting every key not in `allowed` (with a
    /// suggestion when one is close).
    pub fn map<'a>(&mut self, node: &'a Node, path: &str, allowed: &[&str]) -> Option<Map<'a>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                &node.pos,
                path,
                format!("expected a mapping, found {}", node.type_name()),
            );
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                let msg = unknown_key_message(&key.name, allowed);
                self.error(&key.pos, &join(path, &key.name), msg);
            }
        }
        Some(Map {
            node,
            entries,
            path: path.to_string(),
        })
    }

    /// Reads any scalar as a string and expands variables in it.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str { value, .. } => self.expand(value, &node.pos, path),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => node.scalar_text(),
            _ => {
                self.error(
                    &node.pos,
                    path,
                    format!("expected a string, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(
                    &node.pos,
                    path,
                    format!("expected true or false, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn u64(&mut self, node: &Node, path: &str) -> Option<u64> {
        match &node.value {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            Value::Str { value, .. } => match self.expand(value, &node.pos, path)?.parse::<u64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error(
                        &node.pos,
                        path,
                        format!("expected a whole number, found `{value}`"),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    &node.pos,
                    path,
                    format!("expected a whole number, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let text = match &node.value {
            Value::Str { value, .. } => self.expand(value, &node.pos, path)?,
            Value::Int(i) => i.to_string(),
            _ => {
                self.error(
                    &node.pos,
                    path,
                    format!(
                        "expected a duration such as 30s, found {}",
                        node.type_name()
                    ),
                );
                return None;
            }
        };
        match crate::duration::parse(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(&node.pos, path, e);
                None
            }
        }
    }

    /// Any YAML value as JSON (for matchers): sequences become arrays and
    /// mappings objects; strings are expanded like every other string.
    /// A value matcher (`UP`, `"> 0"`, `"=~ re"`, or any YAML value for
    /// equality), reporting an invalid one at the node.
    pub fn value_matcher(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Option<crate::expect::ValueMatcher> {
        let json = self.json(node, path)?;
        match crate::expect::ValueMatcher::from_json(&json) {
            Ok(m) => Some(m),
            Err(e) => {
                self.error(&node.pos, path, e);
                None
            }
        }
    }

    pub fn json(&mut self, node: &Node, path: &str) -> Option<Json> {
        Some(match &node.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::Str { .. } => Json::String(self.string(node, path)?),
            Value::Seq(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, n) in list.iter().enumerate() {
                    out.push(self.json(n, &format!("{path}[{i}]"))?);
                }
                Json::Array(out)
            }
            Value::Map(entries) => {
                let mut out = serde_json::Map::new();
                for (k, n) in entries {
                    out.insert(k.name.clone(), self.json(n, &join(path, &k.name))?);
                }
                Json::Object(out)
            }
        })
    }

    /// A scalar as JSON (for a value matcher); a sequence or a mapping is
    /// reported as "expected {expected}, found ...".
    pub fn scalar_json(&mut self, node: &Node, path: &str, expected: &str) -> Option<Json> {
        if matches!(node.value, Value::Seq(_) | Value::Map(_)) {
            self.error(
                &node.pos,
                path,
                format!("expected {expected}, found {}", node.type_name()),
            );
            return None;
        }
        self.json(node, path)
    }

    /// A list of strings; a single string is accepted as a list of one.
    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.string(item, &format!("{path}[{i}]")) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            Value::Str { .. } | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                self.string(node, path).map(|s| vec![s])
            }
            _ => {
                self.error(
                    &node.pos,
                    path,
                    format!("expected a list of strings, found {}", node.type_name()),
                );
                None
            }
        }
    }

    /// A mapping of string to string (headers, labels). Keys are not expanded.
    pub fn string_map(&mut self, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                &node.pos,
                path,
                format!("expected a mapping, found {}", node.type_name()),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries {
            match self.string(v, &join(path, &k.name)) {
                Some(s) => {
                    out.insert(k.name.clone(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Expands `${VAR}`, `${VAR:-default}` and `${file:PATH}`; `$$` is a
    /// literal `$`. An unresolvable reference is an error.
    pub fn expand(&mut self, text: &str, pos: &Pos, path: &str) -> Option<String> {
        if !text.contains('$') {
            return Some(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut ok = true;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let Some(inner_and_tail) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                continue;
            };
            let Some(close) = inner_and_tail.find('}') else {
                self.error(pos, path, format!("unterminated `${{` in `{text}`"));
                return None;
            };
            let inner = &inner_and_tail[..close];
            rest = &inner_and_tail[close + 1..];
            if let Some(name) = inner.strip_prefix("steps.") {
                match self.step_ref(inner, name, pos, path) {
                    Some(token) => out.push_str(&token),
                    None => ok = false,
                }
                continue;
            }
            match self.resolve(inner) {
                Ok(v) => {
                    if self.register_secrets {
                        crate::redact::register(&v);
                    }
                    out.push_str(&v);
                }
                Err(e) => {
                    self.error(pos, path, e);
                    ok = false;
                }
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    /// Records `${steps.STEP.VAR}` (`name` is `STEP.VAR`) and returns the
    /// placeholder that stands for it until the run.
    fn step_ref(&mut self, inner: &str, name: &str, pos: &Pos, path: &str) -> Option<String> {
        let parts: Vec<&str> = name.split('.').collect();
        let valid = parts.len() == 2 && parts.iter().all(|p| crate::probe::flow::valid_name(p));
        if !valid {
            self.error(
                pos,
                path,
                format!("`${{{inner}}}` is not a valid step reference; write ${{steps.STEP.VARIABLE}}, e.g. ${{steps.login.token}}"),
            );
            return None;
        }
        let Some(refs) = self.step_refs.as_mut() else {
            self.error(
                pos,
                path,
                format!("`${{{inner}}}` names a value captured by a flow step; it can be used only in the steps of a `flow` probe"),
            );
            return None;
        };
        let token = crate::probe::flow::token(refs.len());
        refs.push(StepRef {
            step: parts[0].to_string(),
            var: parts[1].to_string(),
            pos: pos.clone(),
            path: path.to_string(),
        });
        Some(token)
    }

    fn resolve(&self, inner: &str) -> Result<String, String> {
        if let Some(file) = inner.strip_prefix("file:") {
            let p = PathBuf::from(file.trim());
            let p = if p.is_relative() {
                self.base_dir.join(p)
            } else {
                p
            };
            return std::fs::read_to_string(&p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read secret file `{}`: {e}", p.display()));
        }
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "`${{{inner}}}` is not a valid reference; use ${{VAR}}, ${{VAR:-default}} or ${{file:/path}}"
            ));
        }
        match ((self.env)(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => Ok(v),
            (_, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(format!(
                "environment variable `{name}` is not set (write ${{{name}:-default}} to give a default)"
            )),
            (Some(v), None) => Ok(v),
        }
    }
}

/// An open mapping: typed getters for its keys, each reporting with the
/// key's full path.
pub struct Map<'a> {
    pub node: &'a Node,
    pub entries: &'a [(Key, Node)],
    pub path: String,
}

impl<'a> Map<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn pos(&self) -> &'a Pos {
        &self.node.pos
    }

    pub fn str(&self, cx: &mut Cx, key: &str) -> Option<String> {
        self.get(key).and_then(|n| cx.string(n, &self.path(key)))
    }

    /// A key that must be present; its absence is reported at the mapping.
    pub fn required(&self, cx: &mut Cx, key: &str) -> Option<&'a Node> {
        let n = self.get(key);
        if n.is_none() {
            cx.error(
                &self.node.pos,
                &self.path,
                format!("missing required key `{key}`"),
            );
        }
        n
    }

    pub fn required_str(&self, cx: &mut Cx, key: &str) -> Option<String> {
        self.required(cx, key)
            .and_then(|n| cx.string(n, &self.path(key)))
    }

    pub fn bool(&self, cx: &mut Cx, key: &str) -> Option<bool> {
        self.get(key).and_then(|n| cx.bool(n, &self.path(key)))
    }

    /// A boolean key that is `default` when absent.
    pub fn bool_or(&self, cx: &mut Cx, key: &str, default: bool) -> Option<bool> {
        match self.get(key) {
            None => Some(default),
            Some(n) => cx.bool(n, &self.path(key)),
        }
    }

    /// An optional key whose value is absent or a boolean: `Some(None)`
    /// when absent, `None` when it is not a boolean (reported).
    pub fn opt_bool(&self, cx: &mut Cx, key: &str) -> Option<Option<bool>> {
        match self.get(key) {
            None => Some(None),
            Some(n) => cx.bool(n, &self.path(key)).map(Some),
        }
    }

    /// An optional key read as text and checked by `parse`: `Some(None)`
    /// when absent, `None` when it is not text or `parse` refuses it (its
    /// message is reported at the key).
    pub fn parsed<T>(
        &self,
        cx: &mut Cx,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        if !self.has(key) {
            return Some(None);
        }
        let text = self.str(cx, key)?;
        self.checked(cx, key, &text, parse).map(Some)
    }

    /// A key that must be present, read as text and checked by `parse`;
    /// `None` when it is missing, not text or refused (reported).
    pub fn required_parsed<T>(
        &self,
        cx: &mut Cx,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.required_str(cx, key)?;
        self.checked(cx, key, &text, parse)
    }

    fn checked<T>(
        &self,
        cx: &mut Cx,
        key: &str,
        text: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error_at(cx, key, e);
                None
            }
        }
    }

    pub fn u64(&self, cx: &mut Cx, key: &str) -> Option<u64> {
        self.get(key).and_then(|n| cx.u64(n, &self.path(key)))
    }

    pub fn duration(&self, cx: &mut Cx, key: &str) -> Option<Duration> {
        self.get(key).and_then(|n| cx.duration(n, &self.path(key)))
    }

    pub fn string_list(&self, cx: &mut Cx, key: &str) -> Option<Vec<String>> {
        self.get(key)
            .and_then(|n| cx.string_list(n, &self.path(key)))
    }

    pub fn string_map(&self, cx: &mut Cx, key: &str) -> Option<BTreeMap<String, String>> {
        self.get(key)
            .and_then(|n| cx.string_map(n, &self.path(key)))
    }

    /// Reports an error at a key's value (or at the mapping when absent).
    pub fn error_at(&self, cx: &mut Cx, key: &str, message: impl Into<String>) {
        let pos = self.get(key).map(|n| &n.pos).unwrap_or(&self.node.pos);
        cx.error(pos, &self.path(key), message);
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// "unknown key `tiemout`; did you mean `timeout`?" or the list of keys.
pub fn unknown_key_message(key: &str, allowed: &[&str]) -> String {
    match suggest(key, allowed) {
        Some(s) => format!("unknown key `{key}`; did you mean `{s}`?"),
        None => format!(
            "unknown key `{key}`; expected one of: {}",
            allowed.join(", ")
        ),
    }
}

/// The closest candidate within a small edit distance, if any.
pub fn suggest<'s>(word: &str, candidates: &[&'s str]) -> Option<&'s str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn cx_with(vars: &'static [(&'static str, &'static str)]) -> Cx {
        Cx::new(Box::new(move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }))
    }

    #[test]
    fn expansion_forms() {
        let mut cx = cx_with(&[("TOKEN", "abcd1234"), ("EMPTY", "")]);
        let pos = Pos {
            file: "f".into(),
            line: 1,
            col: 1,
        };
        assert_eq!(
            cx.expand("Bearer ${TOKEN}", &pos, "k").as_deref(),
            Some("Bearer abcd1234")
        );
        assert_eq!(
            cx.expand("${MISSING:-dflt}", &pos, "k").as_deref(),
            Some("dflt")
        );
        assert_eq!(
            cx.expand("${EMPTY:-dflt}", &pos, "k").as_deref(),
            Some("dflt")
        );
        assert_eq!(
            cx.expand("$$5 and $x", &pos, "k").as_deref(),
            Some("$5 and $x")
        );
        assert_eq!(cx.expand("${MISSING}", &pos, "k"), None);
        assert!(cx.diags.0[0].message.contains("`MISSING` is not set"));
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        let mut cx = cx_with(&[]);
        let n = parse("f.yaml", "tiemout: 1s\n").expect("yaml");
        cx.map(&n, "probes[0]", &["timeout", "interval"]);
        let d = &cx.diags.0[0];
        assert_eq!(d.key, "probes[0].tiemout");
        assert!(
            d.message.contains("did you mean `timeout`"),
            "{}",
            d.message
        );
    }
}
