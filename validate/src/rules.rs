//! Rules that span resources or need more than a schema: references resolve, names are
//! unique, country codes are assigned ISO 3166-1 codes, continents agree with countries,
//! CIDRs and URLs are well formed, project routes do not collide, and region rules do not
//! contradict each other or the mirrors they name.

use std::collections::HashMap;

use ipnet::IpNet;
use kube::Resource;

use super::{Fleet, Located, Problem};
use mirrorfleet_crds::geo;
use mirrorfleet_crds::v1alpha1::{ClientMatch, Mirror, RuleAction};

/// Appends every cross-resource problem of `fleet` to `out`.
pub(super) fn check(fleet: &Fleet, out: &mut Vec<Problem>) {
    duplicates(&fleet.projects, out);
    duplicates(&fleet.mirrors, out);
    duplicates(&fleet.sponsors, out);
    duplicates(&fleet.rules, out);
    let index = Index::new(fleet);
    for p in &fleet.projects {
        project(p, fleet, out);
    }
    for m in &fleet.mirrors {
        mirror(m, &index, out);
    }
    for r in &fleet.rules {
        rule(r, &index, out);
    }
    rule_conflicts(fleet, &index, out);
}

/// Names by (kind, namespace), for references.
struct Index<'a> {
    projects: Vec<(Option<&'a str>, &'a str)>,
    sponsors: Vec<(Option<&'a str>, &'a str)>,
    mirrors: HashMap<(Option<&'a str>, &'a str), &'a Located<Mirror>>,
}

impl<'a> Index<'a> {
    fn new(fleet: &'a Fleet) -> Index<'a> {
        Index {
            projects: fleet
                .projects
                .iter()
                .map(|p| (p.namespace(), p.name()))
                .collect(),
            sponsors: fleet
                .sponsors
                .iter()
                .map(|s| (s.namespace(), s.name()))
                .collect(),
            mirrors: fleet
                .mirrors
                .iter()
                .map(|m| ((m.namespace(), m.name()), m))
                .collect(),
        }
    }
}

/// `None` when `name` exists in `ns`; else the message, with a suggestion.
fn missing(
    kind: &str,
    ns: Option<&str>,
    name: &str,
    known: &[(Option<&str>, &str)],
) -> Option<String> {
    let in_ns: Vec<&str> = known
        .iter()
        .filter(|(n, _)| *n == ns)
        .map(|(_, name)| *name)
        .collect();
    if in_ns.contains(&name) {
        return None;
    }
    let hint = super::schema::closest(name, &in_ns)
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default();
    let place = ns.map(|n| format!(" in namespace {n}")).unwrap_or_default();
    Some(format!("{kind}/{name} does not exist{place}{hint}"))
}

fn duplicates<T: Resource<DynamicType = ()>>(items: &[Located<T>], out: &mut Vec<Problem>) {
    let mut seen: HashMap<(Option<&str>, &str), &Located<T>> = HashMap::new();
    for item in items {
        if let Some(first) = seen.insert((item.namespace(), item.name()), item) {
            out.push(item.problem(
                "metadata.name",
                format!(
                    "is defined twice; the first is at {}:{}",
                    first.file, first.line
                ),
            ));
            seen.insert((first.namespace(), first.name()), first);
        }
    }
}

fn country(code: &str) -> Result<&'static geo::Country, String> {
    geo::country(code).ok_or_else(|| {
        let hint = match code {
            "UK" => " (the United Kingdom is GB)",
            "EL" => " (Greece is GR)",
            "EU" => " (EU is not a country; use a continent field)",
            _ => "",
        };
        format!("{code} is not an ISO 3166-1 alpha-2 country code{hint}")
    })
}

fn countries<T: Resource<DynamicType = ()>>(
    item: &Located<T>,
    path: &str,
    codes: &[String],
    out: &mut Vec<Problem>,
) {
    for (i, code) in codes.iter().enumerate() {
        if let Err(message) = country(code) {
            out.push(item.problem(&format!("{path}[{i}]"), message));
        }
    }
}

fn networks<T: Resource<DynamicType = ()>>(
    item: &Located<T>,
    path: &str,
    cidrs: &[String],
    out: &mut Vec<Problem>,
) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, cidr) in cidrs.iter().enumerate() {
        let path = format!("{path}[{i}]");
        match cidr.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                out.push(item.problem(
                    &path,
                    format!("{cidr} has host bits set; the network is {}", net.trunc()),
                ));
            }
            Ok(net) => nets.push(net),
            Err(_) => out.push(item.problem(
                &path,
                format!("{cidr:?} is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32"),
            )),
        }
    }
    nets
}

/// Checks a base URL: parses, has a host, no credentials, query or fragment.
fn url<T: Resource<DynamicType = ()>>(
    item: &Located<T>,
    path: &str,
    raw: &str,
    out: &mut Vec<Problem>,
) {
    let problem = match url::Url::parse(raw) {
        Err(e) => Some(format!("{raw:?} is not a valid URL: {e}")),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some(format!("{raw} has no host")),
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Never echo a password back into CI logs.
            let _ = u.set_password(None);
            let _ = u.set_username("");
            Some(format!(
                "{u} must not carry credentials: manifests are public, so put credentials in a Secret"
            ))
        }
        Ok(mut u) if u.query().is_some() || u.fragment().is_some() => {
            // A query may hold a token: not echoed either.
            u.set_query(None);
            u.set_fragment(None);
            Some(format!("{u} must not have a query or fragment"))
        }
        Ok(_) => None,
    };
    if let Some(message) = problem {
        out.push(item.problem(path, message));
    }
}

fn project(
    p: &Located<mirrorfleet_crds::v1alpha1::Project>,
    fleet: &Fleet,
    out: &mut Vec<Problem>,
) {
    let spec = &p.resource.spec;
    if let Some(u) = &spec.source.rsync {
        url(p, "spec.source.rsync", u, out);
    }
    if let Some(u) = &spec.source.http {
        url(p, "spec.source.http", u, out);
    }
    // A webhook's secret would be public too (credentials, or a token in its query).
    if let Some(u) = spec.push.as_ref().and_then(|push| push.webhook.as_deref()) {
        url(p, "spec.push.webhook", u, out);
    }
    if let Some(u) = spec.push.as_ref().and_then(|p| p.rsync.as_ref()) {
        url(p, "spec.push.rsync", u, out);
    }
    for (i, f) in spec.fallbacks.iter().enumerate() {
        url(p, &format!("spec.fallbacks[{i}].url"), &f.url, out);
        if let Some(code) = &f.country {
            match country(code) {
                Err(message) => {
                    out.push(p.problem(&format!("spec.fallbacks[{i}].country"), message))
                }
                Ok(c) if f.continent.is_some_and(|k| k != c.continent) => out.push(p.problem(
                    &format!("spec.fallbacks[{i}].continent"),
                    format!(
                        "{} is in {}, not {}",
                        c.code,
                        c.continent.code(),
                        f.continent.map_or("", |k| k.code())
                    ),
                )),
                Ok(_) => {}
            }
        }
    }
    // Routes must not collide with another project's (only compare with those defined earlier,
    // so each collision is reported once, on the later resource).
    for other in fleet.projects.iter().take_while(|o| !std::ptr::eq(*o, p)) {
        if other.namespace() != p.namespace() || other.name() == p.name() {
            continue;
        }
        let o = &other.resource.spec.routing;
        if let (Some(mine), Some(theirs)) = (&spec.routing.path_prefix, &o.path_prefix)
            && (mine.starts_with(theirs.as_str()) || theirs.starts_with(mine.as_str()))
        {
            let how = if mine == theirs {
                "is the same as"
            } else {
                "overlaps"
            };
            out.push(p.problem(
                "spec.routing.pathPrefix",
                format!(
                    "{mine} {how} Project/{}'s {theirs}; each request must belong to one project",
                    other.name()
                ),
            ));
        }
        for (i, host) in spec.routing.hosts.iter().enumerate() {
            if o.hosts.contains(host) {
                out.push(p.problem(
                    &format!("spec.routing.hosts[{i}]"),
                    format!("{host} is already routed to Project/{}", other.name()),
                ));
            }
        }
    }
}

fn mirror(m: &Located<Mirror>, index: &Index<'_>, out: &mut Vec<Problem>) {
    let spec = &m.resource.spec;
    let ns = m.namespace();
    if let Some(message) = missing("Sponsor", ns, &spec.sponsor_ref, &index.sponsors) {
        out.push(m.problem("spec.sponsorRef", message));
    }
    for (i, carried) in spec.projects.iter().enumerate() {
        let path = format!("spec.projects[{i}]");
        if let Some(message) = missing("Project", ns, &carried.project, &index.projects) {
            out.push(m.problem(&format!("{path}.project"), message));
        }
        for (scheme, value) in [
            ("http", &carried.http),
            ("https", &carried.https),
            ("rsync", &carried.rsync),
            ("ftp", &carried.ftp),
        ] {
            if let Some(u) = value {
                url(m, &format!("{path}.{scheme}"), u, out);
            }
        }
    }
    let own = spec.location.as_ref().and_then(|l| l.country.as_deref());
    if let Some(loc) = &spec.location
        && let Some(code) = &loc.country
    {
        match country(code) {
            Err(message) => out.push(m.problem("spec.location.country", message)),
            Ok(c) if loc.continent.is_some_and(|k| k != c.continent) => out.push(m.problem(
                "spec.location.continent",
                format!(
                    "{} is in {}, not {}",
                    c.code,
                    c.continent.code(),
                    loc.continent.map_or("", |k| k.code())
                ),
            )),
            Ok(_) => {}
        }
    }
    countries(
        m,
        "spec.additionalCountries",
        &spec.additional_countries,
        out,
    );
    networks(m, "spec.networks", &spec.networks, out);
    if let Some(r) = &spec.restrictions {
        countries(
            m,
            "spec.restrictions.excludedCountries",
            &r.excluded_countries,
            out,
        );
        for (i, c) in r.excluded_countries.iter().enumerate() {
            if Some(c.as_str()) == own || spec.additional_countries.contains(c) {
                out.push(m.problem(
                    &format!("spec.restrictions.excludedCountries[{i}]"),
                    format!("{c} is a country this mirror serves; it cannot also be excluded"),
                ));
            }
        }
        if r.continent_only && r.country_only {
            out.push(m.problem("spec.restrictions.continentOnly", "countryOnly already implies a narrower area; set only one of countryOnly and continentOnly".into()));
        }
    }
    let ipv4_only = !spec
        .address_families
        .contains(&mirrorfleet_crds::v1alpha1::AddressFamily::Ipv6);
    let ipv6_only = !spec
        .address_families
        .contains(&mirrorfleet_crds::v1alpha1::AddressFamily::Ipv4);
    for (i, carried) in spec.projects.iter().enumerate() {
        for (scheme, value) in [("http", &carried.http), ("https", &carried.https)] {
            let host = value
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.host().map(|h| h.to_owned()));
            let clash = match host {
                Some(url::Host::Ipv4(_)) if ipv6_only => {
                    Some("an IPv4 address, but addressFamilies is [ipv6]")
                }
                Some(url::Host::Ipv6(_)) if ipv4_only => {
                    Some("an IPv6 address, but addressFamilies is [ipv4]")
                }
                _ => None,
            };
            if let Some(why) = clash {
                out.push(m.problem(
                    &format!("spec.projects[{i}].{scheme}"),
                    format!("the host is {why}"),
                ));
            }
        }
    }
}

fn rule(
    r: &Located<mirrorfleet_crds::v1alpha1::RegionRule>,
    index: &Index<'_>,
    out: &mut Vec<Problem>,
) {
    let spec = &r.resource.spec;
    let ns = r.namespace();
    let mirror_names: Vec<(Option<&str>, &str)> = index.mirrors.keys().copied().collect();
    for (i, name) in spec.mirrors.iter().enumerate() {
        if let Some(message) = missing("Mirror", ns, name, &mirror_names) {
            out.push(r.problem(&format!("spec.mirrors[{i}]"), message));
        }
    }
    for (i, name) in spec.sponsors.iter().enumerate() {
        if let Some(message) = missing("Sponsor", ns, name, &index.sponsors) {
            out.push(r.problem(&format!("spec.sponsors[{i}]"), message));
        }
    }
    for (i, name) in spec.projects.iter().enumerate() {
        if let Some(message) = missing("Project", ns, name, &index.projects) {
            out.push(r.problem(&format!("spec.projects[{i}]"), message));
        }
    }
    countries(r, "spec.match.countries", &spec.client_match.countries, out);
    networks(r, "spec.match.networks", &spec.client_match.networks, out);
    // A rule steering clients to a mirror that may never serve them contradicts the mirror.
    if matches!(spec.action, RuleAction::Only | RuleAction::Prefer) {
        for (i, name) in spec.mirrors.iter().enumerate() {
            let Some(m) = index.mirrors.get(&(ns, name.as_str())) else {
                continue;
            };
            if let Some(why) = unservable(&spec.client_match, &m.resource) {
                out.push(r.problem(
                    &format!("spec.mirrors[{i}]"),
                    format!("Mirror/{name} can never serve the clients this rule matches: {why}"),
                ));
            }
        }
    }
}

/// Why a mirror's restrictions exclude every client of `matched`, if they do.
fn unservable(matched: &ClientMatch, m: &Mirror) -> Option<String> {
    let spec = &m.spec;
    let r = spec.restrictions.as_ref()?;
    let matched_countries = &matched.countries;
    if !matched_countries.is_empty() {
        if matched_countries
            .iter()
            .all(|c| r.excluded_countries.contains(c))
        {
            return Some(format!("it excludes {}", matched_countries.join(", ")));
        }
        if r.country_only {
            let own = spec.location.as_ref().and_then(|l| l.country.clone());
            let served: Vec<String> = own
                .into_iter()
                .chain(spec.additional_countries.iter().cloned())
                .collect();
            if !matched_countries.iter().any(|c| served.contains(c)) {
                return Some(format!("it is countryOnly for {}", served.join(", ")));
            }
        }
    }
    if r.as_only && !matched.asns.is_empty() && !matched.asns.iter().any(|a| spec.asns.contains(a))
    {
        let asns: Vec<String> = spec.asns.iter().map(|a| format!("AS{a}")).collect();
        return Some(format!("it is asOnly for {}", asns.join(", ")));
    }
    None
}

/// Two rules of equal priority whose matches overlap must not give opposite orders for the
/// same mirror (`Only` vs `Exclude`, `Prefer` vs `Exclude`) or two different `Only` sets.
fn rule_conflicts(fleet: &Fleet, index: &Index<'_>, out: &mut Vec<Problem>) {
    let _ = index;
    for (i, b) in fleet.rules.iter().enumerate() {
        for a in &fleet.rules[..i] {
            let (sa, sb) = (&a.resource.spec, &b.resource.spec);
            if a.namespace() != b.namespace()
                || sa.priority != sb.priority
                || !overlap(&sa.client_match, &sb.client_match)
            {
                continue;
            }
            if !sa.projects.is_empty()
                && !sb.projects.is_empty()
                && !sa.projects.iter().any(|p| sb.projects.contains(p))
            {
                continue;
            }
            use RuleAction::*;
            let shared: Vec<&String> = sa
                .mirrors
                .iter()
                .filter(|m| sb.mirrors.contains(m))
                .chain(sa.sponsors.iter().filter(|s| sb.sponsors.contains(s)))
                .collect();
            let conflict = match (sa.action, sb.action) {
                (Only, Exclude) | (Exclude, Only) | (Prefer, Exclude) | (Exclude, Prefer)
                    if !shared.is_empty() =>
                {
                    Some(format!(
                        "contradicts RegionRule/{} ({}:{}) at the same priority {}: one says {:?}, the other {:?} for {}",
                        a.name(),
                        a.file,
                        a.line,
                        sa.priority,
                        sa.action,
                        sb.action,
                        shared
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                (Only, Only) if sa.mirrors != sb.mirrors || sa.sponsors != sb.sponsors => {
                    Some(format!(
                        "contradicts RegionRule/{} ({}:{}): both apply Only at priority {} to overlapping clients with different mirrors; give one a higher priority",
                        a.name(),
                        a.file,
                        a.line,
                        sa.priority
                    ))
                }
                _ => None,
            };
            if let Some(message) = conflict {
                out.push(b.problem("spec.action", message));
            }
        }
    }
}

/// Whether some client can match both.
fn overlap(a: &ClientMatch, b: &ClientMatch) -> bool {
    fn meet<T: PartialEq>(x: &[T], y: &[T]) -> bool {
        x.is_empty() || y.is_empty() || x.iter().any(|v| y.contains(v))
    }
    let countries_vs_continents =
        |countries: &[String], continents: &[mirrorfleet_crds::geo::Continent]| {
            countries.is_empty()
                || continents.is_empty()
                || countries
                    .iter()
                    .any(|c| geo::country(c).is_some_and(|c| continents.contains(&c.continent)))
        };
    let nets = |x: &[String], y: &[String]| {
        let parse = |v: &[String]| {
            v.iter()
                .filter_map(|s| s.parse::<IpNet>().ok())
                .collect::<Vec<_>>()
        };
        let (x, y) = (parse(x), parse(y));
        x.is_empty()
            || y.is_empty()
            || x.iter()
                .any(|n| y.iter().any(|m| n.contains(m) || m.contains(n)))
    };
    meet(&a.countries, &b.countries)
        && meet(&a.continents, &b.continents)
        && meet(&a.asns, &b.asns)
        && countries_vs_continents(&a.countries, &b.continents)
        && countries_vs_continents(&b.countries, &a.continents)
        && nets(&a.networks, &b.networks)
}
