//! `mirrorfleet validate --probe` against real mirrors on loopback — nginx (HTTP, and HTTPS
//! with a test CA the probe is told to trust), an rsync daemon and vsftpd — with one mirror
//! broken in each way the probe names: a name that does not resolve, an untrusted
//! certificate, a canary of the wrong size, a missing canary (404), rsync down, a server that
//! accepts and never answers, and an IPv6 the mirror declares but does not have. Then the
//! same fleet as a Git repository: `--base` probes only what the working copy adds or
//! changes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mirrorfleet_testkit::git::{commit, origin};
use mirrorfleet_testkit::*;

const CANARY: &[u8] = b"1795309320\n";

/// Loopback servers for every mirror of the fleet.
struct Mirrors {
    _root: tempfile::TempDir,
    web: Server,
    tls: Server,
    untrusted: Server,
    rsync: Server,
    ftp: Server,
    stall: TcpFake,
    closed: u16,
    ca: Tls,
    _untrusted_ca: Tls,
}

fn mirrors() -> Mirrors {
    let root = world_readable_tempdir();
    let t = 1_795_309_320;
    write_tree(
        root.path(),
        &[
            ("origin/TIME", CANARY, t),
            ("good/TIME", CANARY, t),
            ("good/pool/a.deb", b"deb", t),
            ("wrongsize/TIME", b"1795309320 and more\n", t),
            ("missing/pool/a.deb", b"deb", t),
        ],
    );
    let ca = tls_for_loopback("probe test CA");
    let untrusted_ca = tls_for_loopback("nobody trusts this CA");
    let web = nginx(root.path());
    let tls = nginx_tls(root.path(), &ca);
    let untrusted = nginx_tls(root.path(), &untrusted_ca);
    let rsync = rsync_daemon(&[("good", &root.path().join("good"))]);
    let ftp = vsftpd(root.path());
    Mirrors {
        web,
        tls,
        untrusted,
        rsync,
        ftp,
        stall: TcpFake::start(stall),
        closed: free_port(),
        ca,
        _untrusted_ca: untrusted_ca,
        _root: root,
    }
}

fn project(m: &Mirrors) -> String {
    format!(
        "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    http: http://127.0.0.1:{}/origin/\n  canaryFile: TIME\n---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: loopback\nspec:\n  displayName: Loopback\n",
        m.web.port
    )
}

/// A Mirror carrying `demo` at `urls` ((scheme, URL) pairs), over `families`.
fn mirror(name: &str, urls: &[(&str, String)], families: &str) -> String {
    let mut s = format!(
        "apiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: {name}\nspec:\n  sponsorRef: loopback\n  addressFamilies: {families}\n  projects:\n    - project: demo\n"
    );
    for (scheme, url) in urls {
        s.push_str(&format!("      {scheme}: {url}\n"));
    }
    s
}

/// Every mirror of the fleet, by file name: one good, the others broken one way each.
fn fleet(m: &Mirrors) -> Vec<(&'static str, String)> {
    let web = format!("http://127.0.0.1:{}", m.web.port);
    let v4 = "[ipv4]";
    vec![
        ("project.yaml", project(m)),
        (
            "good.yaml",
            mirror(
                "good",
                &[
                    ("http", format!("{web}/good/")),
                    ("https", format!("https://127.0.0.1:{}/good/", m.tls.port)),
                    ("rsync", format!("rsync://127.0.0.1:{}/good/", m.rsync.port)),
                    ("ftp", format!("ftp://127.0.0.1:{}/good/", m.ftp.port)),
                ],
                v4,
            ),
        ),
        (
            "unresolvable.yaml",
            mirror(
                "unresolvable",
                &[(
                    "http",
                    format!("http://mirror.invalid:{}/good/", m.web.port),
                )],
                v4,
            ),
        ),
        (
            "untrusted.yaml",
            mirror(
                "untrusted",
                &[(
                    "https",
                    format!("https://127.0.0.1:{}/good/", m.untrusted.port),
                )],
                v4,
            ),
        ),
        (
            "wrongsize.yaml",
            mirror("wrongsize", &[("http", format!("{web}/wrongsize/"))], v4),
        ),
        (
            "missing.yaml",
            mirror("missing", &[("http", format!("{web}/missing/"))], v4),
        ),
        (
            "rsyncdown.yaml",
            mirror(
                "rsyncdown",
                &[
                    ("http", format!("{web}/good/")),
                    ("rsync", format!("rsync://127.0.0.1:{}/good/", m.closed)),
                ],
                v4,
            ),
        ),
        (
            "stalled.yaml",
            mirror(
                "stalled",
                &[("http", format!("http://127.0.0.1:{}/good/", m.stall.port))],
                v4,
            ),
        ),
        (
            "nov6.yaml",
            mirror("nov6", &[("http", format!("{web}/good/"))], "[ipv4, ipv6]"),
        ),
    ]
}

fn write(dir: &Path, files: &[(&str, String)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Runs `mirrorfleet validate --probe --probe-timeout 2 ARGS` in `dir`, trusting `ca`.
fn probe(dir: &Path, ca: &Tls, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args(["validate", "--probe", "--probe-timeout", "2"])
        .args(args)
        .current_dir(dir)
        .env("SSL_CERT_FILE", &ca.ca)
        .output()
        .unwrap();
    (out, started.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_broken_mirror_fails_in_its_own_way() {
    let m = mirrors();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &fleet(&m));
    let (out, took) = probe(dir.path(), &m.ca, &["--format", "json", "."]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["problems"],
        serde_json::json!([]),
        "the fleet is valid"
    );
    // mirror → (check → reason or "ok")
    let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in report["probes"].as_array().unwrap() {
        let checks = r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let verdict = match c["ok"].as_bool().unwrap() {
                    true => "ok".to_owned(),
                    false => c["reason"].as_str().unwrap().to_owned(),
                };
                (c["check"].as_str().unwrap().to_owned(), verdict)
            })
            .collect();
        assert_eq!(r["change"], "all", "no --base: every mirror");
        seen.insert(r["mirror"].as_str().unwrap().to_owned(), checks);
    }
    let expect = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let rows = [
        (
            "good",
            expect(&[
                ("DNS 127.0.0.1 IPv4", "ok"),
                ("HTTP IPv4 demo", "ok"),
                ("HTTPS IPv4 demo", "ok"),
                ("rsync demo", "ok"),
                ("ftp demo", "ok"),
            ]),
        ),
        (
            "unresolvable",
            expect(&[
                ("DNS mirror.invalid IPv4", "DnsFailed"),
                ("HTTP IPv4 demo", "DnsFailed"),
            ]),
        ),
        (
            "untrusted",
            expect(&[
                ("DNS 127.0.0.1 IPv4", "ok"),
                ("HTTPS IPv4 demo", "TlsFailed"),
            ]),
        ),
        (
            "wrongsize",
            expect(&[
                ("DNS 127.0.0.1 IPv4", "ok"),
                ("HTTP IPv4 demo", "WrongSize"),
            ]),
        ),
        (
            "missing",
            expect(&[
                ("DNS 127.0.0.1 IPv4", "ok"),
                ("HTTP IPv4 demo", "HttpStatus"),
            ]),
        ),
        (
            "rsyncdown",
            expect(&[
                ("DNS 127.0.0.1 IPv4", "ok"),
                ("HTTP IPv4 demo", "ok"),
                ("rsync demo", "rsync:exit"),
            ]),
        ),
        (
            "stalled",
            expect(&[("DNS 127.0.0.1 IPv4", "ok"), ("HTTP IPv4 demo", "Timeout")]),
        ),
        (
            "nov6",
            expect(&[
                ("DNS 127.0.0.1 IPv4", "ok"),
                ("DNS 127.0.0.1 IPv6", "NoAddress"),
                ("HTTP IPv4 demo", "ok"),
                ("HTTP IPv6 demo", "NoAddress"),
            ]),
        ),
    ];
    for (mirror, checks) in &rows {
        assert_eq!(seen.get(*mirror), Some(checks), "mirror {mirror}: {stdout}");
    }
    assert_eq!(seen.len(), rows.len(), "{stdout}");

    let probes = report["probes"].as_array().unwrap();
    let find = |name: &str| probes.iter().find(|r| r["mirror"] == name).unwrap();
    let good_http = &find("good")["checks"][1]["message"];
    assert_eq!(
        good_http.as_str().unwrap(),
        format!(
            "http://127.0.0.1:{}/good/TIME: {} bytes, as at the origin",
            m.web.port,
            CANARY.len()
        )
    );
    let wrong = &find("wrongsize")["checks"][1]["message"];
    assert!(
        wrong
            .as_str()
            .unwrap()
            .ends_with("canary is 20 bytes, expected 11"),
        "{wrong}"
    );
    // Each mirror is bounded by the timeout (2 s), even the one that never answers; and the
    // mirrors are probed at once, not one after the other.
    let stalled = find("stalled")["seconds"].as_f64().unwrap();
    assert!((1.9..3.0).contains(&stalled), "stalled took {stalled} s");
    assert!(
        took < Duration::from_secs(8),
        "the whole probe took {took:?}"
    );
    assert!(
        stderr.contains("probed 8 mirrors: 7 failed (missing, nov6, rsyncdown, stalled, unresolvable, untrusted, wrongsize)"),
        "{stderr}"
    );
}

#[test]
fn with_a_base_only_new_and_changed_mirrors_are_probed() {
    let m = mirrors();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = origin(repo_dir.path());
    let files = fleet(&m);
    let by_name = |n: &str| {
        files
            .iter()
            .find(|(f, _)| *f == n)
            .map(|(f, t)| (format!("fleet/{f}"), t.clone()))
            .unwrap()
    };
    // The base: the project, the good mirror and the one whose canary is missing.
    let base: Vec<(String, String)> = ["project.yaml", "good.yaml", "missing.yaml"]
        .iter()
        .map(|n| by_name(n))
        .collect();
    let base_refs: Vec<(&str, &str)> = base.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
    commit(&repo, &base_refs, false);
    // The pull request: a new mirror, and a change to the good one; `missing` is untouched,
    // so it is not probed (it would fail).
    let fleet_dir = repo_dir.path().join("fleet");
    write(
        &fleet_dir,
        &[
            ("wrongsize.yaml", by_name("wrongsize.yaml").1),
            (
                "good.yaml",
                format!("{}  weight: 50\n", by_name("good.yaml").1),
            ),
        ],
    );
    let (out, _) = probe(repo_dir.path(), &m.ca, &["--base", "HEAD", "fleet"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let headers: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("mirror "))
        .collect();
    assert_eq!(headers.len(), 2, "{stdout}");
    assert!(
        headers[0].starts_with("mirror good (changed): 5 checks passed in "),
        "{stdout}"
    );
    assert!(
        headers[1].starts_with("mirror wrongsize (new): 1 of 2 checks failed in "),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  FAIL  HTTP IPv4 demo: http://127.0.0.1:{}/wrongsize/TIME: canary is 20 bytes, expected 11 [WrongSize]\n",
            m.web.port
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("probed 2 mirrors: 1 failed (wrongsize)"),
        "{stderr}"
    );

    // Once merged, the next pull request against it has nothing new to probe.
    commit(&repo, &[], false);
    let (out, _) = probe(repo_dir.path(), &m.ca, &["--base", "HEAD", "fleet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("probed 0 mirrors: all passed"));

    // A base that is not there is an error that says what to do (exit 2).
    let (out, _) = probe(repo_dir.path(), &m.ca, &["--base", "origin/nope", "fleet"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("origin/nope is not a revision of the Git repository at")
            && err.contains("fetch-depth: 0"),
        "{err}"
    );
}

#[test]
fn bad_probe_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
            .arg("validate")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["--base", "HEAD", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--probe"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--probe", "--probe-timeout", "0", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--probe-timeout"),
        "{}",
        text(&out.stderr)
    );
    // --base outside a Git repository.
    std::fs::write(dir.path().join("x.yaml"), "").unwrap();
    let out = run(&["--probe", "--base", "HEAD", "x.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not in a Git repository"),
        "{}",
        text(&out.stderr)
    );
}
