//! Why this exists: the scanning issue sets two floors — hashing a source tree at ≥ 80 % of
//! `sha256sum`'s speed on the same files, and parsing a 1,000,000-entry rsync listing in
//! under 3 s. `scripts/bench-scan` runs this binary, which measures both in one run.
//!
//! Fixed inputs: a generated tree of `--bytes` bytes in 8 MiB files (pseudo-random content,
//! page cache warmed before either side is timed), hashed with SHA-256 by the source scanner
//! (all cores) and by one `sha256sum` process over the same files; and a generated listing of
//! `--entries` Debian-like lines parsed by `rsync::parse_listing`.
//!
//! Usage: bench-scan [--bytes N] [--entries N]

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use mirrorfleet_crds::state::HashKind;
use mirrorfleet_scan::{Limits, rsync, source};

fn arg(name: &str, default: u64) -> Result<u64, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name} needs a number")),
        None => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = arg("--bytes", 1 << 30)?;
    let entries = arg("--entries", 1_000_000)?;
    let file_size: u64 = 8 << 20;
    let files = bytes.div_ceil(file_size).max(1);
    let dir = tempfile::tempdir()?;
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut block = vec![0u8; file_size as usize];
    let mut paths = Vec::new();
    for i in 0..files {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let p = dir.path().join(format!("file-{i:04}.bin"));
        std::fs::File::create(&p)?.write_all(&block)?;
        paths.push(p);
    }
    // Warm the page cache so both sides read from memory.
    for p in &paths {
        std::hint::black_box(std::fs::read(p)?);
    }
    let total = files * file_size;

    let started = Instant::now();
    let scan = source::scan_local(
        "bench",
        dir.path(),
        &[HashKind::Sha256],
        None,
        &Limits::default(),
        false,
    )?;
    let ours = started.elapsed().as_secs_f64();
    assert_eq!(scan.index.len() as u64, files);

    let started = Instant::now();
    let status = Command::new("sha256sum")
        .args(&paths)
        .stdout(std::process::Stdio::null())
        .status()?;
    let theirs = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err("sha256sum failed".into());
    }
    let ratio = theirs / ours;
    eprintln!(
        "hashing {} MiB: source scanner {:.2} s ({:.0} MiB/s), sha256sum {:.2} s ({:.0} MiB/s)",
        total >> 20,
        ours,
        (total >> 20) as f64 / ours,
        theirs,
        (total >> 20) as f64 / theirs
    );

    let arches = ["amd64", "arm64", "i386", "all"];
    let mut listing = String::with_capacity(entries as usize * 90);
    for i in 0..entries {
        let pkg = i / 4;
        listing.push_str(&format!(
            "-rw-r--r--     {:>12} 2026/11/{:02} 01:02:03 pool/main/{}/pkg{pkg}/pkg {pkg}_{}.{}_{}.deb\n",
            format_size(i * 7919 % 90_000_000),
            1 + i % 28,
            (b'a' + (pkg % 26) as u8) as char,
            pkg % 9,
            i % 13,
            arches[(i % 4) as usize]
        ));
    }
    let started = Instant::now();
    let parsed = rsync::parse_listing(&listing, &Limits::default())?;
    let parse_s = started.elapsed().as_secs_f64();
    assert_eq!(parsed.files.len() as u64, entries);
    eprintln!(
        "parsing a {entries}-entry rsync listing ({} MiB): {parse_s:.2} s",
        listing.len() >> 20
    );

    println!(
        "bench-scan hash_bytes={total} hash_ratio_vs_sha256sum={ratio:.2} listing_entries={entries} listing_parse_s={parse_s:.2}"
    );
    Ok(())
}

/// rsync's size column: thousands separated by commas.
fn format_size(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
