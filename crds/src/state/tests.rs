use super::index::FileRecord;
use super::*;

fn record(path: &str, size: u64, sha: u8) -> FileRecord {
    FileRecord {
        path: path.into(),
        size,
        mtime: 1_700_000_000 + size as i64,
        digests: vec![Some(vec![sha; 32])],
    }
}

fn sample(n: usize) -> Vec<FileRecord> {
    (0..n)
        .map(|i| {
            record(
                &format!("pool/main/p{:03}/pkg_{i}_amd64.deb", i % 700),
                i as u64 * 3 + 1,
                (i % 250) as u8 + 1,
            )
        })
        .collect()
}

fn round_trip(index: &FileIndex) -> FileIndex {
    let (meta, chunks) = index.encode(42);
    let meta = IndexMeta::decode(&meta.encode()).unwrap();
    let decoded: Vec<IndexChunk> = chunks
        .iter()
        .map(|(_, v)| IndexChunk::decode(v).unwrap())
        .collect();
    let refs: Vec<&IndexChunk> = decoded.iter().collect();
    FileIndex::from_chunks(&meta, &refs).unwrap()
}

#[test]
fn index_round_trips_through_chunks() {
    let index = FileIndex::build("debian", "s1", &[HashKind::Sha256], sample(20_000), None);
    assert_eq!(index.len(), 20_000);
    let (meta, chunks) = index.encode(42);
    assert_eq!(chunks.len(), 3, "20,000 ids in chunks of {CHUNK_FILES}");
    assert_eq!(meta.files, 20_000);
    let back = round_trip(&index);
    assert_eq!(back, index);
    let e = back.find("pool/main/p005/pkg_5_amd64.deb").unwrap();
    assert_eq!(
        (e.size, e.digest(HashKind::Sha256)),
        (16, Some(&[6u8; 32][..]))
    );
    assert_eq!(e.digest(HashKind::Md5), None);
    assert!(back.find("pool/main/missing.deb").is_none());
}

#[test]
fn ids_are_stable_and_unchanged_chunks_keep_their_keys() {
    let v1 = FileIndex::build("debian", "s1", &[HashKind::Sha256], sample(20_000), None);
    let mut records = sample(20_000);
    records.retain(|r| r.path != "pool/main/p001/pkg_1_amd64.deb");
    records.push(record("pool/main/zzz/new.deb", 7, 9));
    records[19_000].size += 1;
    let v2 = FileIndex::build("debian", "s2", &[HashKind::Sha256], records, Some(&v1));
    let id_of = |i: &FileIndex, p: &str| i.find(p).map(|e| e.id);
    assert_eq!(
        id_of(&v1, "pool/main/p003/pkg_3_amd64.deb"),
        id_of(&v2, "pool/main/p003/pkg_3_amd64.deb")
    );
    assert_eq!(
        id_of(&v2, "pool/main/zzz/new.deb"),
        Some(20_000),
        "a new file takes a new id"
    );
    assert_eq!(v2.next_id, 20_001);
    let (_, c1) = v1.encode(1);
    let (_, c2) = v2.encode(2);
    let k1: Vec<&String> = c1.iter().map(|(k, _)| k).collect();
    let k2: Vec<&String> = c2.iter().map(|(k, _)| k).collect();
    let unchanged = k2.iter().filter(|k| k1.contains(k)).count();
    assert!(
        unchanged >= 1,
        "chunks without changes keep their key: {k1:?} {k2:?}"
    );
    assert!(k2.len() - unchanged <= 3);
}

#[test]
fn unicode_and_odd_paths_survive_front_coding() {
    let paths = [
        "a/ü/é.iso",
        "a/ü/éé.iso",
        "a/üb",
        "b c/d\te",
        "z/日本語/ファイル.txt",
        "z/日本/x",
    ];
    let records = paths
        .iter()
        .enumerate()
        .map(|(i, p)| record(p, i as u64, 1))
        .collect();
    let index = FileIndex::build("p", "s", &[HashKind::Sha256], records, None);
    let back = round_trip(&index);
    for p in paths {
        assert!(back.find(p).is_some(), "{p}");
    }
}

#[test]
fn corrupt_values_are_named_never_panic() {
    let index = FileIndex::build("p", "s", &[HashKind::Sha256], sample(100), None);
    let (_, chunks) = index.encode(1);
    let good = &chunks[0].1;
    assert_eq!(
        IndexChunk::decode(b"hello world").unwrap_err(),
        DecodeError::Foreign
    );
    assert!(matches!(
        IndexChunk::decode(&good[..good.len() - 5]).unwrap_err(),
        DecodeError::Truncated { .. }
    ));
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    assert_eq!(
        IndexChunk::decode(&flipped).unwrap_err(),
        DecodeError::Checksum
    );
    let mut other_version = good.clone();
    other_version[4] = 9;
    assert_eq!(
        IndexChunk::decode(&other_version).unwrap_err().to_string(),
        "written by schema version 9, this build reads version 1"
    );
    assert!(matches!(
        Availability::decode(good).unwrap_err(),
        DecodeError::WrongKind { .. }
    ));
    // Every truncation of a body with a re-computed checksum is an error, not a panic.
    let body = envelope::decode(Kind::IndexChunk, good).unwrap();
    for cut in 0..body.len() {
        let v = envelope::encode(Kind::IndexChunk, &body[..cut]);
        assert!(IndexChunk::decode(&v).is_err(), "cut at {cut}");
    }
    // Arbitrary bytes inside a valid envelope are errors too.
    let mut seed = 7u64;
    for _ in 0..2000 {
        let body: Vec<u8> = (0..64)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 56) as u8
            })
            .collect();
        let _ = IndexChunk::decode(&envelope::encode(Kind::IndexChunk, &body));
        let _ = Availability::decode(&envelope::encode(Kind::Availability, &body));
    }
}

/// Found by fuzzing: ids are deltas, and a huge delta overflowed the running id (a panic with
/// overflow checks, a wrong id without). Now each is a decode error naming the field.
#[test]
fn id_deltas_that_overflow_are_decode_errors() {
    use super::codec::{put_bytes, put_ivarint, put_uvarint};
    let mut chunk = Vec::new();
    for v in [0u64, 2, 0] {
        put_uvarint(&mut chunk, v); // chunk 0, two files, no digests
    }
    put_uvarint(&mut chunk, 5); // the first file's id
    put_uvarint(&mut chunk, 0);
    put_bytes(&mut chunk, b"a");
    put_uvarint(&mut chunk, 1);
    put_ivarint(&mut chunk, 0);
    put_uvarint(&mut chunk, u64::MAX); // 5 + this overflows
    let err = IndexChunk::decode(&envelope::encode(Kind::IndexChunk, &chunk)).unwrap_err();
    assert!(err.to_string().contains("file id"), "{err}");

    let mut avail = Vec::new();
    for s in [&b"m"[..], b"p", b"s"] {
        put_bytes(&mut avail, s);
    }
    put_ivarint(&mut avail, 0);
    avail.push(0); // no last sync
    for _ in 0..4 {
        put_uvarint(&mut avail, 0);
    }
    let mut bitmap = Vec::new();
    roaring::RoaringBitmap::new()
        .serialize_into(&mut bitmap)
        .unwrap();
    put_bytes(&mut avail, &bitmap);
    put_uvarint(&mut avail, 2);
    for delta in [5, u64::MAX] {
        put_uvarint(&mut avail, delta);
        put_uvarint(&mut avail, 1);
        put_ivarint(&mut avail, 0);
    }
    let err = Availability::decode(&envelope::encode(Kind::Availability, &avail)).unwrap_err();
    assert!(err.to_string().contains("mutable file id"), "{err}");
}

/// Found by fuzzing: file sizes whose sum passes 2^64 wrapped. A decoded index refuses them;
/// one built from a scan saturates instead of wrapping.
#[test]
fn sizes_past_two_to_the_64_are_refused_when_decoded() {
    let index = FileIndex::build(
        "p",
        "s",
        &[HashKind::Sha256],
        vec![record("a", u64::MAX, 1), record("b", 2, 2)],
        None,
    );
    assert_eq!(index.total_bytes(), u64::MAX);
    let (meta, chunks) = index.encode(1);
    let decoded: Vec<IndexChunk> = chunks
        .iter()
        .map(|(_, v)| IndexChunk::decode(v).unwrap())
        .collect();
    let refs: Vec<&IndexChunk> = decoded.iter().collect();
    let err = FileIndex::from_chunks(&meta, &refs).unwrap_err();
    assert!(err.to_string().contains("2^64"), "{err}");
}

#[test]
fn metadata_and_chunks_must_agree() {
    let index = FileIndex::build("p", "s", &[HashKind::Sha256], sample(10), None);
    let (mut meta, chunks) = index.encode(1);
    meta.files = 11;
    let decoded = IndexChunk::decode(&chunks[0].1).unwrap();
    let err = FileIndex::from_chunks(&meta, &[&decoded]).unwrap_err();
    assert!(
        err.to_string()
            .contains("the chunks hold 10 files, the metadata says 11")
    );
}

#[test]
fn availability_round_trips() {
    let mut present = roaring::RoaringBitmap::new();
    present.insert_range(0..500_000);
    present.remove(1234);
    let a = Availability {
        mirror: "m".into(),
        project: "debian".into(),
        serial: "s9".into(),
        scanned_at: 1_700_000_000,
        last_sync: Some(1_699_999_000),
        counts: ScanCounts {
            files: 499_999,
            bytes: 1 << 40,
            missing: 1,
            mismatched: 0,
        },
        present,
        mutable: vec![
            MutableSeen {
                id: 3,
                size: 10,
                mtime: 5,
            },
            MutableSeen {
                id: 900,
                size: 11,
                mtime: -5,
            },
        ],
    };
    let encoded = a.encode();
    assert!(
        encoded.len() < 1_000,
        "a full range compresses to runs: {} bytes",
        encoded.len()
    );
    let back = Availability::decode(&encoded).unwrap();
    assert_eq!(back, a);
    assert!(back.holds_version(900, 11, -5));
    assert!(!back.holds_version(900, 11, -4));
    assert!(!back.holds_version(4, 10, 5));
}

#[test]
fn a_fleet_stored_before_the_scan_settings_still_decodes() {
    let mut fleet = FleetState {
        projects: vec![ProjectState {
            name: "debian".into(),
            source_interval_seconds: Some(60),
            metadata_recheck_seconds: Some(2),
            mirror_interval_seconds: Some(600),
            ..Default::default()
        }],
        mirrors: vec![MirrorState {
            name: "m".into(),
            scan_interval_seconds: Some(300),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut json = serde_json::to_value(&fleet).unwrap();
    for (list, keys) in [
        (
            "projects",
            &[
                "source_interval_seconds",
                "metadata_recheck_seconds",
                "mirror_interval_seconds",
            ][..],
        ),
        ("mirrors", &["scan_interval_seconds"][..]),
    ] {
        for key in keys {
            let removed = json[list][0].as_object_mut().unwrap().remove(*key);
            assert!(removed.is_some(), "{list}[0].{key} is stored");
        }
    }
    let old = envelope::encode(envelope::Kind::Fleet, &serde_json::to_vec(&json).unwrap());
    fleet.projects[0].source_interval_seconds = None;
    fleet.projects[0].metadata_recheck_seconds = None;
    fleet.projects[0].mirror_interval_seconds = None;
    fleet.mirrors[0].scan_interval_seconds = None;
    assert_eq!(FleetState::decode(&old).unwrap(), fleet);
}

#[test]
fn fleet_and_health_round_trip() {
    let fleet = FleetState {
        projects: vec![ProjectState {
            name: "debian".into(),
            hashes: vec![HashKind::Sha256],
            ..Default::default()
        }],
        mirrors: vec![MirrorState {
            name: "m".into(),
            weight: 100,
            ipv4: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(FleetState::decode(&fleet.encode()).unwrap(), fleet);
    let health = MirrorHealth {
        mirror: "m".into(),
        entries: vec![HealthState {
            scheme: ProbeScheme::Https,
            family: Family::Ipv4,
            up: false,
            reason: "ConnectRefused".into(),
            since: 5,
        }],
    };
    let back = MirrorHealth::decode(&health.encode()).unwrap();
    assert_eq!(
        back.get(ProbeScheme::Https, Family::Ipv4).map(|h| h.up),
        Some(false)
    );
    assert!(matches!(
        MirrorHealth::decode(&fleet.encode()).unwrap_err(),
        DecodeError::WrongKind { .. }
    ));
}

#[test]
fn keys_and_events_parse() {
    assert_eq!(
        KeyRef::parse(&avail_key("m1", "debian")),
        Some(KeyRef::Avail("m1", "debian"))
    );
    assert_eq!(
        KeyRef::parse(&index_key("fedora")),
        Some(KeyRef::Index("fedora"))
    );
    assert_eq!(KeyRef::parse(&health_key("m1")), Some(KeyRef::Health("m1")));
    assert_eq!(KeyRef::parse(FLEET_KEY), Some(KeyRef::Fleet));
    assert_eq!(KeyRef::parse("other:key"), None);
    let e = ChangeEvent {
        generation: 17,
        keys: vec![FLEET_KEY.into(), health_key("m")],
    };
    assert_eq!(ChangeEvent::parse(&e.encode()).unwrap(), e);
    assert!(ChangeEvent::parse("garbage").is_err());
}

#[test]
fn stats_batches_merge() {
    let mut a = stats::StatsBatch::default();
    a.count("2026-11-22", "debian", "pool/x.deb", "m1", Some("DE"), 100);
    let mut b = stats::StatsBatch::default();
    b.count("2026-11-22", "debian", "pool/x.deb", "m1", None, 50);
    a.merge(b);
    assert_eq!(a.counters[&stats::total_key()]["bytes"], 150);
    assert_eq!(
        a.counters[&stats::day_key("2026-11-22", "country")]["--"],
        1
    );
    assert_eq!(
        a.counters[&stats::day_key("2026-11-22", "file:debian")]["pool/x.deb"],
        2
    );
}

#[test]
fn every_path_is_found_at_its_position_by_the_hash_table() {
    let index = FileIndex::build("debian", "s1", &[HashKind::Sha256], sample(30_000), None);
    for back in [&index, &round_trip(&index)] {
        for (pos, e) in back.iter().enumerate() {
            assert_eq!(back.position(e.path), Some(pos), "{}", e.path);
        }
        for missing in [
            "",
            "pool",
            "pool/main/p000/pkg_0_amd64.deb.x",
            "pool/main/p000/",
        ] {
            assert_eq!(back.position(missing), None, "{missing:?}");
        }
    }
    assert_eq!(FileIndex::default().position("a"), None);
}

#[test]
fn directory_listings_step_over_sub_trees() {
    let paths = [
        "README",
        "dists/stable/Release",
        "dists/stable/main/binary-amd64/Packages",
        "dists/testing/Release",
        "pool/a.deb",
        "pool/main.deb",
        "pool/main/x/x.deb",
        "pool/main/y.deb",
        "pool/main0.deb",
        "pool/main.d/z.deb",
    ];
    let records = paths
        .iter()
        .map(|p| FileRecord {
            path: (*p).into(),
            size: 1,
            mtime: 0,
            digests: vec![None],
        })
        .collect();
    let index = FileIndex::build("p", "s", &[HashKind::Sha256], records, None);
    let names = |dir: &str, limit: usize| -> (Vec<String>, bool) {
        let (entries, more) = index.dir_entries(dir, limit);
        let names = entries
            .into_iter()
            .map(|e| match e {
                index::DirEntry::Dir(d) => format!("{d}/"),
                index::DirEntry::File(f) => f.path.rsplit('/').next().unwrap().to_owned(),
            })
            .collect();
        (names, more)
    };
    assert_eq!(
        names("", 100),
        (
            vec!["README".into(), "dists/".into(), "pool/".into()],
            false
        )
    );
    assert_eq!(
        names("pool/", 100).0,
        ["a.deb", "main.d/", "main.deb", "main/", "main0.deb"]
    );
    assert_eq!(names("pool/main/", 100).0, ["x/", "y.deb"]);
    assert_eq!(names("dists/", 100).0, ["stable/", "testing/"]);
    assert_eq!(
        names("pool/", 2),
        (vec!["a.deb".into(), "main.d/".into()], true)
    );
    assert!(names("nothing/", 100).0.is_empty());
    assert!(index.has_dir("pool/main/"));
    assert!(index.has_dir("dists/stable/main/"));
    assert!(!index.has_dir("pool/mai/"));
    assert!(!index.has_dir("README/"));
}

#[test]
fn days_and_their_keys() {
    assert_eq!(stats::day_string(1_795_309_323), "2026-11-22");
    assert_eq!(stats::day_string(0), "1970-01-01");
    assert_eq!(stats::day_string(11_016 * 86_400), "2000-02-29");
    assert_eq!(stats::day_string(-1), "1969-12-31");
    let key = stats::day_key("2026-11-22", "file:debian");
    assert_eq!(stats::day_of_key(&key), Some("2026-11-22"));
    assert_eq!(stats::day_of_key(&stats::total_key()), None);
    // 400 days are kept: today and the 399 before.
    let now = 1_795_309_323;
    assert_eq!(
        stats::oldest_day_kept(now),
        stats::day_string(now - 399 * 86_400)
    );
    assert_eq!(stats::oldest_day_kept(now), "2025-10-19");
}
