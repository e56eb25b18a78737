//! Webhook deliveries: a POST of `{"project": …, "serial": …}` (JSON) to a Project's
//! `spec.push.webhook`, with a short timeout, retried with exponential backoff; a delivery
//! still retrying gives up as soon as a newer serial for the same (webhook, project) waits,
//! which is then sent instead. One delivery per (webhook, project) at a time, in tasks of
//! their own, so that a slow webhook never holds up another.
//!
//! It must not block the caller: the queue is the only thing shared with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::Counters;
use crate::queue::Latest;

/// (webhook URL, project).
pub(crate) type Key = (String, String);

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Timeout of one POST (connect and answer).
    pub timeout: Duration,
    /// Attempts per serial.
    pub attempts: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub backoff: Duration,
}

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        WebhookSettings {
            timeout: Duration::from_secs(5),
            attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// Delivers what `queue` holds, forever (until the task is aborted).
pub(crate) async fn run(
    client: reqwest::Client,
    settings: WebhookSettings,
    queue: Arc<Latest<Key, String>>,
    counters: Arc<Counters>,
) {
    // The key each delivery in flight is for.
    let mut busy: HashMap<tokio::task::Id, Key> = HashMap::new();
    let mut deliveries: JoinSet<Key> = JoinSet::new();
    loop {
        for (key, serial) in queue.take(usize::MAX) {
            if busy.values().any(|k| *k == key) {
                // Sent when the delivery in flight for it ends.
                queue.put_back(key, serial);
                continue;
            }
            let id = deliveries
                .spawn(deliver(
                    client.clone(),
                    settings.clone(),
                    key.clone(),
                    serial,
                    queue.clone(),
                    counters.clone(),
                ))
                .id();
            busy.insert(id, key);
        }
        tokio::select! {
            () = queue.offered() => {}
            Some(done) = deliveries.join_next_with_id(), if !deliveries.is_empty() => {
                let id = match done {
                    Ok((id, _)) => id,
                    Err(e) => {
                        // Only a panic gets here; the serial it was delivering is lost.
                        tracing::error!(error = %e, "a webhook delivery failed");
                        e.id()
                    }
                };
                busy.remove(&id);
            }
        }
    }
}

/// POSTs `serial` for `key` until it succeeds, the attempts run out, or a newer serial waits.
async fn deliver(
    client: reqwest::Client,
    settings: WebhookSettings,
    key: Key,
    serial: String,
    queue: Arc<Latest<Key, String>>,
    counters: Arc<Counters>,
) -> Key {
    let (url, project) = (&key.0, &key.1);
    let body = serde_json::json!({"project": project, "serial": serial}).to_string();
    let mut wait = settings.backoff;
    for attempt in 1..=settings.attempts.max(1) {
        let sent = client
            .post(url.as_str())
            .timeout(settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => {
                counters.webhooks_delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%url, %project, %serial, "announced on the webhook");
                return key;
            }
            Ok(r) => format!("it answered {}", r.status()),
            Err(e) => mirrorfleet_runtime::error_chain(&e),
        };
        if attempt == settings.attempts.max(1) {
            counters.webhooks_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%url, %project, %serial, %why, attempts = attempt, "webhook failed; giving up on this serial");
            break;
        }
        tracing::debug!(%url, %project, %why, attempt, retry_in = ?wait, "webhook failed; retrying");
        tokio::time::sleep(wait).await;
        wait *= 2;
        if queue.holds(&key) {
            tracing::debug!(%url, %project, %serial, "a newer serial waits; sending that instead");
            break;
        }
    }
    key
}
