//! Where the fleet state lives. The schema (keys, encodings, events) is defined in
//! `mirrorfleet_crds::state`; this crate moves those bytes:
//!
//! - [`Store`]: the raw operations both implementations provide — atomic commits of logical
//!   keys with a generation and a change event, immutable blobs, the manifest, events, stats;
//! - [`RedisStore`]: production, by URL or through Sentinel (it re-resolves the master and
//!   rebuilds its connection on failover, which redis-rs's `ConnectionManager` does not);
//! - [`EmbeddedStore`]: for `mirrorfleet standalone`, in memory with an append-only,
//!   checksummed, fsynced log, so nothing acknowledged is lost across restarts;
//! - [`state`]: the typed layer — [`StateWriter`] for the operator and scanners, and
//!   [`StateReader`] / [`follow`] for readers, which load everything once and then apply only
//!   what changed.
//!
//! It is a crate of its own (not part of the operator or the redirector) because both sides
//! need it and neither may pull the other's dependencies: no kube, no git, no hyper here.

mod any;
#[cfg(feature = "clap")]
mod args;
mod embedded;
mod error;
mod redis;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;

use mirrorfleet_crds::state::ChangeEvent;
use mirrorfleet_crds::state::stats::StatsBatch;

pub use any::{AnyStore, open as open_store, open_with_password as open_store_with_password};
#[cfg(feature = "clap")]
pub use args::StoreArgs;
pub use embedded::EmbeddedStore;
pub use error::{Error, Result};
pub use redis::{Password, RedisConfig, RedisStore, RedisTarget};
pub use state::{LoadedState, StateReader, StateWriter, follow};

/// One atomic write of logical keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Logical keys to set (recorded in the manifest with the new generation).
    pub puts: Vec<(String, Vec<u8>)>,
    /// Logical keys to delete (and remove from the manifest).
    pub deletes: Vec<String>,
    /// Immutable blobs no longer referenced, deleted in the same write.
    pub drop_blobs: Vec<String>,
}

/// The manifest: what every logical key's current generation is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The schema version marker found (`None` for an empty store).
    pub schema: Option<String>,
    /// The store's epoch token (`None` for an empty store).
    pub epoch: Option<String>,
    /// The last generation handed out.
    pub generation: u64,
    /// Logical key → generation of its current value.
    pub entries: BTreeMap<String, u64>,
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A write happened.
    Changed(ChangeEvent),
    /// Events may have been missed (first subscription, reconnect, lag): compare the manifest.
    Resync,
}

/// A logical key's value with the generation it was written at.
pub type Versioned = (u64, Vec<u8>);

/// The operations a fleet-state store provides. Implementations must make [`Store::commit`]
/// atomic (readers see all of a commit or none of it) and durable once it returns.
pub trait Store: Send + Sync + 'static {
    /// Applies a commit atomically and publishes its change event; returns its generation.
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<u64>> + Send;

    /// Stores immutable blobs; blobs that already exist are left as they are.
    fn put_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> impl Future<Output = Result<()>> + Send;

    /// Which of `keys` (blobs) exist.
    fn blobs_exist(&self, keys: &[String]) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Reads blobs; `None` where missing.
    fn read_blobs(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;

    /// Reads logical keys with their generations, atomically; `None` where absent.
    fn read(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<Versioned>>>> + Send;

    /// Reads the manifest.
    fn manifest(&self) -> impl Future<Output = Result<Manifest>> + Send;

    /// Subscribes to change events. The first event delivered is [`StoreEvent::Resync`].
    fn subscribe(
        &self,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<StoreEvent>>> + Send;

    /// Adds a batch of counters.
    fn add_stats(&self, batch: &StatsBatch) -> impl Future<Output = Result<()>> + Send;

    /// Reads one counter hash (see `mirrorfleet_crds::state::stats`).
    fn read_stats(&self, key: &str) -> impl Future<Output = Result<BTreeMap<String, u64>>> + Send;

    /// Reads single counters, `(key, field)` each, in one round trip; 0 where absent. For
    /// questions about one file (its per-day hashes hold every file of the day).
    fn read_stat_fields(
        &self,
        wanted: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<u64>>> + Send;
}
