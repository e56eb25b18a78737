//! The Redis implementation of [`Store`], by URL or through Sentinel.
//!
//! Owns the keys of `mirrorfleet_crds::state` in one Redis database. Commits run as one Lua
//! script (generation, values, manifest, event: all or nothing). Connection-level failures —
//! refused, dropped, timed out, `READONLY` after a failover, `LOADING` — drop the connection,
//! re-resolve the master through the sentinels when configured, and retry with backoff for a
//! bounded time. With `min_replicas` set, a commit returns only once that many replicas
//! acknowledged it (`WAIT`), so a failover cannot lose an acknowledged write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mirrorfleet_crds::state::stats::{DAY_RETENTION_DAYS, StatsBatch};
use mirrorfleet_crds::state::{
    ChangeEvent, EPOCH_KEY, EVENTS_CHANNEL, GEN_KEY, MANIFEST_KEY, SCHEMA_KEY,
};
use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelNodeConnectionInfo;
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    RedisResult, ServerErrorKind,
};
use tokio::sync::mpsc;

use crate::{Commit, Error, Manifest, Result, Store, StoreEvent, Versioned};

/// Most keys per read command, so one call never blocks Redis for long.
const READ_BATCH: usize = 256;

const COMMIT_SCRIPT: &str = r#"
local gen = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], '1', 'NX')
if redis.call('EXISTS', KEYS[4]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[4], t[1] .. '.' .. t[2])
end
local np, nd, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 5
local event = {tostring(gen)}
for _ = 1, np do
  redis.call('SET', ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], gen)
  event[#event + 1] = ARGV[i]
  i = i + 2
end
for _ = 1, nd do
  redis.call('DEL', ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  event[#event + 1] = ARGV[i]
  i = i + 1
end
for _ = 1, nb do
  redis.call('DEL', ARGV[i])
  i = i + 1
end
redis.call('PUBLISH', ARGV[4], table.concat(event, ' '))
return gen
"#;

/// Which Redis to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// A server by URL, e.g. `redis://redis.mirrorfleet.svc:6379/0`.
    Url(String),
    /// The current master of `master`, as the sentinels say.
    Sentinel {
        /// Sentinel URLs, e.g. `redis://10.0.0.1:26379`.
        sentinels: Vec<String>,
        /// The master's name in the sentinels' configuration.
        master: String,
    },
}

impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Url(url) => write!(f, "{url}"),
            RedisTarget::Sentinel { master, .. } => write!(f, "sentinel master {master}"),
        }
    }
}

/// How to reach Redis and how patient to be.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The server.
    pub target: RedisTarget,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// Deadline of one command.
    pub response_timeout: Duration,
    /// How long a command is retried across reconnects before it fails.
    pub retry_for: Duration,
    /// Replicas that must acknowledge a commit before it returns (0: do not wait).
    pub min_replicas: usize,
    /// How long to wait for those replicas.
    pub replica_timeout: Duration,
    /// Password sent on connect (to the server, or to the master the sentinels name) when
    /// the URL carries none; kept out of URLs so that it shows in no message.
    pub password: Option<Password>,
}

/// A Redis password: its `Debug` shows no character of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Password, Self::Err> {
        Ok(Password(s.to_owned()))
    }
}

impl RedisConfig {
    /// Defaults for `target`: 1 s to connect, 5 s per command, retries for 15 s, no replica
    /// acknowledgement.
    pub fn new(target: RedisTarget) -> RedisConfig {
        RedisConfig {
            target,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(15),
            min_replicas: 0,
            replica_timeout: Duration::from_secs(2),
            password: None,
        }
    }
}

/// A Redis-backed store. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct RedisStore {
    config: Arc<RedisConfig>,
    conn: Arc<Mutex<Option<MultiplexedConnection>>>,
    commit_script: Arc<redis::Script>,
}

impl RedisStore {
    /// Connects (and checks the connection with `PING`).
    pub async fn connect(config: RedisConfig) -> Result<RedisStore> {
        let store = RedisStore {
            config: Arc::new(config),
            conn: Arc::new(Mutex::new(None)),
            commit_script: Arc::new(redis::Script::new(COMMIT_SCRIPT)),
        };
        store
            .run("PING", |mut c| async move {
                redis::cmd("PING").query_async::<String>(&mut c).await
            })
            .await?;
        Ok(store)
    }

    /// The configured target, for messages.
    pub fn target(&self) -> &RedisTarget {
        &self.config.target
    }

    fn err(&self, op: &'static str, source: RedisError) -> Error {
        Error::Redis {
            op,
            target: self.config.target.to_string(),
            source,
        }
    }

    async fn client(config: &RedisConfig) -> RedisResult<Client> {
        match &config.target {
            RedisTarget::Url(url) => {
                let mut info = url.as_str().into_connection_info()?;
                if let Some(password) = &config.password
                    && info.redis_settings().password().is_none()
                {
                    let settings = info.redis_settings().clone().set_password(&password.0);
                    info = info.set_redis_settings(settings);
                }
                Client::open(info)
            }
            RedisTarget::Sentinel { sentinels, master } => {
                let mut sentinel = redis::sentinel::Sentinel::build(sentinels.clone())?;
                let node = config.password.as_ref().map(|password| {
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(
                        RedisConnectionInfo::default().set_password(&password.0),
                    )
                });
                tokio::time::timeout(
                    config.connect_timeout * 2,
                    sentinel.async_master_for(master, node.as_ref()),
                )
                .await
                .map_err(|_| {
                    RedisError::from((
                        ErrorKind::Io,
                        "timed out asking the sentinels for the master",
                    ))
                })?
            }
        }
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        let client = Self::client(&self.config).await?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        if let Ok(mut guard) = self.conn.lock() {
            *guard = Some(conn.clone());
        }
        Ok(conn)
    }

    fn forget_connection(&self) {
        if let Ok(mut guard) = self.conn.lock() {
            *guard = None;
        }
    }

    /// Runs `f` on a connection, reconnecting (and re-resolving the master) and retrying on
    /// connection-level failures until `retry_for` has passed.
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let result = match self.connection().await {
                Ok(conn) => f(conn).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && started.elapsed() < self.config.retry_for => {
                    tracing::warn!(op, target = %self.config.target, error = %e, "redis unavailable; reconnecting");
                    self.forget_connection();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    if retryable(&e) {
                        self.forget_connection();
                    }
                    return Err(self.err(op, e));
                }
            }
        }
    }
}

/// Number of replicas connected to the master behind `c` (from `ROLE`).
async fn connected_replicas(c: &mut MultiplexedConnection) -> RedisResult<usize> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(c).await?;
    Ok(match role.get(2) {
        Some(redis::Value::Array(replicas)) => replicas.len(),
        _ => 0,
    })
}

/// Whether an error is about the connection or the server's role rather than the command.
fn retryable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::ReadOnly
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                )
        )
}

impl Store for RedisStore {
    async fn commit(&self, commit: Commit) -> Result<u64> {
        let commit = Arc::new(commit);
        let min_replicas = self.config.min_replicas;
        // The wait must end well before the command's own response timeout.
        let wait_ms = self
            .config
            .replica_timeout
            .min(self.config.response_timeout / 2)
            .as_millis() as u64;
        self.run("commit", |mut c| {
            let commit = commit.clone();
            let script = self.commit_script.clone();
            async move {
                let mut inv = script.prepare_invoke();
                inv.key(GEN_KEY)
                    .key(MANIFEST_KEY)
                    .key(SCHEMA_KEY)
                    .key(EPOCH_KEY);
                inv.arg(commit.puts.len())
                    .arg(commit.deletes.len())
                    .arg(commit.drop_blobs.len())
                    .arg(EVENTS_CHANNEL);
                for (k, v) in &commit.puts {
                    inv.arg(k).arg(v.as_slice());
                }
                for k in commit.deletes.iter().chain(&commit.drop_blobs) {
                    inv.arg(k);
                }
                let generation: u64 = inv.invoke_async(&mut c).await?;
                if min_replicas > 0 {
                    // Wait for as many replicas as asked, or for every connected one when
                    // fewer are connected (after a failover, until a replacement joins):
                    // waiting for replicas that do not exist would only stall every write.
                    let connected = connected_replicas(&mut c).await?;
                    let need = connected.min(min_replicas);
                    if need < min_replicas {
                        tracing::warn!(
                            min_replicas,
                            connected,
                            "fewer replicas connected than configured"
                        );
                    }
                    if need > 0 {
                        let acked: usize = redis::cmd("WAIT")
                            .arg(need)
                            .arg(wait_ms)
                            .query_async(&mut c)
                            .await?;
                        if acked < need {
                            return Err(RedisError::from((
                                ErrorKind::Server(ServerErrorKind::TryAgain),
                                "too few replicas acknowledged the write",
                                format!("{acked} of {need}"),
                            )));
                        }
                    }
                }
                Ok(generation)
            }
        })
        .await
    }

    async fn put_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<()> {
        for batch in blobs.chunks(16) {
            self.run("put blobs", |mut c| async move {
                let mut pipe = redis::pipe();
                for (k, v) in batch {
                    pipe.cmd("SET").arg(k).arg(v.as_slice()).arg("NX").ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        }
        Ok(())
    }

    async fn blobs_exist(&self, keys: &[String]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(READ_BATCH) {
            let found: Vec<bool> = self
                .run("exists", |mut c| async move {
                    let mut pipe = redis::pipe();
                    for k in batch {
                        pipe.cmd("EXISTS").arg(k);
                    }
                    pipe.query_async(&mut c).await
                })
                .await?;
            out.extend(found);
        }
        Ok(out)
    }

    async fn read_blobs(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(16) {
            let values: Vec<Option<Vec<u8>>> = self
                .run("read blobs", |mut c| async move {
                    redis::cmd("MGET").arg(batch).query_async(&mut c).await
                })
                .await?;
            out.extend(values);
        }
        Ok(out)
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>> {
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(READ_BATCH) {
            let (gens, values): (Vec<Option<u64>>, Vec<Option<Vec<u8>>>) = self
                .run("read", |mut c| async move {
                    redis::pipe()
                        .atomic()
                        .cmd("HMGET")
                        .arg(MANIFEST_KEY)
                        .arg(batch)
                        .cmd("MGET")
                        .arg(batch)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for (generation, value) in gens.into_iter().zip(values) {
                // A key in the manifest without a string value (another type under our key,
                // or deleted behind our back) reads as empty; decoding names it per key.
                out.push(generation.map(|g| (g, value.unwrap_or_default())));
            }
        }
        Ok(out)
    }

    async fn manifest(&self) -> Result<Manifest> {
        type Raw = (
            Option<String>,
            Option<String>,
            Option<u64>,
            BTreeMap<String, u64>,
        );
        let (schema, epoch, generation, entries): Raw = self
            .run("manifest", |mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(SCHEMA_KEY)
                    .cmd("GET")
                    .arg(EPOCH_KEY)
                    .cmd("GET")
                    .arg(GEN_KEY)
                    .cmd("HGETALL")
                    .arg(MANIFEST_KEY)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if let Some(found) = schema.as_ref().filter(|s| s.as_str() != "1") {
            return Err(Error::Schema {
                found: found.clone(),
            });
        }
        Ok(Manifest {
            schema,
            epoch,
            generation: generation.unwrap_or(0),
            entries,
        })
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<StoreEvent>> {
        let (tx, rx) = mpsc::channel(1024);
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            while !tx.is_closed() {
                match pubsub(&config, &tx).await {
                    Ok(()) => delay = Duration::from_millis(50),
                    Err(e) => {
                        tracing::warn!(target = %config.target, error = %e, "event subscription lost; reconnecting")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        Ok(rx)
    }

    async fn add_stats(&self, batch: &StatsBatch) -> Result<()> {
        let ttl = DAY_RETENTION_DAYS * 86_400;
        self.run("add stats", |mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (key, fields) in &batch.counters {
                for (field, n) in fields {
                    pipe.cmd("HINCRBY").arg(key).arg(field).arg(*n).ignore();
                }
                if key.contains(":stats:day:") {
                    pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
                }
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn read_stat_fields(&self, wanted: &[(String, String)]) -> Result<Vec<u64>> {
        if wanted.is_empty() {
            return Ok(vec![]);
        }
        let counts: Vec<Option<u64>> = self
            .run("read stat fields", |mut c| async move {
                let mut pipe = redis::pipe();
                for (key, field) in wanted {
                    pipe.cmd("HGET").arg(key).arg(field);
                }
                pipe.query_async(&mut c).await
            })
            .await?;
        Ok(counts.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn read_stats(&self, key: &str) -> Result<BTreeMap<String, u64>> {
        self.run("read stats", |mut c| async move {
            redis::cmd("HGETALL").arg(key).query_async(&mut c).await
        })
        .await
    }
}

/// One subscription: connects, subscribes, announces a resync, forwards events until the
/// connection ends (then the caller reconnects) or the receiver is dropped.
async fn pubsub(config: &RedisConfig, tx: &mpsc::Sender<StoreEvent>) -> RedisResult<()> {
    let client = RedisStore::client(config).await?;
    let mut ps = tokio::time::timeout(config.connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "timed out connecting for pub/sub")))??;
    ps.subscribe(EVENTS_CHANNEL).await?;
    if tx.send(StoreEvent::Resync).await.is_err() {
        return Ok(());
    }
    let mut messages = ps.on_message();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let payload: String = msg.get_payload().unwrap_or_default();
                let event = match ChangeEvent::parse(&payload) {
                    Ok(ev) => StoreEvent::Changed(ev),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a malformed change event; resynchronising");
                        StoreEvent::Resync
                    }
                };
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
            () = tx.closed() => return Ok(()),
        }
    }
}
