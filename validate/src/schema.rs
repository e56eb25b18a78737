//! Checks a JSON value against a CRD's structural OpenAPI v3 schema, as the API server would
//! (types, required fields, enums, ranges, lengths, patterns, list types), and more strictly
//! in one respect: unknown fields are reported (with a suggestion) instead of silently pruned.
//! CEL rules are not evaluated here; see `cel` in the parent module.

use std::collections::{HashMap, HashSet};

use regex::Regex;
use serde_json::Value;

/// One violation: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted field path, e.g. `spec.projects[0].https`.
    pub path: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

/// Walks values against schemas; caches compiled patterns across documents.
#[derive(Debug, Default)]
pub struct Checker {
    patterns: HashMap<String, Option<Regex>>,
}

impl Checker {
    /// Checks `value` at `path` against `schema`, appending to `out`.
    pub fn check(&mut self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
        let mut push = |message: String| {
            out.push(Violation {
                path: path.to_owned(),
                message,
            })
        };
        if value.is_null() {
            if !schema
                .get("nullable")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                push("must not be null (leave the field out instead)".into());
            }
            return;
        }
        if schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
            && schema.get("type").is_none()
        {
            return;
        }
        let Some(ty) = schema.get("type").and_then(Value::as_str) else {
            return;
        };
        if !type_matches(ty, value) {
            push(format!("must be {}, not {}", article(ty), describe(value)));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(render).collect();
            push(format!(
                "{} is not one of {}",
                render(value),
                names.join(", ")
            ));
            return;
        }
        match value {
            Value::Object(map) => self.check_object(schema, map, path, out),
            Value::Array(items) => self.check_array(schema, items, path, out),
            Value::String(s) => self.check_string(schema, s, path, out),
            Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(f64::NAN), path, out),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn check_object(
        &mut self,
        schema: &Value,
        map: &serde_json::Map<String, Value>,
        path: &str,
        out: &mut Vec<Violation>,
    ) {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for field in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(field) {
                    out.push(Violation {
                        path: join(path, field),
                        message: "is required".into(),
                    });
                }
            }
        }
        let additional = schema.get("additionalProperties");
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        for (key, child) in map {
            let child_path = join(path, key);
            if let Some(child_schema) = props.and_then(|p| p.get(key)) {
                self.check(child_schema, child, &child_path, out);
            } else if let Some(extra) = additional.filter(|a| a.is_object()) {
                self.check(extra, child, &child_path, out);
            } else if !preserve && additional != Some(&Value::Bool(true)) {
                let known: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let hint = match closest(key, &known) {
                    Some(k) => format!(" (did you mean `{k}`?)"),
                    None if known.is_empty() => String::new(),
                    None => format!(" (known fields: {})", known.join(", ")),
                };
                out.push(Violation {
                    path: child_path,
                    message: format!("unknown field `{key}`{hint}"),
                });
            }
        }
    }

    fn check_array(
        &mut self,
        schema: &Value,
        items: &[Value],
        path: &str,
        out: &mut Vec<Violation>,
    ) {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            out.push(Violation {
                path: path.into(),
                message: format!("needs at least {min} item{}", plural(min)),
            });
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.push(Violation {
                path: path.into(),
                message: format!("has {} items; at most {max} are allowed", items.len()),
            });
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                let mut seen = HashSet::new();
                for (i, item) in items.iter().enumerate() {
                    if !seen.insert(item.to_string()) {
                        out.push(Violation {
                            path: format!("{path}[{i}]"),
                            message: format!("{} is listed twice", render(item)),
                        });
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = HashSet::new();
                for (i, item) in items.iter().enumerate() {
                    let id: Vec<String> = keys
                        .iter()
                        .map(|k| item.get(*k).map(render).unwrap_or_default())
                        .collect();
                    if !seen.insert(id.clone()) {
                        out.push(Violation {
                            path: format!("{path}[{i}]"),
                            message: format!("{} {} is listed twice", keys.join("/"), id.join("/")),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn check_string(&mut self, schema: &Value, s: &str, path: &str, out: &mut Vec<Violation>) {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            let message = if len == 0 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {min} characters long")
            };
            out.push(Violation {
                path: path.into(),
                message,
            });
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push(Violation {
                path: path.into(),
                message: format!("is {len} characters long; at most {max} are allowed"),
            });
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let re = self
                .patterns
                .entry(pattern.to_owned())
                .or_insert_with(|| Regex::new(pattern).ok());
            match re {
                Some(re) if !re.is_match(s) => out.push(Violation {
                    path: path.into(),
                    message: format!(
                        "{} {}",
                        render(&Value::String(s.into())),
                        explain_pattern(pattern)
                    ),
                }),
                Some(_) => {}
                None => out.push(Violation {
                    path: path.into(),
                    message: format!("the schema's pattern {pattern} does not compile"),
                }),
            }
        }
    }
}

/// Says in words what the patterns used by mirrorfleet's CRDs require.
fn explain_pattern(pattern: &str) -> String {
    if pattern == "^[A-Z]{2}$" {
        return "is not a country code: use two upper-case letters (ISO 3166-1 alpha-2), e.g. DE"
            .into();
    }
    for scheme in ["https?", "http", "https", "rsync", "ftp"] {
        let shown = if scheme == "https?" {
            "http:// or https://".to_owned()
        } else {
            format!("{scheme}://")
        };
        if pattern == format!(r"^{scheme}://[^\s]+/$") {
            return format!("must be an {shown} URL ending with /");
        }
        if pattern == format!(r"^{scheme}://[^\s]+$") {
            return format!("must be an {shown} URL");
        }
    }
    match pattern {
        "^/" => "must be an absolute path (starting with /)".into(),
        "^[^/]" => "must be a relative path (not starting with /)".into(),
        r"^[^@\s]+@[^@\s]+$" => "is not an e-mail address".into(),
        r"^/([A-Za-z0-9._~-]+/)*$" => {
            "must start and end with / and contain only letters, digits and . _ ~ -".into()
        }
        _ => format!("does not match the pattern {pattern}"),
    }
}

fn check_number(schema: &Value, n: f64, path: &str, out: &mut Vec<Violation>) {
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    let (lo, hi) = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => (Some(i32::MIN as f64), Some(i32::MAX as f64)),
        Some("uint32") => (Some(0.0), Some(u32::MAX as f64)),
        Some("int64") => (Some(i64::MIN as f64), Some(i64::MAX as f64)),
        Some("uint64") => (Some(0.0), Some(u64::MAX as f64)),
        _ => (None, None),
    };
    let min = max_opt(min, lo);
    let max = min_opt(max, hi);
    let out_of_range = min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
    if out_of_range {
        let range = match (min, max) {
            (Some(a), Some(b)) => format!("between {} and {}", num(a), num(b)),
            (Some(a), None) => format!("at least {}", num(a)),
            (None, Some(b)) => format!("at most {}", num(b)),
            (None, None) => String::new(),
        };
        out.push(Violation {
            path: path.into(),
            message: format!("{} is out of range: must be {range}", num(n)),
        });
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e16 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn article(ty: &str) -> &'static str {
    match ty {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "boolean" => "true or false",
        "integer" => "a whole number",
        "number" => "a number",
        _ => "a value",
    }
}

/// Describes a value for a message: `the list [...]`, `the number 3`.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Object(_) => "a mapping".into(),
        Value::Array(_) => "a list".into(),
        Value::String(s) => format!("the string {}", render(&Value::String(s.clone()))),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Null => "null".into(),
    }
}

/// Renders a scalar for a message; strings quoted, long ones shortened.
pub(super) fn render(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 80 => {
            let short: String = s.chars().take(77).collect();
            format!("\"{short}...\"")
        }
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The known name closest to `word` (edit distance at most 2, or a case-insensitive match).
pub(super) fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(&word.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn violations(schema: Value, value: Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        Checker::default().check(&schema, &value, "spec", &mut out);
        out.into_iter().map(|v| (v.path, v.message)).collect()
    }

    #[test]
    fn objects_report_required_and_unknown_fields() {
        let schema = json!({"type": "object", "required": ["weight"], "properties": {"weight": {"type": "integer"}}});
        let got = violations(schema, json!({"wieght": 3}));
        assert_eq!(
            got,
            vec![
                ("spec.weight".to_owned(), "is required".to_owned()),
                (
                    "spec.wieght".to_owned(),
                    "unknown field `wieght` (did you mean `weight`?)".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn scalars_check_type_range_enum_length_and_pattern() {
        let int = json!({"type": "integer", "format": "uint32", "minimum": 1.0, "maximum": 1000.0});
        assert_eq!(
            violations(int.clone(), json!(0))[0].1,
            "0 is out of range: must be between 1 and 1000"
        );
        assert_eq!(
            violations(int, json!("5"))[0].1,
            "must be a whole number, not the string \"5\""
        );
        let en = json!({"type": "string", "enum": ["ipv4", "ipv6"]});
        assert_eq!(
            violations(en, json!("ipv5"))[0].1,
            "\"ipv5\" is not one of \"ipv4\", \"ipv6\""
        );
        let s = json!({"type": "string", "minLength": 1, "pattern": "^[A-Z]{2}$"});
        assert_eq!(violations(s.clone(), json!(""))[0].1, "must not be empty");
        assert_eq!(
            violations(s, json!("de"))[0].1,
            "\"de\" is not a country code: use two upper-case letters (ISO 3166-1 alpha-2), e.g. DE"
        );
        let url = json!({"type": "string", "pattern": r"^https://[^\s]+/$"});
        assert_eq!(
            violations(url, json!("http://x/"))[0].1,
            "\"http://x/\" must be an https:// URL ending with /"
        );
        assert!(
            violations(json!({"type": "string"}), json!(null))[0]
                .1
                .contains("must not be null")
        );
        assert!(violations(json!({"type": "string", "nullable": true}), json!(null)).is_empty());
    }

    #[test]
    fn lists_check_bounds_and_uniqueness() {
        let set = json!({"type": "array", "maxItems": 2, "items": {"type": "string"}, "x-kubernetes-list-type": "set"});
        let got = violations(set, json!(["a", "b", "a"]));
        assert_eq!(got[0].1, "has 3 items; at most 2 are allowed");
        assert_eq!(
            got[1],
            ("spec[2]".to_owned(), "\"a\" is listed twice".to_owned())
        );
        let map = json!({"type": "array", "items": {"type": "object", "properties": {"project": {"type": "string"}}},
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["project"]});
        let got = violations(map, json!([{"project": "a"}, {"project": "a"}]));
        assert_eq!(
            got,
            vec![(
                "spec[1]".to_owned(),
                "project \"a\" is listed twice".to_owned()
            )]
        );
    }

    #[test]
    fn closest_suggests_near_names_only() {
        assert_eq!(
            closest("sponsorref", &["sponsorRef", "projects"]),
            Some("sponsorRef")
        );
        assert_eq!(closest("zzz", &["sponsorRef"]), None);
    }
}
