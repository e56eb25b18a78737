//! `mirrorfleet standalone` end to end: manifests with a local source and a mirror served by
//! nginx (downloads, health probes) and a real rsync daemon (scans); the process indexes the
//! source, scans the mirror and redirects to it — and stops when the mirror goes down, and
//! starts again once it is back; aria2 downloads through its metalink, and apt updates through
//! its `mirror+` list.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mirrorfleet_testkit::*;

/// `mirrorfleet standalone` on `127.0.0.1:port` with these manifests, state and environment.
fn standalone(
    manifests: &std::path::Path,
    state: &std::path::Path,
    port: u16,
    env: &[(&str, &std::ffi::OsStr)],
) -> KillOnDrop {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args(["standalone", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--manifests")
        .arg(manifests)
        .arg("--state-dir")
        .arg(state)
        .env_remove("SSL_CERT_DIR")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// One `GET` over a fresh connection: the whole raw answer, or `None` if none came.
fn http_get(port: u16, path: &str) -> Option<String> {
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
    Some(out)
}

fn location_of(answer: &str) -> Option<String> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::to_owned)
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn standalone_indexes_scans_and_redirects() {
    let root = world_readable_tempdir();
    let t = 1_795_309_320;
    // An apt repository's metadata beside the packages (for apt's `mirror+` method below).
    let packages = format!(
        "Package: demo\nVersion: 1.0\nArchitecture: all\nFilename: pool/a.deb\nSize: 4\nSHA256: {}\nDescription: demo\n",
        hex_sha256(b"aaaa")
    );
    let release = format!(
        "Suite: stable\nCodename: stable\nComponents: main\nArchitectures: amd64\nDate: Sun, 22 Nov 2026 00:00:00 UTC\nSHA256:\n {} {} main/binary-amd64/Packages\n",
        hex_sha256(packages.as_bytes()),
        packages.len()
    );
    let repo: [(&str, &[u8], i64); 2] = [
        ("dists/stable/Release", release.as_bytes(), t),
        (
            "dists/stable/main/binary-amd64/Packages",
            packages.as_bytes(),
            t,
        ),
    ];
    write_tree(
        &root.path().join("source"),
        &[
            [
                ("pool/a.deb", &b"aaaa"[..], t),
                ("pool/b.deb", b"bbbbbb", t),
            ]
            .as_slice(),
            &repo,
        ]
        .concat(),
    );
    write_tree(
        &root.path().join("mirror"),
        &[[("pool/a.deb", &b"aaaa"[..], t)].as_slice(), &repo].concat(),
    );
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
    let _child = standalone(manifests.path(), state.path(), port, &[]);
    let get = |path: &str| -> Option<(u16, String)> {
        let out = http_get(port, path)?;
        let status = out.split(' ').nth(1)?.parse().ok()?;
        Some((status, location_of(&out).unwrap_or_default()))
    };
    let mirror_a = format!("http://127.0.0.1:{web_port}/pool/a.deb");
    let origin_a = "https://origin.example/demo/pool/a.deb".to_owned();
    // Waits until `/demo/pool/a.deb` redirects to `want`; returns how long it took.
    let until = |want: &str, what: &str, limit: Duration| -> Duration {
        let start = Instant::now();
        wait_for_blocking(what, limit, || match get("/demo/pool/a.deb") {
            Some((302, l)) if l == want => Ok(()),
            last => Err(format!("{last:?}")),
        });
        start.elapsed()
    };
    until(
        &mirror_a,
        "the mirror holding a.deb to serve it",
        Duration::from_secs(30),
    );
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
    // A real apt: `mirror+` reads the redirector's list and fetches the metadata from the mirror.
    let apt = tempfile::tempdir().unwrap();
    for d in ["parts", "lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.path().join(d)).unwrap();
    }
    std::fs::write(
        apt.path().join("sources.list"),
        format!("deb [trusted=yes] mirror+http://127.0.0.1:{port}/demo/mirrors.list stable main\n"),
    )
    .unwrap();
    let dir = |d: &str| apt.path().join(d).display().to_string();
    let apt_update = std::process::Command::new(find("apt-get"))
        .arg("update")
        .args([
            "-o",
            &format!("Dir::Etc::SourceList={}", dir("sources.list")),
            "-o",
            &format!("Dir::Etc::SourceParts={}", dir("parts")),
            "-o",
            &format!("Dir::State::Lists={}", dir("lists")),
            "-o",
            &format!("Dir::Cache={}", dir("cache")),
            "-o",
            "Debug::NoLocking=true",
            "-o",
            "APT::Sandbox::User=root",
            "-o",
            "Acquire::Retries=0",
            "-o",
            "APT::Architecture=amd64",
            "-o",
            "APT::Architectures=amd64",
        ])
        .output()
        .unwrap();
    let apt_lists: Vec<String> = std::fs::read_dir(apt.path().join("lists"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let b = get("/demo/pool/b.deb");
    let missing = get("/demo/pool/none.deb");
    // The mirror goes down: out of rotation (the origin serves) within 10 s…
    drop(web);
    let down = until(
        &origin_a,
        "the mirror that stopped answering to leave rotation",
        Duration::from_secs(20),
    );
    // …and back once it answers again (three good probes).
    let web = nginx_on(&root.path().join("mirror"), web_port);
    until(
        &mirror_a,
        "the mirror to come back once it answers",
        Duration::from_secs(20),
    );
    drop(web);
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
    let apt_out = format!(
        "{}{}",
        String::from_utf8_lossy(&apt_update.stdout),
        String::from_utf8_lossy(&apt_update.stderr)
    );
    assert!(
        apt_update.status.success(),
        "apt-get update failed: {apt_out}"
    );
    assert!(
        apt_out.contains(&format!(
            "Get:1 http://127.0.0.1:{port}/demo/mirrors.list Mirrorlist"
        )),
        "{apt_out}"
    );
    assert!(
        apt_out.contains(&format!("http://127.0.0.1:{web_port} stable Release"))
            && apt_out.contains(&format!(
                "http://127.0.0.1:{web_port} stable/main amd64 Packages"
            )),
        "apt fetches Release and Packages from the mirror: {apt_out}"
    );
    assert!(
        apt_lists
            .iter()
            .any(|f| f.contains("_dists_stable_main_binary-amd64_Packages")),
        "apt stored the mirror's Packages: {apt_lists:?}\n{apt_out}"
    );
    assert_eq!(
        b,
        Some((302, "https://origin.example/demo/pool/b.deb".to_owned())),
        "the mirror lacks b.deb: the origin"
    );
    assert!(
        down < Duration::from_secs(10),
        "out of rotation in {down:?}"
    );
    assert_eq!(
        missing,
        Some((302, "https://origin.example/demo/pool/none.deb".to_owned())),
        "a file the index does not have (yet): the origin may have it"
    );
}

/// HTTPS mirrors are probed with the system's trust store (here `SSL_CERT_FILE`, as on any
/// Linux host): one whose certificate chains to a trusted CA serves; one signed by an unknown
/// CA is down with a TLS reason, shown by `?mirrorstats`, and gets no traffic.
#[test]
fn https_mirrors_are_probed_against_the_trust_store() {
    let root = world_readable_tempdir();
    let t = 1_795_309_320;
    write_tree(&root.path().join("source"), &[("pool/a.deb", b"aaaa", t)]);
    write_tree(&root.path().join("mirror"), &[("pool/a.deb", b"aaaa", t)]);
    let daemon = rsync_daemon(&[("mirror", &root.path().join("mirror"))]);
    let trusted_tls = tls_for_loopback("mirrorfleet test CA");
    let unknown_tls = tls_for_loopback("some other CA");
    let trusted = nginx_tls(&root.path().join("mirror"), &trusted_tls);
    let unknown = nginx_tls(&root.path().join("mirror"), &unknown_tls);
    let mirror = |name: &str, port: u16| {
        format!(
            "---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: {name}\nspec:\n  sponsorRef: s\n  addressFamilies: [ipv4]\n  healthCheck:\n    intervalSeconds: 1\n    timeoutSeconds: 1\n  projects:\n    - project: demo\n      https: https://127.0.0.1:{port}/\n      rsync: rsync://127.0.0.1:{rsync}/mirror/\n",
            rsync = daemon.port
        )
    };
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("fleet.yaml"),
        format!(
            "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    local: {src}\n\
             ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n{}{}",
            mirror("trusted", trusted.port),
            mirror("unknown", unknown.port),
            src = root.path().join("source").display(),
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let _child = standalone(
        manifests.path(),
        state.path(),
        port,
        &[("SSL_CERT_FILE", trusted_tls.ca.as_os_str())],
    );
    let get = |path: &str| http_get(port, path);
    // Both mirrors probed (one up, one down) and scanned: the stats page says so.
    let page = wait_for_blocking(
        "the trusted mirror up, the unknown one down, and a.deb redirected",
        Duration::from_secs(30),
        || {
            let fleet = get("/?mirrorstats&json").unwrap_or_default();
            let body: serde_json::Value = fleet
                .split_once("\r\n\r\n")
                .and_then(|(_, body)| serde_json::from_str(body).ok())
                .unwrap_or_default();
            let probed = |name: &str, up: bool| {
                body["mirrors"].as_array().is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m["name"] == name && m["health"][0]["up"] == up)
                })
            };
            let ready = get("/demo/pool/a.deb").is_some_and(|r| r.starts_with("HTTP/1.1 302"));
            if probed("trusted", true) && probed("unknown", false) && ready {
                Ok(fleet)
            } else {
                Err(fleet)
            }
        },
    );
    let redirects: Vec<String> = (0..20)
        .filter_map(|_| get("/demo/pool/a.deb"))
        .filter_map(|r| location_of(&r))
        .collect();
    let want = format!("https://127.0.0.1:{}/pool/a.deb", trusted.port);
    drop(trusted);
    drop(unknown);
    assert!(page.contains("TlsFailed"), "the reason names TLS: {page}");
    assert_eq!(redirects.len(), 20);
    assert!(
        redirects.iter().all(|l| *l == want),
        "every download goes to the trusted mirror: {redirects:?}"
    );
}
