//! The API server refuses what `mirrorfleet validate` refuses about one object alone, and
//! accepts what needs other objects to be judged: `kubectl apply` without `mirrorfleet
//! validate` cannot put a broken Mirror in the cluster, and the two cannot drift apart.
//!
//! Every check of `validate`, by what it needs to see:
//!
//! | check (in `validate/src`) | fixtures | needs | on the API server |
//! |---|---|---|---|
//! | YAML syntax, duplicate keys, a document that is not a mapping (`yaml.rs`) | 19, 20, 27 | the file | kubectl's reader refuses 19 and 27; it keeps the last of duplicate keys (20), so no server sees them |
//! | `apiVersion`/`kind`, unknown kinds and versions, foreign resources (`lib.rs`) | 17, 18 | the document | no such resource (17); a ConfigMap is someone else's (18) |
//! | `metadata`: name, namespace, labels (`lib.rs`) | 22 | one object | ObjectMeta validation |
//! | types, required fields, enums, ranges, lengths, patterns, sets and map keys (`schema.rs`) | 03, 04, 10, 11, 25 | one object | the OpenAPI schema |
//! | unknown fields (`schema.rs`) | 01 | one object | pruned, or refused (400) with kubectl's default `--validate=strict` |
//! | the CRD's CEL rules, evaluated by kube-cel (`lib.rs`) | 09, 12, 13, 23, 26 | one object | the same rules |
//! | assigned country codes, continent of the country (`rules.rs`) | 02, 24 | one object | CEL (`crds/src/v1alpha1/cel.rs`) |
//! | CIDRs parse and have no host bits (`rules.rs`) | 08 | one object | CEL |
//! | base URLs: host, port, no credentials, query or fragment (`rules.rs`) | 28 | one object | CEL |
//! | a mirror excludes a country it serves; countryOnly with continentOnly; an IP host outside `addressFamilies` (`rules.rs`) | 21 | one object | CEL |
//! | names defined twice (`rules.rs`) | 07 | the fleet | — (applying updates the object) |
//! | references: a Mirror's sponsor and projects, a RegionRule's mirrors, sponsors and projects (`rules.rs`) | 05, 06 | the fleet | — (the operator reports them in status) |
//! | project routes: prefixes overlapping, a host routed twice (`rules.rs`) | 14 | the fleet | — |
//! | region rules contradicting each other, or steering clients to a mirror that may never serve them (`rules.rs`) | 15, 16 | the fleet | — |
//!
//! Known differences: a port from 65536 to 99999 in a mirror's project URL, which only
//! `validate` refuses (checked as such below: see `port_range_gap`); and, not tested here, an
//! explicit `null` in an optional field, which the API server treats as absent and kube-cel
//! (in `validate`) does not (so `validate` refuses `country: null`, or accepts `latitude:
//! null` with a longitude, where the server does the opposite), and IDNA validity of
//! non-ASCII host names (see `crds/src/v1alpha1/cel.rs`).
//!
//! Needs the binaries of `scripts/k8s-bins`, like `tests/k8s_api.rs`; each test starts its
//! own API server, and the file runs in about 30 s here (596 edge cases as dry runs).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use mirrorfleet_testkit::kube::ApiServer;
use mirrorfleet_validate::{Options, Problem, SourceFile, validate};
use serde_json::{Value, json};

/// Where the examples go (their kustomization's namespace) and the fixtures with them.
const NAMESPACE: &str = "mirrorfleet";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What a broken manifest needs to be judged, which decides what the API server must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    /// The object alone: the server refuses it as `validate` does.
    Object,
    /// Other objects: the server accepts it (the operator reports it).
    Fleet,
    /// It never reaches the server as a mirrorfleet object: kubectl's verdict is recorded.
    Client(KubectlSays),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KubectlSays {
    Refuses,
    Applies,
}

/// Every broken manifest of `validate/tests/fixtures/invalid/`, classified (the table above).
const FIXTURES: &[(&str, Needs)] = &[
    ("01-unknown-field.yaml", Needs::Object),
    ("02-bad-country.yaml", Needs::Object),
    ("03-norway-unquoted.yaml", Needs::Object),
    ("04-url-scheme-mismatch.yaml", Needs::Object),
    ("05-missing-sponsor.yaml", Needs::Fleet),
    ("06-missing-project.yaml", Needs::Fleet),
    ("07-duplicate-name.yaml", Needs::Fleet),
    ("08-bad-cidr.yaml", Needs::Object),
    ("09-latitude-without-longitude.yaml", Needs::Object),
    ("10-weight-out-of-range.yaml", Needs::Object),
    ("11-bad-address-family.yaml", Needs::Object),
    ("12-no-download-url.yaml", Needs::Object),
    ("13-source-two-kinds.yaml", Needs::Object),
    ("14-overlapping-prefix.yaml", Needs::Fleet),
    ("15-contradicting-rules.yaml", Needs::Fleet),
    ("16-rule-unservable.yaml", Needs::Fleet),
    ("17-unknown-kind.yaml", Needs::Client(KubectlSays::Refuses)),
    (
        "18-foreign-resource.yaml",
        Needs::Client(KubectlSays::Applies),
    ),
    ("19-syntax-error.yaml", Needs::Client(KubectlSays::Refuses)),
    ("20-duplicate-key.yaml", Needs::Client(KubectlSays::Applies)),
    ("21-excluded-own-country.yaml", Needs::Object),
    ("22-bad-name.yaml", Needs::Object),
    ("23-maintenance-backwards.yaml", Needs::Object),
    ("24-continent-mismatch.yaml", Needs::Object),
    ("25-project-listed-twice.yaml", Needs::Object),
    ("26-scale-without-factor.yaml", Needs::Object),
    ("27-not-a-mapping.yaml", Needs::Client(KubectlSays::Refuses)),
    ("28-credentials-in-url.yaml", Needs::Object),
    ("29-credentials-in-hub-url.yaml", Needs::Object),
];

/// The example fleet's manifests as (name, text), as `validate/tests/fixtures.rs` reads them.
fn example_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && !path.ends_with("kustomization.yaml")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root().join("examples"), &mut out);
    out
}

/// `validate`'s problems with `extra` validated together with the example fleet.
fn validate_with_examples(extra: &[(String, String)]) -> Vec<Problem> {
    let files: Vec<(String, String)> = example_files().into_iter().chain(extra.to_vec()).collect();
    let sources: Vec<SourceFile<'_>> = files
        .iter()
        .map(|(name, text)| SourceFile { name, text })
        .collect();
    validate(&sources, Options::default()).problems
}

/// A server with the CRDs Established and the example fleet applied (kubectl, as a GitOps
/// repository's CI or a user would).
async fn server_with_examples() -> ApiServer {
    let server = ApiServer::start().await;
    let crds = mirrorfleet_crds::v1alpha1::crds_yaml();
    server.kubectl(&["apply", "-f", "-"], Some(&crds)).await;
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let crd_names: Vec<String> = mirrorfleet_crds::v1alpha1::crds()
        .iter()
        .map(|c| format!("crd/{}", c.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    wait.extend(crd_names.iter().map(String::as_str));
    server.kubectl(&wait, None).await;
    server.create_namespace(NAMESPACE).await;
    let examples = repo_root().join("examples");
    server
        .kubectl(&["apply", "-k", examples.to_str().unwrap()], None)
        .await;
    server
}

/// The API of `kind` in [`NAMESPACE`].
fn api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("mirrorfleet.io", "v1alpha1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

/// What the API server said to a create: `Ok`, or the status code with the fields named.
type Answer = Result<(), (u16, String, Vec<String>)>;

async fn create(client: &kube::Client, doc: &Value, dry_run: bool) -> Answer {
    let kind = doc["kind"].as_str().unwrap();
    let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    match api(client, kind).create(&params, &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => {
            let fields = status
                .details
                .iter()
                .flat_map(|d| &d.causes)
                .map(|c| c.field.clone())
                .collect();
            Err((status.code, status.message.clone(), fields))
        }
        Err(other) => panic!("creating {kind}: {other}"),
    }
}

#[tokio::test]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn the_server_refuses_each_broken_object_and_accepts_what_needs_the_fleet() {
    let dir = repo_root().join("validate/tests/fixtures/invalid");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let classified: Vec<String> = FIXTURES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        on_disk, classified,
        "every fixture is classified here (single object, fleet or client) before it is added"
    );

    let server = server_with_examples().await;
    let client = server.client().await;
    let mut refused = 0;
    for (file, needs) in FIXTURES {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        match needs {
            Needs::Object => {
                let problems = validate_with_examples(&[(file.to_string(), text.clone())]);
                assert!(!problems.is_empty(), "{file}: validate finds nothing");
                let (docs, error) = mirrorfleet_validate::yaml::load(&text);
                assert!(error.is_none() && docs.len() == 1, "{file}: one document");
                let doc = docs.into_iter().next().unwrap().value;
                let (code, message, fields) = match create(&client, &doc, false).await {
                    Ok(()) => {
                        panic!("{file}: the API server accepted it; validate says {problems:#?}")
                    }
                    Err(refusal) => refusal,
                };
                assert_eq!(code, 422, "{file}: {message}");
                for p in &problems {
                    if p.message.starts_with("unknown field") {
                        // Pruned by default; kubectl asks for strict field validation.
                        let out = server
                            .try_kubectl(&["apply", "-n", NAMESPACE, "-f", "-"], Some(&text))
                            .await
                            .unwrap_err();
                        assert!(
                            out.stderr
                                .contains(&format!("unknown field \"{}\"", p.path)),
                            "{file}: kubectl apply says {}",
                            out.stderr
                        );
                    } else {
                        assert!(
                            fields.contains(&p.path),
                            "{file}: validate names {} ({}), the API server {fields:?}: {message}",
                            p.path,
                            p.message
                        );
                    }
                }
                refused += 1;
            }
            Needs::Fleet => {
                let (docs, _) = mirrorfleet_validate::yaml::load(&text);
                for doc in docs {
                    let doc = doc.value;
                    let kind = doc["kind"].as_str().unwrap();
                    let name = doc["metadata"]["name"].as_str().unwrap();
                    let params = PatchParams::apply("crd-admission-test").force();
                    let applied = api(&client, kind)
                        .patch(name, &params, &Patch::Apply(&doc))
                        .await;
                    assert!(
                        applied.is_ok(),
                        "{file}: needs the fleet to be judged, so the API server takes it: {applied:?}"
                    );
                }
            }
            Needs::Client(says) => {
                let out = server
                    .try_kubectl(&["apply", "-n", NAMESPACE, "-f", "-"], Some(&text))
                    .await;
                assert_eq!(
                    out.is_ok(),
                    *says == KubectlSays::Applies,
                    "{file}: kubectl apply gave {out:?}"
                );
            }
        }
    }
    let objects = FIXTURES.iter().filter(|(_, n)| *n == Needs::Object).count();
    assert_eq!(refused, objects);
}

/// Objects built around the values `validate`'s rules care most about, to show that `validate`
/// and the API server give the same verdict on each: valid ones both accept, and broken ones
/// both refuse naming the same field.
fn edge_cases() -> Vec<Value> {
    let mut specs: Vec<(&str, Value)> = Vec::new();
    let mirror = |project: Value, extra: Value| {
        let mut spec = json!({
            "sponsorRef": "rhein-hosting",
            "projects": [project],
            "addressFamilies": ["ipv4", "ipv6"],
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    let https_ok = "https://mirror.example.org/debian/";
    for url in URLS {
        let field = url.split(':').next().unwrap_or_default();
        let mut project = json!({"project": "debian", "https": https_ok});
        match field {
            "http" | "https" | "rsync" | "ftp" => project[field] = (*url).into(),
            _ => project["https"] = (*url).into(),
        }
        specs.push(("Mirror", mirror(project, json!({}))));
        if field == "https" || field == "rsync" {
            let mut source = json!({});
            source[if field == "rsync" { "rsync" } else { "http" }] = (*url).into();
            specs.push((
                "Project",
                json!({"routing": {"pathPrefix": "/"}, "source": source}),
            ));
        }
        if field == "https" {
            specs.push((
                "Project",
                json!({"routing": {"pathPrefix": "/"}, "source": {"local": "/srv"}, "fallbacks": [{"url": url}]}),
            ));
        }
    }
    let debian = json!({"project": "debian", "https": https_ok});
    for cidr in CIDRS {
        specs.push((
            "Mirror",
            mirror(debian.clone(), json!({"networks": [cidr]})),
        ));
        specs.push((
            "RegionRule",
            json!({"priority": 7, "match": {"networks": [cidr]}, "action": "Prefer", "mirrors": ["rhein-frankfurt"]}),
        ));
    }
    let assigned = mirrorfleet_crds::geo::countries().iter().map(|c| c.code);
    for code in assigned.chain(["UK", "EL", "EU", "XX", "ZZ", "de", "D", "DEU"]) {
        specs.push((
            "Mirror",
            mirror(debian.clone(), json!({"location": {"country": code}})),
        ));
    }
    for (country, continent) in [
        ("DE", "EU"),
        ("DE", "NA"),
        ("TR", "EU"),
        ("EG", "AF"),
        ("RU", "AS"),
        ("XX", "EU"),
    ] {
        let location = json!({"country": country, "continent": continent});
        specs.push((
            "Mirror",
            mirror(debian.clone(), json!({"location": location})),
        ));
        specs.push((
            "Project",
            json!({"routing": {"pathPrefix": "/"}, "source": {"local": "/srv"}, "fallbacks": [{"url": https_ok, "country": country, "continent": continent}]}),
        ));
    }
    let spans = [
        json!({"location": {"country": "DE"}, "restrictions": {"excludedCountries": ["DE"]}}),
        json!({"location": {"country": "DE"}, "restrictions": {"excludedCountries": ["FR"]}}),
        json!({"additionalCountries": ["AT", "CH"], "restrictions": {"excludedCountries": ["CH", "DE"]}}),
        json!({"additionalCountries": ["XX"], "restrictions": {"excludedCountries": ["UK"]}}),
        json!({"location": {"country": "DE"}, "restrictions": {"countryOnly": true, "continentOnly": true}}),
        json!({"location": {"country": "DE"}, "restrictions": {"continentOnly": true}}),
        json!({"asns": [4294967295u64]}),
        json!({"asns": [4294967296u64]}),
        json!({"contact": "noc@example.org"}),
        json!({"contact": "noc\u{a0}@example.org"}),
    ];
    for extra in spans {
        specs.push(("Mirror", mirror(debian.clone(), extra)));
    }
    for (families, url) in [
        (json!(["ipv6"]), "https://192.0.2.10/debian/"),
        (json!(["ipv4"]), "https://192.0.2.10/debian/"),
        (json!(["ipv4"]), "https://[2001:db8::10]/debian/"),
        (json!(["ipv6"]), "https://[2001:db8::10]:8443/debian/"),
        (json!(["ipv6"]), "https://mirror.example.org/debian/"),
        (json!(["ipv4"]), "https://[2001:db8::1%eth0]/debian/"),
    ] {
        let mut spec = mirror(json!({"project": "debian", "https": url}), json!({}));
        spec["addressFamilies"] = families;
        specs.push(("Mirror", spec));
    }
    for url in [
        "https://sponsor.example.org/",
        "https://sponsor.example.org/\u{2003}x",
        "https://sponsor.example.org/\u{b}",
    ] {
        specs.push((
            "Sponsor",
            json!({"displayName": "S", "url": url, "logo": url}),
        ));
    }
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (kind, mut spec))| {
            if kind == "Project" {
                spec["routing"]["pathPrefix"] = format!("/edge-case-{i}/").into();
            }
            // No namespace: the examples have none either, and the API puts it in NAMESPACE.
            json!({
                "apiVersion": "mirrorfleet.io/v1alpha1",
                "kind": kind,
                "metadata": {"name": format!("edge-case-{i}")},
                "spec": spec,
            })
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn validate_and_the_server_agree_on_edge_cases() {
    let cases = edge_cases();
    // One run over every case (JSON is YAML), with the examples so that references resolve.
    let text: String = cases.iter().map(|c| format!("---\n{c}\n")).collect();
    let mut by_name: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    for p in validate_with_examples(&[("edge-cases.yaml".into(), text)]) {
        assert_eq!(p.file, "edge-cases.yaml", "the examples stay valid: {p}");
        let name = p.name.clone().unwrap_or_default();
        by_name.entry(name).or_default().push(p);
    }

    let server = server_with_examples().await;
    let client = server.client().await;
    let answers: Vec<Answer> = stream::iter(&cases)
        .map(|case| create(&client, case, true))
        .buffered(4)
        .collect()
        .await;

    let mut disagreements = Vec::new();
    let (mut accepted, mut refused, mut gaps) = (0, 0, 0);
    for (case, answer) in cases.iter().zip(answers) {
        let name = case["metadata"]["name"].as_str().unwrap();
        let problems = by_name.remove(name).unwrap_or_default();
        let gap = port_range_gap(case);
        match (&answer, problems.is_empty()) {
            (Ok(()), false) if gap => gaps += 1,
            _ if gap => disagreements.push(format!(
                "{}: the known gap closed (validate says {problems:?}, the API server {answer:?}): take the case out of port_range_gap",
                case["spec"]
            )),
            (Ok(()), true) => accepted += 1,
            (Err((422, message, fields)), false) => {
                refused += 1;
                let unnamed: Vec<&Problem> =
                    problems.iter().filter(|p| !fields.contains(&p.path)).collect();
                if !unnamed.is_empty() {
                    disagreements.push(format!(
                        "{}: validate names {unnamed:?}, the API server {fields:?}: {message}",
                        case["spec"]
                    ));
                }
            }
            _ => disagreements.push(format!(
                "{}: validate says {:?}, the API server {answer:?}",
                case["spec"],
                problems.iter().map(ToString::to_string).collect::<Vec<_>>()
            )),
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
    assert!(by_name.is_empty(), "problems with no case: {by_name:?}");
    eprintln!("{accepted} accepted by both, {refused} refused by both, {gaps} in the known gap");
    assert!(accepted > 0 && refused > 0 && gaps > 0);
}

/// The one difference left on purpose: a port from 65536 to 99999 in a mirror's project URL
/// (a list of up to 500) is refused by `validate` only; checking its range there does not fit
/// the API server's cost budget.
fn port_range_gap(case: &Value) -> bool {
    let urls = case["spec"]["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| ["http", "https", "rsync", "ftp"].map(|f| p[f].as_str()))
        .flatten();
    case["kind"] == "Mirror"
        && urls.into_iter().any(|u| {
            let authority = u.split('/').nth(2).unwrap_or_default();
            let port = authority.rsplit_once(':').map_or("", |(_, p)| p);
            port.parse::<u32>()
                .is_ok_and(|p| (65536..100_000).contains(&p))
        })
}

/// Base URLs for the edge cases: each goes into the field its scheme names (anything else
/// into `https`), and the http(s) and rsync ones into a Project's source and fallbacks too.
const URLS: &[&str] = &[
    "https://mirror.example.org/debian/",
    "https://MIRROR.Example.ORG/debian/",
    "https://mirror.example.org:8443/debian/",
    "https://mirror.example.org:/debian/",
    "https://mirror.example.org:0/debian/",
    "https://mirror.example.org:65535/debian/",
    "https://mirror.example.org:065535/debian/",
    "https://mirror.example.org:65536/debian/",
    "https://mirror.example.org:99999/debian/",
    "https://mirror.example.org:100000/debian/",
    "https://mirror.example.org:8o8o/debian/",
    "https://mirror.example.org:80:80/debian/",
    "https://mirror.example.org:+80/debian/",
    "https://192.0.2.1/debian/",
    "https://192.0.2.1:8080/debian/",
    "https://192.0.2.256/debian/",
    "https://1.2.3.4./debian/",
    "https://mirror.123/debian/",
    "https://123.mirror/debian/",
    "https://mirror.0x1f/debian/",
    "https://mirror.0xg/debian/",
    "https://[2001:db8::1]/debian/",
    "https://[2001:DB8::1]:443/debian/",
    "https://[::1]/debian/",
    "https://[2001:db8::g]/debian/",
    "https://[2001:db8::1/debian/",
    "https://[2001:db8::1]x/debian/",
    "https://[1.2.3.4]/debian/",
    "https://[::ffff:192.0.2.1]/debian/",
    "https://[1:2:3:4:5:6:7:8:9]/debian/",
    "https://[fe80::1%25eth0]/debian/",
    "https://a[b.example/debian/",
    "https://a<b.example/debian/",
    "https://a^b.example/debian/",
    "https://a|b.example/debian/",
    "https://a%41.example/debian/",
    "https://a_b.example/debian/",
    "https://-a-.example/debian/",
    "https://a..b/debian/",
    "https://a!b$&'()*+,;=c/debian/",
    "https://a\"b/debian/",
    "https://a\u{1}b/debian/",
    "https://bücher.example/debian/",
    "https://xn--bcher-kva.example/debian/",
    "https:///mirror.example.org/debian/",
    "https://\\mirror.example.org/debian/",
    "https://mirror.example.org\\debian/",
    "https://mirror.example.org/de\\bian/",
    "https://evil.example\\@mirror.example.org/",
    "https://@mirror.example.org/debian/",
    "https://:@mirror.example.org/debian/",
    "https://user@mirror.example.org/debian/",
    "https://user:pw@mirror.example.org/debian/",
    "https://:pw@mirror.example.org/debian/",
    "https://u:p@ss@mirror.example.org/debian/",
    "https://user@/debian/",
    "https://:443/debian/",
    "https://mirror.example.org/debian/?/",
    "https://mirror.example.org/debian/#/",
    "https://mirror.example.org?/",
    "https://mirror.example.org/a b/",
    "https://mirror.example.org/a\u{a0}b/",
    "https://mirror.example.org/a\u{2028}b/",
    "https://mirror.example.org/%zz/",
    "https://mirror.example.org/debian",
    "https://mirror.example.org//",
    "http://mirror.example.org/debian/",
    "http://mirror.example.org:80/debian/",
    "http://192.0.2.1:70000/debian/",
    "ftp://mirror.example.org/debian/",
    "ftp://user:pw@mirror.example.org/debian/",
    "ftp://[2001:db8::21]/debian/",
    "rsync://mirror.example.org/debian/",
    "rsync://mirror.example.org:873/debian/",
    "rsync://mirror.example.org:99999/debian/",
    "rsync://mirror.example.org:x/debian/",
    "rsync:///debian/",
    "rsync://@mirror.example.org/debian/",
    "rsync://user:hunter2@mirror.example.org/debian/",
    "rsync://mirror\\example.org/debian/",
    "rsync://mirror.example.org/de\\bian/",
    "rsync://a<b/debian/",
    "rsync://a^b/debian/",
    "rsync://a%zz/debian/",
    "rsync://A.EXAMPLE/debian/",
    "rsync://bücher/debian/",
    "rsync://1.2.3.256/debian/",
    "rsync://mirror.123/debian/",
    "rsync://[2001:db8::873]/debian/",
    "rsync://[2001:db8::873/debian/",
    "rsync://[::ffff:1.2.3.4]/debian/",
    "rsync://mirror.example.org/debian/?x/",
];

/// Networks for the edge cases: canonical, with host bits, and the forms where `ipnet` and
/// Go's `netip` disagree.
const CIDRS: &[&str] = &[
    "192.0.2.0/24",
    "192.0.2.1/24",
    "192.0.2.1/32",
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.2.3/8",
    "1.2.3.4/33",
    "1.2.3.4",
    "010.0.0.0/8",
    "10.0.0.0/08",
    "10.0.0.0/008",
    "1.2.3.0/+24",
    "1.2.3/24",
    "2001:db8::/32",
    "2001:DB8::/32",
    "2001:db8::1/32",
    "2001:0db8:0000::/48",
    "2001:db8::/032",
    "::/0",
    "::1/128",
    "::1.2.3.4/128",
    "64:ff9b::1.2.3.4/128",
    "::ffff:10.0.0.0/104",
    "::ffff:1.2.3.0/120",
    "1::2:3:4:5:6:7:8/128",
    "1:2:3:4:5:6::1.2.3.4/128",
    "1:2:3:4:5:6:7:8/128",
    "1:2:3:4:5:6:7::/128",
    "::1:2:3:4:5:6:7/128",
    "fe80::1%eth0/64",
    "2001:db8::/129",
    "not-a-network",
];
