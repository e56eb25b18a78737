//! Selection tables: each test names the rule it checks.

use std::collections::HashMap;
use std::sync::Arc;

use mirrorfleet_crds::geo::Continent;
use mirrorfleet_crds::state::index::FileRecord;
use mirrorfleet_crds::state::{
    Action, Availability, FallbackState, Family, FileIndex, FleetState, HashKind, HealthState,
    MirrorHealth, MirrorState, MutableSeen, ProbeScheme, ProjectState, RuleState,
};

use super::*;
use mirrorfleet_geo::{cc, unit_vector};

use crate::snapshot::Snapshot;

mod eligible;

const T: i64 = 1_795_309_320;

/// A mirror of the test project `p`, over HTTP and HTTPS.
fn mirror(name: &str) -> MirrorState {
    MirrorState::test(name)
        .carrying("p", format!("https://{name}.example/p/"))
        .carrying("p", format!("http://{name}.example/p/"))
}

struct World {
    fleet: FleetState,
    index: Arc<FileIndex>,
    avail: HashMap<(String, String), Arc<Availability>>,
    health: HashMap<String, Arc<MirrorHealth>>,
}

impl World {
    fn new(mirrors: Vec<MirrorState>) -> World {
        let records = vec![
            FileRecord {
                path: "pool/a.deb".into(),
                size: 10,
                mtime: T,
                digests: vec![None],
            },
            FileRecord {
                path: "pool/b.deb".into(),
                size: 20,
                mtime: T,
                digests: vec![None],
            },
            FileRecord {
                path: "dists/stable/InRelease".into(),
                size: 5,
                mtime: T + 60,
                digests: vec![None],
            },
        ];
        let index = Arc::new(FileIndex::build(
            "p",
            "s1",
            &[HashKind::Sha256],
            records,
            None,
        ));
        let project = ProjectState {
            name: "p".into(),
            mutable: vec!["dists/*/InRelease".into()],
            fallbacks: vec![
                FallbackState {
                    url: "http://origin-us.example/p/".into(),
                    country: Some("US".into()),
                    continent: Some(Continent::NA),
                },
                FallbackState {
                    url: "https://origin-de.example/p/".into(),
                    country: Some("DE".into()),
                    continent: Some(Continent::EU),
                },
            ],
            ..Default::default()
        };
        let mut w = World {
            fleet: FleetState {
                projects: vec![project],
                mirrors: vec![],
                ..Default::default()
            },
            index,
            avail: HashMap::new(),
            health: HashMap::new(),
        };
        for m in mirrors {
            w.holds(
                &m.name,
                &["pool/a.deb", "pool/b.deb", "dists/stable/InRelease"],
            );
            w.fleet.mirrors.push(m);
        }
        w
    }

    fn holds(&mut self, mirror: &str, paths: &[&str]) -> &mut Self {
        let mut a = Availability {
            mirror: mirror.into(),
            project: "p".into(),
            ..Default::default()
        };
        for p in paths {
            let e = self.index.find(p).unwrap();
            if p.ends_with("InRelease") {
                a.mutable.push(MutableSeen {
                    id: e.id,
                    size: e.size,
                    mtime: e.mtime,
                });
            } else {
                a.present.insert(e.id);
            }
        }
        self.avail.insert((mirror.into(), "p".into()), Arc::new(a));
        self
    }

    fn down(&mut self, mirror: &str, scheme: ProbeScheme, family: Family) -> &mut Self {
        let entry = HealthState {
            scheme,
            family,
            up: false,
            reason: "ConnectRefused".into(),
            since: 0,
        };
        let h = self.health.entry(mirror.into()).or_insert_with(|| {
            Arc::new(MirrorHealth {
                mirror: mirror.into(),
                entries: vec![],
            })
        });
        Arc::make_mut(h).entries.push(entry);
        self
    }

    fn rule(
        &mut self,
        action: Action,
        mirrors: &[&str],
        f: impl FnOnce(&mut RuleState),
    ) -> &mut Self {
        let mut r = RuleState {
            name: format!("rule-{}", self.fleet.rules.len()),
            priority: 100,
            countries: vec![],
            continents: vec![],
            asns: vec![],
            networks: vec![],
            action,
            mirrors: mirrors.iter().map(|m| (*m).into()).collect(),
            weight_factor: None,
            projects: vec![],
        };
        f(&mut r);
        self.fleet.rules.push(r);
        self
    }

    fn snapshot(&self) -> Snapshot {
        let indexes = HashMap::from([("p".to_owned(), self.index.clone())]);
        Snapshot::from_parts(1, &self.fleet, &indexes, &self.avail, &self.health)
    }
}

fn paris() -> ClientGeo {
    ClientGeo {
        country: cc("FR"),
        continent: Some(Continent::EU),
        point: Some(unit_vector(48.85, 2.35)),
        asn: Some(3215),
    }
}

fn facts<'a>(path: &'a str, geo: ClientGeo) -> Facts<'a> {
    Facts {
        project: 0,
        path,
        https_only: false,
        ip: "192.0.2.10".parse().unwrap(),
        geo,
        now: T,
        random: 42,
        sticky: false,
        explain: false,
    }
}

fn chosen(snap: &Snapshot, f: &Facts<'_>) -> Option<String> {
    let d = select(f, snap);
    (d.outcome == Outcome::Mirror).then(|| snap.mirrors[d.choices[0].mirror].state.name.clone())
}

fn reason_for(snap: &Snapshot, f: &Facts<'_>, mirror: &str) -> Option<Reason> {
    let f = Facts {
        explain: true,
        ..*f
    };
    select(&f, snap)
        .excluded
        .into_iter()
        .find(|(m, _)| snap.mirrors[*m].state.name == mirror)
        .map(|(_, r)| r)
}

fn berlin() -> MirrorState {
    mirror("berlin").in_country("DE").at(52.52, 13.40)
}

fn lyon() -> MirrorState {
    mirror("lyon").in_country("FR").at(45.76, 4.84)
}

#[test]
fn a_file_not_in_the_index_goes_to_the_nearest_fallback_or_is_404() {
    let mut w = World::new(vec![lyon()]);
    let snap = w.snapshot();
    let us = ClientGeo {
        country: cc("US"),
        continent: Some(Continent::NA),
        point: None,
        asn: None,
    };
    let https = |f: Facts<'static>| Facts {
        https_only: true,
        ..f
    };
    #[rustfmt::skip]
    let rows: [(&str, Facts<'_>, Outcome); 9] = [
        ("the index lags the origin: the European client's origin",
            facts("pool/new.deb", paris()), Outcome::Unindexed(1)),
        ("the American client's origin", facts("pool/new.deb", us), Outcome::Unindexed(0)),
        ("never downgraded: the US origin is HTTP only",
            https(facts("pool/new.deb", us)), Outcome::Unindexed(1)),
        ("a new directory too", facts("pool/new/", us), Outcome::Unindexed(0)),
        ("a Windows separator is not sent", facts("pool/..\\x", paris()), Outcome::NotFound),
        ("a Java parent is not sent", facts("pool/..;/x", paris()), Outcome::NotFound),
        ("a Windows parent is not sent", facts("pool/.../x", paris()), Outcome::NotFound),
        ("what a server decoding twice reads as a parent is not sent",
            facts("pool/%2e%2e/x", paris()), Outcome::NotFound),
        ("an indexed file still goes to its mirror", facts("pool/a.deb", paris()),
            Outcome::Mirror),
    ];
    for (rule, f, want) in rows {
        let d = select(&f, &snap);
        assert_eq!(d.outcome, want, "{rule}");
        if want != Outcome::Mirror {
            assert!(
                d.file.is_none() && d.file_pos.is_none() && d.choices.is_empty(),
                "{rule}"
            );
        }
    }
    w.fleet.projects[0].fallbacks.remove(1);
    assert_eq!(
        select(&https(facts("pool/new.deb", us)), &w.snapshot()).outcome,
        Outcome::NotFound,
        "no fallback for an HTTPS client: 404, not a downgrade"
    );
    w.fleet.projects[0].fallbacks.clear();
    assert_eq!(
        select(&facts("pool/new.deb", paris()), &w.snapshot()).outcome,
        Outcome::NotFound,
        "no fallback at all: 404"
    );
}

#[test]
fn no_index_yet_goes_to_the_fallback() {
    let w = World::new(vec![lyon()]);
    let snap = Snapshot::from_parts(1, &w.fleet, &HashMap::new(), &w.avail, &w.health);
    let d = select(&facts("pool/a.deb", paris()), &snap);
    assert_eq!(
        d.outcome,
        Outcome::Fallback(1),
        "a European client gets the European origin"
    );
}

#[test]
fn same_country_beats_distance() {
    // Berlin is nearer to Strasbourg than Lyon is, but Lyon is in the client's country.
    let strasbourg = ClientGeo {
        point: Some(unit_vector(48.58, 7.75)),
        ..paris()
    };
    let snap = World::new(vec![berlin(), lyon()]).snapshot();
    assert_eq!(
        chosen(&snap, &facts("pool/a.deb", strasbourg)).as_deref(),
        Some("lyon")
    );
}

#[test]
fn network_and_asn_beat_country() {
    let isp = berlin().with_asns(&[3215]);
    let snap = World::new(vec![isp, lyon()]).snapshot();
    assert_eq!(
        chosen(&snap, &facts("pool/a.deb", paris())).as_deref(),
        Some("berlin")
    );
    let net = berlin().with_networks(&["192.0.2.0/24"]);
    let snap = World::new(vec![net, lyon()]).snapshot();
    assert_eq!(
        chosen(
            &snap,
            &facts(
                "pool/a.deb",
                ClientGeo {
                    asn: None,
                    ..paris()
                }
            )
        )
        .as_deref(),
        Some("berlin")
    );
}

#[test]
fn exclusions_name_their_reason() {
    let mut w = World::new(vec![
        lyon().with(|m| m.enabled = false),
        mirror("maint")
            .in_country("FR")
            .at(45.0, 4.0)
            .with(|m| m.maintenance = vec![(T - 10, T + 10)]),
        mirror("v6only")
            .in_country("FR")
            .at(45.0, 4.0)
            .with(|m| m.ipv4 = false),
        mirror("partial").in_country("FR").at(45.0, 4.0),
        mirror("unscanned").in_country("FR").at(45.0, 4.0),
        mirror("subtree")
            .in_country("FR")
            .at(45.0, 4.0)
            .with(|m| m.projects[0].paths = vec!["dists/".into()]),
        berlin(),
    ]);
    w.holds("partial", &["pool/b.deb"]);
    w.avail.remove(&("unscanned".into(), "p".into()));
    let snap = w.snapshot();
    let f = facts("pool/a.deb", paris());
    assert_eq!(reason_for(&snap, &f, "lyon"), Some(Reason::Disabled));
    assert_eq!(reason_for(&snap, &f, "maint"), Some(Reason::Maintenance));
    assert_eq!(reason_for(&snap, &f, "v6only"), Some(Reason::Family));
    assert_eq!(reason_for(&snap, &f, "partial"), Some(Reason::Missing));
    assert_eq!(reason_for(&snap, &f, "unscanned"), Some(Reason::NotScanned));
    assert_eq!(reason_for(&snap, &f, "subtree"), Some(Reason::NotCarried));
    assert_eq!(chosen(&snap, &f).as_deref(), Some("berlin"));
}

#[test]
fn mutable_metadata_only_from_mirrors_proven_current() {
    let mut w = World::new(vec![lyon(), berlin()]);
    w.holds("lyon", &["pool/a.deb"]); // lyon's InRelease is outdated
    let snap = w.snapshot();
    let f = facts("dists/stable/InRelease", paris());
    assert_eq!(reason_for(&snap, &f, "lyon"), Some(Reason::Outdated));
    assert_eq!(chosen(&snap, &f).as_deref(), Some("berlin"));
    w.holds("berlin", &["pool/a.deb"]);
    let snap = w.snapshot();
    assert_eq!(
        select(&f, &snap).outcome,
        Outcome::Fallback(1),
        "nobody holds the current metadata: the origin"
    );
}

#[test]
fn https_is_never_downgraded() {
    let snap = World::new(vec![
        MirrorState::test("lyon")
            .in_country("FR")
            .at(45.76, 4.84)
            .carrying("p", "http://lyon.example/p/"),
        berlin(),
    ])
    .snapshot();
    let mut f = facts("pool/a.deb", paris());
    f.https_only = true;
    assert_eq!(reason_for(&snap, &f, "lyon"), Some(Reason::NoScheme));
    let d = select(&Facts { explain: true, ..f }, &snap);
    assert!(d.choices.iter().all(|c| c.https));
    f.https_only = false;
    let d = select(&f, &snap);
    assert_eq!(
        snap.mirrors[d.choices[0].mirror].state.name, "lyon",
        "a plain-HTTP client may use an http-only mirror"
    );
    assert!(!d.choices[0].https);
    let snap = World::new(vec![lyon()]).snapshot();
    assert!(
        select(&f, &snap).choices[0].https,
        "HTTPS is preferred when both are up"
    );
}

#[test]
fn health_is_per_scheme_and_family() {
    let mut w = World::new(vec![lyon(), berlin()]);
    w.down("lyon", ProbeScheme::Https, Family::Ipv4)
        .down("lyon", ProbeScheme::Http, Family::Ipv4);
    let snap = w.snapshot();
    let f = facts("pool/a.deb", paris());
    assert_eq!(
        reason_for(&snap, &f, "lyon"),
        Some(Reason::Down("ConnectRefused".into()))
    );
    let mut v6 = f;
    v6.ip = "2001:db8::1".parse().unwrap();
    assert_eq!(
        chosen(&snap, &v6).as_deref(),
        Some("lyon"),
        "still up over IPv6"
    );
    w.down("lyon", ProbeScheme::Https, Family::Ipv6);
    let snap = w.snapshot();
    let d = select(&v6, &snap);
    assert_eq!(snap.mirrors[d.choices[0].mirror].state.name, "lyon");
    assert!(
        !d.choices[0].https,
        "HTTPS down over IPv6: plain HTTP for a plain-HTTP client"
    );
}

#[test]
fn restrictions() {
    let only_de = berlin().with(|m| m.restrictions.country_only = true);
    let only_eu = mirror("eu")
        .in_country("DE")
        .at(50.0, 8.0)
        .with(|m| m.restrictions.continent_only = true);
    let only_as = mirror("isp").in_country("FR").at(48.0, 2.0).with(|m| {
        m.restrictions.as_only = true;
        m.asns = vec![64500];
    });
    let only_net = mirror("net").in_country("FR").at(48.0, 2.0).with(|m| {
        m.restrictions.networks_only = true;
        m.networks = vec!["198.51.100.0/24".into()];
    });
    let no_fr = mirror("nofr")
        .in_country("BE")
        .at(50.8, 4.3)
        .with(|m| m.restrictions.excluded_countries = vec!["FR".into()]);
    let snap = World::new(vec![
        only_de,
        only_eu,
        only_as,
        only_net,
        no_fr,
        mirror("far").in_country("JP").at(35.0, 139.0),
    ])
    .snapshot();
    let f = facts("pool/a.deb", paris());
    assert_eq!(reason_for(&snap, &f, "berlin"), Some(Reason::CountryOnly));
    assert_eq!(
        reason_for(&snap, &f, "eu"),
        None,
        "a French client is in Europe"
    );
    assert_eq!(reason_for(&snap, &f, "isp"), Some(Reason::AsOnly));
    assert_eq!(reason_for(&snap, &f, "net"), Some(Reason::NetworksOnly));
    assert_eq!(reason_for(&snap, &f, "nofr"), Some(Reason::ExcludedCountry));
    let tokyo = ClientGeo {
        country: cc("JP"),
        continent: Some(Continent::AS),
        point: Some(unit_vector(35.6, 139.7)),
        asn: Some(64500),
    };
    let f = facts("pool/a.deb", tokyo);
    assert_eq!(reason_for(&snap, &f, "eu"), Some(Reason::ContinentOnly));
    assert_eq!(reason_for(&snap, &f, "isp"), None, "the ISP's own AS");
    let nowhere = facts("pool/a.deb", ClientGeo::default());
    assert_eq!(
        reason_for(&snap, &nowhere, "eu"),
        Some(Reason::ContinentOnly),
        "no geolocation: restricted mirrors are out"
    );
}

#[test]
fn region_rules() {
    let mut w = World::new(vec![
        lyon(),
        berlin(),
        mirror("tokyo").in_country("JP").at(35.0, 139.0),
    ]);
    w.rule(Action::Prefer, &["tokyo"], |r| {
        r.countries = vec!["FR".into()]
    });
    let snap = w.snapshot();
    assert_eq!(
        chosen(&snap, &facts("pool/a.deb", paris())).as_deref(),
        Some("tokyo"),
        "Prefer ranks first"
    );
    let mut w = World::new(vec![lyon(), berlin()]);
    w.rule(Action::Exclude, &["lyon"], |r| {
        r.continents = vec![Continent::EU]
    });
    let snap = w.snapshot();
    let f = facts("pool/a.deb", paris());
    assert_eq!(
        reason_for(&snap, &f, "lyon"),
        Some(Reason::Rule("rule-0".into()))
    );
    let mut w = World::new(vec![lyon(), berlin()]);
    w.rule(Action::Only, &["berlin"], |r| r.asns = vec![3215]);
    assert_eq!(chosen(&w.snapshot(), &f).as_deref(), Some("berlin"), "Only");
    let mut w = World::new(vec![lyon(), berlin()]);
    w.rule(Action::Only, &["berlin"], |r| r.asns = vec![1]);
    assert_eq!(
        chosen(&w.snapshot(), &f).as_deref(),
        Some("lyon"),
        "a rule for other clients does nothing"
    );
    let mut w = World::new(vec![lyon(), berlin()]);
    w.rule(Action::Only, &["berlin"], |r| {
        r.projects = vec!["other".into()]
    });
    assert_eq!(
        chosen(&w.snapshot(), &f).as_deref(),
        Some("lyon"),
        "a rule for another project does nothing"
    );
}

/// Draws `n` decisions and returns how often each mirror was chosen.
fn spread(snap: &Snapshot, f: Facts<'_>, n: u64) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let d = select(
            &Facts {
                random: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ..f
            },
            snap,
        );
        *counts
            .entry(snap.mirrors[d.choices[0].mirror].state.name.clone())
            .or_default() += 1;
    }
    counts
}

#[test]
fn load_spreads_by_weight_times_capacity_and_ignores_far_mirrors() {
    // Two mirrors 100 and 120 km from the client (Mirrorbits would send everything to the
    // first): the spread follows weight × capacity, 1:3.
    let client = ClientGeo {
        country: cc("DE"),
        continent: Some(Continent::EU),
        point: Some(unit_vector(50.0, 8.0)),
        asn: None,
    };
    let a = mirror("a").in_country("DE").at(50.9, 8.0).bandwidth(1000);
    let b = mirror("b").in_country("DE").at(51.08, 8.0).bandwidth(3000);
    let near = World::new(vec![a.clone(), b.clone()]).snapshot();
    let n = 20_000;
    let c = spread(&near, facts("pool/a.deb", client), n);
    let share_b = c["b"] as f64 / n as f64;
    assert!((share_b - 0.75).abs() < 0.02, "b gets 3/4: {c:?}");
    // A far-away mirror in the same country joins the list but not the spread.
    let far = mirror("far").in_country("DE").at(54.0, 10.0);
    let with_far = World::new(vec![a, b, far]).snapshot();
    let c2 = spread(&with_far, facts("pool/a.deb", client), n);
    assert_eq!(c2.get("far"), None, "far mirrors get no share");
    assert!(
        (c2["b"] as f64 / n as f64 - share_b).abs() < 0.02,
        "the spread does not move: {c2:?}"
    );
}

#[test]
fn without_geolocation_every_eligible_mirror_shares() {
    let snap = World::new(vec![
        lyon(),
        berlin(),
        mirror("tokyo").in_country("JP").at(35.0, 139.0),
    ])
    .snapshot();
    let c = spread(&snap, facts("pool/a.deb", ClientGeo::default()), 3000);
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(c.values().all(|n| *n > 800), "{c:?}");
}

#[test]
fn stickiness_keeps_a_client_network_on_one_mirror() {
    let client = ClientGeo {
        point: None,
        ..paris()
    };
    let snap = World::new(vec![
        lyon(),
        mirror("lyon2").in_country("FR").at(45.76, 4.84),
        mirror("lyon3").in_country("FR").at(45.76, 4.84),
    ])
    .snapshot();
    let mut f = facts("pool/a.deb", client);
    f.sticky = true;
    let first = chosen(&snap, &f);
    for r in 0..50 {
        let g = Facts {
            random: r,
            ip: format!("192.0.2.{}", r + 1).parse().unwrap(),
            ..f
        };
        assert_eq!(chosen(&snap, &g), first, "same /24, same mirror");
    }
    let mut seen = std::collections::HashSet::new();
    for n in 0..60u8 {
        let g = Facts {
            ip: format!("198.51.{n}.7").parse().unwrap(),
            ..f
        };
        seen.insert(chosen(&snap, &g));
    }
    assert_eq!(seen.len(), 3, "different networks spread over the mirrors");
}

#[test]
fn fallbacks_nearest_first_and_never_downgraded() {
    let mut w = World::new(vec![lyon()]);
    w.holds("lyon", &[]);
    let snap = w.snapshot();
    let us = ClientGeo {
        country: cc("US"),
        continent: Some(Continent::NA),
        point: None,
        asn: None,
    };
    assert_eq!(
        select(&facts("pool/a.deb", us), &snap).outcome,
        Outcome::Fallback(0)
    );
    let mut f = facts("pool/a.deb", us);
    f.https_only = true;
    assert_eq!(
        select(&f, &snap).outcome,
        Outcome::Fallback(1),
        "the US origin is http only"
    );
    w.fleet.projects[0].fallbacks.clear();
    assert_eq!(
        select(&facts("pool/a.deb", us), &w.snapshot()).outcome,
        Outcome::Unavailable
    );
}

#[test]
fn nearby_limit_matches_the_trigonometric_definition() {
    for i in 0..=2000 {
        let dot0 = -1.0 + f64::from(i) / 1000.0;
        let theta = dot0.acos();
        let want = (theta * 1.5 + 100.0 / 6371.0)
            .min(std::f64::consts::PI)
            .cos();
        let got = super::rank::nearby_limit(dot0);
        assert!((got - want).abs() < 1e-9, "dot0={dot0}: {got} vs {want}");
    }
}

#[test]
fn nearby_mirrors_without_the_file_leave_the_spread_to_those_with_it() {
    // Four mirrors in one city, weights 1:1:2:4; "b" and "d" lack pool/b.deb. Availability is
    // checked only for the drawn mirror (and redrawn when it lacks the file), which must give
    // the same spread as drawing among the holders: a 1:2 split between "a" and "c".
    let at = |name: &str, bw: u64| mirror(name).in_country("FR").at(48.8, 2.3).bandwidth(bw);
    let mut w = World::new(vec![
        at("a", 1000),
        at("b", 1000),
        at("c", 2000),
        at("d", 4000),
    ]);
    w.holds("b", &["pool/a.deb"]).holds("d", &["pool/a.deb"]);
    let snap = w.snapshot();
    let n = 30_000;
    let c = spread(&snap, facts("pool/b.deb", paris()), n);
    assert_eq!(c.get("b"), None, "{c:?}");
    assert_eq!(c.get("d"), None, "{c:?}");
    let share_c = c["c"] as f64 / n as f64;
    assert!((share_c - 2.0 / 3.0).abs() < 0.02, "c gets 2/3: {c:?}");
    // The alternatives shown hold the file too.
    let d = select(&facts("pool/b.deb", paris()), &snap);
    let names: Vec<&str> = d
        .choices
        .iter()
        .map(|c| snap.mirrors[c.mirror].state.name.as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"a") && names.contains(&"c"), "{names:?}");
    // Sticky clients too.
    let mut f = facts("pool/b.deb", paris());
    f.sticky = true;
    for n in 0..50u8 {
        let g = Facts {
            ip: format!("198.51.{n}.7").parse().unwrap(),
            ..f
        };
        let who = chosen(&snap, &g);
        assert!(matches!(who.as_deref(), Some("a" | "c")), "{who:?}");
    }
}
