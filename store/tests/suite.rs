//! One test suite, run against both implementations of `Store`: a real redis-server started
//! on a free loopback port, and the embedded store in a temporary directory.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::stats::{self, StatsBatch};
use mirrorfleet_crds::state::{
    self, Availability, Family, FileIndex, FleetState, HashKind, HealthState, MirrorHealth,
    MirrorState, ProbeScheme, ProjectState, ScanCounts,
};
use mirrorfleet_store::{
    Commit, EmbeddedStore, RedisConfig, RedisStore, RedisTarget, StateReader, StateWriter, Store,
    StoreEvent, follow,
};
use mirrorfleet_testkit::{Redis, wait_until, within};

fn fleet(mirrors: &[&str]) -> FleetState {
    FleetState {
        projects: vec![ProjectState {
            name: "debian".into(),
            hashes: vec![HashKind::Sha256],
            ..Default::default()
        }],
        mirrors: mirrors
            .iter()
            .map(|m| MirrorState {
                name: (*m).into(),
                weight: 100,
                ipv4: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn records(n: usize, salt: u64) -> Vec<FileRecord> {
    (0..n)
        .map(|i| FileRecord {
            path: format!("pool/main/{:02}/file-{i}.deb", i % 37),
            size: i as u64 + salt,
            mtime: 1_700_000_000,
            digests: vec![Some(vec![(i % 251) as u8; 32])],
        })
        .collect()
}

fn health(mirror: &str, up: bool) -> MirrorHealth {
    MirrorHealth {
        mirror: mirror.into(),
        entries: vec![HealthState {
            scheme: ProbeScheme::Https,
            family: Family::Ipv4,
            up,
            reason: if up { "Ok" } else { "ConnectRefused" }.into(),
            since: 1,
        }],
    }
}

fn avail(mirror: &str, ids: std::ops::Range<u32>) -> Availability {
    let mut present = roaring::RoaringBitmap::new();
    present.insert_range(ids);
    Availability {
        mirror: mirror.into(),
        project: "debian".into(),
        serial: "s1".into(),
        present,
        counts: ScanCounts::default(),
        ..Default::default()
    }
}

async fn round_trip_of_every_kind<S: Store + Clone>(store: S) {
    let writer = StateWriter::new(store.clone());
    let g1 = writer.write_fleet(&fleet(&["a", "b"])).await.unwrap();
    let index = FileIndex::build(
        "debian",
        "s1",
        &[HashKind::Sha256],
        records(20_000, 0),
        None,
    );
    let g2 = writer.write_index(&index, 1).await.unwrap();
    let g3 = writer
        .write_availability(&avail("a", 0..15_000))
        .await
        .unwrap();
    let g4 = writer.write_health(&health("a", true)).await.unwrap();
    assert!(
        g1 < g2 && g2 < g3 && g3 < g4,
        "generations increase: {g1} {g2} {g3} {g4}"
    );

    let (loaded, report) = StateReader::new(store.clone()).load().await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(loaded.generation, g4);
    assert_eq!(loaded.fleet.as_deref(), Some(&fleet(&["a", "b"])));
    assert_eq!(loaded.indexes["debian"].as_ref(), &index);
    assert_eq!(
        loaded.availability[&("a".into(), "debian".into())]
            .present
            .len(),
        15_000
    );
    assert!(loaded.health["a"].entries[0].up);
    let manifest = store.manifest().await.unwrap();
    assert_eq!(manifest.generation, g4);
    assert_eq!(manifest.entries.get(&state::health_key("a")), Some(&g4));
}

async fn index_updates_move_only_changed_chunks<S: Store + Clone>(store: S) {
    let writer = StateWriter::new(store.clone());
    let v1 = FileIndex::build(
        "debian",
        "s1",
        &[HashKind::Sha256],
        records(30_000, 0),
        None,
    );
    writer.write_index(&v1, 1).await.unwrap();
    let reader = StateReader::new(store.clone());
    let (mut loaded, _) = reader.load().await.unwrap();
    let (meta1, _) = v1.encode(1);

    let mut recs = records(30_000, 0);
    recs[29_999].size += 1; // touches the last chunk only
    let v2 = FileIndex::build("debian", "s2", &[HashKind::Sha256], recs, Some(&v1));
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(
        within("the first event", Duration::from_secs(10), events.recv()).await,
        Some(StoreEvent::Resync)
    );
    writer.write_index(&v2, 2).await.unwrap();
    let (meta2, _) = v2.encode(2);
    let changed: Vec<&String> = meta2
        .chunks
        .iter()
        .filter(|k| !meta1.chunks.contains(k))
        .collect();
    assert_eq!(changed.len(), 1, "one chunk changed");
    let dropped: Vec<String> = meta1
        .chunks
        .iter()
        .filter(|k| !meta2.chunks.contains(k))
        .cloned()
        .collect();
    assert_eq!(
        store.blobs_exist(&dropped).await.unwrap(),
        vec![false],
        "the replaced chunk is deleted"
    );

    let event = within(
        "the index change event",
        Duration::from_secs(10),
        events.recv(),
    )
    .await
    .unwrap();
    let StoreEvent::Changed(ev) = &event else {
        panic!("expected a change, got {event:?}")
    };
    assert_eq!(ev.keys, vec![state::index_key("debian")]);
    let report = reader.apply(&mut loaded, &event).await.unwrap();
    assert_eq!(report.changed, vec![state::index_key("debian")]);
    assert_eq!(loaded.indexes["debian"].as_ref(), &v2);
    assert_eq!(loaded.indexes["debian"].serial, "s2");
}

async fn a_reader_that_missed_events_resynchronises<S: Store + Clone>(store: S) {
    let writer = StateWriter::new(store.clone());
    writer.write_fleet(&fleet(&["a"])).await.unwrap();
    let reader = StateReader::new(store.clone());
    let (mut loaded, _) = reader.load().await.unwrap();
    writer.write_health(&health("a", true)).await.unwrap();
    writer.write_availability(&avail("a", 0..10)).await.unwrap();
    let g = writer.write_fleet(&fleet(&["a", "b"])).await.unwrap();
    // Only the last event arrives: the gap must trigger a full comparison.
    let last = StoreEvent::Changed(state::ChangeEvent {
        generation: g,
        keys: vec![state::FLEET_KEY.into()],
    });
    let report = reader.apply(&mut loaded, &last).await.unwrap();
    assert_eq!(report.changed.len(), 3, "{:?}", report.changed);
    assert!(loaded.health.contains_key("a"));
    assert!(
        loaded
            .availability
            .contains_key(&("a".into(), "debian".into()))
    );
    assert_eq!(loaded.fleet.unwrap().mirrors.len(), 2);
    assert_eq!(loaded.generation, g);
}

async fn removals_reach_readers<S: Store + Clone>(store: S) {
    let writer = StateWriter::new(store.clone());
    writer.write_health(&health("gone", true)).await.unwrap();
    writer
        .write_availability(&avail("gone", 0..10))
        .await
        .unwrap();
    let index = FileIndex::build("debian", "s1", &[HashKind::Sha256], records(100, 0), None);
    writer.write_index(&index, 1).await.unwrap();
    let reader = StateReader::new(store.clone());
    let (mut loaded, _) = reader.load().await.unwrap();
    writer
        .remove_mirror("gone", &["debian".into()])
        .await
        .unwrap();
    writer.remove_index("debian").await.unwrap();
    reader.resync(&mut loaded).await.unwrap();
    assert!(
        loaded.health.is_empty() && loaded.availability.is_empty() && loaded.indexes.is_empty()
    );
    let (meta, _) = index.encode(1);
    assert_eq!(
        store.blobs_exist(&meta.chunks).await.unwrap(),
        vec![false],
        "chunks of a removed index are deleted"
    );
}

async fn a_corrupt_value_is_named_and_the_last_good_one_kept<S: Store + Clone>(store: S) {
    let writer = StateWriter::new(store.clone());
    writer
        .write_availability(&avail("m", 0..100))
        .await
        .unwrap();
    let reader = StateReader::new(store.clone());
    let (mut loaded, _) = reader.load().await.unwrap();
    let key = state::avail_key("m", "debian");
    let full = avail("m", 0..50).encode();
    store
        .commit(Commit {
            puts: vec![(key.clone(), full[..full.len() - 3].to_vec())],
            ..Commit::default()
        })
        .await
        .unwrap();
    let report = reader.resync(&mut loaded).await.unwrap();
    assert_eq!(report.errors.len(), 1);
    let message = mirrorfleet_runtime::error_chain(&report.errors[0]);
    assert!(
        message.starts_with(&format!("key {key}: truncated")),
        "{message}"
    );
    assert_eq!(
        loaded.availability[&("m".into(), "debian".into())]
            .present
            .len(),
        100,
        "last good value kept"
    );
    // A foreign value under the fleet key.
    store
        .commit(Commit {
            puts: vec![(state::FLEET_KEY.into(), b"{\"json\": true}".to_vec())],
            ..Commit::default()
        })
        .await
        .unwrap();
    let report = reader.resync(&mut loaded).await.unwrap();
    let messages: Vec<String> = report
        .errors
        .iter()
        .map(|e| mirrorfleet_runtime::error_chain(e))
        .collect();
    assert!(
        messages.contains(&"key mf:v1:fleet: not a mirrorfleet value (bad magic bytes)".to_owned()),
        "{messages:?}"
    );
    assert_eq!(
        messages.len(),
        2,
        "the still-broken availability is reported again: {messages:?}"
    );
}

async fn follow_publishes_changes<S: Store + Clone>(store: S) {
    let writer = StateWriter::new(store.clone());
    writer.write_health(&health("m", true)).await.unwrap();
    let rx = follow(store.clone(), Duration::from_secs(30)).await;
    let up = |rx: &tokio::sync::watch::Receiver<Arc<mirrorfleet_store::LoadedState>>| {
        rx.borrow().health.get("m").map(|h| h.entries[0].up)
    };
    wait_until("the initial load", Duration::from_secs(5), || async {
        up(&rx) == Some(true)
    })
    .await;
    let started = std::time::Instant::now();
    writer.write_health(&health("m", false)).await.unwrap();
    wait_until("the health change", Duration::from_secs(5), || async {
        up(&rx) == Some(false)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a health change reaches readers within a second: {:?}",
        started.elapsed()
    );
}

async fn stats_add_up<S: Store + Clone>(store: S) {
    let mut batch = StatsBatch::default();
    batch.count("2026-11-22", "debian", "pool/a.deb", "m1", Some("DE"), 1000);
    batch.count("2026-11-22", "debian", "pool/a.deb", "m2", Some("FR"), 1000);
    store.add_stats(&batch).await.unwrap();
    store.add_stats(&batch).await.unwrap();
    let mirrors = store
        .read_stats(&stats::day_key("2026-11-22", "mirror"))
        .await
        .unwrap();
    assert_eq!((mirrors["m1"], mirrors["m2"]), (2, 2));
    let total = store.read_stats(&stats::total_key()).await.unwrap();
    assert_eq!((total["redirects"], total["bytes"]), (4, 4000));
    let files = stats::day_key("2026-11-22", "file:debian");
    let wanted = [
        (files.clone(), "pool/a.deb".to_owned()),
        (files, "pool/none.deb".to_owned()),
        (
            stats::day_key("1999-01-01", "file:debian"),
            "pool/a.deb".to_owned(),
        ),
    ];
    assert_eq!(store.read_stat_fields(&wanted).await.unwrap(), [4, 0, 0]);
    assert!(store.read_stat_fields(&[]).await.unwrap().is_empty());
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod redis_store {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let server = Redis::start();
                    let store = RedisStore::connect(RedisConfig::new(RedisTarget::Url(server.url()))).await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
        mod embedded_store {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = EmbeddedStore::open(dir.path()).unwrap();
                    super::$name(store).await;
                }
            )*
        }
    };
}

suite!(
    round_trip_of_every_kind,
    index_updates_move_only_changed_chunks,
    a_reader_that_missed_events_resynchronises,
    removals_reach_readers,
    a_corrupt_value_is_named_and_the_last_good_one_kept,
    follow_publishes_changes,
    stats_add_up,
);

#[tokio::test]
async fn redis_foreign_types_and_schema_versions_are_named() {
    let server = Redis::start();
    let store = RedisStore::connect(RedisConfig::new(RedisTarget::Url(server.url())))
        .await
        .unwrap();
    let writer = StateWriter::new(store.clone());
    writer.write_health(&health("m", true)).await.unwrap();
    let reader = StateReader::new(store.clone());
    let (mut loaded, _) = reader.load().await.unwrap();
    let key = state::health_key("m");
    server.raw(&["DEL", &key]).await;
    server.raw(&["HSET", &key, "field", "value"]).await;
    server
        .raw(&["HSET", state::MANIFEST_KEY, &key, "999"])
        .await;
    let report = reader.resync(&mut loaded).await.unwrap();
    let messages: Vec<String> = report
        .errors
        .iter()
        .map(|e| mirrorfleet_runtime::error_chain(e))
        .collect();
    assert_eq!(
        messages,
        [format!(
            "key {key}: holds no string value (another type under our key, or deleted behind our back)"
        )]
    );
    assert!(
        loaded.health["m"].entries[0].up,
        "the last good value stays"
    );

    server.raw(&["SET", state::SCHEMA_KEY, "2"]).await;
    let err = reader.resync(&mut loaded).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the store holds schema version \"2\" under mf:v1:schema; this build reads version 1"
    );
}

#[tokio::test]
async fn redis_restart_keeps_readers_serving_and_they_catch_up() {
    let mut server = Redis::start();
    let mut config = RedisConfig::new(RedisTarget::Url(server.url()));
    config.retry_for = Duration::from_secs(10);
    let store = RedisStore::connect(config).await.unwrap();
    let writer = StateWriter::new(store.clone());
    writer.write_health(&health("m", true)).await.unwrap();
    let rx = follow(store.clone(), Duration::from_millis(500)).await;
    wait_until("the initial load", Duration::from_secs(5), || async {
        rx.borrow().health.contains_key("m")
    })
    .await;
    server.kill();
    // Redis is really gone (a reader with little patience fails) ...
    let mut impatient = RedisConfig::new(RedisTarget::Url(server.url()));
    impatient.retry_for = Duration::from_millis(200);
    assert!(RedisStore::connect(impatient).await.is_err());
    // ... and the follower keeps serving its last snapshot meanwhile.
    assert!(rx.borrow().health["m"].entries[0].up);
    server.restart(); // empty: `save ""`
    writer.write_health(&health("m", false)).await.unwrap();
    wait_until(
        "the reader to catch up after the restart",
        Duration::from_secs(10),
        || async { rx.borrow().health.get("m").map(|h| h.entries[0].up) == Some(false) },
    )
    .await;
}

#[tokio::test]
async fn embedded_store_survives_restarts_and_torn_writes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let writer = StateWriter::new(store.clone());
        writer.write_fleet(&fleet(&["a"])).await.unwrap();
        writer
            .write_index(
                &FileIndex::build("debian", "s1", &[HashKind::Sha256], records(100, 0), None),
                1,
            )
            .await
            .unwrap();
        let mut batch = StatsBatch::default();
        batch.count("2026-11-22", "debian", "pool/a.deb", "a", None, 10);
        store.add_stats(&batch).await.unwrap();
    }
    // A crash mid-append leaves half a record at the end.
    let log = dir.path().join("state.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&log, &bytes).unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        good_len as u64,
        "the torn record is cut off"
    );
    let (loaded, _) = StateReader::new(store.clone()).load().await.unwrap();
    assert_eq!(loaded.fleet.unwrap().mirrors[0].name, "a");
    assert_eq!(loaded.indexes["debian"].len(), 100);
    assert_eq!(
        store.read_stats(&stats::total_key()).await.unwrap()["redirects"],
        1
    );
    let g = StateWriter::new(store.clone())
        .write_health(&health("a", true))
        .await
        .unwrap();
    assert_eq!(g, 3, "generations continue after a restart");
    drop(store);

    // Damage in the middle is an error naming the byte, never silent data loss.
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    let err = EmbeddedStore::open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("is corrupt at byte 0: checksum mismatch"),
        "{err}"
    );
}

/// What crashes and power losses leave after the last valid record is cut off, every time;
/// damage with a valid record after it is refused, naming the byte.
#[tokio::test]
async fn embedded_store_cuts_torn_tails_of_every_shape_and_refuses_damage_before_a_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let writer = StateWriter::new(store.clone());
        writer.write_fleet(&fleet(&["a"])).await.unwrap();
        writer.write_health(&health("a", true)).await.unwrap();
    }
    let log = dir.path().join("state.log");
    let good = std::fs::read(&log).unwrap();
    // A little generator, so that the garbage differs from shape to shape but not run to run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut garbage = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        ("4 KiB of zeros (a power loss on ext4/XFS)", vec![0; 4096]),
        ("one zero byte", vec![0]),
        ("7 bytes, less than a header", vec![1; 7]),
        ("half a record", vec![200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]),
        (
            "a header claiming 1 GiB",
            [u32::MAX.to_le_bytes(), [0; 4]].concat(),
        ),
        ("garbage, 100 bytes", garbage(100)),
        ("garbage, 4 KiB", garbage(4096)),
        ("garbage, 64 KiB", garbage(65536)),
        ("zeros then garbage", [vec![0; 512], garbage(512)].concat()),
    ];
    for (shape, tail) in shapes {
        std::fs::write(&log, [good.as_slice(), &tail].concat()).unwrap();
        let store =
            EmbeddedStore::open(dir.path()).unwrap_or_else(|e| panic!("{shape}: refused: {e}"));
        assert_eq!(
            std::fs::metadata(&log).unwrap().len(),
            good.len() as u64,
            "{shape}: cut at the last valid record"
        );
        let (loaded, _) = StateReader::new(store.clone()).load().await.unwrap();
        assert_eq!(loaded.fleet.unwrap().mirrors[0].name, "a", "{shape}");
        assert!(
            loaded.health.contains_key("a"),
            "{shape}: the last record kept"
        );
    }

    // The same shapes followed by a valid record are damage, not a torn tail.
    let first_len = 8 + u32::from_le_bytes(good[0..4].try_into().unwrap()) as usize;
    let (first, rest) = good.split_at(first_len);
    for (shape, damage) in [("zeros", vec![0u8; 4096]), ("garbage", garbage(300))] {
        std::fs::write(&log, [first, &damage, rest].concat()).unwrap();
        let err = EmbeddedStore::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("is corrupt at byte {first_len}"))
                && err.contains(&format!(
                    "a valid record follows at byte {}",
                    first_len + damage.len()
                )),
            "{shape}: {err}"
        );
        assert_eq!(
            std::fs::metadata(&log).unwrap().len() as usize,
            good.len() + damage.len(),
            "{shape}: a refused log is left as it was"
        );
    }
}

#[tokio::test]
async fn embedded_store_reads_stats_records_of_the_older_format() {
    // Older logs wrote one (key, field, count) triple per counter: record type 3.
    fn put(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
    }
    let mut payload = vec![3u8];
    payload.extend_from_slice(&2u64.to_le_bytes());
    for (field, n) in [("pool/a.deb", 5u64), ("pool/b.deb", 7)] {
        put(&mut payload, b"mf:v1:stats:day:2026-11-22:file:debian");
        put(&mut payload, field.as_bytes());
        payload.extend_from_slice(&n.to_le_bytes());
    }
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.log"), &record).unwrap();

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let key = stats::day_key("2026-11-22", "file:debian");
    let mut batch = StatsBatch::default();
    batch.add_to(&key, "pool/a.deb", 1);
    store.add_stats(&batch).await.unwrap();
    let files = store.read_stats(&key).await.unwrap();
    assert_eq!(files["pool/a.deb"], 6);
    assert_eq!(files["pool/b.deb"], 7);
    drop(store);
    // And the new record replays after a restart.
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.read_stats(&key).await.unwrap()["pool/a.deb"], 6);
}

#[tokio::test]
async fn embedded_store_forgets_per_day_stats_past_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let today = stats::day_string(now);
    let old = stats::day_string(now - 401 * 86_400);
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut batch = StatsBatch::default();
        batch.count(&today, "debian", "pool/a.deb", "a", None, 10);
        batch.count(&old, "debian", "pool/a.deb", "a", None, 10);
        store.add_stats(&batch).await.unwrap();
        assert_eq!(
            store
                .read_stats(&stats::day_key(&old, "mirror"))
                .await
                .unwrap()["a"],
            1
        );
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(
        store
            .read_stats(&stats::day_key(&old, "mirror"))
            .await
            .unwrap()
            .is_empty(),
        "a day past the retention is gone after a restart"
    );
    assert_eq!(
        store
            .read_stats(&stats::day_key(&today, "mirror"))
            .await
            .unwrap()["a"],
        1
    );
    assert_eq!(
        store.read_stats(&stats::total_key()).await.unwrap()["redirects"],
        2,
        "totals are kept"
    );
}
