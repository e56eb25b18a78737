//! The reconcilers against a mocked Kubernetes API (tower-test, as kube-rs/controller-rs
//! does) and a real Redis: each scenario asserts the exact requests made — a status applied
//! server-side on the status subresource, the Events published — and what reaches the store.
//! Also the Lease election against the mock.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use kube::{Api, Client};
use mirrorfleet_crds::v1alpha1::{Mirror, RegionRule, Sponsor};
use mirrorfleet_operator::lease::Elector;
use mirrorfleet_operator::metrics::Metrics;
use mirrorfleet_operator::{self, Caches, Context, reconcile};
use mirrorfleet_store::{RedisStore, StateReader};
use mirrorfleet_testkit::*;
use serde_json::{Value, json};
use support::*;
use tower_test::mock::pair;

struct World {
    ctx: Arc<Context<RedisStore>>,
    mock: Mock,
    reader: StateReader<RedisStore>,
    mirrors: reflector::store::Writer<Mirror>,
    _redis: Redis,
}

async fn world(mirrors: Vec<Mirror>, sponsors: Vec<Sponsor>) -> World {
    let (redis, store) = redis_store().await;
    let (service, mock) = pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (mirrors_reader, mirrors_writer) = cache(mirrors);
    let caches = Caches {
        projects: cache(vec![project()]).0,
        mirrors: mirrors_reader,
        sponsors: cache(sponsors).0,
        rules: cache::<RegionRule>(vec![]).0,
        jobs: None,
    };
    let ctx = Arc::new(Context::new(
        client,
        "default",
        caches,
        store.clone(),
        Arc::new(Metrics::default()),
        now,
    ));
    World {
        ctx,
        mock,
        reader: StateReader::new(store),
        mirrors: mirrors_writer,
        _redis: redis,
    }
}

/// The names of the mirrors in the fleet the operator wrote to the store.
async fn fleet_mirrors(w: &World) -> Vec<String> {
    let (state, _) = w.reader.load().await.unwrap();
    state
        .fleet
        .unwrap()
        .mirrors
        .iter()
        .map(|m| m.name.clone())
        .collect()
}

/// The reconcile's result, within 10 s.
async fn done<T: std::fmt::Debug, E: std::fmt::Debug>(
    task: tokio::task::JoinHandle<Result<T, E>>,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the reconcile finishes")
        .unwrap()
        .unwrap()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

#[tokio::test]
async fn a_valid_mirror_is_compiled_and_gets_ready() {
    let m = mirror("m1", "acme");
    let mut w = world(vec![m.clone()], vec![sponsor()]).await;
    let task = tokio::spawn(reconcile(Arc::new(m.clone()), w.ctx.clone()));
    let mut applied = serde_json::to_value(&m).unwrap();
    let (uri, body) = expect(
        &mut w.mock,
        Method::PATCH,
        "/apis/mirrorfleet.io/v1alpha1/namespaces/default/mirrors/m1/status?",
        Some(serde_json::to_value(&m).unwrap()),
    )
    .await;
    assert!(
        uri.contains("fieldManager=mirrorfleet") && uri.contains("force=true"),
        "{uri}"
    );
    assert_eq!(body["kind"], "Mirror");
    assert_eq!(body["apiVersion"], "mirrorfleet.io/v1alpha1");
    let status = &body["status"];
    let ready = condition(status, "Ready");
    assert_eq!(
        (
            &ready["status"],
            &ready["reason"],
            &ready["observedGeneration"]
        ),
        (&json!("True"), &json!("Compiled"), &json!(1))
    );
    assert_eq!(ready["lastTransitionTime"], "2026-11-22T01:02:00Z");
    assert_eq!(condition(status, "Healthy")["status"], "Unknown");
    assert_eq!(condition(status, "Scanned")["reason"], "NotScannedYet");
    assert_eq!(status["healthSummary"], "Unknown");
    applied["status"] = status.clone();
    // The Event is answered with its own body (a valid Event).
    let (_, event) = expect(
        &mut w.mock,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events?",
        None,
    )
    .await;
    assert_eq!(
        (
            &event["reason"],
            &event["type"],
            &event["regarding"]["name"]
        ),
        (&json!("ReadyTrue"), &json!("Normal"), &json!("m1"))
    );
    let action = done(task).await;
    assert_eq!(
        action,
        kube::runtime::controller::Action::await_change(),
        "nothing is requeued blindly"
    );
    let (state, _) = w.reader.load().await.unwrap();
    let fleet = state.fleet.unwrap();
    assert_eq!(fleet.mirrors.len(), 1);
    assert_eq!(fleet.mirrors[0].name, "m1");
    assert_eq!(fleet.projects[0].name, "videolan");

    // Reconciled again with the status it now has: nothing to write, no request at all.
    let again: Mirror = serde_json::from_value(applied).unwrap();
    let quiet = tokio::time::timeout(
        Duration::from_secs(5),
        reconcile(Arc::new(again), w.ctx.clone()),
    )
    .await;
    assert!(quiet.is_ok(), "an unchanged world makes no API request");
    assert_eq!(
        w.ctx.metrics.fleet_writes.get(),
        1,
        "the fleet was written once"
    );
}

#[tokio::test]
async fn an_invalid_mirror_says_why_and_stays_out_of_the_state() {
    let good = mirror("m1", "acme");
    let bad = mirror("m2", "nobody");
    let mut w = world(vec![good, bad.clone()], vec![sponsor()]).await;
    let task = tokio::spawn(reconcile(Arc::new(bad.clone()), w.ctx.clone()));
    let (_, body) = expect(
        &mut w.mock,
        Method::PATCH,
        "/apis/mirrorfleet.io/v1alpha1/namespaces/default/mirrors/m2/status?",
        Some(serde_json::to_value(&bad).unwrap()),
    )
    .await;
    let ready = condition(&body["status"], "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("Invalid"))
    );
    // Word for word what `mirrorfleet validate` prints for the same resource.
    let manifest = |kind: &str, name: &str, spec: Value| {
        serde_json::to_string_pretty(&json!({
            "apiVersion": "mirrorfleet.io/v1alpha1", "kind": kind,
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    };
    let yaml = manifest("Mirror", "m2", serde_json::to_value(&bad.spec).unwrap());
    let sponsor_yaml = manifest(
        "Sponsor",
        "acme",
        serde_json::to_value(sponsor().spec).unwrap(),
    );
    let project_yaml = manifest(
        "Project",
        "videolan",
        serde_json::to_value(project().spec).unwrap(),
    );
    let cli = mirrorfleet_validate::validate(
        &[
            mirrorfleet_validate::SourceFile {
                name: "m2.yaml",
                text: &yaml,
            },
            mirrorfleet_validate::SourceFile {
                name: "s.yaml",
                text: &sponsor_yaml,
            },
            mirrorfleet_validate::SourceFile {
                name: "p.yaml",
                text: &project_yaml,
            },
        ],
        Default::default(),
    );
    let p = &cli.problems[0];
    assert_eq!(ready["message"], format!("{}: {}", p.path, p.message));
    assert!(p.message.contains("nobody"), "{}", p.message);
    let (_, event) = expect(
        &mut w.mock,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events?",
        None,
    )
    .await;
    assert_eq!(
        (&event["reason"], &event["type"]),
        (&json!("ReadyFalse"), &json!("Warning"))
    );
    done(task).await;
    assert_eq!(
        fleet_mirrors(&w).await,
        ["m1"],
        "the valid mirror applies, the invalid one does not"
    );
}

#[tokio::test]
async fn a_deleted_mirror_leaves_the_state() {
    let (m1, m2) = (mirror("m1", "acme"), mirror("m2", "acme"));
    let mut w = world(vec![m1.clone(), m2.clone()], vec![sponsor()]).await;
    let task = tokio::spawn(reconcile(Arc::new(sponsor()), w.ctx.clone()));
    let (_, body) = expect(
        &mut w.mock,
        Method::PATCH,
        "/apis/mirrorfleet.io/v1alpha1/namespaces/default/sponsors/acme/status?",
        Some(serde_json::to_value(sponsor()).unwrap()),
    )
    .await;
    assert_eq!(body["status"]["mirrors"], 2);
    expect(&mut w.mock, Method::POST, "/apis/events.k8s.io/v1/", None).await;
    done(task).await;
    let mut applied = serde_json::to_value(sponsor()).unwrap();
    applied["status"] = body["status"].clone();
    let s: Sponsor = serde_json::from_value(applied).unwrap();
    // m2 is deleted: the next reconcile of anything rewrites the fleet without it (and, Ready
    // being unchanged, publishes no Event).
    w.mirrors.apply_watcher_event(&Event::Delete(m2));
    let task = tokio::spawn(reconcile(Arc::new(s), w.ctx.clone()));
    let (_, body) = expect(
        &mut w.mock,
        Method::PATCH,
        "/apis/mirrorfleet.io/v1alpha1/namespaces/default/sponsors/acme/status?",
        Some(serde_json::to_value(sponsor()).unwrap()),
    )
    .await;
    assert_eq!(body["status"]["mirrors"], 1);
    done(task).await;
    assert_eq!(fleet_mirrors(&w).await, ["m1"]);
}

fn lease_json(holder: &str, renewed: &str, version: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "mirrorfleet-operator", "namespace": "default", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 3}
    })
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

#[tokio::test]
async fn the_lease_is_created_then_waited_for_then_taken_over() {
    let (service, mut mock) = pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let api: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "default");
    let elector = Elector::new(api, "mirrorfleet-operator", "pod-a");
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

    // No lease: GET 404, then POST creating it held by us.
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_acquire().await });
    let (req, send) = mirrorfleet_testkit::within(
        "the next API request",
        Duration::from_secs(10),
        mock.next_request(),
    )
    .await
    .expect("the service is open");
    assert_eq!(
        (req.method(), req.uri().path()),
        (&Method::GET, &*format!("{path}/mirrorfleet-operator"))
    );
    send.send_response(
        Response::builder()
            .status(404)
            .body(Body::from(serde_json::to_vec(&not_found()).unwrap()))
            .unwrap(),
    );
    let (_, created) = expect(&mut mock, Method::POST, path, None).await;
    assert_eq!(created["spec"]["holderIdentity"], "pod-a");
    assert_eq!(created["spec"]["leaseTransitions"], 0);
    assert!(done(task).await, "created: we lead");

    // Held by another replica, renewed just now: no write, not ours.
    let fresh = k8s_openapi::jiff::Timestamp::now().to_string();
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_acquire().await });
    expect(
        &mut mock,
        Method::GET,
        path,
        Some(lease_json("pod-b", &fresh, "7")),
    )
    .await;
    assert!(!done(task).await, "pod-b holds it");

    // Held by another replica silent for a minute: replaced (with its resourceVersion).
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_acquire().await });
    expect(
        &mut mock,
        Method::GET,
        path,
        Some(lease_json("pod-b", "2026-11-22T03:00:00Z", "8")),
    )
    .await;
    let (_, replaced) = expect(
        &mut mock,
        Method::PUT,
        &format!("{path}/mirrorfleet-operator"),
        None,
    )
    .await;
    assert_eq!(replaced["metadata"]["resourceVersion"], "8");
    assert_eq!(replaced["spec"]["holderIdentity"], "pod-a");
    assert_eq!(replaced["spec"]["leaseTransitions"], 4);
    assert!(done(task).await, "taken over");

    // Two replicas racing: our replace loses with 409 — not ours, no error.
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_acquire().await });
    expect(
        &mut mock,
        Method::GET,
        path,
        Some(lease_json("pod-b", "2026-11-22T03:00:00Z", "9")),
    )
    .await;
    let (req, send) = mirrorfleet_testkit::within(
        "the next API request",
        Duration::from_secs(10),
        mock.next_request(),
    )
    .await
    .expect("the service is open");
    assert_eq!(req.method(), Method::PUT);
    send.send_response(
        Response::builder()
            .status(409)
            .body(Body::from(
                serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"})).unwrap(),
            ))
            .unwrap(),
    );
    assert!(!done(task).await, "lost the race");
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "mirrorfleet.io/v1alpha1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

#[tokio::test]
async fn the_git_sync_applies_a_commit_and_prunes_what_it_dropped() {
    use mirrorfleet_operator::gitsync::{self, FROM_GIT};
    let text = "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: videolan\nspec:\n  routing:\n    pathPrefix: /videolan/\n  source:\n    local: /srv/videolan\n---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: acme\nspec:\n  displayName: Acme\n";
    let outcome = mirrorfleet_validate::validate(
        &[mirrorfleet_validate::SourceFile {
            name: "fleet.yaml",
            text,
        }],
        Default::default(),
    );
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let (service, mut mock) = pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let task = tokio::spawn(async move { gitsync::apply(&client, "fleet", &outcome.fleet).await });
    let base = "/apis/mirrorfleet.io/v1alpha1/namespaces/fleet";
    for (kind, plural, items) in [
        ("Project", "projects", vec![]),
        ("Sponsor", "sponsors", vec![]),
        // A mirror applied by an earlier commit, gone from this one.
        (
            "Mirror",
            "mirrors",
            vec![serde_json::to_value(mirror("old", "acme")).unwrap()],
        ),
        ("RegionRule", "regionrules", vec![]),
    ] {
        let (uri, _) = expect(
            &mut mock,
            Method::GET,
            &format!("{base}/{plural}?"),
            Some(list(kind, items)),
        )
        .await;
        assert!(
            uri.contains("labelSelector=mirrorfleet.io%2Ffrom-git%3Dtrue"),
            "{uri}"
        );
    }
    let (uri, body) = expect(
        &mut mock,
        Method::PATCH,
        &format!("{base}/projects/videolan?"),
        Some(serde_json::to_value(project()).unwrap()),
    )
    .await;
    assert!(
        uri.contains("fieldManager=mirrorfleet-git") && uri.contains("force=true"),
        "{uri}"
    );
    assert_eq!(body["metadata"]["labels"][FROM_GIT], "true");
    assert_eq!(body["metadata"].get("namespace"), None);
    assert_eq!(body["spec"]["routing"]["pathPrefix"], "/videolan/");
    expect(
        &mut mock,
        Method::PATCH,
        &format!("{base}/sponsors/acme?"),
        Some(serde_json::to_value(sponsor()).unwrap()),
    )
    .await;
    expect(
        &mut mock,
        Method::DELETE,
        &format!("{base}/mirrors/old"),
        Some(serde_json::to_value(mirror("old", "acme")).unwrap()),
    )
    .await;
    let plan = done(task).await;
    assert_eq!(plan.delete, [("Mirror".to_owned(), "old".to_owned())]);
}

#[test]
fn a_failed_scan_job_reaches_the_mirror_status_with_its_next_attempt() {
    use mirrorfleet_operator::assess::{Objects, assess};
    use mirrorfleet_operator::{jobs, status};
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "scan-m1-videolan-6a3f", "namespace": "default",
                     "labels": {"mirrorfleet.io/mirror": "m1", "mirrorfleet.io/project": "videolan"}},
        "status": {"startTime": "2026-11-22T01:00:00Z", "failed": 2, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
             "lastTransitionTime": "2026-11-22T01:00:10Z"}]}
    }))
    .unwrap();
    let other: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "scan-m2-videolan-1", "labels": {"mirrorfleet.io/mirror": "m2", "mirrorfleet.io/project": "videolan"}},
        "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    }))
    .unwrap();
    let history = jobs::history(&[Arc::new(job), Arc::new(other)], "videolan", Some("m1"));
    assert_eq!(history.failures, 1);
    let retry_at = history.retry_at(3600);
    assert_eq!(retry_at, Some(1_795_309_210 + jobs::RETRY_FIRST_SECONDS));
    let scans = BTreeMap::from([(
        "videolan".to_owned(),
        status::ScanJobs { history, retry_at },
    )]);
    let a = assess(&Objects {
        projects: vec![Arc::new(project())],
        mirrors: vec![Arc::new(mirror("m1", "acme"))],
        sponsors: vec![Arc::new(sponsor())],
        rules: vec![],
    });
    let s = status::mirror(
        &a,
        "m1",
        Some(1),
        None,
        &Default::default(),
        &scans,
        true,
        NOW,
    );
    let scanned = s.conditions.iter().find(|c| c.type_ == "Scanned").unwrap();
    assert_eq!(scanned.reason, "ScanFailed");
    assert_eq!(
        scanned.message,
        "videolan: Job scan-m1-videolan-6a3f failed (BackoffLimitExceeded: Job has reached the \
         specified backoff limit); 1 failure(s) in a row, next attempt at 2026-11-22T01:00:40Z"
    );
    // The country the spec gives is the one shown (`kubectl get` prints it).
    let location = s.location.unwrap();
    assert_eq!(
        (location.country.as_deref(), location.source.as_deref()),
        (Some("FR"), Some("Spec"))
    );

    let fine = status::mirror(
        &a,
        "m1",
        Some(1),
        None,
        &Default::default(),
        &BTreeMap::new(),
        true,
        NOW,
    );
    let scanned = fine
        .conditions
        .iter()
        .find(|c| c.type_ == "Scanned")
        .unwrap();
    assert_eq!(
        (scanned.reason.as_str(), scanned.message.as_str()),
        (
            "NotScannedYet",
            "0 of 1 project(s) scanned; videolan: waiting for the source's index"
        )
    );
    let synced = fine
        .conditions
        .iter()
        .find(|c| c.type_ == "Synced")
        .unwrap();
    assert_eq!(synced.reason, "NotScannedYet");
}
