//! The built `mirrorfleet-agent` against a real hub on loopback: an rsync daemon, mosquitto,
//! three agents whose duties are what the redirector would describe
//! (`mirrorfleet_crds::state::duties::of`). A push reaches all three; each syncs paced,
//! writes its trace file and reports; a push during a run makes one more run; garbage pushes
//! are logged and change nothing; an agent that lost the broker catches up on its timer; one
//! started before the redirector answers waits for it; a failed sync is reported with why.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mirrorfleet_crds::state::{
    FleetState, MirrorProjectState, MirrorState, ProjectState, SourceState, duties,
};
use mirrorfleet_testkit::{KillOnDrop, Mosquitto, find, rsync_daemon, wait_for, write_tree};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// 8 Mbit/s: a mirror of 40 Mbit/s paced at 20 %; rsync's --bwlimit=976 (KiB/s).
const BANDWIDTH_MBPS: u64 = 40;
const BIG: usize = 4 << 20;
const T: i64 = 1_795_000_000;

fn fleet(hub: &str, mirrors: &[(&str, &[&str])]) -> FleetState {
    FleetState {
        projects: vec![ProjectState {
            name: "demo".into(),
            source: SourceState {
                rsync: Some(hub.into()),
                ..Default::default()
            },
            trace_file: Some("TIME".into()),
            mutable: vec!["**/index.json".into()],
            ..Default::default()
        }],
        mirrors: mirrors
            .iter()
            .map(|(name, paths)| MirrorState {
                name: (*name).into(),
                bandwidth_mbps: Some(BANDWIDTH_MBPS),
                projects: vec![MirrorProjectState {
                    project: "demo".into(),
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// One agent process, its root and its log.
struct Agent {
    name: String,
    root: tempfile::TempDir,
    log: PathBuf,
    _child: KillOnDrop,
}

impl Agent {
    fn start(dir: &Path, fleet: &FleetState, name: &str, broker: &str, extra: &[&str]) -> Agent {
        let d = duties::of(fleet, name, |_| Some("s0".into())).unwrap();
        let duties = dir.join(format!("{name}.json"));
        std::fs::write(&duties, serde_json::to_vec(&d).unwrap()).unwrap();
        let root = tempfile::tempdir().unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_mirrorfleet-agent"))
            .args([
                "--mirror",
                name,
                "--mqtt",
                broker,
                "--io-timeout-seconds",
                "10",
            ])
            .arg("--duties")
            .arg(&duties)
            .arg("--root")
            .arg(root.path())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            name: name.into(),
            root,
            log,
            _child: KillOnDrop(child),
        }
    }

    fn file(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.path().join("demo").join(rel)).ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Reports heard on `mirrorfleet/report/+`: (mirror, JSON), in order of arrival.
type Heard = Arc<Mutex<Vec<(String, Value)>>>;

async fn listen(port: u16) -> Heard {
    let mut o = MqttOptions::new("test-reports", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 16);
    client
        .subscribe("mirrorfleet/report/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    let heard: Heard = Arc::default();
    let (suback_tx, suback) = tokio::sync::oneshot::channel();
    let mut suback_tx = Some(suback_tx);
    let h = heard.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(e) = events.poll().await {
            match e {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = suback_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let mirror = p.topic.rsplit('/').next().unwrap_or_default().to_owned();
                    let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    h.lock().unwrap().push((mirror, v));
                }
                _ => {}
            }
        }
    });
    suback.await.unwrap();
    heard
}

/// The reports of `mirror` so far.
fn reports_of(heard: &Heard, mirror: &str) -> Vec<Value> {
    heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m == mirror)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Waits for `mirror`'s report of `serial`, and returns it.
async fn report(heard: &Heard, agent: &Agent, serial: &str, timeout: Duration) -> Value {
    wait_for(
        &format!("{}'s report of {serial}", agent.name),
        timeout,
        || async {
            reports_of(heard, &agent.name)
                .into_iter()
                .find(|r| r["serial"] == serial)
                .ok_or_else(|| {
                    format!(
                        "reports {:?}; log:\n{}",
                        reports_of(heard, &agent.name),
                        agent.log()
                    )
                })
        },
    )
    .await
}

fn publish(port: u16, topic: &str, payload: &[u8]) {
    let port = port.to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic];
    // `-s` reads the message from stdin; `-n` sends an empty one.
    args.push(if payload.is_empty() { "-n" } else { "-s" });
    let status = Command::new(find("mosquitto_pub"))
        .args(&args)
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(payload)?;
            c.wait()
        })
        .unwrap();
    assert!(status.success(), "mosquitto_pub on {topic}");
}

/// Incompressible-looking bytes (rsync does not compress here anyway).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_three_agents_each_syncs_paced_and_reports() {
    let hub = tempfile::tempdir().unwrap();
    write_tree(
        hub.path(),
        &[
            ("README", b"demo\n", T),
            ("isos/a.iso", &bytes(64 << 10, 1), T),
            ("other/b.txt", b"b\n", T),
            ("index.json", b"{\"serial\":\"s0\"}", T),
        ],
    );
    let rsyncd = rsync_daemon(&[("demo", hub.path())]);
    let hub_url = format!("rsync://127.0.0.1:{}/demo/", rsyncd.port);
    let broker = Mosquitto::start();
    let heard = listen(broker.port).await;
    let fleet = fleet(&hub_url, &[("m1", &[]), ("m2", &[]), ("m3", &["isos/"])]);
    let dir = tempfile::tempdir().unwrap();
    let agents: Vec<Agent> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| Agent::start(dir.path(), &fleet, m, &broker.url(), &[]))
        .collect();

    // The first run, at start, for the fleet's serial.
    for a in &agents {
        let r = report(&heard, a, "s0", Duration::from_secs(30)).await;
        assert_eq!(r["result"], "ok", "{r}");
        assert_eq!(r["project"], "demo");
    }
    let m3 = &agents[2];
    assert!(m3.file("isos/a.iso").is_some(), "m3 carries isos/");
    assert!(
        m3.file("README").is_none() && m3.file("other/b.txt").is_none(),
        "m3 carries nothing outside isos/"
    );
    assert_eq!(agents[0].file("other/b.txt").as_deref(), Some(&b"b\n"[..]));

    // Garbage on the topic: logged, no run, no panic.
    let topic = "rsync/127.0.0.1/demo";
    publish(broker.port, topic, b"\xff\xfe");
    publish(broker.port, topic, b"");
    for a in &agents {
        wait_for(
            &format!("{} logs the garbage", a.name),
            Duration::from_secs(10),
            || async {
                let log = a.log();
                (log.matches("ignored a push").count() >= 2)
                    .then_some(())
                    .ok_or(log)
            },
        )
        .await;
    }

    // New content, then the push; a second push while the first run is on.
    let big = bytes(BIG, 7);
    write_tree(
        hub.path(),
        &[
            ("isos/big.iso", &big, T + 60),
            ("index.json", b"{\"serial\":\"s1\"}", T + 60),
        ],
    );
    let pushed = Instant::now();
    publish(broker.port, topic, b"s1\n");
    let limit = 976.0 * 1024.0; // bytes per second
    let least = BIG as f64 / limit;
    for a in &agents {
        let r = report(&heard, a, "s1", Duration::from_secs(60)).await;
        let took = pushed.elapsed().as_secs_f64();
        assert_eq!(r["result"], "ok", "{r}");
        let bytes = r["bytes"].as_u64().unwrap();
        let duration = r["durationSeconds"].as_f64().unwrap();
        assert!(bytes >= BIG as u64, "{}: {bytes} bytes received", a.name);
        assert!(
            duration >= 0.9 * least && took >= 0.9 * least,
            "{}: {bytes} bytes in {duration:.2} s ({took:.2} s after the push): faster than the \
             pace allows ({least:.2} s at least)",
            a.name
        );
        eprintln!(
            "{}: {bytes} bytes in {duration:.2} s = {:.0} KiB/s (limit 976 KiB/s)",
            a.name,
            bytes as f64 / duration / 1024.0
        );
        assert_eq!(
            a.file("isos/big.iso").as_deref(),
            Some(&big[..]),
            "{}",
            a.name
        );
        let trace = String::from_utf8(a.file("TIME").unwrap()).unwrap();
        let synced: i64 = trace.lines().next().unwrap().parse().unwrap();
        assert!(synced > T, "{}: trace {trace:?}", a.name);
    }
    assert_eq!(
        agents[0].file("index.json").as_deref(),
        Some(&b"{\"serial\":\"s1\"}"[..]),
        "the index comes with the last stage"
    );
    assert!(m3.file("index.json").is_none(), "m3 carries only isos/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_run_makes_one_more_run() {
    let hub = tempfile::tempdir().unwrap();
    write_tree(hub.path(), &[("README", b"demo\n", T)]);
    let rsyncd = rsync_daemon(&[("demo", hub.path())]);
    let hub_url = format!("rsync://127.0.0.1:{}/demo/", rsyncd.port);
    let broker = Mosquitto::start();
    let heard = listen(broker.port).await;
    let fleet = fleet(&hub_url, &[("m1", &[])]);
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &fleet, "m1", &broker.url(), &[]);
    report(&heard, &a, "s0", Duration::from_secs(30)).await;

    write_tree(hub.path(), &[("big.iso", &bytes(2 << 20, 3), T + 60)]);
    let topic = "rsync/127.0.0.1/demo";
    publish(broker.port, topic, b"s1");
    wait_for(
        "the run for s1 to start",
        Duration::from_secs(10),
        || async {
            let log = a.log();
            log.contains("sync starting").then_some(()).ok_or(log)
        },
    )
    .await;
    wait_for(
        "the run for s1 to start",
        Duration::from_secs(10),
        || async {
            let log = a.log();
            (log.matches("sync starting").count() >= 2)
                .then_some(())
                .ok_or(log)
        },
    )
    .await;
    // While it runs (2 MiB at 976 KiB/s: about 2 s), two more pushes: one more run, for the
    // newest.
    publish(broker.port, topic, b"s2");
    publish(broker.port, topic, b"s3");
    report(&heard, &a, "s3", Duration::from_secs(30)).await;
    let serials: Vec<Value> = reports_of(&heard, "m1")
        .into_iter()
        .map(|r| r["serial"].clone())
        .collect();
    assert_eq!(
        serials,
        ["s0", "s1", "s3"],
        "one run at a time, the newest push after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_lost_the_broker_catches_up_on_its_timer() {
    let hub = tempfile::tempdir().unwrap();
    write_tree(hub.path(), &[("README", b"demo\n", T)]);
    let rsyncd = rsync_daemon(&[("demo", hub.path())]);
    let hub_url = format!("rsync://127.0.0.1:{}/demo/", rsyncd.port);
    let mut broker = Mosquitto::start();
    let heard = listen(broker.port).await;
    let fleet = fleet(&hub_url, &[("m1", &[])]);
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(
        dir.path(),
        &fleet,
        "m1",
        &broker.url(),
        &["--fallback-seconds", "3", "--fallback-jitter", "0.1"],
    );
    report(&heard, &a, "s0", Duration::from_secs(30)).await;

    broker.kill();
    wait_for(
        "the agent to notice the broker is gone",
        Duration::from_secs(60),
        || async {
            let log = a.log();
            log.contains("lost the MQTT broker")
                .then_some(())
                .ok_or(log)
        },
    )
    .await;
    write_tree(hub.path(), &[("new.txt", b"new\n", T + 60)]);
    // No push can come: only the timer brings the new file.
    wait_for(
        "the new file, by the timer",
        Duration::from_secs(30),
        || async { a.file("new.txt").ok_or_else(|| a.log()) },
    )
    .await;
    assert!(a.log().contains("fallback timer: syncing"), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_waits_for_the_redirector_then_syncs() {
    let hub = tempfile::tempdir().unwrap();
    write_tree(hub.path(), &[("README", b"demo\n", T)]);
    let rsyncd = rsync_daemon(&[("demo", hub.path())]);
    let hub_url = format!("rsync://127.0.0.1:{}/demo/", rsyncd.port);
    let broker = Mosquitto::start();
    let heard = listen(broker.port).await;
    let fleet = fleet(&hub_url, &[("m1", &[])]);
    // The "redirector": nginx serving the description where the redirector does, started
    // after the agent.
    let site = mirrorfleet_testkit::world_readable_tempdir();
    let d = duties::of(&fleet, "m1", |_| Some("s0".into())).unwrap();
    write_tree(
        site.path(),
        &[("-/mirrors/m1.json", &serde_json::to_vec(&d).unwrap(), T)],
    );
    let port = mirrorfleet_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let log = dir.path().join("m1.log");
    let child = Command::new(env!("CARGO_BIN_EXE_mirrorfleet-agent"))
        .args(["--mirror", "m1", "--mqtt", &broker.url()])
        .args(["--fleet", &format!("http://127.0.0.1:{port}")])
        .arg("--root")
        .arg(root.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let a = Agent {
        name: "m1".into(),
        root,
        log,
        _child: KillOnDrop(child),
    };
    wait_for("the agent to retry", Duration::from_secs(10), || async {
        let log = a.log();
        log.contains("cannot read the duties yet")
            .then_some(())
            .ok_or(log)
    })
    .await;
    assert!(reports_of(&heard, "m1").is_empty(), "no run without duties");
    let _web = mirrorfleet_testkit::nginx_on(site.path(), port);
    let r = report(&heard, &a, "s0", Duration::from_secs(30)).await;
    assert_eq!(r["result"], "ok", "{r}");
    assert_eq!(a.file("README").as_deref(), Some(&b"demo\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_reported_with_rsyncs_exit_code_and_words() {
    // A hub that is not there.
    let hub_url = format!(
        "rsync://127.0.0.1:{}/demo/",
        mirrorfleet_testkit::free_port()
    );
    let broker = Mosquitto::start();
    let heard = listen(broker.port).await;
    let fleet = fleet(&hub_url, &[("m1", &[])]);
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), &fleet, "m1", &broker.url(), &[]);
    let r = report(&heard, &a, "s0", Duration::from_secs(30)).await;
    assert_eq!(r["result"], "failed", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("stage 1 of 2")
            && error.contains(&hub_url)
            && error.contains("rsync exited with 10 (error in socket I/O"),
        "{error}"
    );
    assert!(a.file("TIME").is_none(), "no trace file after a failure");
    assert!(a.log().contains("sync failed"), "{}", a.log());
}
