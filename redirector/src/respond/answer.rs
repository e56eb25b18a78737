//! One answer per kind of request ([`Ask`](crate::request::Ask)), each with the metrics
//! outcome it counts as: the selection it needs, the download count it records, and the page
//! or redirect built by the sibling modules. The server only dispatches here.
//!
//! A path the index does not have may be on the origin already (the index lags it by up to a
//! scan): selection then names the nearest fallback ([`Outcome::Unindexed`]), and each answer
//! says so in its own form — the download and an HTML directory listing redirect there
//! (counted apart, as [`M::FallbackUnindexed`]), JSON, the mirror list and the metalink name
//! the fallback's URL; a checksum or `?stats` stays `404` (nothing is known about the file).
//!
//! The download ([`download`]) is the hot path: it borrows the snapshot, allocates only what
//! selection and the redirect need, and counts the download without waiting. Nothing here reads
//! the store (a file's `?stats` is answered by [`crate::filestats`]).

use std::net::IpAddr;
use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode};
use ipnet::IpNet;
use mirrorfleet_crds::state::{FallbackState, HashKind};
use mirrorfleet_crds::url::encode_path;
use mirrorfleet_geo::Geo;

use super::{Body, LISTING_LIMIT, choice_base, found, join, moved, text, unavailable};
use crate::metrics::{Metrics, Outcome as M};
use crate::request::{Target, fallback_safe, if_modified_since};
use crate::select::{self, Decision, Facts, Outcome};
use crate::snapshot::Snapshot;
use crate::stats::{self, Stats};

/// A response and the outcome it is counted as.
pub type Answer = (Response<Body>, M);

/// What answering a request in a project needs besides what it asks: the snapshot it is
/// answered from, the connection, the services, the time and a random draw.
#[derive(Debug)]
pub struct Context<'a> {
    /// The snapshot, borrowed for this request (the stats keep the `Arc` of the one a count
    /// was made in).
    pub snap: &'a Arc<Snapshot>,
    /// The connection's peer.
    pub peer: IpAddr,
    /// The request's method (only a GET is counted as a download).
    pub method: &'a Method,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// GeoIP.
    pub geo: &'a Geo,
    /// The download counters.
    pub stats: &'a Stats,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: &'a [IpNet],
    /// Keep one client network on one mirror.
    pub sticky: bool,
    /// Unix seconds now.
    pub now: i64,
    /// A random number for the load spread.
    pub random: u64,
}

impl Context<'_> {
    /// The selection facts for `at`: the client (`from` instead, when given), where it came
    /// from and how; `explain` to have every excluded mirror's reason.
    fn facts<'t>(&self, at: &'t Target<'_>, from: Option<IpAddr>, explain: bool) -> Facts<'t> {
        let ip = from.unwrap_or_else(|| {
            crate::facts::client_ip(self.peer, self.headers, self.trusted_proxies)
        });
        Facts {
            project: at.project,
            path: at.rel(),
            https_only: at.https_only
                || crate::facts::came_over_https(self.peer, self.headers, self.trusted_proxies),
            ip,
            geo: self.geo.lookup(ip),
            now: self.now,
            random: self.random,
            sticky: self.sticky,
            explain,
        }
    }
}

/// `/healthz`.
pub fn health() -> Answer {
    (text(StatusCode::OK, "ok\n"), M::Admin)
}

/// `/readyz`: `200` once a fleet state is loaded, else `503`.
pub fn ready(snap: &Snapshot) -> Answer {
    let r = if snap.loaded {
        text(StatusCode::OK, "ready\n")
    } else {
        unavailable("no fleet state loaded yet")
    };
    (r, M::Admin)
}

/// `/readyz` while shutting down: `503`, so that no new connections are sent here.
pub fn draining() -> Answer {
    (unavailable("shutting down"), M::Admin)
}

/// `/metrics`.
pub fn metrics(metrics: &Metrics) -> Answer {
    (text(StatusCode::OK, metrics.render()), M::Admin)
}

/// `?mirrorstats`: the fleet page, as JSON or HTML.
pub fn mirrorstats(snap: &Snapshot, stats: &Stats, json: bool) -> Answer {
    let counts = stats.fleet_counts();
    let page = if json {
        crate::mirrorstats::json(snap, &counts)
    } else {
        crate::mirrorstats::html(snap, &counts)
    };
    (page, M::Mirrorstats)
}

/// `?stats=` with a value that is not a period: `400`.
pub fn bad_period() -> Answer {
    (crate::filestats::bad_period(), M::BadRequest)
}

/// Neither GET nor HEAD: `405` with `Allow`.
pub fn method_not_allowed() -> Answer {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    (r, M::BadRequest)
}

/// A path refused by cleaning, with its status (`400`, `414`).
pub fn bad_path(status: StatusCode) -> Answer {
    (text(status, "bad request path\n"), M::BadRequest)
}

/// No fleet state yet: `503`.
pub fn not_loaded() -> Answer {
    (unavailable("no fleet state loaded yet"), M::Unavailable)
}

/// `404`: no project, file or directory there.
pub fn not_found() -> Answer {
    (text(StatusCode::NOT_FOUND, "not found\n"), M::NotFound)
}

/// `?stats` on a path that is not an indexed file: `404` (counts are kept for indexed files
/// only), `301` for a directory asked for without its slash, `503` before the index is loaded.
pub fn stats_unindexed(snap: &Snapshot, at: &Target<'_>) -> Answer {
    if index(snap, at.project).is_none() {
        return (
            unavailable("this project's file index is not loaded yet"),
            M::Unavailable,
        );
    }
    moved_to_directory(snap, at).unwrap_or_else(|| {
        (
            text(
                StatusCode::NOT_FOUND,
                "no download counts: this file is not in the index (yet)\n",
            ),
            M::NotFound,
        )
    })
}

/// A directory of a project, listed from its index (`json` for the JSON form); one the index
/// does not have, see [`unindexed_directory`].
pub fn listing(cx: &Context<'_>, at: &Target<'_>, json: bool) -> Answer {
    let snap = cx.snap;
    let rel = at.rel();
    let Some(index) = snap
        .projects
        .get(at.project)
        .and_then(|p| p.index.as_deref())
    else {
        return (
            unavailable("this project's file index is not loaded yet"),
            M::Unavailable,
        );
    };
    if !rel.is_empty() && !index.has_dir(rel) {
        let is_file = rel
            .strip_suffix('/')
            .is_some_and(|f| index.position(f).is_some());
        return unindexed_directory(cx, at, json, is_file);
    }
    let (entries, truncated) = index.dir_entries(rel, LISTING_LIMIT);
    (
        super::listing(&at.path, rel.is_empty(), &entries, truncated, json),
        M::Listing,
    )
}

/// A directory the index does not have, which the origin may have just made: the HTML
/// listing is the nearest fallback's (`302` to the same path there, as a download's
/// redirect); JSON, which a redirect to someone else's HTML page would not serve, is a `404`
/// (no entry is known) naming the fallback's URL. `404` alone when the index has the path as a
/// file (`is_file`), when the path is not one to send ([`fallback_safe`]), or when the project
/// has no fallback for the client.
fn unindexed_directory(cx: &Context<'_>, at: &Target<'_>, json: bool, is_file: bool) -> Answer {
    let facts = cx.facts(at, None, false);
    let base = (!is_file && fallback_safe(at.rel()))
        .then(|| select::nearest_fallback(&facts, cx.snap))
        .flatten()
        .and_then(|i| fallback_base(cx.snap, at.project, i));
    let Some(base) = base else {
        return not_found();
    };
    let url = join(base, &encode_path(at.rel()));
    if json {
        (super::pages::unindexed_listing(&at.path, &url), M::NotFound)
    } else {
        (found(&url), M::FallbackUnindexed)
    }
}

/// The apt `mirror+` list: every mirror that qualifies for the whole project, not only the
/// best few (apt tries them in order), or the fallbacks when none does.
pub fn apt_list(cx: &Context<'_>, at: &Target<'_>, from: Option<IpAddr>) -> Answer {
    let facts = cx.facts(at, from, true);
    let d = select::select_project(&facts, cx.snap);
    let fallbacks: Vec<&str> = match d.outcome {
        Outcome::Mirror => vec![],
        _ => fallbacks(cx.snap, at.project)
            .iter()
            .map(|f| f.url.as_str())
            .filter(|u| !facts.https_only || u.starts_with("https://"))
            .collect(),
    };
    (
        super::apt_list(cx.snap, at.project, &d, &fallbacks, facts.ip, &facts.geo),
        M::Mirrorlist,
    )
}

/// A file's checksum, as `sha256sum` prints it; `404` when the index has no such hash.
pub fn checksum(snap: &Snapshot, at: &Target<'_>, kind: HashKind) -> Answer {
    let file = snap
        .projects
        .get(at.project)
        .and_then(|p| p.index.as_deref())
        .and_then(|i| i.find(at.rel()));
    let r = super::checksum(file.as_ref(), kind);
    let m = if r.status() == StatusCode::OK {
        M::Checksum
    } else {
        M::NotFound
    };
    (r, m)
}

/// The mirror list page of a file (for `from` instead of the client, when given); for a file
/// the index does not have, the page says so and names the fallback.
pub fn mirrorlist(cx: &Context<'_>, at: &Target<'_>, from: Option<IpAddr>) -> Answer {
    let facts = cx.facts(at, from, true);
    let d = select::select(&facts, cx.snap);
    if let Some(answer) = not_a_file(cx.snap, at, &d) {
        return answer;
    }
    let fallback = fallback_url(cx.snap, at, &d);
    (
        super::mirrorlist(
            cx.snap,
            at.project,
            &d,
            at.rel(),
            facts.ip,
            &facts.geo,
            fallback.as_deref(),
        ),
        M::Mirrorlist,
    )
}

/// A file's metalink: its mirrors, else the fallbacks the client may use (the one a download
/// would go to first) — for a file the index does not have, the fallbacks alone, without size
/// or hash.
pub fn metalink(cx: &Context<'_>, at: &Target<'_>) -> Answer {
    let facts = cx.facts(at, None, true);
    let d = select::select(&facts, cx.snap);
    if let Some(answer) = not_a_file(cx.snap, at, &d) {
        return answer;
    }
    let encoded = encode_path(at.rel());
    let all = fallbacks(cx.snap, at.project);
    let first = match d.outcome {
        Outcome::Fallback(i) | Outcome::Unindexed(i) => Some(i),
        _ => None,
    };
    let fallbacks: Vec<String> = first
        .into_iter()
        .chain((0..all.len()).filter(|j| Some(*j) != first))
        .filter_map(|j| all.get(j))
        .filter(|f| !facts.https_only || f.url.starts_with("https://"))
        .map(|f| join(&f.url, &encoded))
        .collect();
    let r = super::metalink(cx.snap, at.project, &d, at.rel(), &fallbacks);
    let m = if r.status() == StatusCode::OK {
        M::Metalink
    } else {
        M::NotFound
    };
    (r, m)
}

/// The JSON answer about a file (`304` when the client's copy is current; for a file not in
/// the index, a `200` saying so with the fallback a download goes to, or what a download gets
/// when it goes to none).
pub fn json(cx: &Context<'_>, at: &Target<'_>) -> Answer {
    let facts = cx.facts(at, None, true);
    let d = select::select(&facts, cx.snap);
    if let Some(current) = not_modified(cx.headers, &d) {
        return current;
    }
    if let Some(answer) = not_a_file(cx.snap, at, &d) {
        return answer;
    }
    let fallback = fallback_url(cx.snap, at, &d);
    (
        super::json(
            cx.snap,
            at.project,
            &d,
            at.rel(),
            facts.ip,
            &facts.geo,
            fallback,
        ),
        M::Json,
    )
}

/// The download: `302` to the chosen mirror (or a fallback, also for a file the index does not
/// have yet), counted when a GET; `304` when the client's copy is current; `301` for a
/// directory without its slash; `404` for a file not in the index that no fallback may have;
/// `503`.
pub fn download(cx: &Context<'_>, at: &Target<'_>) -> Answer {
    let facts = cx.facts(at, None, false);
    let d = select::select(&facts, cx.snap);
    if let Some(current) = not_modified(cx.headers, &d) {
        return current;
    }
    if let Some(answer) = not_a_file(cx.snap, at, &d) {
        return answer;
    }
    let (base, mirror, m) = match d.outcome {
        Outcome::NotFound => return not_found(), // answered by `not_a_file`
        Outcome::Unindexed(i) => {
            let Some(base) = fallback_base(cx.snap, at.project, i) else {
                return not_found();
            };
            (base, None, M::FallbackUnindexed)
        }
        Outcome::Unavailable => {
            return (
                unavailable("no mirror and no fallback can serve this file right now"),
                M::Unavailable,
            );
        }
        Outcome::Fallback(i) => {
            let Some(base) = fallback_base(cx.snap, at.project, i) else {
                return (unavailable("no fallback"), M::Unavailable);
            };
            (base, None, M::Fallback)
        }
        Outcome::Mirror => {
            let Some(base) = choice_base(cx.snap, at.project, &d, 0) else {
                return (unavailable("the chosen mirror has no URL"), M::Unavailable);
            };
            (base, d.choices.first().map(|c| c.mirror), M::Redirect)
        }
    };
    // Indexed files by their position; a path the index does not have, apart.
    let counted = match d.outcome {
        Outcome::Unindexed(_) => Some(None),
        _ => d.file_pos.map(Some),
    };
    if cx.method == Method::GET
        && let Some(file) = counted
    {
        cx.stats.count(stats::Event {
            snap: cx.snap,
            project: at.project,
            file,
            mirror,
            country: facts.geo.country,
            at: facts.now,
        });
    }
    let r = super::redirect(
        base,
        cx.snap,
        at.project,
        &d,
        &encode_path(at.rel()),
        &encode_path(&at.path),
    );
    (r, m)
}

/// RFC 9110 §13.1.3: `304` when the client's copy is at least as new as the index's.
fn not_modified(headers: &HeaderMap, d: &Decision<'_>) -> Option<Answer> {
    let file = d.file.as_ref()?;
    (file.mtime > 0 && if_modified_since(headers).is_some_and(|since| file.mtime <= since))
        .then(|| (super::not_modified(file.mtime), M::NotModified))
}

/// The answer to a decision about a path the index does not have as a file, when it is not
/// the fallback's: `301` to the directory when it is one asked for without its slash, `404`
/// when no fallback may have it. `None` for every other decision.
fn not_a_file(snap: &Snapshot, at: &Target<'_>, d: &Decision<'_>) -> Option<Answer> {
    match d.outcome {
        Outcome::NotFound => Some(missing(snap, at)),
        Outcome::Unindexed(_) => moved_to_directory(snap, at),
        _ => None,
    }
}

/// A file the index does not have: `301` to the directory when it is one asked for without
/// its slash, else `404`.
fn missing(snap: &Snapshot, at: &Target<'_>) -> Answer {
    moved_to_directory(snap, at).unwrap_or_else(not_found)
}

/// `301` to the directory when the path is one the index has, asked for without its slash.
fn moved_to_directory(snap: &Snapshot, at: &Target<'_>) -> Option<Answer> {
    let dir = format!("{}/", at.rel());
    index(snap, at.project)
        .is_some_and(|i| i.has_dir(&dir))
        .then(|| (moved(&format!("{}/", encode_path(&at.path))), M::Listing))
}

/// The project's file index, once loaded.
fn index(snap: &Snapshot, project: usize) -> Option<&mirrorfleet_crds::state::FileIndex> {
    snap.projects.get(project).and_then(|p| p.index.as_deref())
}

/// The URL of the file on the fallback the decision sends it to, if it does.
fn fallback_url(snap: &Snapshot, at: &Target<'_>, d: &Decision<'_>) -> Option<String> {
    match d.outcome {
        Outcome::Fallback(i) | Outcome::Unindexed(i) => {
            fallback_base(snap, at.project, i).map(|base| join(base, &encode_path(at.rel())))
        }
        _ => None,
    }
}

/// The project's fallbacks.
fn fallbacks(snap: &Snapshot, project: usize) -> &[FallbackState] {
    snap.projects
        .get(project)
        .map_or(&[], |p| p.state.fallbacks.as_slice())
}

/// The base URL of the project's fallback `i`.
fn fallback_base(snap: &Snapshot, project: usize, i: usize) -> Option<&str> {
    fallbacks(snap, project).get(i).map(|f| f.url.as_str())
}
