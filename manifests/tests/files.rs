//! Reading manifests from disk: what cannot be read is reported, never skipped silently.

#![allow(clippy::unwrap_used)]

#[test]
fn directories_nested_too_deep_are_reported_not_skipped() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("top.yaml"), "kind: Sponsor\n").unwrap();
    let mut deep = root.path().to_path_buf();
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("lost.yaml"), "kind: Sponsor\n").unwrap();
    let read = mirrorfleet_manifests::read(&[root.path().to_path_buf()]).unwrap();
    assert_eq!(read.files.len(), 1, "the top file is read");
    assert_eq!(read.problems.len(), 1, "{:?}", read.problems);
    let p = &read.problems[0];
    assert!(
        p.message.contains("nested deeper than 32 directories") && p.file.contains("/d32"),
        "{p:?}"
    );
}
