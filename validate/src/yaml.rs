//! Multi-document YAML to JSON values, remembering the line of every field.
//!
//! Kubernetes reads manifests as JSON; this loader produces exactly that (`serde_json::Value`)
//! plus a map from field path (`spec.projects[0].https`) to line number, so that every problem
//! can name `file:line`. Scalars resolve as kubectl resolves them (YAML 1.1 booleans such as
//! `NO` or `on` become booleans), and the original text of such scalars is remembered so that
//! the schema check can suggest quoting them. Hostile input is bounded: nesting depth, node
//! count (aliases included, so "billion laughs" stops early) and duplicate keys are errors.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;
/// Most nodes accepted in one file, counting every expansion of an alias.
const MAX_NODES: usize = 250_000;

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Line (1-based) where the document's content starts.
    pub line: usize,
    /// The document as JSON.
    pub value: Value,
    /// Where each field is.
    pub lines: Lines,
}

/// Field path → line, and the text of scalars that YAML 1.1 reads as booleans.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    at: HashMap<String, usize>,
    yaml11_booleans: HashMap<String, String>,
}

impl Lines {
    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.at.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// The original text of a plain scalar at `path` that kubectl reads as a boolean
    /// (`yes`, `NO`, `on`, …), if there is one.
    pub fn yaml11_boolean(&self, path: &str) -> Option<&str> {
        self.yaml11_booleans.get(path).map(String::as_str)
    }
}

/// Why a file could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// Line (1-based) of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses every document of `text`. Documents before a syntax error are returned with it.
pub fn load(text: &str) -> (Vec<Document>, Option<YamlError>) {
    let mut loader = Loader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut docs = Vec::new();
    loop {
        match loader.next() {
            Ok(None) => return (docs, None),
            Ok(Some((Event::DocumentStart(_), _))) => match loader.document() {
                Ok(Some(doc)) => docs.push(doc),
                Ok(None) => {}
                Err(e) => return (docs, Some(e)),
            },
            Ok(Some(_)) => {}
            Err(e) => return (docs, Some(e)),
        }
    }
}

struct Loader<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Value>,
    nodes: usize,
}

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<Option<(Event<'a>, Span)>, YamlError> {
        match self.parser.next_event() {
            None => Ok(None),
            Some(Ok(ev)) => Ok(Some(ev)),
            Some(Err(e)) => Err(YamlError {
                line: e.marker().line(),
                message: format!("not valid YAML: {}", e.info()),
            }),
        }
    }

    fn expect_next(&mut self, line: usize) -> Result<(Event<'a>, Span), YamlError> {
        self.next()?.ok_or_else(|| YamlError {
            line,
            message: "YAML ends in the middle of a document".into(),
        })
    }

    /// Reads one document after its `DocumentStart`; `None` for an empty document.
    fn document(&mut self) -> Result<Option<Document>, YamlError> {
        self.anchors.clear();
        let mut lines = Lines::default();
        let (ev, span) = self.expect_next(0)?;
        if matches!(ev, Event::DocumentEnd) {
            return Ok(None);
        }
        let line = span.start.line();
        let value = self.node(ev, span, String::new(), 0, &mut lines)?;
        let (end, span) = self.expect_next(line)?;
        if !matches!(end, Event::DocumentEnd) {
            return Err(YamlError {
                line: span.start.line(),
                message: "unexpected content after the document".into(),
            });
        }
        if value.is_null() {
            return Ok(None);
        }
        Ok(Some(Document { line, value, lines }))
    }

    fn count(&mut self, line: usize, n: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                line,
                message: format!(
                    "more than {MAX_NODES} YAML nodes (aliases expanded); refusing to read further"
                ),
            });
        }
        Ok(())
    }

    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        path: String,
        depth: usize,
        lines: &mut Lines,
    ) -> Result<Value, YamlError> {
        let line = span.start.line();
        if depth > MAX_DEPTH {
            return Err(YamlError {
                line,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        self.count(line, 1)?;
        lines.at.entry(path.clone()).or_insert(line);
        let (value, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_string {
                    if let Some(b) = yaml11_boolean(&text) {
                        if !matches!(
                            &*text,
                            "true" | "false" | "True" | "False" | "TRUE" | "FALSE"
                        ) {
                            lines.yaml11_booleans.insert(path.clone(), text.to_string());
                        }
                        Value::Bool(b)
                    } else {
                        resolve_plain(&text)
                    }
                } else {
                    Value::String(text.into_owned())
                };
                (value, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.expect_next(line)?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let item_path = format!("{path}[{}]", items.len());
                    items.push(self.node(ev, span, item_path, depth + 1, lines)?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                loop {
                    let (ev, span) = self.expect_next(line)?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key_line = span.start.line();
                    let key = match ev {
                        Event::Scalar(text, _, _, _) => text.into_owned(),
                        _ => {
                            return Err(YamlError {
                                line: key_line,
                                message: "mapping keys must be plain strings".into(),
                            });
                        }
                    };
                    if key == "<<" {
                        return Err(YamlError {
                            line: key_line,
                            message: "merge keys (`<<`) are not supported: write the fields out"
                                .into(),
                        });
                    }
                    if map.contains_key(&key) {
                        return Err(YamlError {
                            line: key_line,
                            message: format!(
                                "duplicate key `{key}` (kubectl would keep only one of them)"
                            ),
                        });
                    }
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    lines.at.insert(child_path.clone(), key_line);
                    let (ev, span) = self.expect_next(key_line)?;
                    let value = self.node(ev, span, child_path, depth + 1, lines)?;
                    map.insert(key, value);
                }
                (Value::Object(map), anchor)
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    line,
                    message: "alias to an unknown anchor".into(),
                })?;
                self.count(line, size_of(&value))?;
                (value, 0)
            }
            other => {
                return Err(YamlError {
                    line,
                    message: format!("unexpected YAML event {other:?}"),
                });
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(value)
    }
}

fn size_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(size_of).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(size_of).sum::<usize>(),
        _ => 1,
    }
}

/// The booleans of YAML 1.1, which kubectl (go-yaml) still applies to plain scalars.
fn yaml11_boolean(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// Resolves a plain scalar: null, integer, float, else string.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        _ => {}
    }
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let negative = s.starts_with('-');
    if let Some(hex) = digits.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Value::from(if negative { -n } else { n });
    }
    if let Some(oct) = digits.strip_prefix("0o")
        && let Ok(n) = i64::from_str_radix(oct, 8)
    {
        return Value::from(if negative { -n } else { n });
    }
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse::<i64>() {
            return Value::from(n);
        }
        if let Ok(n) = s.parse::<u64>() {
            return Value::from(n);
        }
    }
    let looks_float = !digits.is_empty()
        && digits
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_float && let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_values_and_lines() {
        let (docs, err) = load("a: 1\nb:\n  - x\n  - y: 2.5\n---\n# empty\n---\nc: ~\n");
        assert!(err.is_none());
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value, json!({"a": 1, "b": ["x", {"y": 2.5}]}));
        assert_eq!(docs[0].lines.line_of("b[1].y"), Some(4));
        assert_eq!(docs[0].lines.line_of("b[0]"), Some(3));
        assert_eq!(
            docs[0].lines.line_of("b[1].missing"),
            Some(4),
            "falls back to the parent"
        );
        assert_eq!(docs[1].value, json!({"c": null}));
        assert_eq!(docs[1].line, 8);
    }

    #[test]
    fn scalars_resolve_like_kubectl() {
        let (docs, _) = load("a: NO\nb: \"NO\"\nc: 0x1F\nd: 1e3\ne: 08\nf: 1.2.3\ng: true\n");
        let v = &docs[0].value;
        assert_eq!(v["a"], json!(false));
        assert_eq!(docs[0].lines.yaml11_boolean("a"), Some("NO"));
        assert_eq!(docs[0].lines.yaml11_boolean("g"), None);
        assert_eq!(v["b"], json!("NO"));
        assert_eq!(v["c"], json!(31));
        assert_eq!(v["d"], json!(1000.0));
        assert_eq!(v["e"], json!(8));
        assert_eq!(v["f"], json!("1.2.3"));
    }

    #[test]
    fn hostile_input_is_bounded() {
        let (_, err) = load("a: 1\na: 2\n");
        assert_eq!(
            err.map(|e| (e.line, e.message.contains("duplicate key `a`"))),
            Some((2, true))
        );

        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            laughs.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let (_, err) = load(&laughs);
        assert!(err.is_some_and(|e| e.message.contains("YAML nodes")));

        let deep = "[".repeat(200) + &"]".repeat(200);
        let (_, err) = load(&deep);
        assert!(err.is_some_and(|e| e.message.contains("nesting")));

        let (docs, err) = load("ok: 1\n---\nbad: [unclosed\n");
        assert_eq!(docs.len(), 1, "documents before the error survive");
        assert!(err.is_some_and(|e| e.line >= 3));
    }
}
