//! Compares a mirror's listing with the source index: which files the mirror holds with the
//! right size (immutable files), which exact version of each mutable metadata file it holds,
//! what is missing and what mismatches. Pure; tolerates whole-hour timezone offsets in the
//! mirror's mtimes, estimated from the files both sides agree on.

use std::collections::HashMap;

use mirrorfleet_crds::state::{FileIndex, MutableSeen, PathClasses, ScanCounts};
use roaring::RoaringBitmap;

use super::Listing;
use super::http::Size;

/// What a mirror holds of a project.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Immutable files present with the right size.
    pub present: RoaringBitmap,
    /// Mutable files held at the index's current version.
    pub mutable: Vec<MutableSeen>,
    /// Counts.
    pub counts: ScanCounts,
    /// The mirror's timezone offset in seconds (mirror time − true time), whole hours.
    pub tz_offset: i64,
}

/// Compares `listing` with `index`. `carried` restricts the comparison to path prefixes (a
/// mirror carrying only part of a project); empty means everything.
pub fn compare(
    index: &FileIndex,
    listing: &Listing,
    classes: &PathClasses,
    carried: &[String],
) -> Comparison {
    let mut listed: Vec<_> = listing.files.iter().collect();
    listed.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let in_scope = |path: &str| {
        carried.is_empty()
            || carried
                .iter()
                .any(|p| path.starts_with(p.as_str()) || p.trim_end_matches('/') == path)
    };
    let precision = listing.mtime_precision.max(1);

    // Pair index entries with listed files (both sorted by path).
    let mut pairs = Vec::new();
    let mut j = 0;
    for entry in index.iter() {
        while j < listed.len() && listed[j].path.as_str() < entry.path {
            j += 1;
        }
        let found = listed.get(j).filter(|l| l.path == entry.path).copied();
        pairs.push((entry, found));
    }

    let tz_offset = estimate_offset(
        pairs
            .iter()
            .filter_map(|(e, l)| Some((e.size, e.mtime, (*l)?))),
        precision,
    );
    let mut out = Comparison {
        tz_offset,
        ..Comparison::default()
    };
    for (entry, listed) in pairs {
        if !in_scope(entry.path) {
            continue;
        }
        let Some(l) = listed else {
            out.counts.missing += 1;
            continue;
        };
        let size_ok = if listing.exact_sizes {
            l.size == entry.size
        } else {
            approx(l.size).matches(entry.size)
        };
        if !size_ok {
            out.counts.mismatched += 1;
            continue;
        }
        if classes.is_mutable(entry.path) {
            let current = l
                .mtime
                .is_some_and(|m| (m - tz_offset - entry.mtime).abs() < precision);
            if current {
                out.mutable.push(MutableSeen {
                    id: entry.id,
                    size: entry.size,
                    mtime: entry.mtime,
                });
            } else {
                out.counts.mismatched += 1;
                continue;
            }
        } else {
            out.present.insert(entry.id);
        }
        out.counts.files += 1;
        out.counts.bytes += entry.size;
    }
    out.mutable.sort_unstable_by_key(|m| m.id);
    out
}

/// Reconstructs an approximate size from a listing that stored its rounded value.
fn approx(size: u64) -> Size {
    for unit in [1u64 << 40, 1 << 30, 1 << 20, 1 << 10] {
        if size >= unit {
            return Size::Approx(size as f64 / unit as f64, unit);
        }
    }
    Size::Exact(size)
}

/// The whole-hour offset that most files of equal size agree on (at least 10 of them and 90 %),
/// else 0.
fn estimate_offset<'a>(
    pairs: impl Iterator<Item = (u64, i64, &'a super::ListedFile)>,
    precision: i64,
) -> i64 {
    let mut votes: HashMap<i64, usize> = HashMap::new();
    let mut total = 0usize;
    for (size, mtime, l) in pairs {
        let Some(m) = l.mtime else { continue };
        if l.size != size {
            continue;
        }
        total += 1;
        let diff = m - mtime;
        let hours = (diff as f64 / 3600.0).round() as i64;
        if hours.abs() <= 14 && (diff - hours * 3600).abs() < precision {
            *votes.entry(hours * 3600).or_default() += 1;
        }
    }
    match votes.into_iter().max_by_key(|(_, n)| *n) {
        Some((offset, n)) if total >= 10 && n * 10 >= total * 9 => offset,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
