//! Turning a decision into an HTTP answer: `302` with `Location`, `Link: rel=duplicate`
//! alternates (RFC 6249), `Digest` (RFC 3230) and `Repr-Digest` (RFC 9530); JSON; the mirror
//! list page; checksums; errors. URLs are built from a mirror's or fallback's base URL and the
//! file's path re-encoded segment by segment, so no request can produce a URL outside a
//! configured base.

use std::borrow::Cow;
use std::fmt::Write;
use std::ops::Range;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use mirrorfleet_crds::state::index::DirEntry;
use mirrorfleet_crds::state::{FileEntry, HashKind};
use serde_json::json;

use crate::select::{ClientGeo, Decision};
use crate::snapshot::Snapshot;

/// A response body.
pub type Body = Full<Bytes>;

fn path_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b)
}

/// Percent-encodes a relative path: every byte but the unreserved and sub-delimiter
/// characters, `:`, `@` and the `/` between segments (borrowed when nothing needs it).
pub fn encode_path(path: &str) -> Cow<'_, str> {
    if path.bytes().all(path_byte_ok) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if path_byte_ok(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

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

fn file_json(file: &FileEntry<'_>) -> serde_json::Value {
    let mut v = json!({ "path": file.path, "size": file.size, "mtime": file.mtime });
    for (kind, name) in [
        (HashKind::Sha256, "sha256"),
        (HashKind::Sha1, "sha1"),
        (HashKind::Md5, "md5"),
    ] {
        if let Some(d) = file.digest(kind) {
            v[name] = json!(hex(d));
        }
    }
    v
}

fn client_json(ip: std::net::IpAddr, geo: &ClientGeo) -> serde_json::Value {
    json!({
        "ip": ip.to_string(),
        "country": geo.country.map(crate::snapshot::cc_str),
        "continent": geo.continent.map(|c| c.code()),
        "asn": geo.asn,
    })
}

/// The JSON answer: the file, the client, the chosen mirror and the alternatives (and, with
/// `explain`, every excluded mirror with why). Never contacts or private notes: the snapshot
/// does not hold them.
pub fn json(
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    path: &str,
    ip: std::net::IpAddr,
    geo: &ClientGeo,
    fallback: Option<String>,
) -> Response<Body> {
    let mirrors: Vec<serde_json::Value> = d
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let m = &snap.mirrors[c.mirror];
            json!({
                "name": m.state.name,
                "url": choice_url(snap, project, d, i, path),
                "sponsor": m.sponsor.0,
                "sponsorUrl": m.sponsor.1,
                "country": m.country.map(crate::snapshot::cc_str),
                "distanceKm": c.distance_km.map(|x| x.round()),
                "tier": format!("{:?}", c.tier),
                "share": (c.share * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    let excluded: Vec<serde_json::Value> = d
        .excluded
        .iter()
        .map(|(m, why)| json!({ "name": snap.mirrors[*m].state.name, "reason": why.to_string() }))
        .collect();
    let body = json!({
        "file": d.file.as_ref().map(file_json),
        "client": client_json(ip, geo),
        "mirror": mirrors.first(),
        "alternatives": mirrors.get(1..).unwrap_or_default(),
        "excluded": excluded,
        "fallback": fallback,
    });
    private_page(
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
        "application/json; charset=utf-8",
    )
}

/// The apt `mirror+` list (apt-transport-mirror(1)): one base URL per line with explicit
/// priorities, since apt otherwise picks at random — complete, current copies first, each
/// class in the order of `d` (the drawn mirror first, then by rank); the fallbacks when no
/// mirror qualifies. A comment line says for whom.
pub fn apt_list(
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    fallbacks: &[&str],
    ip: std::net::IpAddr,
    geo: &ClientGeo,
) -> Response<Body> {
    let name = snap
        .projects
        .get(project)
        .map_or("", |p| p.state.name.as_str());
    let mut out = String::with_capacity(128 + 80 * d.choices.len());
    let country = geo
        .country
        .map_or_else(|| "unknown".into(), crate::snapshot::cc_str);
    let _ = writeln!(
        out,
        "# mirrorfleet: mirrors of {name} for {ip} (country {country}), best first"
    );
    // Complete, current copies first (apt would take an outdated Release file as it is), the
    // rank order kept within each class.
    let mut order: Vec<usize> = (0..d.choices.len()).collect();
    order.sort_by_key(|&i| completeness(snap, project, &d.choices[i]));
    let mut priority = 0;
    let bases = order
        .into_iter()
        .filter_map(|i| choice_base(snap, project, d, i));
    for base in bases.chain(fallbacks.iter().copied()) {
        priority += 1;
        let _ = writeln!(out, "{base}\tpriority:{priority}");
    }
    if priority == 0 {
        return unavailable("no mirror and no fallback can serve this project right now");
    }
    private_page(out, "text/plain; charset=utf-8")
}

/// Most entries shown in one directory listing.
pub const LISTING_LIMIT: usize = 10_000;

/// A directory listing from the index (HTML, or JSON): sub-directories, then files with size,
/// modification time and, in JSON, hashes. Names link relative to the page, so a click on a
/// file comes back here and is redirected to a mirror. `request_path` is the cleaned path
/// asked for (ending in `/`); `at_root` says whether it is the project's root.
pub fn listing(
    request_path: &str,
    at_root: bool,
    entries: &[DirEntry<'_>],
    truncated: bool,
    as_json: bool,
) -> Response<Body> {
    let name_of = |f: &FileEntry<'_>| f.path.rsplit('/').next().unwrap_or(f.path).to_owned();
    if as_json {
        let dirs: Vec<&str> = entries
            .iter()
            .filter_map(|e| match e {
                DirEntry::Dir(d) => Some(*d),
                DirEntry::File(_) => None,
            })
            .collect();
        let files: Vec<serde_json::Value> = entries
            .iter()
            .filter_map(|e| match e {
                DirEntry::File(f) => {
                    let mut v = file_json(f);
                    v["name"] = json!(name_of(f));
                    Some(v)
                }
                DirEntry::Dir(_) => None,
            })
            .collect();
        let body = json!({
            "path": request_path,
            "directories": dirs,
            "files": files,
            "truncated": truncated,
        });
        let mut r = private_page(
            serde_json::to_vec_pretty(&body).unwrap_or_default(),
            "application/json; charset=utf-8",
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        return r;
    }
    let title = esc(request_path);
    let mut h = String::with_capacity(1024 + 160 * entries.len());
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Index of {title}</title><style>body{{font-family:sans-serif;margin:2em}}td{{padding:.1em 1em .1em 0}}td.n{{text-align:right}}</style></head><body><h1>Index of {title}</h1><table><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>"
    );
    if !at_root {
        h.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>");
    }
    for e in entries {
        match e {
            DirEntry::Dir(d) => {
                let _ = write!(
                    h,
                    "<tr><td><a href=\"{}/\">{}/</a></td><td></td><td></td></tr>",
                    esc(&encode_path(d)),
                    esc(d)
                );
            }
            DirEntry::File(f) => {
                let name = name_of(f);
                let _ = write!(
                    h,
                    "<tr><td><a href=\"{}\">{}</a></td><td class=\"n\">{}</td><td>{}</td></tr>",
                    esc(&encode_path(&name)),
                    esc(&name),
                    f.size,
                    utc_minute(f.mtime)
                );
            }
        }
    }
    h.push_str("</table>");
    if truncated {
        let _ = write!(
            h,
            "<p>Only the first {LISTING_LIMIT} entries are shown.</p>"
        );
    }
    h.push_str("</body></html>");
    let mut r = private_page(h, "text/html; charset=utf-8");
    // The same for every client: shared caches may keep it briefly.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn utc_minute(unix_secs: i64) -> String {
    let minutes = unix_secs.rem_euclid(86_400) / 60;
    format!(
        "{} {:02}:{:02}",
        mirrorfleet_crds::state::stats::day_string(unix_secs),
        minutes / 60,
        minutes % 60
    )
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

/// How complete a mirror's copy of the whole project was at its last scan: 0 when that scan
/// compared it with the current index and found nothing missing or different, 1 when files
/// were missing (a partial copy), 2 when files differed or the index has changed since.
fn completeness(snap: &Snapshot, project: usize, c: &crate::select::Choice) -> u8 {
    let Some(p) = snap.projects.get(project) else {
        return 2;
    };
    let serial = p.index.as_deref().map(|i| i.serial.as_str());
    match p.carriers.get(c.carrier).and_then(|c| c.avail.as_deref()) {
        Some(a) if Some(a.serial.as_str()) == serial && a.counts.mismatched == 0 => {
            u8::from(a.counts.missing > 0)
        }
        _ => 2,
    }
}

/// The media type of metalink v4 documents (RFC 5854).
pub const METALINK: &str = "application/metalink4+xml";

/// A metalink v4 document (RFC 5854) for the decision's file: its size and hashes, and every
/// usable mirror's URL in rank order (`priority` 1 is the best) with its country; when no
/// mirror qualifies, the fallbacks instead. Served as an attachment named `<file>.meta4`.
pub fn metalink(
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    path: &str,
    fallbacks: &[String],
) -> Response<Body> {
    let Some(file) = &d.file else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let name = file.path.rsplit('/').next().unwrap_or(file.path);
    let mut x = String::with_capacity(1024 + 160 * d.choices.len());
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n");
    x.push_str("  <generator>mirrorfleet</generator>\n");
    let _ = writeln!(x, "  <file name=\"{}\">", esc(name));
    let _ = writeln!(x, "    <size>{}</size>", file.size);
    for (kind, name) in [
        (HashKind::Sha256, "sha-256"),
        (HashKind::Sha1, "sha-1"),
        (HashKind::Md5, "md5"),
    ] {
        if let Some(dg) = file.digest(kind) {
            let _ = writeln!(x, "    <hash type=\"{name}\">{}</hash>", hex(dg));
        }
    }
    let mut priority = 0;
    for (i, c) in d.choices.iter().enumerate() {
        let Some(url) = choice_url(snap, project, d, i, path) else {
            continue;
        };
        priority += 1;
        x.push_str("    <url");
        if let Some(cc) = snap.mirrors[c.mirror].country {
            let cc = crate::snapshot::cc_str(cc).to_ascii_lowercase();
            let _ = write!(x, " location=\"{}\"", esc(&cc));
        }
        let _ = writeln!(x, " priority=\"{priority}\">{}</url>", esc(&url));
    }
    if priority == 0 {
        for url in fallbacks {
            priority += 1;
            let _ = writeln!(x, "    <url priority=\"{priority}\">{}</url>", esc(url));
        }
    }
    x.push_str("  </file>\n</metalink>\n");
    let mut r = private_page(x, METALINK);
    let disposition = format!(
        "attachment; filename=\"{}.meta4\"",
        name.replace(['"', '\\'], "_")
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
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

/// The `?mirrorlist` page: the file, its hashes, every usable mirror with distance and share,
/// and every excluded mirror with why.
pub fn mirrorlist(
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    path: &str,
    ip: std::net::IpAddr,
    geo: &ClientGeo,
) -> Response<Body> {
    let mut h = String::with_capacity(8192);
    let title = esc(path);
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Mirrors for {title}</title>"
    );
    h.push_str("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}code{font-size:90%}</style></head><body>");
    let _ = write!(h, "<h1>{title}</h1>");
    if let Some(f) = &d.file {
        let _ = write!(h, "<p>Size: {} bytes</p><ul>", f.size);
        for (kind, name) in [
            (HashKind::Sha256, "SHA-256"),
            (HashKind::Sha1, "SHA-1"),
            (HashKind::Md5, "MD5"),
        ] {
            if let Some(dg) = f.digest(kind) {
                let _ = write!(h, "<li>{name}: <code>{}</code></li>", hex(dg));
            }
        }
        h.push_str("</ul>");
    }
    let country = geo
        .country
        .map(crate::snapshot::cc_str)
        .unwrap_or_else(|| "unknown".into());
    let _ = write!(
        h,
        "<p>Your address: {} (country {}, AS {})</p>",
        esc(&ip.to_string()),
        esc(&country),
        geo.asn.map_or("unknown".into(), |a| a.to_string())
    );
    h.push_str("<h2>Mirrors</h2><table><tr><th>#</th><th>Mirror</th><th>Sponsor</th><th>Country</th><th>Distance</th><th>Rank</th><th>Share</th><th>URL</th></tr>");
    for (i, c) in d.choices.iter().enumerate() {
        let m = &snap.mirrors[c.mirror];
        let url = choice_url(snap, project, d, i, path).unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{:.0} %</td><td><a href=\"{u}\">{u}</a></td></tr>",
            i + 1,
            esc(&m.state.name),
            esc(&m.sponsor.0),
            m.country.map(crate::snapshot::cc_str).unwrap_or_default(),
            c.distance_km.map_or("?".into(), |x| format!("{x:.0} km")),
            c.tier,
            c.share * 100.0,
            u = esc(&url)
        );
    }
    h.push_str("</table>");
    if !d.excluded.is_empty() {
        h.push_str("<h2>Not used</h2><table><tr><th>Mirror</th><th>Why</th></tr>");
        for (m, why) in &d.excluded {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&snap.mirrors[*m].state.name),
                esc(&why.to_string())
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>");
    private_page(h, "text/html; charset=utf-8")
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
