//! The indexer on real trees and a real upstream that never answers, writing to an embedded
//! store.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_testkit::{wait_for, world_readable_tempdir, write_tree};

use super::index_sources;
use crate::standalone::testing::{self, Staller, TIMEOUT, TestStore, published};
use crate::standalone::{Schedule, Task};

const T: i64 = 1_795_309_320;
const HOUR: Duration = Duration::from_secs(3600);

fn schedule(source_every: Duration, recheck_every: Duration) -> Schedule {
    Schedule {
        source_every,
        recheck_every,
        mirror_every: HOUR,
    }
}

fn local(name: &str, root: &Path) -> String {
    testing::project(name, &format!("local: {}", root.display()), "")
}

/// The size of `path` in `project`'s index, as the followed state has it.
async fn size_in(t: &TestStore, what: &str, project: &str, path: &str, size: u64) {
    t.until(what, |s| {
        let seen = s.indexes.get(project).map(|i| i.find(path).map(|e| e.size));
        if seen == Some(Some(size)) {
            Ok(())
        } else {
            Err(format!("{project}'s index has {path} of size {seen:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_project_is_indexed_and_mutable_metadata_rechecked_between_scans() {
    let root = world_readable_tempdir();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    write_tree(
        &a,
        &[
            ("pool/a.deb", b"aaaa", T),
            ("dists/stable/Release", b"one", T),
        ],
    );
    write_tree(&b, &[("b.iso", b"bb", T)]);
    let t = testing::store().await;
    let (_fleet_tx, fleet) = published(testing::fleet(&[local("a", &a), local("b", &b)]));
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        schedule(HOUR, Duration::from_millis(100)),
    ));
    size_in(&t, "a's source indexed", "a", "pool/a.deb", 4).await;
    size_in(&t, "b's source indexed", "b", "b.iso", 2).await;

    // Release rewritten in place: no full scan is due for an hour, the recheck sees it.
    write_tree(&a, &[("dists/stable/Release", b"two, longer", T + 60)]);
    size_in(
        &t,
        "the recheck to index the new Release",
        "a",
        "dists/stable/Release",
        11,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_rescanned_on_schedule() {
    let root = world_readable_tempdir();
    write_tree(root.path(), &[("pool/a.deb", b"aaaa", T)]);
    let t = testing::store().await;
    let (_fleet_tx, fleet) = published(testing::fleet(&[local("a", root.path())]));
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        schedule(Duration::from_millis(200), HOUR),
    ));
    size_in(&t, "the first scan", "a", "pool/a.deb", 4).await;
    write_tree(root.path(), &[("pool/new.deb", b"new", T)]);
    size_in(&t, "a rescan to index the new file", "a", "pool/new.deb", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_project_is_rescanned_on_its_own_interval() {
    let root = world_readable_tempdir();
    let (quick, steady) = (root.path().join("quick"), root.path().join("steady"));
    write_tree(&quick, &[("q.iso", b"q", T)]);
    write_tree(&steady, &[("s.iso", b"s", T)]);
    let mut fleet = testing::fleet(&[local("quick", &quick), local("steady", &steady)]);
    // The CRD counts in minutes; the state in seconds, which a test can make short.
    for p in &mut fleet.projects {
        p.source_interval_seconds = Some(if p.name == "quick" { 1 } else { 3600 });
    }
    let t = testing::store().await;
    let (_fleet_tx, fleet) = published(fleet);
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        // The schedule's own interval would rescan both: the projects' must win.
        schedule(Duration::from_millis(100), HOUR),
    ));
    size_in(&t, "quick's first scan", "quick", "q.iso", 1).await;
    size_in(&t, "steady's first scan", "steady", "s.iso", 1).await;
    write_tree(&quick, &[("q2.iso", b"q2", T)]);
    write_tree(&steady, &[("s2.iso", b"s2", T)]);
    size_in(&t, "quick's rescan a second on", "quick", "q2.iso", 2).await;
    let held = t.read().await;
    assert_eq!(
        held.indexes["steady"].find("s2.iso").map(|e| e.size),
        None,
        "steady (an hour's interval) was rescanned within the second quick took"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_whose_source_changed_is_scanned_again_at_once() {
    let root = world_readable_tempdir();
    let (first, second) = (root.path().join("first"), root.path().join("second"));
    write_tree(&first, &[("old.iso", b"old", T)]);
    write_tree(&second, &[("new.iso", b"newer", T)]);
    let t = testing::store().await;
    let (fleet_tx, fleet) = published(testing::fleet(&[local("a", &first)]));
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        schedule(HOUR, HOUR),
    ));
    size_in(&t, "the first tree indexed", "a", "old.iso", 3).await;
    fleet_tx.send_replace(Arc::new(testing::fleet(&[local("a", &second)])));
    size_in(&t, "the second tree indexed", "a", "new.iso", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_source_holds_up_neither_other_projects_nor_fleet_changes() {
    let root = world_readable_tempdir();
    let (tiny, added) = (root.path().join("tiny"), root.path().join("added"));
    write_tree(&tiny, &[("tiny.iso", b"tiny", T)]);
    write_tree(&added, &[("added.iso", b"added", T)]);
    // The slow project's upstream accepts the scan's connection and never answers.
    let upstream = Staller::start();
    let slow = testing::project(
        "slow",
        &format!("rsync: rsync://127.0.0.1:{}/slow/", upstream.port),
        "",
    );
    let t = testing::store().await;
    let (fleet_tx, fleet) = published(testing::fleet(&[slow.clone(), local("tiny", &tiny)]));
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        schedule(HOUR, HOUR),
    ));
    wait_for("the slow scan to connect", TIMEOUT, || {
        let n = upstream.accepted();
        std::future::ready(if n > 0 {
            Ok(())
        } else {
            Err("no connection".into())
        })
    })
    .await;
    size_in(&t, "the tiny project indexed", "tiny", "tiny.iso", 4).await;

    // A project added meanwhile is indexed at once.
    fleet_tx.send_replace(Arc::new(testing::fleet(&[
        slow,
        local("tiny", &tiny),
        local("added", &added),
    ])));
    size_in(&t, "the added project indexed", "added", "added.iso", 5).await;
    assert_eq!(upstream.open(), 1, "the slow scan still runs");
    assert!(!t.read().await.indexes.contains_key("slow"));

    // The slow project leaves the fleet: its scan is abandoned (its rsync hangs up).
    fleet_tx.send_replace(Arc::new(testing::fleet(&[
        local("tiny", &tiny),
        local("added", &added),
    ])));
    wait_for("the abandoned scan to hang up", TIMEOUT, || {
        let open = upstream.open();
        std::future::ready(if open == 0 {
            Ok(())
        } else {
            Err(format!("{open} connection(s) open"))
        })
    })
    .await;
}
