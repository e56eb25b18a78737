//! Sentinel failover: a master, a replica and three sentinels on loopback. The master is
//! killed mid-stream; writes continue on the promoted replica, and every write that was
//! acknowledged before or after the failover is there.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mirrorfleet_crds::state::{self, Family, HealthState, MirrorHealth, ProbeScheme};
use mirrorfleet_store::{RedisConfig, RedisStore, RedisTarget, StateReader, StateWriter, Store};
use mirrorfleet_testkit::{Redis, wait_until};

const MASTER: &str = "mfmaster";

async fn sentinel_query(sentinel: &Redis, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(sentinel.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd("SENTINEL");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.unwrap()
}

fn count(v: &redis::Value) -> usize {
    match v {
        redis::Value::Array(items) => items.len(),
        _ => 0,
    }
}

fn health(mirror: &str, n: i64) -> MirrorHealth {
    MirrorHealth {
        mirror: mirror.into(),
        entries: vec![HealthState {
            scheme: ProbeScheme::Https,
            family: Family::Ipv4,
            up: true,
            reason: "Ok".into(),
            since: n,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_continue_after_failover_with_nothing_acknowledged_lost() {
    let mut master = Redis::start_with("repl-diskless-sync-delay 0");
    let replica = Redis::start_with(&format!("replicaof 127.0.0.1 {}", master.port));
    wait_until(
        "the replica to finish its initial sync",
        Duration::from_secs(30),
        || async {
            let role = master.raw(&["ROLE"]).await;
            matches!(role, redis::Value::Array(ref r) if r.get(2).is_some_and(|v| count(v) == 1))
        },
    )
    .await;
    let sentinels: Vec<Redis> = (0..3)
        .map(|_| Redis::sentinel(MASTER, master.port))
        .collect();
    wait_until(
        "the sentinels to see the replica and each other",
        Duration::from_secs(30),
        || async {
            let mut ready = true;
            for s in &sentinels {
                ready &= count(&sentinel_query(s, &["replicas", MASTER]).await) == 1;
                ready &= count(&sentinel_query(s, &["sentinels", MASTER]).await) == 2;
            }
            ready
        },
    )
    .await;

    let mut config = RedisConfig::new(RedisTarget::Sentinel {
        sentinels: sentinels.iter().map(Redis::url).collect(),
        master: MASTER.into(),
    });
    config.min_replicas = 1;
    config.retry_for = Duration::from_secs(60);
    config.response_timeout = Duration::from_secs(2);
    let store = RedisStore::connect(config).await.unwrap();
    let writer = StateWriter::new(store.clone());

    let mut acknowledged = Vec::new();
    for i in 0..20 {
        writer
            .write_health(&health(&format!("m{i}"), i))
            .await
            .unwrap();
        acknowledged.push(i);
    }
    master.kill();
    let killed = Instant::now();
    for i in 20..40 {
        writer
            .write_health(&health(&format!("m{i}"), i))
            .await
            .unwrap();
        acknowledged.push(i);
    }
    let recovered_after = killed.elapsed();

    let addr = sentinel_query(&sentinels[0], &["get-master-addr-by-name", MASTER]).await;
    let redis::Value::Array(addr) = addr else {
        panic!("no master address")
    };
    let port: u16 = match &addr[1] {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(port, replica.port, "the replica was promoted");

    let (loaded, report) = StateReader::new(store.clone()).load().await.unwrap();
    assert!(report.errors.is_empty());
    for i in acknowledged {
        let h = loaded
            .health
            .get(&format!("m{i}"))
            .unwrap_or_else(|| panic!("acknowledged write m{i} lost"));
        assert_eq!(h.entries[0].since, i);
    }
    let manifest = store.manifest().await.unwrap();
    assert_eq!(manifest.entries.len(), 40);
    assert!(manifest.entries.contains_key(&state::health_key("m39")));
    eprintln!("writes resumed {recovered_after:?} after the master was killed");
}
