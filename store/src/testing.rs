//! For tests of every crate (feature `testing`): real redis-server and redis-sentinel
//! processes on free loopback ports, each with its own config and directory, stopped when
//! dropped; free ports; installed programs; waiting for a condition. Test code: it panics with
//! a clear message when something it needs is missing.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A redis-server (or redis-sentinel) process.
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
    sentinel: bool,
}

impl Redis {
    /// Starts a standalone server.
    pub fn start() -> Redis {
        Self::start_with("")
    }

    /// Starts a server with extra config lines (e.g. `replicaof 127.0.0.1 P`).
    pub fn start_with(extra: &str) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsave \"\"\nappendonly no\nlogfile {}/redis.log\nprotected-mode no\n{extra}\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut r = Redis {
            port,
            child: None,
            dir,
            conf,
            sentinel: false,
        };
        r.spawn();
        r
    }

    /// Starts a sentinel watching `master_port` as `name` (quorum 2, fast failover).
    pub fn sentinel(name: &str, master_port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}/sentinel.log\nprotected-mode no\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut r = Redis {
            port,
            child: None,
            dir,
            conf,
            sentinel: true,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = if self.sentinel {
            let mut c = Command::new(find("redis-sentinel"));
            c.arg(&self.conf);
            c
        } else {
            let mut c = Command::new(find("redis-server"));
            c.arg(&self.conf);
            c
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the process (like a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same config.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a command through redis-cli-free raw RESP, for tests that write foreign data.
    pub async fn raw(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
