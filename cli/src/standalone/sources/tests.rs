//! The indexer on real trees and a real upstream that never answers, writing to an embedded
//! store.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_testkit::{rsync_daemon, wait_for, world_readable_tempdir, write_tree};

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

/// A publish channel nobody sends on.
fn publish_nothing() -> tokio::sync::mpsc::Receiver<String> {
    tokio::sync::mpsc::channel(1).1
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
        publish_nothing(),
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
        publish_nothing(),
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
    // Upstreams (no watch, no trace file): only full scans see their changes.
    let daemon = rsync_daemon(&[("quick", &quick), ("steady", &steady)]);
    let upstream = |name: &str| {
        testing::project(
            name,
            &format!("rsync: rsync://127.0.0.1:{}/{name}/", daemon.port),
            "",
        )
    };
    let mut fleet = testing::fleet(&[upstream("quick"), upstream("steady")]);
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
        publish_nothing(),
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
        publish_nothing(),
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
        publish_nothing(),
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

/// `project`'s index as the followed state has it, within `deadline`, once `probe` accepts it.
async fn index_within(
    t: &TestStore,
    what: &str,
    deadline: Duration,
    project: &str,
    mut probe: impl FnMut(&mirrorfleet_crds::state::FileIndex) -> Result<(), String>,
) -> Duration {
    let start = std::time::Instant::now();
    wait_for(what, deadline, || {
        let seen = match t.state.borrow().indexes.get(project) {
            Some(index) => probe(index),
            None => Err(format!("no index of {project}")),
        };
        std::future::ready(seen)
    })
    .await;
    start.elapsed()
}

/// Whether `index` has `path` of `size`, as a wait's probe.
fn holds(
    index: &mirrorfleet_crds::state::FileIndex,
    path: &str,
    size: Option<u64>,
) -> Result<(), String> {
    let seen = index.find(path).map(|e| e.size);
    if seen == size {
        Ok(())
    } else {
        Err(format!("{path} has size {seen:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_tree_is_indexed_within_two_seconds_of_a_change() {
    let root = world_readable_tempdir();
    write_tree(root.path(), &[("pool/a.deb", b"aaaa", T)]);
    let t = testing::store().await;
    let (_fleet_tx, fleet) = published(testing::fleet(&[local("a", root.path())]));
    // No full scan nor recheck for an hour: only the watch can index what follows.
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        schedule(HOUR, HOUR),
        publish_nothing(),
    ));
    size_in(&t, "the first scan", "a", "pool/a.deb", 4).await;

    std::fs::create_dir_all(root.path().join("pool/new")).unwrap();
    std::fs::write(root.path().join("pool/new/b.deb"), b"bbb").unwrap();
    let took = index_within(
        &t,
        "a new file in a new directory indexed",
        Duration::from_secs(2),
        "a",
        |i| holds(i, "pool/new/b.deb", Some(3)),
    )
    .await;
    eprintln!("a new file indexed {took:?} after it was written");

    std::fs::remove_file(root.path().join("pool/a.deb")).unwrap();
    index_within(
        &t,
        "a removed file gone from the index",
        Duration::from_secs(2),
        "a",
        |i| holds(i, "pool/a.deb", None),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_not_indexed_until_it_is_done() {
    use std::io::Write;
    let root = world_readable_tempdir();
    write_tree(root.path(), &[("old.iso", b"old", T)]);
    let t = testing::store().await;
    let (_fleet_tx, fleet) = published(testing::fleet(&[local("a", root.path())]));
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        schedule(HOUR, HOUR),
        publish_nothing(),
    ));
    size_in(&t, "the first scan", "a", "old.iso", 3).await;

    // A writer appends to big.iso every 50 ms until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = root.path().join("big.iso");
    let writer = {
        let stop = stop.clone();
        let mut file = std::fs::File::create(&path).unwrap();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut written = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < TIMEOUT {
                file.write_all(&[b'x'; 1000]).unwrap();
                file.flush().unwrap();
                written += 1000;
                std::thread::sleep(Duration::from_millis(50));
            }
            written
        })
    };
    // While it writes, another file arrives and is indexed: that scan saw big.iso too.
    std::fs::write(root.path().join("small.iso"), b"small").unwrap();
    index_within(&t, "small.iso indexed", TIMEOUT, "a", |i| {
        holds(i, "small.iso", Some(5))
    })
    .await;
    let during = t.state.borrow().indexes["a"]
        .find("big.iso")
        .map(|e| e.size);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert_eq!(during, None, "big.iso indexed half-written");
    index_within(&t, "big.iso indexed once written", TIMEOUT, "a", |i| {
        holds(i, "big.iso", Some(written))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_upstream_trace_file_is_indexed_at_once() {
    let root = world_readable_tempdir();
    write_tree(
        root.path(),
        &[("trace", b"1795309320\n", T), ("a.iso", b"a", T)],
    );
    let upstream = mirrorfleet_testkit::nginx(root.path());
    let mut fleet = testing::fleet(&[testing::project(
        "p",
        &format!("http: http://127.0.0.1:{}/", upstream.port),
        "  traceFile: trace\n",
    )]);
    fleet.projects[0].metadata_recheck_seconds = Some(1);
    let t = testing::store().await;
    let (_fleet_tx, fleet) = published(fleet);
    let _indexer = Task::spawn(index_sources(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        schedule(HOUR, HOUR),
        publish_nothing(),
    ));
    size_in(&t, "the first scan", "p", "a.iso", 1).await;

    // The archive publishes: a new file, then the trace. No full scan is due for an hour.
    write_tree(root.path(), &[("b.iso", b"bb", T + 60)]);
    write_tree(root.path(), &[("trace", b"1795309380\n", T + 60)]);
    let took = index_within(
        &t,
        "b.iso indexed after the trace changed",
        Duration::from_secs(5),
        "p",
        |i| holds(i, "b.iso", Some(2)),
    )
    .await;
    eprintln!("a trace change indexed after {took:?}");
}
