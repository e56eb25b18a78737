//! The `scan` commands as a user runs them: `mirrorfleet scan source` indexes a project from
//! manifests into the store, `mirrorfleet scan mirror` scans a mirror over a real rsync daemon
//! against that index, and an unknown mirror is refused with exit status 2.

#![allow(clippy::unwrap_used)]

use mirrorfleet_testkit::*;

#[test]
fn the_scan_commands_work_from_manifests_to_the_store() {
    let root = world_readable_tempdir();
    let t = 1_795_309_320;
    let (a, b, c) = (vec![b'a'; 1000], vec![b'b'; 2000], vec![b'c'; 3000]);
    write_tree(
        &root.path().join("source"),
        &[
            ("pool/main/a.deb", &a, t),
            ("pool/main/b.deb", &b, t),
            ("iso/c.iso", &c, t),
        ],
    );
    // The mirror lacks b.deb.
    write_tree(
        &root.path().join("partial"),
        &[("pool/main/a.deb", &a, t), ("iso/c.iso", &c, t)],
    );
    let daemon = rsync_daemon(&[("partial", &root.path().join("partial"))]);
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("fleet.yaml"),
        format!(
            "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    local: {src}\n\
             ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n\
             ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: loop\nspec:\n  sponsorRef: s\n  projects:\n    - project: demo\n      http: http://127.0.0.1:9/demo/\n      rsync: rsync://127.0.0.1:{port}/partial/\n",
            src = root.path().join("source").display(),
            port = daemon.port
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
            .args(args)
            .arg("--manifests")
            .arg(manifests.path())
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .unwrap()
    };
    let out = run(&["scan", "source", "--project", "demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("project demo: 3 files, 6000 bytes, serial "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&["scan", "mirror", "--mirror", "loop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mirror loop, project demo (rsync): 2 files, 4000 bytes, 1 missing, 0 mismatched\n"
    );
    let out = run(&["scan", "mirror", "--mirror", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mirror named nope"));
}
