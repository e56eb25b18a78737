//! Pages about a request or a directory: the JSON answer, the `?mirrorlist` HTML page, and
//! directory listings from the index. Built on demand (never on the redirect path).

use std::fmt::Write;

use hyper::Response;
use hyper::header::{self, HeaderValue};
use mirrorfleet_crds::state::index::DirEntry;
use mirrorfleet_crds::state::{FileEntry, HashKind};
use serde_json::json;

use mirrorfleet_crds::url::encode_path;

use super::{Body, choice_url, esc, hex, private_json, private_page};
use mirrorfleet_geo::ClientGeo;

use crate::select::{Decision, Outcome};
use crate::snapshot::Snapshot;

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
        "country": geo.country.map(mirrorfleet_geo::cc_str),
        "continent": geo.continent.map(|c| c.code()),
        "asn": geo.asn,
    })
}

/// What the answers about a file the index does not have say.
pub const NOT_INDEXED: &str = "not in the index yet (the index lags the origin by up to one scan): no mirror is known to have it, and its size and hashes are unknown; downloads go to the fallback, which may have it";

/// The JSON answer: the file, the client, the chosen mirror and the alternatives (and, with
/// `explain`, every excluded mirror with why), the fallback a download goes to, whether the
/// index has the file (with [`NOT_INDEXED`] when it does not). Never contacts or private
/// notes: the snapshot does not hold them.
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
                "country": m.country.map(mirrorfleet_geo::cc_str),
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
    let mut body = json!({
        "file": d.file.as_ref().map(file_json),
        "indexed": d.file.is_some(),
        "client": client_json(ip, geo),
        "mirror": mirrors.first(),
        "alternatives": mirrors.get(1..).unwrap_or_default(),
        "excluded": excluded,
        "fallback": fallback,
    });
    if matches!(d.outcome, Outcome::Unindexed(_)) {
        body["note"] = json!(NOT_INDEXED);
    }
    private_json(&body)
}

/// The JSON listing of a directory the index does not have: `404`, the fallback's URL of it
/// (which may list it) and why. `request_path` is the cleaned path asked for.
pub fn unindexed_listing(request_path: &str, fallback: &str) -> Response<Body> {
    let body = json!({
        "path": request_path,
        "indexed": false,
        "note": "this directory is not in the index (yet: the index lags the origin by up to one scan); the fallback may list it",
        "fallback": fallback,
    });
    let mut r = private_json(&body);
    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
    r
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
        let mut r = private_json(&body);
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

/// The `?mirrorlist` page: the file, its hashes, every usable mirror with distance and share,
/// and every excluded mirror with why; `fallback`, the file's URL on the fallback a download
/// goes to when it goes to one (for a file the index does not have, with [`NOT_INDEXED`]).
pub fn mirrorlist(
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    path: &str,
    ip: std::net::IpAddr,
    geo: &ClientGeo,
    fallback: Option<&str>,
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
        // Relative to this page: the file's name in the same directory.
        let name = f.path.rsplit('/').next().unwrap_or(f.path);
        let _ = write!(
            h,
            "</ul><p>Metalink (for download managers such as aria2): <a href=\"{0}.meta4\">{1}.meta4</a></p>",
            esc(&encode_path(name)),
            esc(name)
        );
    }
    if let Some(url) = fallback {
        let why = if matches!(d.outcome, Outcome::Unindexed(_)) {
            format!("This file is {NOT_INDEXED}")
        } else {
            "No mirror can serve this file for you now: downloads go to the fallback".to_owned()
        };
        let _ = write!(
            h,
            "<p>{}: <a href=\"{u}\">{u}</a></p>",
            esc(&why),
            u = esc(url)
        );
    }
    let country = geo
        .country
        .map(mirrorfleet_geo::cc_str)
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
            m.country.map(mirrorfleet_geo::cc_str).unwrap_or_default(),
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
