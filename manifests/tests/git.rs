//! The Git source against real repositories made by the test: clone, fast-forward, a
//! rewritten branch, precise errors.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use mirrorfleet_manifests::{Error, GitSource};
use mirrorfleet_testkit::git::{commit, origin};

fn source(url: &Path, checkout: &Path, path: &str) -> GitSource {
    GitSource {
        url: url.display().to_string(),
        branch: "main".into(),
        path: path.into(),
        checkout: checkout.to_owned(),
        ssh_key: None,
        token_file: None,
    }
}

#[test]
fn clone_fast_forward_rewrite_and_errors() {
    let remote_dir = tempfile::tempdir().unwrap();
    let repo = origin(remote_dir.path());
    let c1 = commit(&repo, &[("fleet/a.yaml", "a: 1\n")], false);
    let local = tempfile::tempdir().unwrap();
    let checkout = local.path().join("wc");
    let src = source(remote_dir.path(), &checkout, "fleet");

    let first = src.sync().unwrap();
    assert_eq!((first.commit.as_str(), first.changed), (c1.as_str(), true));
    assert_eq!(
        std::fs::read_to_string(first.dir.join("a.yaml")).unwrap(),
        "a: 1\n"
    );
    assert!(!src.sync().unwrap().changed, "nothing new");

    let c2 = commit(&repo, &[("fleet/b.yaml", "b: 2\n")], false);
    let second = src.sync().unwrap();
    assert_eq!(
        (second.commit.as_str(), second.changed),
        (c2.as_str(), true)
    );
    assert!(second.dir.join("b.yaml").exists(), "fast-forwarded");

    // The branch is force-pushed to unrelated history: the working copy follows it.
    let c3 = commit(&repo, &[("fleet/a.yaml", "a: 3\n")], true);
    let third = src.sync().unwrap();
    assert_eq!(third.commit, c3);
    assert_eq!(
        std::fs::read_to_string(third.dir.join("a.yaml")).unwrap(),
        "a: 3\n"
    );

    // Errors name what is wrong.
    let no_path = source(remote_dir.path(), &checkout, "elsewhere")
        .sync()
        .unwrap_err();
    assert!(matches!(no_path, Error::NoPath { .. }), "{no_path}");
    assert!(no_path.to_string().contains("elsewhere"), "{no_path}");
    let mut other = source(remote_dir.path(), &local.path().join("wc2"), "fleet");
    other.branch = "nope".into();
    let no_branch = other.sync().unwrap_err();
    // The branch is named by libgit2's cause, printed after ours.
    let chain = mirrorfleet_runtime::error_chain(&no_branch);
    assert!(
        chain.starts_with("git clone of ") && chain.contains("nope"),
        "{chain}"
    );
    let missing = source(&local.path().join("missing"), &local.path().join("wc3"), "")
        .sync()
        .unwrap_err();
    assert!(
        missing.to_string().starts_with("git clone of "),
        "{missing}"
    );
    let mut token = source(remote_dir.path(), &local.path().join("wc4"), "fleet");
    token.token_file = Some(local.path().join("no-token"));
    let unreadable = token.sync().unwrap_err();
    assert!(unreadable.to_string().contains("no-token"), "{unreadable}");
}
