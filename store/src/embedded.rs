//! The embedded implementation of [`Store`] for `mirrorfleet standalone`: everything in
//! memory, every write appended to a checksummed log and fsynced before it is acknowledged.
//!
//! Log file `<dir>/state.log`: records of `[len u32][crc32 u32][type u8][payload]`. On open the
//! log is replayed; a torn tail — whatever follows the last valid record when no valid record
//! is in it: half a record (a crash mid-append, never acknowledged), the zeros a power loss
//! leaves on ext4 or XFS, garbage — is cut off and logged with its offsets; damage followed by
//! a valid record is an error that names the byte, because silently dropping acknowledged
//! writes is worse than refusing to start. When the log grows past twice the live
//! data it is compacted into a fresh file, written aside and renamed into place.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use mirrorfleet_crds::state::ChangeEvent;
use mirrorfleet_crds::state::stats::{self, StatsBatch};
use tokio::sync::{broadcast, mpsc};

use crate::{Commit, Error, Manifest, Result, Store, StoreEvent, Versioned};

const LOG_NAME: &str = "state.log";
const REC_COMMIT: u8 = 1;
const REC_BLOBS: u8 = 2;
const REC_STATS: u8 = 3;
const REC_GENERATION: u8 = 4;
/// Stats grouped by key (each key written once); `REC_STATS` (one key per counter) is still
/// read from older logs.
const REC_STATS_BY_KEY: u8 = 5;
/// Largest record accepted when replaying (a sanity bound against a damaged length).
const MAX_RECORD: u32 = 1 << 30;
/// Do not compact logs smaller than this.
const COMPACT_MIN: u64 = 64 << 20;

/// An embedded, file-backed store. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<ChangeEvent>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    log: File,
    log_bytes: u64,
    generation: u64,
    values: HashMap<String, (u64, Arc<Vec<u8>>)>,
    blobs: HashMap<String, Arc<Vec<u8>>>,
    stats: HashMap<String, HashMap<String, u64>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, replaying its log.
    pub fn open(dir: &Path) -> Result<EmbeddedStore> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, what, source }
        };
        fs::create_dir_all(dir).map_err(io("creating the state directory", dir))?;
        let path = dir.join(LOG_NAME);
        let mut inner = Inner {
            log: OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io("opening", &path))?,
            path: path.clone(),
            log_bytes: 0,
            generation: 0,
            values: HashMap::new(),
            blobs: HashMap::new(),
            stats: HashMap::new(),
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io("reading", &path))?;
        let good = inner.replay(&bytes)?;
        if good < bytes.len() as u64 {
            let (len, cut) = (bytes.len() as u64, bytes.len() as u64 - good);
            tracing::warn!(path = %path.display(), at = good, len, cut, "cutting a torn tail (bytes {good}..{len}: no valid record in them) off the state log");
            inner
                .log
                .set_len(good)
                .map_err(io("truncating a torn record", &path))?;
        }
        inner.log_bytes = good;
        inner.drop_expired_stats();
        let (events, _) = broadcast::channel(4096);
        Ok(EmbeddedStore {
            inner: Arc::new(Mutex::new(inner)),
            events,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Runs a write (append, fsync, apply) on the blocking pool: an fsync must not stall the
    /// runtime's worker threads, which serve requests in the same process.
    async fn write<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&mut lock(&inner))).await {
            Ok(r) => r,
            Err(e) => Err(Error::Io {
                path: self.lock().path.clone(),
                what,
                source: std::io::Error::other(e),
            }),
        }
    }
}

/// The payload of the record at `pos`, or why there is none: a header cut short, a length
/// that is zero, impossible or past the end, or a checksum mismatch.
fn record_at(bytes: &[u8], pos: usize) -> std::result::Result<&[u8], String> {
    let header = bytes
        .get(pos..pos + 8)
        .ok_or_else(|| format!("{} bytes where a record header needs 8", bytes.len() - pos))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return Err(format!("record length {len} is impossible"));
    }
    let payload = bytes
        .get(pos + 8..pos + 8 + len as usize)
        .ok_or_else(|| format!("record length {len} runs past the end of the log"))?;
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// The first offset at or after `from` where a valid record starts, if any. Cheap on zeros
/// and garbage: most offsets fail on their length or type byte before any checksum.
fn next_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(8)).find(|&at| {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let typed = bytes
            .get(at + 8)
            .is_some_and(|t| (REC_COMMIT..=REC_STATS_BY_KEY).contains(t));
        len >= 9 && typed && record_at(bytes, at).is_ok()
    })
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the maps half-updated (records are applied
    // after they are durable, in plain insertions), so a poisoned lock is still usable.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// Replays `bytes`; returns the length of the valid prefix. A record that does not check
    /// out ends the log as torn when no valid record follows it (what a crash mid-append or
    /// a power loss leaves: half a record, zeros, garbage); when one does, acknowledged writes
    /// would be lost, and it is an error naming the byte.
    fn replay(&mut self, bytes: &[u8]) -> Result<u64> {
        let mut pos = 0usize;
        while pos < bytes.len() {
            let payload = match record_at(bytes, pos) {
                Ok(payload) => payload,
                Err(why) => match next_record(bytes, pos + 1) {
                    Some(next) => {
                        return Err(self.corrupt(
                            pos,
                            format!("{why}, and a valid record follows at byte {next}"),
                        ));
                    }
                    None => break,
                },
            };
            // A record whose checksum matches but that cannot be applied is not torn: it was
            // written whole (by a newer version, or damaged before its checksum was taken).
            self.apply(payload).map_err(|why| self.corrupt(pos, why))?;
            pos += 8 + payload.len();
        }
        Ok(pos as u64)
    }

    fn corrupt(&self, offset: usize, why: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            offset: offset as u64,
            why,
        }
    }

    fn apply(&mut self, payload: &[u8]) -> std::result::Result<(), String> {
        let mut r = Reader(payload);
        match r.u8()? {
            REC_COMMIT => {
                let generation = r.u64()?;
                self.generation = self.generation.max(generation);
                for _ in 0..r.u64()? {
                    let key = r.string()?;
                    let value = r.bytes()?;
                    self.values.insert(key, (generation, Arc::new(value)));
                }
                for _ in 0..r.u64()? {
                    self.values.remove(&r.string()?);
                }
                for _ in 0..r.u64()? {
                    self.blobs.remove(&r.string()?);
                }
            }
            REC_BLOBS => {
                for _ in 0..r.u64()? {
                    let key = r.string()?;
                    let value = r.bytes()?;
                    self.blobs.entry(key).or_insert_with(|| Arc::new(value));
                }
            }
            REC_STATS => {
                for _ in 0..r.u64()? {
                    let key = r.str()?;
                    let field = r.str()?;
                    add_stat(self.stat_fields(key)?, field, r.u64()?);
                }
            }
            REC_STATS_BY_KEY => {
                for _ in 0..r.u64()? {
                    let fields = self.stat_fields(r.str()?)?;
                    for _ in 0..r.u64()? {
                        let field = r.str()?;
                        add_stat(fields, field, r.u64()?);
                    }
                }
            }
            REC_GENERATION => self.generation = self.generation.max(r.u64()?),
            other => return Err(format!("unknown record type {other}")),
        }
        Ok(())
    }

    /// Stores the blobs not stored yet.
    fn put_blobs(&mut self, blobs: &[(String, Vec<u8>)]) -> Result<()> {
        let fresh: Vec<&(String, Vec<u8>)> = blobs
            .iter()
            .filter(|(k, _)| !self.blobs.contains_key(k))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut rec = Vec::new();
        put_u8(&mut rec, REC_BLOBS);
        put_u64(&mut rec, fresh.len() as u64);
        for (k, v) in fresh {
            put_str(&mut rec, k);
            put_bytes(&mut rec, v);
        }
        self.append(rec)
    }

    /// Forgets per-day stats older than the retention (Redis expires them; this store drops
    /// them when it opens and when it compacts, so the log does not grow with every day).
    fn drop_expired_stats(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let oldest = stats::oldest_day_kept(now);
        let before = self.stats.len();
        self.stats
            .retain(|key, _| stats::day_of_key(key).is_none_or(|day| day >= oldest.as_str()));
        if self.stats.len() < before {
            tracing::info!(keys = before - self.stats.len(), oldest_kept = %oldest, "dropped expired per-day stats");
        }
    }

    /// The counters of stats key `key` (allocating the key only when it is new).
    fn stat_fields(&mut self, key: &str) -> std::result::Result<&mut HashMap<String, u64>, String> {
        if !self.stats.contains_key(key) {
            self.stats.insert(key.to_owned(), HashMap::new());
        }
        self.stats
            .get_mut(key)
            .ok_or_else(|| format!("stats key {key} vanished"))
    }

    /// Appends a record, fsyncs, then applies it; compacts when the log is mostly garbage.
    fn append(&mut self, payload: Vec<u8>) -> Result<()> {
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let path = self.path.clone();
        self.log
            .write_all(&record)
            .and_then(|()| self.log.sync_data())
            .map_err(|source| Error::Io {
                path: path.clone(),
                what: "appending to the log",
                source,
            })?;
        self.log_bytes += record.len() as u64;
        self.apply(&payload).map_err(|why| Error::Corrupt {
            path,
            offset: self.log_bytes,
            why,
        })?;
        if self.log_bytes > COMPACT_MIN && self.log_bytes > 2 * self.live_bytes() {
            self.compact()?;
        }
        Ok(())
    }

    fn live_bytes(&self) -> u64 {
        let v: usize = self
            .values
            .iter()
            .map(|(k, (_, v))| k.len() + v.len() + 16)
            .sum();
        let b: usize = self.blobs.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
        (v + b) as u64
    }

    /// Rewrites the log as the live state only.
    fn compact(&mut self) -> Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let io = |what: &'static str| {
            let path = tmp.clone();
            move |source| Error::Io { path, what, source }
        };
        let mut file = File::create(&tmp).map_err(io("creating the compacted log"))?;
        let mut records = vec![generation_record(self.generation)];
        let mut blobs = Vec::new();
        put_u8(&mut blobs, REC_BLOBS);
        put_u64(&mut blobs, self.blobs.len() as u64);
        for (k, v) in &self.blobs {
            put_str(&mut blobs, k);
            put_bytes(&mut blobs, v);
        }
        records.push(blobs);
        // Values keep their generations: one commit record per generation.
        type Puts<'a> = Vec<(&'a String, &'a Arc<Vec<u8>>)>;
        let mut by_gen: BTreeMap<u64, Puts<'_>> = BTreeMap::new();
        for (k, (g, v)) in &self.values {
            by_gen.entry(*g).or_default().push((k, v));
        }
        for (g, puts) in by_gen {
            let mut rec = Vec::new();
            put_u8(&mut rec, REC_COMMIT);
            put_u64(&mut rec, g);
            put_u64(&mut rec, puts.len() as u64);
            for (k, v) in puts {
                put_str(&mut rec, k);
                put_bytes(&mut rec, v);
            }
            put_u64(&mut rec, 0);
            put_u64(&mut rec, 0);
            records.push(rec);
        }
        self.drop_expired_stats();
        records.push(stats_record(self.stats.iter()));
        let mut total = 0u64;
        for payload in records {
            let mut record = Vec::with_capacity(payload.len() + 8);
            record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            record.extend_from_slice(&payload);
            file.write_all(&record)
                .map_err(io("writing the compacted log"))?;
            total += record.len() as u64;
        }
        file.sync_all().map_err(io("syncing the compacted log"))?;
        fs::rename(&tmp, &self.path).map_err(io("replacing the log"))?;
        if let Some(dir) = self.path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.log = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                what: "reopening the log",
                source,
            })?;
        self.log_bytes = total;
        Ok(())
    }
}

fn generation_record(generation: u64) -> Vec<u8> {
    let mut rec = Vec::new();
    put_u8(&mut rec, REC_GENERATION);
    put_u64(&mut rec, generation);
    rec
}

/// A stats record: `[keys u64]` then, per key, `[key] [fields u64]` and `[field] [n u64]` per field.
fn stats_record<'a>(
    counters: impl ExactSizeIterator<Item = (&'a String, &'a HashMap<String, u64>)>,
) -> Vec<u8> {
    let mut rec = Vec::new();
    put_u8(&mut rec, REC_STATS_BY_KEY);
    put_u64(&mut rec, counters.len() as u64);
    for (key, fields) in counters {
        put_str(&mut rec, key);
        put_u64(&mut rec, fields.len() as u64);
        for (field, n) in fields {
            put_str(&mut rec, field);
            put_u64(&mut rec, *n);
        }
    }
    rec
}

/// Adds `n` to `field`, allocating only for a field not seen yet.
fn add_stat(fields: &mut HashMap<String, u64>, field: &str, n: u64) {
    match fields.get_mut(field) {
        Some(v) => *v = v.saturating_add(n),
        None => {
            fields.insert(field.to_owned(), n);
        }
    }
}

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("record ends early".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn slice(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "length overflows".to_owned())?;
        self.take(n)
    }

    fn bytes(&mut self) -> std::result::Result<Vec<u8>, String> {
        Ok(self.slice()?.to_vec())
    }

    fn str(&mut self) -> std::result::Result<&'a str, String> {
        std::str::from_utf8(self.slice()?).map_err(|_| "key is not UTF-8".into())
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        Ok(self.str()?.to_owned())
    }
}

impl Store for EmbeddedStore {
    async fn commit(&self, commit: Commit) -> Result<u64> {
        let event = self
            .write("committing", move |inner| {
                let generation = inner.generation + 1;
                let mut rec = Vec::new();
                put_u8(&mut rec, REC_COMMIT);
                put_u64(&mut rec, generation);
                put_u64(&mut rec, commit.puts.len() as u64);
                for (k, v) in &commit.puts {
                    put_str(&mut rec, k);
                    put_bytes(&mut rec, v);
                }
                put_u64(&mut rec, commit.deletes.len() as u64);
                for k in &commit.deletes {
                    put_str(&mut rec, k);
                }
                put_u64(&mut rec, commit.drop_blobs.len() as u64);
                for k in &commit.drop_blobs {
                    put_str(&mut rec, k);
                }
                inner.append(rec)?;
                let keys = commit
                    .puts
                    .into_iter()
                    .map(|(k, _)| k)
                    .chain(commit.deletes)
                    .collect();
                Ok(ChangeEvent { generation, keys })
            })
            .await?;
        let generation = event.generation;
        // No subscriber is fine: readers resynchronise from the manifest when they subscribe.
        let _ = self.events.send(event);
        Ok(generation)
    }

    async fn put_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.write("storing blobs", move |inner| inner.put_blobs(&blobs))
            .await
    }

    async fn blobs_exist(&self, keys: &[String]) -> Result<Vec<bool>> {
        let inner = self.lock();
        Ok(keys.iter().map(|k| inner.blobs.contains_key(k)).collect())
    }

    async fn read_blobs(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let inner = self.lock();
        Ok(keys
            .iter()
            .map(|k| inner.blobs.get(k).map(|v| v.as_ref().clone()))
            .collect())
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>> {
        let inner = self.lock();
        Ok(keys
            .iter()
            .map(|k| inner.values.get(k).map(|(g, v)| (*g, v.as_ref().clone())))
            .collect())
    }

    async fn manifest(&self) -> Result<Manifest> {
        let inner = self.lock();
        Ok(Manifest {
            schema: (!inner.values.is_empty()).then(|| "1".to_owned()),
            // The log is this store's identity: generations never go back while it exists.
            epoch: (inner.generation > 0).then(|| "embedded".to_owned()),
            generation: inner.generation,
            entries: inner
                .values
                .iter()
                .map(|(k, (g, _))| (k.clone(), *g))
                .collect(),
        })
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<StoreEvent>> {
        let (tx, rx) = mpsc::channel(1024);
        let mut events = self.events.subscribe();
        tokio::spawn(async move {
            if tx.send(StoreEvent::Resync).await.is_err() {
                return;
            }
            loop {
                let event = match events.recv().await {
                    Ok(ev) => StoreEvent::Changed(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => StoreEvent::Resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn add_stats(&self, batch: &StatsBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let rec = stats_record(batch.counters.iter());
        self.write("adding stats", move |inner| inner.append(rec))
            .await
    }

    async fn read_stat_fields(&self, wanted: &[(String, String)]) -> Result<Vec<u64>> {
        let inner = self.lock();
        Ok(wanted
            .iter()
            .map(|(key, field)| {
                inner
                    .stats
                    .get(key)
                    .and_then(|f| f.get(field))
                    .copied()
                    .unwrap_or(0)
            })
            .collect())
    }

    async fn read_stats(&self, key: &str) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .lock()
            .stats
            .get(key)
            .map(|f| f.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default())
    }
}
