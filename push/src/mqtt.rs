//! The MQTT publisher: one connection to the broker, kept up with exponential backoff, that
//! publishes each waiting notice with QoS 1 (the serial as payload, not retained) and counts
//! it as announced only when the broker's PUBACK for it arrives.
//!
//! rumqttc keeps unacknowledged publishes across a reconnect only within a resumed session;
//! with a clean session (ours: `session_present` is false) it clears them. So this module
//! never relies on it: each connection is a fresh client, and whatever was handed to the
//! client and not acknowledged when the connection ends goes back to the queue (unless a
//! newer serial waits for that topic) and is sent again on the next connection. A notice may
//! so reach a subscriber twice (QoS 1 is "at least once"); never zero times while the
//! process runs.
//!
//! It must not block the caller: the queue is the only thing shared with it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;

use crate::queue::Latest;
use crate::{Broker, Counters};

/// Publishes handed to the client and not yet acknowledged, at most.
const WINDOW: usize = 32;

/// How a connection ended.
enum Ended {
    /// It never got a CONNACK.
    NotConnected(String),
    /// It was up, then failed.
    Lost(String),
}

/// Publishes what `queue` holds to `broker`, forever (until the task is aborted).
pub(crate) async fn run(
    broker: Broker,
    queue: Arc<Latest<String, String>>,
    counters: Arc<Counters>,
) {
    let options = broker.options_as(broker.client_id.clone());
    let mut wait = broker.backoff_min;
    let mut failures = 0u32;
    loop {
        match session(options.clone(), &queue, &counters).await {
            Ended::NotConnected(why) => {
                failures += 1;
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                // Every attempt while the outage is short, then every 8th: the log shows it is
                // still down without a line per attempt.
                if failures <= 3 || failures.is_multiple_of(8) {
                    tracing::warn!(broker = %broker.host, port = broker.port, %why, attempt = failures, retry_in = ?wait, "cannot connect to the MQTT broker");
                }
            }
            Ended::Lost(why) => {
                failures = 0;
                wait = broker.backoff_min;
                tracing::warn!(broker = %broker.host, port = broker.port, %why, retry_in = ?wait, "lost the MQTT broker; reconnecting");
            }
        }
        counters.connected.store(false, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(broker.backoff_max);
    }
}

/// One connection: connects, then publishes what the queue holds until the connection fails.
async fn session(
    options: MqttOptions,
    queue: &Latest<String, String>,
    counters: &Counters,
) -> Ended {
    let (client, mut eventloop) = AsyncClient::new(options, WINDOW);
    // The event loop runs in a task of its own (its `poll` must not be cancelled by the
    // select below); its events arrive here, the first error last.
    let (events_tx, mut events) = mpsc::channel(WINDOW * 2);
    let polling = AbortOnDrop(tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if events_tx.send(event).await.is_err() || failed {
                return;
            }
        }
    }));
    match events.recv().await {
        Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
        Some(Ok(other)) => return Ended::NotConnected(format!("unexpected {other:?}")),
        Some(Err(e)) => return Ended::NotConnected(mirrorfleet_runtime::error_chain(&e)),
        None => return Ended::NotConnected("the event loop stopped".to_owned()),
    }
    counters.connected.store(true, Ordering::Relaxed);
    tracing::info!("connected to the MQTT broker");
    // Handed to the client, waiting for their packet id (in order).
    let mut sent: VecDeque<(String, String)> = VecDeque::new();
    // Sent with a packet id, waiting for the PUBACK.
    let mut unacked: HashMap<u16, (String, String)> = HashMap::new();
    let ended = loop {
        let room = WINDOW.saturating_sub(sent.len() + unacked.len());
        for (topic, serial) in queue.take(room) {
            match client.try_publish(topic.clone(), QoS::AtLeastOnce, false, serial.clone()) {
                Ok(()) => sent.push_back((topic, serial)),
                Err(e) => {
                    tracing::debug!(error = %e, "the MQTT client is busy; publishing later");
                    queue.put_back(topic, serial);
                    break;
                }
            }
        }
        let room = WINDOW.saturating_sub(sent.len() + unacked.len());
        tokio::select! {
            () = queue.offered(), if room > 0 => {}
            event = events.recv() => match event {
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(notice) = sent.pop_front() {
                        unacked.insert(pkid, notice);
                    }
                }
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some((topic, serial)) = unacked.remove(&ack.pkid) {
                        counters.published.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%topic, %serial, "announced on MQTT");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Ended::Lost(mirrorfleet_runtime::error_chain(&e)),
                None => break Ended::Lost("the event loop stopped".to_owned()),
            }
        }
    };
    drop(polling);
    for (topic, serial) in sent.into_iter().chain(unacked.into_values()) {
        queue.put_back(topic, serial);
    }
    ended
}

/// A task aborted when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
