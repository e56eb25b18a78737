//! The example fleet validates cleanly and compiles to the state the redirector reads, and
//! each broken manifest under `fixtures/invalid/`
//! produces exactly the problems written at its end as `# expect: …` lines (validated together
//! with the example fleet, so that references resolve).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};

use mirrorfleet_validate::compile::compile;
use mirrorfleet_validate::{Options, Outcome, SourceFile, validate};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example fleet as (name relative to the repository root, text).
fn example_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && !path.ends_with("kustomization.yaml")
            {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                out.push((name, fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = repo_root();
    let mut out = Vec::new();
    walk(&root.join("examples"), &root, &mut out);
    out
}

fn run(files: &[(String, String)]) -> Outcome {
    let sources: Vec<SourceFile<'_>> = files
        .iter()
        .map(|(name, text)| SourceFile { name, text })
        .collect();
    validate(&sources, Options::default())
}

#[test]
fn example_fleet_is_valid_and_realistic() {
    let outcome = run(&example_files());
    let problems: Vec<String> = outcome.problems.iter().map(ToString::to_string).collect();
    assert!(
        problems.is_empty(),
        "examples/ must validate cleanly:\n{}",
        problems.join("\n")
    );

    let fleet = &outcome.fleet;
    assert!(fleet.projects.len() >= 3, "at least 3 projects");
    assert!(fleet.sponsors.len() >= 4, "at least 4 sponsors");
    assert!(fleet.mirrors.len() >= 12, "at least 12 mirrors");
    assert!(fleet.rules.len() >= 3, "at least 3 region rules");

    let mut continents: Vec<_> = fleet
        .mirrors
        .iter()
        .filter_map(|m| m.resource.spec.location.as_ref()?.country.as_deref())
        .filter_map(|c| mirrorfleet_crds::geo::country(c).map(|c| c.continent))
        .collect();
    continents.sort();
    continents.dedup();
    assert!(
        continents.len() >= 4,
        "mirrors on at least 4 continents, got {continents:?}"
    );

    let specs: Vec<_> = fleet.mirrors.iter().map(|m| &m.resource.spec).collect();
    let all = fleet.projects.len();
    assert!(
        specs.iter().any(|s| s.projects.len() == all),
        "a big mirror carries everything"
    );
    assert!(
        specs
            .iter()
            .filter(|s| s.projects.len() <= 3 && s.projects.len() < all)
            .count()
            >= 3,
        "micro mirrors"
    );
    assert!(
        specs.iter().any(|s| s
            .projects
            .iter()
            .all(|p| p.https.is_none() && p.http.is_some())),
        "an http-only mirror"
    );
    assert!(
        specs.iter().any(|s| s
            .projects
            .iter()
            .all(|p| p.http.is_none() && p.https.is_some())),
        "an https-only mirror"
    );
    use mirrorfleet_crds::v1alpha1::AddressFamily;
    assert!(
        specs
            .iter()
            .any(|s| s.address_families == [AddressFamily::Ipv6]),
        "an IPv6-only mirror"
    );
    assert!(
        specs
            .iter()
            .any(|s| s.restrictions.as_ref().is_some_and(|r| r.country_only)),
        "a country-only mirror"
    );
    assert!(
        specs
            .iter()
            .any(|s| s.restrictions.as_ref().is_some_and(|r| r.as_only)),
        "an AS-only mirror"
    );
}

#[test]
fn each_broken_manifest_reports_exactly_its_expected_problems() {
    let dir = repo_root().join("validate/tests/fixtures/invalid");
    let mut fixtures: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 15,
        "at least 15 broken manifests, found {}",
        fixtures.len()
    );
    let examples = example_files();
    let mut failures = Vec::new();
    for path in &fixtures {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(path).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expected.is_empty(), "{name} has no `# expect:` line");
        let mut files = examples.clone();
        files.push((name.clone(), text.clone()));
        let got: Vec<String> = run(&files)
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        if got != expected {
            failures.push(format!(
                "{name}:\n  expected: {expected:#?}\n  got:      {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn problems_in_several_files_are_all_reported_in_one_run() {
    let dir = repo_root().join("validate/tests/fixtures/invalid");
    let mut files = example_files();
    for name in [
        "02-bad-country.yaml",
        "10-weight-out-of-range.yaml",
        "19-syntax-error.yaml",
    ] {
        files.push((name.to_owned(), fs::read_to_string(dir.join(name)).unwrap()));
    }
    let outcome = run(&files);
    let names: Vec<&str> = outcome.problems.iter().map(|p| p.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "02-bad-country.yaml",
            "10-weight-out-of-range.yaml",
            "19-syntax-error.yaml"
        ]
    );
}

#[test]
fn the_example_fleet_compiles() {
    let outcome = run(&example_files());
    assert!(outcome.problems.is_empty());
    let state = compile(&outcome.fleet);
    assert_eq!(state.projects.len(), 3);
    let sg = state.mirror("sakura-singapore").unwrap();
    assert_eq!(sg.location.country, None, "left to GeoIP");
    let oslo = state.mirror("mm-oslo").unwrap();
    assert_eq!(
        oslo.location.continent,
        Some(mirrorfleet_crds::geo::Continent::EU),
        "continent from the country"
    );
    let v6 = state.mirror("rhein-v6-frankfurt").unwrap();
    assert!(v6.ipv6 && !v6.ipv4);
    let east = state
        .rules
        .iter()
        .find(|r| r.name == "east-asia-local")
        .unwrap();
    assert_eq!(
        east.mirrors,
        ["sakura-singapore", "sakura-tokyo"],
        "sponsors expand to their mirrors"
    );
    assert_eq!(
        state.rules[0].name, "northwind-customers",
        "highest priority first"
    );
    let json = String::from_utf8(state.encode()).unwrap_or_default();
    assert!(!json.contains("noc@"), "contacts never reach the state");
    let frankfurt = state.mirror("rhein-frankfurt").unwrap();
    assert_eq!(frankfurt.maintenance, vec![(1_796_518_800, 1_796_526_000)]);
    let debian = state.project("debian").unwrap();
    assert_eq!(
        (
            debian.source_interval_seconds,
            debian.mirror_interval_seconds,
            debian.metadata_recheck_seconds
        ),
        (Some(600), Some(3600), Some(5)),
        "scan settings in seconds"
    );
    let fedora = state.project("fedora").unwrap();
    assert_eq!(fedora.metadata_recheck_seconds, None, "left to the default");
    let saopaulo = state.mirror("southern-cross-saopaulo").unwrap();
    assert_eq!(saopaulo.scan_interval_seconds, Some(90 * 60));
    assert_eq!(frankfurt.scan_interval_seconds, None);
}
