//! `mirrorfleet agent` with `mirrorfleet standalone`, end to end on loopback: a hub (an rsync
//! daemon) is the Project's rsync source; three nodes behind nginx each run `mirrorfleet
//! agent --fleet <the redirector>`, so everything they know — projects, sub-trees, the hub's
//! URL, the topic, the pace — comes from the redirector's `/-/mirrors/<name>.json`. A new file
//! published on the hub is indexed, announced on mosquitto, synced by the three agents, whose
//! reports make the redirector check them; then it redirects the new file to them.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mirrorfleet_testkit::*;

const T: i64 = 1_795_000_000;

/// (status, Location) of one `GET` of `url` (`http://127.0.0.1:port/…`).
fn get(url: &str) -> Option<(u16, Option<String>, Vec<u8>)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_at(rest.find('/')?);
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let location = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    });
    Some((status, location, raw[split + 4..].to_vec()))
}

/// The mirrors `n` downloads of `url` were sent to (their Location's first path segment).
fn redirected_to(url: &str, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..n)
        .filter_map(|_| get(url)?.1)
        .filter_map(|l| {
            let rest = l.strip_prefix("http://")?;
            Some(rest.split('/').nth(1)?.to_owned())
        })
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn agents_configured_by_the_redirector_sync_report_and_get_the_new_files() {
    let root = world_readable_tempdir();
    let hub = root.path().join("hub");
    write_tree(&hub, &[("isos/a.iso", &bytes(100_000, 1), T)]);
    let daemon = rsync_daemon(&[("demo", hub.as_path())]);
    let web = nginx(root.path());
    let mosquitto = Mosquitto::start();
    let mirrors = ["m1", "m2", "m3"];

    let manifests = tempfile::tempdir().unwrap();
    let mut fleet = format!(
        "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    rsync: rsync://127.0.0.1:{port}/demo/\n  fallbacks:\n    - url: http://127.0.0.1:{web}/hub/\n  scan:\n    mirrorIntervalMinutes: 60\n\
         ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n",
        port = daemon.port,
        web = web.port,
    );
    for m in mirrors {
        // 40 Mbit/s: paced at 8 (--bwlimit=976).
        fleet.push_str(&format!(
            "---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: {m}\nspec:\n  sponsorRef: s\n  capacity:\n    bandwidthMbps: 40\n  addressFamilies: [ipv4]\n  healthCheck:\n    intervalSeconds: 1\n    timeoutSeconds: 1\n  projects:\n    - project: demo\n      http: http://127.0.0.1:{web}/{m}/demo/\n",
            web = web.port,
        ));
    }
    std::fs::write(manifests.path().join("fleet.yaml"), fleet).unwrap();
    let state = tempfile::tempdir().unwrap();
    let token = state.path().join("token");
    std::fs::write(&token, "agent-token\n").unwrap();
    let (port, admin) = (free_port(), free_port());
    let log_path = state.path().join("standalone.log");
    let standalone = Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args(["standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--manifests")
        .arg(manifests.path())
        .arg("--state-dir")
        .arg(state.path().join("store"))
        .args(["--mqtt", &mosquitto.url()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let _standalone = KillOnDrop(standalone);
    let redirector = format!("http://127.0.0.1:{port}");

    // The description the agents will read: the index's serial, the hub, the topic, the pace.
    let serial0 = wait_for_blocking("the index, in m1's duties", Duration::from_secs(60), || {
        let (status, _, body) = get(&format!("{redirector}/-/mirrors/m1.json"))
            .ok_or_else(|| format!("no answer\n{}", log_of(&log_path)))?;
        let d: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        match (status, d["projects"][0]["serial"].as_str()) {
            (200, Some(s)) => Ok((s.to_owned(), d)),
            _ => Err(format!("{status} {d}\n{}", log_of(&log_path))),
        }
    });
    let (serial0, duties) = serial0;
    assert_eq!(duties["paceMbps"], 8);
    assert_eq!(
        duties["projects"][0]["hubRsync"],
        format!("rsync://127.0.0.1:{}/demo/", daemon.port)
    );
    assert_eq!(duties["projects"][0]["topic"], "rsync/127.0.0.1/demo");

    let _agents: Vec<KillOnDrop> = mirrors
        .iter()
        .map(|m| {
            let node = root.path().join(m);
            std::fs::create_dir_all(&node).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
                .args(["agent", "--mirror", m, "--fleet", &redirector])
                .arg("--root")
                .arg(&node)
                .args(["--mqtt", &mosquitto.url()])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(state.path().join(format!("{m}.log"))).unwrap())
                .spawn()
                .unwrap();
            KillOnDrop(child)
        })
        .collect();
    let agent_logs = || {
        mirrors
            .iter()
            .map(|m| format!("{m}:\n{}", log_of(&state.path().join(format!("{m}.log")))))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The first sync (at start, for the fleet's serial) and its report: the file is
    // redirected to all three.
    let a = format!("{redirector}/demo/isos/a.iso");
    wait_for_blocking(
        "a.iso redirected to all three",
        Duration::from_secs(60),
        || {
            let seen = redirected_to(&a, 30);
            if seen == mirrors {
                Ok(())
            } else {
                Err(format!("{seen:?}\n{}\n{}", agent_logs(), log_of(&log_path)))
            }
        },
    );
    assert!(
        agent_logs().matches(serial0.as_str()).count() >= 3,
        "each agent synced the fleet's serial: {}",
        agent_logs()
    );

    // A new file on the hub, published: indexed, announced, synced paced, reported, checked.
    let big = bytes(2 << 20, 9);
    write_tree(&hub, &[("isos/b.iso", &big, T + 60)]);
    let published = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args(["publish", "--project", "demo", "--url"])
        .arg(format!("http://127.0.0.1:{admin}"))
        .arg("--token-file")
        .arg(&token)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "mirrorfleet publish");
    let b = format!("{redirector}/demo/isos/b.iso");
    wait_for_blocking(
        "b.iso redirected to all three",
        Duration::from_secs(60),
        || {
            let seen = redirected_to(&b, 30);
            if seen == mirrors {
                Ok(())
            } else {
                Err(format!("{seen:?}\n{}\n{}", agent_logs(), log_of(&log_path)))
            }
        },
    );
    let took = published.elapsed().as_secs_f64();
    let least = big.len() as f64 / (976.0 * 1024.0);
    eprintln!(
        "publish → b.iso redirected to all three agents' mirrors: {took:.2} s (the pace alone: {least:.2} s)"
    );
    assert!(
        took >= 0.9 * least,
        "faster than the pace allows: {took:.2} s"
    );
    for m in mirrors {
        let served = get(&format!(
            "http://127.0.0.1:{}/{m}/demo/isos/b.iso",
            web.port
        ))
        .unwrap();
        assert_eq!((served.0, served.2 == big), (200, true), "{m} serves b.iso");
    }
    let log = log_of(&log_path);
    assert!(
        log.contains("sync reported"),
        "the reports reached the standalone:\n{log}"
    );
}
