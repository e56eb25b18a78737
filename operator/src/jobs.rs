//! Scan Jobs: the batch/v1 Job that scans one (Mirror, Project), and the one that indexes a
//! Project's source, built by pure functions; when one is due, when one is over, the
//! failures in a row and the wait after them — pure too. Nothing here talks to
//! the API server (the scheduler, [`crate::schedule`], does).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use mirrorfleet_crds::v1alpha1::{Mirror, Project};

/// Annotation asking for a scan now (any value; the operator removes it once the Job exists),
/// on a Mirror (its projects' scans) or a Project (its source's).
pub const SCAN_REQUESTED: &str = "mirrorfleet.io/scan-requested";

/// The image scan Jobs run when none is given: the one `scripts/image` builds, at this
/// version (`mirrorfleet:<version>`; load it into the nodes' runtime or push it to your
/// registry and pass `--image`).
pub const DEFAULT_IMAGE: &str = concat!("mirrorfleet:", env!("CARGO_PKG_VERSION"));
/// Label naming the mirror a Job scans (mirror scans only).
pub const LABEL_MIRROR: &str = "mirrorfleet.io/mirror";
/// Label naming the project a Job scans.
pub const LABEL_PROJECT: &str = "mirrorfleet.io/project";
/// Label saying what a Job scans: `mirror` or `source`.
pub const LABEL_SCAN: &str = "mirrorfleet.io/scan";

/// First wait after a failed scan; it doubles with each failure in a row.
pub const RETRY_FIRST_SECONDS: i64 = 30;
/// Longest wait after failures (and never longer than the scan interval).
pub const RETRY_MAX_SECONDS: i64 = 3600;

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
    /// The Secret (name, key) holding the Redis password: the scan pods get it as
    /// `MIRRORFLEET_REDIS_PASSWORD` from the Secret itself, so it is in no Job's spec.
    pub redis_password_secret: Option<(String, String)>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            image: DEFAULT_IMAGE.into(),
            store_args: vec![],
            ttl_seconds_after_finished: 3600,
            backoff_limit: 1,
            active_deadline_seconds: 1800,
            max_concurrent: 4,
            requests: ("100m".into(), "128Mi".into()),
            limits: ("1".into(), "512Mi".into()),
            service_account: None,
            redis_password_secret: None,
        }
    }
}

/// A DNS label (at most 63 characters: the Job's pods carry it as a label value) for the
/// Job scanning (mirror, project) at `now`.
pub fn job_name(mirror: &str, project: &str, now: i64) -> String {
    dns_label(&format!("scan-{mirror}-{project}"), now)
}

/// The name of the Job indexing `project`'s source at `now` (distinct from every mirror
/// scan's: those start with `scan-`).
pub fn source_job_name(project: &str, now: i64) -> String {
    dns_label(&format!("index-{project}"), now)
}

fn dns_label(base: &str, now: i64) -> String {
    let suffix = format!("-{now:x}");
    let mut base: String = base
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
    let mut labels = labels(project, "mirror");
    labels.insert(LABEL_MIRROR.to_owned(), mirror_name.clone());
    let args = vec![
        "scan".to_owned(),
        "mirror".to_owned(),
        "--mirror".to_owned(),
        mirror_name.clone(),
        "--project".to_owned(),
        project.to_owned(),
    ];
    let name = job_name(&mirror_name, project, now);
    job(mirror, name, labels, args, None, settings)
}

/// Why a project's source cannot be indexed by a Job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoSourceJob {
    /// A local tree with no volume to mount it from.
    #[error(
        "the source is a local directory ({0}) and no spec.source.volumeClaim says which PersistentVolumeClaim holds it"
    )]
    LocalWithoutVolume(String),
}

/// The Job indexing `project`'s source: owned by the Project, running `mirrorfleet scan
/// source`; a local tree is mounted read-only from its PersistentVolumeClaim at its path.
pub fn source_job(project: &Project, settings: &JobSettings, now: i64) -> Result<Job, NoSourceJob> {
    let name = project.meta().name.clone().unwrap_or_default();
    let source = &project.spec.source;
    let volume = match (&source.local, &source.volume_claim) {
        (Some(path), None) => return Err(NoSourceJob::LocalWithoutVolume(path.clone())),
        (Some(path), Some(claim)) => Some((claim.clone(), path.clone())),
        (None, _) => None,
    };
    let args = vec![
        "scan".to_owned(),
        "source".to_owned(),
        "--project".to_owned(),
        name.clone(),
        "--no-progress".to_owned(),
    ];
    let job_name = source_job_name(&name, now);
    Ok(job(
        project,
        job_name,
        labels(&name, "source"),
        args,
        volume,
        settings,
    ))
}

fn labels(project: &str, scan: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "mirrorfleet".to_owned(),
        ),
        ("app.kubernetes.io/component".to_owned(), "scan".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "mirrorfleet".to_owned(),
        ),
        (LABEL_PROJECT.to_owned(), project.to_owned()),
        (LABEL_SCAN.to_owned(), scan.to_owned()),
    ])
}

/// A scan Job owned by `owner`: `args` then the store's, a read-only `(claim, path)` volume
/// if given, and the bounds of `settings`.
fn job<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: String,
    labels: BTreeMap<String, String>,
    mut args: Vec<String>,
    volume: Option<(String, String)>,
    settings: &JobSettings,
) -> Job {
    let meta = owner.meta();
    let owner_ref = OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let quantities = |(cpu, mem): &(String, String)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.clone())),
            ("memory".to_owned(), Quantity(mem.clone())),
        ])
    };
    args.extend(settings.store_args.iter().cloned());
    // The root filesystem is read-only: scans write only their temporary files, in /tmp.
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("256Mi".into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    if let Some((claim, path)) = volume {
        volumes.push(Volume {
            name: "source".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: Some(true),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "source".into(),
            mount_path: path,
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: meta.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner_ref]),
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
                    // Scans need no API access: no token in the pod.
                    automount_service_account_token: Some(false),
                    // What Pod Security "restricted" asks for; the image's user, 65532.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(volumes),
                    containers: vec![Container {
                        name: "scan".into(),
                        image: Some(settings.image.clone()),
                        args: Some(args),
                        env: settings.redis_password_secret.as_ref().map(|(name, key)| {
                            vec![EnvVar {
                                name: "MIRRORFLEET_REDIS_PASSWORD".into(),
                                value_from: Some(EnvVarSource {
                                    secret_key_ref: Some(SecretKeySelector {
                                        name: name.clone(),
                                        key: key.clone(),
                                        optional: Some(false),
                                    }),
                                    ..EnvVarSource::default()
                                }),
                                ..EnvVar::default()
                            }]
                        }),
                        volume_mounts: Some(mounts),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Capabilities::default()
                            }),
                            ..SecurityContext::default()
                        }),
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

/// Seconds between two indexings of a project's source when its spec says nothing
/// (`scan.sourceIntervalMinutes`, default 5).
pub const SOURCE_INTERVAL_SECONDS: i64 = 300;

/// Seconds between two scans of `project` on `mirror`: the Mirror's `scan.intervalMinutes`,
/// else the Project's `scan.mirrorIntervalMinutes`, else `default_seconds`.
pub fn mirror_interval(mirror: &Mirror, project: Option<&Project>, default_seconds: i64) -> i64 {
    let own = mirror.spec.scan.as_ref().and_then(|s| s.interval_minutes);
    let project = project
        .and_then(|p| p.spec.scan.as_ref())
        .and_then(|s| s.mirror_interval_minutes);
    own.or(project)
        .map_or(default_seconds, |m| i64::from(m) * 60)
        .max(60)
}

/// Seconds between two indexings of `project`'s source.
pub fn source_interval(project: &Project) -> i64 {
    project
        .spec
        .scan
        .as_ref()
        .and_then(|s| s.source_interval_minutes)
        .map_or(SOURCE_INTERVAL_SECONDS, |m| i64::from(m) * 60)
        .max(60)
}

/// Why a scan starts now, if it does.
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
    /// The last attempts failed and the wait after them is over.
    Retry,
}

/// What the scheduler knows about one scan target (a (mirror, project), or a source).
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
    /// The last attempts failed: not before this time (Unix seconds).
    pub retry_at: Option<i64>,
}

/// Whether a scan is due — pure. Running scans never start another; a request starts one
/// at once; after failures, nothing before the retry time; then a first scan, a retry, a
/// sync after the last scan, or the interval start one (in that order of reasons).
pub fn due(facts: &ScanFacts, interval_seconds: i64, now: i64) -> Option<Due> {
    if facts.running {
        return None;
    }
    if facts.requested {
        return Some(Due::Requested);
    }
    if let Some(at) = facts.retry_at {
        return (now >= at).then_some(Due::Retry);
    }
    let Some(last) = facts.last_scan else {
        return Some(Due::First);
    };
    if facts.last_sync.is_some_and(|s| s > last) {
        return Some(Due::Synced);
    }
    (now - last >= interval_seconds).then_some(Due::Interval)
}

/// A scan Job that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The Job.
    pub job: String,
    /// When it failed (Unix seconds).
    pub at: i64,
    /// Why, from its `Failed` condition.
    pub why: String,
}

/// The Jobs of one scan target, as far as the cache remembers them (finished Jobs live for
/// their TTL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// A Job is running.
    pub running: bool,
    /// Failed Jobs since the last one that completed.
    pub failures: u32,
    /// The latest of those failures.
    pub last_failure: Option<Failure>,
}

impl History {
    /// When the next attempt may start after the failures (`None` without failures): the
    /// wait doubles with each failure in a row, from [`RETRY_FIRST_SECONDS`] up to the scan
    /// interval or [`RETRY_MAX_SECONDS`], whichever is shorter.
    pub fn retry_at(&self, interval_seconds: i64) -> Option<i64> {
        let last = self.last_failure.as_ref()?;
        let cap = interval_seconds.clamp(RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS);
        let doublings = self.failures.saturating_sub(1).min(20);
        let wait = RETRY_FIRST_SECONDS.saturating_mul(1 << doublings).min(cap);
        Some(last.at.saturating_add(wait))
    }
}

/// The history of the scans of `project` on `mirror` (`None`: of the project's source) —
/// pure.
pub fn history(jobs: &[Arc<Job>], project: &str, mirror: Option<&str>) -> History {
    let scan = if mirror.is_some() { "mirror" } else { "source" };
    let mut mine: Vec<&Arc<Job>> = jobs
        .iter()
        .filter(|j| {
            let l = j.labels();
            l.get(LABEL_PROJECT).is_some_and(|p| p == project)
                && l.get(LABEL_SCAN).map_or("mirror", String::as_str) == scan
                && l.get(LABEL_MIRROR).map(String::as_str) == mirror
        })
        .collect();
    mine.sort_by_key(|j| (started_at(j), j.name_any()));
    let mut h = History::default();
    for j in mine {
        if !finished(j) {
            h.running = true;
        } else if let Some(f) = failure(j) {
            h.failures += 1;
            h.last_failure = Some(f);
        } else {
            h.failures = 0;
            h.last_failure = None;
        }
    }
    h
}

fn started_at(job: &Job) -> i64 {
    job.metadata
        .creation_timestamp
        .as_ref()
        .or(job.status.as_ref().and_then(|s| s.start_time.as_ref()))
        .map_or(0, |t| t.0.as_second())
}

fn failure(job: &Job) -> Option<Failure> {
    let st = job.status.as_ref()?;
    let failed = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    let at = failed
        .last_transition_time
        .as_ref()
        .or(st.start_time.as_ref())
        .map_or_else(|| started_at(job), |t| t.0.as_second());
    let why = format!(
        "{}{}",
        failed.reason.as_deref().unwrap_or("Failed"),
        failed
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    Some(Failure {
        job: job.name_any(),
        at,
        why,
    })
}

#[cfg(test)]
mod tests;
