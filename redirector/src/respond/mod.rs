//! Turning a decision into an HTTP answer: `302` with `Location`, `Link: rel=duplicate`
//! alternates (RFC 6249), the metalink link, `Digest` (RFC 3230) and `Repr-Digest` (RFC 9530);
//! `304`; checksums; errors — here, on the hot path; the JSON answer, the mirror list page and
//! directory listings in [`pages`]; metalinks and apt lists in [`lists`]; the answer to each
//! kind of request, built from these, in [`answer`]. URLs are built from
//! a mirror's or fallback's base URL and the file's path re-encoded segment by segment, so no
//! request can produce a URL outside a configured base.

use std::ops::Range;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use mirrorfleet_crds::state::{FileEntry, HashKind};
use mirrorfleet_crds::url::encode_path;

use crate::select::Decision;
use crate::snapshot::Snapshot;

pub mod answer;
pub mod duties;
pub mod lists;
pub mod pages;

pub use lists::{METALINK, apt_list, metalink};
pub use pages::{LISTING_LIMIT, json, listing, mirrorlist};

/// A response body.
pub type Body = Full<Bytes>;

/// A `200` page about one client's request (JSON, mirror list): not to be cached by proxies.
pub(crate) fn private_page(body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    r
}

/// [`private_page`] with a JSON body (pretty: these are read by people too).
pub(crate) fn private_json(body: &serde_json::Value) -> Response<Body> {
    private_page(
        serde_json::to_vec_pretty(body).unwrap_or_default(),
        "application/json; charset=utf-8",
    )
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `503` with `Retry-After`.
pub fn unavailable(why: &str) -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    r
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The base URL of the decision's choice `i` (for the scheme it was chosen with).
pub fn choice_base<'s>(
    snap: &'s Snapshot,
    project: usize,
    d: &Decision<'_>,
    i: usize,
) -> Option<&'s str> {
    let c = d.choices.get(i)?;
    let carrier = snap.projects.get(project)?.carriers.get(c.carrier)?;
    if c.https {
        carrier.https.as_deref()
    } else {
        carrier.http.as_deref()
    }
}

/// The URL of `path` on the decision's choice `i`.
pub fn choice_url(
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    i: usize,
    path: &str,
) -> Option<String> {
    Some(join(choice_base(snap, project, d, i)?, &encode_path(path)))
}

/// A base URL and an encoded path, in one allocation.
pub fn join(base: &str, encoded_path: &str) -> String {
    let mut url = String::with_capacity(base.len() + encoded_path.len());
    url.push_str(base);
    url.push_str(encoded_path);
    url
}

/// Appends the file's `Digest` (RFC 3230) and `Repr-Digest` (RFC 9530) values to `buf`;
/// returns their ranges, or `None` when the index holds no hash for the file.
fn digests(buf: &mut String, file: &FileEntry<'_>) -> Option<(Range<usize>, Range<usize>)> {
    const KINDS: [(HashKind, &str, &str); 3] = [
        (HashKind::Sha256, "SHA-256=", "sha-256=:"),
        (HashKind::Sha1, "SHA=", "sha=:"),
        (HashKind::Md5, "MD5=", "md5=:"),
    ];
    let b64 = &base64::engine::general_purpose::STANDARD;
    let start = buf.len();
    for (kind, name, _) in KINDS {
        if let Some(d) = file.digest(kind) {
            if buf.len() > start {
                buf.push(',');
            }
            buf.push_str(name);
            b64.encode_string(d, buf);
        }
    }
    if buf.len() == start {
        return None;
    }
    let digest = start..buf.len();
    for (kind, _, name) in KINDS {
        if let Some(d) = file.digest(kind) {
            if buf.len() > digest.end {
                buf.push_str(", ");
            }
            buf.push_str(name);
            b64.encode_string(d, buf);
            buf.push(':');
        }
    }
    Some((digest.clone(), digest.end..buf.len()))
}

/// `302` to `base` + `encoded_path` with the mirror answers' headers: `Link` alternates for the
/// decision's next four choices (RFC 6249 `rel=duplicate`), a `Link` to the file's metalink
/// (`rel=describedby`), `Digest` and `Repr-Digest`. `encoded_path` is the file's path in the
/// project and `request_path` the path the client asked for, both as [`encode_path`] gives
/// them. Every header value is a slice of one buffer: one allocation for all of them.
pub fn redirect(
    base: &str,
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    encoded_path: &str,
    request_path: &str,
) -> Response<Body> {
    let alternates =
        || (1..d.choices.len().min(5)).filter_map(|i| Some((i, choice_base(snap, project, d, i)?)));
    let estimate = base.len()
        + encoded_path.len()
        + alternates()
            .map(|(_, b)| b.len() + encoded_path.len() + 40)
            .sum::<usize>()
        + request_path.len()
        + 240;
    let mut buf = String::with_capacity(estimate);
    buf.push_str(base);
    buf.push_str(encoded_path);
    let location = 0..buf.len();
    let mut links: [Range<usize>; 4] = Default::default();
    let mut n_links = 0;
    for (i, alt) in alternates() {
        let start = buf.len();
        buf.push('<');
        buf.push_str(alt);
        buf.push_str(encoded_path);
        buf.push_str(">; rel=duplicate; pri=");
        buf.push(char::from(b'0' + i as u8));
        if let Some(cc) = snap.mirrors[d.choices[i].mirror].country {
            buf.push_str("; geo=");
            buf.push(char::from(cc[0].to_ascii_lowercase()));
            buf.push(char::from(cc[1].to_ascii_lowercase()));
        }
        links[n_links] = start..buf.len();
        n_links += 1;
    }
    let described_by = d.file.as_ref().map(|_| {
        let start = buf.len();
        buf.push('<');
        buf.push_str(request_path);
        buf.push_str(".meta4>; rel=describedby; type=\"");
        buf.push_str(METALINK);
        buf.push('"');
        start..buf.len()
    });
    let digest = d.file.as_ref().and_then(|f| digests(&mut buf, f));
    let buf = Bytes::from(buf);
    let value = |r: Range<usize>| HeaderValue::from_maybe_shared(buf.slice(r)).ok();

    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    let h = r.headers_mut();
    if let Some(v) = value(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    for link in links[..n_links].iter().cloned().chain(described_by) {
        if let Some(v) = value(link) {
            h.append(header::LINK, v);
        }
    }
    if let Some((digest, repr)) = digest {
        if let Some(v) = value(digest) {
            h.insert(&DIGEST, v);
        }
        if let Some(v) = value(repr) {
            h.insert(&REPR_DIGEST, v);
        }
    }
    r
}

static DIGEST: HeaderName = HeaderName::from_static("digest");

static REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");

/// `304 Not Modified` with the file's `Last-Modified`.
pub fn not_modified(mtime: i64) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    if let Some(v) = http_date(mtime) {
        r.headers_mut().insert(header::LAST_MODIFIED, v);
    }
    r
}

fn http_date(unix_secs: i64) -> Option<HeaderValue> {
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(
        u64::try_from(unix_secs).ok()?,
    ))?;
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok()
}

/// `?sha256` and friends: `<hex>  <name>` as `sha256sum` prints it.
pub fn checksum(file: Option<&FileEntry<'_>>, kind: HashKind) -> Response<Body> {
    match file.and_then(|f| f.digest(kind).map(|d| (f, d))) {
        Some((f, d)) => {
            let name = f.path.rsplit('/').next().unwrap_or(f.path);
            text(StatusCode::OK, format!("{}  {name}\n", hex(d)))
        }
        None => text(StatusCode::NOT_FOUND, "no such checksum for this file\n"),
    }
}

/// `302` to `location` with a redirect's `Cache-Control` and nothing else: a fallback's listing
/// of a directory the index does not have (a download's redirect is [`redirect`]'s).
pub fn found(location: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    r
}

/// `301` to `location` (a directory asked for without its `/`).
pub fn moved(location: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// HTML/XML-escapes text.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mirrorfleet_crds::state::FileIndex;
    use mirrorfleet_crds::state::index::FileRecord;

    use super::*;

    #[test]
    fn digest_values_list_every_hash_in_both_syntaxes() {
        let records = vec![
            FileRecord {
                path: "both".into(),
                size: 1,
                mtime: 0,
                digests: vec![Some(vec![0xab; 32]), Some(vec![0x01; 16])],
            },
            FileRecord {
                path: "md5-only".into(),
                size: 1,
                mtime: 0,
                digests: vec![None, Some(vec![0x01; 16])],
            },
            FileRecord {
                path: "none".into(),
                size: 1,
                mtime: 0,
                digests: vec![None, None],
            },
        ];
        let index = FileIndex::build("p", "s", &[HashKind::Sha256, HashKind::Md5], records, None);
        let mut buf = String::from("prefix");
        let (digest, repr) = digests(&mut buf, &index.find("both").unwrap()).unwrap();
        assert_eq!(
            &buf[digest],
            "SHA-256=q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=,MD5=AQEBAQEBAQEBAQEBAQEBAQ=="
        );
        assert_eq!(
            &buf[repr],
            "sha-256=:q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=:, md5=:AQEBAQEBAQEBAQEBAQEBAQ==:"
        );
        let mut buf = String::new();
        let (digest, repr) = digests(&mut buf, &index.find("md5-only").unwrap()).unwrap();
        assert_eq!(&buf[digest], "MD5=AQEBAQEBAQEBAQEBAQEBAQ==");
        assert_eq!(&buf[repr], "md5=:AQEBAQEBAQEBAQEBAQEBAQ==:");
        assert!(digests(&mut buf, &index.find("none").unwrap()).is_none());
    }
}
