//! The scheduler against a real rsync daemon and mirrors that hold scans until released,
//! writing to an embedded store.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{Family, FleetState, ProbeScheme, avail_key};
use mirrorfleet_health::checker::Key;
use mirrorfleet_health::{Change, Transition};
use mirrorfleet_testkit::{
    Server, rsync_daemon, wait_for, within, world_readable_tempdir, write_tree,
};
use tokio::sync::{mpsc, watch};

use tokio::time::Instant;

use super::{ScanSettings, Scheduler, next_slot, phase, schedule_scans};
use crate::standalone::testing::{self, Staller, TIMEOUT, TestStore, published};
use crate::standalone::{MAX_SCANS, Schedule, Task};

const T: i64 = 1_795_309_320;
const HOUR: Duration = Duration::from_secs(3600);

/// Sources of projects `a` and `b`, and an rsync daemon with modules `a` (a.deb only),
/// `b` and `full` (a.deb and b.deb).
struct Trees {
    root: tempfile::TempDir,
    daemon: Server,
}

fn trees() -> Trees {
    let root = world_readable_tempdir();
    let both: [(&str, &[u8], i64); 2] = [("pool/a.deb", b"aaaa", T), ("pool/b.deb", b"bbbbbb", T)];
    for dir in ["source-a", "source-b", "full", "b"] {
        write_tree(&root.path().join(dir), &both);
    }
    write_tree(&root.path().join("a"), &both[..1]);
    let modules = ["a", "b", "full"].map(|m| (m, root.path().join(m)));
    let daemon = rsync_daemon(
        &modules
            .iter()
            .map(|(m, p)| (*m, p.as_path()))
            .collect::<Vec<_>>(),
    );
    Trees { root, daemon }
}

impl Trees {
    fn project(&self, name: &str) -> String {
        let src = self.root.path().join(format!("source-{name}"));
        testing::project(name, &format!("local: {}", src.display()), "")
    }

    fn module(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{module}/", self.daemon.port)
    }
}

/// The scheduler on `fleet` with mirror scans every `every`; the checker's ends of the
/// transition and rescanned channels (no sync reports).
fn start(
    t: &TestStore,
    fleet: watch::Receiver<Arc<FleetState>>,
    every: Duration,
) -> (Task<()>, mpsc::Sender<Transition>, mpsc::Receiver<String>) {
    let (task, transitions, rescanned, _reports) = start_reported(t, fleet, every);
    (task, transitions, rescanned)
}

/// [`start`], with the sending end of the sync reports too.
#[allow(clippy::type_complexity)]
fn start_reported(
    t: &TestStore,
    fleet: watch::Receiver<Arc<FleetState>>,
    every: Duration,
) -> (
    Task<()>,
    mpsc::Sender<Transition>,
    mpsc::Receiver<String>,
    mpsc::Sender<(String, String)>,
) {
    let (reports_tx, reports) = mpsc::channel(16);
    let (transitions_tx, transitions) = mpsc::channel(16);
    let (rescanned, rescanned_rx) = mpsc::channel(16);
    let settings = ScanSettings {
        schedule: Schedule {
            source_every: HOUR,
            recheck_every: HOUR,
            mirror_every: every,
        },
        max_scans: MAX_SCANS,
    };
    let task = Task::spawn(schedule_scans(
        fleet,
        t.state.clone(),
        t.writer.clone(),
        transitions,
        rescanned,
        reports,
        settings,
    ));
    (task, transitions_tx, rescanned_rx, reports_tx)
}

/// What the checker sends when `mirror` answers again after a long outage.
fn back_from_outage(mirror: &str) -> Transition {
    Transition {
        key: Key {
            mirror: mirror.into(),
            scheme: ProbeScheme::Http,
            family: Family::Ipv4,
        },
        change: Change::RescanFirst,
        message: "answers again after a long outage".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_is_scanned_once_its_project_has_an_index_then_on_schedule() {
    let trees = trees();
    let fleet = testing::fleet(&[
        trees.project("a"),
        trees.project("b"),
        testing::SPONSOR.into(),
        testing::mirror("m", &[("a", &trees.module("a")), ("b", &trees.module("b"))]),
    ]);
    let t = testing::store().await;
    t.index(fleet.project("a").unwrap()).await;
    let (_fleet_tx, fleet_rx) = published(fleet.clone());
    let _scheduler = start(&t, fleet_rx, Duration::from_millis(200));

    // Scanned, and again every 200 ms: three different generations of its availability.
    let mut seen = BTreeSet::new();
    let key = avail_key("m", "a");
    t.until("m's copy of a scanned three times", |s| {
        seen.extend(s.held(&key));
        if seen.len() >= 3 {
            Ok(())
        } else {
            Err(format!("generations {seen:?}"))
        }
    })
    .await;
    assert!(
        !t.read()
            .await
            .availability
            .contains_key(&("m".into(), "b".into())),
        "b has no index: its mirror cannot have been scanned"
    );

    // b gets an index: its pair is scanned without anything else happening.
    t.index(fleet.project("b").unwrap()).await;
    t.until("m's copy of b scanned", |s| {
        match s.availability.get(&("m".into(), "b".into())) {
            Some(a) => Ok(a.counts.files),
            None => Err("no availability".into()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_first_rescans_every_project_of_the_mirror_then_reports_it() {
    let trees = trees();
    let fleet = testing::fleet(&[
        trees.project("a"),
        trees.project("b"),
        testing::SPONSOR.into(),
        testing::mirror("m", &[("a", &trees.module("a")), ("b", &trees.module("b"))]),
    ]);
    let t = testing::store().await;
    t.index(fleet.project("a").unwrap()).await;
    t.index(fleet.project("b").unwrap()).await;
    let (_fleet_tx, fleet_rx) = published(fleet);
    let (_scheduler, transitions, mut rescanned) = start(&t, fleet_rx, HOUR);
    t.until("both projects of m scanned", |s| {
        let n = s.availability.keys().filter(|(m, _)| m == "m").count();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} scanned"))
        }
    })
    .await;
    let before = (
        t.generation(&avail_key("m", "a")).await.unwrap(),
        t.generation(&avail_key("m", "b")).await.unwrap(),
    );

    transitions.send(back_from_outage("m")).await.unwrap();
    let reported = within("m to be reported rescanned", TIMEOUT, rescanned.recv()).await;
    assert_eq!(reported.as_deref(), Some("m"));
    let after = (
        t.generation(&avail_key("m", "a")).await.unwrap(),
        t.generation(&avail_key("m", "b")).await.unwrap(),
    );
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "both projects rescanned before the report: {before:?} then {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_in_flight_when_a_rescan_is_asked_for_does_not_count_for_it() {
    let trees = trees();
    // The mirror's rsync holds each scan until released, then serves it from the daemon.
    let slow = Staller::forwarding(trees.daemon.port);
    let url = format!("rsync://127.0.0.1:{}/a/", slow.port);
    let fleet = testing::fleet(&[
        trees.project("a"),
        testing::SPONSOR.into(),
        testing::mirror("m", &[("a", &url)]),
    ]);
    let t = testing::store().await;
    t.index(fleet.project("a").unwrap()).await;
    let (_fleet_tx, fleet_rx) = published(fleet);
    let (_scheduler, transitions, mut rescanned) = start(&t, fleet_rx, HOUR);
    let connected = |n: usize| {
        let slow = &slow;
        move || {
            let seen = slow.accepted();
            std::future::ready(if seen >= n {
                Ok(())
            } else {
                Err(format!("{seen} connected"))
            })
        }
    };
    wait_for("the first scan to connect", TIMEOUT, connected(1)).await;
    transitions.send(back_from_outage("m")).await.unwrap();

    // The scan in flight ends well, but it began before the mirror was back: another starts.
    slow.release(1);
    wait_for(
        "a rescan to follow the scan in flight",
        TIMEOUT,
        connected(2),
    )
    .await;
    assert!(
        t.read()
            .await
            .availability
            .contains_key(&("m".into(), "a".into())),
        "the first scan succeeded"
    );
    assert!(
        rescanned.try_recv().is_err(),
        "reported rescanned on a scan that began before the rescan was asked for"
    );
    slow.release(1);
    let reported = within("m to be reported rescanned", TIMEOUT, rescanned.recv()).await;
    assert_eq!(reported.as_deref(), Some("m"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_sync_is_scanned_at_once_and_reports_of_others_change_nothing() {
    let trees = trees();
    let fleet = testing::fleet(&[
        trees.project("a"),
        testing::SPONSOR.into(),
        testing::mirror("m", &[("a", &trees.module("a"))]),
    ]);
    let t = testing::store().await;
    t.index(fleet.project("a").unwrap()).await;
    let (_fleet_tx, fleet_rx) = published(fleet);
    let (_scheduler, _transitions, _rescanned, reports) = start_reported(&t, fleet_rx, HOUR);
    let missing = |want: u64| {
        move |s: &mirrorfleet_store::LoadedState| match s
            .availability
            .get(&("m".into(), "a".into()))
        {
            Some(a) if a.counts.missing == want => Ok(a.scanned_at),
            seen => Err(format!("{:?}", seen.map(|a| a.counts))),
        }
    };
    t.until("the mirror lacking b.deb scanned", missing(1))
        .await;
    // The mirror syncs b.deb, and says so; its next scan is an hour away.
    write_tree(
        &trees.root.path().join("a"),
        &[("pool/b.deb", b"bbbbbb", T)],
    );
    // Reports the fleet does not have go nowhere (the scheduler drops them)…
    reports.send(("nobody".into(), "a".into())).await.unwrap();
    reports.send(("m".into(), "zzz".into())).await.unwrap();
    // …and the right one has it scanned at once.
    reports.send(("m".into(), "a".into())).await.unwrap();
    t.until("the synced mirror scanned again", missing(0)).await;
    assert!(
        !t.read()
            .await
            .availability
            .keys()
            .any(|(m, p)| m == "nobody" || p == "zzz"),
        "nothing scanned for reports of pairs the fleet does not have"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mirror_is_scanned_again_at_once() {
    let trees = trees();
    let with = |module: &str| {
        testing::fleet(&[
            trees.project("a"),
            testing::SPONSOR.into(),
            testing::mirror("m", &[("a", &trees.module(module))]),
        ])
    };
    let t = testing::store().await;
    t.index(with("a").project("a").unwrap()).await;
    let (fleet_tx, fleet_rx) = published(with("a"));
    let _scheduler = start(&t, fleet_rx, HOUR);
    let missing = |want: u64| {
        move |s: &mirrorfleet_store::LoadedState| match s
            .availability
            .get(&("m".into(), "a".into()))
        {
            Some(a) if a.counts.missing == want => Ok(()),
            seen => Err(format!("{:?}", seen.map(|a| a.counts))),
        }
    };
    t.until("the mirror lacking b.deb scanned", missing(1))
        .await;
    // The mirror now points at a complete copy: no scan is due for an hour, yet it is rescanned.
    fleet_tx.send_replace(Arc::new(with("full")));
    t.until("the complete copy scanned", missing(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_scans_run_at_once() {
    let trees = trees();
    // Six mirrors whose rsync accepts and never answers: each scan lasts until released.
    let stalled = Staller::start();
    let mut docs = vec![trees.project("a"), testing::SPONSOR.into()];
    for i in 1..=6 {
        let url = format!("rsync://127.0.0.1:{}/m{i}/", stalled.port);
        docs.push(testing::mirror(&format!("m{i}"), &[("a", &url)]));
    }
    let fleet = Arc::new(testing::fleet(&docs));
    let t = testing::store().await;
    t.index(fleet.project("a").unwrap()).await;
    let state = t
        .until("the index followed", |s| {
            if s.indexes.contains_key("a") {
                Ok(s.clone())
            } else {
                Err("no index".into())
            }
        })
        .await;
    // Driven by hand (the loop of `schedule_scans` does the same), so that what a pass
    // starts is seen exactly rather than raced.
    let (rescanned, _rescanned_rx) = mpsc::channel(16);
    let settings = ScanSettings {
        schedule: Schedule {
            source_every: HOUR,
            recheck_every: HOUR,
            mirror_every: HOUR,
        },
        max_scans: MAX_SCANS,
    };
    let mut s = Scheduler::new(t.writer.clone(), rescanned, settings, fleet);
    assert_eq!(s.start_due(&state), None, "no timer while there is no room");
    assert_eq!(s.running.len(), MAX_SCANS, "six due, MAX_SCANS started");
    let connected = |n: usize| {
        let stalled = &stalled;
        move || {
            let seen = stalled.accepted();
            std::future::ready(if seen >= n {
                Ok(())
            } else {
                Err(format!("{seen} connected"))
            })
        }
    };
    wait_for("MAX_SCANS scans to connect", TIMEOUT, connected(MAX_SCANS)).await;
    // Each scan that ends (its mirror hangs up) makes room for one that waits.
    for waiting in [2, 1] {
        stalled.release(1);
        let done = within(
            "a released scan to end",
            TIMEOUT,
            s.scans.join_next_with_id(),
        )
        .await
        .unwrap();
        s.finished(done);
        assert_eq!(s.running.len(), MAX_SCANS - 1);
        s.start_due(&state);
        assert_eq!(
            s.running.len(),
            MAX_SCANS,
            "one of the {waiting} waiting started"
        );
    }
    wait_for("all six scans to connect", TIMEOUT, connected(6)).await;
    assert_eq!(stalled.most_at_once(), MAX_SCANS);
    assert!(
        s.start_due(&state).is_some(),
        "nothing left to start but next hour's scans"
    );
}

#[test]
fn the_next_scan_falls_on_the_pairs_slot_half_an_interval_to_one_and_a_half_away() {
    let epoch = Instant::now();
    let s = Duration::from_secs;
    // (phase, scanned at, due at; seconds from the epoch, interval 100 s)
    let rows = [
        (
            0.25,
            0,
            125,
            "the first scan: the slot after the next half interval",
        ),
        (
            0.25,
            130,
            225,
            "on schedule: the next slot, one interval on",
        ),
        (
            0.25,
            176,
            325,
            "a slot closer than half an interval is skipped",
        ),
        (
            0.9,
            0,
            90,
            "a late phase: its first slot is within the interval",
        ),
        (0.0, 0, 100, "phase zero: whole intervals"),
    ];
    for (phase, now, due, rule) in rows {
        let at = next_slot(epoch, epoch + s(now), s(100), phase);
        assert_eq!(at - epoch, s(due), "{rule}");
    }
}

#[test]
fn pairs_spread_over_the_interval() {
    let mut deciles = BTreeSet::new();
    for m in 0..40 {
        let p = phase(&(format!("mirror-{m}"), "debian".to_owned()));
        assert!((0.0..1.0).contains(&p), "phase {p} of mirror-{m}");
        deciles.insert((p * 10.0) as u32);
    }
    assert!(deciles.len() >= 8, "40 pairs land in deciles {deciles:?}");
    let pair = ("m".to_owned(), "a".to_owned());
    assert_eq!(phase(&pair), phase(&pair.clone()), "stable");
}
