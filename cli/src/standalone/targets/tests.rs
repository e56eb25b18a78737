//! Targets from a real index and a real mirror scan in an embedded store.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mirrorfleet_health::checker::Target;
use mirrorfleet_scan::{self as scan, run};
use mirrorfleet_testkit::{rsync_daemon, wait_for, within, world_readable_tempdir, write_tree};
use tokio::sync::watch;

use super::publish_targets;
use crate::standalone::Task;
use crate::standalone::testing::{self, TIMEOUT, published};

/// Waits until the targets, as (mirror, canary URL, canary size) of each, are `want`.
async fn targets_become(
    rx: &watch::Receiver<Arc<Vec<Target>>>,
    what: &str,
    want: &[(&str, &str, Option<u64>)],
) {
    wait_for(what, TIMEOUT, || {
        let seen: Vec<(String, String, Option<u64>)> = rx
            .borrow()
            .iter()
            .flat_map(|t| {
                t.canaries
                    .iter()
                    .map(|c| (t.key.mirror.clone(), c.url.clone(), c.size))
            })
            .collect();
        let matches = seen.len() == want.len()
            && want
                .iter()
                .all(|w| seen.iter().any(|s| (s.0.as_str(), s.1.as_str(), s.2) == *w));
        std::future::ready(if matches {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_follow_the_fleet_the_indexes_and_the_availability() {
    let root = world_readable_tempdir();
    let t0 = 1_795_309_320;
    write_tree(&root.path().join("source"), &[("pool/a.deb", b"aaaa", t0)]);
    write_tree(&root.path().join("mirror"), &[("pool/a.deb", b"aaaa", t0)]);
    let daemon = rsync_daemon(&[("mirror", &root.path().join("mirror"))]);
    let rsync = format!("rsync://127.0.0.1:{}/mirror/", daemon.port);
    let project = testing::project(
        "demo",
        &format!("local: {}", root.path().join("source").display()),
        "",
    );
    let one = testing::fleet(&[
        project.clone(),
        testing::SPONSOR.into(),
        testing::mirror("m", &[("demo", &rsync)]),
    ]);
    let t = testing::store().await;
    let (fleet_tx, fleet) = published(one.clone());
    let (targets_tx, targets) = watch::channel(Arc::new(Vec::new()));
    let task = Task::spawn(publish_targets(fleet, t.state.clone(), targets_tx));

    // Nothing known of the mirror's copy yet: its base URL is the canary.
    targets_become(
        &targets,
        "the mirror's base URL as its canary",
        &[("m", "http://127.0.0.1:9/demo/", None)],
    )
    .await;

    // An index, and a scan finding a.deb on the mirror: a.deb is the canary, with its size.
    let demo = one.project("demo").unwrap();
    let index = t.index(demo).await;
    let mirror = one.mirror("m").unwrap();
    run::scan_mirror(&t.writer, mirror, demo, &index, &scan::Limits::default(), 1)
        .await
        .unwrap();
    targets_become(
        &targets,
        "a file the mirror holds as its canary",
        &[("m", "http://127.0.0.1:9/demo/pool/a.deb", Some(4))],
    )
    .await;

    // A mirror added to the fleet is probed too.
    let two = testing::fleet(&[
        project,
        testing::SPONSOR.into(),
        testing::mirror("m", &[("demo", &rsync)]),
        testing::mirror("other", &[("demo", &rsync)]),
    ]);
    fleet_tx.send_replace(Arc::new(two));
    targets_become(
        &targets,
        "the added mirror's target",
        &[
            ("m", "http://127.0.0.1:9/demo/pool/a.deb", Some(4)),
            ("other", "http://127.0.0.1:9/demo/", None),
        ],
    )
    .await;

    // The fleet's channel closes: the task returns.
    drop(fleet_tx);
    within("the targets task to return", TIMEOUT, task)
        .await
        .unwrap();
}
