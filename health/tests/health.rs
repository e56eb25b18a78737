//! Health probes against real servers on loopback: nginx (healthy, missing canary, wrong
//! size, plain HTTP spoken to a TLS client), a closed port, a server that hangs and one that
//! answers 503 — each failure named precisely. Then the checker end to end on the embedded
//! store: a mirror that stops answering is written down, and up again once it is back.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mirrorfleet_crds::state::{
    Family, FleetState, HealthCheckState, MirrorProjectState, MirrorState, ProbeScheme,
    ProjectState,
};
use mirrorfleet_health::checker::{Key, Target, targets};
use mirrorfleet_health::probe::{Canary, ProbeSettings, probe_all};
use mirrorfleet_health::{Change, Checker, Failure, Outcome, Transition};
use mirrorfleet_store::{EmbeddedStore, LoadedState, StateReader, StateWriter};
use mirrorfleet_testkit::*;

fn settings(family: Family) -> ProbeSettings {
    ProbeSettings {
        family,
        timeout: Duration::from_secs(1),
        allow_redirects: false,
    }
}

async fn probe(url: String, size: Option<u64>, family: Family) -> Outcome {
    probe_all(&[Canary { url, size }], &settings(family)).await
}

fn reason(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok => "Ok",
        Outcome::Failed(f) => f.reason(),
    }
}

#[tokio::test]
async fn probes_name_what_failed() {
    let root = world_readable_tempdir();
    write_tree(root.path(), &[("canary.txt", b"12345", 1_795_309_320)]);
    let web = nginx(root.path());
    let base = format!("http://127.0.0.1:{}/", web.port);
    let closed = free_port();
    let hang = TcpFake::start(stall);
    let unavailable = TcpFake::start(http_503);

    let ok = probe(format!("{base}canary.txt"), Some(5), Family::Ipv4).await;
    assert_eq!(ok, Outcome::Ok);
    let missing = probe(format!("{base}nope.txt"), None, Family::Ipv4).await;
    assert_eq!(missing, Outcome::Failed(Failure::Status(404)));
    let size = probe(format!("{base}canary.txt"), Some(6), Family::Ipv4).await;
    assert_eq!(
        size,
        Outcome::Failed(Failure::WrongSize {
            expected: 6,
            got: 5
        })
    );
    let refused = probe(format!("http://127.0.0.1:{closed}/c"), None, Family::Ipv4).await;
    assert_eq!(
        refused,
        Outcome::Failed(Failure::ConnectRefused(format!("127.0.0.1:{closed}")))
    );
    let started = Instant::now();
    let hung = probe(
        format!("http://127.0.0.1:{}/c", hang.port),
        None,
        Family::Ipv4,
    )
    .await;
    assert_eq!(reason(&hung), "Timeout", "{hung:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    let e503 = probe(
        format!("http://127.0.0.1:{}/c", unavailable.port),
        None,
        Family::Ipv4,
    )
    .await;
    assert_eq!(e503, Outcome::Failed(Failure::Status(503)));
    let tls = probe(
        format!("https://127.0.0.1:{}/canary.txt", web.port),
        None,
        Family::Ipv4,
    )
    .await;
    assert_eq!(reason(&tls), "TlsFailed", "{tls:?}");
    let v6 = probe(format!("{base}canary.txt"), None, Family::Ipv6).await;
    assert_eq!(reason(&v6), "NoAddress", "{v6:?}");
    // Every canary must answer: the first failing one decides.
    let both = probe_all(
        &[
            Canary {
                url: format!("{base}canary.txt"),
                size: Some(5),
            },
            Canary {
                url: format!("{base}gone.txt"),
                size: None,
            },
        ],
        &settings(Family::Ipv4),
    )
    .await;
    assert_eq!(both, Outcome::Failed(Failure::Status(404)));
}

fn fleet(port: u16) -> FleetState {
    FleetState {
        projects: vec![ProjectState {
            name: "demo".into(),
            canary_file: Some("canary.txt".into()),
            ..Default::default()
        }],
        mirrors: vec![MirrorState {
            name: "m".into(),
            enabled: true,
            ipv4: true,
            ipv6: false,
            health_check: HealthCheckState {
                interval_seconds: 1,
                timeout_seconds: 1,
                ..Default::default()
            },
            projects: vec![MirrorProjectState {
                project: "demo".into(),
                http: Some(format!("http://127.0.0.1:{port}/")),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn targets_cover_each_scheme_and_declared_family() {
    let mut f = fleet(8);
    f.mirrors[0].ipv6 = true;
    f.mirrors[0].projects[0].https = Some("https://m.example/demo/".into());
    let t = targets(&f, &HashMap::new(), &HashMap::new());
    let keys: Vec<(ProbeScheme, Family, String)> = t
        .iter()
        .map(|t| (t.key.scheme, t.key.family, t.canaries[0].url.clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (
                ProbeScheme::Http,
                Family::Ipv4,
                "http://127.0.0.1:8/canary.txt".into()
            ),
            (
                ProbeScheme::Http,
                Family::Ipv6,
                "http://127.0.0.1:8/canary.txt".into()
            ),
            (
                ProbeScheme::Https,
                Family::Ipv4,
                "https://m.example/demo/canary.txt".into()
            ),
            (
                ProbeScheme::Https,
                Family::Ipv6,
                "https://m.example/demo/canary.txt".into()
            ),
        ]
    );
    f.mirrors[0].health_check.disabled = true;
    assert!(
        targets(&f, &HashMap::new(), &HashMap::new()).is_empty(),
        "checks turned off"
    );
    f.mirrors[0].health_check.disabled = false;
    f.mirrors[0].enabled = false;
    assert!(
        targets(&f, &HashMap::new(), &HashMap::new()).is_empty(),
        "disabled mirrors are not probed"
    );
}

/// Waits until the store says the mirror's http/IPv4 is `up`; returns how long it took.
async fn until_health(reader: &StateReader<EmbeddedStore>, up: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    wait_for(&format!("the store to say up={up}"), limit, || async move {
        {
            let mut state = LoadedState::default();
            reader.resync(&mut state).await.map_err(|e| e.to_string())?;
            let now = state
                .health
                .get("m")
                .and_then(|h| h.get(ProbeScheme::Http, Family::Ipv4))
                .map(|e| e.up);
            if now == Some(up) {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        }
    })
    .await;
    start.elapsed()
}

/// Receives the checker's next transition (it writes the store first, then sends this): the
/// change, named as the test compares it. Panics if none comes within `limit`.
async fn next_transition(
    transitions: &mut tokio::sync::mpsc::Receiver<Transition>,
    seen: &[String],
    limit: Duration,
) -> String {
    let what = format!("a transition after {seen:?}");
    let t = within(&what, limit, transitions.recv())
        .await
        .unwrap_or_else(|| panic!("the checker stopped after {seen:?}"));
    assert_eq!(
        t.key,
        Key {
            mirror: "m".into(),
            scheme: ProbeScheme::Http,
            family: Family::Ipv4
        }
    );
    match t.change {
        Change::Down { reason, .. } => format!("down:{reason}"),
        c => format!("{c:?}"),
    }
}

/// The checker end to end: up, down when the server goes, up when it is back — each in the
/// store and, after it, on the transitions channel, in that order (one target: one probe
/// sequence, so the order is the code's).
#[tokio::test]
async fn the_checker_writes_down_and_up_to_the_store() {
    let root = world_readable_tempdir();
    write_tree(root.path(), &[("canary.txt", b"12345", 1_795_309_320)]);
    let port = free_port();
    let web = nginx_on(root.path(), port);
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let writer = StateWriter::new(store.clone());
    let reader = StateReader::new(store.clone());
    let t: Vec<Target> = targets(&fleet(port), &HashMap::new(), &HashMap::new());
    let (_targets_tx, targets_rx) = tokio::sync::watch::channel(Arc::new(t));
    let (_rescanned_tx, rescanned_rx) = tokio::sync::mpsc::channel(4);
    let (transitions_tx, mut transitions) = tokio::sync::mpsc::channel(64);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let task =
        tokio::spawn(Checker::new(writer, now).run(targets_rx, rescanned_rx, transitions_tx));
    let mut seen = Vec::new();
    until_health(&reader, true, Duration::from_secs(5)).await;
    seen.push(next_transition(&mut transitions, &seen, Duration::from_secs(5)).await);
    drop(web);
    let took = until_health(&reader, false, Duration::from_secs(15)).await;
    assert!(
        took < Duration::from_secs(10),
        "down within 10 s, took {took:?}"
    );
    seen.push(next_transition(&mut transitions, &seen, Duration::from_secs(5)).await);
    let web = nginx_on(root.path(), port);
    until_health(&reader, true, Duration::from_secs(15)).await;
    seen.push(next_transition(&mut transitions, &seen, Duration::from_secs(5)).await);
    task.abort();
    drop(web);
    assert_eq!(seen, vec!["Up", "down:ConnectRefused", "Up"]);
    assert!(
        transitions.try_recv().is_err(),
        "no transition beyond the three changes"
    );
}
