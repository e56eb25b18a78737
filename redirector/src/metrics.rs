//! Prometheus metrics, hand-rolled on atomics so the request path only increments counters:
//! requests by outcome (a fixed set of labels), a latency histogram, redirects per mirror
//! (filled by the stats task, off the request path). No per-file or per-IP labels.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Request outcomes, the only values of the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 302 to a mirror.
    Redirect,
    /// 302 to a fallback: no mirror qualifies for an indexed file (or no index yet).
    Fallback,
    /// 302 to a fallback for a path the index does not have (yet): how often the index lags
    /// the origin.
    FallbackUnindexed,
    /// JSON answer.
    Json,
    /// Mirror list page.
    Mirrorlist,
    /// Checksum answer.
    Checksum,
    /// Metalink document.
    Metalink,
    /// `?mirrorstats` page.
    Mirrorstats,
    /// 304: the client's copy is current (`If-Modified-Since`).
    NotModified,
    /// A directory listing.
    Listing,
    /// `?stats` on a file.
    FileStats,
    /// 404.
    NotFound,
    /// 503.
    Unavailable,
    /// 400, 405, 414.
    BadRequest,
    /// Health, readiness and metrics endpoints.
    Admin,
    /// A mirror's duties (`/-/mirrors/<name>.json`, read by node agents).
    Duties,
}

const OUTCOMES: [(Outcome, &str); 16] = [
    (Outcome::Redirect, "redirect"),
    (Outcome::Fallback, "fallback"),
    (Outcome::FallbackUnindexed, "fallback_unindexed"),
    (Outcome::Json, "json"),
    (Outcome::Mirrorlist, "mirrorlist"),
    (Outcome::Checksum, "checksum"),
    (Outcome::Metalink, "metalink"),
    (Outcome::Mirrorstats, "mirrorstats"),
    (Outcome::NotModified, "not_modified"),
    (Outcome::Listing, "listing"),
    (Outcome::FileStats, "file_stats"),
    (Outcome::NotFound, "not_found"),
    (Outcome::Unavailable, "unavailable"),
    (Outcome::BadRequest, "bad_request"),
    (Outcome::Admin, "admin"),
    (Outcome::Duties, "duties"),
];

const BUCKETS_US: [u64; 12] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// Per-thread counters, each on its own cache lines, so request threads never contend.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: [AtomicU64; OUTCOMES.len()],
    latency: [AtomicU64; 12],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Counters are spread over this many shards, one per thread (modulo), so that threads do
/// not fight over cache lines.
pub(crate) const SHARDS: usize = 16;

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) as usize % SHARDS
    };
}

/// This thread's shard.
pub(crate) fn shard() -> usize {
    SHARD.with(|s| *s)
}

/// The redirector's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: [Shard; SHARDS],
    /// Downloads not counted because too many distinct counters were pending.
    pub stats_dropped: AtomicU64,
    /// Stats flushes that failed (kept for the next flush).
    pub stats_flush_errors: AtomicU64,
    /// Snapshot generation.
    pub generation: AtomicU64,
    /// Unix time (seconds) at which the snapshot served was built from the store's state.
    pub snapshot_built: AtomicU64,
    /// Redirects per mirror name (bounded by the fleet's size).
    pub per_mirror: Mutex<BTreeMap<String, u64>>,
    /// Client connections open now.
    pub connections_open: AtomicU64,
    /// Connections closed at once, over the cap of open connections (all, or one client's).
    pub connections_refused: AtomicU64,
}

impl Metrics {
    /// Counts one request.
    pub fn observe(&self, outcome: Outcome, took: Duration) {
        let shard = &self.shards[shard()];
        let i = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        shard.requests[i].fetch_add(1, Ordering::Relaxed);
        let us = took.as_micros() as u64;
        if let Some(b) = BUCKETS_US.iter().position(|b| us <= *b) {
            shard.latency[b].fetch_add(1, Ordering::Relaxed);
        }
        shard.latency_count.fetch_add(1, Ordering::Relaxed);
        shard.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Requests counted with `outcome`.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .map_or(0, |i| self.sum(|s| &s.requests[i]))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        s.push_str("# HELP mirrorfleet_requests_total Requests by outcome.\n# TYPE mirrorfleet_requests_total counter\n");
        for (i, (_, label)) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                s,
                "mirrorfleet_requests_total{{outcome=\"{label}\"}} {}",
                self.sum(|sh| &sh.requests[i])
            );
        }
        s.push_str("# HELP mirrorfleet_request_duration_seconds Time to answer a request.\n# TYPE mirrorfleet_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cumulative += self.sum(|sh| &sh.latency[i]);
            let _ = writeln!(
                s,
                "mirrorfleet_request_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        let count = self.sum(|sh| &sh.latency_count);
        let _ = writeln!(
            s,
            "mirrorfleet_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "mirrorfleet_request_duration_seconds_sum {}",
            self.sum(|sh| &sh.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(s, "mirrorfleet_request_duration_seconds_count {count}");
        s.push_str("# HELP mirrorfleet_redirects_total Redirects per mirror.\n# TYPE mirrorfleet_redirects_total counter\n");
        if let Ok(m) = self.per_mirror.lock() {
            for (name, n) in m.iter() {
                let _ = writeln!(s, "mirrorfleet_redirects_total{{mirror=\"{name}\"}} {n}");
            }
        }
        for (name, help, v) in [
            (
                "mirrorfleet_stats_dropped_total",
                "Stats events dropped (channel full).",
                &self.stats_dropped,
            ),
            (
                "mirrorfleet_stats_flush_errors_total",
                "Stats flushes that failed.",
                &self.stats_flush_errors,
            ),
            (
                "mirrorfleet_connections_refused_total",
                "Connections closed at once: over the cap of open connections, in all or from one client address.",
                &self.connections_refused,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP mirrorfleet_connections_open Client connections open.\n# TYPE mirrorfleet_connections_open gauge\nmirrorfleet_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP mirrorfleet_snapshot_generation State generation served.\n# TYPE mirrorfleet_snapshot_generation gauge\nmirrorfleet_snapshot_generation {}",
            self.generation.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP mirrorfleet_snapshot_timestamp_seconds Unix time the snapshot served was built (0: none yet).\n# TYPE mirrorfleet_snapshot_timestamp_seconds gauge\nmirrorfleet_snapshot_timestamp_seconds {}",
            self.snapshot_built.load(Ordering::Relaxed)
        );
        s
    }
}
