use mirrorfleet_crds::state::HashKind;
use mirrorfleet_crds::state::index::FileRecord;

use super::*;

const WINDOW: Duration = Duration::from_secs(600);

fn record(path: &str, size: u64, mtime: i64) -> FileRecord {
    FileRecord {
        path: path.into(),
        size,
        mtime,
        digests: vec![None],
    }
}

fn index(serial: &str, records: Vec<FileRecord>, previous: Option<&FileIndex>) -> FileIndex {
    FileIndex::build("p", serial, &[HashKind::Sha256], records, previous)
}

fn v1() -> FileIndex {
    index(
        "s1",
        vec![
            record("pool/a.deb", 10, 100),
            record("sub/c.deb", 30, 100),
            record("dists/InRelease", 5, 100),
        ],
        None,
    )
}

fn v2(old: &FileIndex) -> FileIndex {
    index(
        "s2",
        vec![
            record("pool/a.deb", 10, 100),
            record("pool/b.deb", 20, 200),
            record("sub/c.deb", 30, 100),
            record("sub/d.deb", 40, 200),
            record("dists/InRelease", 6, 200),
        ],
        Some(old),
    )
}

fn classes() -> PathClasses {
    PathClasses::new(&["dists/*".into()], &[]).unwrap()
}

/// What a complete mirror held of `v1`.
fn avail_of(i: &FileIndex) -> Availability {
    let mut a = Availability {
        mirror: "m".into(),
        project: "p".into(),
        serial: i.serial.clone(),
        ..Availability::default()
    };
    for e in i.iter() {
        if classes().is_mutable(e.path) {
            a.mutable.push(MutableSeen {
                id: e.id,
                size: e.size,
                mtime: e.mtime,
            });
        } else {
            a.present.insert(e.id);
        }
        a.counts.files += 1;
        a.counts.bytes += e.size;
    }
    a.mutable.sort_unstable_by_key(|m| m.id);
    a
}

fn paths(t: &[Target]) -> Vec<&str> {
    t.iter().map(|t| t.path.as_str()).collect()
}

#[test]
fn the_changed_files_are_pending_metadata_first_and_only_what_the_mirror_carries() {
    let (one, now) = (v1(), Instant::now());
    let two = v2(&one);
    let mut recent = Recent::default();
    recent.observe(None, &one, now, WINDOW);
    assert!(recent.is_empty(), "a first index is no change");
    recent.observe(Some(&one), &two, now, WINDOW);
    let a = avail_of(&one);
    let all = pending(&two, &a, &classes(), &[], &recent, 10);
    assert_eq!(paths(&all), ["dists/InRelease", "pool/b.deb", "sub/d.deb"]);
    assert!(all[0].mutable && !all[1].mutable);
    assert_eq!((all[0].size, all[0].mtime), (6, 200));
    let sub = pending(&two, &a, &classes(), &["sub/".into()], &recent, 10);
    assert_eq!(paths(&sub), ["sub/d.deb"]);
    assert_eq!(
        paths(&pending(&two, &a, &classes(), &[], &recent, 1)),
        ["dists/InRelease"]
    );
}

#[test]
fn proven_files_are_added_once_and_only_at_their_current_version() {
    let (one, now) = (v1(), Instant::now());
    let two = v2(&one);
    let mut recent = Recent::default();
    recent.observe(Some(&one), &two, now, WINDOW);
    let mut a = avail_of(&one);
    let all = pending(&two, &a, &classes(), &[], &recent, 10);
    assert!(apply(&mut a, &two, &all));
    assert!(pending(&two, &a, &classes(), &[], &recent, 10).is_empty());
    // Rewritten in place (counted once, at its new size); two new files.
    assert_eq!((a.counts.files, a.counts.bytes), (5, 10 + 30 + 6 + 20 + 40));
    assert!(!apply(&mut a, &two, &all), "applied twice");
    // A check of a version the index has since moved on from proves nothing.
    let three = index("s3", vec![record("dists/InRelease", 7, 300)], Some(&two));
    let mut b = avail_of(&one);
    assert!(!apply(&mut b, &three, &all[..1]));
    assert!(!b.holds_version(all[0].id, 6, 200));
}

#[test]
fn a_serial_is_covered_while_every_change_since_is_remembered() {
    let (one, t0) = (v1(), Instant::now());
    let two = v2(&one);
    let mut recent = Recent::default();
    recent.observe(None, &one, t0, WINDOW);
    recent.observe(Some(&one), &two, t0 + Duration::from_secs(1), WINDOW);
    assert!(recent.covers("s1") && recent.covers("s2"));
    assert!(!recent.covers("s0"), "a serial never seen");
    // Past the window the changes and the old serial are forgotten; the newest stays.
    recent.expire(t0 + WINDOW + Duration::from_secs(2), WINDOW);
    assert!(recent.is_empty());
    assert!(!recent.covers("s1") && recent.covers("s2"));
}

#[test]
fn a_change_too_large_to_remember_is_left_to_the_scans() {
    let (one, now) = (v1(), Instant::now());
    let big = index(
        "big",
        (0..=MAX_CHANGED)
            .map(|i| record(&format!("pool/n{i:05}.deb"), 1, 1))
            .collect(),
        Some(&one),
    );
    let mut recent = Recent::default();
    recent.observe(None, &one, now, WINDOW);
    recent.observe(Some(&one), &big, now + Duration::from_secs(1), WINDOW);
    assert!(recent.is_empty());
    assert!(
        !recent.covers("s1"),
        "changes since s1 were not all remembered"
    );
    assert!(recent.covers("big"));
}
