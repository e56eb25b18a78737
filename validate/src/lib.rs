//! Validation of mirrorfleet manifests: the check a GitOps repository runs on every pull
//! request (`mirrorfleet validate`), and the one the operator applies before compiling a
//! resource. Pure: it takes file names and texts, never touches the file system.
//!
//! Every document goes through the same layers as on a cluster, and one more:
//! 1. YAML with line numbers ([`yaml`]), bounded against hostile input;
//! 2. `apiVersion`, `kind` and `metadata`;
//! 3. the generated CRD's structural schema ([`schema`]), with unknown fields reported;
//! 4. the CRD's CEL `x-kubernetes-validations`, evaluated client-side by kube-cel;
//! 5. the rules that span resources ([`rules`]): references, duplicates, country codes,
//!    CIDRs, URLs, routing conflicts and contradicting region rules.
//!
//! All problems are collected; none stops the others from being found. [`compile`] then
//! turns a valid fleet into the state the redirector reads (shared by the CLI, standalone and
//! the controllers).
//!
//! It must not read files, talk to a store or to Kubernetes: reading manifests from disk or
//! Git is `mirrorfleet-manifests`' job.

pub mod compile;
mod rules;
pub mod schema;
pub mod yaml;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use mirrorfleet_crds::v1alpha1::{self, Mirror, Project, RegionRule, Sponsor};
pub use yaml::Lines;

/// One manifest file to validate.
#[derive(Debug, Clone, Copy)]
pub struct SourceFile<'a> {
    /// How the file is named in messages (a path relative to where the user ran the command).
    pub name: &'a str,
    /// Its text.
    pub text: &'a str,
}

/// One problem, printed as `file:line: Kind/name: field.path: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// Line (1-based), 0 when the whole file is meant.
    pub line: usize,
    /// Kind of the resource, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the resource, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Field path inside the resource (empty for the resource as a whole).
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    /// One line, always: control characters in any part (a file named with a newline, a
    /// message quoting one) are escaped, so that no input can forge another line of a report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = one_line;
        write!(f, "{}", c(&self.file))?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ":")?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " {}/{}:", c(k), c(n))?,
            (Some(k), None) => write!(f, " {}:", c(k))?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, " {}:", c(&self.path))?;
        }
        write!(f, " {}", c(&self.message))
    }
}

/// `s` with its control characters escaped (`\n`, `\u{1b}`, …).
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    s.chars()
        .map(|ch| {
            if ch.is_control() {
                ch.escape_default().to_string()
            } else {
                ch.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A resource as read from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The file it was read from.
    pub file: String,
    /// Line of the document.
    pub line: usize,
    /// Lines of its fields.
    pub lines: Lines,
    /// The resource.
    pub resource: T,
}

impl<T: kube::Resource<DynamicType = ()>> Located<T> {
    /// The resource's name (empty only if the manifest had none, which is reported).
    pub fn name(&self) -> &str {
        self.resource.meta().name.as_deref().unwrap_or_default()
    }

    /// The resource's namespace as written (None: the namespace it is applied to).
    pub fn namespace(&self) -> Option<&str> {
        self.resource.meta().namespace.as_deref()
    }

    fn problem(&self, path: &str, message: String) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.lines.line_of(path).unwrap_or(self.line),
            kind: Some(T::kind(&()).into_owned()),
            name: Some(self.name().to_owned()),
            path: path.to_owned(),
            message,
        }
    }
}

/// The valid resources found, by kind.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Projects.
    pub projects: Vec<Located<Project>>,
    /// Mirrors.
    pub mirrors: Vec<Located<Mirror>>,
    /// Sponsors.
    pub sponsors: Vec<Located<Sponsor>>,
    /// Region rules.
    pub rules: Vec<Located<RegionRule>>,
}

/// What validation found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Resources that passed the per-document checks (cross-resource problems may still name
    /// them).
    pub fleet: Fleet,
    /// Every problem, sorted by file (in input order) and line.
    pub problems: Vec<Problem>,
    /// Documents read.
    pub documents: usize,
}

/// Options of a validation run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Ignore documents of other API groups (e.g. a Namespace or a Kustomization in the same
    /// repository) instead of reporting them.
    pub skip_foreign: bool,
}

/// Validates `files` as one fleet: references between resources in different files resolve.
/// Compiles the schemas and CEL rules for this call; [`Validator`] keeps them across calls.
pub fn validate(files: &[SourceFile<'_>], options: Options) -> Outcome {
    Validator::new().validate(files, options)
}

/// The schemas and CEL rules compiled once, for callers that validate again and again (the
/// operator's assessments, a Git follower, fuzzing).
pub struct Validator {
    engine: Engine,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("kinds", &self.engine.kinds.len())
            .finish_non_exhaustive()
    }
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// Compiles the CRDs' schemas and CEL rules.
    pub fn new() -> Validator {
        Validator {
            engine: Engine::new(),
        }
    }

    /// [`validate`] with the compiled schemas.
    pub fn validate(&mut self, files: &[SourceFile<'_>], options: Options) -> Outcome {
        run(&mut self.engine, files, options)
    }
}

fn run(engine: &mut Engine, files: &[SourceFile<'_>], options: Options) -> Outcome {
    let mut outcome = Outcome::default();
    let mut order = Vec::new();
    for (index, file) in files.iter().enumerate() {
        order.push((file.name.to_owned(), index));
        engine.file(file, options, &mut outcome);
    }
    rules::check(&outcome.fleet, &mut outcome.problems);
    let rank = |name: &str| {
        order
            .iter()
            .find(|(n, _)| n == name)
            .map_or(usize::MAX, |(_, i)| *i)
    };
    outcome.problems.sort_by_key(|a| (rank(&a.file), a.line));
    outcome.problems.dedup();
    outcome
}

/// A kind's schema, compiled once per run.
struct KindSchema {
    kind: &'static str,
    schema: Value,
    cel: kube_cel::CompiledSchema,
}

struct Engine {
    checker: schema::Checker,
    kinds: Vec<KindSchema>,
    cel: kube_cel::Validator,
}

impl Engine {
    fn new() -> Engine {
        let kinds = v1alpha1::crds()
            .into_iter()
            .filter_map(|crd| {
                let kind: &'static str = v1alpha1::KINDS
                    .into_iter()
                    .find(|k| *k == crd.spec.names.kind)?;
                let version = crd.spec.versions.into_iter().next()?;
                let schema = serde_json::to_value(version.schema?.open_api_v3_schema?).ok()?;
                let cel = kube_cel::compile_schema(&schema);
                Some(KindSchema { kind, schema, cel })
            })
            .collect();
        Engine {
            checker: schema::Checker::default(),
            kinds,
            cel: kube_cel::Validator::new(),
        }
    }

    fn file(&mut self, file: &SourceFile<'_>, options: Options, outcome: &mut Outcome) {
        if let Some((line, message)) = yaml::unknown_version(file.text) {
            outcome.problems.push(Problem {
                file: file.name.to_owned(),
                line,
                kind: None,
                name: None,
                path: String::new(),
                message,
            });
            return;
        }
        let (docs, error) = yaml::load(file.text);
        for doc in docs {
            outcome.documents += 1;
            self.document(file.name, doc, options, outcome);
        }
        if let Some(e) = error {
            outcome.problems.push(Problem {
                file: file.name.to_owned(),
                line: e.line,
                kind: None,
                name: None,
                path: String::new(),
                message: e.message,
            });
        }
    }

    fn document(
        &mut self,
        file: &str,
        doc: yaml::Document,
        options: Options,
        outcome: &mut Outcome,
    ) {
        let mut report = Reporter {
            file,
            doc: &doc,
            kind: None,
            name: None,
            problems: &mut outcome.problems,
        };
        let Value::Object(map) = &doc.value else {
            report.push(
                "",
                format!(
                    "a manifest must be a mapping with apiVersion, kind, metadata and spec, not {}",
                    schema::describe(&doc.value)
                ),
            );
            return;
        };
        let api_version = map.get("apiVersion").and_then(Value::as_str);
        let kind = map.get("kind").and_then(Value::as_str);
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str);
        report.kind = kind.map(str::to_owned);
        report.name = name.map(str::to_owned);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            report.push("", "apiVersion and kind are required (e.g. apiVersion: mirrorfleet.io/v1alpha1, kind: Mirror)".into());
            return;
        };
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        if group != v1alpha1::GROUP {
            if !options.skip_foreign {
                report.push("apiVersion", format!("{api_version} {kind} is not a mirrorfleet resource (expected {}); pass --skip-foreign to ignore other resources", v1alpha1::API_VERSION));
            }
            return;
        }
        if api_version != v1alpha1::API_VERSION {
            report.push(
                "apiVersion",
                format!(
                    "unknown version {api_version}: this mirrorfleet understands {}",
                    v1alpha1::API_VERSION
                ),
            );
            return;
        }
        let Some(ks) = self.kinds.iter().find(|k| k.kind == kind) else {
            let hint = schema::closest(kind, &v1alpha1::KINDS)
                .map(|k| format!("did you mean {k}? "))
                .unwrap_or_default();
            report.push(
                "kind",
                format!(
                    "unknown kind {kind}: {hint}{} has {}",
                    v1alpha1::API_VERSION,
                    v1alpha1::KINDS.join(", ")
                ),
            );
            return;
        };
        let before = report.problems.len();
        check_metadata(map.get("metadata"), &mut report);
        let mut violations = Vec::new();
        let mut object = doc.value.clone();
        if let Some(obj) = object.as_object_mut() {
            // The status is written by the operator and ignored on apply; apiVersion, kind and
            // metadata were checked above (the CRD schema describes only spec and status).
            for field in ["status", "metadata", "apiVersion", "kind"] {
                obj.remove(field);
            }
        }
        self.checker.check(&ks.schema, &object, "", &mut violations);
        for v in violations {
            let message = match doc.lines.yaml11_boolean(&v.path) {
                Some(text) if v.message.contains("not the boolean") => {
                    format!(
                        "{}: kubectl reads the unquoted `{text}` as a boolean (YAML 1.1); quote it: \"{text}\"",
                        v.message
                    )
                }
                _ => v.message,
            };
            report.push(&v.path, message);
        }
        if report.problems.len() > before {
            return;
        }
        if let Err(errors) = self.cel.validate_compiled(&ks.cel, &object, None) {
            for e in errors.iter() {
                report.push(&e.field_path, e.message.clone());
            }
            return;
        }
        let fleet = &mut outcome.fleet;
        match kind {
            "Project" => typed(file, &doc, &mut report, &mut fleet.projects),
            "Mirror" => typed(file, &doc, &mut report, &mut fleet.mirrors),
            "Sponsor" => typed(file, &doc, &mut report, &mut fleet.sponsors),
            _ => typed(file, &doc, &mut report, &mut fleet.rules),
        }
    }
}

/// Reads the checked document as its type and keeps it in `into`.
fn typed<T: DeserializeOwned>(
    file: &str,
    doc: &yaml::Document,
    report: &mut Reporter<'_>,
    into: &mut Vec<Located<T>>,
) {
    match serde_json::from_value::<T>(doc.value.clone()) {
        Ok(resource) => into.push(Located {
            file: file.to_owned(),
            line: doc.line,
            lines: doc.lines.clone(),
            resource,
        }),
        Err(e) => report.push("", format!("cannot be read as this kind: {e}")),
    }
}

struct Reporter<'a> {
    file: &'a str,
    doc: &'a yaml::Document,
    kind: Option<String>,
    name: Option<String>,
    problems: &'a mut Vec<Problem>,
}

impl Reporter<'_> {
    fn push(&mut self, path: &str, message: String) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line: self.doc.lines.line_of(path).unwrap_or(self.doc.line),
            kind: self.kind.clone(),
            name: self.name.clone(),
            path: path.to_owned(),
            message,
        });
    }
}

/// Checks `metadata` as the API server would for a namespaced resource.
fn check_metadata(metadata: Option<&Value>, report: &mut Reporter<'_>) {
    let Some(Value::Object(meta)) = metadata else {
        report.push("metadata", "is required, with at least a name".into());
        return;
    };
    match meta.get("name") {
        None => report.push("metadata.name", "is required".into()),
        Some(Value::String(name)) => {
            if let Some(why) = dns_subdomain_problem(name) {
                report.push(
                    "metadata.name",
                    format!("{name:?} is not a valid name: {why}"),
                );
            }
        }
        Some(other) => report.push(
            "metadata.name",
            format!("must be a string, not {}", schema::describe(other)),
        ),
    }
    if let Some(ns) = meta.get("namespace") {
        match ns.as_str() {
            Some(ns)
                if ns.len() <= 63 && dns_subdomain_problem(ns).is_none() && !ns.contains('.') => {}
            _ => report.push(
                "metadata.namespace",
                format!(
                    "{ns} is not a valid namespace (lower-case letters, digits and '-', at most 63)"
                ),
            ),
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(map) = meta.get(field) {
            let all_strings = map
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !all_strings {
                report.push(
                    &format!("metadata.{field}"),
                    "must map names to strings (quote numbers and booleans)".into(),
                );
            }
        }
    }
}

/// Why `name` is not a DNS-1123 subdomain, if it is not.
pub fn dns_subdomain_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > 253 {
        return Some("it is longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Some("use only lower-case letters, digits, '-' and '.'");
    }
    let bad_edge = |s: &str| s.starts_with(['-', '.']) || s.ends_with(['-', '.']);
    if bad_edge(name)
        || name
            .split('.')
            .any(|part| part.is_empty() || bad_edge(part))
    {
        return Some("it must start and end with a letter or digit");
    }
    None
}

#[cfg(test)]
mod tests;
