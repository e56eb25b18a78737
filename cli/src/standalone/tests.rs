//! All the tasks together, as `mirrorfleet standalone` runs them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mirrorfleet_testkit::{rsync_daemon, wait_for, world_readable_tempdir, write_tree};

use super::testing::{self, Staller, TIMEOUT};
use super::{Schedule, Settings, SourceIntervals, maintain};
use mirrorfleet_crds::state::{MirrorState, ProjectState};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_source_holds_up_neither_the_follower_nor_mirror_scans() {
    let root = world_readable_tempdir();
    let t0 = 1_795_309_320;
    write_tree(&root.path().join("tiny"), &[("tiny.iso", b"tiny", t0)]);
    write_tree(&root.path().join("mirror"), &[("tiny.iso", b"tiny", t0)]);
    let daemon = rsync_daemon(&[("mirror", &root.path().join("mirror"))]);
    // The slow project's upstream accepts the scan's connection and never answers.
    let upstream = Staller::start();
    let manifests = |fallback: &str| {
        [
            testing::project(
                "tiny",
                &format!("local: {}", root.path().join("tiny").display()),
                &format!("  fallbacks:\n    - url: {fallback}\n"),
            ),
            testing::project(
                "slow",
                &format!("rsync: rsync://127.0.0.1:{}/slow/", upstream.port),
                "",
            ),
            testing::SPONSOR.into(),
            testing::mirror(
                "m",
                &[
                    (
                        "tiny",
                        &format!("rsync://127.0.0.1:{}/mirror/", daemon.port),
                    ),
                    (
                        "slow",
                        &format!("rsync://127.0.0.1:{}/mirror/", daemon.port),
                    ),
                ],
            ),
        ]
        .concat()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    testing::write_atomically(&file, manifests("https://a.example/tiny/"));
    let t = testing::store().await;
    let settings = Settings {
        manifests: dir.path().to_path_buf(),
        git: None,
        locator: None,
        reload_every: Duration::from_millis(100),
        source_every: HOUR,
        mirror_every: HOUR,
        recheck_every: Duration::from_secs(5),
        push: None,
    };
    let running = maintain(settings, t.store.clone()).await.unwrap();

    wait_for("the slow source's scan to connect", TIMEOUT, || {
        let n = upstream.accepted();
        std::future::ready(if n > 0 {
            Ok(())
        } else {
            Err("no connection".into())
        })
    })
    .await;
    // Meanwhile the tiny project is indexed and the mirror's copy of it scanned…
    t.until("the tiny project indexed and its mirror scanned", |s| {
        let indexed = s.indexes.contains_key("tiny");
        let scanned = s.availability.contains_key(&("m".into(), "tiny".into()));
        if indexed && scanned {
            Ok(())
        } else {
            Err(format!("indexed {indexed}, scanned {scanned}"))
        }
    })
    .await;
    // …and a change to the manifests reaches the store.
    testing::write_atomically(&file, manifests("https://b.example/tiny/"));
    t.until("the changed manifests in the store", |s| {
        let fallback = s
            .fleet
            .as_ref()
            .and_then(|f| Some(f.project("tiny")?.fallbacks.first()?.url.clone()));
        match fallback.as_deref() {
            Some("https://b.example/tiny/") => Ok(()),
            seen => Err(format!("fallback {seen:?}")),
        }
    })
    .await;
    assert_eq!(upstream.open(), 1, "the slow scan was still running");
    let held = t.read().await;
    assert!(!held.indexes.contains_key("slow"));
    assert!(
        !held.availability.contains_key(&("m".into(), "slow".into())),
        "a project without an index is not scanned on mirrors"
    );

    // Dropping the handle stops every task: the slow scan is abandoned.
    drop(running);
    wait_for("the slow scan to be abandoned", TIMEOUT, || {
        let open = upstream.open();
        std::future::ready(if open == 0 {
            Ok(())
        } else {
            Err(format!("{open} connection(s) open"))
        })
    })
    .await;
}

#[test]
fn intervals_given_in_the_fleet_win_over_the_schedule() {
    let s = Duration::from_secs;
    let schedule = Schedule {
        source_every: s(300),
        recheck_every: s(5),
        mirror_every: HOUR,
    };
    let plain = ProjectState::default();
    let tuned = ProjectState {
        source_interval_seconds: Some(60),
        metadata_recheck_seconds: Some(2),
        mirror_interval_seconds: Some(600),
        ..Default::default()
    };
    let own = MirrorState {
        scan_interval_seconds: Some(900),
        ..Default::default()
    };
    let rows = [
        (
            &plain,
            s(300),
            s(5),
            "the schedule's when the project says nothing",
        ),
        (&tuned, s(60), s(2), "the project's scan settings"),
    ];
    for (p, rescan, recheck, rule) in rows {
        assert_eq!(
            schedule.source(p),
            SourceIntervals { rescan, recheck },
            "{rule}"
        );
    }
    let plain_mirror = MirrorState::default();
    let rows = [
        (&plain_mirror, &plain, HOUR, "the schedule's"),
        (
            &plain_mirror,
            &tuned,
            s(600),
            "the project's mirrorIntervalMinutes",
        ),
        (
            &own,
            &tuned,
            s(900),
            "the mirror's own intervalMinutes first",
        ),
    ];
    for (m, p, every, rule) in rows {
        assert_eq!(schedule.mirror(m, p), every, "{rule}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_needs_the_token_and_then_indexes_at_once() {
    let root = world_readable_tempdir();
    let t0 = 1_795_309_320;
    write_tree(root.path(), &[("a.iso", b"a", t0)]);
    // An upstream without a trace file: without publish, only the hourly scan would look.
    let daemon = rsync_daemon(&[("up", root.path())]);
    let dir = tempfile::tempdir().unwrap();
    testing::write_atomically(
        &dir.path().join("fleet.yaml"),
        testing::project(
            "p",
            &format!("rsync: rsync://127.0.0.1:{}/up/", daemon.port),
            "",
        ),
    );
    let t = testing::store().await;
    let settings = Settings {
        manifests: dir.path().to_path_buf(),
        git: None,
        locator: None,
        reload_every: HOUR,
        source_every: HOUR,
        mirror_every: HOUR,
        recheck_every: HOUR,
        push: None,
    };
    let running = maintain(settings, t.store.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _admin = super::Task::spawn(super::admin::serve(
        listener,
        "s3cret".into(),
        running.publisher.clone(),
    ));
    let tokens = tempfile::tempdir().unwrap();
    let (right, wrong) = (tokens.path().join("right"), tokens.path().join("wrong"));
    std::fs::write(&right, "s3cret\n").unwrap();
    std::fs::write(&wrong, "guess\n").unwrap();
    t.until("the first index", |s| match s.indexes.get("p") {
        Some(_) => Ok(()),
        None => Err("no index".into()),
    })
    .await;

    write_tree(root.path(), &[("b.iso", b"bb", t0)]);
    let refused = crate::cmd::publish_standalone("p", &url, &wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("401"), "a wrong token: {refused}");
    let unknown = crate::cmd::publish_standalone("nope", &url, &right)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("404") && unknown.contains("\"nope\""),
        "an unknown project: {unknown}"
    );
    let held = t.read().await;
    assert!(
        held.indexes["p"].find("b.iso").is_none(),
        "refused publishes indexed nothing"
    );

    let start = std::time::Instant::now();
    let answer = crate::cmd::publish_standalone("p", &url, &right)
        .await
        .unwrap();
    assert!(answer.contains("indexing project p"), "{answer}");
    wait_for(
        "b.iso indexed after the publish",
        Duration::from_secs(2),
        || {
            let seen = t
                .state
                .borrow()
                .indexes
                .get("p")
                .and_then(|i| i.find("b.iso").map(|e| e.size));
            std::future::ready(if seen == Some(2) {
                Ok(())
            } else {
                Err(format!("b.iso {seen:?}"))
            })
        },
    )
    .await;
    eprintln!("publish → indexed in {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_serial_of_a_local_source_is_announced_on_mqtt_under_the_hub() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    let mosquitto = mirrorfleet_testkit::Mosquitto::start();
    let (client, mut events) = AsyncClient::new(
        MqttOptions::new("standalone-test-sub", "127.0.0.1", mosquitto.port),
        16,
    );
    client.subscribe("rsync/#", QoS::AtLeastOnce).await.unwrap();
    let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let _subscriber = super::Task::spawn(async move {
        while let Ok(event) = events.poll().await {
            let message = match event {
                Event::Incoming(Packet::SubAck(_)) => ("subscribed".to_owned(), String::new()),
                Event::Incoming(Packet::Publish(p)) => {
                    (p.topic, String::from_utf8_lossy(&p.payload).into_owned())
                }
                _ => continue,
            };
            let _ = tx.send(message);
        }
    });
    let mut next = async || {
        tokio::time::timeout(TIMEOUT, messages.recv())
            .await
            .expect("no MQTT message before the deadline")
            .unwrap()
    };
    assert_eq!(next().await.0, "subscribed");

    let root = world_readable_tempdir();
    let tree = root.path().join("demo");
    write_tree(
        &tree,
        &[
            ("demo.iso", b"demo", 1_795_309_320),
            ("dists/x/Release", b"1", 1_795_309_320),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let docs = testing::project("demo", &format!("local: {}", tree.display()), "");
    testing::write_atomically(&dir.path().join("fleet.yaml"), docs);
    let t = testing::store().await;
    let mut broker = mirrorfleet_push::Broker::parse(&mosquitto.url(), "standalone-test").unwrap();
    broker.backoff_max = Duration::from_millis(200);
    let settings = Settings {
        manifests: dir.path().to_path_buf(),
        git: None,
        locator: None,
        reload_every: HOUR,
        source_every: HOUR,
        mirror_every: HOUR,
        recheck_every: Duration::from_millis(100),
        push: Some(mirrorfleet_push::Settings::new(Some(broker), "hub.test")),
    };
    let _running = maintain(settings, t.store.clone()).await.unwrap();

    let (topic, first) = next().await;
    assert_eq!(
        topic, "rsync/hub.test/demo",
        "a local source: rsync/<hub>/<project>"
    );
    let stored = t
        .read()
        .await
        .index_meta
        .get("demo")
        .map(|m| m.serial.clone());
    assert_eq!(
        stored.as_deref(),
        Some(first.as_str()),
        "the serial the store holds"
    );

    // A changed Release file is a new serial, announced in its turn.
    write_tree(&tree, &[("dists/x/Release", b"2", 1_795_309_400)]);
    let (topic, second) = next().await;
    assert_eq!(topic, "rsync/hub.test/demo");
    assert_ne!(second, first, "a new serial");
    let stored = t
        .read()
        .await
        .index_meta
        .get("demo")
        .map(|m| m.serial.clone());
    assert_eq!(stored.as_deref(), Some(second.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_publish_request_indexes_the_project_at_once() {
    let mosquitto = mirrorfleet_testkit::Mosquitto::start();
    let root = world_readable_tempdir();
    let t0 = 1_795_309_320;
    write_tree(root.path(), &[("a.iso", b"a", t0)]);
    // An upstream without a trace file: without a request, only the hourly scan would look.
    let daemon = rsync_daemon(&[("up", root.path())]);
    let dir = tempfile::tempdir().unwrap();
    testing::write_atomically(
        &dir.path().join("fleet.yaml"),
        testing::project(
            "p",
            &format!("rsync: rsync://127.0.0.1:{}/up/", daemon.port),
            "",
        ),
    );
    let t = testing::store().await;
    let mut broker = mirrorfleet_push::Broker::parse(&mosquitto.url(), "publish-test").unwrap();
    broker.backoff_max = Duration::from_millis(200);
    let settings = Settings {
        manifests: dir.path().to_path_buf(),
        git: None,
        locator: None,
        reload_every: HOUR,
        source_every: HOUR,
        mirror_every: HOUR,
        recheck_every: HOUR,
        push: Some(mirrorfleet_push::Settings::new(Some(broker), "hub.test")),
    };
    let _running = maintain(settings, t.store.clone()).await.unwrap();
    t.until("the first index", |s| match s.indexes.get("p") {
        Some(_) => Ok(()),
        None => Err("no index".into()),
    })
    .await;
    write_tree(root.path(), &[("b.iso", b"bb", t0)]);
    let b_indexed = |s: &mirrorfleet_store::LoadedState| match s.indexes["p"].find("b.iso") {
        Some(_) => Ok(()),
        None => Err("b.iso not indexed".to_owned()),
    };
    // Until the subscription is up a request may be lost: ask again until it is heard.
    let mut asked: Option<std::time::Instant> = None;
    wait_for(
        "b.iso indexed after an MQTT publish request",
        TIMEOUT,
        || {
            let state = t.state.borrow().clone();
            let seen = b_indexed(&state);
            if seen.is_err() && asked.is_none_or(|at| at.elapsed() > Duration::from_millis(500)) {
                asked = Some(std::time::Instant::now());
                let sent = std::process::Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &mosquitto.port.to_string()])
                    .args(["-q", "1", "-t", "mirrorfleet/publish/p", "-m", "now"])
                    .status()
                    .unwrap();
                assert!(sent.success());
            }
            std::future::ready(seen)
        },
    )
    .await;
}
