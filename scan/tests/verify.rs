//! Targeted checks against a real nginx mirror and the embedded store: an index change makes
//! the mirror's new files and rewritten metadata proven by HEAD as soon as the mirror serves
//! them (nothing before), and reports the checks cannot answer go on for a full scan.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{
    Availability, FleetState, HashKind, MirrorProjectState, MirrorState, ProjectState,
};
use mirrorfleet_scan::{Limits, run, source, verify};
use mirrorfleet_store::{EmbeddedStore, LoadedState, StateWriter};
use mirrorfleet_testkit::*;
use tokio::sync::{mpsc, watch};

const T: i64 = 1_795_309_320;

fn index_of(
    root: &std::path::Path,
    previous: Option<&mirrorfleet_crds::state::FileIndex>,
) -> mirrorfleet_crds::state::FileIndex {
    source::scan_local(
        "p",
        root,
        &[HashKind::Sha256],
        previous,
        &Limits::default(),
        false,
    )
    .unwrap()
    .index
}

async fn wait_for(
    state: &mut watch::Receiver<Arc<LoadedState>>,
    what: &str,
    cond: impl Fn(&LoadedState) -> bool,
) -> Arc<LoadedState> {
    match tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| cond(s))).await {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("timed out waiting for {what}"),
    }
}

fn avail<'a>(s: &'a LoadedState, mirror: &str) -> Option<&'a Availability> {
    s.availability
        .get(&(mirror.to_owned(), "p".to_owned()))
        .map(|a| &**a)
}

#[tokio::test]
async fn index_changes_are_proven_on_the_mirror_as_soon_as_it_serves_them() {
    let root = world_readable_tempdir();
    let (src, mir) = (root.path().join("source"), root.path().join("m"));
    let v1: &[(&str, &[u8], i64)] = &[
        ("pool/a.deb", b"aaaa", T),
        ("dists/stable/InRelease", b"Release: one", T),
    ];
    write_tree(&src, v1);
    write_tree(&mir, v1);
    let server = nginx(root.path());
    let project = ProjectState {
        name: "p".into(),
        mutable: vec!["dists/**".into()],
        ..Default::default()
    };
    let carried = |http: Option<String>, rsync: Option<String>| MirrorProjectState {
        project: "p".into(),
        http,
        rsync,
        ..Default::default()
    };
    let http_mirror = MirrorState {
        name: "m".into(),
        projects: vec![carried(
            Some(format!("http://127.0.0.1:{}/m/", server.port)),
            None,
        )],
        ..Default::default()
    };
    let rsync_only = MirrorState {
        name: "r".into(),
        projects: vec![carried(None, Some("rsync://127.0.0.1:1/none/".into()))],
        ..Default::default()
    };
    let fleet = FleetState {
        projects: vec![project.clone()],
        mirrors: vec![http_mirror.clone(), rsync_only],
        ..Default::default()
    };

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let writer = StateWriter::new(store.clone());
    writer.write_fleet(&fleet).await.unwrap();
    let index1 = index_of(&src, None);
    writer.write_index(&index1, T).await.unwrap();
    let limits = Limits {
        io_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let scanned = run::scan_mirror(&writer, &http_mirror, &project, &index1, &limits, T)
        .await
        .unwrap();
    assert_eq!(scanned.availability.counts.files, 2);

    let mut state = mirrorfleet_store::follow(store.clone(), Duration::from_secs(300)).await;
    wait_for(&mut state, "the scanned mirror", |s| {
        avail(s, "m").is_some()
    })
    .await;
    let (_fleet_tx, fleet_rx) = watch::channel(Arc::new(fleet));
    let (reports_tx, reports_rx) = mpsc::channel(8);
    let (scans_tx, mut scans_rx) = mpsc::channel(8);
    let _driver = tokio::spawn(verify::follow(
        fleet_rx,
        state.clone(),
        writer.clone(),
        reports_rx,
        scans_tx,
        verify::Settings::default(),
    ));

    // Publish: a new package and metadata rewritten in place. The mirror has synced only the
    // package so far.
    write_tree(
        &src,
        &[
            ("pool/b.deb", b"bbbbbb", T + 60),
            ("dists/stable/InRelease", b"Release: two!", T + 60),
        ],
    );
    write_tree(&mir, &[("pool/b.deb", b"bbbbbb", T + 60)]);
    let index2 = index_of(&src, Some(&index1));
    assert_ne!(index2.serial, index1.serial);
    writer.write_index(&index2, T + 60).await.unwrap();
    let b = index2.find("pool/b.deb").unwrap().id;
    let release = index2.find("dists/stable/InRelease").unwrap();
    let (rid, rsize, rmtime) = (release.id, release.size, release.mtime);

    // The round that proved the package also looked at the metadata (metadata first) and
    // found the old version: it is not proven.
    let s = wait_for(&mut state, "the new package proven", |s| {
        avail(s, "m").is_some_and(|a| a.present.contains(b))
    })
    .await;
    let a = avail(&s, "m").unwrap();
    assert!(
        !a.holds_version(rid, rsize, rmtime),
        "old metadata proven as new"
    );
    assert_eq!(
        a.serial, index1.serial,
        "serial moved on before everything was proven"
    );

    // The mirror syncs the metadata: proven on a later round, and the serial moves on.
    write_tree(
        &mir,
        &[("dists/stable/InRelease", b"Release: two!", T + 60)],
    );
    let s = wait_for(&mut state, "the rewritten metadata proven", |s| {
        avail(s, "m").is_some_and(|a| a.holds_version(rid, rsize, rmtime))
    })
    .await;
    let a = avail(&s, "m").unwrap();
    assert_eq!(a.serial, index2.serial);
    assert_eq!((a.counts.files, a.counts.bytes), (3, 4 + 6 + 13));

    // A report from a mirror that serves nothing over HTTP, or was never scanned, is passed
    // on for a full scan.
    reports_tx.send(("r".into(), "p".into())).await.unwrap();
    let forwarded = tokio::time::timeout(Duration::from_secs(10), scans_rx.recv())
        .await
        .unwrap();
    assert_eq!(forwarded, Some(("r".to_owned(), "p".to_owned())));
    // A report from the mirror already proven current needs nothing more.
    reports_tx.send(("m".into(), "p".into())).await.unwrap();
    reports_tx.send(("r".into(), "p".into())).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), scans_rx.recv())
        .await
        .unwrap();
    assert_eq!(
        next,
        Some(("r".to_owned(), "p".to_owned())),
        "the current mirror was sent to a scan"
    );
}
