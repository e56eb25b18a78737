//! Download statistics: the request path appends one packed 16-byte counter to its thread's
//! shard (a mutex no other thread normally touches: no channel, no wake-up, no hashing, no
//! shared reference count); a task swaps the shards out every interval, sorts and sums them,
//! and flushes them to the store as one batch, keeping a failed batch for the next try
//! (bounded) and flushing once more on shutdown.
//!
//! Redirects to a fallback for a path the index does not have (yet) are counted too, under
//! the mirror name [`UNINDEXED`] (beside `fallback`, the other fallback redirects), by country
//! and in the totals — not by file (the paths come from clients, unbounded) nor in bytes (no
//! size is known).
//!
//! Why append-and-sort rather than a hash map per shard: with downloads spread over a large
//! index nearly every request is a new key, and a map of them (grown, rehashed, and walked
//! again at flush) cost about 2 µs of CPU per request under load; appending costs a few
//! nanoseconds, and one sort per interval off the request path groups the counters by
//! snapshot, day, project and file, so each key string is built once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::{BTreeMap, HashMap};

use arc_swap::ArcSwap;

use mirrorfleet_crds::state::stats::{StatsBatch, day_key, day_string, total_key};
use mirrorfleet_store::Store;
use tokio::sync::oneshot;

use crate::metrics::{self, Metrics};
use mirrorfleet_geo::Cc;

use crate::snapshot::Snapshot;

/// Most distinct counters held per shard, and in a batch while the store is unreachable.
const MAX_PENDING: usize = 500_000;

/// One redirect to count.
#[derive(Debug)]
pub struct Event<'a> {
    /// The snapshot that decided (names are resolved from it at flush time).
    pub snap: &'a Arc<Snapshot>,
    /// Project index.
    pub project: usize,
    /// Position of the file in the project's index, or `None` for a path the index does not
    /// have (sent to a fallback: `mirror` is then `None`).
    pub file: Option<usize>,
    /// Mirror index, or `None` for a fallback.
    pub mirror: Option<usize>,
    /// Client country.
    pub country: Option<Cc>,
    /// When (Unix seconds); the UTC day is derived at flush time.
    pub at: i64,
}

/// The name fallback redirects of paths the index does not have are counted under, where
/// the others are counted under `fallback` (in the per-day `mirror` counters, and
/// `mirrorfleet_redirects_total`).
pub const UNINDEXED: &str = "fallback-unindexed";

/// The file position packed for a path the index does not have.
const UNINDEXED_POS: u32 = u32::MAX;

/// How often today's fleet-wide counters are read back from the store (for `?mirrorstats`):
/// every tenth flush, and at least once a minute.
fn read_back_every(flush_every: Duration) -> Duration {
    (flush_every * 10).min(Duration::from_secs(60))
}

/// Today's counters for the whole fleet (every redirector's flushes, as the store sums them),
/// read back by the stats task so that no request reads the store.
#[derive(Debug, Clone, Default)]
pub struct FleetCounts {
    /// The UTC day (`YYYY-MM-DD`).
    pub day: String,
    /// Redirects today by mirror name (and `fallback`).
    pub redirects: BTreeMap<String, u64>,
    /// Bytes today by mirror name.
    pub bytes: BTreeMap<String, u64>,
    /// All-time `redirects` and `bytes`.
    pub total: BTreeMap<String, u64>,
    /// When they were read (Unix seconds); 0 before the first read.
    pub read_at: i64,
    /// Why the last read failed, if it did (the previous counts are kept).
    pub error: Option<String>,
}

/// Reads single counters from the store (see [`Store::read_stat_fields`]); type-erased so
/// that the handlers do not depend on which store it is.
type FieldReader = Arc<
    dyn Fn(
            Vec<(String, String)>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u64>, String>> + Send>>
        + Send
        + Sync,
>;

/// The counting side, held by the request handlers.
#[derive(Clone)]
pub struct Stats {
    shards: Arc<[Mutex<Pending>]>,
    metrics: Arc<Metrics>,
    fleet: Arc<ArcSwap<FleetCounts>>,
    reader: FieldReader,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

impl Stats {
    /// Reads single counters, `(key, field)` each, from the store, within `deadline`; the
    /// error says what failed. For the rare questions about one file (`?stats`).
    pub async fn read_fields(
        &self,
        wanted: Vec<(String, String)>,
        deadline: Duration,
    ) -> Result<Vec<u64>, String> {
        match tokio::time::timeout(deadline, (self.reader)(wanted)).await {
            Ok(r) => r,
            Err(_) => Err(format!("the store did not answer within {deadline:?}")),
        }
    }

    /// Today's fleet-wide counters, as last read back (ten flush intervals old at most).
    pub fn fleet_counts(&self) -> Arc<FleetCounts> {
        self.fleet.load_full()
    }

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
pub fn start<S: Store + Clone + 'static>(
    store: S,
    metrics: Arc<Metrics>,
    every: Duration,
) -> (Stats, oneshot::Sender<oneshot::Sender<()>>) {
    let stats = Stats {
        shards: (0..metrics::SHARDS)
            .map(|_| Mutex::new(Pending::default()))
            .collect(),
        metrics,
        fleet: Arc::new(ArcSwap::from_pointee(FleetCounts::default())),
        reader: {
            let store = store.clone();
            Arc::new(move |wanted: Vec<(String, String)>| {
                let store = store.clone();
                Box::pin(async move {
                    store
                        .read_stat_fields(&wanted)
                        .await
                        .map_err(|e| mirrorfleet_runtime::error_chain(&e))
                })
            })
        },
    };
    let (stop_tx, mut stop_rx) = oneshot::channel::<oneshot::Sender<()>>();
    let s = stats.clone();
    tokio::spawn(async move {
        let m = s.metrics.clone();
        let mut batch = StatsBatch::default();
        let mut tick = tokio::time::interval(every);
        let mut read_at: Option<std::time::Instant> = None;
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => None,
                done = &mut stop_rx => Some(done),
            };
            let started = std::time::Instant::now();
            // Sorting and summing a busy interval takes milliseconds: off the workers.
            let (pending, metrics, mut taken) = (s.take(), m.clone(), std::mem::take(&mut batch));
            let summed = tokio::task::spawn_blocking(move || {
                for mut p in pending {
                    p.drain_into(&mut taken, &metrics);
                }
                taken
            });
            batch = match summed.await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "summing stats failed; this interval's counts are lost");
                    StatsBatch::default()
                }
            };
            let summed = started.elapsed();
            let counters = batch.len();
            flush(&store, &mut batch, &m).await;
            tracing::debug!(counters, ?summed, flushed = ?started.elapsed() - summed, "stats flushed");
            if stop.is_none() && read_at.is_none_or(|t| t.elapsed() >= read_back_every(every)) {
                read_at = Some(std::time::Instant::now());
                let previous = s.fleet.load_full();
                s.fleet.store(Arc::new(read_back(&store, &previous).await));
            }
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

/// A multiply-rotate hasher for small integer keys (SipHash's flooding resistance buys
/// nothing here: the keys are country codes and indexes, bounded in number).
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

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn finish(&self) -> u64 {
        // A final avalanche: the table uses the low bits.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A counter packed in 128 bits, most significant first: context (16), project (16), file
/// position (32, [`UNINDEXED_POS`] for a path not in the index), mirror + 1 or 0 for a
/// fallback (16), country (16, 0 for unknown), count (32).
/// Sorting puts equal counters side by side, grouped by context, project and file.
type Packed = u128;

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u128 = (1 << COUNT_BITS) - 1;

/// The snapshot and UTC day a run of counters belongs to.
#[derive(Debug)]
struct Context {
    snap: Arc<Snapshot>,
    day: i64,
}

/// Entries a shard starts compacting at.
const FIRST_COMPACTION: usize = 1 << 16;

/// One thread's events until the next flush. The request path only appends a packed counter
/// (no hashing, no allocation but the vector's doubling); when the vector fills up it is
/// compacted in place — sorted, equal counters merged — and the flush aggregates the rest.
#[derive(Debug)]
struct Pending {
    entries: Vec<Packed>,
    contexts: Vec<Context>,
    /// Length at which `entries` is compacted next.
    compact_at: usize,
    /// Compacting left less than a quarter of the cap free: events are dropped (and counted)
    /// until the flush.
    full: bool,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            entries: Vec::new(),
            contexts: Vec::new(),
            compact_at: FIRST_COMPACTION,
            full: false,
        }
    }
}

impl Pending {
    fn add(&mut self, ev: Event<'_>, metrics: &Metrics) {
        let packed = self.pack(&ev);
        let Some(packed) = packed else {
            metrics.stats_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.entries.len() >= self.compact_at {
            if !self.full {
                self.compact();
                // Compact again only when the distinct counters could have doubled, and at the
                // cap only while compacting frees a quarter of it; past that the shard is full
                // until the flush (so a flood of distinct files cannot make every request sort).
                self.full = self.entries.len() > MAX_PENDING / 4 * 3;
                self.compact_at = (self.entries.len() * 2).clamp(FIRST_COMPACTION, MAX_PENDING);
            }
            if self.full {
                metrics.stats_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.entries.push(packed | 1);
    }

    /// The event's counter (count 0), or `None` when a field does not fit its bits (more than
    /// 65,535 projects, mirrors or snapshot×day contexts in one interval: never in practice).
    fn pack(&mut self, ev: &Event<'_>) -> Option<Packed> {
        let day = ev.at.div_euclid(86_400);
        let generation = ev.snap.generation;
        let ctx = match self
            .contexts
            .iter()
            .rposition(|c| c.day == day && c.snap.generation == generation)
        {
            Some(i) => i,
            None => {
                // The snapshot's reference count is touched once per context, not per request.
                self.contexts.push(Context {
                    snap: ev.snap.clone(),
                    day,
                });
                self.contexts.len() - 1
            }
        };
        let mirror = match ev.mirror {
            Some(m) => u16::try_from(m + 1).ok()?,
            None => 0,
        };
        let country = ev.country.map_or(0, u16::from_be_bytes);
        let file = match ev.file {
            Some(f) => u32::try_from(f).ok().filter(|p| *p != UNINDEXED_POS)?,
            None if ev.mirror.is_none() => UNINDEXED_POS,
            None => return None,
        };
        Some(
            u128::from(u16::try_from(ctx).ok()?) << 112
                | u128::from(u16::try_from(ev.project).ok()?) << 96
                | u128::from(file) << 64
                | u128::from(mirror) << 48
                | u128::from(country) << COUNT_BITS,
        )
    }

    /// Sorts the entries and merges equal counters (a count that would overflow its 32 bits
    /// starts a new entry).
    fn compact(&mut self) {
        self.entries.sort_unstable();
        let mut out = 0;
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            if out > 0 {
                let last = self.entries[out - 1];
                let sum = (last & COUNT_MASK) + (e & COUNT_MASK);
                if last >> COUNT_BITS == e >> COUNT_BITS && sum <= COUNT_MASK {
                    self.entries[out - 1] = (last & !COUNT_MASK) | sum;
                    continue;
                }
            }
            self.entries[out] = e;
            out += 1;
        }
        self.entries.truncate(out);
    }

    /// Number of downloads held.
    fn downloads(&self) -> u64 {
        self.entries.iter().map(|e| (e & COUNT_MASK) as u64).sum()
    }

    fn drain_into(&mut self, batch: &mut StatsBatch, metrics: &Metrics) {
        if batch.len() >= MAX_PENDING {
            metrics
                .stats_dropped
                .fetch_add(self.downloads(), Ordering::Relaxed);
            *self = Pending::default();
            return;
        }
        self.compact();
        let mut per_mirror: std::collections::BTreeMap<String, u64> =
            std::collections::BTreeMap::new();
        let (mut total, mut total_bytes) = (0u64, 0u64);
        let entries = std::mem::take(&mut self.entries);
        // Entries are sorted by context first: each context's run is summed by mirror and
        // country in small tables, its files streamed in order, and every key and field
        // string is built once per context rather than once per counter.
        for run in entries.chunk_by(|a, b| a >> 112 == b >> 112) {
            let Some(ctx) = self.contexts.get((run[0] >> 112) as usize) else {
                continue;
            };
            let snap = &ctx.snap;
            let day = day_string(ctx.day * 86_400);
            let mut files_key: Option<(usize, String)> = None;
            let mut mirrors: FastMap<u16, (u64, u64)> = FastMap::default();
            let mut countries: FastMap<u16, u64> = FastMap::default();
            let mut unindexed = 0u64;
            for files in run.chunk_by(|a, b| a >> 64 == b >> 64) {
                let project = ((files[0] >> 96) as u16) as usize;
                let position = (files[0] >> 64) as u32;
                if position == UNINDEXED_POS {
                    for e in files {
                        let n = (e & COUNT_MASK) as u64;
                        *countries.entry((e >> COUNT_BITS) as u16).or_default() += n;
                        unindexed += n;
                    }
                    continue;
                }
                let position = position as usize;
                let Some((p, file)) = snap.projects.get(project).and_then(|p| {
                    let file = p.index.as_deref()?.get(position)?;
                    Some((p, file))
                }) else {
                    continue;
                };
                let mut n_file = 0u64;
                for e in files {
                    let n = (e & COUNT_MASK) as u64;
                    let slot = mirrors.entry((e >> 48) as u16).or_default();
                    slot.0 += n;
                    slot.1 = slot.1.saturating_add(n.saturating_mul(file.size));
                    *countries.entry((e >> COUNT_BITS) as u16).or_default() += n;
                    n_file += n;
                }
                let key = match &files_key {
                    Some((q, key)) if *q == project => key,
                    _ => &files_key.insert((project, file_key(&day, &p.state.name))).1,
                };
                batch.add_to(key, file.path, n_file);
                total += n_file;
                total_bytes = total_bytes.saturating_add(n_file.saturating_mul(file.size));
            }
            let (mirror_key, bytes_key) = (day_key(&day, "mirror"), day_key(&day, "bytes"));
            for (m, (n, bytes)) in mirrors {
                let name = match m {
                    0 => "fallback",
                    m => snap
                        .mirrors
                        .get(usize::from(m) - 1)
                        .map_or("?", |m| m.state.name.as_str()),
                };
                batch.add_to(&mirror_key, name, n);
                batch.add_to(&bytes_key, name, bytes);
                *per_mirror.entry(name.to_owned()).or_default() += n;
            }
            if unindexed > 0 {
                batch.add_to(&mirror_key, UNINDEXED, unindexed);
                *per_mirror.entry(UNINDEXED.to_owned()).or_default() += unindexed;
                total += unindexed;
            }
            let country_key = day_key(&day, "country");
            for (c, n) in countries {
                let c = match c {
                    0 => "--".to_owned(),
                    c => mirrorfleet_geo::cc_str(c.to_be_bytes()),
                };
                batch.add_to(&country_key, &c, n);
            }
        }
        if total > 0 {
            batch.add_to(&total_key(), "redirects", total);
            batch.add_to(&total_key(), "bytes", total_bytes);
        }
        *self = Pending::default();
        if let Ok(mut per) = metrics.per_mirror.lock() {
            for (k, v) in per_mirror {
                *per.entry(k).or_default() += v;
            }
        }
    }
}

/// The per-day key of a project's file counters (built once per context and project).
fn file_key(day: &str, project: &str) -> String {
    day_key(day, &format!("file:{project}"))
}

/// Reads today's fleet-wide counters; on failure keeps `previous` with the error.
async fn read_back<S: Store>(store: &S, previous: &FleetCounts) -> FleetCounts {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let day = day_string(now);
    let read = async {
        let redirects = store.read_stats(&day_key(&day, "mirror")).await?;
        let bytes = store.read_stats(&day_key(&day, "bytes")).await?;
        let total = store.read_stats(&total_key()).await?;
        Ok::<_, mirrorfleet_store::Error>((redirects, bytes, total))
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok((redirects, bytes, total))) => FleetCounts {
            day,
            redirects,
            bytes,
            total,
            read_at: now,
            error: None,
        },
        failed => {
            let why = match failed {
                Ok(Err(e)) => mirrorfleet_runtime::error_chain(&e),
                _ => "the store did not answer within 5 s".to_owned(),
            };
            tracing::debug!(error = %why, "reading today's stats back failed");
            FleetCounts {
                error: Some(why),
                ..previous.clone()
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
            tracing::warn!(error = %mirrorfleet_runtime::error_chain(&e), counters = batch.len(), "stats flush failed; keeping them for the next one");
        }
    }
}

#[cfg(test)]
mod tests;
