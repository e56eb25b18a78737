//! The manifests crate's error type. Messages describe this layer (the path, the repository);
//! causes stay in `source`, printed once by whoever prints the chain.

use std::path::PathBuf;

/// What reading manifests, from disk or from Git, can fail with.
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
    /// A git operation failed.
    #[error("git {what} of {url}")]
    Git {
        /// The operation.
        what: &'static str,
        /// The repository.
        url: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// A credential file cannot be read.
    #[error("cannot read the Git credential file {}", path.display())]
    Credential {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A path given with `--base` is not in a Git repository's working copy.
    #[error("{} is not in a Git repository (--base compares with a revision of it)", path.display())]
    NotInRepository {
        /// The path.
        path: PathBuf,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// The revision given with `--base` is not in the repository.
    #[error("{rev} is not a revision of the Git repository at {}; fetch it first (a shallow CI checkout lacks the base branch: use `fetch-depth: 0` or `git fetch origin <branch>`)", repo.display())]
    NoRevision {
        /// The revision as given.
        rev: String,
        /// The repository's working copy.
        repo: PathBuf,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// The branch does not exist on the remote.
    #[error("{url} has no branch {branch}")]
    NoBranch {
        /// The repository.
        url: String,
        /// The branch.
        branch: String,
    },
    /// The path inside the repository does not exist.
    #[error("{path} does not exist in {url} at {commit}")]
    NoPath {
        /// The repository.
        url: String,
        /// The path.
        path: String,
        /// The commit.
        commit: String,
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
            Error::Git { .. } => "git",
            Error::Credential { .. } => "credential",
            Error::NotInRepository { .. } => "not_in_repository",
            Error::NoRevision { .. } => "no_revision",
            Error::NoBranch { .. } => "no_branch",
            Error::NoPath { .. } => "no_path",
        }
    }
}

/// Result with the manifests crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
