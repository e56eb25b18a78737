//! The agent's one MQTT connection: subscribes to its projects' topics (again after every
//! reconnect, the session being clean), fires the project's [`Trigger`] for each push whose
//! payload is a serial (garbage gets a log line), and publishes the workers' sync reports on
//! `<prefix>/<mirror>`, QoS 1. Reconnects with exponential backoff.

use std::sync::Arc;

use mirrorfleet_push::Broker;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::mpsc;

use crate::plan::{self, Report};
use crate::sync::Trigger;

/// Runs the connection until `reports` closes: `topics` are (topic, trigger) pairs.
pub async fn run(
    broker: Broker,
    topics: Vec<(String, Arc<Trigger>)>,
    report_topic: String,
    mut reports: mpsc::Receiver<Report>,
) {
    let o = broker.options_as(broker.client_id.clone());
    let (client, mut events) = AsyncClient::new(o, 64);
    let publisher = client.clone();
    let publishing = tokio::spawn(async move {
        while let Some(r) = reports.recv().await {
            let payload = match serde_json::to_vec(&r) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a sync report");
                    continue;
                }
            };
            if let Err(e) = publisher
                .publish(report_topic.as_str(), QoS::AtLeastOnce, false, payload)
                .await
            {
                tracing::warn!(error = %e, "cannot publish a sync report");
            }
        }
    });
    let mut wait = broker.backoff_min;
    while !publishing.is_finished() {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                wait = broker.backoff_min;
                tracing::info!(broker = %broker.host, port = broker.port, topics = topics.len(), "connected to the MQTT broker; subscribing");
                for (topic, _) in &topics {
                    if let Err(e) = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
                        tracing::warn!(%topic, error = %e, "cannot subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => dispatch(&topics, &p.topic, &p.payload),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(broker = %broker.host, port = broker.port, error = %mirrorfleet_runtime::error_chain(&e), retry_in = ?wait, "lost the MQTT broker; reconnecting (the fallback timer still runs)");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(broker.backoff_max);
            }
        }
    }
}

/// Fires the trigger of every project announced on `topic`, when `payload` is a serial.
fn dispatch(topics: &[(String, Arc<Trigger>)], topic: &str, payload: &[u8]) {
    let serial = match plan::push_serial(payload) {
        Ok(s) => s,
        Err(why) => {
            tracing::info!(%topic, %why, "ignored a push: its payload is not a serial");
            return;
        }
    };
    let mut fired = false;
    for (t, trigger) in topics {
        if t == topic {
            trigger.fire(serial);
            fired = true;
        }
    }
    if fired {
        tracing::info!(%topic, %serial, "push received");
    } else {
        tracing::info!(%topic, "ignored a push on a topic of no project carried here");
    }
}
