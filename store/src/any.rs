//! [`AnyStore`]: either implementation behind one type, for binaries that choose at run time
//! (`--redis URL`, `--sentinel …` or `--state-dir DIR`).

use std::collections::BTreeMap;

use mirrorfleet_crds::state::stats::StatsBatch;
use tokio::sync::mpsc;

use crate::{Commit, EmbeddedStore, Manifest, RedisStore, Result, Store, StoreEvent, Versioned};

/// Opens the store named by the usual flags: a Redis URL, sentinels with a master name, or
/// an embedded store directory (checked in that order). `None` when none is given.
pub async fn open(
    redis: Option<&str>,
    sentinels: &[String],
    sentinel_master: Option<&str>,
    state_dir: Option<&std::path::Path>,
) -> Result<Option<AnyStore>> {
    open_with_password(redis, sentinels, sentinel_master, state_dir, None).await
}

/// [`open`], with a Redis password sent on connect when the URL carries none (with
/// sentinels: to the master they name).
pub async fn open_with_password(
    redis: Option<&str>,
    sentinels: &[String],
    sentinel_master: Option<&str>,
    state_dir: Option<&std::path::Path>,
    password: Option<&crate::Password>,
) -> Result<Option<AnyStore>> {
    use crate::{RedisConfig, RedisTarget};
    let config = |target| RedisConfig {
        password: password.cloned(),
        ..RedisConfig::new(target)
    };
    if let Some(url) = redis {
        return Ok(Some(AnyStore::Redis(
            RedisStore::connect(config(RedisTarget::Url(url.to_owned()))).await?,
        )));
    }
    if let Some(master) = sentinel_master {
        let target = RedisTarget::Sentinel {
            sentinels: sentinels.to_vec(),
            master: master.to_owned(),
        };
        return Ok(Some(AnyStore::Redis(
            RedisStore::connect(config(target)).await?,
        )));
    }
    match state_dir {
        Some(dir) => Ok(Some(AnyStore::Embedded(EmbeddedStore::open(dir)?))),
        None => Ok(None),
    }
}

/// A Redis or an embedded store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// Redis (by URL or Sentinel).
    Redis(RedisStore),
    /// The embedded, file-backed store.
    Embedded(EmbeddedStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Redis($s) => $e,
            AnyStore::Embedded($s) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn commit(&self, commit: Commit) -> Result<u64> {
        delegate!(self, s => s.commit(commit).await)
    }

    async fn put_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<()> {
        delegate!(self, s => s.put_blobs(blobs).await)
    }

    async fn blobs_exist(&self, keys: &[String]) -> Result<Vec<bool>> {
        delegate!(self, s => s.blobs_exist(keys).await)
    }

    async fn read_blobs(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        delegate!(self, s => s.read_blobs(keys).await)
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>> {
        delegate!(self, s => s.read(keys).await)
    }

    async fn manifest(&self) -> Result<Manifest> {
        delegate!(self, s => s.manifest().await)
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<StoreEvent>> {
        delegate!(self, s => s.subscribe().await)
    }

    async fn add_stats(&self, batch: &StatsBatch) -> Result<()> {
        delegate!(self, s => s.add_stats(batch).await)
    }

    async fn read_stats(&self, key: &str) -> Result<BTreeMap<String, u64>> {
        delegate!(self, s => s.read_stats(key).await)
    }

    async fn read_stat_fields(&self, wanted: &[(String, String)]) -> Result<Vec<u64>> {
        delegate!(self, s => s.read_stat_fields(wanted).await)
    }
}
