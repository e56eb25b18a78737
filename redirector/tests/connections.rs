//! Connection limits against real sockets: silent, slow-header and idle keep-alive clients
//! are disconnected after the header-read timeout; connections over the per-client cap are
//! closed as they are accepted and counted; other clients are still answered throughout.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mirrorfleet_crds::state::{FleetState, ProjectState};
use mirrorfleet_geo::Geo;
use mirrorfleet_redirector::server::{self, Config};
use mirrorfleet_store::{EmbeddedStore, StateWriter};
use mirrorfleet_testkit::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// A GET over a fresh connection from `from` (a loopback address): the status, if any.
async fn get_from(from: &str, addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = connect_from(from, addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// How long until the server closes `s` (reading and discarding whatever it sends).
async fn closed_after(mut s: TcpStream, start: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => return Duration::MAX,
        }
    }
}

/// A redirector on a fleet of one project, with `config`, ready: its address, the sender
/// that stops it and its task.
async fn start(
    dir: &std::path::Path,
    config: Config,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::sync::Arc<server::App>>,
) {
    let store = EmbeddedStore::open(dir).unwrap();
    let fleet = FleetState {
        projects: vec![ProjectState {
            name: "p".into(),
            path_prefix: Some("/p/".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    StateWriter::new(store.clone())
        .write_fleet(&fleet)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        server::run(
            vec![listener],
            store,
            Geo::open(None, None).unwrap(),
            config,
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    wait_for(
        "the redirector to be ready",
        Duration::from_secs(10),
        || async {
            match get_from("127.0.0.2", addr, "/readyz").await {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    (addr, stop, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_idle_clients_are_cut_and_the_server_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop, _done) = start(
        dir.path(),
        Config {
            header_read_timeout: Duration::from_secs(1),
            max_connections_per_client: 20,
            ..Config::default()
        },
    )
    .await;

    // 60 silent connections from one address: 20 held (up to the timeout), 40 closed at once.
    let start = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // A slow client sending its headers a byte at a time.
    let mut slow = connect_from("127.0.0.3", addr).await.unwrap();
    let slow_task = tokio::spawn(async move {
        let _ = slow.write_all(b"GET /readyz HTTP/1.1\r\n").await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
        }
        closed_after(slow, start).await
    });
    // An idle keep-alive client: one request answered, then nothing.
    let mut idle = connect_from("127.0.0.4", addr).await.unwrap();
    idle.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let idle_since = Instant::now();
    let idle_task = tokio::spawn(closed_after(idle, idle_since));

    // Meanwhile other clients are answered.
    assert_eq!(get_from("127.0.0.2", addr, "/readyz").await, Some(200));

    let waits: Vec<_> = silent
        .into_iter()
        .map(|s| tokio::spawn(closed_after(s, start)))
        .collect();
    let mut closes = Vec::new();
    for w in waits {
        closes.push(w.await.unwrap());
    }
    let at_once = closes
        .iter()
        .filter(|d| **d < Duration::from_millis(900))
        .count();
    let timed_out = closes
        .iter()
        .filter(|d| **d >= Duration::from_millis(900) && **d < Duration::from_secs(5))
        .count();
    assert_eq!((at_once, timed_out), (40, 20), "{closes:?}");
    let slow_closed = slow_task.await.unwrap();
    assert!(
        slow_closed < Duration::from_secs(3),
        "a slow header sender is cut at the timeout, not held: {slow_closed:?}"
    );
    let idle_closed = idle_task.await.unwrap();
    assert!(
        idle_closed >= Duration::from_millis(900) && idle_closed < Duration::from_secs(3),
        "an idle keep-alive connection is closed after the timeout: {idle_closed:?}"
    );

    // Counted; nothing left open but what the metrics request itself holds.
    let mut s = connect_from("127.0.0.2", addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.contains("mirrorfleet_connections_refused_total 40\n"),
        "{out}"
    );
    assert!(out.contains("mirrorfleet_connections_open 1\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_readiness_turns_off_first_then_the_listener_closes_and_idle_connections_drain()
{
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, done) = start(
        dir.path(),
        Config {
            drain_delay: Duration::from_secs(1),
            ..Config::default()
        },
    )
    .await;
    // An idle keep-alive client, its first answer read.
    let mut idle = connect_from("127.0.0.4", addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let start = Instant::now();
    stop.send(()).unwrap();
    wait_for("readiness to turn off", Duration::from_secs(5), || async {
        match get_from("127.0.0.2", addr, "/readyz").await {
            Some(503) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Still accepting and answering during the delay.
    assert_eq!(get_from("127.0.0.2", addr, "/healthz").await, Some(200));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "checked within the delay"
    );
    // Then the listener closes, the idle connection is closed, and the server stops.
    let idle_closed = closed_after(idle, start).await;
    assert!(
        idle_closed >= Duration::from_millis(900) && idle_closed < Duration::from_secs(5),
        "the idle connection is closed once the delay is over: {idle_closed:?}"
    );
    tokio::time::timeout(Duration::from_secs(15), done)
        .await
        .unwrap()
        .unwrap();
    assert!(
        connect_from("127.0.0.2", addr).await.is_err(),
        "the listener is closed"
    );
}
