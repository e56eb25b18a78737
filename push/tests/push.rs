//! Pushes against a real mosquitto: the topic, payload and QoS of an announcement, a broker
//! down at start or restarted, a broker with a password; webhooks against a small HTTP server
//! of the test's own.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mirrorfleet_crds::state::{ProjectState, PushState, SourceState};
use mirrorfleet_push::{Broker, Pusher, Settings};
use mirrorfleet_testkit::{Mosquitto, free_port, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(20);

fn project(name: &str, topic: Option<&str>, webhook: Option<String>) -> ProjectState {
    ProjectState {
        name: name.into(),
        source: SourceState {
            rsync: Some(format!("rsync://rsync.example.org/{name}/")),
            ..Default::default()
        },
        push: PushState {
            topic: topic.map(str::to_owned),
            webhook,
            rsync: None,
        },
        ..Default::default()
    }
}

fn broker(url: &str) -> Broker {
    let mut b = Broker::parse(url, &format!("test-pusher-{}", free_port())).unwrap();
    b.backoff_min = Duration::from_millis(50);
    b.backoff_max = Duration::from_millis(400);
    b
}

/// A subscriber (QoS 1) of `filter`, subscribed when this returns.
struct Subscriber {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, String, QoS)>,
    _task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn new(port: u16, filter: &str) -> Subscriber {
        let id = format!("test-sub-{}", free_port());
        let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let (tx, messages) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let task = tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(s) = subscribed_tx.take() {
                            let _ = s.send(());
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        let _ = tx.send((p.topic, payload, p.qos));
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(DEADLINE, subscribed)
            .await
            .expect("no SUBACK from mosquitto")
            .unwrap();
        Subscriber {
            client,
            messages,
            _task: task,
        }
    }

    async fn next(&mut self) -> (String, String, QoS) {
        tokio::time::timeout(DEADLINE, self.messages.recv())
            .await
            .expect("no message before the deadline")
            .unwrap()
    }

    /// Publishes a marker on `topic` and returns what arrived before it: what the pusher
    /// sent (acknowledged before this is called) is all there, in order.
    async fn until_fence(&mut self, topic: &str) -> Vec<(String, String)> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, "fence")
            .await
            .unwrap();
        let mut seen = Vec::new();
        loop {
            let (t, payload, _) = self.next().await;
            if payload == "fence" {
                return seen;
            }
            seen.push((t, payload));
        }
    }
}

async fn published(pusher: &Pusher, n: u64) {
    wait_until(&format!("{n} acknowledged publishes"), DEADLINE, || async {
        pusher.counters().published.load(Ordering::Relaxed) >= n
    })
    .await;
}

#[tokio::test]
async fn a_new_serial_is_published_once_with_qos_1_on_the_origin_topic() {
    let mosquitto = Mosquitto::start();
    let mut sub = Subscriber::new(mosquitto.port, "rsync/#").await;
    let pusher = Pusher::start(Settings::new(Some(broker(&mosquitto.url())), "hub")).unwrap();
    pusher.announce(&project("demo", None, None), "20261122T1000");
    let (topic, payload, qos) = sub.next().await;
    assert_eq!(
        topic, "rsync/rsync.example.org/demo",
        "rsync/<origin host>/<project>"
    );
    assert_eq!(payload, "20261122T1000", "the payload is the serial");
    assert_eq!(qos, QoS::AtLeastOnce, "published with QoS 1");
    published(&pusher, 1).await;
    assert!(
        sub.until_fence("rsync/rsync.example.org/demo")
            .await
            .is_empty(),
        "published once"
    );
}

#[tokio::test]
async fn a_projects_own_topic_is_used() {
    let mosquitto = Mosquitto::start();
    let mut sub = Subscriber::new(mosquitto.port, "#").await;
    let pusher = Pusher::start(Settings::new(Some(broker(&mosquitto.url())), "hub")).unwrap();
    pusher.announce(&project("demo", Some("mirrors/demo/updated"), None), "7");
    let (topic, payload, _) = sub.next().await;
    assert_eq!(
        (topic.as_str(), payload.as_str()),
        ("mirrors/demo/updated", "7")
    );
}

#[tokio::test]
async fn a_broker_down_at_start_gets_the_newest_serial_once_it_is_up() {
    let port = free_port();
    let mut mosquitto = Mosquitto::stopped_on(port);
    let mut b = broker(&format!("mqtt://127.0.0.1:{port}"));
    // A fixed wait between attempts: the subscriber is in place before the next one.
    b.backoff_min = Duration::from_secs(2);
    b.backoff_max = Duration::from_secs(2);
    let mut settings = Settings::new(Some(b), "hub");
    settings.queue_cap = 2;
    let pusher = Pusher::start(settings).unwrap();
    let started = Instant::now();
    for serial in ["1", "2", "3"] {
        pusher.announce(&project("demo", None, None), serial);
    }
    pusher.announce(&project("other", None, None), "1");
    pusher.announce(&project("third", None, None), "1");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "announcing waited {took:?} for the broker"
    );
    assert_eq!(
        pusher.dropped(),
        1,
        "a third topic is over the queue's cap of 2"
    );
    wait_until("a failed connection attempt", DEADLINE, || async {
        pusher.counters().connect_failures.load(Ordering::Relaxed) >= 1
    })
    .await;
    mosquitto.restart();
    let mut sub = Subscriber::new(port, "rsync/#").await;
    published(&pusher, 2).await;
    let mut seen = sub.until_fence("rsync/fence").await;
    seen.sort();
    assert_eq!(
        seen,
        [
            ("rsync/rsync.example.org/demo".to_owned(), "3".to_owned()),
            ("rsync/rsync.example.org/other".to_owned(), "1".to_owned()),
        ],
        "the newest serial of each queued topic, once"
    );
}

#[tokio::test]
async fn after_a_broker_restart_the_next_serial_arrives() {
    let mut mosquitto = Mosquitto::start();
    let pusher = Pusher::start(Settings::new(Some(broker(&mosquitto.url())), "hub")).unwrap();
    {
        let mut sub = Subscriber::new(mosquitto.port, "rsync/#").await;
        pusher.announce(&project("demo", None, None), "1");
        assert_eq!(sub.next().await.1, "1");
    }
    mosquitto.restart();
    let mut sub = Subscriber::new(mosquitto.port, "rsync/#").await;
    pusher.announce(&project("demo", None, None), "2");
    let (topic, payload, _) = sub.next().await;
    assert_eq!(
        (topic.as_str(), payload.as_str()),
        ("rsync/rsync.example.org/demo", "2")
    );
}

#[tokio::test]
async fn a_broker_with_a_password_is_logged_in_to_with_the_password_file() {
    let mosquitto = Mosquitto::with_password("pusher", "s3cret");
    let dir = mirrorfleet_testkit::world_readable_tempdir();
    let file = dir.path().join("password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let b = broker(&format!("mqtt://pusher@127.0.0.1:{}", mosquitto.port))
        .with_password_file(&file)
        .unwrap();
    let pusher = Pusher::start(Settings::new(Some(b), "hub")).unwrap();
    pusher.announce(&project("demo", None, None), "1");
    published(&pusher, 1).await;
    let refused = Pusher::start(Settings::new(
        Some(broker(&format!(
            "mqtt://pusher:wrong@127.0.0.1:{}",
            mosquitto.port
        ))),
        "hub",
    ))
    .unwrap();
    wait_until("a refused login", DEADLINE, || async {
        refused.counters().connect_failures.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(!refused.connected());
}

/// An HTTP server answering each request with the next of `statuses` (then 200), sending
/// each request's body on the channel.
async fn webhook_server(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let statuses = Arc::new(std::sync::Mutex::new(statuses.into_iter()));
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let (tx, statuses) = (tx.clone(), statuses.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = conn.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            assert!(head.starts_with("POST /hook "), "{head}");
                            break body.to_owned();
                        }
                    }
                };
                let status = statuses.lock().unwrap().next().unwrap_or(200);
                let _ = tx.send(body);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                conn.write_all(answer.as_bytes()).await.unwrap();
            });
        }
    });
    (url, rx)
}

#[tokio::test]
async fn a_webhook_gets_its_post_and_is_retried_after_a_failure() {
    let (url, mut bodies) = webhook_server(vec![503]).await;
    let mut settings = Settings::new(None, "hub");
    settings.webhooks.backoff = Duration::from_millis(50);
    let pusher = Pusher::start(settings).unwrap();
    let started = Instant::now();
    pusher.announce(&project("demo", None, Some(url)), "42");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "announcing waited for the webhook"
    );
    let want = serde_json::json!({"project": "demo", "serial": "42"});
    for attempt in ["the first (answered 503)", "the retry"] {
        let body = tokio::time::timeout(DEADLINE, bodies.recv())
            .await
            .unwrap()
            .unwrap();
        let got: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got, want, "{attempt}");
    }
    wait_until("a delivered webhook", DEADLINE, || async {
        pusher.counters().webhooks_delivered.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(pusher.counters().webhooks_failed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn reports_are_read_and_garbage_is_skipped() {
    let mosquitto = Mosquitto::start();
    let mut reports =
        mirrorfleet_push::report::subscribe(broker(&mosquitto.url()), "mirrorfleet/report");
    let (client, mut events) = AsyncClient::new(
        MqttOptions::new("test-reporter", "127.0.0.1", mosquitto.port),
        16,
    );
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    // Until the subscriber is in place, publishes are lost: publish a report until one
    // arrives, garbage always first (it must never come through).
    let report = tokio::time::timeout(DEADLINE, async {
        loop {
            for payload in [
                "synced 42",
                r#"{"serial":"42"}"#,
                r#"{"project":"demo","serial":"42"}"#,
            ] {
                client
                    .publish("mirrorfleet/report/m1", QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            if let Ok(Some(r)) =
                tokio::time::timeout(Duration::from_millis(200), reports.recv()).await
            {
                return r;
            }
        }
    })
    .await
    .expect("no report before the deadline");
    assert_eq!(
        (
            report.mirror.as_str(),
            report.project.as_str(),
            report.serial.as_str()
        ),
        ("m1", "demo", "42")
    );
}
