//! Scan Jobs: the batch/v1 Job that scans one (Mirror, Project), built by a pure function;
//! when one is due, when one is over, which ones failed — pure too. Nothing here talks to
//! the API server (the scheduler, [`crate::schedule`], does).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use mirrorfleet_crds::v1alpha1::Mirror;

/// Annotation asking for a scan now (any value; the operator removes it once the Job exists).
pub const SCAN_REQUESTED: &str = "mirrorfleet.io/scan-requested";
/// Label naming the mirror a Job scans.
pub const LABEL_MIRROR: &str = "mirrorfleet.io/mirror";
/// Label naming the project a Job scans.
pub const LABEL_PROJECT: &str = "mirrorfleet.io/project";

/// Settings of every scan Job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// The operator's own image.
    pub image: String,
    /// Where the store is (passed to `mirrorfleet scan`), e.g. `--redis=redis://…`.
    pub store_args: Vec<String>,
    /// Seconds a finished Job stays for inspection.
    pub ttl_seconds_after_finished: i32,
    /// Retries of a failed pod.
    pub backoff_limit: i32,
    /// A scan taking longer is killed.
    pub active_deadline_seconds: i64,
    /// Scans running at once, across the fleet.
    pub max_concurrent: usize,
    /// CPU and memory requests.
    pub requests: (String, String),
    /// CPU and memory limits.
    pub limits: (String, String),
    /// Service account of the scan pods.
    pub service_account: Option<String>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            image: "ghcr.io/mirrorfleet/mirrorfleet:latest".into(),
            store_args: vec![],
            ttl_seconds_after_finished: 3600,
            backoff_limit: 1,
            active_deadline_seconds: 1800,
            max_concurrent: 4,
            requests: ("100m".into(), "128Mi".into()),
            limits: ("1".into(), "512Mi".into()),
            service_account: None,
        }
    }
}

/// A DNS label (at most 63 characters: the Job's pods carry it as a label value) for the
/// Job of (mirror, project) at `now`.
pub fn job_name(mirror: &str, project: &str, now: i64) -> String {
    let suffix = format!("-{now:x}");
    let mut base: String = format!("scan-{mirror}-{project}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(63 - suffix.len());
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// The Job scanning `project` on `mirror`: owned by the Mirror (deleted with it), the
/// operator's image running `mirrorfleet scan mirror`, bounded in time, retries, resources.
pub fn scan_job(mirror: &Mirror, project: &str, settings: &JobSettings, now: i64) -> Job {
    let mirror_name = mirror.meta().name.clone().unwrap_or_default();
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "mirrorfleet".to_owned(),
        ),
        ("app.kubernetes.io/component".to_owned(), "scan".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "mirrorfleet".to_owned(),
        ),
        (LABEL_MIRROR.to_owned(), mirror_name.clone()),
        (LABEL_PROJECT.to_owned(), project.to_owned()),
    ]);
    let owner = OwnerReference {
        api_version: Mirror::api_version(&()).into_owned(),
        kind: Mirror::kind(&()).into_owned(),
        name: mirror_name.clone(),
        uid: mirror.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let quantities = |(cpu, mem): &(String, String)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.clone())),
            ("memory".to_owned(), Quantity(mem.clone())),
        ])
    };
    let mut args = vec![
        "scan".to_owned(),
        "mirror".to_owned(),
        "--mirror".to_owned(),
        mirror_name.clone(),
        "--project".to_owned(),
        project.to_owned(),
    ];
    args.extend(settings.store_args.iter().cloned());
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&mirror_name, project, now)),
            namespace: mirror.meta().namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            backoff_limit: Some(settings.backoff_limit),
            active_deadline_seconds: Some(settings.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: settings.service_account.clone(),
                    containers: vec![Container {
                        name: "scan".into(),
                        image: Some(settings.image.clone()),
                        args: Some(args),
                        resources: Some(ResourceRequirements {
                            requests: Some(quantities(&settings.requests)),
                            limits: Some(quantities(&settings.limits)),
                            ..ResourceRequirements::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Whether a Job is over: a `Complete` or `Failed` condition (a failed pod being retried is
/// still running) — pure.
pub fn finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    })
}

/// Why a scan of (mirror, project) starts now, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Never scanned.
    First,
    /// The interval has passed since the last scan.
    Interval,
    /// Asked for with the annotation.
    Requested,
    /// The mirror reported a sync after its last scan.
    Synced,
}

/// What the scheduler knows about one (mirror, project).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanFacts {
    /// Unix seconds of the last finished scan.
    pub last_scan: Option<i64>,
    /// Unix seconds of the last sync the mirror reported.
    pub last_sync: Option<i64>,
    /// A Job for it is running.
    pub running: bool,
    /// The annotation asks for a scan.
    pub requested: bool,
}

/// Whether a scan is due — pure. Running scans never start another; a request, a sync
/// after the last scan, or the interval start one (in that order of reasons).
pub fn due(facts: &ScanFacts, interval_seconds: i64, now: i64) -> Option<Due> {
    if facts.running {
        return None;
    }
    if facts.requested {
        return Some(Due::Requested);
    }
    let Some(last) = facts.last_scan else {
        return Some(Due::First);
    };
    if facts.last_sync.is_some_and(|s| s > last) {
        return Some(Due::Synced);
    }
    (now - last >= interval_seconds).then_some(Due::Interval)
}

/// The failed scan Jobs of `mirror`, from their labels and conditions — pure.
pub fn failed_scans(jobs: &[Arc<Job>], mirror: &str) -> Vec<crate::status::FailedScan> {
    jobs.iter()
        .filter(|j| j.labels().get(LABEL_MIRROR).is_some_and(|m| m == mirror))
        .filter_map(|j| {
            let project = j.labels().get(LABEL_PROJECT)?.clone();
            let st = j.status.as_ref()?;
            let failed = st
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")?;
            let at = st
                .start_time
                .as_ref()
                .or(j.metadata.creation_timestamp.as_ref())
                .map_or(0, |t| t.0.as_second());
            let why = format!(
                "Job {} failed ({}){}",
                j.name_any(),
                failed.reason.as_deref().unwrap_or("Failed"),
                failed
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            Some((project, at, why))
        })
        .collect()
}

#[cfg(test)]
mod tests;
