//! The immutable snapshot every request borrows: the compiled fleet joined with indexes,
//! availability and health, with everything the hot path needs precomputed (country codes as
//! bytes, unit vectors for distances, parsed networks, mirror indices in rules). Built off the
//! request path whenever the state changes, and published whole.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use mirrorfleet_crds::geo::Continent;
use mirrorfleet_crds::state::{
    Action, Availability, Family, FileIndex, FleetState, MirrorState, PathClasses, ProbeScheme,
    ProjectState, RuleState,
};
use mirrorfleet_geo::{Cc, cc, unit_vector};
use mirrorfleet_store::LoadedState;

/// Health of one (scheme, family): `None` until probed (treated as up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Up, down, or not probed yet.
    pub up: Option<bool>,
    /// The reason of the last change.
    pub reason: String,
}

/// A mirror, ready for selection.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// The compiled state.
    pub state: MirrorState,
    /// Primary country.
    pub country: Option<Cc>,
    /// Additional countries.
    pub extra_countries: Vec<Cc>,
    /// Continent.
    pub continent: Option<Continent>,
    /// Unit vector of its location.
    pub point: Option<[f64; 3]>,
    /// Preferred client networks.
    pub networks: Vec<IpNet>,
    /// Countries never served.
    pub excluded: Vec<Cc>,
    /// Health: http/v4, http/v6, https/v4, https/v6.
    pub health: [Health; 4],
    /// weight × capacity: its share of load among comparable mirrors.
    pub capacity: f64,
    /// Sponsor display name and URL (public).
    pub sponsor: (String, Option<String>),
}

impl Mirror {
    /// Health of (scheme, family).
    pub fn health(&self, https: bool, v6: bool) -> &Health {
        &self.health[usize::from(https) * 2 + usize::from(v6)]
    }
}

/// The few facts about a carrier — its mirror's and its own — that every request looks at,
/// packed into 28 bytes so that a pass over 200 of them stays in the first-level cache; the
/// rest of [`Mirror`] and [`Carrier`] is read only when a flag says so. Coordinates are
/// single precision here (about 2 km near zero distance, enough to rank); distances shown use
/// [`Mirror::point`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Hot {
    /// Unit vector of the location (valid with [`Hot::LOCATED`]).
    pub point: [f32; 3],
    /// weight × capacity.
    pub capacity: f32,
    /// [`Hot::ENABLED`] and the other flags.
    pub flags: u32,
    /// Index into [`Snapshot::mirrors`].
    pub mirror: u32,
    /// Primary country (`[0, 0]` when unknown).
    pub country: Cc,
    /// Continent.
    pub continent: Option<Continent>,
    /// Down bits: http/v4, http/v6, https/v4, https/v6 (set only when probed down).
    pub down: u8,
}

impl Hot {
    /// Receives traffic.
    pub const ENABLED: u32 = 1;
    /// Reachable over IPv4.
    pub const IPV4: u32 = 1 << 1;
    /// Reachable over IPv6.
    pub const IPV6: u32 = 1 << 2;
    /// Country-only.
    pub const COUNTRY_ONLY: u32 = 1 << 3;
    /// Continent-only.
    pub const CONTINENT_ONLY: u32 = 1 << 4;
    /// AS-only.
    pub const AS_ONLY: u32 = 1 << 5;
    /// Networks-only.
    pub const NETWORKS_ONLY: u32 = 1 << 6;
    /// Has maintenance windows.
    pub const MAINTENANCE: u32 = 1 << 7;
    /// Excludes some countries.
    pub const EXCLUDES: u32 = 1 << 8;
    /// Has ASNs.
    pub const ASNS: u32 = 1 << 9;
    /// Has preferred networks.
    pub const NETWORKS: u32 = 1 << 10;
    /// Serves additional countries.
    pub const EXTRA_COUNTRIES: u32 = 1 << 11;
    /// Has coordinates.
    pub const LOCATED: u32 = 1 << 12;
    /// The carrier has an HTTP URL.
    pub const HTTP: u32 = 1 << 13;
    /// The carrier has an HTTPS URL.
    pub const HTTPS: u32 = 1 << 14;
    /// The carrier carries only some sub-trees.
    pub const PATHS: u32 = 1 << 15;
    /// The carrier has been scanned.
    pub const SCANNED: u32 = 1 << 16;

    /// Whether `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether (scheme, family) was probed down.
    pub fn is_down(&self, https: bool, v6: bool) -> bool {
        self.down & (1 << (usize::from(https) * 2 + usize::from(v6))) != 0
    }

    fn of(mirror: usize, m: &Mirror, c: &Carrier) -> Hot {
        let st = &m.state;
        let r = &st.restrictions;
        let mut flags = 0;
        for (on, flag) in [
            (st.enabled, Hot::ENABLED),
            (st.ipv4, Hot::IPV4),
            (st.ipv6, Hot::IPV6),
            (r.country_only, Hot::COUNTRY_ONLY),
            (r.continent_only, Hot::CONTINENT_ONLY),
            (r.as_only, Hot::AS_ONLY),
            (r.networks_only, Hot::NETWORKS_ONLY),
            (!st.maintenance.is_empty(), Hot::MAINTENANCE),
            (!m.excluded.is_empty(), Hot::EXCLUDES),
            (!st.asns.is_empty(), Hot::ASNS),
            (!m.networks.is_empty(), Hot::NETWORKS),
            (!m.extra_countries.is_empty(), Hot::EXTRA_COUNTRIES),
            (m.point.is_some(), Hot::LOCATED),
            (c.has_http, Hot::HTTP),
            (c.has_https, Hot::HTTPS),
            (!c.paths.is_empty(), Hot::PATHS),
            (c.avail.is_some(), Hot::SCANNED),
        ] {
            if on {
                flags |= flag;
            }
        }
        let mut down = 0;
        for (i, h) in m.health.iter().enumerate() {
            if h.up == Some(false) {
                down |= 1 << i;
            }
        }
        let p = m.point.unwrap_or_default();
        Hot {
            point: [p[0] as f32, p[1] as f32, p[2] as f32],
            capacity: m.capacity as f32,
            flags,
            mirror: u32::try_from(mirror).unwrap_or(u32::MAX),
            country: m.country.unwrap_or([0, 0]),
            continent: m.continent,
            down,
        }
    }
}

/// A mirror's copy of one project.
#[derive(Debug, Clone)]
pub struct Carrier {
    /// Index into [`Snapshot::mirrors`].
    pub mirror: usize,
    /// Whether it has an HTTP URL.
    pub has_http: bool,
    /// Whether it has an HTTPS URL.
    pub has_https: bool,
    /// HTTP base URL.
    pub http: Option<String>,
    /// HTTPS base URL.
    pub https: Option<String>,
    /// Sub-trees carried (empty: all).
    pub paths: Vec<String>,
    /// What the last scan found.
    pub avail: Option<Arc<Availability>>,
}

/// A project, ready for routing and selection.
#[derive(Debug, Clone)]
pub struct Project {
    /// The compiled state.
    pub state: ProjectState,
    /// Path classes.
    pub classes: PathClasses,
    /// The index, once scanned.
    pub index: Option<Arc<FileIndex>>,
    /// Mirrors carrying it.
    pub carriers: Vec<Carrier>,
    /// The hot facts of each carrier, parallel to `carriers`.
    pub lanes: Vec<Hot>,
}

/// A region rule, ready for matching.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The compiled state.
    pub state: RuleState,
    /// Client countries.
    pub countries: Vec<Cc>,
    /// Client networks.
    pub networks: Vec<IpNet>,
    /// Mirror indices it names.
    pub mirrors: Vec<usize>,
}

impl Rule {
    /// Whether a client matches every field the rule gives.
    pub fn matches(
        &self,
        project: &str,
        ip: IpAddr,
        country: Option<Cc>,
        continent: Option<Continent>,
        asn: Option<u32>,
    ) -> bool {
        let s = &self.state;
        (s.projects.is_empty() || s.projects.iter().any(|p| p == project))
            && (self.countries.is_empty() || country.is_some_and(|c| self.countries.contains(&c)))
            && (s.continents.is_empty() || continent.is_some_and(|c| s.continents.contains(&c)))
            && (s.asns.is_empty() || asn.is_some_and(|a| s.asns.contains(&a)))
            && (self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip)))
    }

    /// The action.
    pub fn action(&self) -> Action {
        self.state.action
    }
}

/// Everything a request needs, immutable.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The state generation it was built from.
    pub generation: u64,
    /// Whether a fleet has been loaded (readiness).
    pub loaded: bool,
    /// Projects.
    pub projects: Vec<Project>,
    /// Mirrors.
    pub mirrors: Vec<Mirror>,
    /// Rules, highest priority first.
    pub rules: Vec<Rule>,
    /// Project index by host name.
    pub hosts: HashMap<String, usize>,
    /// (path prefix, project index), longest prefix first.
    pub prefixes: Vec<(String, usize)>,
}

impl Snapshot {
    /// Builds a snapshot from loaded state.
    pub fn build(state: &LoadedState) -> Snapshot {
        let Some(fleet) = state.fleet.as_deref() else {
            return Snapshot {
                generation: state.generation,
                ..Snapshot::default()
            };
        };
        Self::from_parts(
            state.generation,
            fleet,
            &state.indexes,
            &state.availability,
            &state.health,
        )
    }

    /// Builds a snapshot from its parts.
    pub fn from_parts(
        generation: u64,
        fleet: &FleetState,
        indexes: &HashMap<String, Arc<FileIndex>>,
        availability: &HashMap<(String, String), Arc<Availability>>,
        health: &HashMap<String, Arc<mirrorfleet_crds::state::MirrorHealth>>,
    ) -> Snapshot {
        let sponsors: HashMap<&str, (String, Option<String>)> = fleet
            .sponsors
            .iter()
            .map(|s| (s.name.as_str(), (s.display_name.clone(), s.url.clone())))
            .collect();
        let mirrors: Vec<Mirror> = fleet
            .mirrors
            .iter()
            .map(|m| {
                let mut h: [Health; 4] = Default::default();
                if let Some(mh) = health.get(&m.name) {
                    for e in &mh.entries {
                        let i = usize::from(e.scheme == ProbeScheme::Https) * 2
                            + usize::from(e.family == Family::Ipv6);
                        h[i] = Health {
                            up: Some(e.up),
                            reason: e.reason.clone(),
                        };
                    }
                }
                let loc = &m.location;
                Mirror {
                    country: loc.country.as_deref().and_then(cc),
                    extra_countries: m
                        .additional_countries
                        .iter()
                        .filter_map(|c| cc(c))
                        .collect(),
                    continent: loc.continent,
                    point: loc
                        .latitude
                        .zip(loc.longitude)
                        .map(|(a, b)| unit_vector(a, b)),
                    networks: m.networks.iter().filter_map(|n| n.parse().ok()).collect(),
                    excluded: m
                        .restrictions
                        .excluded_countries
                        .iter()
                        .filter_map(|c| cc(c))
                        .collect(),
                    health: h,
                    capacity: f64::from(m.weight.max(1))
                        * m.bandwidth_mbps.unwrap_or(1000).max(1) as f64,
                    sponsor: sponsors
                        .get(m.sponsor.as_str())
                        .cloned()
                        .unwrap_or_else(|| (m.sponsor.clone(), None)),
                    state: m.clone(),
                }
            })
            .collect();
        let mirror_idx: HashMap<&str, usize> = fleet
            .mirrors
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        let projects: Vec<Project> = fleet
            .projects
            .iter()
            .map(|p| {
                let carriers: Vec<Carrier> = fleet
                    .mirrors
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        let c = m.projects.iter().find(|c| c.project == p.name)?;
                        Some(Carrier {
                            mirror: i,
                            has_http: c.http.is_some(),
                            has_https: c.https.is_some(),
                            http: c.http.clone(),
                            https: c.https.clone(),
                            paths: c.paths.clone(),
                            avail: availability.get(&(m.name.clone(), p.name.clone())).cloned(),
                        })
                    })
                    .collect();
                Project {
                    classes: PathClasses::of(p).unwrap_or_default(),
                    index: indexes.get(&p.name).cloned(),
                    lanes: carriers
                        .iter()
                        .map(|c| Hot::of(c.mirror, &mirrors[c.mirror], c))
                        .collect(),
                    carriers,
                    state: p.clone(),
                }
            })
            .collect();
        let rules = fleet
            .rules
            .iter()
            .map(|r| Rule {
                countries: r.countries.iter().filter_map(|c| cc(c)).collect(),
                networks: r.networks.iter().filter_map(|n| n.parse().ok()).collect(),
                mirrors: r
                    .mirrors
                    .iter()
                    .filter_map(|m| mirror_idx.get(m.as_str()).copied())
                    .collect(),
                state: r.clone(),
            })
            .collect();
        let mut hosts = HashMap::new();
        let mut prefixes = Vec::new();
        for (i, p) in fleet.projects.iter().enumerate() {
            for h in &p.hosts {
                hosts.insert(h.to_ascii_lowercase(), i);
            }
            if let Some(prefix) = &p.path_prefix {
                prefixes.push((prefix.clone(), i));
            }
        }
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Snapshot {
            generation,
            loaded: true,
            projects,
            mirrors,
            rules,
            hosts,
            prefixes,
        }
    }

    /// Finds the project for a request: by host name first, then by the longest path prefix.
    /// Returns the project and the path relative to its root.
    pub fn route<'p>(&self, host: Option<&str>, path: &'p str) -> Option<(usize, &'p str)> {
        let project_of = |h: &str| {
            let name = h.split(':').next().unwrap_or(h);
            // Host names are compared in lower case; most clients send them so (no copy then).
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                self.hosts.get(&name.to_ascii_lowercase())
            } else {
                self.hosts.get(name)
            }
        };
        if let Some(i) = host.filter(|_| !self.hosts.is_empty()).and_then(project_of) {
            return Some((*i, path.trim_start_matches('/')));
        }
        self.prefixes
            .iter()
            .find_map(|(prefix, i)| path.strip_prefix(prefix.as_str()).map(|rest| (*i, rest)))
    }
}
