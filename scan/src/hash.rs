//! Hashing files: every requested digest in one pass over the file, 1 MiB at a time, on a
//! bounded number of threads (one buffer each), so memory stays constant whatever the tree.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use md5::Md5;
use mirrorfleet_crds::state::HashKind;
use sha1::Sha1;
use sha2::{Digest, Sha256};

const BUFFER: usize = 1 << 20;

/// Digests of one file, in the order of the kinds asked for.
pub type Digests = Vec<Option<Vec<u8>>>;

/// The outcome of hashing one file: its size as read and its digests.
pub type Hashed = std::io::Result<(u64, Digests)>;

/// Hashes one file; returns its size as read and its digests.
pub fn hash_file(
    path: &std::path::Path,
    kinds: &[HashKind],
    buf: &mut [u8],
) -> std::io::Result<(u64, Digests)> {
    let mut file = File::open(path)?;
    let mut sha256 = kinds.contains(&HashKind::Sha256).then(Sha256::new);
    let mut sha1 = kinds.contains(&HashKind::Sha1).then(Sha1::new);
    let mut md5 = kinds.contains(&HashKind::Md5).then(Md5::new);
    let mut size = 0u64;
    loop {
        let n = file.read(buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        let chunk = &buf[..n];
        if let Some(h) = sha256.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = sha1.as_mut() {
            h.update(chunk);
        }
        if let Some(h) = md5.as_mut() {
            h.update(chunk);
        }
    }
    let mut sha256 = sha256.map(|h| h.finalize().to_vec());
    let mut sha1 = sha1.map(|h| h.finalize().to_vec());
    let mut md5 = md5.map(|h| h.finalize().to_vec());
    let digests = kinds
        .iter()
        .map(|k| match k {
            HashKind::Sha256 => sha256.take(),
            HashKind::Sha1 => sha1.take(),
            HashKind::Md5 => md5.take(),
        })
        .collect();
    Ok((size, digests))
}

/// Hashes `paths` on up to `threads` threads; `progress` is called with the bytes of each file
/// done. Results are in the order of `paths`.
pub fn hash_many(
    paths: &[PathBuf],
    kinds: &[HashKind],
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<std::io::Result<(u64, Digests)>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Hashed>>> = Mutex::new((0..paths.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, 64).min(paths.len().max(1)) {
            scope.spawn(|| {
                let mut buf = vec![0u8; BUFFER];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let r = hash_file(path, kinds, &mut buf);
                    if let Ok((size, _)) = &r {
                        progress(*size);
                    }
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("not hashed"))))
        .collect()
}

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let (size, d) = hash_file(
            &p,
            &[HashKind::Sha256, HashKind::Sha1, HashKind::Md5],
            &mut [0; 2],
        )
        .unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            hex(d[0].as_ref().unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(d[1].as_ref().unwrap()),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(d[2].as_ref().unwrap()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        let many = hash_many(
            &[p.clone(), dir.path().join("missing"), p],
            &[HashKind::Md5],
            2,
            &|_| {},
        );
        assert!(many[0].is_ok() && many[1].is_err() && many[2].is_ok());
    }
}
