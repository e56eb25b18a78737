//! The scan scheduler's step ([`Scheduler::step`]) against tower-test's mock, the scans it
//! decides from read out of a real Redis store: which Jobs it creates for which (mirror,
//! project) and why, the cap on concurrent scans, the `scan-requested` annotation served and
//! removed, the rescan after an outage. A step makes its requests one after the other (each
//! awaited), so they are asserted in order; a step that finishes made no other request.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::FutureExt;
use http::Method;
use kube::runtime::reflector;
use mirrorfleet_crds::state::{Availability, FleetState};
use mirrorfleet_crds::v1alpha1::Mirror;
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
    mirrors: reflector::Store<Mirror>,
    fleet: FleetState,
    store: RedisStore,
    _redis: mirrorfleet_testkit::Redis,
}

async fn world(mirrors: Vec<Mirror>, max_concurrent: usize) -> World {
    let (redis, store) = redis_store().await;
    let (service, mock) = pair();
    let client = kube::Client::new(service, "default");
    let settings = JobSettings {
        max_concurrent,
        ..JobSettings::default()
    };
    let objects = Objects {
        projects: vec![Arc::new(project())],
        mirrors: mirrors.iter().cloned().map(Arc::new).collect(),
        sponsors: vec![Arc::new(sponsor())],
        rules: vec![],
    };
    let fleet = assess(&objects).fleet;
    assert_eq!(fleet.mirrors.len(), mirrors.len(), "every mirror is valid");
    World {
        scheduler: Scheduler::new(client, "default", settings, INTERVAL),
        mock,
        mirrors: cache(mirrors).0,
        fleet,
        store,
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

    /// The state as the scheduler's loop reads it.
    async fn state(&self) -> LoadedState {
        StateReader::new(self.store.clone()).load().await.unwrap().0
    }
}

/// A scan Job of (mirror, videolan), running or finished with `condition`.
fn job(mirror: &str, condition: Option<&str>) -> Value {
    let conditions: Vec<Value> = condition
        .map(|c| json!({"type": c, "status": "True"}))
        .into_iter()
        .collect();
    json!({"metadata": {"name": format!("scan-{mirror}-videolan-1"), "namespace": "default",
                        "labels": {"app.kubernetes.io/component": "scan",
                                   "mirrorfleet.io/mirror": mirror, "mirrorfleet.io/project": "videolan"}},
           "status": {"active": if condition.is_some() { 0 } else { 1 }, "conditions": conditions}})
}

fn job_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// The scan Jobs listed, answered with `items`.
async fn listed(mock: &mut Mock, items: Vec<Value>) {
    let (uri, _) = expect(
        mock,
        Method::GET,
        &format!("{JOBS}?"),
        Some(job_list(items)),
    )
    .await;
    assert!(
        uri.contains("labelSelector=app.kubernetes.io%2Fcomponent%3Dscan"),
        "{uri}"
    );
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

/// Runs one step while `requests` answers it; the step must finish once they are done (a
/// request they do not take would leave it waiting).
async fn step(
    w: &mut World,
    state: &LoadedState,
    wanted: &mut BTreeMap<String, i64>,
    requests: impl AsyncFnOnce(&mut Mock),
) -> Step {
    let (scheduler, mirrors, fleet, mock) = (&w.scheduler, &w.mirrors, &w.fleet, &mut w.mock);
    let both = async {
        tokio::join!(
            scheduler.step(mirrors, fleet, state, wanted, NOW),
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

fn started(mirror: &str, due: Due) -> Started {
    Started {
        mirror: mirror.into(),
        project: "videolan".into(),
        job: mirrorfleet_operator::jobs::job_name(mirror, "videolan", NOW),
        due,
    }
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
    let s = step(&mut w, &state, &mut wanted, async |mock: &mut Mock| {
        listed(mock, vec![job("m1", None), job("m3", Some("Complete"))]).await;
        created(mock, "m2").await;
    })
    .await;
    assert_eq!(s.started, [started("m2", Due::First)]);
    assert!(s.capped, "m3 is due too, but two scans run");

    // m2's Job runs now: the cap is reached at once, nothing starts.
    let s = step(&mut w, &state, &mut wanted, async |mock: &mut Mock| {
        listed(mock, vec![job("m1", None), job("m2", None)]).await;
    })
    .await;
    assert!(s.started.is_empty() && s.capped, "{s:?}");

    // m2's scan is done and stored; m1's still runs: m3 starts, m4 waits for the next step.
    w.scanned("m2", NOW - 5).await;
    let state = w.state().await;
    let s = step(&mut w, &state, &mut wanted, async |mock: &mut Mock| {
        listed(mock, vec![job("m1", None), job("m2", Some("Complete"))]).await;
        created(mock, "m3").await;
    })
    .await;
    assert_eq!(s.started, [started("m3", Due::Interval)]);
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

    // At the cap (another namespace's scan... any unfinished scan Job counts): nothing
    // starts and the request stays for the next step.
    let s = step(&mut w, &state, &mut wanted, async |mock: &mut Mock| {
        listed(mock, vec![job("elsewhere", None)]).await;
    })
    .await;
    assert!(
        s.started.is_empty() && s.cleared.is_empty() && s.capped,
        "{s:?}"
    );

    let mut answered = serde_json::to_value(&requested).unwrap();
    answered["metadata"]["annotations"] = json!({});
    let s = step(&mut w, &state, &mut wanted, async |mock: &mut Mock| {
        listed(mock, vec![]).await;
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
    assert_eq!(s.started, [started("m1", Due::Requested)]);
    assert_eq!(s.cleared, ["m1"]);
}

#[tokio::test]
async fn after_an_outage_every_project_is_scanned_again_then_the_checker_is_told() {
    let mut w = world(vec![mirror("m1", "acme")], 4).await;
    w.scanned("m1", NOW - 60).await;
    // m1 answered again 30 s ago, after a long outage: its last scan is older.
    let mut wanted = BTreeMap::from([("m1".to_owned(), NOW - 30)]);
    let state = w.state().await;
    let s = step(&mut w, &state, &mut wanted, async |mock: &mut Mock| {
        listed(mock, vec![]).await;
        created(mock, "m1").await;
    })
    .await;
    assert_eq!(s.started, [started("m1", Due::Requested)]);
    assert!(s.rescanned.is_empty(), "the rescan is not done yet");

    // The scan finished since: no Job, and the checker may let m1's traffic back.
    w.scanned("m1", NOW - 5).await;
    let state = w.state().await;
    let s = step(&mut w, &state, &mut wanted, async |mock: &mut Mock| {
        listed(mock, vec![job("m1", Some("Complete"))]).await;
    })
    .await;
    assert!(s.started.is_empty(), "{s:?}");
    assert_eq!(s.rescanned, ["m1"]);
    assert!(wanted.is_empty(), "m1 is no longer waiting for its rescan");
}
