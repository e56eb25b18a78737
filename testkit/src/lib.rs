//! What the tests of every crate start and wait on: real redis-server, redis-sentinel, mosquitto,
//! rsync daemon, nginx (plain and TLS), vsftpd processes on free loopback ports, each with its own
//! config and directory and stopped when dropped; small hostile servers; free ports;
//! installed programs; with the `kube` feature, a real Kubernetes API server and a runner of
//! its Jobs; waiting for a condition with a deadline that names what was seen.
//!
//! Test code only (a dev-dependency): it panics with a clear message when something it needs
//! is missing, and never reaches an address off this machine.

#![allow(clippy::unwrap_used, missing_docs)]

#[cfg(feature = "git")]
pub mod git;
#[cfg(feature = "kube")]
pub mod kube;
mod mosquitto;
mod redis;
mod servers;

pub use mosquitto::Mosquitto;
pub use redis::Redis;
pub use servers::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `f` returns true, or panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let check = f();
        async move {
            if check.await {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await;
}

/// Polls `probe` until it gives `Ok`, and returns that value; after `timeout`, panics naming
/// `what` and the last `Err` (what was seen instead).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_for`] for tests without a runtime: polls `probe` every 50 ms until it gives `Ok`;
/// after `timeout`, panics naming `what` and the last `Err`.
pub fn wait_for_blocking<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) => assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Awaits `fut`, or panics naming `what` after `timeout`: a wait on a channel or a task that
/// fails with a message instead of hanging the suite.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// A child process killed (and reaped) when dropped, so a failing assertion never leaves it
/// running.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// For tests that count what happens "today" (UTC): if the next midnight is less than
/// `margin` away, waits until it has passed, so that the whole test runs within one day.
/// Waits at most `margin`; returns at once on any other second of the day.
pub fn clear_of_midnight(margin: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into_day = Duration::from_secs(now.as_secs() % 86_400);
    let to_midnight = Duration::from_secs(86_400) - into_day;
    if to_midnight < margin {
        std::thread::sleep(to_midnight + Duration::from_secs(1));
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`, or panics after 10 s
/// naming `what`.
pub fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The path of an installed program (scripts/test installs them all).
pub fn find(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed: run scripts/test, which installs what the tests need");
}
