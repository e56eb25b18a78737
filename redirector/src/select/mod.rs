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
        return Decision::empty(Outcome::NotFound);
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

/// The ranking shared by [`select`] and [`select_project`].
fn decide<'s>(
    facts: &Facts<'_>,
    snap: &'s Snapshot,
    project: &'s crate::snapshot::Project,
    need: Need<'_, 's>,
) -> Decision<'s> {
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

    let mut scratch = Scratch::take(project.carriers.len());
    let cands = &mut scratch.0;
    // The best-ranked candidate, tracked on the way (ranking starts from it).
    let (mut best, mut best_key) = (0, f64::INFINITY);
    let mut excluded = Vec::new();
    let mut exclude = |m: usize, r: Reason| {
        if facts.explain {
            excluded.push((m, r));
        }
    };
    let family = if v6 { Hot::IPV6 } else { Hot::IPV4 };
    let client_cc = g.country.unwrap_or([0, 0]);
    // Same continent or elsewhere (the tiers every mirror can reach).
    let base_tier = |h: &Hot| {
        if g.continent.is_some() && g.continent == h.continent {
            Tier::Continent
        } else {
            Tier::Elsewhere
        }
    };
    let mut push = |ci: usize, h: &Hot, tier: Tier, https: bool, weight: f64| {
        let closeness = match g.point {
            Some(a) if h.has(Hot::LOCATED) => {
                let p = h.point.map(f64::from);
                Some(a[0] * p[0] + a[1] * p[1] + a[2] * p[2])
            }
            _ => None,
        };
        let key = rank_key(tier, closeness);
        if key < best_key {
            (best, best_key) = (cands.len(), key);
        }
        cands.push(Cand {
            key,
            closeness: closeness.unwrap_or(f64::NAN),
            weight: weight.max(f64::MIN_POSITIVE),
            carrier: ci as u32,
            mirror: h.mirror,
            https,
            tier,
        });
    };
    // The common case, in few instructions: an enabled, scanned mirror reachable over the
    // client's family, without restrictions, sub-trees or network preferences, no rule
    // applying, and only a decision asked for (no reasons).
    let plain = !facts.explain && rules.is_empty();
    let plain_need = Hot::ENABLED | family | Hot::SCANNED;
    let plain_mask = plain_need | Hot::SPECIAL;
    'carriers: for (ci, h) in project.lanes.iter().enumerate() {
        if plain && h.flags & plain_mask == plain_need {
            let https = h.has(Hot::HTTPS) && !h.is_down(true, v6);
            if !https && (facts.https_only || !h.has(Hot::HTTP) || h.is_down(false, v6)) {
                continue;
            }
            let tier = if client_cc != [0, 0] && client_cc == h.country {
                Tier::Country
            } else {
                base_tier(h)
            };
            push(ci, h, tier, https, f64::from(h.capacity));
            continue;
        }
        let mirror = h.mirror as usize;
        if !h.has(Hot::ENABLED) {
            exclude(mirror, Reason::Disabled);
            continue;
        }
        if !h.has(family) {
            exclude(mirror, Reason::Family);
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
            let m = &snap.mirrors[mirror];
            if h.has(Hot::MAINTENANCE)
                && m.state
                    .maintenance
                    .iter()
                    .any(|(a, b)| (*a..*b).contains(&facts.now))
            {
                exclude(mirror, Reason::Maintenance);
                continue;
            }
            if h.has(Hot::COUNTRY_ONLY)
                && !g
                    .country
                    .is_some_and(|cc| m.country == Some(cc) || m.extra_countries.contains(&cc))
            {
                exclude(mirror, Reason::CountryOnly);
                continue;
            }
            if h.has(Hot::CONTINENT_ONLY) && (g.continent.is_none() || g.continent != m.continent) {
                exclude(mirror, Reason::ContinentOnly);
                continue;
            }
            if h.has(Hot::AS_ONLY) && !g.asn.is_some_and(|a| m.state.asns.contains(&a)) {
                exclude(mirror, Reason::AsOnly);
                continue;
            }
            if h.has(Hot::NETWORKS_ONLY) && !m.networks.iter().any(|n| n.contains(&facts.ip)) {
                exclude(mirror, Reason::NetworksOnly);
                continue;
            }
            if h.has(Hot::EXCLUDES) && g.country.is_some_and(|cc| m.excluded.contains(&cc)) {
                exclude(mirror, Reason::ExcludedCountry);
                continue;
            }
        }
        let mut preferred = false;
        let mut weight = f64::from(h.capacity);
        for &ri in rules {
            let rule = &snap.rules[ri];
            let named = rule.mirrors.contains(&mirror);
            match rule.action() {
                Action::Exclude if named => {
                    exclude(mirror, Reason::Rule(rule.state.name.clone()));
                    continue 'carriers;
                }
                Action::Only if !named => {
                    exclude(mirror, Reason::Rule(rule.state.name.clone()));
                    continue 'carriers;
                }
                Action::Prefer if named => preferred = true,
                Action::Scale if named => weight *= rule.state.weight_factor.unwrap_or(1.0),
                _ => {}
            }
        }
        // Scheme and health: HTTPS when possible, plain HTTP only for plain-HTTP clients.
        let (has_http, has_https) = (h.has(Hot::HTTP), h.has(Hot::HTTPS));
        let https_ok = has_https && !h.is_down(true, v6);
        let http_ok = !facts.https_only && has_http && !h.is_down(false, v6);
        let https = match (https_ok, http_ok) {
            (true, _) => true,
            (false, true) => false,
            (false, false) => {
                let reason = if !has_https && (facts.https_only || !has_http) {
                    Reason::NoScheme
                } else {
                    let m = &snap.mirrors[mirror];
                    Reason::Down(m.health(has_https, v6).reason.clone())
                };
                exclude(mirror, reason);
                continue;
            }
        };
        if h.has(Hot::PATHS)
            && match need {
                Need::File { file, .. } => !project.carriers[ci]
                    .paths
                    .iter()
                    .any(|p| file.path.starts_with(p.as_str())),
                Need::Project => true,
            }
        {
            exclude(mirror, Reason::NotCarried);
            continue;
        }
        if !h.has(Hot::SCANNED) {
            exclude(mirror, Reason::NotScanned);
            continue;
        }
        // Explaining: check now, to name the reason. Deciding: check lazily in rank order, so
        // only the mirrors that can win are looked up.
        if let Some(avail) = project.carriers[ci]
            .avail
            .as_deref()
            .filter(|_| facts.explain)
            && let Need::File { file, mutable } = need
        {
            if mutable {
                if !avail.holds_version(file.id, file.size, file.mtime) {
                    exclude(mirror, Reason::Outdated);
                    continue;
                }
            } else if !avail.present.contains(file.id) {
                exclude(mirror, Reason::Missing);
                continue;
            }
        }
        let network = (h.has(Hot::ASNS)
            && g.asn
                .is_some_and(|a| snap.mirrors[mirror].state.asns.contains(&a)))
            || (h.has(Hot::NETWORKS)
                && snap.mirrors[mirror]
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
                .is_some_and(|cc| snap.mirrors[mirror].extra_countries.contains(&cc))
        {
            Tier::ExtraCountry
        } else {
            base_tier(h)
        };
        push(ci, h, tier, https, weight);
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

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Cand>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The candidate buffer, reused across decisions on a thread: a request allocates none (a
/// fresh one of 50–200 candidates is a large allocation for malloc, which then consolidates
/// its free lists on every request).
struct Scratch(Vec<Cand>);

impl Scratch {
    fn take(capacity: usize) -> Scratch {
        let mut v = SCRATCH
            .with(|s| s.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)))
            .unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        Scratch(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        SCRATCH.with(|s| {
            if let Ok(mut b) = s.try_borrow_mut() {
                *b = v;
            }
        });
    }
}

/// Alternatives kept after the chosen mirror when not explaining (Link headers, JSON).
const ALTERNATIVES: usize = 4;

/// Ranking key, smaller is better: the tier, then nearness (missing locations last). Tiers are
/// 4 apart and `-closeness` lies in [-1, 2], so one float comparison orders both.
fn rank_key(tier: Tier, closeness: Option<f64>) -> f64 {
    f64::from(tier as u8) * 4.0 - closeness.unwrap_or(-2.0)
}

/// The cosine of the largest angle still "nearby" a mirror at angle θ0 (given as its cosine):
/// 1.5 × θ0 + 100 km, computed without inverse trigonometry (half-angle and triple-angle
/// identities), capped at the antipode.
fn nearby_limit(dot0: f64) -> f64 {
    const DELTA: f64 = 100.0 / 6371.0;
    let dot0 = dot0.clamp(-1.0, 1.0);
    if dot0 < -0.5 {
        // 1.5 × θ0 is past the antipode.
        return -1.0;
    }
    let half = ((1.0 + dot0) / 2.0).sqrt(); // cos(θ0 / 2)
    let c = 4.0 * half * half * half - 3.0 * half; // cos(1.5 θ0)
    if c < -DELTA.cos() {
        return -1.0;
    }
    let s = (1.0 - c * c).max(0.0).sqrt(); // sin(1.5 θ0), 1.5 θ0 in [0, π]
    c * DELTA.cos() - s * DELTA.sin()
}

/// Index of the best-ranked choice in `choices[from..]`, if any.
fn best_from(choices: &[Cand], from: usize) -> Option<usize> {
    let mut best = from;
    for i in from + 1..choices.len() {
        if choices[i].key < choices[best].key {
            best = i;
        }
    }
    (best < choices.len()).then_some(best)
}

/// Orders `choices`: the drawn mirror first, then the rest of the nearby set by weight, then
/// the others by tier and distance (all of them when explaining, else the best few). `best`
/// is the best-ranked candidate. Returns the size of the nearby set (at the front) and its
/// total weight, or None when no candidate holds the file.
///
/// When not explaining, availability is checked here, lazily (`holds`), so that a decision
/// looks up only the mirrors that can win: the best candidate until one holds the file, the
/// drawn mirror (a drawn mirror without the file is removed and the draw repeated — the same
/// distribution as drawing among the holders only), and the few alternatives shown. The
/// nearby set's weight is then that of its candidates before their availability was checked
/// (only the order of the alternatives uses it).
fn rank(
    facts: &Facts<'_>,
    choices: &mut Vec<Cand>,
    mut best: usize,
    holds: &dyn Fn(&Cand) -> bool,
) -> Option<(usize, f64)> {
    let lazy = !facts.explain;
    // The best choice that holds the file: a linear pass per miss (no sort on the hot path).
    while lazy && !holds(choices.get(best)?) {
        choices.swap_remove(best);
        best = best_from(choices, 0)?;
    }
    let (tier, closest) = (choices.get(best)?.tier, choices[best].closeness);
    // Nearby: same tier, within 1.5 × the closest distance + 100 km (compared as cosines).
    // NaN closeness (unlocated) compares false: never nearby a located best choice.
    let limit = if closest.is_nan() {
        None
    } else {
        Some(nearby_limit(closest))
    };
    let is_nearby = |c: &Cand| c.tier == tier && limit.is_none_or(|l| c.closeness >= l);
    // Move the nearby set to the front, the best first, and weigh it.
    choices.swap(0, best);
    let mut nearby = 1;
    for i in 1..choices.len() {
        if is_nearby(&choices[i]) {
            if i != nearby {
                choices.swap(nearby, i);
            }
            nearby += 1;
        }
    }
    let mut total = sum_weights(&choices[..nearby]);
    // The draw; the best choice (index 0) is known to hold the file, so it always ends. A
    // redraw takes fresh random bits (the same bits would hand the removed mirror's share to
    // its neighbour in the list).
    let mut random = facts.random;
    let pick = loop {
        let pick = if facts.sticky {
            sticky_pick(facts, &choices[..nearby])
        } else {
            weighted_pick(random, &choices[..nearby], total)
        };
        random = mix(random ^ 0x2545_f491_4f6c_dd1d);
        if !lazy || pick == 0 || holds(&choices[pick]) {
            break pick;
        }
        total -= choices[pick].weight;
        drop_nearby(choices, pick, &mut nearby);
    };
    choices.swap(0, pick);
    let by_weight = |a: &Cand, b: &Cand| b.weight.total_cmp(&a.weight);
    if !lazy {
        choices[1..nearby].sort_unstable_by(by_weight);
        choices[nearby..].sort_unstable_by(|a, b| a.key.total_cmp(&b.key));
        return Some((nearby, total));
    }
    // The few alternatives shown: the rest of the nearby set by weight, then the others by
    // rank, each checked. Found by single passes for the heaviest few (a taken or rejected
    // candidate is marked with an infinite key and a negative weight); no sort.
    let mut out = Vec::with_capacity(1 + ALTERNATIVES);
    out.push(choices[0]);
    let mut shown_nearby = 1;
    'nearby: while out.len() < 1 + ALTERNATIVES {
        let (top, n) = heaviest(&choices[1..nearby], 1 + ALTERNATIVES - out.len());
        if n == 0 {
            break;
        }
        for &t in &top[..n] {
            let c = &mut choices[1 + t];
            if holds(c) {
                out.push(*c);
                shown_nearby += 1;
                c.weight = -1.0;
            } else {
                total -= c.weight;
                c.weight = -1.0;
                // Others may now be among the heaviest: look again.
                continue 'nearby;
            }
        }
    }
    while out.len() < 1 + ALTERNATIVES {
        let Some(b) = best_from(choices, nearby).filter(|&b| choices[b].key.is_finite()) else {
            break;
        };
        if holds(&choices[b]) {
            out.push(choices[b]);
        }
        choices[b].key = f64::INFINITY;
    }
    choices.clear();
    choices.extend_from_slice(&out);
    Some((shown_nearby, total))
}

/// Indices of the (up to) `k` heaviest candidates with a non-negative weight, heaviest first,
/// in one pass.
fn heaviest(choices: &[Cand], k: usize) -> ([usize; ALTERNATIVES], usize) {
    let k = k.min(ALTERNATIVES);
    let mut top = [0usize; ALTERNATIVES];
    let mut n = 0;
    if k == 0 {
        return (top, 0);
    }
    for (i, c) in choices.iter().enumerate() {
        if c.weight < 0.0 || (n == k && c.weight <= choices[top[n - 1]].weight) {
            continue;
        }
        // Insert in order, dropping the lightest when full.
        let mut j = if n < k { n } else { k - 1 };
        while j > 0 && choices[top[j - 1]].weight < c.weight {
            top[j] = top[j - 1];
            j -= 1;
        }
        top[j] = i;
        n = (n + 1).min(k);
    }
    (top, n)
}

/// Removes `choices[i]`, one of the first `nearby`, keeping those contiguous.
fn drop_nearby(choices: &mut Vec<Cand>, i: usize, nearby: &mut usize) {
    *nearby -= 1;
    choices.swap(i, *nearby);
    choices.swap_remove(*nearby);
}

/// The sum of the weights, over four independent accumulators (a single running sum is one
/// long chain of dependent additions).
fn sum_weights(cands: &[Cand]) -> f64 {
    let mut acc = [0.0; 4];
    let mut chunks = cands.chunks_exact(4);
    for q in &mut chunks {
        for (a, c) in acc.iter_mut().zip(q) {
            *a += c.weight;
        }
    }
    let rest: f64 = chunks.remainder().iter().map(|c| c.weight).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// A draw in proportion to the weights: the block of 8 the draw falls in, then the candidate
/// inside it.
fn weighted_pick(random: u64, nearby: &[Cand], total: f64) -> usize {
    let mut x = unit(mix(random)) * total;
    let mut start = 0;
    for block in nearby.chunks(8) {
        let w = sum_weights(block);
        if x < w || start + block.len() == nearby.len() {
            for (i, c) in block.iter().enumerate() {
                x -= c.weight;
                if x < 0.0 {
                    return start + i;
                }
            }
            return start + block.len() - 1;
        }
        x -= w;
        start += block.len();
    }
    nearby.len().saturating_sub(1)
}

/// Rendezvous hashing on the client's network: the same /24 (or /48) and project keep their
/// mirror while it stays eligible, and weights still hold across clients.
fn sticky_pick(facts: &Facts<'_>, nearby: &[Cand]) -> usize {
    let key = client_key(facts.ip) ^ (facts.project as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    nearby
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let salt = (c.mirror as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let u = unit(mix(key ^ salt));
            (i, -u.ln() / c.weight)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(i, _)| i)
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
