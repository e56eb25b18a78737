//! `mirrorfleet standalone` end to end: manifests with a local source and a mirror served by a
//! real rsync daemon; the process indexes the source, scans the mirror and redirects to it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn standalone_indexes_scans_and_redirects() {
    let root = world_readable_tempdir();
    let t = 1_795_309_320;
    write_tree(
        &root.path().join("source"),
        &[("pool/a.deb", b"aaaa", t), ("pool/b.deb", b"bbbbbb", t)],
    );
    write_tree(&root.path().join("mirror"), &[("pool/a.deb", b"aaaa", t)]);
    let daemon = rsync_daemon(&[("mirror", &root.path().join("mirror"))]);
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("fleet.yaml"),
        format!(
            "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    local: {src}\n  fallbacks:\n    - url: https://origin.example/demo/\n\
             ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n\
             ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: loop\nspec:\n  sponsorRef: s\n  projects:\n    - project: demo\n      https: https://loop.example/demo/\n      rsync: rsync://127.0.0.1:{port}/mirror/\n",
            src = root.path().join("source").display(),
            port = daemon.port
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args([
            "standalone",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--manifests",
        ])
        .arg(manifests.path())
        .arg("--state-dir")
        .arg(state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split(' ').nth(1)?.parse().ok()?;
        let location = out
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_default()
            .to_owned();
        Some((status, location))
    };
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(30) {
        last = get("/demo/pool/a.deb");
        if last
            .as_ref()
            .is_some_and(|(s, l)| *s == 302 && l.contains("loop.example"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = get("/demo/pool/b.deb");
    let missing = get("/demo/pool/none.deb");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        last,
        Some((302, "https://loop.example/demo/pool/a.deb".to_owned())),
        "the mirror holds a.deb"
    );
    assert_eq!(
        b,
        Some((302, "https://origin.example/demo/pool/b.deb".to_owned())),
        "the mirror lacks b.deb: the origin"
    );
    assert_eq!(missing.map(|(s, _)| s), Some(404));
}
