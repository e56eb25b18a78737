//! [`Mosquitto`]: an MQTT broker process with its own config and directory, on a loopback
//! port; anonymous, or with a password file.

use crate::{find, free_port, wait_for_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A mosquitto process, killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Mosquitto {
    /// Starts a broker that lets anyone in.
    pub fn start() -> Mosquitto {
        let mut m = Self::configured(free_port(), None);
        m.spawn();
        m
    }

    /// Starts a broker that lets in only `user` with `password` (a `mosquitto_passwd` file).
    pub fn with_password(user: &str, password: &str) -> Mosquitto {
        let mut m = Self::configured(free_port(), Some((user, password)));
        m.spawn();
        m
    }

    /// A broker on `port` that is not started yet ([`Mosquitto::restart`] starts it): a
    /// broker down when its clients start.
    pub fn stopped_on(port: u16) -> Mosquitto {
        Self::configured(port, None)
    }

    fn configured(port: u16, login: Option<(&str, &str)>) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let mut conf = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest file {d}/mosquitto.log\nuser root\n"
        );
        match login {
            None => conf.push_str("allow_anonymous true\n"),
            Some((user, password)) => {
                let file = dir.path().join("passwd");
                let out = Command::new(find("mosquitto_passwd"))
                    .arg("-b")
                    .arg("-c")
                    .arg(&file)
                    .args([user, password])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "mosquitto_passwd: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        Mosquitto {
            port,
            child: None,
            dir,
            conf: path,
        }
    }

    fn spawn(&mut self) {
        let child = Command::new(find("mosquitto"))
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_port(self.port, "mosquitto");
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the process (like a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port with the same config.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
