//! What `validate --probe` checks, decided without any I/O: which Mirrors (all of them, or
//! those new or changed against the base revision's fleet), and for each the checks over the
//! URLs it declares — DNS per host and declared address family, a `HEAD` of each carried
//! project's canary per scheme and family (the health checker's own targets, so a pull
//! request is probed exactly as the fleet will probe the mirror), and a listing of each rsync
//! and FTP root.

use mirrorfleet_crds::state::{Family, FleetState, MirrorState, ProbeScheme, ProjectState};
use mirrorfleet_health::checker;
use mirrorfleet_health::probe::Canary;

/// Why a mirror is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Not in the base revision.
    New,
    /// In the base revision, with a different spec (or a carried project's canary, trace
    /// file, source or fallbacks changed).
    Changed,
    /// No base revision given: every mirror is probed.
    All,
}

impl Change {
    /// Its name in reports: `new`, `changed`, `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::All => "all",
        }
    }
}

/// The mirrors to probe, in the fleet's order (by name): every one without a base, else those
/// the base does not have or has differently.
pub fn select(base: Option<&FleetState>, head: &FleetState) -> Vec<(String, Change)> {
    head.mirrors
        .iter()
        .filter_map(|m| {
            let Some(base) = base else {
                return Some((m.name.clone(), Change::All));
            };
            match base.mirror(&m.name) {
                None => Some((m.name.clone(), Change::New)),
                Some(old) if old != m || projects_differ(base, head, m) => {
                    Some((m.name.clone(), Change::Changed))
                }
                Some(_) => None,
            }
        })
        .collect()
}

/// Whether a project `m` carries changed what its probe reaches or compares with.
fn projects_differ(base: &FleetState, head: &FleetState, m: &MirrorState) -> bool {
    let probed = |p: &ProjectState| {
        (
            p.canary_file.clone(),
            p.trace_file.clone(),
            p.source.clone(),
            p.fallbacks.clone(),
        )
    };
    m.projects
        .iter()
        .any(|c| base.project(&c.project).map(probed) != head.project(&c.project).map(probed))
}

/// A listing protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListProtocol {
    /// `rsync://`.
    Rsync,
    /// `ftp://`.
    Ftp,
}

impl ListProtocol {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ListProtocol::Rsync => "rsync",
            ListProtocol::Ftp => "ftp",
        }
    }
}

/// Where the canary's expected size comes from: the project's origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// `HEAD` of this URL (the HTTP source, else the first fallback).
    Http(String),
    /// The file at this path of a local source (when this machine has it).
    Local(String),
}

/// One check of a mirror.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `host` resolves to an address of `family`.
    Dns {
        /// Host name (or address literal).
        host: String,
        /// The family.
        family: Family,
    },
    /// `HEAD` of `project`'s canary over `scheme` and `family`.
    Head {
        /// The project.
        project: String,
        /// `http` or `https`.
        scheme: ProbeScheme,
        /// The family the connection is pinned to.
        family: Family,
        /// The URL, without a size yet.
        canary: Canary,
        /// Where the expected size is learned; `None` when the project names no canary or
        /// trace file (the base URL itself is probed).
        origin: Option<Origin>,
        /// A 3xx answer counts as healthy (the mirror's `healthCheck.allowRedirects`).
        allow_redirects: bool,
    },
    /// The root of `project`'s tree lists over `protocol`.
    List {
        /// The project.
        project: String,
        /// rsync or FTP.
        protocol: ListProtocol,
        /// The mirror's URL for it.
        url: String,
    },
}

impl Check {
    /// A short name for the report: `DNS host IPv4`, `HTTPS IPv6 fedora`, `rsync fedora`.
    pub fn label(&self) -> String {
        match self {
            Check::Dns { host, family } => format!("DNS {host} {}", family_name(*family)),
            Check::Head {
                project,
                scheme,
                family,
                ..
            } => format!(
                "{} {} {project}",
                match scheme {
                    ProbeScheme::Http => "HTTP",
                    ProbeScheme::Https => "HTTPS",
                },
                family_name(*family)
            ),
            Check::List {
                project, protocol, ..
            } => format!("{} {project}", protocol.as_str()),
        }
    }
}

/// `IPv4` or `IPv6`.
pub fn family_name(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

/// The checks of `mirror`: DNS first (each host of its URLs × each declared family), then a
/// `HEAD` per carried project × scheme × family, then the listings. A mirror that is
/// disabled, or whose health checks are off, is probed all the same: the pull request says
/// it will be reachable.
pub fn checks(fleet: &FleetState, mirror: &MirrorState) -> Vec<Check> {
    let families: Vec<Family> = [(mirror.ipv4, Family::Ipv4), (mirror.ipv6, Family::Ipv6)]
        .into_iter()
        .filter_map(|(declared, f)| declared.then_some(f))
        .collect();
    let mut out = Vec::new();
    let mut hosts: Vec<String> = Vec::new();
    for carried in &mirror.projects {
        for url in [&carried.http, &carried.https, &carried.rsync, &carried.ftp]
            .into_iter()
            .flatten()
        {
            if let Some(host) = host_of(url)
                && !hosts.contains(&host)
            {
                hosts.push(host);
            }
        }
    }
    for host in &hosts {
        for &family in &families {
            out.push(Check::Dns {
                host: host.clone(),
                family,
            });
        }
    }
    for carried in &mirror.projects {
        // The health checker's targets for this one project: the same canary choice (the
        // canary file, else the trace file, else the base URL), schemes and families.
        let one = MirrorState {
            enabled: true,
            projects: vec![carried.clone()],
            health_check: mirrorfleet_crds::state::HealthCheckState {
                disabled: false,
                ..mirror.health_check
            },
            ..mirror.clone()
        };
        let project = fleet.project(&carried.project);
        let single = FleetState {
            projects: project.cloned().into_iter().collect(),
            mirrors: vec![one],
            ..FleetState::default()
        };
        let targets = checker::targets(&single, &Default::default(), &Default::default());
        for target in targets {
            for canary in target.canaries {
                out.push(Check::Head {
                    project: carried.project.clone(),
                    scheme: target.key.scheme,
                    family: target.key.family,
                    origin: project.and_then(origin),
                    canary,
                    allow_redirects: target.policy.allow_redirects,
                });
            }
        }
    }
    for carried in &mirror.projects {
        for (protocol, url) in [
            (ListProtocol::Rsync, &carried.rsync),
            (ListProtocol::Ftp, &carried.ftp),
        ] {
            if let Some(url) = url {
                out.push(Check::List {
                    project: carried.project.clone(),
                    protocol,
                    url: url.clone(),
                });
            }
        }
    }
    out
}

/// Where `project`'s canary (its canary file, else its trace file) is at the origin; `None`
/// without either file, or without a place to look.
fn origin(project: &ProjectState) -> Option<Origin> {
    let file = project
        .canary_file
        .as_deref()
        .or(project.trace_file.as_deref())?
        .trim_start_matches('/');
    let encoded = mirrorfleet_crds::url::encode_path(file);
    if let Some(http) = &project.source.http {
        return Some(Origin::Http(format!("{}{encoded}", with_slash(http))));
    }
    if let Some(local) = &project.source.local {
        return Some(Origin::Local(format!("{}{file}", with_slash(local))));
    }
    project
        .fallbacks
        .first()
        .map(|f| Origin::Http(format!("{}{encoded}", with_slash(&f.url))))
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    }
}

/// The host of a URL, brackets removed from an IPv6 literal.
fn host_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}
