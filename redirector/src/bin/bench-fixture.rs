//! Writes a benchmark fleet into an embedded store directory: one project `bench` (prefix
//! `/bench/`) of N files named `pool/main/<i % 500>/pkg<i>.deb`, and M mirrors in three
//! countries, each holding every file. Used by `scripts/bench-redirect`.
//!
//! Usage: bench-fixture DIR --files N --mirrors M
//!
//! Its mirrors are written out here rather than with `MirrorState::test(…)`: those builders
//! sit behind mirrorfleet-crds' `fixtures` feature, which only the redirector's
//! dev-dependencies turn on. A binary sees normal dependencies only, and enabling the feature
//! there would compile the fixtures into the production redirector (and, by feature
//! unification, into the `mirrorfleet` binary that embeds it) for the sake of one literal.

use mirrorfleet_crds::geo::Continent;
use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::{
    Availability, FileIndex, FleetState, HashKind, LocationState, MirrorProjectState, MirrorState,
    ProjectState,
};
use mirrorfleet_store::{EmbeddedStore, StateWriter};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: bench-fixture DIR --files N --mirrors M")?;
    let num = |flag: &str, default: usize| -> Result<usize, String> {
        match args.iter().position(|a| a == flag) {
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{flag} needs a number")),
            None => Ok(default),
        }
    };
    let (files, mirrors) = (num("--files", 100_000)?, num("--mirrors", 50)?);
    let store = EmbeddedStore::open(std::path::Path::new(dir))?;
    let writer = StateWriter::new(store);
    let records = (0..files)
        .map(|i| FileRecord {
            path: format!("pool/main/{}/pkg{i}.deb", i % 500),
            size: i as u64 * 7 + 1,
            mtime: 1_700_000_000,
            digests: vec![Some(vec![(i % 251) as u8; 32])],
        })
        .collect();
    let index = FileIndex::build("bench", "bench-1", &[HashKind::Sha256], records, None);
    let countries = [("FR", 46.0, 2.0), ("DE", 51.0, 10.0), ("US", 39.0, -77.0)];
    let mut fleet = FleetState {
        projects: vec![ProjectState {
            name: "bench".into(),
            path_prefix: Some("/bench/".into()),
            hashes: vec![HashKind::Sha256],
            ..Default::default()
        }],
        ..Default::default()
    };
    for m in 0..mirrors {
        let (cc, lat, lon) = countries[m % 3];
        let name = format!("mirror-{m:03}");
        fleet.mirrors.push(MirrorState {
            name: name.clone(),
            sponsor: "bench".into(),
            enabled: true,
            weight: 100,
            ipv4: true,
            ipv6: true,
            location: LocationState {
                country: Some(cc.into()),
                continent: Some(if cc == "US" {
                    Continent::NA
                } else {
                    Continent::EU
                }),
                latitude: Some(lat + (m % 7) as f64 * 0.4),
                longitude: Some(lon + (m % 5) as f64 * 0.4),
            },
            projects: vec![MirrorProjectState {
                project: "bench".into(),
                https: Some(format!("https://{name}.example/bench/")),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut a = Availability {
            mirror: name,
            project: "bench".into(),
            ..Default::default()
        };
        a.present.insert_range(0..files as u32);
        writer.write_availability(&a).await?;
    }
    writer.write_fleet(&fleet).await?;
    writer.write_index(&index, 1_700_000_000).await?;
    Ok(())
}
