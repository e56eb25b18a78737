//! The `mirrorfleet` binary's library: the admin CLI's commands, and later the operator,
//! scanners and standalone mode. `main.rs` only parses arguments and owns exit codes.

pub mod cmd;
pub mod compile;
pub mod controller;
pub mod error;
pub mod geoip;
pub mod gitsource;
pub mod health;
pub mod locate;
pub mod manifests;
pub mod scan;
pub mod standalone;

pub use error::{Error, Result};

/// Formats an error with its causes, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    mirrorfleet_store::error_chain(e)
}
