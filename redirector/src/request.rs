//! What a request asks for, read from its path, query and headers — pure functions, no I/O:
//! path cleaning (percent-decoding, `.`/`..` refused, empty segments collapsed), query keys,
//! the `<file>.meta4` / `<file>.sha256` name forms, the apt list's name, `If-Modified-Since`.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use hyper::StatusCode;
use hyper::header;
use mirrorfleet_crds::state::HashKind;

use crate::snapshot::Snapshot;

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
/// a file of the project but `<file>` is: the file and what is asked of it. A real file of
/// that name (a published `SHA256SUMS`-style `.sha256`) is always served as itself.
pub fn suffix_form<'p>(snap: &Snapshot, project: usize, rel: &'p str) -> Option<(&'p str, Form)> {
    let (file, ext) = rel.rsplit_once('.')?;
    let form = match ext {
        "meta4" => Form::Metalink,
        _ => Form::Checksum(CHECKSUMS.iter().find(|(k, _)| *k == ext)?.1),
    };
    let index = snap.projects.get(project)?.index.as_deref()?;
    (index.position(rel).is_none() && index.position(file).is_some()).then_some((file, form))
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
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_agrees_with_the_full_cleaning() {
        for raw in [
            "/",
            "//",
            "/a",
            "/a/",
            "/a//",
            "//a",
            "/a/./b",
            "/a/../b",
            "/.",
            "/..",
            "/a/.",
            "/a/..",
            "/.a/..b/...",
            "/a%2fb",
            "/a\u{1}b",
            "/a/b.deb",
            "a/b",
            "",
            "/ü",
            "/a\u{85}",
            "/dists/stable/",
            "/a b",
        ] {
            let Ok(clean) = clean_path(raw) else {
                assert!(
                    !is_clean(raw),
                    "{raw:?} is refused yet passes the fast check"
                );
                continue;
            };
            if is_clean(raw) {
                assert_eq!(clean, raw, "{raw:?}");
            }
            if clean.is_ascii() && !clean.contains('%') {
                assert!(
                    is_clean(&clean),
                    "{raw:?} cleans to {clean:?}, which the fast check does not accept"
                );
            }
        }
    }

    #[test]
    fn paths_are_cleaned_or_refused() {
        assert_eq!(
            clean_path("/debian//pool/./x").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            clean_path("/debian//pool///x.deb").unwrap(),
            "/debian/pool/x.deb"
        );
        assert_eq!(
            clean_path("/debian/pool/a%20b%C3%BC.deb").unwrap(),
            "/debian/pool/a bü.deb"
        );
        assert_eq!(
            clean_path("/debian/%2e%2e/etc/passwd").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            clean_path("/debian/x%00y").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            clean_path("/debian/%zz").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            clean_path("/debian/%ff").unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            clean_path(&format!("/{}", "a".repeat(5000))).unwrap_err(),
            StatusCode::URI_TOO_LONG
        );
        assert_eq!(clean_path("/debian/dists/").unwrap(), "/debian/dists/");
    }
}
