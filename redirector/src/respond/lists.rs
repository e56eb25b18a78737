//! Documents that list a file's or a project's mirrors for download clients: metalink v4
//! (RFC 5854) for a file, and the apt `mirror+` list (apt-transport-mirror(1)) for a project.

use std::fmt::Write;

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use mirrorfleet_crds::state::HashKind;

use super::{Body, choice_base, choice_url, esc, hex, private_page, text, unavailable};
use mirrorfleet_geo::ClientGeo;

use crate::select::{Decision, Outcome};
use crate::snapshot::Snapshot;

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
        .map_or_else(|| "unknown".into(), mirrorfleet_geo::cc_str);
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
/// mirror qualifies, the fallbacks instead. For a file the index does not have (yet), the
/// fallbacks alone, without size or hash, and a description saying so. Served as an
/// attachment named `<file>.meta4`.
pub fn metalink(
    snap: &Snapshot,
    project: usize,
    d: &Decision<'_>,
    path: &str,
    fallbacks: &[String],
) -> Response<Body> {
    let unindexed = matches!(d.outcome, Outcome::Unindexed(_));
    let file = match &d.file {
        Some(file) => Some(file),
        None if unindexed => None,
        None => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let name = file.map_or(path, |f| f.path);
    let name = name.rsplit('/').next().unwrap_or(name);
    let mut x = String::with_capacity(1024 + 160 * d.choices.len());
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n");
    x.push_str("  <generator>mirrorfleet</generator>\n");
    let _ = writeln!(x, "  <file name=\"{}\">", esc(name));
    match file {
        Some(file) => {
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
        }
        None => {
            let _ = writeln!(
                x,
                "    <description>This file is {}.</description>",
                esc(super::pages::NOT_INDEXED)
            );
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
            let cc = mirrorfleet_geo::cc_str(cc).to_ascii_lowercase();
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
    if priority == 0 {
        // RFC 5854 wants at least one URL per file: better to say none can serve it now.
        return unavailable("no mirror and no fallback can serve this file right now");
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::Arc;

    use mirrorfleet_crds::state::index::FileRecord;
    use mirrorfleet_crds::state::{FileIndex, FleetState, ProjectState};

    use super::*;
    use crate::select::{Facts, select, select_project};
    use mirrorfleet_geo::ClientGeo;

    /// A project whose one file no mirror and no fallback can serve.
    fn orphan() -> Snapshot {
        let index = FileIndex::build(
            "p",
            "s",
            &[HashKind::Sha256],
            vec![FileRecord {
                path: "a.iso".into(),
                size: 1,
                mtime: 0,
                digests: vec![Some(vec![1; 32])],
            }],
            None,
        );
        let fleet = FleetState {
            projects: vec![ProjectState {
                name: "p".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let indexes = HashMap::from([("p".to_owned(), Arc::new(index))]);
        Snapshot::from_parts(1, &fleet, &indexes, &HashMap::new(), &HashMap::new())
    }

    fn facts() -> Facts<'static> {
        Facts {
            project: 0,
            path: "a.iso",
            https_only: false,
            ip: "192.0.2.1".parse().unwrap(),
            geo: ClientGeo::default(),
            now: 0,
            random: 7,
            sticky: false,
            explain: true,
        }
    }

    #[test]
    fn nothing_to_list_is_503_not_an_empty_document() {
        let snap = orphan();
        let d = select(&facts(), &snap);
        assert!(d.file.is_some());
        assert_eq!(
            metalink(&snap, 0, &d, "a.iso", &[]).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let whole = select_project(&facts(), &snap);
        let list = apt_list(&snap, 0, &whole, &[], facts().ip, &ClientGeo::default());
        assert_eq!(list.status(), StatusCode::SERVICE_UNAVAILABLE);
        // With a fallback, both list it.
        let fallback = ["https://origin.example/p/a.iso".to_owned()];
        assert_eq!(
            metalink(&snap, 0, &d, "a.iso", &fallback).status(),
            StatusCode::OK
        );
        let list = apt_list(
            &snap,
            0,
            &whole,
            &["https://origin.example/p/"],
            facts().ip,
            &ClientGeo::default(),
        );
        assert_eq!(list.status(), StatusCode::OK);
    }
}
