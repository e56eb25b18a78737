//! The operator end to end on the real API server (testkit's `kube` feature), from `kubectl
//! apply` on: it runs as its ServiceAccount under the Roles of
//! charts/mirrorfleet/files/operator-role.yaml (the chart's) and nothing more; statuses, scan
//! Jobs (run by the JobRunner with the `mirrorfleet` binary against an rsync daemon and nginx
//! mirrors on loopback), health, Redis and a redirector following it; invalid objects, failing
//! scans, leader handover, quiet fleets, Git sync.
//!
//! Needs the binaries of `scripts/k8s-bins` (scripts/test builds them), and redis-server,
//! rsync and nginx (scripts/test installs them). Each test starts its own etcd and
//! kube-apiserver and runs several phases on it; `-- --nocapture` prints what they measure.
//! Measured on 2 shared cores, the three tests in parallel: every object's status 0.3–1.0 s
//! after `kubectl apply`; the Project indexed after 10 s and the Mirrors scanned and healthy
//! after 20 s (the scheduler looks every 10 s); the redirector following `enabled: false`
//! and a deletion within 0.1–0.25 s; one edit reconciled in 0.1–0.7 s for 1 request; the
//! Lease taken over 14.9–15.0 s after the leader's SIGKILL and 5.0 s after a SIGTERM (the
//! standby's next look); a Git commit applied or pruned within 0.4–1.3 s. The file runs in
//! 70–80 s, most of it the failing scan's 30 s wait before its retry.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "k8s_operator/world.rs"]
mod world;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use mirrorfleet_crds::v1alpha1::{
    Condition, ConditionStatus, Mirror, Project, RegionRule, Sponsor,
};
use mirrorfleet_testkit::git::{commit, origin};
use mirrorfleet_testkit::{TcpFake, http_503, within};
use serde_json::json;

use world::*;

/// How soon after `kubectl apply` every object must have its status.
const STATUS_DEADLINE: Duration = Duration::from_secs(10);
/// How soon a change reaches a status, or the redirector.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(5);
/// How long scans take to be scheduled (the scheduler looks every 10 s) and to run.
const SCAN_DEADLINE: Duration = Duration::from_secs(40);

/// The conditions and generation of any of the four kinds.
trait Conditioned {
    fn conditions(&self) -> &[Condition];
}

impl Conditioned for Project {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}
impl Conditioned for Mirror {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}
impl Conditioned for Sponsor {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}
impl Conditioned for RegionRule {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

/// `type_` is `status` at the object's current generation.
fn is<K: Conditioned + ResourceExt>(
    o: &K,
    type_: &str,
    status: ConditionStatus,
) -> Result<Condition, String> {
    condition(o.conditions(), type_, status, o.meta().generation).cloned()
}

/// Waits until `name` has its condition `type_` at `status` (at its current generation);
/// returns it and the time since `since`.
async fn until_condition<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: ConditionStatus,
    since: Instant,
    timeout: Duration,
) -> (Condition, Duration)
where
    K: Conditioned + kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned,
    K: std::fmt::Debug + Send + 'static,
{
    let what = format!("{} {name} {type_}={status:?}", K::kind(&()));
    let c = watch_until(api, name, &what, timeout, |o| is(o, type_, status)).await;
    (c, since.elapsed())
}

/// Phases on one API server: (1) the operator's Role allows what it needs and nothing more,
/// and it runs with its ServiceAccount's token; (2) a fleet applied with kubectl gets every
/// status within seconds, the source is indexed by a Job, the mirrors are scanned by Jobs,
/// probed, and found in sync or not; (3) a redirector on the same Redis follows `enabled:
/// false` and a deletion within seconds; (4) an invalid Mirror is Ready=False with what
/// `mirrorfleet validate` prints; (5) a quiet fleet makes no writes, and one edit costs at
/// most 3 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn the_operator_under_its_role_reconciles_a_fleet_that_the_redirector_follows() {
    let cluster = Cluster::start(false).await;

    // (1) What the Role grants, and what it does not.
    let may = |verb, resource, sub, ns| cluster.operator_may(verb, resource, sub, ns);
    assert!(may("patch", "mirrors.mirrorfleet.io", Some("status"), NS).await);
    assert!(may("patch", "projects.mirrorfleet.io", Some("status"), NS).await);
    assert!(may("watch", "sponsors.mirrorfleet.io", None, NS).await);
    assert!(may("create", "jobs.batch", None, NS).await);
    assert!(may("update", "leases.coordination.k8s.io", None, NS).await);
    assert!(
        !may("delete", "mirrors.mirrorfleet.io", None, NS).await,
        "deleting mirrors is the Git Role's"
    );
    assert!(!may("create", "mirrors.mirrorfleet.io", None, NS).await);
    assert!(!may("get", "secrets", None, NS).await);
    assert!(!may("create", "pods", None, NS).await);
    assert!(!may("delete", "jobs.batch", None, NS).await);
    assert!(
        !may("get", "jobs.batch", Some("status"), NS).await,
        "a subresource is asked about as such (the Role has jobs, not jobs/status)"
    );
    assert!(!may("list", "mirrors.mirrorfleet.io", None, "default").await);
    assert!(!may("create", "jobs.batch", None, "default").await);

    let trees = Trees::start();
    let operator = Operator::start(&cluster, "replica-a", &[]);
    let took = operator.wait_leader(1.0, Duration::from_secs(30)).await;
    eprintln!("operator leading {took:?} after its start");

    // (2) The fleet, checked by `mirrorfleet validate` first (a bad fixture fails here).
    let fleet = documents(&[
        project_yaml(&trees.rsync_url()),
        sponsor_yaml("loopback-hosting"),
        mirror_yaml("full", "loopback-hosting", "DE", trees.full.port),
        mirror_yaml("partial", "loopback-hosting", "FR", trees.partial.port),
        region_rule_yaml("europe-boost", "full"),
    ]);
    let manifests = cluster.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("fleet.yaml"), &fleet).unwrap();
    let (out, err, code) = run_mirrorfleet(&["validate", manifests.to_str().unwrap()]);
    assert_eq!(code, Some(0), "the fleet validates: {out}{err}");

    let (projects, mirrors) = (cluster.api::<Project>(), cluster.api::<Mirror>());
    let (sponsors, rules) = (cluster.api::<Sponsor>(), cluster.api::<RegionRule>());
    let applied = Instant::now();
    cluster.apply(&fleet).await;
    let ready = ConditionStatus::True;
    let d = STATUS_DEADLINE;
    let (_, project_ready) = until_condition(&projects, PROJECT, "Ready", ready, applied, d).await;
    let (_, sponsor_ready) =
        until_condition(&sponsors, "loopback-hosting", "Ready", ready, applied, d).await;
    let (_, rule_ready) = until_condition(&rules, "europe-boost", "Ready", ready, applied, d).await;
    let mirrors_ready = join_all(
        ["full", "partial"].map(|m| until_condition(&mirrors, m, "Ready", ready, applied, d)),
    )
    .await;
    eprintln!(
        "Ready=True after kubectl apply: Project {project_ready:?}, Sponsor {sponsor_ready:?}, \
         RegionRule {rule_ready:?}, Mirrors {:?}",
        mirrors_ready.iter().map(|(_, t)| t).collect::<Vec<_>>()
    );
    let sponsor = sponsors.get("loopback-hosting").await.unwrap();
    assert_eq!(
        sponsor.status.unwrap().mirrors,
        Some(2),
        "the sponsor's count"
    );
    let full = mirrors.get("full").await.unwrap();
    let resolved = full.status.unwrap().location.unwrap();
    assert_eq!(
        (resolved.country.as_deref(), resolved.source.as_deref()),
        (Some("DE"), Some("Spec"))
    );

    // The source is indexed by a Job owned by the Project.
    let scanned = ConditionStatus::True;
    let (indexed, project_scanned) = until_condition(
        &projects,
        PROJECT,
        "Scanned",
        scanned,
        applied,
        SCAN_DEADLINE,
    )
    .await;
    let jobs = cluster.api::<Job>();
    let index_jobs = jobs
        .list(&ListParams::default().labels("mirrorfleet.io/scan=source"))
        .await
        .unwrap()
        .items;
    assert_eq!(index_jobs.len(), 1, "one source Job: {index_jobs:?}");
    let index_job = &index_jobs[0];
    assert!(
        index_job.name_any().starts_with("index-demo-"),
        "{index_job:?}"
    );
    let owner = &index_job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Project", PROJECT)
    );
    let run = cluster.runner.wait_run(&index_job.name_any()).await;
    let redis = format!("--redis={}", cluster.redis_url());
    assert_eq!(
        run.args,
        [
            "scan",
            "source",
            "--project",
            PROJECT,
            "--no-progress",
            &redis
        ],
        "{run:?}"
    );
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    let project = projects.get(PROJECT).await.unwrap().status.unwrap();
    assert_eq!(project.files, Some(FILES.len() as u64), "{project:?}");
    let serial = project.serial.clone().unwrap();
    assert!(
        !serial.is_empty() && project.last_scan.is_some(),
        "{project:?}"
    );
    assert_eq!(
        indexed.message,
        format!("{} files, serial {serial}", FILES.len())
    );
    let printed = cluster
        .api
        .kubectl(&["get", "projects", "-n", NS], None)
        .await;
    let header: Vec<&str> = printed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PREFIX", "FILES", "SERIAL", "LAST", "SCAN", "AGE"],
        "{printed}"
    );
    let row: Vec<&str> = printed.lines().nth(1).unwrap().split_whitespace().collect();
    let files = FILES.len().to_string();
    assert_eq!(
        row[..4],
        ["demo", "/demo/", files.as_str(), serial.as_str()],
        "{printed}"
    );

    // Then each mirror is scanned by its Job, probed, and found in sync or not.
    let mut mirror_times = Vec::new();
    for name in ["full", "partial"] {
        let (_, scanned_at) =
            until_condition(&mirrors, name, "Scanned", scanned, applied, SCAN_DEADLINE).await;
        let (_, healthy_at) =
            until_condition(&mirrors, name, "Healthy", ready, applied, SCAN_DEADLINE).await;
        mirror_times.push((name, scanned_at, healthy_at));
    }
    let (synced, full_synced) = until_condition(
        &mirrors,
        "full",
        "Synced",
        ConditionStatus::True,
        applied,
        FOLLOW_DEADLINE,
    )
    .await;
    assert_eq!(
        synced.message,
        "1 project(s) hold their source's current tree"
    );
    let (behind, _) = until_condition(
        &mirrors,
        "partial",
        "Synced",
        ConditionStatus::False,
        applied,
        FOLLOW_DEADLINE,
    )
    .await;
    assert_eq!(behind.message, "demo: 1 missing, 0 outdated");
    eprintln!(
        "after kubectl apply: Project Scanned {project_scanned:?}; Mirrors (Scanned, Healthy) \
         {mirror_times:?}; full Synced {full_synced:?}"
    );
    let scan_runs: Vec<_> = cluster
        .runner
        .runs()
        .into_iter()
        .filter(|r| r.job.starts_with("scan-"))
        .collect();
    assert_eq!(scan_runs.len(), 2, "one scan Job per mirror: {scan_runs:?}");
    assert!(
        scan_runs.iter().all(|r| r.exit_code == Some(0)),
        "{scan_runs:?}"
    );
    let partial = mirrors.get("partial").await.unwrap().status.unwrap();
    let demo = &partial.projects[0];
    assert_eq!(
        (demo.files, demo.missing, demo.mismatched),
        (FILES.len() as u64 - 1, 1, 0),
        "{partial:?}"
    );

    // (3) A redirector on the same Redis follows edits.
    let redirector = Redirector::start(&cluster.redis_url()).await;
    let full_url = format!("http://127.0.0.1:{}/", trees.full.port);
    let partial_url = format!("http://127.0.0.1:{}/", trees.partial.port);
    let only_full = format!("/{PROJECT}/{MISSING_FROM_PARTIAL}");
    let to_full = format!("{full_url}{MISSING_FROM_PARTIAL}");
    let to_fallback = format!("{FALLBACK}{MISSING_FROM_PARTIAL}");
    let port = redirector.port;
    until_redirected(port, &only_full, &to_full, FOLLOW_DEADLINE).await;
    let enabled = |on: bool| json!({ "spec": { "enabled": on } });
    let pp = PatchParams::default();
    let edited = Instant::now();
    mirrors
        .patch("full", &pp, &Patch::Merge(enabled(false)))
        .await
        .unwrap();
    until_redirected(port, &only_full, &to_fallback, FOLLOW_DEADLINE).await;
    let disable_followed = edited.elapsed();
    let unknown = ConditionStatus::Unknown;
    let (disabled, _) = until_condition(
        &mirrors,
        "full",
        "Healthy",
        unknown,
        edited,
        FOLLOW_DEADLINE,
    )
    .await;
    assert_eq!(disabled.reason, "Disabled");
    mirrors
        .patch("full", &pp, &Patch::Merge(enabled(true)))
        .await
        .unwrap();
    until_redirected(port, &only_full, &to_full, FOLLOW_DEADLINE).await;
    let deleted = Instant::now();
    cluster
        .api
        .kubectl(&["delete", "mirror", "full", "-n", NS], None)
        .await;
    until_redirected(port, &only_full, &to_fallback, FOLLOW_DEADLINE).await;
    let delete_followed = deleted.elapsed();
    let common = format!("/{PROJECT}/common.iso");
    for _ in 0..20 {
        assert_eq!(
            location(redirector.port, &common).await,
            Ok(format!("{partial_url}common.iso")),
            "with `full` gone, `partial` takes every download"
        );
    }
    eprintln!(
        "redirector followed: enabled=false in {disable_followed:?}, deletion in \
         {delete_followed:?}"
    );
    redirector.stop().await;
    let sponsor = "loopback-hosting";
    watch_until(
        &sponsors,
        sponsor,
        "the sponsor to count 1 mirror",
        FOLLOW_DEADLINE,
        |s| match s.status.as_ref().and_then(|s| s.mirrors) {
            Some(1) => Ok(()),
            other => Err(format!("mirrors: {other:?}")),
        },
    )
    .await;

    // (4) A Mirror naming a Sponsor that does not exist: Ready=False, with the words
    // `mirrorfleet validate` prints for the same manifests.
    let orphan = mirror_yaml("orphan", "nobody", "NL", trees.partial.port);
    std::fs::write(manifests.join("orphan.yaml"), &orphan).unwrap();
    let (printed, _, code) = run_mirrorfleet(&["validate", manifests.to_str().unwrap()]);
    assert_eq!(code, Some(1), "validate finds the problem: {printed}");
    let said: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.split_once(" Mirror/orphan: ").map(|(_, p)| p))
        .collect();
    assert!(!said.is_empty(), "validate names Mirror/orphan: {printed}");
    let applied = Instant::now();
    cluster.apply(&orphan).await;
    let (invalid, took) = until_condition(
        &mirrors,
        "orphan",
        "Ready",
        ConditionStatus::False,
        applied,
        STATUS_DEADLINE,
    )
    .await;
    assert_eq!(invalid.reason, "Invalid");
    assert_eq!(
        invalid.message,
        said.join("; "),
        "validate printed:\n{printed}"
    );
    eprintln!("orphan Ready=False after {took:?}: {}", invalid.message);
    let events = cluster
        .api
        .kubectl(
            &[
                "get",
                "events.events.k8s.io",
                "-n",
                NS,
                "--field-selector=regarding.name=orphan",
                "-o",
                "jsonpath={range .items[*]}{.type} {.reason}{\"\\n\"}{end}",
            ],
            None,
        )
        .await;
    assert!(
        events.lines().any(|l| l == "Warning ReadyFalse"),
        "a Warning Event for the orphan: {events:?}"
    );

    // (5) Settled, a quiet fleet writes nothing (the Lease's renewals are the election's).
    let quiet = Duration::from_secs(20);
    let before = settled(&operator, Duration::from_secs(3), Duration::from_secs(30)).await;
    // Not a wait for something: the window over which nothing may happen.
    tokio::time::sleep(quiet).await;
    let after = operator.metrics().await.unwrap();
    assert_eq!(
        after.writes(),
        before.writes(),
        "writes during a quiet {quiet:?}; requests before: {}; after: {}",
        before.by_verb(),
        after.by_verb()
    );
    assert!(
        after.requests("update") > before.requests("update"),
        "the Lease was renewed meanwhile: {}",
        after.by_verb()
    );

    // One edit of one Mirror: its status follows, for at most 3 requests.
    let edited = Instant::now();
    let generation = mirrors
        .patch(
            "partial",
            &pp,
            &Patch::Merge(json!({ "spec": { "weight": 250 } })),
        )
        .await
        .unwrap()
        .metadata
        .generation;
    let (_, took) = until_condition(
        &mirrors,
        "partial",
        "Ready",
        ConditionStatus::True,
        edited,
        FOLLOW_DEADLINE,
    )
    .await;
    assert_eq!(
        mirrors
            .get("partial")
            .await
            .unwrap()
            .status
            .unwrap()
            .observed_generation,
        generation
    );
    let edit_settled = settled(&operator, Duration::from_secs(3), Duration::from_secs(30)).await;
    let cost = edit_settled.requests_but_lease() - after.requests_but_lease();
    eprintln!(
        "one edit reconciled in {took:?} for {cost} requests (before: {}; after: {})",
        after.by_verb(),
        edit_settled.by_verb()
    );
    assert!(
        (1.0..=3.0).contains(&cost),
        "one edit cost {cost} requests: before {}; after {}",
        after.by_verb(),
        edit_settled.by_verb()
    );
}

/// Phases on one API server with two replicas: (1) a scan of a mirror answering 503 fails, the
/// Mirror says so with the Job's failure and the next attempt's time, and the retry comes
/// after the doubling wait — Jobs do not pile up, not even across leader changes; (2) the
/// leader SIGKILLed, the standby takes the Lease within its duration and reconciles an
/// edit within seconds; (3) the leader SIGTERMed releases the Lease: the next standby takes
/// over at its next look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn failing_scans_back_off_and_the_lease_moves_to_a_standby() {
    let cluster = Cluster::start(false).await;
    let trees = Trees::start();
    // A mirror answering every request with 503 (a closed port could be taken by another
    // server meanwhile).
    let refusing = TcpFake::start(http_503);
    let a = Operator::start(&cluster, "replica-a", &[]);
    a.wait_leader(1.0, Duration::from_secs(30)).await;
    let mut b = Operator::start(&cluster, "replica-b", &[]);
    b.wait_leader(0.0, Duration::from_secs(30)).await;

    let fleet = documents(&[
        project_yaml(&trees.rsync_url()),
        sponsor_yaml("loopback-hosting"),
        mirror_yaml("good", "loopback-hosting", "DE", trees.full.port),
        mirror_yaml("broken", "loopback-hosting", "FR", refusing.port),
    ]);
    let applied = Instant::now();
    cluster.apply(&fleet).await;
    let mirrors = cluster.api::<Mirror>();
    let (failed, first_failure) = until_condition(
        &mirrors,
        "broken",
        "Scanned",
        ConditionStatus::False,
        applied,
        SCAN_DEADLINE,
    )
    .await;
    let jobs = cluster.api::<Job>();
    let broken_jobs = || async {
        let lp = ListParams::default().labels("mirrorfleet.io/mirror=broken");
        let mut list = jobs.list(&lp).await.unwrap().items;
        list.sort_by_key(|j| j.creation_timestamp().map(|t| t.0));
        list
    };
    let first = broken_jobs().await;
    assert_eq!(first.len(), 1, "{first:?}");
    let run = cluster.runner.wait_run(&first[0].name_any()).await;
    assert_ne!(run.exit_code, Some(0), "{run:?}");
    assert_eq!(failed.reason, "ScanFailed");
    let m = &failed.message;
    let first_job = first[0].name_any();
    assert!(
        m.starts_with(&format!(
            "demo: Job {first_job} failed (BackoffLimitExceeded: Job has reached the \
             specified backoff limit: exit code 1: "
        )) && m.contains("; 1 failure(s) in a row, next attempt at "),
        "{m}"
    );
    eprintln!("broken Scanned=False {first_failure:?} after apply: {m}");

    // (2) The leader killed: the standby leads once the Lease has expired.
    let lease = || async {
        let leases: Api<Lease> = cluster.api();
        let l = leases.get("mirrorfleet-operator").await.unwrap();
        l.spec.and_then(|s| s.holder_identity)
    };
    assert_eq!(lease().await.as_deref(), Some("replica-a"));
    let killed = Instant::now();
    a.signal("KILL");
    let handover = b.wait_leader(1.0, Duration::from_secs(20)).await;
    assert!(
        handover <= Duration::from_secs(17),
        "handover took {handover:?} (Lease: 15 s)"
    );
    assert_eq!(lease().await.as_deref(), Some("replica-b"));
    eprintln!("SIGKILL: replica-b leads {:?} after", killed.elapsed());
    let edited = Instant::now();
    mirrors
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "weight": 50 } })),
        )
        .await
        .unwrap();
    let (_, took) = until_condition(
        &mirrors,
        "good",
        "Ready",
        ConditionStatus::True,
        edited,
        FOLLOW_DEADLINE,
    )
    .await;
    eprintln!("the new leader reconciled an edit in {took:?}");

    // (3) A third replica waits; the leader SIGTERMed gives the Lease up.
    let c = Operator::start(&cluster, "replica-c", &[]);
    c.wait_leader(0.0, Duration::from_secs(30)).await;
    let termed = Instant::now();
    b.signal("TERM");
    let status = b.exited(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "a SIGTERMed leader exits cleanly: {status:?}"
    );
    let takeover = c.wait_leader(1.0, Duration::from_secs(10)).await;
    assert!(
        takeover <= Duration::from_secs(7),
        "after a release the standby takes over at its next look (every 5 s), took \
         {takeover:?}"
    );
    assert_eq!(lease().await.as_deref(), Some("replica-c"));
    eprintln!("SIGTERM: replica-c leads {:?} after", termed.elapsed());

    // (1, continued) The retry came once the 30 s after the failure had passed, and failed
    // again: the next wait is 60 s. No other Job was created meanwhile, not for `broken` nor
    // for anything else, across both leader changes.
    let retried = watch_until(
        &mirrors,
        "broken",
        "the second failed scan of broken",
        Duration::from_secs(60),
        |m| {
            let c = is(m, "Scanned", ConditionStatus::False)?;
            if c.message
                .contains("; 2 failure(s) in a row, next attempt at ")
            {
                Ok(c)
            } else {
                Err(c.message)
            }
        },
    )
    .await;
    let failed_at = |job: &Job| {
        let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
        let failed = conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True");
        failed.unwrap().last_transition_time.clone().unwrap().0
    };
    let next_attempt = |job: &Job, wait: i64| {
        let at = failed_at(job) + k8s_openapi::jiff::SignedDuration::from_secs(wait);
        format!("next attempt at {at}")
    };
    let broken = broken_jobs().await;
    assert_eq!(
        broken.len(),
        2,
        "two attempts {:?} after the apply: {broken:?}",
        applied.elapsed()
    );
    let (job1, job2) = (&broken[0], &broken[1]);
    assert_eq!(job1.name_any(), first_job);
    assert!(m.ends_with(&next_attempt(job1, 30)), "{m}");
    let job1_failed = failed_at(job1);
    let job2_created = job2.creation_timestamp().unwrap().0;
    assert!(
        job2_created >= job1_failed + k8s_openapi::jiff::SignedDuration::from_secs(30),
        "the retry {} was created at {job2_created}, less than 30 s after {first_job} failed \
         at {job1_failed}",
        job2.name_any()
    );
    cluster.runner.wait_run(&job2.name_any()).await;
    let job2 = jobs.get(&job2.name_any()).await.unwrap();
    assert!(
        retried
            .message
            .starts_with(&format!("demo: Job {} failed (", job2.name_any()))
            && retried.message.ends_with(&next_attempt(&job2, 60)),
        "{}",
        retried.message
    );
    eprintln!(
        "broken retried {:?} after its first failure: {}",
        job2_created.duration_since(job1_failed),
        retried.message
    );
    let all: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    let count = |prefix: &str| all.iter().filter(|j| j.starts_with(prefix)).count();
    assert_eq!(
        (
            count("index-demo-"),
            count("scan-good-demo-"),
            count("scan-broken-demo-")
        ),
        (1, 1, 2),
        "Jobs: {all:?}"
    );
}

/// The operator following a Git repository of manifests, with the Git Role besides its own:
/// a commit is applied to the API server (labelled, with its own field manager) and
/// reconciled like anything applied by hand; what the next commit drops is deleted, and what
/// never came from Git stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real API server: scripts/k8s-bins builds it; scripts/test runs this tier"]
async fn the_operator_applies_git_commits_and_prunes_what_they_drop() {
    let cluster = Cluster::start(true).await;
    let may = |verb, resource| cluster.operator_may(verb, resource, None, NS);
    assert!(may("create", "mirrors.mirrorfleet.io").await);
    assert!(may("delete", "mirrors.mirrorfleet.io").await);
    assert!(!may("delete", "jobs.batch").await);
    assert!(
        !cluster
            .operator_may("delete", "mirrors.mirrorfleet.io", None, "default")
            .await
    );

    let trees = Trees::start();
    let fleet = |with_partial: bool| {
        let mut docs = vec![
            project_yaml(&trees.rsync_url()),
            sponsor_yaml("loopback-hosting"),
            mirror_yaml("full", "loopback-hosting", "DE", trees.full.port),
        ];
        if with_partial {
            docs.push(mirror_yaml(
                "partial",
                "loopback-hosting",
                "FR",
                trees.partial.port,
            ));
        }
        documents(&docs)
    };
    let remote = tempfile::tempdir().unwrap();
    let repo = origin(remote.path());
    commit(&repo, &[("fleet/fleet.yaml", &fleet(true))], false);
    // Made by hand: not the sync's to prune.
    cluster.apply(&sponsor_yaml("by-hand")).await;

    let work = cluster.dir.path().join("git");
    let started = Instant::now();
    let operator = Operator::start(
        &cluster,
        "replica-git",
        &[
            "--git",
            remote.path().to_str().unwrap(),
            "--git-path",
            "fleet",
            "--git-interval",
            "1",
            "--work-dir",
            work.to_str().unwrap(),
        ],
    );
    operator.wait_leader(1.0, Duration::from_secs(30)).await;
    let mirrors = cluster.api::<Mirror>();
    let deadline = STATUS_DEADLINE + Duration::from_secs(5);
    for name in ["full", "partial"] {
        let (_, took) = until_condition(
            &mirrors,
            name,
            "Ready",
            ConditionStatus::True,
            started,
            deadline,
        )
        .await;
        eprintln!("Mirror {name} from Git Ready {took:?} after the operator started");
    }
    let partial = mirrors.get("partial").await.unwrap();
    assert_eq!(
        partial
            .labels()
            .get("mirrorfleet.io/from-git")
            .map(String::as_str),
        Some("true")
    );
    let managers: Vec<&str> = partial
        .managed_fields()
        .iter()
        .filter_map(|f| f.manager.as_deref())
        .collect();
    assert!(managers.contains(&"mirrorfleet-git"), "{managers:?}");
    let sponsors = cluster.api::<Sponsor>();
    let count_mirrors = |want: u32| {
        move |s: &Sponsor| match s.status.as_ref().and_then(|s| s.mirrors) {
            Some(n) if n == want => Ok(()),
            other => Err(format!("mirrors: {other:?}")),
        }
    };
    watch_until(
        &sponsors,
        "loopback-hosting",
        "the sponsor to count 2 mirrors",
        FOLLOW_DEADLINE,
        count_mirrors(2),
    )
    .await;

    // The next commit drops `partial`: deleted, and gone from the fleet.
    let committed = Instant::now();
    commit(&repo, &[("fleet/fleet.yaml", &fleet(false))], false);
    let uid = partial.uid().unwrap();
    within(
        "the Mirror partial, dropped from Git, to be deleted",
        Duration::from_secs(10),
        await_condition(mirrors.clone(), "partial", conditions::is_deleted(&uid)),
    )
    .await
    .unwrap();
    let pruned = committed.elapsed();
    watch_until(
        &sponsors,
        "loopback-hosting",
        "the sponsor to count 1 mirror",
        FOLLOW_DEADLINE,
        count_mirrors(1),
    )
    .await;
    eprintln!("a commit dropping a Mirror pruned it after {pruned:?}");
    let left: Vec<String> = mirrors
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|m| m.name_any())
        .collect();
    assert_eq!(left, ["full"]);
    let sponsors_left: Vec<String> = sponsors
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(sponsors_left, ["by-hand", "loopback-hosting"]);
}
