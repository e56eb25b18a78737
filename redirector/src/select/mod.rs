//! Choosing the mirror for a request: a pure function of the request's facts and the
//! snapshot — no I/O, no clock, no globals; randomness comes in with the facts.
//!
//! 1. Resolve the file in the project's index (no index yet: fallback). A file the index
//!    does not have may still be on the origin (the index lags it by up to a scan): it goes
//!    to the nearest fallback when the path is safe to send there
//!    ([`fallback_safe`](crate::request::fallback_safe)), else 404.
//! 2. Filter the mirrors carrying the project, recording why each one is excluded: disabled,
//!    in maintenance, sub-tree not carried, file missing or of another size, mutable metadata
//!    not proven current, no URL for an acceptable scheme, down for the client's scheme and
//!    address family, restrictions, region rules.
//! 3. Rank into tiers — preferred by a rule; same network or AS; same country; additional
//!    country; same continent; elsewhere — then by distance. (Steps 2 and 3 for one mirror
//!    are [`eligible`]'s, for every kind of decision.)
//! 4. Spread load among the *nearby* mirrors of the best tier (within 1.5 × the closest
//!    distance + 100 km) in proportion to weight × capacity, or by rendezvous hashing of the
//!    client's network when stickiness is asked for. Far-away mirrors never change this share.
//!    Without geolocation the spread is over every eligible mirror of the best tier.
//! 5. No eligible mirror: the project's fallbacks (nearest first); none: unavailable.
//!
//! HTTPS is never downgraded: a client that came over HTTPS only gets HTTPS mirrors.

use std::net::IpAddr;

use mirrorfleet_crds::state::{FallbackState, FileEntry};
use mirrorfleet_geo::{ClientGeo, distance_km};

use crate::snapshot::{Hot, Snapshot};
use eligible::Asked;
use rank::{Scratch, rank, rank_key};

/// The facts of one request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Project index in the snapshot.
    pub project: usize,
    /// Path relative to the project root.
    pub path: &'a str,
    /// The client came over HTTPS (only HTTPS mirrors will do).
    pub https_only: bool,
    /// The client's address.
    pub ip: IpAddr,
    /// Geolocation.
    pub geo: ClientGeo,
    /// Unix seconds now (for maintenance windows).
    pub now: i64,
    /// A random number for the load spread.
    pub random: u64,
    /// Keep one client network on one mirror (rendezvous hashing) instead of drawing.
    pub sticky: bool,
    /// Record why every other mirror was excluded (mirror lists, JSON), not just choose.
    pub explain: bool,
}

/// Why a mirror was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Disabled in its spec.
    Disabled,
    /// In a maintenance window.
    Maintenance,
    /// It carries only other sub-trees of the project.
    NotCarried,
    /// Never scanned successfully for this project.
    NotScanned,
    /// The file is missing or has another size there.
    Missing,
    /// Mutable metadata not proven to be the current version.
    Outdated,
    /// No URL for a scheme the client accepts.
    NoScheme,
    /// Not reachable over the client's address family.
    Family,
    /// Down for the client's scheme and family.
    Down(String),
    /// Serves its countries only.
    CountryOnly,
    /// Serves its continent only.
    ContinentOnly,
    /// Serves its autonomous systems only.
    AsOnly,
    /// Serves its networks only.
    NetworksOnly,
    /// The client's country is excluded.
    ExcludedCountry,
    /// Excluded by a region rule.
    Rule(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Disabled => write!(f, "disabled"),
            Reason::Maintenance => write!(f, "in maintenance"),
            Reason::NotCarried => write!(f, "does not carry this part of the project"),
            Reason::NotScanned => write!(f, "not scanned yet"),
            Reason::Missing => write!(f, "file missing or of another size"),
            Reason::Outdated => write!(f, "metadata not proven current"),
            Reason::NoScheme => write!(f, "no HTTPS URL"),
            Reason::Family => write!(f, "not reachable over the client's address family"),
            Reason::Down(why) => write!(f, "down ({why})"),
            Reason::CountryOnly => write!(f, "serves its countries only"),
            Reason::ContinentOnly => write!(f, "serves its continent only"),
            Reason::AsOnly => write!(f, "serves its networks' AS only"),
            Reason::NetworksOnly => write!(f, "serves its networks only"),
            Reason::ExcludedCountry => write!(f, "excludes the client's country"),
            Reason::Rule(name) => write!(f, "excluded by region rule {name}"),
        }
    }
}

/// Rank tiers, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Preferred by a region rule.
    Preferred,
    /// Same network or autonomous system as the client.
    Network,
    /// The client's country is the mirror's own.
    Country,
    /// The client's country is one the mirror also serves.
    ExtraCountry,
    /// Same continent.
    Continent,
    /// Elsewhere.
    Elsewhere,
}

/// One usable mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Index into the snapshot's mirrors.
    pub mirror: usize,
    /// Index into the project's carriers.
    pub carrier: usize,
    /// Whether the HTTPS URL is used.
    pub https: bool,
    /// Its tier.
    pub tier: Tier,
    /// Distance from the client, when both are located (filled when explaining).
    pub distance_km: Option<f64>,
    /// Its share of the load among the nearby mirrors (0 outside them).
    pub share: f64,
}

/// A candidate while ranking: small (32 bytes), so that a pass over 200 stays in cache.
#[derive(Debug, Clone, Copy)]
struct Cand {
    /// [`rank_key`] of the tier and closeness: smaller is better.
    key: f64,
    /// Cosine of the angle to the client (larger is nearer); NaN when either is unlocated.
    closeness: f64,
    /// weight × capacity, scaled by the matching region rules.
    weight: f64,
    carrier: u32,
    mirror: u32,
    https: bool,
    tier: Tier,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Redirect to `choices[0]`.
    Mirror,
    /// No eligible mirror: redirect to this fallback.
    Fallback(usize),
    /// The file is not in the index, which lags the origin: redirect to this fallback, which
    /// may have it already.
    Unindexed(usize),
    /// The file is not in the index and cannot be sent to a fallback: the project has none
    /// (none for the client's scheme), or the path is not one to send
    /// ([`fallback_safe`](crate::request::fallback_safe)).
    NotFound,
    /// Nothing possible.
    Unavailable,
}

/// The decision, with its reasons.
#[derive(Debug, Clone)]
pub struct Decision<'s> {
    /// What to answer.
    pub outcome: Outcome,
    /// The file, when the index has it.
    pub file: Option<FileEntry<'s>>,
    /// The file's position in the project's index (for stats).
    pub file_pos: Option<usize>,
    /// Usable mirrors, the chosen one first, then alternatives by rank.
    pub choices: Vec<Choice>,
    /// Mirrors not used, with why (only when explaining).
    pub excluded: Vec<(usize, Reason)>,
}

impl Decision<'_> {
    /// An answer without file, choices or reasons.
    fn empty(outcome: Outcome) -> Self {
        Decision {
            outcome,
            file: None,
            file_pos: None,
            choices: vec![],
            excluded: vec![],
        }
    }
}

/// Decides where `facts` goes.
pub fn select<'s>(facts: &Facts<'_>, snap: &'s Snapshot) -> Decision<'s> {
    let Some(project) = snap.projects.get(facts.project) else {
        return Decision::empty(Outcome::Unavailable);
    };
    let Some(index) = project.index.as_deref() else {
        return fallback(facts, snap, None, vec![], vec![]);
    };
    let Some((file_pos, file)) = index
        .position(facts.path)
        .and_then(|p| Some((p, index.get(p)?)))
    else {
        let pick = crate::request::fallback_safe(facts.path)
            .then(|| nearest_fallback(facts, snap))
            .flatten();
        return Decision::empty(pick.map_or(Outcome::NotFound, Outcome::Unindexed));
    };
    let mutable = project.classes.is_mutable(file.path);
    let mut d = decide(
        facts,
        snap,
        project,
        Need::File {
            file: &file,
            mutable,
        },
    );
    d.file = Some(file);
    d.file_pos = Some(file_pos);
    d
}

/// Ranks the mirrors that carry the whole project for `facts`' client (`facts.path` is not
/// used): enabled, scanned, reachable and healthy for the client, without sub-tree
/// restrictions — the apt `mirror+` list. The chosen mirror is drawn by weight among the
/// nearby ones, as for a file, so that lists spread clients the same way redirects do.
pub fn select_project<'s>(facts: &Facts<'_>, snap: &'s Snapshot) -> Decision<'s> {
    let Some(project) = snap.projects.get(facts.project) else {
        return Decision::empty(Outcome::Unavailable);
    };
    decide(facts, snap, project, Need::Project)
}

/// What the mirrors must hold.
#[derive(Clone, Copy)]
enum Need<'a, 's> {
    /// One file of the index (a mutable one in its current version).
    File {
        file: &'a FileEntry<'s>,
        mutable: bool,
    },
    /// The whole project.
    Project,
}

/// The ranking shared by [`select`] and [`select_project`]: every carrier of the project
/// through [`Asked::eligible`], the usable ones ranked.
fn decide<'s>(
    facts: &Facts<'_>,
    snap: &'s Snapshot,
    project: &'s crate::snapshot::Project,
    need: Need<'_, 's>,
) -> Decision<'s> {
    let g = &facts.geo;
    let project_name = project.state.name.as_str();
    // Rules that apply to this client, highest priority first (typically none or one).
    let mut rule_buf = [0usize; 8];
    let mut n_rules = 0;
    for (i, r) in snap.rules.iter().enumerate() {
        if n_rules < rule_buf.len()
            && r.matches(project_name, facts.ip, g.country, g.continent, g.asn)
        {
            rule_buf[n_rules] = i;
            n_rules += 1;
        }
    }
    let rules = &rule_buf[..n_rules];

    let asked = Asked::new(facts, snap, project, need, rules);

    let mut scratch = Scratch::take(project.carriers.len());
    let cands = &mut scratch.0;
    // The best-ranked candidate, tracked on the way (ranking starts from it).
    let (mut best, mut best_key) = (0, f64::INFINITY);
    let mut excluded = Vec::new();
    for (ci, h) in project.lanes.iter().enumerate() {
        let u = match asked.eligible(ci, h) {
            Ok(u) => u,
            Err(Some(reason)) => {
                excluded.push((h.mirror as usize, reason));
                continue;
            }
            Err(None) => continue,
        };
        let closeness = match g.point {
            Some(a) if h.has(Hot::LOCATED) => {
                let p = h.point.map(f64::from);
                Some(a[0] * p[0] + a[1] * p[1] + a[2] * p[2])
            }
            _ => None,
        };
        let key = rank_key(u.tier, closeness);
        if key < best_key {
            (best, best_key) = (cands.len(), key);
        }
        cands.push(Cand {
            key,
            closeness: closeness.unwrap_or(f64::NAN),
            weight: u.weight.max(f64::MIN_POSITIVE),
            carrier: ci as u32,
            mirror: h.mirror,
            https: u.https,
            tier: u.tier,
        });
    }
    let holds = |c: &Cand| match need {
        Need::File { file, mutable } => project.carriers[c.carrier as usize]
            .avail
            .as_deref()
            .is_some_and(|a| {
                if mutable {
                    a.holds_version(file.id, file.size, file.mtime)
                } else {
                    a.present.contains(file.id)
                }
            }),
        Need::Project => true,
    };
    let Some((nearby, total)) = rank(facts, cands, best, &holds) else {
        return fallback(facts, snap, None, vec![], excluded);
    };
    let origin = g.point.filter(|_| facts.explain);
    let choices = cands
        .iter()
        .enumerate()
        .map(|(i, c)| Choice {
            mirror: c.mirror as usize,
            carrier: c.carrier as usize,
            https: c.https,
            tier: c.tier,
            distance_km: origin
                .zip(snap.mirrors[c.mirror as usize].point)
                .map(|(a, b)| distance_km(&a, &b)),
            share: if i < nearby { c.weight / total } else { 0.0 },
        })
        .collect();
    Decision {
        outcome: Outcome::Mirror,
        file: None,
        file_pos: None,
        choices,
        excluded,
    }
}

/// The decision to send the client to the project's nearest fallback, or unavailable.
fn fallback<'s>(
    facts: &Facts<'_>,
    snap: &'s Snapshot,
    file: Option<FileEntry<'s>>,
    choices: Vec<Choice>,
    excluded: Vec<(usize, Reason)>,
) -> Decision<'s> {
    let outcome = nearest_fallback(facts, snap).map_or(Outcome::Unavailable, Outcome::Fallback);
    Decision {
        outcome,
        file,
        file_pos: None,
        choices,
        excluded,
    }
}

/// The project's fallback nearest the client (same country, then continent, then the first),
/// among those with a scheme the client accepts (HTTPS is never downgraded).
pub fn nearest_fallback(facts: &Facts<'_>, snap: &Snapshot) -> Option<usize> {
    let fallbacks: &[FallbackState] = snap
        .projects
        .get(facts.project)
        .map_or(&[], |p| &p.state.fallbacks);
    let usable = |f: &FallbackState| !facts.https_only || f.url.starts_with("https://");
    let g = &facts.geo;
    fallbacks
        .iter()
        .position(|f| {
            usable(f)
                && g.country.is_some()
                && f.country.as_deref().and_then(mirrorfleet_geo::cc) == g.country
        })
        .or_else(|| {
            fallbacks
                .iter()
                .position(|f| usable(f) && g.continent.is_some() && f.continent == g.continent)
        })
        .or_else(|| fallbacks.iter().position(usable))
}

mod eligible;
mod rank;
#[cfg(test)]
mod tests;
