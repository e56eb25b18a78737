//! Scans against real servers on loopback — an rsync daemon, nginx with autoindex, vsftpd —
//! over complete, partial, stale and size-mismatched mirrors, and against hostile servers
//! that stall, send garbage or never stop.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use mirrorfleet_crds::state::{
    FileIndex, HashKind, MirrorProjectState, MirrorState, PathClasses, ProjectState, ScanCounts,
    SourceState,
};
use mirrorfleet_scan::{Limits, ScanError, compare, ftp, http, rsync, run, source};
use mirrorfleet_store::{EmbeddedStore, StateReader, StateWriter};
use mirrorfleet_testkit::*;

const T: i64 = 1_795_309_320; // 2026-11-22 01:02:00 UTC, on a minute boundary

fn source_files() -> Vec<(&'static str, Vec<u8>, i64)> {
    vec![
        ("pool/main/a.deb", vec![b'a'; 1000], T),
        ("pool/main/b.deb", vec![b'b'; 2000], T),
        ("pool/main/sub dir/ü c.deb", vec![b'c'; 3000], T),
        ("iso/big.iso", vec![b'i'; 100_000], T),
        ("dists/stable/InRelease", b"Release: new".to_vec(), T + 600),
        ("trace", b"1795309320\n".to_vec(), T),
    ]
}

/// The source tree and four mirrors under one directory: complete, partial (b.deb missing),
/// stale (old InRelease) and mismatched (big.iso truncated).
fn fleet_tree() -> (tempfile::TempDir, FileIndex) {
    let root = world_readable_tempdir();
    let files = source_files();
    let as_refs = |v: &[(&'static str, Vec<u8>, i64)]| {
        v.iter()
            .map(|(p, c, m)| (*p, c.clone(), *m))
            .collect::<Vec<_>>()
    };
    let write = |dir: &str, v: &[(&'static str, Vec<u8>, i64)]| {
        let owned = as_refs(v);
        let refs: Vec<(&str, &[u8], i64)> = owned
            .iter()
            .map(|(p, c, m)| (*p, c.as_slice(), *m))
            .collect();
        write_tree(&root.path().join(dir), &refs);
    };
    write("source", &files);
    write("complete", &files);
    write(
        "partial",
        &files
            .iter()
            .filter(|f| f.0 != "pool/main/b.deb")
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut stale = files.clone();
    stale[4] = (
        "dists/stable/InRelease",
        b"Release: old".to_vec(),
        T - 86_400,
    );
    write("stale", &stale);
    let mut mismatched = files.clone();
    mismatched[3] = ("iso/big.iso", vec![b'i'; 50_000], T);
    write("mismatched", &mismatched);
    let scan = source::scan_local(
        "demo",
        &root.path().join("source"),
        &[HashKind::Sha256],
        None,
        &Limits::default(),
        false,
    )
    .unwrap();
    (root, scan.index)
}

fn classes() -> PathClasses {
    PathClasses::new(&["dists/*/InRelease".into()], &[]).unwrap()
}

fn counts(files: u64, missing: u64, mismatched: u64) -> (u64, u64, u64) {
    (files, missing, mismatched)
}

fn short(c: ScanCounts) -> (u64, u64, u64) {
    (c.files, c.missing, c.mismatched)
}

fn quick() -> Limits {
    Limits {
        io_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(20),
        ..Limits::default()
    }
}

const EXPECTED: [(&str, (u64, u64, u64)); 4] = [
    ("complete", (6, 0, 0)),
    ("partial", (5, 1, 0)),
    ("stale", (5, 0, 1)),
    ("mismatched", (5, 0, 1)),
];

#[tokio::test]
async fn rsync_daemon_mirrors() {
    let (root, index) = fleet_tree();
    let modules: Vec<(&str, std::path::PathBuf)> = EXPECTED
        .iter()
        .map(|(m, _)| (*m, root.path().join(m)))
        .collect();
    let refs: Vec<(&str, &Path)> = modules.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let daemon = rsync_daemon(&refs);
    for (mirror, expected) in EXPECTED {
        let listing = rsync::list(
            &format!("rsync://127.0.0.1:{}/{mirror}/", daemon.port),
            &quick(),
        )
        .await
        .unwrap();
        let c = compare::compare(&index, &listing, &classes(), &[]);
        assert_eq!(short(c.counts), expected, "{mirror}");
    }
    let listing = rsync::list(
        &format!("rsync://127.0.0.1:{}/complete/", daemon.port),
        &quick(),
    )
    .await
    .unwrap();
    assert!(
        listing
            .files
            .iter()
            .any(|f| f.path == "pool/main/sub dir/ü c.deb" && f.size == 3000 && f.mtime == Some(T))
    );
    let err = rsync::list(
        &format!("rsync://127.0.0.1:{}/nosuchmodule/", daemon.port),
        &quick(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::Exit {
                program: "rsync",
                ..
            }
        ),
        "{err}"
    );
    let limited = Limits {
        max_entries: 3,
        ..quick()
    };
    let err = rsync::list(
        &format!("rsync://127.0.0.1:{}/complete/", daemon.port),
        &limited,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::Limit {
                what: "entries",
                limit: 3
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn nginx_autoindex_mirrors() {
    let (root, index) = fleet_tree();
    let server = nginx(root.path());
    let client = http::client(Duration::from_secs(2)).unwrap();
    for (mirror, expected) in EXPECTED {
        let listing = http::crawl(
            &client,
            &format!("http://127.0.0.1:{}/{mirror}/", server.port),
            &quick(),
        )
        .await
        .unwrap();
        assert!(listing.exact_sizes);
        let c = compare::compare(&index, &listing, &classes(), &[]);
        assert_eq!(short(c.counts), expected, "{mirror}");
    }
    let limited = Limits {
        max_requests: 2,
        ..quick()
    };
    let err = http::crawl(
        &client,
        &format!("http://127.0.0.1:{}/complete/", server.port),
        &limited,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::Limit {
                what: "requests",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn vsftpd_mirrors() {
    let (root, index) = fleet_tree();
    let server = vsftpd(root.path());
    for (mirror, expected) in EXPECTED {
        let listing = ftp::list(
            &format!("ftp://127.0.0.1:{}/{mirror}/", server.port),
            &quick(),
        )
        .await
        .unwrap();
        let c = compare::compare(&index, &listing, &classes(), &[]);
        assert_eq!(short(c.counts), expected, "{mirror}");
    }
}

#[tokio::test]
async fn hostile_servers_end_the_scan_with_a_clear_error() {
    let limits = Limits {
        io_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(5),
        max_entries: 10_000,
        ..Limits::default()
    };
    let stall = TcpFake::start(stall);
    let err = rsync::list(&format!("rsync://127.0.0.1:{}/m/", stall.port), &limits)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::Exit { .. } | ScanError::Stalled(_) | ScanError::Deadline(_)
        ),
        "{err}"
    );

    let client = http::client(Duration::from_secs(1)).unwrap();
    let garbage = TcpFake::start(http_garbage);
    let err = http::crawl(
        &client,
        &format!("http://127.0.0.1:{}/", garbage.port),
        &limits,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ScanError::Garbage { .. }), "{err}");
    let mid = TcpFake::start(http_stall_mid_page);
    let err = http::crawl(&client, &format!("http://127.0.0.1:{}/", mid.port), &limits)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("timed out") || matches!(err, ScanError::Deadline(_)),
        "{err}"
    );
    let endless = TcpFake::start(http_endless);
    let err = http::crawl(
        &client,
        &format!("http://127.0.0.1:{}/", endless.port),
        &limits,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    let err = http::crawl(
        &client,
        &format!("http://127.0.0.1:{}/", stall.port),
        &limits,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("timed out") || matches!(err, ScanError::Deadline(_)),
        "{err}"
    );

    let ftp_server = TcpFake::start(ftp_hostile);
    let err = ftp::list(
        &format!("ftp://127.0.0.1:{}/endless/", ftp_server.port),
        &limits,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::Limit {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
    let err = ftp::list(
        &format!("ftp://127.0.0.1:{}/garbage/", ftp_server.port),
        &limits,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ScanError::Garbage { .. }), "{err}");
    let err = ftp::list(
        &format!("ftp://127.0.0.1:{}/stall/", ftp_server.port),
        &limits,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ScanError::Stalled(_)), "{err}");
    let err = ftp::list(&format!("ftp://127.0.0.1:{}/", stall.port), &limits)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ScanError::Stalled(_) | ScanError::Ftp { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_scan_keeps_the_previous_availability() {
    let (root, index) = fleet_tree();
    let daemon = rsync_daemon(&[("complete", &root.path().join("complete"))]);
    let state = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(state.path()).unwrap();
    let writer = StateWriter::new(store.clone());
    let project = ProjectState {
        name: "demo".into(),
        hashes: vec![HashKind::Sha256],
        mutable: vec!["dists/*/InRelease".into()],
        ..Default::default()
    };
    let mut mirror = MirrorState {
        name: "m".into(),
        projects: vec![MirrorProjectState {
            project: "demo".into(),
            rsync: Some(format!("rsync://127.0.0.1:{}/complete/", daemon.port)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let ok = run::scan_mirror(&writer, &mirror, &project, &index, &quick(), 100)
        .await
        .unwrap();
    assert_eq!(ok.protocol, "rsync");
    assert_eq!(short(ok.availability.counts), counts(6, 0, 0));
    let stall = TcpFake::start(stall);
    mirror.projects[0].rsync = Some(format!("rsync://127.0.0.1:{}/complete/", stall.port));
    let limits = Limits {
        io_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(3),
        ..Limits::default()
    };
    let err = run::scan_mirror(&writer, &mirror, &project, &index, &limits, 200)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("scan of mirror m, project demo failed: rsync: "),
        "{err}"
    );
    let (loaded, _) = StateReader::new(store).load().await.unwrap();
    let kept = &loaded.availability[&("m".into(), "demo".into())];
    assert_eq!(
        (kept.scanned_at, kept.counts.files),
        (100, 6),
        "the good availability stays"
    );
}

#[test]
fn source_scans_are_incremental_and_safe_with_symlinks() {
    let outside = world_readable_tempdir();
    std::fs::write(outside.path().join("secret"), b"do not index").unwrap();
    let root = world_readable_tempdir();
    write_tree(
        root.path(),
        &[
            ("a/one", b"1", T),
            ("a/two", b"22", T),
            ("dists/stable/InRelease", b"v1", T),
        ],
    );
    std::os::unix::fs::symlink("one", root.path().join("a/link-inside")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        root.path().join("a/link-outside"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("dirlink")).unwrap();
    std::os::unix::fs::symlink("..", root.path().join("a/loop")).unwrap();
    let kinds = [HashKind::Sha256, HashKind::Md5];
    let first =
        source::scan_local("p", root.path(), &kinds, None, &Limits::default(), false).unwrap();
    let paths: Vec<&str> = first.index.iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        ["a/link-inside", "a/one", "a/two", "dists/stable/InRelease"]
    );
    let why: Vec<(&str, &str)> = first
        .skipped
        .iter()
        .map(|(p, w)| (p.as_str(), *w))
        .collect();
    assert!(why.contains(&("a/link-outside", "symlink leading outside the tree")));
    assert!(why.contains(&("dirlink", "symlink leading outside the tree")));
    assert!(why.contains(&("a/loop", "symlink to a directory (not followed)")));
    assert_eq!(first.hashed_files, 4);
    let one = first.index.find("a/one").unwrap();
    assert_eq!(
        first
            .index
            .find("a/link-inside")
            .unwrap()
            .digest(HashKind::Sha256),
        one.digest(HashKind::Sha256)
    );

    write_tree(root.path(), &[("a/two", b"333", T + 1)]);
    let second = source::scan_local(
        "p",
        root.path(),
        &kinds,
        Some(&first.index),
        &Limits::default(),
        false,
    )
    .unwrap();
    assert_eq!(
        (second.hashed_files, second.reused),
        (1, 3),
        "only the changed file is hashed again"
    );
    assert_ne!(second.index.serial, first.index.serial);
    assert_eq!(
        second.index.find("a/one").unwrap().id,
        one.id,
        "ids are stable"
    );

    let classes = PathClasses::new(&["dists/*/InRelease".into()], &[]).unwrap();
    assert!(
        source::recheck_mutable(root.path(), &second.index, &classes)
            .unwrap()
            .is_none()
    );
    write_tree(root.path(), &[("dists/stable/InRelease", b"v2!", T + 5)]);
    let rechecked = source::recheck_mutable(root.path(), &second.index, &classes)
        .unwrap()
        .unwrap();
    let e = rechecked.find("dists/stable/InRelease").unwrap();
    assert_eq!((e.size, e.mtime), (3, T + 5));
}

#[tokio::test]
async fn upstream_sources_take_digests_from_checksum_files() {
    let root = world_readable_tempdir();
    let iso = vec![b'x'; 4096];
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(&iso).to_vec()
    };
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let sums = format!("{hex}  big.iso\n");
    write_tree(
        root.path(),
        &[
            ("releases/big.iso", &iso, T),
            ("releases/SHA256SUMS", sums.as_bytes(), T),
            ("other.txt", b"no sum", T),
        ],
    );
    let daemon = rsync_daemon(&[("up", root.path())]);
    let project = ProjectState {
        name: "up".into(),
        hashes: vec![HashKind::Sha256],
        source: SourceState {
            rsync: Some(format!("rsync://127.0.0.1:{}/up/", daemon.port)),
            checksum_files: vec![("**/SHA256SUMS".into(), HashKind::Sha256)],
            ..Default::default()
        },
        ..Default::default()
    };
    let index = run::scan_source(&project, None, &quick(), false)
        .await
        .unwrap();
    assert_eq!(index.len(), 3);
    assert_eq!(
        index
            .find("releases/big.iso")
            .unwrap()
            .digest(HashKind::Sha256),
        Some(digest.as_slice())
    );
    assert_eq!(
        index.find("other.txt").unwrap().digest(HashKind::Sha256),
        None
    );
}

#[tokio::test]
async fn trace_only_mirrors_are_trusted_up_to_their_last_sync() {
    let root = world_readable_tempdir();
    write_tree(
        &root.path().join("fresh"),
        &[
            ("a.iso", b"aaaa", T),
            ("project/trace/host", b"Sun Nov 22 01:12:00 UTC 2026\n", T),
        ],
    );
    write_tree(
        &root.path().join("old"),
        &[
            ("a.iso", b"aaaa", T),
            ("project/trace/host", b"Sat Nov 21 01:00:00 UTC 2026\n", T),
        ],
    );
    let index = source::scan_local(
        "p",
        &root.path().join("fresh"),
        &[HashKind::Sha256],
        None,
        &Limits::default(),
        false,
    )
    .unwrap()
    .index;
    let server = nginx(root.path());
    let state = tempfile::tempdir().unwrap();
    let writer = StateWriter::new(EmbeddedStore::open(state.path()).unwrap());
    let project = ProjectState {
        name: "p".into(),
        trace_file: Some("project/trace/host".into()),
        ..Default::default()
    };
    let mirror = |dir: &str| MirrorState {
        name: dir.into(),
        scan_protocols: vec!["trace".into()],
        projects: vec![MirrorProjectState {
            project: "p".into(),
            https: None,
            http: Some(format!("http://127.0.0.1:{}/{dir}/", server.port)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let now = T + 3600;
    let ok = run::scan_mirror(&writer, &mirror("fresh"), &project, &index, &quick(), now)
        .await
        .unwrap();
    assert_eq!(
        (
            ok.protocol,
            ok.availability.counts.files,
            ok.availability.last_sync
        ),
        ("trace", 2, Some(T + 600))
    );
    // Scanned before the time its trace claims (a wrong clock, a hostile mirror): the sync
    // counts as "by now", never as newer than the scan.
    let early = run::scan_mirror(
        &writer,
        &mirror("fresh"),
        &project,
        &index,
        &quick(),
        T + 300,
    )
    .await
    .unwrap();
    assert_eq!(early.availability.last_sync, Some(T + 300));
    let err = run::scan_mirror(&writer, &mirror("old"), &project, &index, &quick(), now)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is older than the source's newest file"),
        "{err}"
    );
}

#[test]
fn a_file_modified_within_the_settle_time_keeps_its_previous_version_or_stays_out() {
    let root = world_readable_tempdir();
    write_tree(
        root.path(),
        &[("old.iso", b"old", T), ("grows.iso", b"gr", T)],
    );
    let kinds = [HashKind::Sha256];
    let settling = Limits {
        settle: Duration::from_secs(60),
        ..Limits::default()
    };
    let first = source::scan_local("p", root.path(), &kinds, None, &settling, false).unwrap();
    assert_eq!(first.index.len(), 2, "files of long ago are settled");
    assert!(first.unsettled.is_empty());

    // Being written now (its mtime is the current time): one file grows, one appears.
    std::fs::write(root.path().join("grows.iso"), b"growing").unwrap();
    std::fs::write(root.path().join("new.iso"), b"half").unwrap();
    let second = source::scan_local(
        "p",
        root.path(),
        &kinds,
        Some(&first.index),
        &settling,
        false,
    )
    .unwrap();
    assert_eq!(second.unsettled, ["grows.iso", "new.iso"]);
    assert_eq!(
        second.index.find("grows.iso").map(|e| e.size),
        Some(2),
        "the previous version stands"
    );
    assert!(second.index.find("new.iso").is_none(), "a new file waits");

    let taken = source::scan_local(
        "p",
        root.path(),
        &kinds,
        Some(&second.index),
        &Limits::default(),
        false,
    )
    .unwrap();
    assert_eq!(
        taken.index.find("new.iso").map(|e| e.size),
        Some(4),
        "no settle time"
    );
}
