//! Multi-document YAML to JSON values, remembering the line of every field.
//!
//! Kubernetes reads manifests as JSON; this loader produces exactly that (`serde_json::Value`)
//! plus a map from field path (`spec.projects[0].https`) to line number, so that every problem
//! can name `file:line`. Scalars resolve as kubectl resolves them (YAML 1.1 booleans such as
//! `NO` or `on` become booleans), and the original text of such scalars is remembered so that
//! the schema check can suggest quoting them. Hostile input is bounded: nesting depth, node
//! count (aliases included, so "billion laughs" stops early), the bytes that aliases expand
//! to (at most [`EXPANSION_PER_BYTE`] times the file, plus [`EXPANSION_SLACK`]) and duplicate
//! keys are errors. Field paths are kept as a tree of segments, so their memory grows with the
//! number of keys, not with their depth: loading a file takes memory proportional to its size
//! (a test holds hostile shapes under 20 times the file's size).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;
/// Most nodes accepted in one file, counting every expansion of an alias.
const MAX_NODES: usize = 250_000;
/// What a document may expand to, in bytes per byte of the file: scalars and keys count their
/// text, every node [`NODE_BYTES`] more, and an alias everything its anchor holds.
pub const EXPANSION_PER_BYTE: usize = 8;
/// Expansion allowed beyond [`EXPANSION_PER_BYTE`], so that small files may use aliases.
pub const EXPANSION_SLACK: usize = 1 << 20;
/// What one node costs in the expansion count, besides its text.
const NODE_BYTES: usize = 64;

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

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Segment<'k> {
    Key(&'k str),
    Index(usize),
}

/// A node of the path tree: the root (the document) is node 0.
type NodeId = u32;

/// The children map's keys are SipHash values already: hashing them again would only cost.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// Takes a `u64` key as its own hash.
#[derive(Debug, Clone, Copy)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Field path → line, and the text of scalars that YAML 1.1 reads as booleans. Paths are a
/// tree: each node is its parent's node plus one segment, so a document's paths take memory
/// in proportion to its keys however deep they nest. A (parent, segment) pair is held as its
/// 64-bit SipHash under a per-document random key, not as text: about 25 bytes a field.
#[derive(Debug, Clone)]
pub struct Lines {
    /// The line of each node (0: none recorded).
    line: Vec<u32>,
    /// Hash of (parent, segment) → child.
    children: HashMap<u64, NodeId, PassThrough>,
    hasher: RandomState,
    yaml11_booleans: HashMap<NodeId, String>,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            line: vec![0],
            children: HashMap::default(),
            hasher: RandomState::new(),
            yaml11_booleans: HashMap::new(),
        }
    }
}

impl Lines {
    /// The line of `path` (`spec.projects[0].https`), or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        if path.is_empty() {
            return Some(self.line[0] as usize).filter(|&l| l > 0);
        }
        let (walked, _) = self.walk(path);
        walked[1..]
            .iter()
            .rev()
            .map(|&n| self.line[n as usize] as usize)
            .find(|&l| l > 0)
    }

    /// The original text of a plain scalar at `path` that kubectl reads as a boolean
    /// (`yes`, `NO`, `on`, …), if there is one.
    pub fn yaml11_boolean(&self, path: &str) -> Option<&str> {
        match self.walk(path) {
            (walked, true) => walked
                .last()
                .and_then(|n| self.yaml11_booleans.get(n))
                .map(String::as_str),
            _ => None,
        }
    }

    /// The nodes along `path` from the root, as far as they exist, and whether all of it did.
    fn walk(&self, path: &str) -> (Vec<NodeId>, bool) {
        let mut walked = vec![0];
        let mut node = 0;
        let mut rest = path;
        while !rest.is_empty() {
            let next = if let Some(r) = rest.strip_prefix('[') {
                let Some((digits, after)) = r.split_once(']') else {
                    return (walked, false);
                };
                let Ok(i) = digits.parse() else {
                    return (walked, false);
                };
                self.child(node, Segment::Index(i)).map(|c| (c, after))
            } else {
                let r = if node == 0 {
                    rest
                } else {
                    match rest.strip_prefix('.') {
                        Some(r) => r,
                        None => return (walked, false),
                    }
                };
                // A key ends at a `.` or `[`, or holds some (keys may contain them): the
                // shortest key that exists wins.
                let ends = r.match_indices(['.', '[']).map(|(i, _)| i).chain([r.len()]);
                ends.filter(|&e| e > 0).find_map(|e| {
                    self.child(node, Segment::Key(&r[..e]))
                        .map(|c| (c, &r[e..]))
                })
            };
            let Some((child, after)) = next else {
                return (walked, false);
            };
            walked.push(child);
            node = child;
            rest = after;
        }
        (walked, true)
    }

    fn child(&self, parent: NodeId, segment: Segment<'_>) -> Option<NodeId> {
        let key = self.hasher.hash_one((parent, segment));
        self.children.get(&key).copied()
    }

    /// The node of `segment` under `parent`, made if new.
    fn node(&mut self, parent: NodeId, segment: Segment<'_>) -> NodeId {
        let next = self.line.len() as NodeId;
        let key = self.hasher.hash_one((parent, segment));
        let id = *self.children.entry(key).or_insert(next);
        if id == next {
            self.line.push(0);
        }
        id
    }

    /// Records `line` for `node` unless it has one.
    fn mark(&mut self, node: NodeId, line: usize) {
        let l = &mut self.line[node as usize];
        if *l == 0 {
            *l = u32::try_from(line).unwrap_or(u32::MAX);
        }
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
/// The first `%YAML` directive naming a version other than 1.1 or 1.2, as (line, message):
/// a future YAML may mean something else by the same text, so such a file is refused rather
/// than read as 1.2.
pub fn unknown_version(text: &str) -> Option<(usize, String)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.strip_prefix("%YAML")?;
        let version = rest.split('#').next().unwrap_or("").trim();
        (!matches!(version, "1.1" | "1.2")).then(|| {
            (
                i + 1,
                format!("%YAML {version:?}: only YAML 1.1 and 1.2 are read"),
            )
        })
    })
}

pub fn load(text: &str) -> (Vec<Document>, Option<YamlError>) {
    let mut loader = Loader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
        max_bytes: text
            .len()
            .saturating_mul(EXPANSION_PER_BYTE)
            .saturating_add(EXPANSION_SLACK),
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
    /// Each anchor's value and what it counted (nodes, bytes), which every alias counts again.
    anchors: HashMap<usize, (Value, usize, usize)>,
    nodes: usize,
    /// Bytes the file expands to so far (see [`EXPANSION_PER_BYTE`]).
    bytes: usize,
    max_bytes: usize,
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
        let value = self.node(ev, span, 0, 0, &mut lines)?;
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

    /// Counts `nodes` nodes holding `bytes` bytes of text; an error past either bound.
    fn count(&mut self, line: usize, nodes: usize, bytes: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                line,
                message: format!(
                    "more than {MAX_NODES} YAML nodes (aliases expanded); refusing to read further"
                ),
            });
        }
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.max_bytes {
            return Err(YamlError {
                line,
                message: format!(
                    "the document expands to more than {} bytes ({EXPANSION_PER_BYTE} times the file, aliases expanded); refusing to read further",
                    self.max_bytes
                ),
            });
        }
        Ok(())
    }

    fn node(
        &mut self,
        ev: Event<'a>,
        span: Span,
        path: NodeId,
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
        let (nodes_before, bytes_before) = (self.nodes, self.bytes);
        self.count(line, 1, NODE_BYTES)?;
        lines.mark(path, line);
        let (value, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(line, 0, text.len())?;
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_string {
                    if let Some(b) = yaml11_boolean(&text) {
                        if !matches!(
                            &*text,
                            "true" | "false" | "True" | "False" | "TRUE" | "FALSE"
                        ) {
                            lines.yaml11_booleans.insert(path, text.to_string());
                        }
                        Value::Bool(b)
                    } else {
                        resolve_plain(&text)
                    }
                } else {
                    Value::String(String::from(&*text))
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
                    let item_path = lines.node(path, Segment::Index(items.len()));
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
                        Event::Scalar(text, _, _, _) => {
                            self.count(key_line, 0, text.len())?;
                            // A copy of exactly its length: the parser's buffer is bigger.
                            String::from(&*text)
                        }
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
                    let child_path = lines.node(path, Segment::Key(&key));
                    lines.mark(child_path, key_line);
                    let (ev, span) = self.expect_next(key_line)?;
                    let value = self.node(ev, span, child_path, depth + 1, lines)?;
                    map.insert(key, value);
                }
                (Value::Object(map), anchor)
            }
            Event::Alias(id) => {
                let (nodes, bytes) = match self.anchors.get(&id) {
                    Some((_, nodes, bytes)) => (*nodes, *bytes),
                    None => {
                        return Err(YamlError {
                            line,
                            message: "alias to an unknown anchor".into(),
                        });
                    }
                };
                // Counted before the copy is made: an alias that would pass a bound is never
                // expanded.
                self.count(line, nodes, bytes)?;
                let value = self
                    .anchors
                    .get(&id)
                    .map(|a| a.0.clone())
                    .unwrap_or_default();
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
            let counted = (self.nodes - nodes_before, self.bytes - bytes_before);
            self.anchors
                .insert(anchor, (value.clone(), counted.0, counted.1));
        }
        Ok(value)
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
    fn paths_with_odd_keys_are_found() {
        let (docs, err) = load(
            "metadata:\n  labels:\n    app.kubernetes.io/name: x\n    a[0]: y\nlist:\n  - - deep\n",
        );
        assert!(err.is_none());
        let l = &docs[0].lines;
        assert_eq!(l.line_of("metadata.labels.app.kubernetes.io/name"), Some(3));
        assert_eq!(l.line_of("metadata.labels.a[0]"), Some(4));
        assert_eq!(l.line_of("list[0][0]"), Some(6));
        assert_eq!(l.line_of("list[9]"), Some(5), "the nearest ancestor");
        assert_eq!(l.line_of("nowhere.at.all"), None);
        assert_eq!(l.line_of(""), Some(1), "the document");
        assert_eq!(l.line_of("list[x]"), Some(5));
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
        assert!(err.is_some_and(|e| e.message.contains("refusing to read further")));
        // Many small nodes in a big file hit the node bound.
        let many = "[".to_owned() + &"1,        ".repeat(300_000) + "]";
        let (_, err) = load(&many);
        assert!(err.is_some_and(|e| e.message.contains("YAML nodes")));

        let deep = "[".repeat(200) + &"]".repeat(200);
        let (_, err) = load(&deep);
        assert!(err.is_some_and(|e| e.message.contains("nesting")));

        let (docs, err) = load("ok: 1\n---\nbad: [unclosed\n");
        assert_eq!(docs.len(), 1, "documents before the error survive");
        assert!(err.is_some_and(|e| e.line >= 3));
    }
}
