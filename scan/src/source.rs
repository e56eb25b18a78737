//! Source scans: the authoritative index of a project.
//!
//! A local tree is walked (symlinks to files inside the tree are indexed with their target's
//! content; symlinks leading outside, symlinked directories and special files are never
//! followed), and hashed incrementally: a file whose size and mtime are unchanged keeps its
//! previous digests. The serial is a digest of every (path, size, mtime), so it changes
//! exactly when the tree does. [`recheck_mutable`] is the cheap stat pass over mutable
//! metadata that runs every few seconds between full scans.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::{FileIndex, HashKind, PathClasses};
use sha2::{Digest, Sha256};

use super::hash::{self, Digests};
use super::{Limits, ScanError, safe_relative_path};

/// What a source scan produced.
#[derive(Debug)]
pub struct SourceScan {
    /// The new index.
    pub index: FileIndex,
    /// Files hashed this time.
    pub hashed_files: u64,
    /// Bytes hashed this time.
    pub hashed_bytes: u64,
    /// Files whose digests were reused from the previous index.
    pub reused: u64,
    /// Entries left out, with why (outside symlinks, special files, names that are not UTF-8).
    pub skipped: Vec<(String, &'static str)>,
    /// Files modified within [`Limits::settle`]: kept as the previous index had them, or
    /// left out when it had none. A scan a moment later takes them as they are then.
    pub unsettled: Vec<String>,
}

struct Found {
    rel: String,
    path: PathBuf,
    size: u64,
    mtime: i64,
    /// Modified within the settle time.
    recent: bool,
}

/// Scans the local tree at `root`.
pub fn scan_local(
    project: &str,
    root: &Path,
    kinds: &[HashKind],
    previous: Option<&FileIndex>,
    limits: &Limits,
    progress: bool,
) -> Result<SourceScan, ScanError> {
    let io = |what: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |source| ScanError::Io { what, path, source }
    };
    let canonical_root = root
        .canonicalize()
        .map_err(io("cannot open the source tree", root))?;
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![(canonical_root.clone(), String::new(), 0usize)];
    while let Some((dir, rel_dir, depth)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io("cannot list", &dir))?
            .collect::<Result<_, _>>()
            .map_err(io("cannot list", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                skipped.push((
                    format!("{rel_dir}{}", entry.file_name().to_string_lossy()),
                    "name is not UTF-8",
                ));
                continue;
            };
            let rel = format!("{rel_dir}{name}");
            if !safe_relative_path(&rel) || name.contains('\n') {
                skipped.push((rel, "unsafe name"));
                continue;
            }
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(io("cannot stat", &path))?;
            let meta = if meta.file_type().is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(target) if target.starts_with(&canonical_root) => {
                        match std::fs::metadata(&target) {
                            Ok(m) if m.is_file() => m,
                            Ok(_) => {
                                skipped.push((rel, "symlink to a directory (not followed)"));
                                continue;
                            }
                            Err(_) => {
                                skipped.push((rel, "dangling symlink"));
                                continue;
                            }
                        }
                    }
                    Ok(_) => {
                        skipped.push((rel, "symlink leading outside the tree"));
                        continue;
                    }
                    Err(_) => {
                        skipped.push((rel, "dangling symlink"));
                        continue;
                    }
                }
            } else {
                meta
            };
            if meta.is_dir() {
                if depth + 1 > limits.max_depth {
                    return Err(ScanError::Limit {
                        what: "directory levels",
                        limit: limits.max_depth,
                    });
                }
                stack.push((path, format!("{rel}/"), depth + 1));
            } else if meta.is_file() {
                if found.len() >= limits.max_entries {
                    return Err(ScanError::Limit {
                        what: "entries",
                        limit: limits.max_entries,
                    });
                }
                let recent = !limits.settle.is_zero()
                    && meta
                        .modified()
                        .ok()
                        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
                        .is_some_and(|age| age < limits.settle);
                found.push(Found {
                    rel,
                    path,
                    size: meta.len(),
                    mtime: meta.mtime(),
                    recent,
                });
            } else {
                skipped.push((rel, "not a regular file"));
            }
        }
    }
    let mut records = Vec::with_capacity(found.len());
    let mut to_hash = Vec::new();
    let mut reused = 0;
    let mut unsettled = Vec::new();
    for f in found {
        if f.recent {
            // Probably still being written: the version indexed before, if any, stands.
            if let Some(e) = previous.and_then(|p| p.find(&f.rel)) {
                records.push(FileRecord {
                    path: f.rel.clone(),
                    size: e.size,
                    mtime: e.mtime,
                    digests: kinds
                        .iter()
                        .map(|k| e.digest(*k).map(<[u8]>::to_vec))
                        .collect(),
                });
            }
            unsettled.push(f.rel);
            continue;
        }
        let kept = previous
            .and_then(|p| p.find(&f.rel))
            .filter(|e| e.size == f.size && e.mtime == f.mtime)
            .and_then(|e| {
                kinds
                    .iter()
                    .map(|k| e.digest(*k).map(<[u8]>::to_vec))
                    .collect::<Option<Vec<_>>>()
            });
        match kept {
            Some(d) => {
                reused += 1;
                records.push(FileRecord {
                    path: f.rel,
                    size: f.size,
                    mtime: f.mtime,
                    digests: d.into_iter().map(Some).collect(),
                });
            }
            None => to_hash.push(f),
        }
    }
    let total: u64 = to_hash.iter().map(|f| f.size).sum();
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} hashing {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(project.to_owned());
        bar
    });
    let paths: Vec<PathBuf> = to_hash.iter().map(|f| f.path.clone()).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results = hash::hash_many(&paths, kinds, threads, &|bytes| {
        if let Some(b) = &bar {
            b.inc(bytes);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (mut hashed_files, mut hashed_bytes) = (0, 0);
    for (f, result) in to_hash.into_iter().zip(results) {
        match result {
            Ok((size, digests)) => {
                hashed_files += 1;
                hashed_bytes += size;
                // A file that changed while being hashed gets the size that was hashed.
                records.push(FileRecord {
                    path: f.rel,
                    size,
                    mtime: f.mtime,
                    digests,
                });
            }
            Err(e) => {
                return Err(ScanError::Io {
                    what: "cannot read",
                    path: f.path.display().to_string(),
                    source: e,
                });
            }
        }
    }
    let serial = serial_of(&records);
    let index = FileIndex::build(project, &serial, kinds, records, previous);
    Ok(SourceScan {
        index,
        hashed_files,
        hashed_bytes,
        reused,
        skipped,
        unsettled,
    })
}

/// The serial of a set of files: a digest of every (path, size, mtime), in path order.
pub fn serial_of(records: &[FileRecord]) -> String {
    let mut sorted: Vec<&FileRecord> = records.iter().collect();
    sorted.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for r in sorted {
        h.update(r.path.as_bytes());
        h.update([0]);
        h.update(r.size.to_le_bytes());
        h.update(r.mtime.to_le_bytes());
    }
    hash::hex(&h.finalize()[..8])
}

/// Re-stats the mutable metadata files of `index` under `root`; when any changed (or
/// vanished), rehashes those and returns the new index. `None` when nothing changed.
pub fn recheck_mutable(
    root: &Path,
    index: &FileIndex,
    classes: &PathClasses,
) -> Result<Option<FileIndex>, ScanError> {
    let mut changed = false;
    let mut records = Vec::with_capacity(index.len());
    let mut buf = vec![0u8; 1 << 20];
    for e in index.iter() {
        let digests: Digests = index
            .hashes
            .iter()
            .map(|k| e.digest(*k).map(<[u8]>::to_vec))
            .collect();
        if !classes.is_mutable(e.path) {
            records.push(FileRecord {
                path: e.path.to_owned(),
                size: e.size,
                mtime: e.mtime,
                digests,
            });
            continue;
        }
        let path = root.join(e.path);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == e.size && m.mtime() == e.mtime => {
                records.push(FileRecord {
                    path: e.path.to_owned(),
                    size: e.size,
                    mtime: e.mtime,
                    digests,
                });
            }
            Ok(m) if m.is_file() => {
                changed = true;
                let (size, digests) =
                    hash::hash_file(&path, &index.hashes, &mut buf).map_err(|source| {
                        ScanError::Io {
                            what: "cannot read",
                            path: path.display().to_string(),
                            source,
                        }
                    })?;
                records.push(FileRecord {
                    path: e.path.to_owned(),
                    size,
                    mtime: m.mtime(),
                    digests,
                });
            }
            _ => changed = true,
        }
    }
    if !changed {
        return Ok(None);
    }
    let serial = serial_of(&records);
    Ok(Some(FileIndex::build(
        &index.project,
        &serial,
        &index.hashes,
        records,
        Some(index),
    )))
}
