//! [`Redis`]: a redis-server or redis-sentinel process with its own config and directory.

use crate::{find, free_port, wait_for_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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
        wait_for_port(self.port, "redis");
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
