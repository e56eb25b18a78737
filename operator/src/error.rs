//! The operator crate's error type. Messages describe this layer; causes stay in `source`.

use std::path::PathBuf;

/// Errors of the operator crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path named on the command line does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The paths named hold no manifests at all.
    #[error("no YAML manifests (*.yaml, *.yml) found under {}", paths)]
    NoManifests {
        /// The paths searched, comma separated.
        paths: String,
    },
    /// Too many files under the paths named.
    #[error("more than {limit} files under {}; name a smaller directory", path.display())]
    TooManyFiles {
        /// The directory.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
}

impl Error {
    /// A fixed, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Read { .. } => "read",
            Error::NoManifests { .. } => "no_manifests",
            Error::TooManyFiles { .. } => "too_many_files",
        }
    }
}

/// Result with the operator crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
