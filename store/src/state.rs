//! The typed layer over a [`Store`]: [`StateWriter`] for the operator, scanners and health
//! checker; [`StateReader`] and [`follow`] for everyone who reads the whole fleet state.
//!
//! A reader loads everything once, then applies change events by re-reading only the keys an
//! event names (and, for an index, only the chunks it does not hold yet). A gap in
//! generations, a reconnect or a periodic check makes it compare the manifest with what it
//! holds and fetch what differs. A value that cannot be decoded is reported with its key and
//! skipped: the reader keeps the last good value of that key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::stats::StatsBatch;
use mirrorfleet_crds::state::{
    self, Availability, FLEET_KEY, FileIndex, FleetState, IndexChunk, IndexMeta, KeyRef,
    MirrorHealth, index,
};
use tokio::sync::watch;

use crate::{Commit, Error, Result, Store, StoreEvent};

/// Blobs read per request while loading an index.
const CHUNK_BATCH: usize = 8;

/// Writes typed state through a [`Store`].
#[derive(Debug, Clone)]
pub struct StateWriter<S> {
    store: S,
}

impl<S: Store> StateWriter<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> StateWriter<S> {
        StateWriter { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Replaces the compiled fleet.
    pub async fn write_fleet(&self, fleet: &FleetState) -> Result<u64> {
        self.store
            .commit(Commit {
                puts: vec![(FLEET_KEY.to_owned(), fleet.encode())],
                ..Commit::default()
            })
            .await
    }

    /// Replaces a project's index: uploads the chunks the store lacks, then swaps the
    /// metadata and drops the chunks only the previous generation used, in one commit.
    pub async fn write_index(&self, index: &FileIndex, generated_at: i64) -> Result<u64> {
        let (meta, chunks) = index.encode(generated_at);
        let meta_key = state::index_key(&index.project);
        let previous = match self
            .store
            .read(std::slice::from_ref(&meta_key))
            .await?
            .pop()
            .flatten()
        {
            Some((_, bytes)) => IndexMeta::decode(&bytes).ok(),
            None => None,
        };
        let keys: Vec<String> = chunks.iter().map(|(k, _)| k.clone()).collect();
        let exists = self.store.blobs_exist(&keys).await?;
        let missing: Vec<(String, Vec<u8>)> = chunks
            .into_iter()
            .zip(exists)
            .filter(|(_, e)| !e)
            .map(|(c, _)| c)
            .collect();
        for batch in missing.chunks(CHUNK_BATCH) {
            self.store.put_blobs(batch.to_vec()).await?;
        }
        let keep: HashSet<&String> = meta.chunks.iter().collect();
        let drop_blobs = previous
            .map(|p| p.chunks.into_iter().filter(|k| !keep.contains(k)).collect())
            .unwrap_or_default();
        self.store
            .commit(Commit {
                puts: vec![(meta_key, meta.encode())],
                deletes: vec![],
                drop_blobs,
            })
            .await
    }

    /// Replaces a mirror's availability for a project.
    pub async fn write_availability(&self, avail: &Availability) -> Result<u64> {
        let key = state::avail_key(&avail.mirror, &avail.project);
        self.store
            .commit(Commit {
                puts: vec![(key, avail.encode())],
                ..Commit::default()
            })
            .await
    }

    /// Replaces a mirror's health.
    pub async fn write_health(&self, health: &MirrorHealth) -> Result<u64> {
        let key = state::health_key(&health.mirror);
        self.store
            .commit(Commit {
                puts: vec![(key, health.encode())],
                ..Commit::default()
            })
            .await
    }

    /// Removes a mirror's health and availability (for every project named).
    pub async fn remove_mirror(&self, mirror: &str, projects: &[String]) -> Result<u64> {
        let mut deletes = vec![state::health_key(mirror)];
        deletes.extend(projects.iter().map(|p| state::avail_key(mirror, p)));
        self.store
            .commit(Commit {
                deletes,
                ..Commit::default()
            })
            .await
    }

    /// Removes a project's index and its chunks.
    pub async fn remove_index(&self, project: &str) -> Result<u64> {
        let key = state::index_key(project);
        let drop_blobs = match self
            .store
            .read(std::slice::from_ref(&key))
            .await?
            .pop()
            .flatten()
        {
            Some((_, bytes)) => IndexMeta::decode(&bytes)
                .map(|m| m.chunks)
                .unwrap_or_default(),
            None => vec![],
        };
        self.store
            .commit(Commit {
                deletes: vec![key],
                drop_blobs,
                ..Commit::default()
            })
            .await
    }

    /// Adds download counters.
    pub async fn add_stats(&self, batch: &StatsBatch) -> Result<()> {
        self.store.add_stats(batch).await
    }
}

/// Everything a reader holds. Cheap to clone: values are shared.
#[derive(Debug, Clone, Default)]
pub struct LoadedState {
    /// The store epoch this state was read from.
    pub epoch: Option<String>,
    /// The highest generation applied.
    pub generation: u64,
    /// The compiled fleet, once written.
    pub fleet: Option<Arc<FleetState>>,
    /// Indexes by project.
    pub indexes: HashMap<String, Arc<FileIndex>>,
    /// Index metadata by project.
    pub index_meta: HashMap<String, Arc<IndexMeta>>,
    /// Availability by (mirror, project).
    pub availability: HashMap<(String, String), Arc<Availability>>,
    /// Health by mirror.
    pub health: HashMap<String, Arc<MirrorHealth>>,
    /// Generation held of each logical key.
    held: HashMap<String, u64>,
}

impl LoadedState {
    /// The generation of `key` held, if any.
    pub fn held(&self, key: &str) -> Option<u64> {
        self.held.get(key).copied()
    }
}

/// What one sync changed, and what could not be read.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Logical keys whose value changed (or was removed).
    pub changed: Vec<String>,
    /// Keys that could not be read, with why; their last good value is kept.
    pub errors: Vec<Error>,
}

/// Reads typed state from a [`Store`].
#[derive(Debug, Clone)]
pub struct StateReader<S> {
    store: S,
}

impl<S: Store> StateReader<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> StateReader<S> {
        StateReader { store }
    }

    /// Loads everything.
    pub async fn load(&self) -> Result<(LoadedState, SyncReport)> {
        let mut state = LoadedState::default();
        let report = self.resync(&mut state).await?;
        Ok((state, report))
    }

    /// Compares the manifest with what `state` holds and fetches what differs.
    pub async fn resync(&self, state: &mut LoadedState) -> Result<SyncReport> {
        let manifest = self.store.manifest().await?;
        // A new epoch, or generations going back, means the store was wiped, replaced or
        // restored: generations held mean nothing there, so every key is read again.
        let reset = manifest.epoch != state.epoch || manifest.generation < state.generation;
        if reset && state.generation > 0 {
            tracing::warn!(
                held = state.generation,
                found = manifest.generation,
                "the store was reset; reloading everything"
            );
        }
        let mut keys: Vec<String> = manifest
            .entries
            .iter()
            .filter(|(k, g)| reset || state.held.get(*k) != Some(g))
            .map(|(k, _)| k.clone())
            .collect();
        keys.extend(
            state
                .held
                .keys()
                .filter(|k| !manifest.entries.contains_key(*k))
                .cloned(),
        );
        if reset {
            for g in state.held.values_mut() {
                *g = 0;
            }
            state.generation = 0;
        }
        let mut report = self.fetch(state, &keys).await?;
        state.epoch = manifest.epoch;
        state.generation = state.generation.max(manifest.generation);
        report.changed.sort();
        Ok(report)
    }

    /// Applies one change event: re-reads the keys it names, or resynchronises when events
    /// were missed.
    pub async fn apply(&self, state: &mut LoadedState, event: &StoreEvent) -> Result<SyncReport> {
        match event {
            StoreEvent::Changed(ev) if ev.generation <= state.generation => {
                Ok(SyncReport::default())
            }
            StoreEvent::Changed(ev)
                if ev.generation == state.generation + 1 || state.generation == 0 =>
            {
                let report = self.fetch(state, &ev.keys).await?;
                state.generation = state.generation.max(ev.generation);
                Ok(report)
            }
            StoreEvent::Changed(ev) => {
                tracing::info!(
                    have = state.generation,
                    got = ev.generation,
                    "missed change events; resynchronising"
                );
                self.resync(state).await
            }
            StoreEvent::Resync => self.resync(state).await,
        }
    }

    /// Reads `keys` and updates `state`; absent keys are removed.
    async fn fetch(&self, state: &mut LoadedState, keys: &[String]) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let values = self.store.read(keys).await?;
        for (key, value) in keys.iter().zip(values) {
            let Some(kind) = KeyRef::parse(key) else {
                continue;
            };
            let Some((generation, bytes)) = value else {
                if state.held.remove(key).is_some() {
                    remove(state, &kind);
                    report.changed.push(key.clone());
                }
                continue;
            };
            if state.held.get(key) == Some(&generation) {
                continue;
            }
            let decoded = match kind {
                KeyRef::Fleet => {
                    FleetState::decode(&bytes).map(|f| state.fleet = Some(Arc::new(f)))
                }
                KeyRef::Health(m) => MirrorHealth::decode(&bytes).map(|h| {
                    state.health.insert(m.to_owned(), Arc::new(h));
                }),
                KeyRef::Avail(m, p) => Availability::decode(&bytes).map(|a| {
                    state
                        .availability
                        .insert((m.to_owned(), p.to_owned()), Arc::new(a));
                }),
                KeyRef::Index(p) => match IndexMeta::decode(&bytes) {
                    Ok(meta) => match self.load_index(state, p, meta).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            report.errors.push(e);
                            continue;
                        }
                    },
                    Err(e) => Err(e),
                },
            };
            match decoded {
                Ok(()) => {
                    state.held.insert(key.clone(), generation);
                    report.changed.push(key.clone());
                }
                Err(source) => {
                    tracing::warn!(key = %key, error = %source, "cannot decode; keeping the last good value");
                    report.errors.push(Error::Decode {
                        key: key.clone(),
                        source,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Fetches the chunks of `meta` that the held index does not have, then rebuilds the
    /// index from the unchanged part of the held one and the fresh chunks.
    async fn load_index(
        &self,
        state: &mut LoadedState,
        project: &str,
        meta: IndexMeta,
    ) -> Result<()> {
        let held = state
            .index_meta
            .get(project)
            .zip(state.indexes.get(project));
        let unchanged: HashSet<&String> = held
            .map(|(m, _)| m.chunks.iter().collect())
            .unwrap_or_default();
        let kept: Vec<u32> = meta
            .chunks
            .iter()
            .filter(|k| unchanged.contains(k))
            .filter_map(|k| index::chunk_no_of(k))
            .collect();
        let fetch: Vec<String> = meta
            .chunks
            .iter()
            .filter(|k| !unchanged.contains(k))
            .cloned()
            .collect();
        let mut fresh = Vec::with_capacity(fetch.len());
        for batch in fetch.chunks(CHUNK_BATCH) {
            let values = self.store.read_blobs(batch).await?;
            for (key, value) in batch.iter().zip(values) {
                let Some(bytes) = value else {
                    return Err(Error::ChunksGone {
                        project: project.to_owned(),
                    });
                };
                fresh.push(IndexChunk::decode(&bytes).map_err(|source| Error::Decode {
                    key: key.clone(),
                    source,
                })?);
            }
        }
        let refs: Vec<&IndexChunk> = fresh.iter().collect();
        let previous = held.map(|(_, index)| (index.as_ref(), kept.as_slice()));
        let index =
            FileIndex::from_parts(&meta, previous, &refs).map_err(|source| Error::Decode {
                key: state::index_key(project),
                source,
            })?;
        state.indexes.insert(project.to_owned(), Arc::new(index));
        state.index_meta.insert(project.to_owned(), Arc::new(meta));
        Ok(())
    }
}

fn remove(state: &mut LoadedState, kind: &KeyRef<'_>) {
    match kind {
        KeyRef::Fleet => state.fleet = None,
        KeyRef::Health(m) => {
            state.health.remove(*m);
        }
        KeyRef::Avail(m, p) => {
            state
                .availability
                .remove(&((*m).to_owned(), (*p).to_owned()));
        }
        KeyRef::Index(p) => {
            state.indexes.remove(*p);
            state.index_meta.remove(*p);
        }
    }
}

/// Follows the store: loads everything (retrying until it succeeds), then applies events, and
/// resynchronises every `resync_every` as a safety net. Each new state is published on the
/// returned channel; errors are logged and the last good state stays published.
pub async fn follow<S: Store + Clone>(
    store: S,
    resync_every: Duration,
) -> watch::Receiver<Arc<LoadedState>> {
    let (tx, rx) = watch::channel(Arc::new(LoadedState::default()));
    tokio::spawn(async move {
        let reader = StateReader::new(store.clone());
        let mut state = LoadedState::default();
        let mut delay = Duration::from_millis(100);
        loop {
            let mut events = match store.subscribe().await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to state events; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let mut tick = tokio::time::interval(resync_every);
            tick.tick().await;
            loop {
                let event = tokio::select! {
                    ev = events.recv() => match ev {
                        Some(ev) => ev,
                        None => break,
                    },
                    _ = tick.tick() => StoreEvent::Resync,
                    () = tx.closed() => return,
                };
                match reader.apply(&mut state, &event).await {
                    Ok(report) => {
                        for e in &report.errors {
                            tracing::warn!(error = %mirrorfleet_runtime::error_chain(e), "state key skipped");
                        }
                        if !report.changed.is_empty() || tx.borrow().generation != state.generation
                        {
                            tx.send_replace(Arc::new(state.clone()));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %mirrorfleet_runtime::error_chain(&e), "state sync failed; serving the last good state")
                    }
                }
            }
        }
    });
    rx
}
