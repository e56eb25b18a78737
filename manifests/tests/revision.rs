//! Manifests read at a Git revision (`validate --probe --base`): the committed texts, not the
//! working copy's; paths the revision lacks contribute nothing; the same file names as a
//! read of the disk; precise errors for a missing revision or a path outside the repository.

#![allow(clippy::unwrap_used)]

use mirrorfleet_manifests::{Error, read, revision::read_at};
use mirrorfleet_testkit::git::{commit, origin};

#[test]
fn the_base_revision_is_read_from_the_tree_not_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let repo = origin(dir.path());
    commit(
        &repo,
        &[
            ("fleet/a.yaml", "kind: A # committed\n"),
            ("fleet/.hidden/h.yaml", "kind: Hidden\n"),
            ("fleet/kustomization.yaml", "kind: Kustomization\n"),
            ("fleet/notes.txt", "not a manifest\n"),
            ("fleet/sub/b.yml", "kind: B\n"),
            ("other/c.yaml", "kind: C\n"),
        ],
        false,
    );
    // The working copy: a.yaml edited, a new file and a new directory.
    std::fs::write(dir.path().join("fleet/a.yaml"), "kind: A # edited\n").unwrap();
    std::fs::write(dir.path().join("fleet/new.yaml"), "kind: New\n").unwrap();
    std::fs::create_dir(dir.path().join("added")).unwrap();
    std::fs::write(dir.path().join("added/d.yaml"), "kind: D\n").unwrap();

    let fleet = dir.path().join("fleet");
    let added = dir.path().join("added");
    let base = read_at(&[fleet.clone(), added.clone()], "HEAD").unwrap();
    let names = |m: &mirrorfleet_manifests::Manifests| -> Vec<(String, String)> { m.files.clone() };
    assert_eq!(
        names(&base),
        [
            (
                fleet.join("a.yaml").display().to_string(),
                "kind: A # committed\n".to_owned()
            ),
            (
                fleet.join("sub/b.yml").display().to_string(),
                "kind: B\n".to_owned()
            ),
        ],
        "committed texts, the disk's rules, nothing from a directory the base lacks"
    );
    assert!(base.problems.is_empty());
    // The names match those of the disk's read, file for file.
    let disk = read(std::slice::from_ref(&fleet)).unwrap();
    let disk_names: Vec<&str> = disk.files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        disk_names.contains(&base.files[0].0.as_str()),
        "{disk_names:?}"
    );
    assert!(
        disk_names.contains(&base.files[1].0.as_str()),
        "{disk_names:?}"
    );

    // One file, named as such.
    let one = read_at(&[fleet.join("sub/b.yml")], "HEAD").unwrap();
    assert_eq!(one.files.len(), 1);

    // A revision that is not there.
    match read_at(std::slice::from_ref(&fleet), "origin/main") {
        Err(e @ Error::NoRevision { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("origin/main is not a revision of the Git repository at "),
                "{msg}"
            );
            assert!(msg.contains("fetch-depth: 0"), "{msg}");
        }
        other => panic!("{other:?}"),
    }

    // A path outside any repository.
    let elsewhere = tempfile::tempdir().unwrap();
    match read_at(&[elsewhere.path().to_owned()], "HEAD") {
        Err(e @ Error::NotInRepository { .. }) => {
            assert!(e.to_string().contains("is not in a Git repository"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
