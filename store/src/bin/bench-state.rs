//! Why this exists: the fleet state must stay compact — 1,000,000 files × 100 mirrors well
//! under 1 GiB of Redis — and a redirector must load all of it in under 5 s.
//! `scripts/bench-state` runs `write` then `load` (separate processes, so the reader's RSS is
//! its own) against a redis-server it starts, and prints the figures.
//!
//! Inputs are fixed and named: one project `bench` of N Debian-like paths with sizes, mtimes
//! and SHA-256 digests from a seeded generator; M mirrors, a third complete, a third holding
//! a contiguous 60 % (a sub-tree), a third a scattered 95 % (the worst case for bitmaps).
//!
//! Usage: bench-state write|load --redis URL --files N --mirrors M

use std::time::Instant;

use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::{
    Availability, FileIndex, FleetState, HashKind, MirrorState, ProjectState, ScanCounts,
};
use mirrorfleet_store::{RedisConfig, RedisStore, RedisTarget, StateReader, StateWriter};

struct Args {
    mode: String,
    redis: String,
    files: usize,
    mirrors: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("usage: bench-state write|load --redis URL --files N --mirrors M")?;
    let (mut redis, mut files, mut mirrors) = (None, 1_000_000, 100);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--redis" => redis = Some(value),
            "--files" => {
                files = value
                    .parse()
                    .map_err(|_| format!("--files {value}: not a number"))?
            }
            "--mirrors" => {
                mirrors = value
                    .parse()
                    .map_err(|_| format!("--mirrors {value}: not a number"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        mode,
        redis: redis.ok_or("--redis URL is required")?,
        files,
        mirrors,
    })
}

/// A small, seeded generator (SplitMix64): the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn records(n: usize) -> Vec<FileRecord> {
    let mut rng = Rng(42);
    let arches = ["amd64", "arm64", "i386", "all", "ppc64el", "s390x"];
    (0..n)
        .map(|i| {
            let pkg = i / 6;
            let letter = (b'a' + (pkg % 26) as u8) as char;
            let path = format!(
                "pool/main/{letter}/pkg{pkg}/pkg{pkg}_{}.{}-{}_{}.deb",
                pkg % 9,
                i % 13,
                pkg % 4,
                arches[i % 6]
            );
            let mut digest = vec![0u8; 32];
            for chunk in digest.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            FileRecord {
                path,
                size: rng.next() % 50_000_000,
                mtime: 1_600_000_000 + (rng.next() % 100_000_000) as i64,
                digests: vec![Some(digest)],
            }
        })
        .collect()
}

fn availability(mirror: usize, files: u32) -> Availability {
    let mut present = roaring::RoaringBitmap::new();
    match mirror % 3 {
        0 => present.insert_range(0..files),
        1 => present.insert_range(0..files * 6 / 10),
        _ => {
            let mut rng = Rng(mirror as u64);
            present.extend((0..files).filter(|_| rng.next() % 100 < 95));
            present.len()
        }
    };
    Availability {
        mirror: format!("mirror-{mirror:03}"),
        project: "bench".into(),
        serial: "bench-1".into(),
        scanned_at: 1_700_000_000,
        last_sync: None,
        counts: ScanCounts {
            files: present.len(),
            ..ScanCounts::default()
        },
        present,
        mutable: vec![],
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let mut config = RedisConfig::new(RedisTarget::Url(args.redis.clone()));
    config.response_timeout = std::time::Duration::from_secs(60);
    let store = RedisStore::connect(config).await?;
    match args.mode.as_str() {
        "write" => {
            let records = records(args.files);
            let started = Instant::now();
            let index = FileIndex::build("bench", "bench-1", &[HashKind::Sha256], records, None);
            let writer = StateWriter::new(store);
            let fleet = FleetState {
                projects: vec![ProjectState {
                    name: "bench".into(),
                    hashes: vec![HashKind::Sha256],
                    ..Default::default()
                }],
                mirrors: (0..args.mirrors)
                    .map(|m| MirrorState {
                        name: format!("mirror-{m:03}"),
                        weight: 100,
                        ipv4: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            writer.write_fleet(&fleet).await?;
            writer.write_index(&index, 1_700_000_000).await?;
            for m in 0..args.mirrors {
                writer
                    .write_availability(&availability(m, index.len() as u32))
                    .await?;
            }
            println!("write_s={:.2}", started.elapsed().as_secs_f64());
        }
        "load" => {
            let started = Instant::now();
            let (state, report) = StateReader::new(store).load().await?;
            let load_s = started.elapsed().as_secs_f64();
            if let Some(e) = report.errors.first() {
                return Err(mirrorfleet_runtime::error_chain(e).into());
            }
            let files = state.indexes.get("bench").map_or(0, |i| i.len());
            if files != args.files || state.availability.len() != args.mirrors {
                return Err(format!(
                    "loaded {files} files and {} mirrors, expected {} and {}",
                    state.availability.len(),
                    args.files,
                    args.mirrors
                )
                .into());
            }
            println!("load_s={load_s:.2} reader_rss_bytes={}", rss_bytes());
        }
        other => return Err(format!("unknown mode {other}: use write or load").into()),
    }
    Ok(())
}
