//! Download statistics: the request path sends a small event on a bounded channel (never
//! waits, counts what it had to drop); a task aggregates them and flushes a batch to the store
//! every interval, keeping a failed batch for the next try (bounded) and flushing once more on
//! shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mirrorfleet_crds::state::stats::StatsBatch;
use mirrorfleet_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::snapshot::{Cc, Snapshot};

/// Most distinct counters held while the store is unreachable.
const MAX_PENDING: usize = 500_000;

/// One redirect to count.
#[derive(Debug)]
pub struct Event {
    /// The snapshot that decided (names are resolved from it, off the request path).
    pub snap: Arc<Snapshot>,
    /// Project index.
    pub project: usize,
    /// Position of the file in the project's index.
    pub file: usize,
    /// Mirror index, or `None` for a fallback.
    pub mirror: Option<usize>,
    /// Client country.
    pub country: Option<Cc>,
    /// When (Unix seconds); the UTC day is derived off the request path.
    pub at: i64,
}

/// The sending side, held by the request handlers.
#[derive(Debug, Clone)]
pub struct Stats {
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl Stats {
    /// Counts a redirect; never blocks.
    pub fn count(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.metrics.stats_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the aggregating task. Send on the returned `oneshot` to flush and stop; it answers
/// when the last flush is done.
pub fn start<S: Store>(
    store: S,
    metrics: Arc<Metrics>,
    every: Duration,
) -> (Stats, oneshot::Sender<oneshot::Sender<()>>) {
    let (tx, mut rx) = mpsc::channel::<Event>(65_536);
    let (stop_tx, mut stop_rx) = oneshot::channel::<oneshot::Sender<()>>();
    let m = metrics.clone();
    tokio::spawn(async move {
        let mut batch = StatsBatch::default();
        let mut day = (i64::MIN, String::new());
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => add(&mut batch, &ev, &m, &mut day),
                    None => break,
                },
                _ = tick.tick() => flush(&store, &mut batch, &m).await,
                done = &mut stop_rx => {
                    while let Ok(ev) = rx.try_recv() {
                        add(&mut batch, &ev, &m, &mut day);
                    }
                    flush(&store, &mut batch, &m).await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
    });
    (Stats { tx, metrics }, stop_tx)
}

fn add(batch: &mut StatsBatch, ev: &Event, metrics: &Metrics, day: &mut (i64, String)) {
    if batch.len() >= MAX_PENDING {
        metrics.stats_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some(project) = ev.snap.projects.get(ev.project) else {
        return;
    };
    let Some(file) = project.index.as_deref().and_then(|i| i.get(ev.file)) else {
        return;
    };
    let mirror = match ev.mirror {
        Some(i) => ev
            .snap
            .mirrors
            .get(i)
            .map_or("?", |m| m.state.name.as_str()),
        None => "fallback",
    };
    let country = ev.country.map(|c| String::from_utf8_lossy(&c).into_owned());
    let d = ev.at.div_euclid(86_400);
    if day.0 != d {
        let (y, m, dd) = civil(d);
        *day = (d, format!("{y:04}-{m:02}-{dd:02}"));
    }
    batch.count(
        &day.1,
        &project.state.name,
        file.path,
        mirror,
        country.as_deref(),
        file.size,
    );
    if let Ok(mut per) = metrics.per_mirror.lock() {
        *per.entry(mirror.to_owned()).or_default() += 1;
    }
}

async fn flush<S: Store>(store: &S, batch: &mut StatsBatch, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    match store.add_stats(batch).await {
        Ok(()) => *batch = StatsBatch::default(),
        Err(e) => {
            metrics.stats_flush_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %mirrorfleet_store::error_chain(&e), counters = batch.len(), "stats flush failed; keeping them for the next one");
        }
    }
}

/// Civil date of a day number (days since 1970-01-01).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn days() {
        assert_eq!(super::civil(1_795_309_323 / 86_400), (2026, 11, 22));
        assert_eq!(super::civil(0), (1970, 1, 1));
        assert_eq!(super::civil(11_016), (2000, 2, 29));
    }
}
