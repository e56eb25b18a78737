//! The shared contract of mirrorfleet, with no I/O: who depends on it and what may live here.
//!
//! - [`v1alpha1`] (feature `kube`): the custom resources `Project`, `Mirror`, `Sponsor`,
//!   `RegionRule`, from which the CRD YAML under `crds/` is generated.
//! - [`geo`]: ISO 3166-1 countries with their continents and approximate centroids.
//! - [`state`]: the fleet state schema shared by the operator (writer) and the redirectors
//!   (readers): keys, encodings, schema version, change events;
//! - [`url`]: percent-encoding of the paths the state names, for URLs to them.
//!
//! Checking manifests against these types lives in `mirrorfleet-validate`.
//!
//! The redirector depends on this crate without default features, so nothing here may pull
//! in kube, a network client or a runtime unless it sits behind a feature.

pub mod geo;
pub mod state;
pub mod url;
#[cfg(feature = "kube")]
pub mod v1alpha1;
