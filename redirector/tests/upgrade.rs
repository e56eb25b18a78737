//! A zero-downtime upgrade on one host, as systemd socket activation does it: one listening
//! socket, owned by a supervisor (here a few lines of Python standing in for systemd), passed
//! to the running redirector and then to its successor as `LISTEN_FDS`; the old one gets
//! SIGTERM and drains. Under a steady load of fresh connections, no request fails.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mirrorfleet_crds::state::{FleetState, ProjectState};
use mirrorfleet_store::{RedisConfig, RedisStore, RedisTarget, StateWriter};
use mirrorfleet_testkit::{Redis, wait_for_blocking};

/// The supervisor: binds a socket, prints its port, then for each line on stdin — `start`,
/// or `term N` — starts a redirector with the socket as fd 3, or sends SIGTERM to the N-th.
const SUPERVISOR: &str = r#"
import os, signal, socket, subprocess, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(1024)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
print(s.getsockname()[1], flush=True)
children = []
env = dict(os.environ, LISTEN_FDS="1")
for line in sys.stdin:
    words = line.split()
    if words[0] == "start":
        children.append(subprocess.Popen(sys.argv[1:], pass_fds=(3,), env=env))
        print("started", children[-1].pid, flush=True)
    elif words[0] == "term":
        child = children[int(words[1])]
        child.send_signal(signal.SIGTERM)
        print("exited", child.wait(), flush=True)
for child in children:
    child.kill()
"#;

fn healthz(port: u16) -> Result<(), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if out.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answered {:?}", out.lines().next()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirector_replaced_under_load_through_its_inherited_socket_fails_no_request() {
    let redis = Redis::start();
    let store = RedisStore::connect(RedisConfig::new(RedisTarget::Url(redis.url())))
        .await
        .unwrap();
    let fleet = FleetState {
        projects: vec![ProjectState {
            name: "p".into(),
            path_prefix: Some("/p/".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    StateWriter::new(store).write_fleet(&fleet).await.unwrap();

    let mut supervisor = Command::new("python3")
        .args([
            "-c",
            SUPERVISOR,
            env!("CARGO_BIN_EXE_mirrorfleet-redirector"),
        ])
        .args(["--redis", &redis.url(), "--drain-delay", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = supervisor.stdin.take().unwrap();
    let mut from = std::io::BufReader::new(supervisor.stdout.take().unwrap());
    let mut line = || {
        let mut l = String::new();
        from.read_line(&mut l).unwrap();
        l.trim().to_owned()
    };
    let port: u16 = line().parse().unwrap();
    writeln!(to, "start").unwrap();
    assert!(line().starts_with("started"));
    wait_for_blocking("the first redirector", Duration::from_secs(20), || {
        healthz(port)
    });

    // A steady load of fresh connections, each one request.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match healthz(port) {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.lock().unwrap().push(e),
                }
            }
        })
    };
    let served = |n: u64| {
        let at = ok.load(Ordering::Relaxed) + n;
        wait_for_blocking("requests to be served", Duration::from_secs(20), || {
            if ok.load(Ordering::Relaxed) >= at {
                Ok(())
            } else {
                Err(format!("{} served", ok.load(Ordering::Relaxed)))
            }
        });
    };
    served(200);
    // The successor starts on the same socket; the old one is told to stop and drains.
    writeln!(to, "start").unwrap();
    assert!(line().starts_with("started"));
    served(200);
    writeln!(to, "term 0").unwrap();
    assert_eq!(
        line(),
        "exited 0",
        "the old redirector drained and exited cleanly"
    );
    // Only the successor is left, and it serves.
    served(200);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    drop(to);
    let _ = supervisor.wait();
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok.load(Ordering::Relaxed) + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
}
