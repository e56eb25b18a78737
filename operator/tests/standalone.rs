//! `mirrorfleet standalone` end to end: manifests with a local source and a mirror served by
//! nginx (downloads, health probes) and a real rsync daemon (scans); the process indexes the
//! source, scans the mirror and redirects to it — and stops when the mirror goes down, and
//! starts again once it is back; aria2 downloads through its metalink.

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
    let web_port = free_port();
    let web = nginx_on(&root.path().join("mirror"), web_port);
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("fleet.yaml"),
        format!(
            "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    local: {src}\n  fallbacks:\n    - url: https://origin.example/demo/\n\
             ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n\
             ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: loop\nspec:\n  sponsorRef: s\n  addressFamilies: [ipv4]\n  healthCheck:\n    intervalSeconds: 1\n    timeoutSeconds: 1\n  projects:\n    - project: demo\n      http: http://127.0.0.1:{web_port}/\n      rsync: rsync://127.0.0.1:{port}/mirror/\n",
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
    let mirror_a = format!("http://127.0.0.1:{web_port}/pool/a.deb");
    let origin_a = "https://origin.example/demo/pool/a.deb".to_owned();
    // Polls until `/demo/pool/a.deb` redirects to `want`; returns how long it took.
    let until = |want: &str, limit: Duration| -> Result<Duration, Option<(u16, String)>> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            last = get("/demo/pool/a.deb");
            if last.as_ref().is_some_and(|(s, l)| *s == 302 && l == want) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last)
    };
    let first = until(&mirror_a, Duration::from_secs(30));
    // A real metalink client: aria2 reads `a.deb.meta4`, downloads from the mirror it lists
    // and checks the file against the SHA-256 in it.
    let downloads = tempfile::tempdir().unwrap();
    let aria2 = std::process::Command::new(find("aria2c"))
        .args([
            "--no-conf=true",
            "--check-integrity=true",
            "--follow-metalink=mem",
            "--max-tries=1",
            "--connect-timeout=5",
            "--timeout=10",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--dir",
        ])
        .arg(downloads.path())
        .arg(format!("http://127.0.0.1:{port}/demo/pool/a.deb.meta4"))
        .output()
        .unwrap();
    let fetched = std::fs::read(downloads.path().join("a.deb")).ok();
    let b = get("/demo/pool/b.deb");
    let missing = get("/demo/pool/none.deb");
    // The mirror goes down: out of rotation (the origin serves) within 10 s…
    drop(web);
    let down = until(&origin_a, Duration::from_secs(20));
    // …and back once it answers again (three good probes).
    let web = nginx_on(&root.path().join("mirror"), web_port);
    let up = until(&mirror_a, Duration::from_secs(20));
    drop(web);
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.is_ok(), "the mirror holds a.deb: {first:?}");
    assert!(
        aria2.status.success(),
        "aria2c failed on the metalink: {}{}",
        String::from_utf8_lossy(&aria2.stdout),
        String::from_utf8_lossy(&aria2.stderr)
    );
    assert_eq!(
        fetched.as_deref(),
        Some(&b"aaaa"[..]),
        "aria2c fetched the file"
    );
    assert_eq!(
        b,
        Some((302, "https://origin.example/demo/pool/b.deb".to_owned())),
        "the mirror lacks b.deb: the origin"
    );
    let down = down.expect("a mirror that stops answering leaves rotation");
    assert!(
        down < Duration::from_secs(10),
        "out of rotation in {down:?}"
    );
    assert!(up.is_ok(), "back in rotation once it answers: {up:?}");
    assert_eq!(missing.map(|(s, _)| s), Some(404));
}
