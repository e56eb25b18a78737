//! Scanning: learning exactly which files a project's source and each mirror hold.
//!
//! Pure parts (parsing listings, comparing with the index) are separate from the I/O that
//! fetches them, and every fetch is bounded by [`Limits`]: an overall deadline, a number of
//! entries, a line length and a depth. A scan that hits a limit, or meets garbage, fails with
//! a [`ScanError`] naming what went wrong; the caller then keeps the previous availability.
//! Only [`run`] writes to the store (a mirror's availability); the rest returns what it found.
//!
//! The node agent runs this code on small machines: it must not depend on kube, git2 or an
//! HTTP server (a test of the workspace checks).

pub mod checksums;
pub mod compare;
pub mod ftp;
pub mod hash;
pub mod http;
pub mod rsync;
pub mod run;
pub mod source;
pub mod time;
pub mod trace;
pub mod verify;

use std::time::Duration;

/// One file seen in a listing, relative to the listed root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// Path relative to the root, `/`-separated, no leading `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (Unix seconds, as the server reports it), if the protocol gives one.
    pub mtime: Option<i64>,
}

/// A listing and what its timestamps are worth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The files (directories, symlinks and special files left out).
    pub files: Vec<ListedFile>,
    /// Precision of the mtimes in seconds (1 for rsync and MLSD, 60 for LIST and autoindex).
    pub mtime_precision: i64,
    /// Whether sizes are exact (false for human-readable autoindex sizes such as `1.2M`).
    pub exact_sizes: bool,
}

/// Bounds on one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Overall deadline.
    pub deadline: Duration,
    /// Most entries accepted.
    pub max_entries: usize,
    /// Longest line accepted (bytes).
    pub max_line: usize,
    /// Deepest directory followed.
    pub max_depth: usize,
    /// Most HTTP or FTP requests.
    pub max_requests: usize,
    /// Requests in flight at once (HTTP crawl).
    pub concurrency: usize,
    /// Deadline of one connection or request.
    pub io_timeout: Duration,
    /// A local file modified less than this long ago is probably still being written: a
    /// source scan leaves it as the previous index had it (or out) and counts it unsettled,
    /// for the caller to look again shortly. Zero: every file is taken as it is.
    pub settle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            deadline: Duration::from_secs(1800),
            max_entries: 10_000_000,
            max_line: 16 * 1024,
            max_depth: 64,
            max_requests: 100_000,
            concurrency: 4,
            io_timeout: Duration::from_secs(30),
            settle: Duration::ZERO,
        }
    }
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The scan ran past its deadline.
    #[error("gave up after the {0:?} deadline")]
    Deadline(Duration),
    /// The server stopped sending.
    #[error("the server stalled: nothing received for {0:?}")]
    Stalled(Duration),
    /// More entries, requests or depth than allowed.
    #[error("too many {what}: more than {limit}")]
    Limit {
        /// What overflowed.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A line longer than allowed.
    #[error("line {line} is longer than {limit} bytes")]
    LineTooLong {
        /// Line number.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// Output that is not a listing.
    #[error("unexpected output at line {line}: {excerpt:?}")]
    Garbage {
        /// Line number.
        line: usize,
        /// The start of the line.
        excerpt: String,
    },
    /// A program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A program failed.
    #[error("{program} exited with status {code}: {stderr}")]
    Exit {
        /// The program.
        program: &'static str,
        /// Its exit status.
        code: i32,
        /// The end of its error output.
        stderr: String,
    },
    /// An HTTP request failed.
    #[error("{url}: {why}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        why: String,
    },
    /// An FTP command failed.
    #[error("FTP {what}: {why}")]
    Ftp {
        /// The command or step.
        what: String,
        /// What happened.
        why: String,
    },
    /// Local I/O failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A URL that cannot be scanned.
    #[error("cannot scan {url}: {why}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        why: String,
    },
    /// Every protocol tried on a mirror failed; each attempt's error is in the message, as
    /// there is no one cause to chain.
    #[error("scan of mirror {mirror}, project {project} failed: {}", attempts.iter().map(|(p, e)| format!("{p}: {}", mirrorfleet_runtime::error_chain(e))).collect::<Vec<_>>().join("; "))]
    Mirror {
        /// The mirror.
        mirror: String,
        /// The project.
        project: String,
        /// (protocol, error) for each protocol tried.
        attempts: Vec<(&'static str, ScanError)>,
    },
}

impl ScanError {
    /// A fixed, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ScanError::Deadline(_) => "deadline",
            ScanError::Stalled(_) => "stalled",
            ScanError::Limit { .. } => "limit",
            ScanError::LineTooLong { .. } => "line_too_long",
            ScanError::Garbage { .. } => "garbage",
            ScanError::Spawn { .. } => "spawn",
            ScanError::Exit { .. } => "exit",
            ScanError::Http { .. } => "http",
            ScanError::Ftp { .. } => "ftp",
            ScanError::Io { .. } => "io",
            ScanError::BadUrl { .. } => "bad_url",
            ScanError::Mirror { .. } => "mirror",
        }
    }
}

/// Shortens `s` for an error message.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Whether `path` is a safe relative path: no empty, `.` or `..` segments, no NUL, not absolute.
pub fn safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}
