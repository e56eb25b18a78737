//! The scan scheduler's step ([`Scheduler::step`]) against tower-test's mock, the scans it
//! decides from read out of a real Redis store and from the scan Jobs given: which Jobs it
//! creates for which (mirror, project) or source and why, the cap on concurrent scans, the
//! source first and mirrors only once it has an index, failures retried after a wait, the
//! `scan-requested` annotation served and removed (not while a scan runs), the rescan after
//! an outage. A step makes its requests one after the other (each awaited), so they are
//! asserted in order; a step that finishes made no other request.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::FutureExt;
use http::Method;
use k8s_openapi::api::batch::v1::Job;
use mirrorfleet_crds::state::{Availability, FileIndex, FileRecord, FleetState, HashKind};
use mirrorfleet_crds::v1alpha1::{Mirror, Project};
use mirrorfleet_operator::Caches;
use mirrorfleet_operator::assess::{Objects, assess};
use mirrorfleet_operator::jobs::{Due, JobSettings, SCAN_REQUESTED};
use mirrorfleet_operator::schedule::{Scheduler, Started, Step};
use mirrorfleet_store::{LoadedState, RedisStore, StateReader, StateWriter};
use serde_json::{Value, json};
use support::*;
use tower_test::mock::pair;

const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const MIRRORS: &str = "/apis/mirrorfleet.io/v1alpha1/namespaces/default/mirrors";
const INTERVAL: i64 = 3600;

struct World {
    scheduler: Scheduler,
    mock: Mock,
    caches: Caches,
    fleet: FleetState,
    store: RedisStore,
    /// Pairs reported synced, as the scheduler's loop keeps them.
    reported: BTreeSet<(String, String)>,
    _redis: mirrorfleet_testkit::Redis,
}

/// The mirrors, carrying the local project `videolan` (which no Job can index: no volume),
/// its index already stored.
async fn world(mirrors: Vec<Mirror>, max_concurrent: usize) -> World {
    let w = world_of(project(), mirrors, max_concurrent).await;
    w.indexed().await;
    w
}

async fn world_of(project: Project, mirrors: Vec<Mirror>, max_concurrent: usize) -> World {
    let (redis, store) = redis_store().await;
    let (service, mock) = pair();
    let client = kube::Client::new(service, "default");
    let settings = JobSettings {
        max_concurrent,
        ..JobSettings::default()
    };
    let objects = Objects {
        projects: vec![Arc::new(project.clone())],
        mirrors: mirrors.iter().cloned().map(Arc::new).collect(),
        sponsors: vec![Arc::new(sponsor())],
        rules: vec![],
    };
    let fleet = assess(&objects).fleet;
    assert_eq!(fleet.mirrors.len(), mirrors.len(), "every mirror is valid");
    World {
        scheduler: Scheduler::new(client, "default", settings, INTERVAL),
        mock,
        caches: Caches {
            projects: cache(vec![project]).0,
            mirrors: cache(mirrors).0,
            sponsors: cache(vec![sponsor()]).0,
            rules: cache(vec![]).0,
            jobs: None,
        },
        fleet,
        store,
        reported: BTreeSet::new(),
        _redis: redis,
    }
}

impl World {
    /// Stores a finished scan of (mirror, videolan) at `at`.
    async fn scanned(&self, mirror: &str, at: i64) {
        let avail = Availability {
            mirror: mirror.into(),
            project: "videolan".into(),
            serial: "1".into(),
            scanned_at: at,
            ..Availability::default()
        };
        StateWriter::new(self.store.clone())
            .write_availability(&avail)
            .await
            .unwrap();
    }

    /// Stores an index of videolan, made now.
    async fn indexed(&self) {
        let record = FileRecord {
            path: "README".into(),
            size: 1,
            mtime: 1,
            digests: vec![Some(vec![0; 32])],
        };
        let index = FileIndex::build("videolan", "1", &[HashKind::Sha256], vec![record], None);
        StateWriter::new(self.store.clone())
            .write_index(&index, NOW - 10)
            .await
            .unwrap();
    }

    /// The state as the scheduler's loop reads it.
    async fn state(&self) -> LoadedState {
        StateReader::new(self.store.clone()).load().await.unwrap().0
    }
}

/// A scan Job of (mirror, videolan) — of videolan's source without a mirror — running or
/// finished with `condition`, created at `at`.
fn job_at(mirror: Option<&str>, condition: Option<&str>, at: i64) -> Arc<Job> {
    let conditions: Vec<Value> = condition
        .map(|c| json!({"type": c, "status": "True", "lastTransitionTime": rfc3339(at + 5)}))
        .into_iter()
        .collect();
    let mut labels = json!({"app.kubernetes.io/component": "scan", "mirrorfleet.io/project": "videolan",
                            "mirrorfleet.io/scan": if mirror.is_some() { "mirror" } else { "source" }});
    if let Some(m) = mirror {
        labels["mirrorfleet.io/mirror"] = json!(m);
    }
    let name = format!("scan-{}-videolan-{at}", mirror.unwrap_or("source"));
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                         "creationTimestamp": rfc3339(at)},
            "status": {"active": if condition.is_some() { 0 } else { 1 }, "conditions": conditions}}))
        .unwrap(),
    )
}

fn job(mirror: &str, condition: Option<&str>) -> Arc<Job> {
    job_at(Some(mirror), condition, NOW - 100)
}

fn rfc3339(t: i64) -> String {
    mirrorfleet_operator::status::rfc3339(t)
}

/// A scan Job created for (mirror, videolan), owned by the Mirror.
async fn created(mock: &mut Mock, mirror: &str) {
    let (_, body) = expect(mock, Method::POST, &format!("{JOBS}?"), None).await;
    let labels = &body["metadata"]["labels"];
    assert_eq!(
        (
            &labels["mirrorfleet.io/mirror"],
            &labels["mirrorfleet.io/project"]
        ),
        (&json!(mirror), &json!("videolan")),
        "{body}"
    );
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"]),
        (&json!("Mirror"), &json!(mirror))
    );
    let args = &body["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &json!([
            "scan",
            "mirror",
            "--mirror",
            mirror,
            "--project",
            "videolan"
        ])
    );
}

/// The source's Job created for videolan, owned by the Project.
async fn created_source(mock: &mut Mock) {
    let (_, body) = expect(mock, Method::POST, &format!("{JOBS}?"), None).await;
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"]),
        (&json!("Project"), &json!("videolan"))
    );
    let args = &body["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &json!(["scan", "source", "--project", "videolan", "--no-progress"])
    );
}

/// Runs one step on `jobs` while `requests` answers it; the step must finish once they are
/// done (a request they do not take would leave it waiting).
async fn step(
    w: &mut World,
    state: &LoadedState,
    jobs: &[Arc<Job>],
    wanted: &mut BTreeMap<String, i64>,
    requests: impl AsyncFnOnce(&mut Mock),
) -> Step {
    let (scheduler, caches, fleet, mock, reported) = (
        &w.scheduler,
        &w.caches,
        &w.fleet,
        &mut w.mock,
        &mut w.reported,
    );
    let both = async {
        tokio::join!(
            scheduler.step(caches, fleet, state, jobs, (wanted, reported), NOW),
            requests(mock)
        )
    };
    let Ok((step, ())) = tokio::time::timeout(DEADLINE, both).await else {
        let waiting = w.mock.next_request().now_or_never().flatten();
        let request = waiting.map(|(r, _)| format!("{} {}", r.method(), r.uri()));
        panic!(
            "the step did not finish within {DEADLINE:?} of the requests asserted; it waits on {request:?}"
        );
    };
    assert!(step.error.is_none(), "{:?}", step.error);
    step
}

/// What was started, as (mirror, job name, why).
fn started(s: &Step) -> Vec<(Option<&str>, &str, Due)> {
    s.started
        .iter()
        .map(|s: &Started| (s.mirror.as_deref(), s.job.as_str(), s.due))
        .collect()
}

fn scan_of(mirror: &str) -> String {
    mirrorfleet_operator::jobs::job_name(mirror, "videolan", NOW)
}

#[tokio::test]
async fn due_scans_start_within_the_cap() {
    let names = ["m1", "m2", "m3", "m4"];
    let mut w = world(names.iter().map(|m| mirror(m, "acme")).collect(), 2).await;
    // m1 is being scanned; m2 never was; m3 and m4 were, an interval ago.
    w.scanned("m3", NOW - INTERVAL).await;
    w.scanned("m4", NOW - INTERVAL).await;
    let state = w.state().await;
    let mut wanted = BTreeMap::new();
    // One scan runs (m1's; m3's old Job is over and does not count): one more may start.
    let jobs = [job("m1", None), job("m3", Some("Complete"))];
    let s = step(
        &mut w,
        &state,
        &jobs,
        &mut wanted,
        async |mock: &mut Mock| {
            created(mock, "m2").await;
        },
    )
    .await;
    let m2 = scan_of("m2");
    assert_eq!(started(&s), [(Some("m2"), m2.as_str(), Due::First)]);
    assert!(s.capped, "m3 is due too, but two scans run");

    // m2's Job runs now: the cap is reached at once, nothing starts.
    let jobs = [job("m1", None), job("m2", None)];
    let s = step(&mut w, &state, &jobs, &mut wanted, async |_: &mut Mock| {}).await;
    assert!(s.started.is_empty() && s.capped, "{s:?}");

    // m2's scan is done and stored; m1's still runs: m3 starts, m4 waits for the next step.
    w.scanned("m2", NOW - 5).await;
    let state = w.state().await;
    let jobs = [job("m1", None), job("m2", Some("Complete"))];
    let s = step(
        &mut w,
        &state,
        &jobs,
        &mut wanted,
        async |mock: &mut Mock| {
            created(mock, "m3").await;
        },
    )
    .await;
    let m3 = scan_of("m3");
    assert_eq!(started(&s), [(Some("m3"), m3.as_str(), Due::Interval)]);
    assert!(s.capped, "m4 is due too");
}

#[tokio::test]
async fn a_requested_scan_gets_its_job_and_the_annotation_goes() {
    let mut requested = mirror("m1", "acme");
    requested
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(SCAN_REQUESTED.into(), "now".into());
    let mut w = world(vec![requested.clone()], 1).await;
    // Scanned a minute ago: only the request makes it due.
    w.scanned("m1", NOW - 60).await;
    let state = w.state().await;
    let mut wanted = BTreeMap::new();

    // At the cap (any unfinished scan Job counts): nothing starts and the request stays
    // for the next step.
    let jobs = [job("elsewhere", None)];
    let s = step(&mut w, &state, &jobs, &mut wanted, async |_: &mut Mock| {}).await;
    assert!(
        s.started.is_empty() && s.cleared.is_empty() && s.capped,
        "{s:?}"
    );

    let mut answered = serde_json::to_value(&requested).unwrap();
    answered["metadata"]["annotations"] = json!({});
    let s = step(&mut w, &state, &[], &mut wanted, async |mock: &mut Mock| {
        created(mock, "m1").await;
        let seen = expect_seen(
            mock,
            Method::PATCH,
            &format!("{MIRRORS}/m1?"),
            Some(answered),
        )
        .await;
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert_eq!(
            seen.body,
            json!({"metadata": {"annotations": {SCAN_REQUESTED: null}}})
        );
    })
    .await;
    let m1 = scan_of("m1");
    assert_eq!(started(&s), [(Some("m1"), m1.as_str(), Due::Requested)]);
    assert_eq!(s.cleared, ["m1"]);
}

#[tokio::test]
async fn after_an_outage_every_project_is_scanned_again_then_the_checker_is_told() {
    let mut w = world(vec![mirror("m1", "acme")], 4).await;
    w.scanned("m1", NOW - 60).await;
    // m1 answered again 30 s ago, after a long outage: its last scan is older.
    let mut wanted = BTreeMap::from([("m1".to_owned(), NOW - 30)]);
    let state = w.state().await;
    let s = step(&mut w, &state, &[], &mut wanted, async |mock: &mut Mock| {
        created(mock, "m1").await;
    })
    .await;
    let m1 = scan_of("m1");
    assert_eq!(started(&s), [(Some("m1"), m1.as_str(), Due::Requested)]);
    assert!(s.rescanned.is_empty(), "the rescan is not done yet");

    // The scan finished since: no Job, and the checker may let m1's traffic back.
    w.scanned("m1", NOW - 5).await;
    let state = w.state().await;
    let jobs = [job("m1", Some("Complete"))];
    let s = step(&mut w, &state, &jobs, &mut wanted, async |_: &mut Mock| {}).await;
    assert!(s.started.is_empty(), "{s:?}");
    assert_eq!(s.rescanned, ["m1"]);
    assert!(wanted.is_empty(), "m1 is no longer waiting for its rescan");
}

#[tokio::test]
async fn a_request_during_a_running_scan_waits_for_it() {
    let mut requested = mirror("m1", "acme");
    requested
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(SCAN_REQUESTED.into(), "now".into());
    let mut w = world(vec![requested], 4).await;
    let state = w.state().await;
    let mut wanted = BTreeMap::new();
    let jobs = [job("m1", None)];
    let s = step(&mut w, &state, &jobs, &mut wanted, async |_: &mut Mock| {}).await;
    assert!(s.started.is_empty() && s.cleared.is_empty(), "{s:?}");
}

fn upstream_project() -> Project {
    object(
        "Project",
        "videolan",
        json!({"routing": {"pathPrefix": "/videolan/"},
               "source": {"rsync": "rsync://origin.example/videolan/"},
               "scan": {"sourceIntervalMinutes": 2}}),
    )
}

#[tokio::test]
async fn the_source_is_indexed_first_and_mirrors_wait_for_its_index() {
    let mut w = world_of(upstream_project(), vec![mirror("m1", "acme")], 4).await;
    let state = w.state().await;
    let mut wanted = BTreeMap::new();
    let s = step(&mut w, &state, &[], &mut wanted, async |mock: &mut Mock| {
        created_source(mock).await;
    })
    .await;
    let index_job = mirrorfleet_operator::jobs::source_job_name("videolan", NOW);
    assert_eq!(started(&s), [(None, index_job.as_str(), Due::First)]);

    // Indexing runs: nothing else starts, m1 still waits for the index.
    let jobs = [job_at(None, None, NOW - 5)];
    let s = step(&mut w, &state, &jobs, &mut wanted, async |_: &mut Mock| {}).await;
    assert!(s.started.is_empty(), "{s:?}");

    // Indexed 10 s ago: m1's first scan starts; the source is not due for 2 minutes.
    w.indexed().await;
    let state = w.state().await;
    let jobs = [job_at(None, Some("Complete"), NOW - 20)];
    let s = step(
        &mut w,
        &state,
        &jobs,
        &mut wanted,
        async |mock: &mut Mock| {
            created(mock, "m1").await;
        },
    )
    .await;
    let m1 = scan_of("m1");
    assert_eq!(started(&s), [(Some("m1"), m1.as_str(), Due::First)]);
}

#[tokio::test]
async fn failing_scans_are_retried_after_a_wait_that_doubles() {
    let mut w = world(vec![mirror("m1", "acme")], 4).await;
    let state = w.state().await;
    let mut wanted = BTreeMap::new();
    // Two failures in a row, the last one 50 s ago (it failed 5 s after it started): the
    // next attempt waits 60 s after it.
    let failed = [
        job_at(Some("m1"), Some("Failed"), NOW - 200),
        job_at(Some("m1"), Some("Failed"), NOW - 55),
    ];
    let s = step(
        &mut w,
        &state,
        &failed,
        &mut wanted,
        async |_: &mut Mock| {},
    )
    .await;
    assert!(s.started.is_empty(), "{s:?}");

    let failed = [
        job_at(Some("m1"), Some("Failed"), NOW - 300),
        job_at(Some("m1"), Some("Failed"), NOW - 70),
    ];
    let s = step(
        &mut w,
        &state,
        &failed,
        &mut wanted,
        async |mock: &mut Mock| {
            created(mock, "m1").await;
        },
    )
    .await;
    let m1 = scan_of("m1");
    assert_eq!(started(&s), [(Some("m1"), m1.as_str(), Due::Retry)]);
}

#[tokio::test]
async fn a_reported_sync_gets_its_scan_at_once_once() {
    let mut w = world(vec![mirror("m1", "acme"), mirror("m2", "acme")], 4).await;
    // Both scanned a minute ago: nothing is due but what a report asks for.
    w.scanned("m1", NOW - 60).await;
    w.scanned("m2", NOW - 60).await;
    let state = w.state().await;
    let mut wanted = BTreeMap::new();
    w.reported.insert(("m2".into(), "videolan".into()));
    let s = step(&mut w, &state, &[], &mut wanted, async |mock: &mut Mock| {
        created(mock, "m2").await;
    })
    .await;
    let m2 = scan_of("m2");
    assert_eq!(started(&s), [(Some("m2"), m2.as_str(), Due::Requested)]);
    assert!(w.reported.is_empty(), "served: {:?}", w.reported);
    // Served once: the next step starts nothing.
    let s = step(&mut w, &state, &[], &mut wanted, async |_: &mut Mock| {}).await;
    assert!(s.started.is_empty(), "{s:?}");
}
