//! Prints every mirrorfleet CRD as multi-document YAML. The committed `crds/crds.yaml` is this
//! output (`cargo run -p mirrorfleet-crds --bin crdgen > crds/crds.yaml`); a test fails when
//! the committed file drifts from it.

fn main() {
    print!("{}", mirrorfleet_crds::v1alpha1::crds_yaml());
}
