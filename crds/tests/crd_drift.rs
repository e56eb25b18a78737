//! The committed CRD YAML must be exactly what the code generates.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

#[test]
fn committed_crds_match_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = mirrorfleet_crds::v1alpha1::crds_yaml();
    let first_difference = committed
        .lines()
        .zip(generated.lines())
        .enumerate()
        .find(|(_, (c, g))| c != g)
        .map(|(i, (c, g))| format!("line {}: committed {c:?}, generated {g:?}", i + 1))
        .unwrap_or_else(|| "one is a prefix of the other".into());
    assert!(
        committed == generated,
        "{} is out of date with the CRD types ({first_difference}); regenerate it with\n    \
         cargo run -p mirrorfleet-crds --bin crdgen > crds/crds.yaml\nand commit the result",
        path.display()
    );
}
