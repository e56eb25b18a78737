//! Where manifests come from: files on disk ([`files`]: walked with limits, binary and oversized
//! files reported) and a Git repository followed with git2 ([`git`]: clone, fetch,
//! fast-forward, credentials from files). Both hand texts to `mirrorfleet-validate`. [`revision`]
//! reads the same paths as they were at a Git revision (`validate --probe --base`).
//!
//! Used by the `mirrorfleet` CLI (validate, standalone) and by the operator (applying Git
//! commits to the cluster). It is the only crate that links git2; the redirector, the
//! scanners, the health checker and the node agent never depend on it.

mod error;
pub mod files;
pub mod git;
pub mod revision;

pub use error::{Error, Result};
pub use files::{Manifests, read};
pub use git::{GitSource, Synced, checkout_dir};
