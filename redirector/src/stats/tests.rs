//! Stats shards: sums across snapshots and days, compaction, the cap.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::{FileIndex, FleetState, HashKind, MirrorState, ProjectState};

use super::*;

const DAY: i64 = 20_414; // 2025-11-22

fn snapshot(generation: u64, files: usize) -> Arc<Snapshot> {
    let records = (0..files)
        .map(|i| FileRecord {
            path: format!("f{i}"),
            size: 10,
            mtime: 0,
            digests: vec![None],
        })
        .collect();
    let index = FileIndex::build("p", "s", &[HashKind::Sha256], records, None);
    let fleet = FleetState {
        projects: vec![ProjectState {
            name: "p".into(),
            ..Default::default()
        }],
        mirrors: vec![MirrorState::test("m0"), MirrorState::test("m1")],
        ..Default::default()
    };
    let indexes = HashMap::from([("p".to_owned(), Arc::new(index))]);
    Arc::new(Snapshot::from_parts(
        generation,
        &fleet,
        &indexes,
        &HashMap::new(),
        &HashMap::new(),
    ))
}

fn event<'s>(snap: &'s Arc<Snapshot>, file: usize, mirror: Option<usize>, cc: &str) -> Event<'s> {
    Event {
        snap,
        project: 0,
        file: Some(file),
        mirror,
        country: mirrorfleet_geo::cc(cc),
        at: DAY * 86_400 + 3_600,
    }
}

fn field(batch: &StatsBatch, key: &str, field: &str) -> u64 {
    batch
        .counters
        .get(key)
        .and_then(|f| f.get(field))
        .copied()
        .unwrap_or(0)
}

#[test]
fn counters_are_summed_by_file_mirror_country_and_day() {
    let (old, new) = (snapshot(1, 3), snapshot(2, 3));
    let metrics = Metrics::default();
    let mut p = Pending::default();
    p.add(event(&old, 0, Some(0), "FR"), &metrics);
    p.add(event(&old, 0, Some(0), "FR"), &metrics);
    p.add(event(&old, 1, Some(1), "DE"), &metrics);
    // A new snapshot and a fallback, and the next day.
    p.add(event(&new, 0, Some(0), "FR"), &metrics);
    p.add(event(&new, 2, None, ""), &metrics);
    let mut next_day = event(&new, 2, Some(1), "DE");
    next_day.at += 86_400;
    p.add(next_day, &metrics);
    let mut batch = StatsBatch::default();
    p.drain_into(&mut batch, &metrics);

    let day = "2025-11-22";
    let files = day_key(day, "file:p");
    assert_eq!(field(&batch, &files, "f0"), 3);
    assert_eq!(field(&batch, &files, "f1"), 1);
    assert_eq!(field(&batch, &files, "f2"), 1);
    assert_eq!(field(&batch, &day_key("2025-11-23", "file:p"), "f2"), 1);
    let mirrors = day_key(day, "mirror");
    assert_eq!(field(&batch, &mirrors, "m0"), 3);
    assert_eq!(field(&batch, &mirrors, "m1"), 1);
    assert_eq!(field(&batch, &mirrors, "fallback"), 1);
    assert_eq!(field(&batch, &day_key(day, "bytes"), "m0"), 30);
    let countries = day_key(day, "country");
    assert_eq!(field(&batch, &countries, "FR"), 3);
    assert_eq!(field(&batch, &countries, "DE"), 1);
    assert_eq!(field(&batch, &countries, "--"), 1);
    assert_eq!(field(&batch, &total_key(), "redirects"), 6);
    assert_eq!(field(&batch, &total_key(), "bytes"), 60);
    let per: BTreeMap<String, u64> = metrics.per_mirror.lock().unwrap().clone();
    assert_eq!(per.get("m1"), Some(&2));
    assert_eq!(metrics.stats_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn fallback_redirects_of_paths_not_in_the_index_are_counted_apart() {
    let snap = snapshot(1, 1);
    let metrics = Metrics::default();
    let mut p = Pending::default();
    let unindexed = |cc| Event {
        file: None,
        ..event(&snap, 0, None, cc)
    };
    p.add(unindexed("FR"), &metrics);
    p.add(unindexed("FR"), &metrics);
    p.add(unindexed("DE"), &metrics);
    p.add(event(&snap, 0, None, "FR"), &metrics);
    p.add(event(&snap, 0, Some(0), "FR"), &metrics);
    // A path not in the index is never counted as a mirror's.
    p.add(
        Event {
            file: None,
            ..event(&snap, 0, Some(1), "FR")
        },
        &metrics,
    );
    let mut batch = StatsBatch::default();
    p.drain_into(&mut batch, &metrics);

    let day = "2025-11-22";
    let mirrors = day_key(day, "mirror");
    assert_eq!(field(&batch, &mirrors, UNINDEXED), 3);
    assert_eq!(
        field(&batch, &mirrors, "fallback"),
        1,
        "ordinary fallbacks apart"
    );
    assert_eq!(field(&batch, &mirrors, "m0"), 1);
    assert_eq!(field(&batch, &mirrors, "m1"), 0);
    let countries = day_key(day, "country");
    assert_eq!(field(&batch, &countries, "FR"), 4);
    assert_eq!(field(&batch, &countries, "DE"), 1);
    let files = &batch.counters[&day_key(day, "file:p")];
    assert_eq!(
        files.len(),
        1,
        "no per-path counter for unindexed paths: {files:?}"
    );
    assert_eq!(field(&batch, &total_key(), "redirects"), 5);
    assert_eq!(
        field(&batch, &total_key(), "bytes"),
        20,
        "the indexed downloads' bytes only"
    );
    let per: BTreeMap<String, u64> = metrics.per_mirror.lock().unwrap().clone();
    assert_eq!(per.get(UNINDEXED), Some(&3));
    assert_eq!(per.get("fallback"), Some(&1));
    assert_eq!(metrics.stats_dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn a_busy_shard_compacts_in_place_and_counts_everything() {
    let snap = snapshot(1, 4);
    let metrics = Metrics::default();
    let mut p = Pending::default();
    let n = 3 * FIRST_COMPACTION + 17;
    for i in 0..n {
        p.add(event(&snap, i % 4, Some(i % 2), "FR"), &metrics);
    }
    // Compacted on the way: four distinct counters plus what came since.
    assert!(
        p.entries.len() < FIRST_COMPACTION + 4,
        "{}",
        p.entries.len()
    );
    assert_eq!(p.downloads(), n as u64);
    let mut batch = StatsBatch::default();
    p.drain_into(&mut batch, &metrics);
    assert_eq!(field(&batch, &total_key(), "redirects"), n as u64);
    let files = day_key("2025-11-22", "file:p");
    let per_file: u64 = (0..4)
        .map(|i| field(&batch, &files, &format!("f{i}")))
        .sum();
    assert_eq!(per_file, n as u64);
}

#[test]
fn a_shard_full_of_distinct_counters_drops_and_says_so() {
    let snap = snapshot(1, 1);
    let metrics = Metrics::default();
    let mut p = Pending::default();
    // Distinct file positions (the flush would skip those outside the index; counting
    // them is all this test needs).
    for i in 0..MAX_PENDING + 1000 {
        p.add(event(&snap, i, Some(0), "FR"), &metrics);
    }
    assert!(p.entries.len() <= MAX_PENDING);
    let dropped = metrics.stats_dropped.load(Ordering::Relaxed);
    assert_eq!(dropped + p.downloads(), (MAX_PENDING + 1000) as u64);
    assert!(dropped >= 1000);
}

#[test]
fn a_shard_at_the_cap_keeps_counting_while_compacting_frees_room() {
    let snap = snapshot(1, 1);
    let metrics = Metrics::default();
    let mut p = Pending::default();
    // 300,000 distinct counters and 250,000 repeats of one: compacting at the cap merges the
    // repeats, frees room, and nothing is lost.
    for i in 0..300_000 {
        p.add(event(&snap, i, Some(0), "FR"), &metrics);
    }
    for _ in 0..250_000 {
        p.add(event(&snap, 0, Some(0), "FR"), &metrics);
    }
    assert_eq!(metrics.stats_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(p.downloads(), 550_000);
    assert!(!p.full);
}
