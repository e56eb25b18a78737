//! Why this exists: the redirector issue sets a floor of under 2 µs per decision with 200
//! candidate mirrors. Fixed inputs: one project of 100,000 files; 20 or 200 mirrors spread over
//! Europe (a third in the client's country), each holding 95 % of the files (scattered, the
//! worst case for the bitmap lookups); a geolocated client in Paris (and, for 200 mirrors, one
//! in São Paulo, far from all of them); a fixed request path.
//!
//! The rows, and why each is here:
//!
//! - `select/20-mirrors`, `select/200-mirrors`: plain mirrors (no restriction, network or
//!   rule), the common case, which eligibility answers from the hot flags alone.
//! - `select/200-mirrors-far-client`: every mirror in the same (last) tier, so ranking is by
//!   distance alone over all 200.
//! - `select/200-mirrors-restricted`: half the mirrors restricted (country-only — which
//!   excludes the German and Dutch ones for this client — or excluding a country that is not
//!   the client's), so that every other mirror goes through the cold restriction checks.
//! - `select/200-mirrors-networks`: every mirror prefers client networks, a tenth of them the
//!   client's: each mirror's networks are read for the tier, and the best tier is the few that
//!   match.
//! - `select/200-mirrors-region-rule`: a region rule applies to the client (French clients
//!   never go to a third of the mirrors), so that every mirror goes through the rule loop and
//!   no decision takes the common-case shortcut.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mirrorfleet_crds::geo::Continent;
use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::{
    Action, Availability, FileIndex, FleetState, HashKind, MirrorState, ProjectState, RuleState,
};
use mirrorfleet_geo::{ClientGeo, cc, unit_vector};
use mirrorfleet_redirector::select::{Facts, select};
use mirrorfleet_redirector::snapshot::Snapshot;

/// What the mirrors of a world have beyond location and URL.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Nothing.
    Plain,
    /// Every other mirror country-only or excluding Belgium.
    Restricted,
    /// Preferred client networks; every tenth mirror's include the client's.
    Networks,
    /// A rule excluding every third mirror for French clients.
    RegionRule,
}

fn world(mirrors: usize, shape: Shape) -> Snapshot {
    let records: Vec<FileRecord> = (0..100_000)
        .map(|i| FileRecord {
            path: format!("pool/main/{}/pkg{i}.deb", i % 500),
            size: i as u64,
            mtime: 0,
            digests: vec![None],
        })
        .collect();
    let index = Arc::new(FileIndex::build(
        "p",
        "s",
        &[HashKind::Sha256],
        records,
        None,
    ));
    let countries = [("FR", 46.0, 2.0), ("DE", 51.0, 10.0), ("NL", 52.0, 5.0)];
    let mut fleet = FleetState {
        projects: vec![ProjectState {
            name: "p".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut avail = HashMap::new();
    for m in 0..mirrors {
        let (c, lat, lon) = countries[m % 3];
        let name = format!("m{m}");
        let mirror = MirrorState::test(&name)
            .in_country(c)
            .at(lat + (m % 7) as f64 * 0.3, lon + (m % 5) as f64 * 0.3)
            .carrying("p", format!("https://{name}.example/"));
        fleet.mirrors.push(match shape {
            Shape::Plain | Shape::RegionRule => mirror,
            Shape::Restricted => mirror.with(|s| match m % 4 {
                0 => s.restrictions.country_only = true,
                1 => s.restrictions.excluded_countries = vec!["BE".into()],
                _ => {}
            }),
            Shape::Networks if m % 10 == 0 => mirror.with_networks(&["192.0.2.0/24"]),
            Shape::Networks => mirror.with_networks(&[&format!("10.{}.0.0/16", m % 256)]),
        });
        let mut a = Availability {
            mirror: name.clone(),
            project: "p".into(),
            ..Default::default()
        };
        let mut x = m as u64 + 1;
        a.present.extend((0..100_000u32).filter(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 100 < 95
        }));
        avail.insert((name, "p".to_owned()), Arc::new(a));
    }
    if shape == Shape::RegionRule {
        fleet.rules.push(RuleState {
            name: "not-from-france".into(),
            priority: 100,
            countries: vec!["FR".into()],
            continents: vec![],
            asns: vec![],
            networks: vec![],
            action: Action::Exclude,
            mirrors: (0..mirrors).step_by(3).map(|m| format!("m{m}")).collect(),
            weight_factor: None,
            projects: vec![],
        });
    }
    Snapshot::from_parts(
        1,
        &fleet,
        &HashMap::from([("p".to_owned(), index)]),
        &avail,
        &HashMap::new(),
    )
}

fn bench(c: &mut Criterion) {
    let paris = ClientGeo {
        country: cc("FR"),
        continent: Some(Continent::EU),
        point: Some(unit_vector(48.85, 2.35)),
        asn: Some(3215),
    };
    // A client on another continent: every mirror in the same (last) tier, ranked by distance.
    let sao_paulo = ClientGeo {
        country: cc("BR"),
        continent: Some(Continent::SA),
        point: Some(unit_vector(-23.55, -46.63)),
        asn: Some(28573),
    };
    for (n, shape, geo, label) in [
        (20, Shape::Plain, paris, ""),
        (200, Shape::Plain, paris, ""),
        (200, Shape::Plain, sao_paulo, "-far-client"),
        (200, Shape::Restricted, paris, "-restricted"),
        (200, Shape::Networks, paris, "-networks"),
        (200, Shape::RegionRule, paris, "-region-rule"),
    ] {
        let snap = world(n, shape);
        let mut random = 0u64;
        c.bench_function(&format!("select/{n}-mirrors{label}"), |b| {
            b.iter(|| {
                random = random.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let facts = Facts {
                    project: 0,
                    path: "pool/main/42/pkg12042.deb",
                    https_only: false,
                    // 192.0.2.1: in every tenth mirror's networks for `Shape::Networks`.
                    ip: "192.0.2.1"
                        .parse()
                        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                    geo,
                    now: 0,
                    random,
                    sticky: false,
                    explain: false,
                };
                let d = select(black_box(&facts), black_box(&snap));
                assert!(!d.choices.is_empty());
                black_box(d.choices.len())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
