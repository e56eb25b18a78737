use super::*;

fn one(text: &str) -> Vec<String> {
    validate(
        &[SourceFile {
            name: "m.yaml",
            text,
        }],
        Options::default(),
    )
    .problems
    .iter()
    .map(ToString::to_string)
    .collect()
}

#[test]
fn every_cel_rule_of_every_crd_compiles() {
    for crd in v1alpha1::crds() {
        let schema = serde_json::to_value(
            &crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema,
        )
        .unwrap();
        let compiled = kube_cel::compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{}: {:?}",
            crd.spec.names.kind,
            compiled.compilation_errors()
        );
    }
}

#[test]
fn every_field_is_documented_for_kubectl_explain() {
    fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                if child
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(child_path.clone());
                }
                walk(child, &child_path, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for crd in v1alpha1::crds() {
        let schema = serde_json::to_value(
            &crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema,
        )
        .unwrap();
        walk(&schema, &crd.spec.names.kind, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn empty_and_comment_only_files_have_no_documents() {
    let outcome = validate(
        &[SourceFile {
            name: "e.yaml",
            text: "# nothing\n---\n",
        }],
        Options::default(),
    );
    assert_eq!(outcome.documents, 0);
    assert!(outcome.problems.is_empty());
}

#[test]
fn foreign_resources_can_be_skipped() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mirrors\n";
    assert_eq!(one(text).len(), 1);
    let outcome = validate(
        &[SourceFile {
            name: "m.yaml",
            text,
        }],
        Options { skip_foreign: true },
    );
    assert!(outcome.problems.is_empty());
}

#[test]
fn wrong_version_of_our_group_is_named() {
    let got = one(
        "apiVersion: mirrorfleet.io/v1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n",
    );
    assert_eq!(
        got,
        [
            "m.yaml:1: Sponsor/s: apiVersion: unknown version mirrorfleet.io/v1: this mirrorfleet understands mirrorfleet.io/v1alpha1"
        ]
    );
}

#[test]
fn missing_metadata_and_spec_are_reported() {
    let got = one("apiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\n");
    assert_eq!(
        got,
        [
            "m.yaml:1: Sponsor: metadata: is required, with at least a name",
            "m.yaml:1: Sponsor: spec: is required"
        ]
    );
}

#[test]
fn dns_names() {
    assert_eq!(dns_subdomain_problem("mirror-1.example"), None);
    assert!(dns_subdomain_problem("-x").is_some());
    assert!(dns_subdomain_problem("a..b").is_some());
    assert!(dns_subdomain_problem("").is_some());
    assert!(dns_subdomain_problem(&"a".repeat(254)).is_some());
}

#[test]
fn problem_display_leaves_out_what_is_unknown() {
    let p = Problem {
        file: "f.yaml".into(),
        line: 0,
        kind: None,
        name: None,
        path: String::new(),
        message: "is binary".into(),
    };
    assert_eq!(p.to_string(), "f.yaml: is binary");
}

const PROJECT: &str = "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: p\nspec:\n  routing:\n    pathPrefix: /p/\n  source:\n    http: https://origin.example/p/\n  fallbacks:\n    - url: https://origin.example/p/\n";

#[test]
fn a_webhook_carries_no_secret_into_public_manifests() {
    for (webhook, says) in [
        (
            "https://user:s3cret@hooks.example/p",
            "must not carry credentials",
        ),
        (
            "https://hooks.example/p?token=s3cret",
            "must not have a query",
        ),
    ] {
        let problems = one(&format!("{PROJECT}  push:\n    webhook: {webhook}\n"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.push.webhook") && p.contains(says)),
            "{webhook}: {problems:?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("s3cret")),
            "the secret is never echoed: {problems:?}"
        );
    }
    assert_eq!(
        one(&format!(
            "{PROJECT}  push:\n    webhook: https://hooks.example/p\n"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn only_yaml_1_1_and_1_2_are_read() {
    let problems = one(&format!("%YAML 9.9\n---\n{PROJECT}"));
    assert_eq!(
        problems,
        ["m.yaml:1: %YAML \"9.9\": only YAML 1.1 and 1.2 are read"]
    );
    assert_eq!(
        one(&format!("%YAML 1.2\n---\n{PROJECT}")),
        Vec::<String>::new()
    );
}

#[test]
fn a_report_line_cannot_be_forged_by_a_file_name() {
    let problems: Vec<String> = validate(
        &[SourceFile {
            name: "evil\nok.yaml: 0 problems\n",
            text: "kind: [",
        }],
        Options::default(),
    )
    .problems
    .iter()
    .map(ToString::to_string)
    .collect();
    assert!(!problems.is_empty());
    for p in &problems {
        assert!(!p.contains('\n'), "{p:?}");
        assert!(p.starts_with("evil\\nok.yaml: 0 problems\\n"), "{p:?}");
    }
}
