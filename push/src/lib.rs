//! Push to mirrors: tells them a project's source has a new serial, in the form micro mirrors
//! and Alpine-style mirrors already subscribe to (`mqtt-exec -t 'rsync/<hub>/#'`): an MQTT
//! publish on `rsync/<origin host>/<project>` (or the Project's `spec.push.topic`) with the
//! serial as payload, QoS 1; and, for mirrors without MQTT, a POST to the Project's
//! `spec.push.webhook`.
//!
//! [`Pusher::announce`] never blocks and never fails: notices wait in bounded queues (the
//! newest serial per topic kept, overflow dropped, counted and logged once) that a publisher
//! task ([`mqtt`], reconnecting with exponential backoff) and a webhook task ([`webhook`])
//! drain. A broker or webhook that is down so never stalls indexing or redirects.
//!
//! This crate must not depend on kube or git2: the standalone binary and the operator both
//! use it. It owns no store keys; what to announce is the caller's ([`new_serials`]).

mod config;
mod mqtt;
mod queue;
pub mod report;
mod target;
mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mirrorfleet_crds::state::{IndexMeta, ProjectState};

pub use config::Broker;
pub use queue::{Latest, Offered};
pub use target::topic;
pub use webhook::WebhookSettings;

/// What can go wrong setting up pushes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker URL is not one this crate takes.
    #[error("bad MQTT broker URL {url}: {why}")]
    BrokerUrl { url: String, why: String },
    /// A file named in the settings cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client for webhooks cannot be built.
    #[error("cannot build the webhook HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The MQTT subscriber for reports cannot start.
    #[error("cannot subscribe to {topic}")]
    Subscribe {
        topic: String,
        #[source]
        source: rumqttc::ClientError,
    },
}

/// How pushes are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The MQTT broker, if any (without one only webhooks are called).
    pub broker: Option<Broker>,
    /// The origin host of projects with a local source (`rsync/<hub>/<project>`).
    pub hub: String,
    /// Topics (and webhook deliveries) waiting at most; more are dropped and counted.
    pub queue_cap: usize,
    /// Webhook deliveries.
    pub webhooks: WebhookSettings,
}

impl Settings {
    /// Settings with `broker` and `hub`, and defaults otherwise.
    pub fn new(broker: Option<Broker>, hub: impl Into<String>) -> Settings {
        Settings {
            broker,
            hub: hub.into(),
            queue_cap: 1024,
            webhooks: WebhookSettings::default(),
        }
    }
}

/// Counts of what was pushed.
#[derive(Debug, Default)]
pub struct Counters {
    /// MQTT publishes the broker acknowledged.
    pub published: AtomicU64,
    /// Whether the MQTT connection is up.
    pub connected: AtomicBool,
    /// Connection attempts that failed.
    pub connect_failures: AtomicU64,
    /// Webhook POSTs answered with 2xx.
    pub webhooks_delivered: AtomicU64,
    /// Serials given up on after every attempt failed.
    pub webhooks_failed: AtomicU64,
}

/// Announces new serials; cheap to clone. The tasks stop when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Pusher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hub: String,
    mqtt: Option<Arc<Latest<String, String>>>,
    webhooks: Arc<Latest<webhook::Key, String>>,
    counters: Arc<Counters>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Pusher {
    /// Starts the publisher and webhook tasks (on the current runtime).
    pub fn start(settings: Settings) -> Result<Pusher, Error> {
        // rustls (MQTT over TLS, HTTPS webhooks) uses the process's provider: ring, the only
        // one in the binary.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let counters = Arc::new(Counters::default());
        let mut tasks = Vec::new();
        let mqtt = settings.broker.map(|broker| {
            let queue = Arc::new(Latest::new(settings.queue_cap));
            let task = tokio::spawn(mqtt::run(broker, queue.clone(), counters.clone()));
            tasks.push(task.abort_handle());
            queue
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("mirrorfleet-push/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.webhooks.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(Error::HttpClient)?;
        let webhooks = Arc::new(Latest::new(settings.queue_cap));
        let task = tokio::spawn(webhook::run(
            client,
            settings.webhooks,
            webhooks.clone(),
            counters.clone(),
        ));
        tasks.push(task.abort_handle());
        Ok(Pusher {
            inner: Arc::new(Inner {
                hub: settings.hub,
                mqtt,
                webhooks,
                counters,
                tasks,
            }),
        })
    }

    /// Announces that `project`'s source has serial `serial`: queued for its MQTT topic and
    /// its webhook, if any. Returns at once.
    pub fn announce(&self, project: &ProjectState, serial: &str) {
        let i = &self.inner;
        if let Some(q) = &i.mqtt {
            let topic = topic(project, &i.hub);
            tracing::debug!(project = %project.name, %serial, %topic, "queued for MQTT");
            q.offer(topic, serial.to_owned());
        }
        if let Some(url) = project.push.webhook.as_deref().filter(|u| !u.is_empty()) {
            i.webhooks
                .offer((url.to_owned(), project.name.clone()), serial.to_owned());
        }
    }

    /// What was pushed so far.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Notices dropped so far because a queue was full.
    pub fn dropped(&self) -> u64 {
        let i = &self.inner;
        i.mqtt.as_ref().map_or(0, |q| q.dropped()) + i.webhooks.dropped()
    }

    /// Whether the MQTT connection is up.
    pub fn connected(&self) -> bool {
        self.inner.counters.connected.load(Ordering::Relaxed)
    }
}

/// The projects whose index serial in `after` is new since `before` (absent before, or
/// another serial), with that serial — pure.
pub fn new_serials<'a>(
    before: &HashMap<String, Arc<IndexMeta>>,
    after: &'a HashMap<String, Arc<IndexMeta>>,
) -> Vec<(&'a str, &'a str)> {
    let mut new: Vec<_> = after
        .iter()
        .filter(|(project, meta)| before.get(*project).is_none_or(|b| b.serial != meta.serial))
        .map(|(project, meta)| (project.as_str(), meta.serial.as_str()))
        .collect();
    new.sort_unstable();
    new
}

/// The name of this machine (the default hub), or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_is_new_when_it_changed_or_its_project_just_got_an_index() {
        let meta = |serial: &str| {
            Arc::new(IndexMeta {
                serial: serial.into(),
                ..Default::default()
            })
        };
        let map = |entries: &[(&str, &str)]| -> HashMap<String, Arc<IndexMeta>> {
            entries
                .iter()
                .map(|(p, s)| (p.to_string(), meta(s)))
                .collect()
        };
        let before = map(&[("same", "1"), ("changed", "1"), ("gone", "1")]);
        let after = map(&[("same", "1"), ("changed", "2"), ("first", "7")]);
        assert_eq!(
            new_serials(&before, &after),
            [("changed", "2"), ("first", "7")]
        );
        assert!(
            new_serials(&after, &after).is_empty(),
            "nothing changed: nothing new"
        );
    }
}
