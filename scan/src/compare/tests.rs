use mirrorfleet_crds::state::HashKind;
use mirrorfleet_crds::state::index::FileRecord;

use super::super::ListedFile;
use super::*;

fn index() -> FileIndex {
    let mut records: Vec<FileRecord> = (0..20)
        .map(|i| FileRecord {
            path: format!("pool/f{i:02}.deb"),
            size: 100 + i,
            mtime: 1_000_000 + i as i64,
            digests: vec![None],
        })
        .collect();
    records.push(FileRecord {
        path: "dists/stable/InRelease".into(),
        size: 50,
        mtime: 2_000_000,
        digests: vec![None],
    });
    FileIndex::build("debian", "s", &[HashKind::Sha256], records, None)
}

fn classes() -> PathClasses {
    PathClasses::new(&["dists/*/InRelease".into()], &[]).unwrap()
}

fn listing(files: Vec<(String, u64, i64)>, precision: i64) -> Listing {
    Listing {
        files: files
            .into_iter()
            .map(|(path, size, m)| ListedFile {
                path,
                size,
                mtime: Some(m),
            })
            .collect(),
        mtime_precision: precision,
        exact_sizes: true,
    }
}

fn full(offset: i64) -> Vec<(String, u64, i64)> {
    let mut v: Vec<_> = (0..20)
        .map(|i| {
            (
                format!("pool/f{i:02}.deb"),
                100 + i,
                1_000_000 + i as i64 + offset,
            )
        })
        .collect();
    v.push(("dists/stable/InRelease".into(), 50, 2_000_000 + offset));
    v
}

#[test]
fn complete_mirror() {
    let c = compare(&index(), &listing(full(0), 1), &classes(), &[]);
    assert_eq!(
        c.counts,
        ScanCounts {
            files: 21,
            bytes: (100..120).sum::<u64>() + 50,
            missing: 0,
            mismatched: 0
        }
    );
    assert_eq!(c.present.len(), 20);
    assert_eq!(c.mutable.len(), 1, "the current InRelease is proven");
}

#[test]
fn partial_stale_and_mismatched_mirrors() {
    let mut files = full(0);
    files.retain(|(p, _, _)| p != "pool/f03.deb"); // missing
    files[0].1 += 1; // size mismatch on f00
    let last = files.len() - 1;
    files[last].2 -= 3600 * 24; // stale metadata
    let c = compare(&index(), &listing(files, 1), &classes(), &[]);
    assert_eq!(
        (c.counts.missing, c.counts.mismatched, c.counts.files),
        (1, 2, 18)
    );
    let id = |p: &str| index().find(p).unwrap().id;
    assert!(!c.present.contains(id("pool/f00.deb")) && !c.present.contains(id("pool/f03.deb")));
    assert!(c.present.contains(id("pool/f01.deb")));
    assert!(
        c.mutable.is_empty(),
        "stale metadata is never served from this mirror"
    );
}

#[test]
fn a_whole_hour_timezone_offset_is_tolerated() {
    let c = compare(&index(), &listing(full(3600 * 2), 1), &classes(), &[]);
    assert_eq!(c.tz_offset, 7200);
    assert_eq!(c.mutable.len(), 1);
    let c = compare(&index(), &listing(full(1234), 1), &classes(), &[]);
    assert_eq!(c.tz_offset, 0);
    assert!(
        c.mutable.is_empty(),
        "an odd offset is not a timezone: the metadata is stale"
    );
}

#[test]
fn only_carried_subtrees_count() {
    let files = full(0)
        .into_iter()
        .filter(|(p, _, _)| p.starts_with("dists/"))
        .collect();
    let c = compare(&index(), &listing(files, 1), &classes(), &["dists/".into()]);
    assert_eq!((c.counts.files, c.counts.missing), (1, 0));
}

#[test]
fn minute_precision_listings() {
    let files = full(0)
        .into_iter()
        .map(|(p, s, m)| (p, s, m - m % 60))
        .collect();
    let c = compare(&index(), &listing(files, 60), &classes(), &[]);
    assert_eq!(c.mutable.len(), 1);
}
