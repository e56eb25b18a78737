//! What a request asks for, read from its method, path, query and headers and looked up in the
//! snapshot — pure functions, no I/O: [`classify`] into an [`Ask`], one variant per kind of
//! answer, which the server dispatches on; path cleaning (percent-decoding, `.`/`..` refused,
//! empty segments collapsed), query keys, the `<file>.meta4` / `<file>.sha256` name forms, the
//! apt list's name, `If-Modified-Since`, which paths the index does not have may be sent to a
//! fallback ([`fallback_safe`]). Nothing here selects a mirror or builds an answer, and
//! the download's classification allocates nothing (its path is borrowed unless it needed
//! cleaning).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::UNIX_EPOCH;

use hyper::header;
use hyper::{HeaderMap, Method, StatusCode, Uri};
use mirrorfleet_crds::state::HashKind;

use crate::filestats;
use crate::respond::METALINK;
use crate::snapshot::Snapshot;

/// What a request asks for: one variant per kind of answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask<'r> {
    /// `/healthz` (any method): whether the process answers.
    Health,
    /// `/readyz` (any method): whether a fleet state is loaded.
    Ready,
    /// `/metrics` (any method): the Prometheus counters.
    Metrics,
    /// `/-/mirrors/<name>.json` (GET, HEAD): a mirror's duties, for its node's agent.
    Duties {
        /// The mirror named.
        mirror: &'r str,
    },
    /// `?mirrorstats` on any path: the fleet's mirrors and today's counts, as JSON when asked
    /// (`?json` or an `Accept` of `application/json`).
    Mirrorstats {
        /// JSON rather than HTML.
        json: bool,
    },
    /// `?stats` on a file of a project: its download counts, read from the store (so answered
    /// off the snapshot).
    FileStats(filestats::Ask),
    /// `?stats=` with a value that is not a period.
    BadPeriod,
    /// `?stats` on a path of a project that its index does not have as a file: no counts to
    /// show (they are kept for indexed files only).
    StatsUnindexed {
        /// Where.
        at: Target<'r>,
    },
    /// A method other than GET and HEAD.
    MethodNotAllowed,
    /// A path [`clean_path`] refuses, with its status.
    BadPath(StatusCode),
    /// No fleet state loaded yet.
    NotLoaded,
    /// No project at this host and path.
    NoProject,
    /// A directory of a project: its root, or a path ending in `/`.
    Listing {
        /// Where.
        at: Target<'r>,
        /// JSON rather than HTML.
        json: bool,
    },
    /// The project's apt `mirror+` list: [`APT_LIST`] at its root, when no file has that name.
    AptList {
        /// Where.
        at: Target<'r>,
        /// `?mirrorlist&fromip=`: the client to rank for instead of the one asking.
        from: Option<IpAddr>,
    },
    /// A file's checksum: `?sha256` (`?sha1`, `?md5`), or `<file>.sha256` (…) when no file has
    /// that name.
    Checksum {
        /// Where (the file, its suffix taken off).
        at: Target<'r>,
        /// Which hash.
        kind: HashKind,
    },
    /// The mirror list page: `?mirrorlist`.
    Mirrorlist {
        /// Where.
        at: Target<'r>,
        /// `&fromip=`: the client to rank for instead of the one asking.
        from: Option<IpAddr>,
    },
    /// A file's metalink: `<file>.meta4` (when no file has that name), `?metalink`, `?meta4`
    /// or an `Accept` of [`METALINK`].
    Metalink {
        /// Where (the file, its suffix taken off).
        at: Target<'r>,
    },
    /// The JSON answer: `?json` or an `Accept` of `application/json`.
    Json {
        /// Where.
        at: Target<'r>,
    },
    /// The download (a redirect) — anything else in a project, in the index or not (a file
    /// the index does not know yet goes to a fallback).
    Download {
        /// Where.
        at: Target<'r>,
    },
}

/// Where in a project a request points.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'r> {
    /// The project's index in the snapshot.
    pub project: usize,
    /// The cleaned request path (borrowed from the request unless cleaning changed it).
    pub path: Cow<'r, str>,
    /// Where the path in the project lies in `path` (a `.meta4` or `.sha256` suffix left out).
    rel: (usize, usize),
    /// `?https=1`: HTTPS mirrors only, as Mirrorbits (never the reverse: an HTTPS client is
    /// not sent to plain HTTP).
    pub https_only: bool,
}

impl Target<'_> {
    /// The path in the project (relative to its root).
    pub fn rel(&self) -> &str {
        self.path.get(self.rel.0..self.rel.1).unwrap_or_default()
    }
}

/// What `method`, `uri` and `headers` ask for, as `snap` has it. The rules, in order: a file's
/// `?stats` (or a bad period); the admin endpoints; GET and HEAD only; a clean path;
/// `?mirrorstats`; a mirror's duties; a loaded fleet; a project routed by host or prefix; then
/// in the project a directory,
/// the apt list, a checksum, the mirror list, a metalink, JSON, `?stats` on a path that is not
/// an indexed file, else the download.
pub fn classify<'r>(
    method: &Method,
    uri: &'r Uri,
    headers: &HeaderMap,
    snap: &Snapshot,
) -> Ask<'r> {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    let raw = uri.path();
    let query = uri.query().unwrap_or("");
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if get_or_head
        && query_has(query, "stats")
        && let Some(ask) = file_stats(query, raw, host, snap)
    {
        return ask;
    }
    match raw {
        "/healthz" => return Ask::Health,
        "/readyz" => return Ask::Ready,
        "/metrics" => return Ask::Metrics,
        _ => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = query_has(query, "json") || accept.contains("application/json");
    if !get_or_head {
        return Ask::MethodNotAllowed;
    }
    // Dot segments and the like are refused on every path, `?mirrorstats` ones too.
    let path = match clean_path(raw) {
        Ok(p) => p,
        Err(status) => return Ask::BadPath(status),
    };
    if query_has(query, "mirrorstats") {
        return Ask::Mirrorstats { json };
    }
    if let Some(mirror) = crate::respond::duties::mirror_of(raw) {
        return if snap.loaded {
            Ask::Duties { mirror }
        } else {
            Ask::NotLoaded
        };
    }
    if !snap.loaded {
        return Ask::NotLoaded;
    }
    let Some((project, rel)) = snap.route(host, &path) else {
        return Ask::NoProject;
    };
    // The route's path is the end of the request's.
    debug_assert!(path.ends_with(rel));
    let start = path.len() - rel.len();
    let (rel, form) = match suffix_form(snap, project, rel) {
        Some((file, form)) => (file, Some(form)),
        None => (rel, None),
    };
    let directory = rel.is_empty() || rel.ends_with('/');
    let apt = rel == APT_LIST && !has_file(snap, project, rel);
    let at = Target {
        project,
        rel: (start, start + rel.len()),
        https_only: query_value(query, "https") == Some("1"),
        path,
    };
    let mirrorlist = query_has(query, "mirrorlist");
    let from = mirrorlist
        .then(|| query_value(query, "fromip").and_then(|v| v.parse().ok()))
        .flatten();
    let checksum = match form {
        Some(Form::Checksum(kind)) => Some(kind),
        _ => CHECKSUMS
            .into_iter()
            .find(|(k, _)| query_has(query, k))
            .map(|(_, kind)| kind),
    };
    if directory {
        Ask::Listing { at, json }
    } else if apt {
        Ask::AptList { at, from }
    } else if let Some(kind) = checksum {
        Ask::Checksum { at, kind }
    } else if mirrorlist {
        Ask::Mirrorlist { at, from }
    } else if form == Some(Form::Metalink)
        || query_has(query, "metalink")
        || query_has(query, "meta4")
        || accept.contains(METALINK)
    {
        Ask::Metalink { at }
    } else if json {
        Ask::Json { at }
    } else if query_has(query, "stats") {
        // [`file_stats`] found no indexed file here.
        Ask::StatsUnindexed { at }
    } else {
        Ask::Download { at }
    }
}

/// `?stats` on a file of a project: what it asks, or [`Ask::BadPeriod`]; `None` when the path
/// is not a file of a project (the request is then classified as if without `?stats`).
fn file_stats(query: &str, raw: &str, host: Option<&str>, snap: &Snapshot) -> Option<Ask<'static>> {
    let period = match query_value(query, "stats") {
        Some(v) => match filestats::period(v) {
            Some(p) => Some(p),
            None => return Some(Ask::BadPeriod),
        },
        None => None,
    };
    let path = clean_path(raw).ok()?;
    let (project, rel) = snap.route(host, &path)?;
    if !has_file(snap, project, rel) {
        return None;
    }
    Some(Ask::FileStats(filestats::Ask {
        project: snap.projects.get(project)?.state.name.clone(),
        path: rel.to_owned(),
        period,
    }))
}

/// Longest request path accepted.
const MAX_PATH: usize = 4096;

/// Decodes and checks a request path: percent-decoding, no NUL or control characters, no `.`
/// or `..` segments, empty segments collapsed.
pub fn clean_path(raw: &str) -> Result<Cow<'_, str>, StatusCode> {
    if raw.len() > MAX_PATH {
        return Err(StatusCode::URI_TOO_LONG);
    }
    if is_clean(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .ok_or(StatusCode::BAD_REQUEST)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| StatusCode::BAD_REQUEST)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| StatusCode::BAD_REQUEST)?;
    if s.chars().any(char::is_control) {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut clean = String::with_capacity(s.len());
    for seg in s.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(StatusCode::BAD_REQUEST);
        }
        clean.push('/');
        clean.push_str(seg);
    }
    if s.ends_with('/') || clean.is_empty() {
        clean.push('/');
    }
    Ok(Cow::Owned(clean))
}

/// Whether `raw` is already what [`clean_path`] would make of it (the common case, answered
/// without allocating): it starts with `/`, is ASCII, and has no escapes, control
/// characters, empty, `.` or `..` segments.
fn is_clean(raw: &str) -> bool {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/')
        || b.iter()
            .any(|c| *c == b'%' || c.is_ascii_control() || !c.is_ascii())
    {
        return false;
    }
    // Every segment but a final empty one (`/dir/`) must be non-empty and not `.` or `..`.
    let segments = &raw[1..];
    let segments = segments.strip_suffix('/').unwrap_or(segments);
    segments.is_empty() && raw.len() == 1
        || !segments.is_empty()
            && segments
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// The apt `mirror+` list of a project, at its root: `deb mirror+https://<host>/<prefix>/mirrors.list
/// <suite> <component>` in a sources.list (a real file of that name wins).
pub const APT_LIST: &str = "mirrors.list";

/// Whether the project's index has `rel`.
pub fn has_file(snap: &Snapshot, project: usize, rel: &str) -> bool {
    snap.projects
        .get(project)
        .and_then(|p| p.index.as_deref())
        .is_some_and(|i| i.position(rel).is_some())
}

/// `?sha256`, `?sha1`, `?md5`, and the file-name suffixes that ask for the same.
pub const CHECKSUMS: [(&str, HashKind); 3] = [
    ("sha256", HashKind::Sha256),
    ("sha1", HashKind::Sha1),
    ("md5", HashKind::Md5),
];

/// What a suffixed file name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `<file>.meta4`: the file's metalink.
    Metalink,
    /// `<file>.sha256` and friends: the file's checksum.
    Checksum(HashKind),
}

/// `<file>.meta4`, `<file>.sha256`, `<file>.sha1` or `<file>.md5`, when that name is not itself
/// a file of the project: the file and what is asked of it. A real file of that name (a
/// published `SHA256SUMS`-style `.sha256`) is always served as itself. A checksum name asks
/// for a checksum only when `<file>` is indexed (else no hash is known, and the name may be a
/// checksum file the origin published beside a file the index does not know yet: it is then
/// a file like any other); a `.meta4` name asks for the metalink of `<file>` either way (an
/// origin does not publish those; the metalink of a file not indexed yet names the fallback).
pub fn suffix_form<'p>(snap: &Snapshot, project: usize, rel: &'p str) -> Option<(&'p str, Form)> {
    let (file, ext) = rel.rsplit_once('.')?;
    if file.is_empty() || file.ends_with('/') {
        return None;
    }
    let form = match ext {
        "meta4" => Form::Metalink,
        _ => Form::Checksum(CHECKSUMS.iter().find(|(k, _)| *k == ext)?.1),
    };
    let index = snap.projects.get(project)?.index.as_deref()?;
    (index.position(rel).is_none() && (form == Form::Metalink || index.position(file).is_some()))
        .then_some((file, form))
}

/// Whether a path the index does not have (a file or a directory, relative to the project's
/// root, as [`clean_path`] left it) may be sent to a fallback as it is. [`clean_path`] already
/// refused `.` and `..` segments, NUL and control characters, and over-long paths; this also
/// refuses what some servers read as climbing out of a base even once percent-encoded: a
/// backslash (a separator on Windows servers), a `%` (a server decoding twice would see
/// `%2e%2e` or `%2f`), and a segment that is only dots and spaces before a `;` (`..;`, a
/// parent on Java servers; `...` and `.. `, parents on Windows ones). The index vouches for
/// its own paths, so this is for paths it does not know.
pub fn fallback_safe(rel: &str) -> bool {
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    !rel.is_empty()
        && !rel.contains(['\\', '%'])
        && rel.split('/').all(|seg| {
            let name = seg.split(';').next().unwrap_or(seg);
            !name.trim_end_matches(['.', ' ']).is_empty()
        })
}

/// The `If-Modified-Since` date in Unix seconds (any of the three HTTP date formats);
/// ignored, as RFC 9110 says, when `If-None-Match` is present or the date does not parse.
pub fn if_modified_since(headers: &hyper::HeaderMap) -> Option<i64> {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return None;
    }
    let v = headers.get(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
    let t = httpdate::parse_http_date(v).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

pub fn query_has(query: &str, key: &str) -> bool {
    query.split('&').any(|kv| kv.split('=').next() == Some(key))
}

pub fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests;
