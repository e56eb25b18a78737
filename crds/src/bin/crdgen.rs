//! Prints every mirrorfleet CRD as multi-document YAML. `scripts/gen-crds` writes the output to
//! `crds/crds.yaml`; a test fails when the committed file drifts from this output.

fn main() {
    print!("{}", mirrorfleet_crds::v1alpha1::crds_yaml());
}
