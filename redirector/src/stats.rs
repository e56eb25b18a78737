//! Download statistics: the request path adds one to a counter in its thread's shard (a
//! mutex no other thread normally touches: no channel, no wake-up, no shared reference count);
//! a task swaps the shards out every interval and flushes them to the store as one batch,
//! keeping a failed batch for the next try (bounded) and flushing once more on shutdown.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::HashMap;

use mirrorfleet_crds::state::stats::{StatsBatch, day_key, total_key};
use mirrorfleet_store::Store;
use tokio::sync::oneshot;

use crate::metrics::{self, Metrics};
use crate::snapshot::{Cc, Snapshot};

/// Most distinct counters held per shard, and in a batch while the store is unreachable.
const MAX_PENDING: usize = 500_000;

/// One redirect to count.
#[derive(Debug)]
pub struct Event<'a> {
    /// The snapshot that decided (names are resolved from it at flush time).
    pub snap: &'a Arc<Snapshot>,
    /// Project index.
    pub project: usize,
    /// Position of the file in the project's index.
    pub file: usize,
    /// Mirror index, or `None` for a fallback.
    pub mirror: Option<usize>,
    /// Client country.
    pub country: Option<Cc>,
    /// When (Unix seconds); the UTC day is derived at flush time.
    pub at: i64,
}

/// The counting side, held by the request handlers.
#[derive(Debug, Clone)]
pub struct Stats {
    shards: Arc<[Mutex<Pending>]>,
    metrics: Arc<Metrics>,
}

impl Stats {
    /// Counts a redirect; never waits on I/O.
    pub fn count(&self, event: Event<'_>) {
        match self.shards[metrics::shard()].lock() {
            Ok(mut pending) => pending.add(event, &self.metrics),
            Err(_) => {
                self.metrics.stats_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes every shard's counters.
    fn take(&self) -> Vec<Pending> {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|mut p| std::mem::take(&mut *p)))
            .collect()
    }
}

/// Starts the flushing task. Send on the returned `oneshot` to flush and stop; it answers
/// when the last flush is done.
pub fn start<S: Store>(
    store: S,
    metrics: Arc<Metrics>,
    every: Duration,
) -> (Stats, oneshot::Sender<oneshot::Sender<()>>) {
    let stats = Stats {
        shards: (0..metrics::SHARDS)
            .map(|_| Mutex::new(Pending::default()))
            .collect(),
        metrics,
    };
    let (stop_tx, mut stop_rx) = oneshot::channel::<oneshot::Sender<()>>();
    let s = stats.clone();
    tokio::spawn(async move {
        let m = s.metrics.clone();
        let mut batch = StatsBatch::default();
        let mut tick = tokio::time::interval(every);
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => None,
                done = &mut stop_rx => Some(done),
            };
            for mut pending in s.take() {
                pending.drain_into(&mut batch, &m);
            }
            flush(&store, &mut batch, &m).await;
            if let Some(done) = stop {
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    });
    (stats, stop_tx)
}

/// A multiply-rotate hasher for [`Key`]s (small integers; SipHash's flooding resistance buys
/// nothing here: the keys are indexes into the snapshot, and their number is bounded).
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        // A final avalanche: the table uses the low bits.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

/// (generation, project, file position, mirror, country, day number).
type Key = (u64, usize, usize, Option<usize>, Option<Cc>, i64);

/// Events counted by a small copyable key until the next flush; names and day strings are
/// built once per distinct key per flush, not once per request.
#[derive(Debug, Default)]
struct Pending {
    counts: HashMap<Key, u64, std::hash::BuildHasherDefault<KeyHasher>>,
    snaps: std::collections::HashMap<u64, Arc<Snapshot>>,
}

impl Pending {
    fn add(&mut self, ev: Event<'_>, metrics: &Metrics) {
        if self.counts.len() >= MAX_PENDING {
            metrics.stats_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let generation = ev.snap.generation;
        *self
            .counts
            .entry((
                generation,
                ev.project,
                ev.file,
                ev.mirror,
                ev.country,
                ev.at.div_euclid(86_400),
            ))
            .or_default() += 1;
        // The snapshot's reference count is touched once per generation, not per request.
        self.snaps
            .entry(generation)
            .or_insert_with(|| ev.snap.clone());
    }

    fn drain_into(&mut self, batch: &mut StatsBatch, metrics: &Metrics) {
        if batch.len() >= MAX_PENDING {
            metrics
                .stats_dropped
                .fetch_add(self.counts.values().sum::<u64>(), Ordering::Relaxed);
            self.counts.clear();
            self.snaps.clear();
            return;
        }
        // Summed by compact dimension first, so that each key and field string is built once
        // per distinct value, not once per distinct (file, mirror, country) combination.
        type Map<K> = HashMap<K, u64>;
        let mut by_mirror: Map<(i64, u64, Option<usize>)> = Map::new();
        let mut bytes_by_mirror: Map<(i64, u64, Option<usize>)> = Map::new();
        let mut by_country: Map<(i64, Option<Cc>)> = Map::new();
        let mut by_file: Map<(i64, u64, usize, usize)> = Map::new();
        let (mut total, mut total_bytes) = (0u64, 0u64);
        for ((generation, project, file, mirror, country, day), n) in self.counts.drain() {
            let Some(size) = self
                .snaps
                .get(&generation)
                .and_then(|s| s.projects.get(project)?.index.as_deref()?.get(file))
                .map(|f| f.size)
            else {
                continue;
            };
            *by_mirror.entry((day, generation, mirror)).or_default() += n;
            *bytes_by_mirror
                .entry((day, generation, mirror))
                .or_default() += n.saturating_mul(size);
            *by_country.entry((day, country)).or_default() += n;
            *by_file.entry((day, generation, project, file)).or_default() += n;
            total += n;
            total_bytes = total_bytes.saturating_add(n.saturating_mul(size));
        }
        let mut days: HashMap<i64, String> = HashMap::new();
        let mut day = |d: i64| {
            days.entry(d)
                .or_insert_with(|| {
                    let (y, mo, dd) = civil(d);
                    format!("{y:04}-{mo:02}-{dd:02}")
                })
                .clone()
        };
        let mirror_name = |generation: u64, mirror: Option<usize>| -> String {
            match mirror {
                Some(i) => self
                    .snaps
                    .get(&generation)
                    .and_then(|s| s.mirrors.get(i))
                    .map_or("?", |m| m.state.name.as_str())
                    .to_owned(),
                None => "fallback".to_owned(),
            }
        };
        let mut per_mirror: std::collections::BTreeMap<String, u64> =
            std::collections::BTreeMap::new();
        for ((d, generation, mirror), n) in by_mirror {
            let name = mirror_name(generation, mirror);
            batch.add_to(&day_key(&day(d), "mirror"), &name, n);
            *per_mirror.entry(name).or_default() += n;
        }
        for ((d, generation, mirror), n) in bytes_by_mirror {
            batch.add_to(
                &day_key(&day(d), "bytes"),
                &mirror_name(generation, mirror),
                n,
            );
        }
        for ((d, country), n) in by_country {
            let c = country.map_or_else(|| "--".to_owned(), crate::snapshot::cc_str);
            batch.add_to(&day_key(&day(d), "country"), &c, n);
        }
        for ((d, generation, project, file), n) in by_file {
            let Some(p) = self
                .snaps
                .get(&generation)
                .and_then(|s| s.projects.get(project))
            else {
                continue;
            };
            let Some(f) = p.index.as_deref().and_then(|i| i.get(file)) else {
                continue;
            };
            let key = day_key(&day(d), &format!("file:{}", p.state.name));
            batch.add_to(&key, f.path, n);
        }
        if total > 0 {
            batch.add_to(&total_key(), "redirects", total);
            batch.add_to(&total_key(), "bytes", total_bytes);
        }
        self.snaps.clear();
        if let Ok(mut per) = metrics.per_mirror.lock() {
            for (k, v) in per_mirror {
                *per.entry(k).or_default() += v;
            }
        }
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
