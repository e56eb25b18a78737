//! Download counters. Redirectors count in memory and flush batches; the store adds them to
//! per-day hashes (kept [`DAY_RETENTION_DAYS`] days) and all-time totals:
//!
//! | key | fields |
//! | --- | --- |
//! | `mf:v1:stats:day:<YYYY-MM-DD>:mirror` | mirror (or `fallback`, `fallback-unindexed`) → redirects |
//! | `mf:v1:stats:day:<YYYY-MM-DD>:bytes` | mirror → bytes of the files redirected |
//! | `mf:v1:stats:day:<YYYY-MM-DD>:country` | country (or `--`) → redirects |
//! | `mf:v1:stats:day:<YYYY-MM-DD>:file:<project>` | path → redirects |
//! | `mf:v1:stats:total` | `redirects`, `bytes` |

use std::collections::{BTreeMap, HashMap};

use super::PREFIX;

/// Days a per-day hash is kept.
pub const DAY_RETENTION_DAYS: u64 = 400;

/// The all-time totals key.
pub fn total_key() -> String {
    format!("{PREFIX}stats:total")
}

/// A per-day key; `dimension` is `mirror`, `bytes`, `country` or `file:<project>`.
pub fn day_key(day: &str, dimension: &str) -> String {
    format!("{PREFIX}stats:day:{day}:{dimension}")
}

/// The UTC day of a Unix time, as `YYYY-MM-DD`.
pub fn day_string(unix_secs: i64) -> String {
    let (y, m, d) = civil(unix_secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Civil date of a day number (days since 1970-01-01).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day (`YYYY-MM-DD`) of a per-day key, `None` for other keys.
pub fn day_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix("stats:day:")?;
    rest.get(..10)
        .filter(|d| d.as_bytes().get(4) == Some(&b'-'))
}

/// The oldest day whose per-day keys are kept at `now` (Unix seconds): keys of earlier days
/// are dropped by stores that do not expire keys themselves. ISO days compare as strings.
pub fn oldest_day_kept(now: i64) -> String {
    day_string(now - (DAY_RETENTION_DAYS as i64 - 1) * 86_400)
}

/// Counters to add, grouped by key then field. Fields are hashed, not ordered: a flush adds
/// tens of thousands of file paths to one key, and a hash map takes them several times
/// faster than an ordered map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsBatch {
    /// key → field → increment.
    pub counters: BTreeMap<String, HashMap<String, u64>>,
}

impl StatsBatch {
    /// Counts one redirect of `bytes` bytes of `path` in `project` to `mirror`, for a client in
    /// `country`, on `day` (`YYYY-MM-DD`, UTC).
    pub fn count(
        &mut self,
        day: &str,
        project: &str,
        path: &str,
        mirror: &str,
        country: Option<&str>,
        bytes: u64,
    ) {
        self.add(day_key(day, "mirror"), mirror, 1);
        self.add(day_key(day, "bytes"), mirror, bytes);
        self.add(day_key(day, "country"), country.unwrap_or("--"), 1);
        self.add(day_key(day, &format!("file:{project}")), path, 1);
        self.add(total_key(), "redirects", 1);
        self.add(total_key(), "bytes", bytes);
    }

    /// Adds `n` to `field` of `key`.
    pub fn add(&mut self, key: String, field: &str, n: u64) {
        self.add_to(&key, field, n);
    }

    /// Adds `n` to `field` of `key`, allocating only for a key or field not seen yet.
    pub fn add_to(&mut self, key: &str, field: &str, n: u64) {
        let fields = match self.counters.get_mut(key) {
            Some(f) => f,
            None => self.counters.entry(key.to_owned()).or_default(),
        };
        match fields.get_mut(field) {
            Some(v) => *v = v.saturating_add(n),
            None => {
                fields.insert(field.to_owned(), n);
            }
        }
    }

    /// Whether there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Merges `other` into this batch (used to keep a failed flush for the next try).
    pub fn merge(&mut self, other: StatsBatch) {
        for (key, fields) in other.counters {
            for (field, n) in fields {
                self.add_to(&key, &field, n);
            }
        }
    }

    /// Number of (key, field) counters.
    pub fn len(&self) -> usize {
        self.counters.values().map(|f| f.len()).sum()
    }
}
