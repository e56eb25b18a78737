//! The store crate's error type. Every message names the key, file or server concerned; the
//! cause stays in `source`.

use std::path::PathBuf;

use mirrorfleet_crds::state::DecodeError;

/// Errors of the store crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No flag names a store.
    #[error(
        "no store given: pass --redis URL, --sentinel URL --sentinel-master NAME, or --state-dir DIR"
    )]
    NoStore,
    /// A Redis command failed.
    #[error("redis {op} on {target} failed")]
    Redis {
        /// The operation.
        op: &'static str,
        /// Which server (URL or sentinel master name).
        target: String,
        /// The cause.
        #[source]
        source: redis::RedisError,
    },
    /// A value under one of our keys could not be decoded.
    #[error("key {key}")]
    Decode {
        /// The key.
        key: String,
        /// The cause.
        #[source]
        source: DecodeError,
    },
    /// The store holds another schema version.
    #[error(
        "the store holds schema version {found:?} under mf:v1:schema; this build reads version 1"
    )]
    Schema {
        /// What was found.
        found: String,
    },
    /// An index references chunks that are gone even after re-reading its metadata.
    #[error(
        "index of project {project} references chunks that no longer exist (a writer keeps replacing it); will retry"
    )]
    ChunksGone {
        /// The project.
        project: String,
    },
    /// File I/O of the embedded store failed.
    #[error("embedded store {}: {what}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded store's log is damaged before its end.
    #[error("embedded store {} is corrupt at byte {offset}: {why}; restore it from a backup or remove it to start empty", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

impl Error {
    /// A fixed, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoStore => "no_store",
            Error::Redis { .. } => "redis",
            Error::Decode { .. } => "decode",
            Error::Schema { .. } => "schema",
            Error::ChunksGone { .. } => "chunks_gone",
            Error::Io { .. } => "io",
            Error::Corrupt { .. } => "corrupt",
        }
    }
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
