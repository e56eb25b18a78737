//! The broker setting, parsed once: `mqtt://[user[:password]@]host[:port]` (plain, port 1883)
//! or `mqtts://…` (TLS, port 8883), the password optionally read from a file so that it
//! stays off the command line. Pure apart from reading that file.

use std::path::Path;
use std::time::Duration;

use crate::Error;

/// A broker to publish to.
#[derive(Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`mqtts://`), checked against the platform's roots or `ca`.
    pub tls: bool,
    /// A PEM file of CA certificates to trust instead of the platform's (TLS only).
    pub ca: Option<Vec<u8>>,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any (never printed).
    pub password: Option<String>,
    /// MQTT client id (unique per publisher: the broker drops the older of two sessions
    /// with the same id).
    pub client_id: String,
    /// The first wait before reconnecting; doubled after each failed attempt.
    pub backoff_min: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// The client options for this broker as client `client_id`: credentials, TLS, a clean
    /// session and a 30 s keep-alive — what every MQTT connection of mirrorfleet uses.
    pub fn options_as(&self, client_id: impl Into<String>) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_session(true);
        if let Some(user) = &self.username {
            o.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if self.tls {
            o.set_transport(match &self.ca {
                Some(ca) => rumqttc::Transport::tls(ca.clone(), None, None),
                None => rumqttc::Transport::tls_with_default_config(),
            });
        }
        o
    }

    /// Parses `url` (see the module doc); `client_id` names this publisher.
    pub fn parse(url: &str, client_id: &str) -> Result<Broker, Error> {
        let bad = |why: &str| Error::BrokerUrl {
            url: redacted(url),
            why: why.to_owned(),
        };
        let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let (tls, default_port) = match u.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => return Err(bad(&format!("scheme {other:?}: use mqtt:// or mqtts://"))),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        if !matches!(u.path(), "" | "/") || u.query().is_some() {
            return Err(bad("give only mqtt[s]://[user[:password]@]host[:port]"));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Ok(Broker {
            host: host.trim_matches(['[', ']']).to_owned(),
            port: u.port().unwrap_or(default_port),
            tls,
            ca: None,
            username: Some(decode(u.username())).filter(|s| !s.is_empty()),
            password: u.password().map(decode),
            client_id: client_id.to_owned(),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        })
    }

    /// Takes the password from the first line of `path` (over one in the URL).
    pub fn with_password_file(mut self, path: &Path) -> Result<Broker, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        self.password = Some(text.lines().next().unwrap_or_default().to_owned());
        Ok(self)
    }

    /// Trusts the CA certificates in the PEM file `path` instead of the platform's.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Broker, Error> {
        let pem = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        self.ca = Some(pem);
        Ok(self)
    }
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("…"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let ok = |url: &str| Broker::parse(url, "id").unwrap();
        let b = ok("mqtt://msg.example.org");
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("msg.example.org", 1883, false),
            "plain: port 1883"
        );
        let b = ok("mqtts://msg.example.org");
        assert_eq!((b.port, b.tls), (8883, true), "TLS: port 8883");
        let b = ok("mqtt://pub:s%40c+ret@127.0.0.1:41883/");
        assert_eq!(
            (b.username.as_deref(), b.password.as_deref(), b.port),
            (Some("pub"), Some("s@c+ret"), 41883),
            "credentials are percent-decoded"
        );
        assert_eq!(
            ok("mqtt://[::1]:1").host,
            "::1",
            "an IPv6 address loses its brackets"
        );
        for (rule, url) in [
            ("another scheme", "http://msg.example.org"),
            ("no host", "mqtt://"),
            ("a path", "mqtt://h/rsync"),
            ("not a URL", "msg.example.org"),
        ] {
            assert!(Broker::parse(url, "id").is_err(), "{rule}: {url}");
        }
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let e = Broker::parse("http://u:hunter2@h", "id")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://u:") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_password_file_wins() {
        let dir = mirrorfleet_testkit::world_readable_tempdir();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let b = Broker::parse("mqtt://u:from-url@h", "id")
            .unwrap()
            .with_password_file(&f)
            .unwrap();
        assert_eq!(b.password.as_deref(), Some("from-file"));
        assert!(
            !format!("{b:?}").contains("from-file"),
            "Debug hides the password"
        );
    }
}
