//! Targeted checks: proving that a mirror holds what changed in the index without listing
//! the whole mirror. When a project's index changes, the files it added or rewrote are
//! remembered for a while ([`Recent`]); each mirror carrying the project is then asked, by a
//! HEAD per file, whether it serves exactly the new version (size, and `Last-Modified` for
//! mutable metadata), mutable metadata first ([`pending`], [`check`]). What it proves is
//! added to the mirror's availability ([`apply`]): a current mirror gets metadata traffic
//! again within seconds of its sync, not at its next full scan. The driver ([`follow`])
//! runs the checks on index changes and on mirrors' sync reports, with backoff.
//!
//! A check only ever adds what a HEAD proved, on top of the newest availability; it never
//! removes anything (a full scan does that). It must not list a mirror or hash anything.

mod follow;

pub use follow::{Settings, follow};

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use mirrorfleet_crds::state::{
    Availability, FileIndex, MirrorProjectState, MutableSeen, PathClasses,
};
use tokio::time::Instant;

use super::{ScanError, http};

/// The files of one project's index that changed lately, with when they changed.
#[derive(Debug, Default, Clone)]
pub struct Recent {
    /// Path → when the index got its current version.
    changed: HashMap<String, Instant>,
    /// Serials the index had, with when each was first seen (oldest first).
    serials: Vec<(String, Instant)>,
    /// When a change too large to remember was last seen: until it leaves the window, a
    /// mirror compared with an older serial cannot be proven complete by checks alone.
    overflowed: Option<Instant>,
}

/// Most changed files remembered per index change: a larger change (a first index, a
/// re-layout) is left to the full scans.
pub const MAX_CHANGED: usize = 10_000;

impl Recent {
    /// Takes the change from `old` to `new` in at `now`, forgetting what is older than
    /// `window`.
    pub fn observe(
        &mut self,
        old: Option<&FileIndex>,
        new: &FileIndex,
        now: Instant,
        window: Duration,
    ) {
        self.expire(now, window);
        if self.serials.last().is_none_or(|(s, _)| *s != new.serial) {
            self.serials.push((new.serial.clone(), now));
        }
        let Some(old) = old else {
            return;
        };
        let mut changed = Vec::new();
        for e in new.iter() {
            let same = old
                .find(e.path)
                .is_some_and(|o| o.size == e.size && o.mtime == e.mtime);
            if !same {
                if changed.len() == MAX_CHANGED {
                    tracing::info!(project = %new.project, limit = MAX_CHANGED, "a large index change; left to the full scans");
                    self.overflowed = Some(now);
                    return;
                }
                changed.push(e.path);
            }
        }
        for path in changed {
            self.changed.insert(path.to_owned(), now);
        }
    }

    /// Forgets what is older than `window`.
    pub fn expire(&mut self, now: Instant, window: Duration) {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) <= window;
        self.changed.retain(|_, at| fresh(at));
        // The newest serial stays: it is the one mirrors are compared with.
        while self.serials.len() > 1 && !fresh(&self.serials[0].1) {
            self.serials.remove(0);
        }
        if self.overflowed.is_some_and(|at| !fresh(&at)) {
            self.overflowed = None;
        }
    }

    /// Whether every change since `serial` is remembered: the serial was seen within the
    /// window and no change since was too large.
    pub fn covers(&self, serial: &str) -> bool {
        match self.serials.iter().position(|(s, _)| s == serial) {
            Some(i) => self.overflowed.is_none_or(|at| at <= self.serials[i].1),
            None => false,
        }
    }

    /// Whether anything is remembered.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

/// One file to check on a mirror, at its current version in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// File id.
    pub id: u32,
    /// Path relative to the project root.
    pub path: String,
    /// Size in the index.
    pub size: u64,
    /// Mtime in the index.
    pub mtime: i64,
    /// Mutable metadata (its version must match, not only its size).
    pub mutable: bool,
}

/// The recently changed files of `index` that `avail` does not hold at their current
/// version and that the mirror carries (`carried`: its sub-trees, empty for all), mutable
/// metadata first, at most `max`.
pub fn pending(
    index: &FileIndex,
    avail: &Availability,
    classes: &PathClasses,
    carried: &[String],
    recent: &Recent,
    max: usize,
) -> Vec<Target> {
    let in_scope = |path: &str| {
        carried.is_empty()
            || carried
                .iter()
                .any(|p| path.starts_with(p.as_str()) || p.trim_end_matches('/') == path)
    };
    let mut out: Vec<Target> = recent
        .changed
        .keys()
        .filter(|path| in_scope(path))
        .filter_map(|path| index.find(path))
        .filter_map(|e| {
            let mutable = classes.is_mutable(e.path);
            let held = if mutable {
                avail.holds_version(e.id, e.size, e.mtime)
            } else {
                avail.present.contains(e.id)
            };
            (!held).then(|| Target {
                id: e.id,
                path: e.path.to_owned(),
                size: e.size,
                mtime: e.mtime,
                mutable,
            })
        })
        .collect();
    out.sort_unstable_by(|a, b| b.mutable.cmp(&a.mutable).then_with(|| a.path.cmp(&b.path)));
    out.truncate(max);
    out
}

/// The base URL checks use for a carried project: HTTPS, else HTTP; `None` when the mirror
/// serves the project over neither (it can only be scanned).
pub fn base_url(carried: &MirrorProjectState) -> Option<&str> {
    carried.https.as_deref().or(carried.http.as_deref())
}

/// HEADs each target under `base`, `concurrency` at a time, and returns the ones the mirror
/// serves at their current version: status 200, `Content-Length` equal to the size and, for
/// mutable metadata, `Last-Modified` equal to the mtime. A file served otherwise is simply
/// not proven; an error reaching the mirror at all fails the check.
pub async fn check(
    client: &reqwest::Client,
    base: &str,
    targets: &[Target],
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<Target>, ScanError> {
    // Futures built first: a stream mapping borrowed targets is not `Send` for any lifetime.
    let heads: Vec<_> = targets
        .iter()
        .cloned()
        .map(|t| head(client, base, t, timeout))
        .collect();
    let results: Vec<Result<Option<Target>, ScanError>> = futures_util::stream::iter(heads)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut held = Vec::new();
    let mut first_error = None;
    let mut answered = false;
    for r in results {
        match r {
            Ok(Some(t)) => {
                answered = true;
                held.push(t);
            }
            Ok(None) => answered = true,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        // Some answers came: keep what they proved; the rest is checked again later.
        Some(e) if !answered => Err(e),
        _ => Ok(held),
    }
}

async fn head(
    client: &reqwest::Client,
    base: &str,
    t: Target,
    timeout: Duration,
) -> Result<Option<Target>, ScanError> {
    let encoded: Vec<String> = t.path.split('/').map(http::percent_encode).collect();
    let url = http::join_url(base, &encoded.join("/"));
    let resp = client
        .head(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| ScanError::Http {
            url: url.clone(),
            why: mirrorfleet_runtime::error_chain(&e),
        })?;
    Ok(proves(&resp, &t).then_some(t))
}

/// Whether a HEAD answer shows `t` at its current version.
fn proves(resp: &reqwest::Response, t: &Target) -> bool {
    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
    let size_ok = header(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.trim().parse::<u64>().ok())
        == Some(t.size);
    let version_ok = !t.mutable
        || header(reqwest::header::LAST_MODIFIED)
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            == Some(t.mtime);
    resp.status() == reqwest::StatusCode::OK && size_ok && version_ok
}

/// Adds the `held` files that are still current in `index` to `avail`; returns whether
/// anything changed. A file whose index version moved on since the check is left out.
pub fn apply(avail: &mut Availability, index: &FileIndex, held: &[Target]) -> bool {
    let mut changed = false;
    for t in held {
        let current = index
            .find(&t.path)
            .is_some_and(|e| e.id == t.id && e.size == t.size && e.mtime == t.mtime);
        if !current {
            continue;
        }
        if t.mutable {
            let seen = MutableSeen {
                id: t.id,
                size: t.size,
                mtime: t.mtime,
            };
            match avail.mutable.binary_search_by_key(&t.id, |m| m.id) {
                Ok(i) if avail.mutable[i] == seen => continue,
                // Counted among the files at its scan, in its older version.
                Ok(i) => {
                    avail.counts.bytes =
                        (avail.counts.bytes + t.size).saturating_sub(avail.mutable[i].size);
                    avail.mutable[i] = seen;
                    changed = true;
                    continue;
                }
                Err(i) => avail.mutable.insert(i, seen),
            }
        } else if !avail.present.insert(t.id) {
            continue;
        }
        // Counted missing or mismatched at its scan, or not in the index then.
        let c = &mut avail.counts;
        if c.missing > 0 {
            c.missing -= 1;
        } else {
            c.mismatched = c.mismatched.saturating_sub(1);
        }
        c.files += 1;
        c.bytes += t.size;
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests;
