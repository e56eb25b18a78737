//! The Git source against real repositories made by the test: clone, fast-forward, a
//! rewritten branch, precise errors; then standalone mode following a repository, where a
//! commit with invalid resources is reported and the last good fleet stays in force.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use git2::{Repository, RepositoryInitOptions, Signature};
use mirrorfleet_operator::gitsource::{GitError, GitSource};
use support::*;

/// A repository with `main` checked out.
fn origin(dir: &Path) -> Repository {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head("main");
    Repository::init_opts(dir, &opts).unwrap()
}

/// Writes `files` and commits them all (on top of `parent`, or as a new root).
fn commit(repo: &Repository, files: &[(&str, &str)], root: bool) -> String {
    let workdir = repo.workdir().unwrap().to_owned();
    for (path, text) in files {
        let p = workdir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("t", "t@example.invalid").unwrap();
    let parent = if root {
        None
    } else {
        repo.head().ok().and_then(|h| h.peel_to_commit().ok())
    };
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let oid = if root {
        // A rewritten history: a new root commit the branch is forced to.
        let oid = repo
            .commit(None, &sig, &sig, "rewrite", &tree, &[])
            .unwrap();
        repo.reference("refs/heads/main", oid, true, "rewrite")
            .unwrap();
        oid
    } else {
        repo.commit(Some("HEAD"), &sig, &sig, "change", &tree, &parents)
            .unwrap()
    };
    oid.to_string()
}

fn source(url: &Path, checkout: &Path, path: &str) -> GitSource {
    GitSource {
        url: url.display().to_string(),
        branch: "main".into(),
        path: path.into(),
        checkout: checkout.to_owned(),
        ssh_key: None,
        token_file: None,
    }
}

#[test]
fn clone_fast_forward_rewrite_and_errors() {
    let remote_dir = tempfile::tempdir().unwrap();
    let repo = origin(remote_dir.path());
    let c1 = commit(&repo, &[("fleet/a.yaml", "a: 1\n")], false);
    let local = tempfile::tempdir().unwrap();
    let checkout = local.path().join("wc");
    let src = source(remote_dir.path(), &checkout, "fleet");

    let first = src.sync().unwrap();
    assert_eq!((first.commit.as_str(), first.changed), (c1.as_str(), true));
    assert_eq!(
        std::fs::read_to_string(first.dir.join("a.yaml")).unwrap(),
        "a: 1\n"
    );
    assert!(!src.sync().unwrap().changed, "nothing new");

    let c2 = commit(&repo, &[("fleet/b.yaml", "b: 2\n")], false);
    let second = src.sync().unwrap();
    assert_eq!(
        (second.commit.as_str(), second.changed),
        (c2.as_str(), true)
    );
    assert!(second.dir.join("b.yaml").exists(), "fast-forwarded");

    // The branch is force-pushed to unrelated history: the working copy follows it.
    let c3 = commit(&repo, &[("fleet/a.yaml", "a: 3\n")], true);
    let third = src.sync().unwrap();
    assert_eq!(third.commit, c3);
    assert_eq!(
        std::fs::read_to_string(third.dir.join("a.yaml")).unwrap(),
        "a: 3\n"
    );

    // Errors name what is wrong.
    let no_path = source(remote_dir.path(), &checkout, "elsewhere")
        .sync()
        .unwrap_err();
    assert!(matches!(no_path, GitError::NoPath { .. }), "{no_path}");
    assert!(no_path.to_string().contains("elsewhere"), "{no_path}");
    let mut other = source(remote_dir.path(), &local.path().join("wc2"), "fleet");
    other.branch = "nope".into();
    let no_branch = other.sync().unwrap_err();
    assert!(no_branch.to_string().contains("nope"), "{no_branch}");
    let missing = source(&local.path().join("missing"), &local.path().join("wc3"), "")
        .sync()
        .unwrap_err();
    assert!(
        missing.to_string().starts_with("git clone of "),
        "{missing}"
    );
    let mut token = source(remote_dir.path(), &local.path().join("wc4"), "fleet");
    token.token_file = Some(local.path().join("no-token"));
    let unreadable = token.sync().unwrap_err();
    assert!(unreadable.to_string().contains("no-token"), "{unreadable}");
}

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
                Err(format!("{} log lines, the last: {:?}", lines.len(), lines.last()))
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
