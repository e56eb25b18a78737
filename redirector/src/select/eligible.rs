//! Whether one mirror may serve one request — every exclusion rule of selection's step 2 and
//! the tier of step 3, in one place, for a bare decision and an explained one alike — and,
//! when it may, how it is ranked: the scheme it is used with, its tier, its weight.
//!
//! It must stay cheap for the common mirror: each rule is gated by a flag of the carrier's
//! [`Hot`] facts, the cold part of the mirror is read only when a flag says so, and nothing is
//! allocated unless explaining (named reasons are built only then). A new rule goes here, with
//! its reason in [`Reason`] and, if it needs the cold part, a flag in [`Hot`] that is also in
//! [`CHECKED`].

use mirrorfleet_crds::state::Action;

use super::{Facts, Need, Reason, Tier};
use crate::snapshot::{Hot, Project, Snapshot};

/// One request, as the rules see it: fixed for every mirror of one decision.
#[derive(Clone, Copy)]
pub(super) struct Asked<'a, 's> {
    facts: &'a Facts<'a>,
    snap: &'s Snapshot,
    project: &'s Project,
    need: Need<'a, 's>,
    /// The region rules that apply to this client, highest priority first.
    rules: &'a [usize],
    /// The client's address family.
    v6: bool,
    /// Its flag, [`Hot::IPV4`] or [`Hot::IPV6`].
    family: u32,
    /// Neither region rules nor reasons: the common case of [`Asked::eligible`] may apply.
    plain: bool,
}

/// How a usable mirror is ranked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Usable {
    /// Whether its HTTPS URL is used.
    pub(super) https: bool,
    /// Its tier.
    pub(super) tier: Tier,
    /// weight × capacity, scaled by the matching region rules.
    pub(super) weight: f64,
}

/// Why a mirror is not used: the reason when explaining, `None` when only deciding.
pub(super) type Excluded = Option<Reason>;

impl<'a, 's> Asked<'a, 's> {
    /// The request `facts` for `project` of `snap`, needing `need`, with the region `rules`
    /// that apply to its client.
    pub(super) fn new(
        facts: &'a Facts<'a>,
        snap: &'s Snapshot,
        project: &'s Project,
        need: Need<'a, 's>,
        rules: &'a [usize],
    ) -> Self {
        let v6 = facts.ip.to_canonical().is_ipv6();
        let family = if v6 { Hot::IPV6 } else { Hot::IPV4 };
        Asked {
            facts,
            snap,
            project,
            need,
            rules,
            v6,
            family,
            plain: !facts.explain && rules.is_empty(),
        }
    }

    /// Whether carrier `ci` of the project, with hot facts `h`, may serve the request, and how;
    /// else why not. Rules are checked in a fixed order, so that a mirror excluded for several
    /// reasons always names the same one.
    ///
    /// A carrier whose flags give no rule anything to check (the common case: enabled,
    /// reachable over the client's family, scanned, nothing in [`CHECKED`] set), for a decision
    /// without region rules or reasons, goes straight to the scheme and the tier — the same
    /// [`Asked::scheme`] and [`Asked::tier`] as every other. The selection table tests decide
    /// each rule's case both ways, bare and explained, so a rule whose flag is missing from
    /// [`CHECKED`] fails them.
    #[inline(always)]
    pub(super) fn eligible(&self, ci: usize, h: &Hot) -> Result<Usable, Excluded> {
        if self.plain && h.flags & CHECKED == PASS && h.has(self.family) {
            return Ok(Usable {
                https: self.scheme(h)?,
                tier: self.tier(h, false),
                weight: f64::from(h.capacity),
            });
        }
        self.check(ci, h)
    }

    /// [`Asked::eligible`], every rule in turn.
    #[inline(always)]
    fn check(&self, ci: usize, h: &Hot) -> Result<Usable, Excluded> {
        if !h.has(Hot::ENABLED) {
            return Err(why(self.facts, || Reason::Disabled));
        }
        if !h.has(self.family) {
            return Err(why(self.facts, || Reason::Family));
        }
        if h.flags & RESTRICTED != 0 {
            restrictions(self.snap, self.facts, h)?;
        }
        let (preferred, weight) = if self.rules.is_empty() {
            (false, f64::from(h.capacity))
        } else {
            region_rules(self.snap, self.facts, self.rules, h)?
        };
        let https = self.scheme(h)?;
        if h.has(Hot::PATHS)
            && match self.need {
                Need::File { file, .. } => !self.project.carriers[ci]
                    .paths
                    .iter()
                    .any(|p| file.path.starts_with(p.as_str())),
                Need::Project => true,
            }
        {
            return Err(why(self.facts, || Reason::NotCarried));
        }
        if !h.has(Hot::SCANNED) {
            return Err(why(self.facts, || Reason::NotScanned));
        }
        // Explaining: check now, to name the reason. Deciding: ranking checks lazily in rank
        // order, so that only the mirrors that can win are looked up.
        if self.facts.explain
            && let Some(avail) = self.project.carriers[ci].avail.as_deref()
            && let Need::File { file, mutable } = self.need
        {
            if mutable {
                if !avail.holds_version(file.id, file.size, file.mtime) {
                    return Err(Some(Reason::Outdated));
                }
            } else if !avail.present.contains(file.id) {
                return Err(Some(Reason::Missing));
            }
        }
        Ok(Usable {
            https,
            tier: self.tier(h, preferred),
            weight,
        })
    }

    /// The tier of a usable mirror (`preferred` by a region rule).
    #[inline(always)]
    fn tier(&self, h: &Hot, preferred: bool) -> Tier {
        let g = &self.facts.geo;
        if preferred {
            Tier::Preferred
        } else if h.flags & NETWORKED != 0 && same_network(self.snap, self.facts, h) {
            Tier::Network
        } else if g.country.unwrap_or([0, 0]) != [0, 0] && g.country == Some(h.country) {
            Tier::Country
        } else if h.has(Hot::EXTRA_COUNTRIES)
            && g.country.is_some_and(|cc| {
                self.snap.mirrors[h.mirror as usize]
                    .extra_countries
                    .contains(&cc)
            })
        {
            Tier::ExtraCountry
        } else if g.continent.is_some() && g.continent == h.continent {
            Tier::Continent
        } else {
            Tier::Elsewhere
        }
    }

    /// Scheme and health: HTTPS when it is there and up, plain HTTP only for a plain-HTTP
    /// client (never a downgrade); whether HTTPS is used.
    #[inline(always)]
    fn scheme(&self, h: &Hot) -> Result<bool, Excluded> {
        let (has_http, has_https) = (h.has(Hot::HTTP), h.has(Hot::HTTPS));
        if has_https && !h.is_down(true, self.v6) {
            return Ok(true);
        }
        if !self.facts.https_only && has_http && !h.is_down(false, self.v6) {
            return Ok(false);
        }
        Err(why(self.facts, || {
            if !has_https && (self.facts.https_only || !has_http) {
                Reason::NoScheme
            } else {
                let m = &self.snap.mirrors[h.mirror as usize];
                Reason::Down(m.health(has_https, self.v6).reason.clone())
            }
        }))
    }
}

/// `reason` when explaining; nothing is built when only deciding.
fn why(facts: &Facts<'_>, reason: impl FnOnce() -> Reason) -> Excluded {
    facts.explain.then(reason)
}

/// Maintenance windows and the mirror's own restrictions (read from its cold part).
#[inline(never)]
fn restrictions(snap: &Snapshot, facts: &Facts<'_>, h: &Hot) -> Result<(), Excluded> {
    let g = &facts.geo;
    let m = &snap.mirrors[h.mirror as usize];
    if h.has(Hot::MAINTENANCE)
        && m.state
            .maintenance
            .iter()
            .any(|(a, b)| (*a..*b).contains(&facts.now))
    {
        return Err(why(facts, || Reason::Maintenance));
    }
    if h.has(Hot::COUNTRY_ONLY)
        && !g
            .country
            .is_some_and(|cc| m.country == Some(cc) || m.extra_countries.contains(&cc))
    {
        return Err(why(facts, || Reason::CountryOnly));
    }
    if h.has(Hot::CONTINENT_ONLY) && (g.continent.is_none() || g.continent != m.continent) {
        return Err(why(facts, || Reason::ContinentOnly));
    }
    if h.has(Hot::AS_ONLY) && !g.asn.is_some_and(|a| m.state.asns.contains(&a)) {
        return Err(why(facts, || Reason::AsOnly));
    }
    if h.has(Hot::NETWORKS_ONLY) && !m.networks.iter().any(|n| n.contains(&facts.ip)) {
        return Err(why(facts, || Reason::NetworksOnly));
    }
    if h.has(Hot::EXCLUDES) && g.country.is_some_and(|cc| m.excluded.contains(&cc)) {
        return Err(why(facts, || Reason::ExcludedCountry));
    }
    Ok(())
}

/// The region rules that apply: excluded by `Exclude` or `Only`, else whether `Prefer`
/// ranks it first and its weight as `Scale` leaves it.
fn region_rules(
    snap: &Snapshot,
    facts: &Facts<'_>,
    rules: &[usize],
    h: &Hot,
) -> Result<(bool, f64), Excluded> {
    let mirror = h.mirror as usize;
    let mut preferred = false;
    let mut weight = f64::from(h.capacity);
    for &ri in rules {
        let rule = &snap.rules[ri];
        let named = rule.mirrors.contains(&mirror);
        match rule.action() {
            Action::Exclude if named => {
                return Err(why(facts, || Reason::Rule(rule.state.name.clone())));
            }
            Action::Only if !named => {
                return Err(why(facts, || Reason::Rule(rule.state.name.clone())));
            }
            Action::Prefer if named => preferred = true,
            Action::Scale if named => weight *= rule.state.weight_factor.unwrap_or(1.0),
            _ => {}
        }
    }
    Ok((preferred, weight))
}

/// Same network or autonomous system as the client (read from the mirror's cold part).
#[inline(never)]
fn same_network(snap: &Snapshot, facts: &Facts<'_>, h: &Hot) -> bool {
    let m = &snap.mirrors[h.mirror as usize];
    (h.has(Hot::ASNS) && facts.geo.asn.is_some_and(|a| m.state.asns.contains(&a)))
        || (h.has(Hot::NETWORKS) && m.networks.iter().any(|n| n.contains(&facts.ip)))
}

/// The flags of the rules read from a mirror's cold part by [`Asked::restrictions`].
const RESTRICTED: u32 = Hot::MAINTENANCE
    | Hot::COUNTRY_ONLY
    | Hot::CONTINENT_ONLY
    | Hot::AS_ONLY
    | Hot::NETWORKS_ONLY
    | Hot::EXCLUDES;

/// The flags of a network preference ([`Tier::Network`]).
const NETWORKED: u32 = Hot::ASNS | Hot::NETWORKS;

/// Every flag an exclusion rule or the tier looks at beyond the scheme and the address family:
/// a carrier whose flags here are [`PASS`] (and that is reachable over the client's family)
/// has nothing to check. An exclusion rule gated by a new flag must add it here (the table
/// tests fail otherwise); the tier's flags are here only so that the common case skips their
/// tests.
const CHECKED: u32 =
    Hot::ENABLED | Hot::SCANNED | RESTRICTED | Hot::PATHS | NETWORKED | Hot::EXTRA_COUNTRIES;

/// The [`CHECKED`] flags of a carrier with nothing to check: enabled, scanned, nothing else.
const PASS: u32 = Hot::ENABLED | Hot::SCANNED;
