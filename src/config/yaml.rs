//! A YAML document as a tree of nodes that remember where they were written.
//!
//! We build the tree ourselves from saphyr-parser's event stream (the parser
//! under serde-saphyr) rather than deserializing with serde, because the
//! configuration compiler must report *every* error at once with its line and
//! column, and serde stops at the first. Scalars keep whether they were
//! quoted, so `"200"` stays a string while `200` is a number. Anchors and
//! aliases are supported; a node budget stops "billion laughs" expansion.

use std::collections::HashMap;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Where a node starts: file, 1-based line and 1-based column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string scalar; `quoted` is true when it was written in quotes or as
    /// a block scalar, i.e. the author meant a string.
    Str {
        value: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in the order written; keys are plain strings (a YAML mapping
    /// with a non-scalar key is reported as an error by the loader).
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// A short name of the node's type for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The scalar as text, for keys whose values may be written either way
    /// (`status: 200` and `status: "2xx"`).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str { value, .. } => Some(value.clone()),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A syntax error in a YAML file.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// The most nodes one file may expand to, aliases included.
const NODE_BUDGET: usize = 200_000;
/// The deepest nesting accepted.
const DEPTH_LIMIT: usize = 64;

/// Parses one YAML file. An empty file is `Null`. Only the first document of
/// a stream is used; a second one is an error, since it would otherwise be
/// silently ignored.
pub fn parse(file: &str, text: &str) -> Result<Node, SyntaxError> {
    let file: Arc<str> = Arc::from(file);
    let mut b = Builder {
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        documents: 0,
    };
    for ev in Parser::new_from_str(text) {
        let (event, span) = ev.map_err(|e| SyntaxError {
            pos: Pos {
                file: file.clone(),
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = Pos {
            file: file.clone(),
            line: span.start.line(),
            col: span.start.col() + 1,
        };
        b.event(event, pos)?;
    }
    Ok(b.root.unwrap_or(Node {
        value: Value::Null,
        pos: Pos {
            file,
            line: 1,
            col: 1,
        },
    }))
}

enum Frame {
    Seq {
        anchor: usize,
        pos: Pos,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        pos: Pos,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Node>,
    },
}

struct Builder {
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    root: Option<Node>,
    nodes: usize,
    documents: usize,
}

impl Builder {
    fn err(&self, pos: &Pos, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos: pos.clone(),
            message: message.into(),
        }
    }

    fn count(&mut self, n: usize, pos: &Pos) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > NODE_BUDGET {
            return Err(self.err(
                pos,
                format!(
                    "document too large: more than {NODE_BUDGET} nodes after expanding aliases"
                ),
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.err(
                        &pos,
                        "more than one YAML document in this file; use one document per file",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, &pos)?;
                let value = scalar(&text, style, tag.as_deref().map(|t| t.suffix.as_str()));
                let node = Node { value, pos };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => n.clone(),
                    None => return Err(self.err(&pos, "alias to an unknown anchor")),
                };
                self.count(size(&node), &pos)?;
                self.push(node)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.depth_check(&pos)?;
                self.count(1, &pos)?;
                self.stack.push(Frame::Seq {
                    anchor,
                    pos,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.depth_check(&pos)?;
                self.count(1, &pos)?;
                self.stack.push(Frame::Map {
                    anchor,
                    pos,
                    entries: Vec::new(),
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq { anchor, pos, items }) => {
                        let n = Node {
                            value: Value::Seq(items),
                            pos,
                        };
                        if anchor > 0 {
                            self.anchors.insert(anchor, n.clone());
                        }
                        n
                    }
                    Some(Frame::Map {
                        anchor,
                        pos,
                        entries,
                        ..
                    }) => {
                        let n = Node {
                            value: Value::Map(entries),
                            pos,
                        };
                        if anchor > 0 {
                            self.anchors.insert(anchor, n.clone());
                        }
                        n
                    }
                    None => return Err(self.err(&pos, "unbalanced YAML structure")),
                };
                self.push(node)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn depth_check(&self, pos: &Pos) -> Result<(), SyntaxError> {
        if self.stack.len() >= DEPTH_LIMIT {
            return Err(self.err(pos, format!("nesting deeper than {DEPTH_LIMIT} levels")));
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    *pending_key = Some(node);
                    Ok(())
                }
                Some(key) => {
                    let name = match &key.value {
                        Value::Str { value, .. } => value.clone(),
                        Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null => {
                            key.scalar_text().unwrap_or_else(|| "null".into())
                        }
                        Value::Seq(_) | Value::Map(_) => {
                            let pos = key.pos.clone();
                            return Err(SyntaxError {
                                pos,
                                message:
                                    "a mapping key must be a plain value, not a list or mapping"
                                        .into(),
                            });
                        }
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        let message = format!(
                            "duplicate key `{name}` (first written at line {})",
                            first.pos.line
                        );
                        return Err(SyntaxError {
                            pos: key.pos,
                            message,
                        });
                    }
                    entries.push((Key { name, pos: key.pos }, node));
                    Ok(())
                }
            },
        }
    }
}

fn size(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + size(v)).sum::<usize>(),
        _ => 1,
    }
}

/// Resolves a scalar by the YAML 1.2 core schema; quoted scalars are strings.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    let str_value = || Value::Str {
        value: text.to_string(),
        quoted: true,
    };
    if style != ScalarStyle::Plain || tag == Some("str") {
        return str_value();
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str {
        value: text.to_string(),
        quoted: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("f.yaml", "a: 1\nb:\n  c: \"x\"\n").expect("parses");
        let b = n.get("b").expect("b");
        let c = b.get("c").expect("c");
        assert_eq!((c.pos.line, c.pos.col), (3, 6));
        assert_eq!(
            c.value,
            Value::Str {
                value: "x".into(),
                quoted: true
            }
        );
        assert_eq!(n.get("a").map(|a| a.value.clone()), Some(Value::Int(1)));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("f.yaml", "a: 1\na: 2\n").expect_err("duplicate");
        assert_eq!(e.pos.line, 2);
        assert!(e.message.contains("duplicate key `a`"));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            text.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let e = parse("f.yaml", &text).expect_err("too large");
        assert!(e.message.contains("too large"));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("f.yaml", "a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(e.pos.line >= 1);
    }
}
