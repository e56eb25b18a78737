//! The `mirrorfleet` binary's library: the admin CLI's commands, and later the operator,
//! scanners and standalone mode. `main.rs` only parses arguments and owns exit codes.

pub mod error;
pub mod manifests;

pub use error::{Error, Result};
