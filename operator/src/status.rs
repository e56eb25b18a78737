//! Each resource's status, computed from the assessment and what the store holds — pure.
//! A condition keeps its `lastTransitionTime` while its status does not change, so that an
//! unchanged world gives an identical status (and no write to the API server).

use chrono::{DateTime, Utc};
use mirrorfleet_crds::state::{Family, FileIndex, IndexMeta, MirrorHealth, ProbeScheme};
use mirrorfleet_crds::v1alpha1::{
    AddressFamily, Condition, ConditionStatus, HealthEntry, MirrorProjectStatus, MirrorStatus,
    ProjectStatus, RegionRuleStatus, Scheme, SponsorStatus,
};
use mirrorfleet_store::LoadedState;

use crate::assess::Assessment;

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

/// A scan Job that failed: (project, Unix seconds it started, why).
pub type FailedScan = (String, i64, String);

/// A Mirror's status: Ready, Healthy (from the probes), Scanned (from the scans, and the
/// failed scan Jobs newer than a project's last good scan), health per scheme and family,
/// what each project's last scan found.
pub fn mirror(
    a: &Assessment,
    name: &str,
    generation: Option<i64>,
    previous: Option<&MirrorStatus>,
    state: &LoadedState,
    failed: &[FailedScan],
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
    let mut projects = Vec::new();
    let mut last_scan: Option<i64> = None;
    for carried in compiled.map_or(&[][..], |m| m.projects.as_slice()) {
        let Some(av) = state
            .availability
            .get(&(name.to_owned(), carried.project.clone()))
        else {
            continue;
        };
        last_scan = last_scan.max(Some(av.scanned_at));
        let c = &av.counts;
        projects.push(MirrorProjectStatus {
            project: carried.project.clone(),
            files: c.files,
            bytes: c.bytes,
            missing: c.missing,
            mismatched: c.mismatched,
            last_scan: Some(rfc3339(av.scanned_at)),
            last_sync: av.last_sync.map(rfc3339),
            sync_lag_seconds: av.last_sync.map(|s| (now - s).max(0)),
        });
    }
    let carried = compiled.map_or(0, |m| m.projects.len());
    // A failed Job newer than the project's last good scan.
    let failures: Vec<String> = failed
        .iter()
        .filter(|(project, at, _)| {
            compiled.is_some_and(|m| m.projects.iter().any(|p| &p.project == project))
                && projects
                    .iter()
                    .find(|p| &p.project == project)
                    .and_then(|p| {
                        state
                            .availability
                            .get(&(name.to_owned(), p.project.clone()))
                    })
                    .is_none_or(|av| av.scanned_at < *at)
        })
        .map(|(project, _, why)| format!("{project}: {why}"))
        .collect();
    conditions.push(if !failures.is_empty() {
        condition(
            "Scanned",
            ConditionStatus::False,
            "ScanFailed",
            failures.join("; "),
            generation,
            prev,
            now,
        )
    } else if carried > 0 && projects.len() == carried {
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
        condition(
            "Scanned",
            ConditionStatus::Unknown,
            "NotScannedYet",
            format!("{} of {carried} project(s) scanned", projects.len()),
            generation,
            prev,
            now,
        )
    });
    let missing: u64 = projects.iter().map(|p| p.missing + p.mismatched).sum();
    MirrorStatus {
        conditions,
        observed_generation: generation,
        location: previous.and_then(|s| s.location.clone()),
        health_summary: Some(summary.into()),
        health: entries,
        projects_summary: Some(format!(
            "{}/{carried} scanned, {missing} missing",
            projects.len()
        )),
        projects,
        last_scan: last_scan.map(rfc3339),
        traffic: previous.and_then(|s| s.traffic.clone()),
    }
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

/// A Project's status: Ready, Scanned (the index), files, bytes, serial.
pub fn project(
    a: &Assessment,
    name: &str,
    generation: Option<i64>,
    previous: Option<&ProjectStatus>,
    index: Option<(&FileIndex, Option<&IndexMeta>)>,
    now: i64,
) -> ProjectStatus {
    let prev = previous.map_or(&[][..], |s| s.conditions.as_slice());
    let mut conditions = vec![ready(a, "Project", name, generation, prev, now)];
    conditions.push(match index {
        Some((i, _)) => condition(
            "Scanned",
            ConditionStatus::True,
            "Indexed",
            format!("{} files, serial {}", i.len(), i.serial),
            generation,
            prev,
            now,
        ),
        None => condition(
            "Scanned",
            ConditionStatus::Unknown,
            "NotIndexedYet",
            String::new(),
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
