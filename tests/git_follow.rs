//! `mirrorfleet standalone` following a Git repository: a commit applies, a commit with
//! invalid resources is reported with its id and the last good fleet stays in force, the
//! fixed commit applies.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use mirrorfleet_testkit::git::{commit, origin};
use mirrorfleet_testkit::*;

fn fleet(source_dir: &Path, fallback: &str, broken: bool) -> String {
    let mut s = format!(
        "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    local: {}\n  fallbacks:\n    - url: {fallback}\n",
        source_dir.display()
    );
    if broken {
        s.push_str("---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: orphan\nspec:\n  sponsorRef: nobody\n  projects:\n    - project: demo\n      https: https://orphan.example/demo/\n");
    }
    s
}

#[test]
fn standalone_follows_a_repository_and_keeps_the_last_good_fleet() {
    let root = world_readable_tempdir();
    let t = 1_795_309_320;
    write_tree(&root.path().join("source"), &[("f.iso", b"iso", t)]);
    let remote_dir = tempfile::tempdir().unwrap();
    let repo = origin(remote_dir.path());
    let src = root.path().join("source");
    commit(
        &repo,
        &[(
            "fleet/fleet.yaml",
            &fleet(&src, "https://a.example/demo/", false),
        )],
        false,
    );
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args(["standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--git", &remote_dir.path().display().to_string()])
        .args(["--manifests", "fleet", "--git-interval", "1"])
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The log, line by line, for the "kept the last good fleet" report.
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let _child = KillOnDrop(child);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let location = || -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET /demo/f.iso HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines()
            .find_map(|l| l.strip_prefix("location: "))
            .map(str::to_owned)
    };
    let until = |want: &str, what: &str| {
        wait_for_blocking(what, Duration::from_secs(30), || match location() {
            Some(l) if l == want => Ok(()),
            last => Err(format!("{last:?}")),
        })
    };
    until("https://a.example/demo/f.iso", "the first commit to apply");
    // A commit with a broken resource (and a new fallback): reported, not applied.
    let bad = commit(
        &repo,
        &[(
            "fleet/fleet.yaml",
            &fleet(&src, "https://b.example/demo/", true),
        )],
        false,
    );
    let mut lines = Vec::new();
    let reported = wait_for_blocking(
        "the broken commit to be reported with its id",
        Duration::from_secs(30),
        || match log_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains(&bad) && line.contains("keeping the last good fleet") => {
                Ok(line)
            }
            Ok(line) => {
                lines.push(line);
                Err(format!(
                    "{} log lines, the last: {:?}",
                    lines.len(),
                    lines.last()
                ))
            }
            Err(e) => Err(format!("no line ({e}) after {:?}", lines.last())),
        },
    );
    assert!(
        reported.contains("Sponsor/nobody does not exist"),
        "{reported}"
    );
    // Reported means that commit was handled: the last good fleet still serves.
    assert_eq!(
        location().as_deref(),
        Some("https://a.example/demo/f.iso"),
        "last good fleet"
    );
    // Fixed in the next commit: applied.
    commit(
        &repo,
        &[(
            "fleet/fleet.yaml",
            &fleet(&src, "https://b.example/demo/", false),
        )],
        false,
    );
    until("https://b.example/demo/f.iso", "the fixed commit to apply");
}
