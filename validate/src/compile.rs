//! Compiles validated resources into the fleet state the redirectors read: defaults applied,
//! sponsors' mirrors expanded in rules, locations resolved from the spec (a country alone
//! gives its approximate centroid; GeoIP of the host comes with the operator), and nothing
//! private copied (contacts and notes stay in the resources). Pure.

use mirrorfleet_crds::geo;
use mirrorfleet_crds::state::{
    Action, FallbackState, FleetState, HashKind, HealthCheckState, LocationState,
    MirrorProjectState, MirrorState, ProjectState, PushState, RestrictionState, RuleState,
    SourceState, SponsorState,
};
use mirrorfleet_crds::v1alpha1::{
    AddressFamily, HashAlgorithm, HealthCheck, RuleAction, ScanProtocol,
};

use crate::Fleet;

fn hash_kind(h: HashAlgorithm) -> HashKind {
    match h {
        HashAlgorithm::Sha256 => HashKind::Sha256,
        HashAlgorithm::Sha1 => HashKind::Sha1,
        HashAlgorithm::Md5 => HashKind::Md5,
    }
}

/// Parses an RFC 3339 timestamp (as validated by the CRD) into Unix seconds.
fn rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

/// Compiles `fleet` (as validation returned it) into state.
pub fn compile(fleet: &Fleet) -> FleetState {
    let mut out = FleetState::default();
    for p in &fleet.projects {
        let spec = &p.resource.spec;
        let classes = spec.path_classes.clone().unwrap_or_default();
        let scan = spec.scan.as_ref();
        out.projects.push(ProjectState {
            name: p.name().to_owned(),
            display_name: spec
                .display_name
                .clone()
                .unwrap_or_else(|| p.name().to_owned()),
            path_prefix: spec.routing.path_prefix.clone(),
            hosts: spec.routing.hosts.clone(),
            hashes: spec.hashes.iter().copied().map(hash_kind).collect(),
            fallbacks: spec
                .fallbacks
                .iter()
                .map(|f| FallbackState {
                    url: f.url.clone(),
                    country: f.country.clone(),
                    continent: f.continent.or_else(|| {
                        f.country
                            .as_deref()
                            .and_then(geo::country)
                            .map(|c| c.continent)
                    }),
                })
                .collect(),
            mutable: classes.mutable,
            immutable: classes.immutable,
            trace_file: spec.trace_file.clone(),
            canary_file: spec.canary_file.clone().or_else(|| spec.trace_file.clone()),
            source: SourceState {
                local: spec.source.local.clone(),
                rsync: spec.source.rsync.clone(),
                http: spec.source.http.clone(),
                checksum_files: spec
                    .source
                    .checksum_files
                    .iter()
                    .map(|c| (c.pattern.clone(), hash_kind(c.algorithm)))
                    .collect(),
            },
            push: PushState {
                topic: spec.push.as_ref().and_then(|p| p.topic.clone()),
                webhook: spec.push.as_ref().and_then(|p| p.webhook.clone()),
                rsync: spec.push.as_ref().and_then(|p| p.rsync.clone()),
            },
            source_interval_seconds: scan
                .and_then(|s| s.source_interval_minutes)
                .map(|m| m.saturating_mul(60)),
            metadata_recheck_seconds: scan.and_then(|s| s.metadata_recheck_seconds),
            mirror_interval_seconds: scan
                .and_then(|s| s.mirror_interval_minutes)
                .map(|m| m.saturating_mul(60)),
        });
    }
    for m in &fleet.mirrors {
        let spec = &m.resource.spec;
        let loc = spec.location.clone().unwrap_or_default();
        let country = loc.country.as_deref().and_then(geo::country);
        let (latitude, longitude) = match (loc.latitude, loc.longitude) {
            (Some(a), Some(b)) => (Some(a), Some(b)),
            _ => country
                .and_then(|c| c.centroid)
                .map_or((None, None), |(a, b)| (Some(a), Some(b))),
        };
        let r = spec.restrictions.clone().unwrap_or_default();
        out.mirrors.push(MirrorState {
            name: m.name().to_owned(),
            sponsor: spec.sponsor_ref.clone(),
            enabled: spec.enabled,
            weight: spec.weight,
            bandwidth_mbps: spec.capacity.as_ref().map(|c| c.bandwidth_mbps),
            ipv4: spec.address_families.contains(&AddressFamily::Ipv4),
            ipv6: spec.address_families.contains(&AddressFamily::Ipv6),
            location: LocationState {
                country: loc.country.clone(),
                continent: loc.continent.or(country.map(|c| c.continent)),
                latitude,
                longitude,
            },
            additional_countries: spec.additional_countries.clone(),
            asns: spec.asns.clone(),
            networks: spec.networks.clone(),
            restrictions: RestrictionState {
                country_only: r.country_only,
                continent_only: r.continent_only,
                as_only: r.as_only,
                networks_only: r.networks_only,
                excluded_countries: r.excluded_countries,
            },
            maintenance: spec
                .maintenance
                .iter()
                .filter_map(|w| Some((rfc3339(&w.start)?, rfc3339(&w.end)?)))
                .collect(),
            projects: spec
                .projects
                .iter()
                .map(|p| MirrorProjectState {
                    project: p.project.clone(),
                    http: p.http.clone(),
                    https: p.https.clone(),
                    rsync: p.rsync.clone(),
                    ftp: p.ftp.clone(),
                    paths: p.paths.clone(),
                })
                .collect(),
            scan_protocols: spec
                .scan
                .iter()
                .flat_map(|s| s.protocols.iter())
                .map(|p| match p {
                    ScanProtocol::Rsync => "rsync",
                    ScanProtocol::Ftp => "ftp",
                    ScanProtocol::Http => "http",
                    ScanProtocol::Trace => "trace",
                })
                .map(str::to_owned)
                .collect(),
            scan_timeout_seconds: spec.scan.as_ref().and_then(|s| s.timeout_seconds),
            scan_interval_seconds: spec
                .scan
                .as_ref()
                .and_then(|s| s.interval_minutes)
                .map(|m| m.saturating_mul(60)),
            health_check: health_check(spec.health_check.as_ref()),
        });
    }
    for s in &fleet.sponsors {
        out.sponsors.push(SponsorState {
            name: s.name().to_owned(),
            display_name: s.resource.spec.display_name.clone(),
            url: s.resource.spec.url.clone(),
            logo: s.resource.spec.logo.clone(),
        });
    }
    for r in &fleet.rules {
        let spec = &r.resource.spec;
        let mut mirrors = spec.mirrors.clone();
        for m in &fleet.mirrors {
            if spec.sponsors.contains(&m.resource.spec.sponsor_ref)
                && !mirrors.iter().any(|x| x == m.name())
            {
                mirrors.push(m.name().to_owned());
            }
        }
        out.rules.push(RuleState {
            name: r.name().to_owned(),
            priority: spec.priority,
            countries: spec.client_match.countries.clone(),
            continents: spec.client_match.continents.clone(),
            asns: spec.client_match.asns.clone(),
            networks: spec.client_match.networks.clone(),
            action: match spec.action {
                RuleAction::Prefer => Action::Prefer,
                RuleAction::Only => Action::Only,
                RuleAction::Exclude => Action::Exclude,
                RuleAction::Scale => Action::Scale,
            },
            mirrors,
            weight_factor: spec.weight_factor,
            projects: spec.projects.clone(),
        });
    }
    out.projects.sort_by(|a, b| a.name.cmp(&b.name));
    out.mirrors.sort_by(|a, b| a.name.cmp(&b.name));
    out.sponsors.sort_by(|a, b| a.name.cmp(&b.name));
    out.rules.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// Health check settings with the defaults filled in.
fn health_check(spec: Option<&HealthCheck>) -> HealthCheckState {
    let d = HealthCheckState::default();
    let Some(h) = spec else { return d };
    HealthCheckState {
        interval_seconds: h.interval_seconds.unwrap_or(d.interval_seconds).max(1),
        timeout_seconds: h.timeout_seconds.unwrap_or(d.timeout_seconds).max(1),
        failure_threshold: h.failure_threshold.unwrap_or(d.failure_threshold).max(1),
        success_threshold: h.success_threshold.unwrap_or(d.success_threshold).max(1),
        allow_redirects: h.allow_redirects.unwrap_or(d.allow_redirects),
        disabled: h.disabled,
    }
}
