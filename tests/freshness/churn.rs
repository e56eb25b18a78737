//! An archive under churn, end to end, shared by `tests/freshness.rs` (short, with
//! assertions) and `cli/benches/freshness.rs` (longer, with figures).
//!
//! A local source publishes every few seconds — a new package, a new hash-named index (the
//! old one removed later), `Release` and `Packages` rewritten in place, an old package
//! deleted — then runs `mirrorfleet publish`. `mirrorfleet standalone` indexes it and
//! announces each serial on a real mosquitto (`rsync/hub.test/demo`). Three mirrors behind
//! nginx subscribe to that topic as micro mirrors do and sync from the hub's rsync daemon
//! with `--delay-updates`: `m1` after 1.5 s in two stages (content, then indices and
//! deletions) and reports its sync on MQTT; `m2` after 4 s in one stage and never reports
//! (only the targeted checks' backoff finds it); `m3` carries only `pool/`, syncs it after
//! 2.5 s and reports. Clients follow every redirect and check each body's SHA-256 against
//! what the origin held.
//!
//! A violation is a redirector 404 for a file the origin served throughout the request, a
//! mirror answering 404 for such a file, or a body that is no version the origin held from
//! [`LAG_OK`] before the request to its end (the index is allowed that long to learn of a
//! rewrite).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mirrorfleet_testkit::*;

/// How long a rewritten file's previous version may still be served: the index's lag.
pub const LAG_OK: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Publishes.
    pub rounds: usize,
    /// Time between publishes.
    pub every: Duration,
    /// Client threads.
    pub clients: usize,
}

/// What happened.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests made by the clients.
    pub requests: u64,
    /// What went wrong, one line each.
    pub violations: Vec<String>,
    /// Seconds from each publish until the index had its new package.
    pub index_s: Vec<f64>,
    /// Seconds from each publish until its new package first redirected to a mirror.
    pub verified_s: Vec<f64>,
    /// Seconds from `m1`'s sync report until `Release` redirected to `m1`.
    pub report_to_mirror_s: Vec<f64>,
    /// Metadata requests made after the round's first sync report, and how many of them
    /// went to the origin.
    pub meta_requests: u64,
    /// See `meta_requests`.
    pub meta_origin: u64,
    /// Bodies that were the previous version, within [`LAG_OK`] of a rewrite.
    pub lag_window_answers: u64,
    /// Serials `m1` received on MQTT.
    pub announced: usize,
    /// standalone's log.
    pub log: String,
}

/// One version of a file in the source: its SHA-256 from `at`, or deleted (`None`).
#[derive(Debug, Clone)]
struct Version {
    at: Instant,
    sha: Option<String>,
}

/// Every version of every file the source held, for the clients to judge answers by.
#[derive(Debug, Default)]
struct History {
    files: Mutex<HashMap<String, Vec<Version>>>,
}

impl History {
    fn record(&self, path: &str, sha: Option<String>) {
        self.files
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .push(Version {
                at: Instant::now(),
                sha,
            });
    }

    /// Paths held now.
    fn existing(&self) -> Vec<String> {
        let files = self.files.lock().unwrap();
        let mut out: Vec<String> = files
            .iter()
            .filter(|(_, v)| v.last().is_some_and(|v| v.sha.is_some()))
            .map(|(p, _)| p.clone())
            .collect();
        out.sort();
        out
    }

    /// Whether `path` existed for the whole of `from..to`.
    fn held_throughout(&self, path: &str, from: Instant, to: Instant) -> bool {
        let files = self.files.lock().unwrap();
        let Some(vs) = files.get(path) else {
            return false;
        };
        let before = vs.iter().rev().find(|v| v.at <= from);
        before.is_some_and(|v| v.sha.is_some())
            && vs
                .iter()
                .filter(|v| v.at > from && v.at <= to)
                .all(|v| v.sha.is_some())
    }

    /// Whether `path` got a new version after `at`.
    fn rewritten_since(&self, path: &str, at: Instant) -> bool {
        let files = self.files.lock().unwrap();
        files
            .get(path)
            .is_some_and(|vs| vs.last().is_some_and(|v| v.at > at))
    }

    /// Whether `sha` is a version of `path` acceptable for a request over `from..to`, and
    /// whether it is the one current at `from` (else it is a lag-window answer).
    fn judge(&self, path: &str, sha: &str, from: Instant, to: Instant) -> (bool, bool) {
        let files = self.files.lock().unwrap();
        let Some(vs) = files.get(path) else {
            return (false, false);
        };
        let current = vs.iter().rev().find(|v| v.at <= from);
        if current.is_some_and(|v| v.sha.as_deref() == Some(sha)) {
            return (true, true);
        }
        let ok = vs.iter().enumerate().any(|(i, v)| {
            let replaced = vs.get(i + 1).map(|n| n.at);
            v.sha.as_deref() == Some(sha)
                && v.at <= to
                && replaced.is_none_or(|r| r + LAG_OK >= from)
        });
        (ok, false)
    }
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A small deterministic generator (xorshift), for sizes, contents and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// An HTTP answer: status, `Location`, body.
struct Answer {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// One `GET` of `url` (`http://127.0.0.1:port/…`) over a fresh connection.
fn get(url: &str) -> Option<Answer> {
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
    Some(Answer {
        status,
        location,
        body: raw[split + 4..].to_vec(),
    })
}

/// Writes `content` to `root/path` the way archive scripts do (a temporary file renamed
/// into place), and records it.
fn publish_file(root: &Path, tmp: &Path, history: &History, path: &str, content: &[u8]) {
    let dest = root.join(path);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let staged = tmp.join(path.replace('/', "_"));
    std::fs::write(&staged, content).unwrap();
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::rename(&staged, &dest).unwrap();
    history.record(path, Some(sha256(content)));
}

fn remove_file(root: &Path, history: &History, path: &str) {
    std::fs::remove_file(root.join(path)).unwrap();
    history.record(path, None);
}

/// The archive's state after a publish: packages, the hash-named index files kept.
struct Archive {
    root: PathBuf,
    tmp: PathBuf,
    packages: Vec<String>,
    by_hash: Vec<String>,
    rng: Rng,
}

impl Archive {
    /// Publish number `round`: a new package, new indices, an old package and an old
    /// hash-named index removed.
    fn publish(&mut self, round: usize, history: &History) {
        let name = format!("pool/main/pkg-{round:04}.deb");
        let size = 2_000 + self.rng.below(30_000);
        let content = self.rng.bytes(size);
        publish_file(&self.root, &self.tmp, history, &name, &content);
        self.packages.push(name);
        if self.packages.len() > 4 {
            let old = self.packages.remove(0);
            remove_file(&self.root, history, &old);
        }
        let packages: String = self
            .packages
            .iter()
            .map(|p| format!("Package: {p}\nRound: {round}\n\n"))
            .collect();
        let hashed = format!(
            "dists/stable/main/by-hash/SHA256/{}",
            sha256(packages.as_bytes())
        );
        publish_file(&self.root, &self.tmp, history, &hashed, packages.as_bytes());
        self.by_hash.push(hashed);
        if self.by_hash.len() > 2 {
            let old = self.by_hash.remove(0);
            remove_file(&self.root, history, &old);
        }
        publish_file(
            &self.root,
            &self.tmp,
            history,
            "dists/stable/main/Packages",
            packages.as_bytes(),
        );
        let release = format!(
            "Suite: stable\nRound: {round:06}\nSHA256:\n {} main/Packages\n",
            sha256(packages.as_bytes())
        );
        publish_file(
            &self.root,
            &self.tmp,
            history,
            "dists/stable/Release",
            release.as_bytes(),
        );
    }
}

/// A mirror of the fleet: its directory, its URL, how it syncs.
#[derive(Clone)]
struct MirrorPlan {
    name: &'static str,
    lag: Duration,
    /// Content first, then indices and deletions.
    two_stages: bool,
    reports: bool,
    /// The sub-tree it carries (`None`: all).
    sub: Option<&'static str>,
}

fn rsync(args: &[&str]) {
    let out = Command::new("rsync").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rsync {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sync(hub: &str, dest: &Path, m: &MirrorPlan) {
    let dest_s = format!("{}/", dest.display());
    let common = ["-rt", "--delay-updates", "--timeout=10"];
    if let Some(sub) = m.sub {
        let from = format!("{hub}{sub}");
        let to = format!("{dest_s}{sub}");
        std::fs::create_dir_all(&to).unwrap();
        rsync(&[&common[..], &["--delete", &from, &to]].concat());
        return;
    }
    if m.two_stages {
        rsync(&[&common[..], &["--exclude=/dists/", hub, &dest_s]].concat());
    }
    rsync(&[&common[..], &["--delete", hub, &dest_s]].concat());
}

fn mqtt_pub(port: u16, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lines (`topic payload`) arriving on `filter`, from a `mosquitto_sub` killed on drop.
fn mqtt_sub(port: u16, filter: &str) -> (KillOnDrop, mpsc::Receiver<String>) {
    let mut child = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-v",
            "-t",
            filter,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (KillOnDrop(child), rx)
}

/// Runs `plan`; see the module documentation.
pub fn run(plan: Plan) -> Outcome {
    let root = world_readable_tempdir();
    let (src, tmp) = (root.path().join("source"), root.path().join("staging"));
    std::fs::create_dir_all(&tmp).unwrap();
    let history = Arc::new(History::default());
    let mut archive = Archive {
        root: src.clone(),
        tmp: tmp.clone(),
        packages: Vec::new(),
        by_hash: Vec::new(),
        rng: Rng(0x9e37_79b9_7f4a_7c15),
    };
    archive.publish(0, &history);
    let mirrors = [
        MirrorPlan {
            name: "m1",
            lag: Duration::from_millis(1500),
            two_stages: true,
            reports: true,
            sub: None,
        },
        MirrorPlan {
            name: "m2",
            lag: Duration::from_secs(4),
            two_stages: false,
            reports: false,
            sub: None,
        },
        MirrorPlan {
            name: "m3",
            lag: Duration::from_millis(2500),
            two_stages: false,
            reports: true,
            sub: Some("pool/"),
        },
    ];
    let mut modules: Vec<(&str, PathBuf)> = vec![("source", src.clone())];
    for m in &mirrors {
        let dir = root.path().join(m.name);
        std::fs::create_dir_all(&dir).unwrap();
        modules.push((m.name, dir));
    }
    let refs: Vec<(&str, &Path)> = modules.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let daemon = rsync_daemon(&refs);
    let hub = format!("rsync://127.0.0.1:{}/source/", daemon.port);
    for m in &mirrors {
        sync(&hub, &root.path().join(m.name), m);
    }
    let web = nginx(root.path());
    let mosquitto = Mosquitto::start();
    let origin = format!("http://127.0.0.1:{}/source/", web.port);
    let base = |m: &str| format!("http://127.0.0.1:{}/{m}/", web.port);

    let manifests = tempfile::tempdir().unwrap();
    let mut fleet = format!(
        "apiVersion: mirrorfleet.io/v1alpha1\nkind: Project\nmetadata:\n  name: demo\nspec:\n  routing:\n    pathPrefix: /demo/\n  source:\n    local: {}\n  fallbacks:\n    - url: {origin}\n  pathClasses:\n    mutable: [\"dists/*/Release\", \"dists/**/Packages\"]\n  scan:\n    mirrorIntervalMinutes: 60\n\
         ---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Sponsor\nmetadata:\n  name: s\nspec:\n  displayName: S\n",
        src.display()
    );
    for m in &mirrors {
        let paths = m
            .sub
            .map(|s| format!("      paths: [{s}]\n"))
            .unwrap_or_default();
        fleet.push_str(&format!(
            "---\napiVersion: mirrorfleet.io/v1alpha1\nkind: Mirror\nmetadata:\n  name: {name}\nspec:\n  sponsorRef: s\n  addressFamilies: [ipv4]\n  healthCheck:\n    intervalSeconds: 1\n    timeoutSeconds: 1\n  projects:\n    - project: demo\n      http: {url}\n      rsync: rsync://127.0.0.1:{port}/{name}/\n{paths}",
            name = m.name,
            url = base(m.name),
            port = daemon.port,
        ));
    }
    std::fs::write(manifests.path().join("fleet.yaml"), fleet).unwrap();
    let state = tempfile::tempdir().unwrap();
    let token = state.path().join("token");
    std::fs::write(&token, "churn-token\n").unwrap();
    let (port, admin) = (free_port(), free_port());
    let log_path = state.path().join("standalone.log");
    let child = Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
        .args(["standalone", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--manifests")
        .arg(manifests.path())
        .arg("--state-dir")
        .arg(state.path().join("store"))
        .args(["--mqtt", &mosquitto.url(), "--push-hub", "hub.test"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let _standalone = KillOnDrop(child);
    let redirector = format!("http://127.0.0.1:{port}/demo/");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Every mirror scanned and up: the first package redirects to mirrors only.
    let first = archive.packages[0].clone();
    wait_for_blocking(
        "every mirror to be scanned and up",
        Duration::from_secs(60),
        || {
            let seen: Vec<String> = (0..30)
                .filter_map(|_| get(&format!("{redirector}{first}"))?.location)
                .collect();
            let all = mirrors
                .iter()
                .all(|m| seen.iter().any(|l| l.starts_with(&base(m.name))));
            if all {
                Ok(())
            } else {
                Err(format!("redirects seen: {seen:?}\n{}", read_log()))
            }
        },
    );

    // The mirrors: subscribed to the hub's topic, syncing after their lag, reporting.
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reported_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let report_to_mirror: Arc<Mutex<Vec<f64>>> = Arc::default();
    let announced = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    let mut subscriptions = Vec::new();
    for m in mirrors.clone() {
        let (sub, messages) = mqtt_sub(mosquitto.port, "rsync/hub.test/#");
        subscriptions.push(sub);
        let (stop, hub, dest) = (stop.clone(), hub.clone(), root.path().join(m.name));
        let (reported_at, report_to_mirror, announced) = (
            reported_at.clone(),
            report_to_mirror.clone(),
            announced.clone(),
        );
        let (history, violations) = (history.clone(), violations.clone());
        let (mqtt, redirector, own) = (mosquitto.port, redirector.clone(), base(m.name));
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut line) = messages.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let mut received = 1;
                // Pushes that came during the last sync: one sync serves them all.
                while let Ok(newer) = messages.try_recv() {
                    line = newer;
                    received += 1;
                }
                if m.name == "m1" {
                    announced.fetch_add(received, Ordering::Relaxed);
                }
                let serial = line
                    .split_once(' ')
                    .map(|(_, s)| s.to_owned())
                    .unwrap_or_default();
                std::thread::sleep(m.lag);
                sync(&hub, &dest, &m);
                if !m.reports {
                    continue;
                }
                let payload = format!("{{\"project\":\"demo\",\"serial\":\"{serial}\"}}");
                mqtt_pub(mqtt, &format!("mirrorfleet/report/{}", m.name), &payload);
                let at = Instant::now();
                reported_at.lock().unwrap().get_or_insert(at);
                if m.name != "m1" {
                    continue;
                }
                // The reporting mirror gets the current metadata within 5 s — unless the
                // origin rewrote it meanwhile (the mirror no longer holds the current one).
                let release = "dists/stable/Release";
                loop {
                    let l = get(&format!("{redirector}{release}")).and_then(|a| a.location);
                    if l.is_some_and(|l| l.starts_with(&own)) {
                        report_to_mirror
                            .lock()
                            .unwrap()
                            .push(at.elapsed().as_secs_f64());
                        break;
                    }
                    if !history.held_throughout(release, at, Instant::now())
                        || history.rewritten_since(release, at)
                    {
                        break;
                    }
                    if at.elapsed() > Duration::from_secs(5) {
                        violations.lock().unwrap().push(format!(
                            "{} reported its sync but {release} did not redirect to it within 5 s",
                            m.name
                        ));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }));
    }

    // The clients.
    let counters = Arc::new([const { AtomicU64::new(0) }; 4]); // requests, meta, meta→origin, lag
    for c in 0..plan.clients {
        let (stop, history, violations, counters, reported_at) = (
            stop.clone(),
            history.clone(),
            violations.clone(),
            counters.clone(),
            reported_at.clone(),
        );
        let (redirector, origin) = (redirector.clone(), origin.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (c as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                let existing = history.existing();
                let metadata = ["dists/stable/Release", "dists/stable/main/Packages"];
                let path = if rng.below(2) == 0 {
                    metadata[rng.below(2)].to_owned()
                } else {
                    existing[rng.below(existing.len())].clone()
                };
                let t0 = Instant::now();
                let after_report = reported_at.lock().unwrap().is_some_and(|r| r <= t0);
                let Some(a) = get(&format!("{redirector}{path}")) else {
                    violations.lock().unwrap().push(format!("no answer from the redirector for {path}"));
                    continue;
                };
                counters[0].fetch_add(1, Ordering::Relaxed);
                let (body, via) = match (a.status, a.location) {
                    (302, Some(l)) => {
                        if metadata.contains(&path.as_str()) && after_report {
                            counters[1].fetch_add(1, Ordering::Relaxed);
                            if l.starts_with(&origin) {
                                counters[2].fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        match get(&l) {
                            Some(f) if f.status == 200 => (f.body, l),
                            f => {
                                if history.held_throughout(&path, t0, Instant::now()) {
                                    violations.lock().unwrap().push(format!(
                                        "{l} answered {:?} for {path}, which the origin served throughout",
                                        f.map(|f| f.status)
                                    ));
                                }
                                continue;
                            }
                        }
                    }
                    (status, _) => {
                        if history.held_throughout(&path, t0, Instant::now()) {
                            violations.lock().unwrap().push(format!(
                                "the redirector answered {status} for {path}, which the origin served throughout"
                            ));
                        }
                        continue;
                    }
                };
                let (ok, current) = history.judge(&path, &sha256(&body), t0, Instant::now());
                if !ok {
                    violations.lock().unwrap().push(format!(
                        "{via} served a version of {path} the origin did not hold then"
                    ));
                } else if !current {
                    counters[3].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // The publisher.
    let mut out = Outcome::default();
    let publish = |project: &str| {
        let status = Command::new(env!("CARGO_BIN_EXE_mirrorfleet"))
            .args([
                "publish",
                "--project",
                project,
                "--url",
                &format!("http://127.0.0.1:{admin}"),
            ])
            .arg("--token-file")
            .arg(&token)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "mirrorfleet publish failed");
    };
    for round in 1..=plan.rounds {
        let start = Instant::now();
        *reported_at.lock().unwrap() = None;
        archive.publish(round, &history);
        publish("demo");
        let new = archive.packages.last().unwrap().clone();
        let next = start + plan.every;
        let mut indexed = false;
        while Instant::now() < next {
            let json = get(&format!("{redirector}{new}?json"));
            let indexed_now = json.is_some_and(|a| {
                String::from_utf8_lossy(&a.body)
                    .replace(char::is_whitespace, "")
                    .contains("\"indexed\":true")
            });
            if indexed_now {
                out.index_s.push(start.elapsed().as_secs_f64());
                indexed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        while indexed && Instant::now() < next {
            let l = get(&format!("{redirector}{new}")).and_then(|a| a.location);
            if l.is_some_and(|l| !l.starts_with(&origin)) {
                out.verified_s.push(start.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if round == 1 {
            // Garbage and forged reports: logged, and nothing changes.
            mqtt_pub(mosquitto.port, "mirrorfleet/report/m1", "not json at all");
            mqtt_pub(
                mosquitto.port,
                "mirrorfleet/report/nobody",
                "{\"project\":\"demo\",\"serial\":\"1\"}",
            );
            mqtt_pub(
                mosquitto.port,
                "mirrorfleet/report/m3",
                "{\"project\":\"other\",\"serial\":\"1\"}",
            );
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    // The last publish's syncs finish.
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    drop(subscriptions);
    out.requests = counters[0].load(Ordering::Relaxed);
    out.meta_requests = counters[1].load(Ordering::Relaxed);
    out.meta_origin = counters[2].load(Ordering::Relaxed);
    out.lag_window_answers = counters[3].load(Ordering::Relaxed);
    out.violations = std::mem::take(&mut *violations.lock().unwrap());
    out.report_to_mirror_s = std::mem::take(&mut *report_to_mirror.lock().unwrap());
    out.announced = announced.load(Ordering::Relaxed) as usize;
    out.log = read_log();
    out
}

/// The `q` quantile of `v` (nearest rank), `NaN` when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len());
    s[i - 1]
}
