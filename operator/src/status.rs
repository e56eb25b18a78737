//! Each resource's status, computed from the assessment and what the store holds — pure.
//! A condition keeps its `lastTransitionTime` while its status does not change, so that an
//! unchanged world gives an identical status (and no write to the API server).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mirrorfleet_crds::state::{Family, FileIndex, IndexMeta, MirrorHealth, ProbeScheme};
use mirrorfleet_crds::v1alpha1::{
    AddressFamily, Condition, ConditionStatus, HealthEntry, MirrorProjectStatus, MirrorStatus,
    ProjectStatus, RegionRuleStatus, ResolvedLocation, Scheme, SponsorStatus,
};
use mirrorfleet_store::LoadedState;

use crate::assess::Assessment;
use crate::jobs::History;

/// RFC 3339 (seconds) of Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A condition, keeping the previous transition time when the status is the same.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: i64,
) -> Condition {
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| rfc3339(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// `Ready`: compiled into the fleet, or the problems `mirrorfleet validate` reports.
pub fn ready(
    a: &Assessment,
    kind: &str,
    name: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: i64,
) -> Condition {
    let problems = a.problems_of(kind, name);
    if problems.is_empty() {
        condition(
            "Ready",
            ConditionStatus::True,
            "Compiled",
            "applied to the fleet state".into(),
            generation,
            previous,
            now,
        )
    } else {
        condition(
            "Ready",
            ConditionStatus::False,
            "Invalid",
            problems.join("; "),
            generation,
            previous,
            now,
        )
    }
}

/// What the scan Jobs of one project (on a mirror, or of its source) say: their history and,
/// after failures, when the next attempt may start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanJobs {
    /// The Jobs' history.
    pub history: History,
    /// The next attempt after failures (Unix seconds).
    pub retry_at: Option<i64>,
}

impl ScanJobs {
    /// The failures newer than the last good scan (`scanned_at`), said in words: which Job,
    /// why, how many in a row, when the next attempt is.
    fn failing_since(&self, scanned_at: Option<i64>) -> Option<String> {
        let f = self.history.last_failure.as_ref()?;
        if scanned_at.is_some_and(|s| s >= f.at) {
            return None;
        }
        let next = self
            .retry_at
            .map(|t| format!(", next attempt at {}", rfc3339(t)))
            .unwrap_or_default();
        Some(format!(
            "Job {} failed ({}); {} failure(s) in a row{next}",
            f.job, f.why, self.history.failures
        ))
    }
}

/// A Mirror's status: Ready, Healthy (from the probes), Scanned (from the scans, and the
/// scan Jobs failing since a project's last good scan), Synced (whether each project's last
/// scan found the source's current tree), health per scheme and family, what each project's
/// last scan found, the location the fleet uses (`from_spec`: the spec gives the country).
#[allow(clippy::too_many_arguments)]
pub fn mirror(
    a: &Assessment,
    name: &str,
    generation: Option<i64>,
    previous: Option<&MirrorStatus>,
    state: &LoadedState,
    jobs: &BTreeMap<String, ScanJobs>,
    from_spec: bool,
    now: i64,
) -> MirrorStatus {
    let prev = previous.map_or(&[][..], |s| s.conditions.as_slice());
    let mut conditions = vec![ready(a, "Mirror", name, generation, prev, now)];
    let compiled = a.fleet.mirror(name);
    let health = state.health.get(name);
    let entries: Vec<HealthEntry> = health.map_or_else(Vec::new, |h| health_entries(h));
    let down: Vec<String> = entries
        .iter()
        .filter(|e| !e.healthy)
        .map(|e| format!("{:?}/{:?}: {}", e.scheme, e.family, e.reason).to_lowercase())
        .collect();
    let summary = match compiled {
        None => "Invalid",
        Some(m) if !m.enabled => "Disabled",
        Some(m) if m.maintenance.iter().any(|(s, e)| (*s..*e).contains(&now)) => "Draining",
        Some(_) if entries.is_empty() => "Unknown",
        Some(_) if down.len() == entries.len() => "Down",
        Some(_) if !down.is_empty() => "Degraded",
        Some(_) => "Healthy",
    };
    conditions.push(match summary {
        "Healthy" => condition(
            "Healthy",
            ConditionStatus::True,
            "ProbesSucceed",
            format!("{} scheme/family pairs answer", entries.len()),
            generation,
            prev,
            now,
        ),
        "Unknown" | "Invalid" | "Disabled" => condition(
            "Healthy",
            ConditionStatus::Unknown,
            if summary == "Unknown" {
                "NotProbedYet"
            } else {
                summary
            },
            String::new(),
            generation,
            prev,
            now,
        ),
        _ => condition(
            "Healthy",
            ConditionStatus::False,
            entries
                .iter()
                .find(|e| !e.healthy)
                .map_or("Down", |e| e.reason.as_str()),
            format!("out of rotation: {}", down.join(", ")),
            generation,
            prev,
            now,
        ),
    });
    let carried_projects = compiled.map_or(&[][..], |m| m.projects.as_slice());
    let carried = carried_projects.len();
    let mut projects = Vec::new();
    let mut last_scan: Option<i64> = None;
    let (mut failing, mut waiting, mut behind, mut in_sync) = (vec![], vec![], vec![], 0);
    for c in carried_projects {
        let p = c.project.as_str();
        let av = state.availability.get(&(name.to_owned(), p.to_owned()));
        let source = state.index_meta.get(p);
        if let Some(why) = jobs
            .get(p)
            .and_then(|j| j.failing_since(av.map(|a| a.scanned_at)))
        {
            failing.push(format!("{p}: {why}"));
        } else if source.is_none() {
            waiting.push(format!("{p}: waiting for the source's index"));
        }
        let Some(av) = av else {
            continue;
        };
        last_scan = last_scan.max(Some(av.scanned_at));
        let counts = &av.counts;
        let current = source.is_some_and(|m| m.serial == av.serial);
        let synced = current && counts.missing == 0 && counts.mismatched == 0;
        if synced {
            in_sync += 1;
        } else {
            let against = match source {
                Some(m) if !current => {
                    format!(
                        " (scanned against serial {}, source now at {})",
                        av.serial, m.serial
                    )
                }
                _ => String::new(),
            };
            behind.push(format!(
                "{p}: {} missing, {} outdated{against}",
                counts.missing, counts.mismatched
            ));
        }
        // How far the mirror's trace file is behind the source's tree (none when in sync).
        let lag = match (synced, av.last_sync, source) {
            (true, _, _) => Some(0),
            (false, Some(sync), Some(m)) => Some((m.generated_at - sync).max(0)),
            _ => None,
        };
        projects.push(MirrorProjectStatus {
            project: c.project.clone(),
            files: counts.files,
            bytes: counts.bytes,
            missing: counts.missing,
            mismatched: counts.mismatched,
            last_scan: Some(rfc3339(av.scanned_at)),
            last_sync: av.last_sync.map(rfc3339),
            sync_lag_seconds: lag,
        });
    }
    let scanned = projects.len();
    conditions.push(if !failing.is_empty() {
        condition(
            "Scanned",
            ConditionStatus::False,
            "ScanFailed",
            failing.join("; "),
            generation,
            prev,
            now,
        )
    } else if carried > 0 && scanned == carried {
        condition(
            "Scanned",
            ConditionStatus::True,
            "ScanSucceeded",
            format!("{carried} project(s) scanned"),
            generation,
            prev,
            now,
        )
    } else {
        let mut message = format!("{scanned} of {carried} project(s) scanned");
        for w in &waiting {
            message.push_str("; ");
            message.push_str(w);
        }
        condition(
            "Scanned",
            ConditionStatus::Unknown,
            "NotScannedYet",
            message,
            generation,
            prev,
            now,
        )
    });
    conditions.push(if !behind.is_empty() {
        condition(
            "Synced",
            ConditionStatus::False,
            "Behind",
            behind.join("; "),
            generation,
            prev,
            now,
        )
    } else if carried > 0 && in_sync == carried {
        condition(
            "Synced",
            ConditionStatus::True,
            "InSync",
            format!("{carried} project(s) hold their source's current tree"),
            generation,
            prev,
            now,
        )
    } else {
        condition(
            "Synced",
            ConditionStatus::Unknown,
            "NotScannedYet",
            format!("{in_sync} of {carried} project(s) known to be in sync"),
            generation,
            prev,
            now,
        )
    });
    let missing: u64 = projects.iter().map(|p| p.missing + p.mismatched).sum();
    let location = compiled.and_then(|m| {
        let l = &m.location;
        l.country.as_ref()?;
        Some(ResolvedLocation {
            country: l.country.clone(),
            continent: l.continent,
            latitude: l.latitude,
            longitude: l.longitude,
            source: Some(if from_spec { "Spec" } else { "GeoIP" }.to_owned()),
        })
    });
    MirrorStatus {
        conditions,
        observed_generation: generation,
        location,
        health_summary: Some(summary.into()),
        health: entries,
        projects_summary: Some(format!("{in_sync}/{carried} synced, {missing} missing")),
        projects,
        last_scan: last_scan.map(rfc3339),
        traffic: previous.and_then(|s| s.traffic.clone()),
    }
}

/// The next maintenance-window edge of `mirror` after `now`, when its status changes by
/// itself (Draining begins or ends) — pure.
pub fn next_window_edge(a: &Assessment, mirror: &str, now: i64) -> Option<i64> {
    a.fleet
        .mirror(mirror)?
        .maintenance
        .iter()
        .flat_map(|(s, e)| [*s, *e])
        .filter(|t| *t > now)
        .min()
}

fn health_entries(h: &MirrorHealth) -> Vec<HealthEntry> {
    h.entries
        .iter()
        .map(|e| HealthEntry {
            scheme: match e.scheme {
                ProbeScheme::Http => Scheme::Http,
                ProbeScheme::Https => Scheme::Https,
            },
            family: match e.family {
                Family::Ipv4 => AddressFamily::Ipv4,
                Family::Ipv6 => AddressFamily::Ipv6,
            },
            healthy: e.up,
            reason: e.reason.clone(),
            message: String::new(),
            since: rfc3339(e.since),
        })
        .collect()
}

/// What stands in the way of indexing a project's source, if anything.
#[derive(Debug, Clone, Copy)]
pub enum SourceJobs<'a> {
    /// Its scan Jobs.
    Jobs(&'a ScanJobs),
    /// No Job can index it (e.g. a local tree without a volume).
    Impossible(&'a crate::jobs::NoSourceJob),
}

/// A Project's status: Ready, Scanned (the index; the source's scan Jobs failing since the
/// last index, or why none can run), files, bytes, serial.
pub fn project(
    a: &Assessment,
    name: &str,
    generation: Option<i64>,
    previous: Option<&ProjectStatus>,
    index: Option<(&FileIndex, Option<&IndexMeta>)>,
    jobs: SourceJobs<'_>,
    now: i64,
) -> ProjectStatus {
    let prev = previous.map_or(&[][..], |s| s.conditions.as_slice());
    let mut conditions = vec![ready(a, "Project", name, generation, prev, now)];
    let indexed_at = index.and_then(|(_, m)| m).map(|m| m.generated_at);
    let failing = match jobs {
        SourceJobs::Jobs(j) => j.failing_since(indexed_at),
        SourceJobs::Impossible(_) => None,
    };
    conditions.push(match (index, failing, jobs) {
        (_, Some(why), _) => condition(
            "Scanned",
            ConditionStatus::False,
            "SourceScanFailed",
            why,
            generation,
            prev,
            now,
        ),
        (Some((i, _)), None, _) => condition(
            "Scanned",
            ConditionStatus::True,
            "Indexed",
            format!("{} files, serial {}", i.len(), i.serial),
            generation,
            prev,
            now,
        ),
        (None, None, SourceJobs::Impossible(why)) => condition(
            "Scanned",
            ConditionStatus::False,
            "CannotIndex",
            why.to_string(),
            generation,
            prev,
            now,
        ),
        (None, None, SourceJobs::Jobs(j)) => condition(
            "Scanned",
            ConditionStatus::Unknown,
            "NotIndexedYet",
            if j.history.running {
                "the source's scan Job is running".to_owned()
            } else {
                String::new()
            },
            generation,
            prev,
            now,
        ),
    });
    ProjectStatus {
        conditions,
        observed_generation: generation,
        files: index.map(|(i, _)| i.len() as u64),
        bytes: index.map(|(i, _)| i.total_bytes()),
        serial: index.map(|(i, _)| i.serial.clone()),
        index_generation: previous.and_then(|s| s.index_generation),
        last_scan: index.and_then(|(_, m)| m).map(|m| rfc3339(m.generated_at)),
    }
}

/// A Sponsor's status: Ready and how many mirrors it hosts.
pub fn sponsor(
    a: &Assessment,
    name: &str,
    generation: Option<i64>,
    previous: Option<&SponsorStatus>,
    now: i64,
) -> SponsorStatus {
    let prev = previous.map_or(&[][..], |s| s.conditions.as_slice());
    SponsorStatus {
        conditions: vec![ready(a, "Sponsor", name, generation, prev, now)],
        observed_generation: generation,
        mirrors: Some(a.fleet.mirrors.iter().filter(|m| m.sponsor == name).count() as u32),
        redirects_this_month: previous.and_then(|s| s.redirects_this_month),
        bytes_this_month: previous.and_then(|s| s.bytes_this_month),
    }
}

/// A RegionRule's status: Ready.
pub fn rule(
    a: &Assessment,
    name: &str,
    generation: Option<i64>,
    previous: Option<&RegionRuleStatus>,
    now: i64,
) -> RegionRuleStatus {
    let prev = previous.map_or(&[][..], |s| s.conditions.as_slice());
    RegionRuleStatus {
        conditions: vec![ready(a, "RegionRule", name, generation, prev, now)],
        observed_generation: generation,
    }
}
