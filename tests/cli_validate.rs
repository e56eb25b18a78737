//! `mirrorfleet validate` as a user runs it: exit codes, output formats, and bad input on disk.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .arg("validate")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("mirrorfleet runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_fleet_passes() {
    let out = validate(&["examples/"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).starts_with("no problems in 26 documents of 26 files"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn problems_exit_1_with_one_line_each() {
    let out = validate(&[
        "examples/",
        "validate/tests/fixtures/invalid/08-bad-cidr.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with(
        "validate/tests/fixtures/invalid/08-bad-cidr.yaml:11: Mirror/isp-box: spec.networks[0]: "
    ));
    assert!(text(&out.stderr).contains("2 problems"));
}

#[test]
fn json_format_is_machine_readable() {
    let out = validate(&[
        "--format",
        "json",
        "examples/",
        "validate/tests/fixtures/invalid/05-missing-sponsor.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["documents"], 27);
    let problem = &report["problems"][0];
    assert_eq!(
        problem["file"],
        "validate/tests/fixtures/invalid/05-missing-sponsor.yaml"
    );
    assert_eq!(problem["line"], 6);
    assert_eq!(problem["kind"], "Mirror");
    assert_eq!(problem["name"], "orphan");
    assert_eq!(problem["path"], "spec.sponsorRef");
    assert_eq!(
        problem["message"],
        "Sponsor/rhein-hostin does not exist (did you mean rhein-hosting?)"
    );
}

#[test]
fn a_missing_path_or_an_empty_directory_cannot_run() {
    let out = validate(&["no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no/such/dir: no such file or directory"),
        "{}",
        text(&out.stderr)
    );

    let empty = tempfile::tempdir().unwrap();
    fs::create_dir(empty.path().join(".git")).unwrap();
    fs::write(empty.path().join(".git/config.yaml"), "not: [read").unwrap();
    fs::write(empty.path().join("README.md"), "# not a manifest").unwrap();
    let out = validate(&[empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no YAML manifests"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn binary_huge_and_non_utf8_files_are_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("binary.yaml"), b"apiVersion: v1\0\x01\x02").unwrap();
    fs::write(dir.path().join("latin1.yaml"), b"name: caf\xe9\n").unwrap();
    let huge = vec![b'#'; 9 * 1024 * 1024];
    fs::write(dir.path().join("huge.yaml"), huge).unwrap();
    fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: [x.yaml]\n",
    )
    .unwrap();
    let out = validate(&[dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("binary.yaml: is a binary file"), "{stdout}");
    assert!(
        stdout.contains("huge.yaml: is 9 MiB; manifests over 8 MiB are not read"),
        "{stdout}"
    );
    assert!(
        stdout.contains("latin1.yaml: is not UTF-8 text (invalid byte at offset 9)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("kustomization"),
        "kustomization.yaml is skipped: {stdout}"
    );
}

#[test]
fn a_named_file_is_read_whatever_its_extension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.txt");
    fs::write(&path, "apiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n").unwrap();
    let out = validate(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}
