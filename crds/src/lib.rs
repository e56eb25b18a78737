//! The shared contract of mirrorfleet, with no I/O: who depends on it and what may live here.
//!
//! - [`v1alpha1`] (feature `kube`): the custom resources `Project`, `Mirror`, `Sponsor`,
//!   `RegionRule`, from which the CRD YAML under `crds/` is generated.
//! - [`validate`] (feature `validate`): checks manifests against the CRD schema, its CEL rules
//!   and the rules that span resources; used by `mirrorfleet validate` and the operator.
//! - [`geo`]: ISO 3166-1 countries with their continents and approximate centroids.
//! - [`state`]: the fleet state schema shared by the operator (writer) and the redirectors
//!   (readers): keys, encodings, schema version, change events.
//!
//! The redirector depends on this crate without default features, so nothing here may pull
//! in kube, a network client or a runtime unless it sits behind a feature.

pub mod geo;
pub mod state;
#[cfg(feature = "kube")]
pub mod v1alpha1;
#[cfg(feature = "validate")]
pub mod validate;
