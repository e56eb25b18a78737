//! Choosing the mirror for a request: a pure function of the request's facts and the
//! snapshot — no I/O, no clock, no globals; randomness comes in with the facts.
//!
//! 1. Resolve the file in the project's index (unknown file: 404; no index yet: fallback).
//! 2. Filter the mirrors carrying the project, recording why each one is excluded: disabled,
//!    in maintenance, sub-tree not carried, file missing or of another size, mutable metadata
//!    not proven current, no URL for an acceptable scheme, down for the client's scheme and
//!    address family, restrictions, region rules.
//! 3. Rank into tiers — preferred by a rule; same network or AS; same country; additional
//!    country; same continent; elsewhere — then by distance.
//! 4. Spread load among the *nearby* mirrors of the best tier (within 1.5 × the closest
//!    distance + 100 km) in proportion to weight × capacity, or by rendezvous hashing of the
//!    client's network when stickiness is asked for. Far-away mirrors never change this share.
//!    Without geolocation the spread is over every eligible mirror of the best tier.
//! 5. No eligible mirror: the project's fallbacks (nearest first); none: unavailable.
//!
//! HTTPS is never downgraded: a client that came over HTTPS only gets HTTPS mirrors.

use std::net::IpAddr;

use mirrorfleet_crds::geo::Continent;
use mirrorfleet_crds::state::{Action, FallbackState, FileEntry};

use crate::snapshot::{Cc, Hot, Snapshot, distance_km};

/// What is known about the client.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientGeo {
    /// Country.
    pub country: Option<Cc>,
    /// Continent.
    pub continent: Option<Continent>,
    /// Unit vector of its location.
    pub point: Option<[f64; 3]>,
    /// Autonomous system.
    pub asn: Option<u32>,
}

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
    /// Distance from the client, when both are located.
    pub distance_km: Option<f64>,
    /// Cosine of the angle to the client (larger is nearer), when both are located.
    closeness: Option<f64>,
    /// Its share of the load among the nearby mirrors (0 outside them).
    pub share: f64,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Redirect to `choices[0]`.
    Mirror,
    /// No eligible mirror: redirect to this fallback.
    Fallback(usize),
    /// The file is not in the index.
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

/// Decides where `facts` goes.
pub fn select<'s>(facts: &Facts<'_>, snap: &'s Snapshot) -> Decision<'s> {
    let Some(project) = snap.projects.get(facts.project) else {
        return Decision {
            outcome: Outcome::Unavailable,
            file: None,
            file_pos: None,
            choices: vec![],
            excluded: vec![],
        };
    };
    let Some(index) = project.index.as_deref() else {
        return fallback(facts, snap, None, vec![], vec![]);
    };
    let Some((file_pos, file)) = index
        .position(facts.path)
        .and_then(|p| Some((p, index.get(p)?)))
    else {
        return Decision {
            outcome: Outcome::NotFound,
            file: None,
            file_pos: None,
            choices: vec![],
            excluded: vec![],
        };
    };
    let mutable = project.classes.is_mutable(file.path);
    let v6 = facts.ip.to_canonical().is_ipv6();
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

    let mut choices: Vec<Choice> = Vec::with_capacity(project.carriers.len());
    let mut excluded = Vec::new();
    let mut exclude = |m: usize, r: Reason| {
        if facts.explain {
            excluded.push((m, r));
        }
    };
    let family = if v6 { Hot::IPV6 } else { Hot::IPV4 };
    let client_cc = g.country.unwrap_or([0, 0]);
    'carriers: for (ci, c) in project.carriers.iter().enumerate() {
        let h = &snap.hot[c.mirror];
        if !h.has(Hot::ENABLED) {
            exclude(c.mirror, Reason::Disabled);
            continue;
        }
        if !h.has(family) {
            exclude(c.mirror, Reason::Family);
            continue;
        }
        // Rarely set: the cold part of the mirror is read only when a flag says so.
        if h.flags
            & (Hot::MAINTENANCE
                | Hot::COUNTRY_ONLY
                | Hot::CONTINENT_ONLY
                | Hot::AS_ONLY
                | Hot::NETWORKS_ONLY
                | Hot::EXCLUDES)
            != 0
        {
            let m = &snap.mirrors[c.mirror];
            if h.has(Hot::MAINTENANCE)
                && m.state
                    .maintenance
                    .iter()
                    .any(|(a, b)| (*a..*b).contains(&facts.now))
            {
                exclude(c.mirror, Reason::Maintenance);
                continue;
            }
            if h.has(Hot::COUNTRY_ONLY)
                && !g
                    .country
                    .is_some_and(|cc| m.country == Some(cc) || m.extra_countries.contains(&cc))
            {
                exclude(c.mirror, Reason::CountryOnly);
                continue;
            }
            if h.has(Hot::CONTINENT_ONLY) && (g.continent.is_none() || g.continent != m.continent) {
                exclude(c.mirror, Reason::ContinentOnly);
                continue;
            }
            if h.has(Hot::AS_ONLY) && !g.asn.is_some_and(|a| m.state.asns.contains(&a)) {
                exclude(c.mirror, Reason::AsOnly);
                continue;
            }
            if h.has(Hot::NETWORKS_ONLY) && !m.networks.iter().any(|n| n.contains(&facts.ip)) {
                exclude(c.mirror, Reason::NetworksOnly);
                continue;
            }
            if h.has(Hot::EXCLUDES) && g.country.is_some_and(|cc| m.excluded.contains(&cc)) {
                exclude(c.mirror, Reason::ExcludedCountry);
                continue;
            }
        }
        let mut preferred = false;
        for &ri in rules {
            let rule = &snap.rules[ri];
            let named = rule.mirrors.contains(&c.mirror);
            match rule.action() {
                Action::Exclude if named => {
                    exclude(c.mirror, Reason::Rule(rule.state.name.clone()));
                    continue 'carriers;
                }
                Action::Only if !named => {
                    exclude(c.mirror, Reason::Rule(rule.state.name.clone()));
                    continue 'carriers;
                }
                Action::Prefer if named => preferred = true,
                _ => {}
            }
        }
        // Scheme and health: HTTPS when possible, plain HTTP only for plain-HTTP clients.
        let https_ok = c.has_https && !h.is_down(true, v6);
        let http_ok = !facts.https_only && c.has_http && !h.is_down(false, v6);
        let https = match (https_ok, http_ok) {
            (true, _) => true,
            (false, true) => false,
            (false, false) => {
                let reason = if !c.has_https && (facts.https_only || !c.has_http) {
                    Reason::NoScheme
                } else {
                    let m = &snap.mirrors[c.mirror];
                    Reason::Down(m.health(c.has_https, v6).reason.clone())
                };
                exclude(c.mirror, reason);
                continue;
            }
        };
        if !c.paths.is_empty() && !c.paths.iter().any(|p| file.path.starts_with(p.as_str())) {
            exclude(c.mirror, Reason::NotCarried);
            continue;
        }
        let Some(avail) = c.avail.as_deref() else {
            exclude(c.mirror, Reason::NotScanned);
            continue;
        };
        // Explaining: check now, to name the reason. Deciding: check lazily in rank order, so
        // only the mirrors that can win are looked up.
        if facts.explain {
            if mutable {
                if !avail.holds_version(file.id, file.size, file.mtime) {
                    exclude(c.mirror, Reason::Outdated);
                    continue;
                }
            } else if !avail.present.contains(file.id) {
                exclude(c.mirror, Reason::Missing);
                continue;
            }
        }
        let network = (h.has(Hot::ASNS)
            && g.asn
                .is_some_and(|a| snap.mirrors[c.mirror].state.asns.contains(&a)))
            || (h.has(Hot::NETWORKS)
                && snap.mirrors[c.mirror]
                    .networks
                    .iter()
                    .any(|n| n.contains(&facts.ip)));
        let tier = if preferred {
            Tier::Preferred
        } else if network {
            Tier::Network
        } else if client_cc != [0, 0] && client_cc == h.country {
            Tier::Country
        } else if h.has(Hot::EXTRA_COUNTRIES)
            && g.country
                .is_some_and(|cc| snap.mirrors[c.mirror].extra_countries.contains(&cc))
        {
            Tier::ExtraCountry
        } else if g.continent.is_some() && g.continent == h.continent {
            Tier::Continent
        } else {
            Tier::Elsewhere
        };
        let closeness = match g.point {
            Some(a) if h.has(Hot::LOCATED) => {
                Some(a[0] * h.point[0] + a[1] * h.point[1] + a[2] * h.point[2])
            }
            _ => None,
        };
        choices.push(Choice {
            mirror: c.mirror,
            carrier: ci,
            https,
            tier,
            distance_km: None,
            closeness,
            share: 0.0,
        });
    }
    let holds = |c: &Choice| {
        project.carriers[c.carrier]
            .avail
            .as_deref()
            .is_some_and(|a| {
                if mutable {
                    a.holds_version(file.id, file.size, file.mtime)
                } else {
                    a.present.contains(file.id)
                }
            })
    };
    if choices.is_empty() || !rank(facts, snap, rules, &mut choices, &holds) {
        let mut d = fallback(facts, snap, Some(file), vec![], excluded);
        d.file_pos = Some(file_pos);
        return d;
    }
    Decision {
        outcome: Outcome::Mirror,
        file: Some(file),
        file_pos: Some(file_pos),
        choices,
        excluded,
    }
}

/// Alternatives kept after the chosen mirror when not explaining (Link headers, JSON).
const ALTERNATIVES: usize = 4;

/// Ranking key: tier first, then nearness (missing locations last).
fn key(c: &Choice) -> (Tier, f64) {
    (c.tier, -c.closeness.unwrap_or(-2.0))
}

fn before(a: &Choice, b: &Choice) -> std::cmp::Ordering {
    let (ka, kb) = (key(a), key(b));
    ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
}

/// Orders `choices`: the drawn mirror first, then the rest of the nearby set by share, then
/// the others by tier and distance (all of them when explaining, else the best few).
/// When not explaining, availability is checked here, lazily (`holds`): the best candidate
/// until one holds the file, then the nearby set, then the few alternatives shown. Returns
/// false when no candidate holds the file.
fn rank(
    facts: &Facts<'_>,
    snap: &Snapshot,
    rules: &[usize],
    choices: &mut Vec<Choice>,
    holds: &dyn Fn(&Choice) -> bool,
) -> bool {
    let lazy = !facts.explain;
    // The best choice that holds the file, found by linear passes (no sort on the hot path).
    let best = loop {
        if choices.is_empty() {
            return false;
        }
        let mut best = 0;
        for i in 1..choices.len() {
            if before(&choices[i], &choices[best]).is_lt() {
                best = i;
            }
        }
        if !lazy || holds(&choices[best]) {
            break best;
        }
        choices.swap_remove(best);
    };
    let (tier, closest) = (choices[best].tier, choices[best].closeness);
    // Nearby: same tier, within 1.5 × the closest distance + 100 km (compared as cosines).
    let limit = closest.map(|dot| {
        let d0 = dot.clamp(-1.0, 1.0).acos() * 6371.0;
        ((d0 * 1.5 + 100.0) / 6371.0)
            .min(std::f64::consts::PI)
            .cos()
    });
    let is_nearby = |c: &Choice| {
        c.tier == tier
            && match (limit, c.closeness) {
                (Some(l), Some(dot)) => dot >= l,
                (Some(_), None) => false,
                (None, _) => true,
            }
    };
    // Move the nearby set (those that hold the file) to the front.
    let mut nearby = 0;
    let mut i = 0;
    while i < choices.len() {
        if is_nearby(&choices[i]) {
            if lazy && !holds(&choices[i]) {
                choices.swap_remove(i);
                continue;
            }
            choices.swap(nearby, i);
            nearby += 1;
        }
        i += 1;
    }
    let weight = |c: &Choice| {
        let mut w = snap.hot[c.mirror].capacity;
        for &ri in rules {
            let r = &snap.rules[ri];
            if r.action() == Action::Scale && r.mirrors.contains(&c.mirror) {
                w *= r.state.weight_factor.unwrap_or(1.0);
            }
        }
        w.max(f64::MIN_POSITIVE)
    };
    let total: f64 = choices[..nearby].iter().map(weight).sum();
    for c in choices[..nearby].iter_mut() {
        c.share = weight(c) / total;
    }
    let pick = if facts.sticky {
        // Rendezvous hashing on the client's network: the same /24 (or /48) and project keep
        // their mirror while it stays eligible, and weights still hold across clients.
        let key = client_key(facts.ip) ^ (facts.project as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..nearby)
            .map(|i| {
                let u =
                    unit(mix(key
                        ^ (choices[i].mirror as u64)
                            .wrapping_mul(0xbf58_476d_1ce4_e5b9)));
                (i, -u.ln() / weight(&choices[i]))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(i, _)| i)
    } else {
        let mut x = unit(mix(facts.random)) * total;
        let mut chosen = nearby - 1;
        for (i, c) in choices[..nearby].iter().enumerate() {
            x -= weight(c);
            if x < 0.0 {
                chosen = i;
                break;
            }
        }
        chosen
    };
    choices[..nearby].swap(0, pick);
    let by_share = |a: &Choice, b: &Choice| b.share.total_cmp(&a.share);
    let others = &mut choices[1..nearby];
    if facts.explain || others.len() <= ALTERNATIVES {
        others.sort_unstable_by(by_share);
    } else {
        // Only the best few are shown: no need to sort the whole nearby set.
        others.select_nth_unstable_by(ALTERNATIVES - 1, by_share);
        others[..ALTERNATIVES].sort_unstable_by(by_share);
    }
    if lazy {
        // The few alternatives shown after the nearby set, best first, each checked.
        let mut next = nearby;
        while next < (1 + ALTERNATIVES) && next < choices.len() {
            let mut b = next;
            for j in next + 1..choices.len() {
                if before(&choices[j], &choices[b]).is_lt() {
                    b = j;
                }
            }
            if holds(&choices[b]) {
                choices.swap(next, b);
                next += 1;
            } else {
                choices.swap_remove(b);
            }
        }
        choices.truncate(next.max(nearby.min(1 + ALTERNATIVES)).max(1));
    } else {
        choices[nearby..].sort_by(before);
    }
    let origin = facts.geo.point;
    for c in choices.iter_mut() {
        c.distance_km = origin
            .zip(snap.mirrors[c.mirror].point)
            .map(|(a, b)| distance_km(&a, &b));
    }
    true
}

fn client_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (u128::from(v6) >> 80) as u64 | 1 << 63,
    }
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A float in (0, 1) from 64 random bits.
fn unit(x: u64) -> f64 {
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The project's fallback nearest the client (same country, then continent, then the first).
fn fallback<'s>(
    facts: &Facts<'_>,
    snap: &'s Snapshot,
    file: Option<FileEntry<'s>>,
    choices: Vec<Choice>,
    excluded: Vec<(usize, Reason)>,
) -> Decision<'s> {
    let fallbacks: &[FallbackState] = snap
        .projects
        .get(facts.project)
        .map_or(&[], |p| &p.state.fallbacks);
    let usable = |f: &FallbackState| !facts.https_only || f.url.starts_with("https://");
    let g = &facts.geo;
    let pick = fallbacks
        .iter()
        .position(|f| {
            usable(f)
                && g.country.is_some()
                && f.country.as_deref().and_then(crate::snapshot::cc) == g.country
        })
        .or_else(|| {
            fallbacks
                .iter()
                .position(|f| usable(f) && g.continent.is_some() && f.continent == g.continent)
        })
        .or_else(|| fallbacks.iter().position(usable));
    let outcome = pick.map_or(Outcome::Unavailable, Outcome::Fallback);
    Decision {
        outcome,
        file,
        file_pos: None,
        choices,
        excluded,
    }
}

#[cfg(test)]
mod tests;
