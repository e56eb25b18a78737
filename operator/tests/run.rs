//! The operator's wiring ([`mirrorfleet_operator::run`]): the four controllers run against a
//! fake API server (on tower-test's mock) with a real Redis store. A watch event reaches a
//! reconcile and the object gets its status; a health verdict in the store reconciles that
//! mirror again at once, and no other; a mirror back from an outage is sent to be rescanned.
//!
//! Requests of different objects come in no guaranteed order: each is waited for by what
//! it is ([`FakeApi::next`]); only one object's own requests are in order (its status, then
//! its Events).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use http::Method;
use mirrorfleet_crds::state::{Family, HealthState, MirrorHealth, ProbeScheme};
use mirrorfleet_health::checker::Key;
use mirrorfleet_health::{Change, Transition};
use mirrorfleet_operator::Context;
use mirrorfleet_operator::metrics::Metrics;
use mirrorfleet_operator::run::{Controllers, follow_store, forward_transitions};
use mirrorfleet_operator::triggers::Triggers;
use mirrorfleet_store::{RedisStore, StateWriter};
use mirrorfleet_testkit::Redis;
use serde_json::{Value, json};
use support::*;
use tokio::sync::mpsc;

const BASE: &str = "/apis/mirrorfleet.io/v1alpha1/namespaces/default";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// The leader's controllers on `api`, as `run` wires them, following the store.
struct Leader {
    api: FakeApi,
    store: RedisStore,
    metrics: Arc<Metrics>,
    _controllers: KillOnDrop,
    _redis: Redis,
}

struct KillOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn leader(objects: Vec<(&str, Value)>) -> Leader {
    let (redis, store) = redis_store().await;
    let api = FakeApi::start(objects);
    let controllers = Controllers::new(&api.client, "default");
    let (triggers, streams) = Triggers::new("default");
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(
        Context::new(
            api.client.clone(),
            "default",
            controllers.caches(),
            store.clone(),
            metrics.clone(),
            now,
        )
        .with_triggers(triggers.clone()),
    );
    let tasks = vec![
        tokio::spawn(follow_store(
            mirrorfleet_store::follow(store.clone(), std::time::Duration::from_secs(300)).await,
            ctx.clone(),
            triggers,
        )),
        tokio::spawn(controllers.run(ctx, streams)),
    ];
    Leader {
        api,
        store,
        metrics,
        _controllers: KillOnDrop(tasks),
        _redis: redis,
    }
}

fn json_of<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    let all = status["conditions"].as_array().unwrap();
    all.iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// The status applied to `plural/name`: server-side, on the status subresource, as ours.
async fn status_applied(api: &mut FakeApi, plural: &str, name: &str) -> Value {
    let path = format!("{BASE}/{plural}/{name}/status");
    let seen = api
        .next(&format!("PATCH {path}"), request(Method::PATCH, &path))
        .await;
    assert_eq!(seen.content_type, "application/apply-patch+yaml", "{path}");
    assert!(
        seen.query.contains("fieldManager=mirrorfleet") && seen.query.contains("force=true"),
        "{}",
        seen.uri
    );
    assert_eq!(seen.body["apiVersion"], "mirrorfleet.io/v1alpha1");
    seen.body["status"].clone()
}

/// The Event about `name` with `reason`, as a new Event or a repeated one's series.
async fn event(api: &mut FakeApi, name: &str, reason: &str) -> Value {
    let (name, reason) = (name.to_owned(), reason.to_owned());
    let what = format!("a {reason} Event about {name}");
    let seen = api
        .next(&what, move |s| {
            s.path.starts_with(EVENTS)
                && s.body["regarding"]["name"] == name.as_str()
                && s.body["reason"] == reason.as_str()
        })
        .await;
    seen.body
}

#[tokio::test]
async fn a_watched_mirror_is_reconciled_and_gets_its_status() {
    let mut l = leader(vec![
        ("projects", json_of(&project())),
        ("sponsors", json_of(&sponsor())),
    ])
    .await;
    // The listed objects are reconciled once the caches are filled: a project's first
    // reconcile writes its status too.
    let p = status_applied(&mut l.api, "projects", "videolan").await;
    assert_eq!(condition(&p, "Ready")["status"], "True");
    // Its source is a local tree and no volume holds it: no Job can index it, and it says so.
    let scanned = condition(&p, "Scanned");
    assert_eq!(
        (&scanned["status"], &scanned["reason"]),
        (&json!("False"), &json!("CannotIndex"))
    );
    assert!(
        scanned["message"]
            .as_str()
            .unwrap()
            .contains("spec.source.volumeClaim"),
        "{scanned}"
    );
    let s = status_applied(&mut l.api, "sponsors", "acme").await;
    assert_eq!(condition(&s, "Ready")["status"], "True");

    // A mirror appears on the watch: it is reconciled, compiled and gets its status.
    l.api
        .send("mirrors", "ADDED", json_of(&mirror("m1", "acme")));
    let m = status_applied(&mut l.api, "mirrors", "m1").await;
    let ready = condition(&m, "Ready");
    assert_eq!(
        (
            &ready["status"],
            &ready["reason"],
            &ready["observedGeneration"]
        ),
        (&json!("True"), &json!("Compiled"), &json!(1))
    );
    assert_eq!(condition(&m, "Healthy")["reason"], "NotProbedYet");
    assert_eq!(m["healthSummary"], "Unknown");
    let e = event(&mut l.api, "m1", "ReadyTrue").await;
    assert_eq!(
        (&e["type"], &e["action"]),
        (&json!("Normal"), &json!("Reconcile"))
    );
}

#[tokio::test]
async fn a_health_change_reconciles_that_mirror_alone_at_once() {
    let mut l = leader(vec![
        ("projects", json_of(&project())),
        ("sponsors", json_of(&sponsor())),
        ("mirrors", json_of(&mirror("m1", "acme"))),
        ("mirrors", json_of(&mirror("m2", "acme"))),
    ])
    .await;
    let first = status_applied(&mut l.api, "mirrors", "m1").await;
    assert_eq!(condition(&first, "Healthy")["status"], "Unknown");
    event(&mut l.api, "m1", "ReadyTrue").await;
    status_applied(&mut l.api, "mirrors", "m2").await;
    event(&mut l.api, "m2", "ReadyTrue").await;
    let before = l.metrics.reconciles.get("Mirror");

    // The checker stores its verdict. Nothing else happens to m1 (no watch event, and no
    // object is requeued blindly): a second status within the deadline is the store's
    // doing.
    let down = MirrorHealth {
        mirror: "m1".into(),
        entries: vec![HealthState {
            scheme: ProbeScheme::Https,
            family: Family::Ipv4,
            up: false,
            reason: "ConnectRefused".into(),
            since: NOW,
        }],
    };
    StateWriter::new(l.store.clone())
        .write_health(&down)
        .await
        .unwrap();
    let again = status_applied(&mut l.api, "mirrors", "m1").await;
    let healthy = condition(&again, "Healthy");
    assert_eq!(
        (&healthy["status"], &healthy["reason"]),
        (&json!("False"), &json!("ConnectRefused"))
    );
    assert_eq!(again["healthSummary"], "Down");
    let e = event(&mut l.api, "m1", "HealthyFalse").await;
    assert_eq!(e["type"], "Warning");
    // m1 alone was reconciled for it, not every mirror.
    assert_eq!(l.metrics.reconciles.get("Mirror"), before + 1);
}

/// The next message on `rx`, within [`DEADLINE`].
async fn received<T>(what: &str, rx: &mut mpsc::Receiver<T>) -> T {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("the channel closed before {what}"),
        Err(_) => panic!("no {what} within {DEADLINE:?}"),
    }
}

#[tokio::test]
async fn a_mirror_back_from_a_long_outage_is_rescanned() {
    let (transitions, rx) = mpsc::channel(4);
    let (rescan_tx, mut rescan) = mpsc::channel(4);
    let metrics = Arc::new(Metrics::default());
    let forwarding = tokio::spawn(forward_transitions(rx, rescan_tx, metrics.clone()));
    let t = |mirror: &str, change| Transition {
        key: Key {
            mirror: mirror.into(),
            scheme: ProbeScheme::Http,
            family: Family::Ipv6,
        },
        change,
        message: String::new(),
    };
    transitions.send(t("m1", Change::Up)).await.unwrap();
    transitions
        .send(t("m2", Change::RescanFirst))
        .await
        .unwrap();
    assert_eq!(received("a rescan of m2", &mut rescan).await, "m2");
    // Up asked for no rescan: m2's was the first.
    assert!(rescan.try_recv().is_err(), "one rescan, of m2");
    // Each transition is counted by what it changed to.
    assert_eq!(
        (
            metrics.health_transitions.get("up"),
            metrics.health_transitions.get("rescan_first"),
            metrics.health_transitions.get("down"),
        ),
        (1, 1, 0)
    );
    drop(transitions);
    tokio::time::timeout(DEADLINE, forwarding)
        .await
        .expect("forwarding ends with the checker")
        .unwrap();
}
