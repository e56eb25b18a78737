//! The eligibility table: one row per rule of [`Asked::eligible`](super::super::eligible),
//! each deciding for one mirror twice — explained (the reason or tier named) and bare (the
//! common-case shortcut) — so that the two can never disagree.

use super::*;

/// What a row expects of its one mirror.
#[derive(Debug)]
enum Expect {
    /// Used, in this tier.
    Usable(Tier),
    /// Not used, for this reason.
    Excluded(Reason),
}

use Expect::{Excluded, Usable};

/// One rule's case: the mirror, what else the world holds, the request, the expectation.
struct Row {
    rule: &'static str,
    mirror: MirrorState,
    world: fn(&mut World),
    path: &'static str,
    client: fn(&mut Facts<'_>),
    expect: Expect,
}

fn row(rule: &'static str, mirror: MirrorState, expect: Expect) -> Row {
    Row {
        rule,
        mirror,
        world: |_| {},
        path: "pool/a.deb",
        client: |_| {},
        expect,
    }
}

fn tokyo() -> MirrorState {
    mirror("tokyo").in_country("JP").at(35.0, 139.0)
}

fn rows() -> Vec<Row> {
    vec![
        row(
            "a mirror in the client's country",
            lyon(),
            Usable(Tier::Country),
        ),
        row(
            "another country of its continent",
            berlin(),
            Usable(Tier::Continent),
        ),
        row("another continent", tokyo(), Usable(Tier::Elsewhere)),
        row(
            "an additional country of the mirror",
            berlin().with(|m| m.additional_countries = vec!["FR".into()]),
            Usable(Tier::ExtraCountry),
        ),
        row(
            "the client's AS",
            berlin().with_asns(&[3215]),
            Usable(Tier::Network),
        ),
        row(
            "the client's network",
            berlin().with_networks(&["192.0.2.0/24"]),
            Usable(Tier::Network),
        ),
        row(
            "disabled",
            lyon().with(|m| m.enabled = false),
            Excluded(Reason::Disabled),
        ),
        row(
            "in a maintenance window",
            lyon().with(|m| m.maintenance = vec![(T - 10, T + 10)]),
            Excluded(Reason::Maintenance),
        ),
        row(
            "a maintenance window that is over",
            lyon().with(|m| m.maintenance = vec![(T - 100, T - 10)]),
            Usable(Tier::Country),
        ),
        row(
            "not reachable over the client's family",
            lyon().with(|m| m.ipv4 = false),
            Excluded(Reason::Family),
        ),
        row(
            "country-only, the client elsewhere",
            berlin().with(|m| m.restrictions.country_only = true),
            Excluded(Reason::CountryOnly),
        ),
        row(
            "country-only serves its additional countries",
            berlin().with(|m| {
                m.restrictions.country_only = true;
                m.additional_countries = vec!["FR".into()];
            }),
            Usable(Tier::ExtraCountry),
        ),
        row(
            "continent-only, the client on another",
            tokyo().with(|m| m.restrictions.continent_only = true),
            Excluded(Reason::ContinentOnly),
        ),
        row(
            "continent-only serves its continent",
            berlin().with(|m| m.restrictions.continent_only = true),
            Usable(Tier::Continent),
        ),
        row(
            "AS-only, the client in another AS",
            lyon()
                .with_asns(&[64500])
                .with(|m| m.restrictions.as_only = true),
            Excluded(Reason::AsOnly),
        ),
        row(
            "AS-only serves its AS",
            berlin()
                .with_asns(&[3215])
                .with(|m| m.restrictions.as_only = true),
            Usable(Tier::Network),
        ),
        row(
            "networks-only, the client outside them",
            lyon()
                .with_networks(&["198.51.100.0/24"])
                .with(|m| m.restrictions.networks_only = true),
            Excluded(Reason::NetworksOnly),
        ),
        row(
            "networks-only serves its networks",
            berlin()
                .with_networks(&["192.0.2.0/24"])
                .with(|m| m.restrictions.networks_only = true),
            Usable(Tier::Network),
        ),
        row(
            "the client's country excluded",
            berlin().with(|m| m.restrictions.excluded_countries = vec!["FR".into()]),
            Excluded(Reason::ExcludedCountry),
        ),
        Row {
            world: |w| {
                w.rule(Action::Exclude, &["lyon"], |_| {});
            },
            ..row(
                "a region rule excludes it",
                lyon(),
                Excluded(Reason::Rule("rule-0".into())),
            )
        },
        Row {
            world: |w| {
                w.rule(Action::Only, &["berlin"], |_| {});
            },
            ..row(
                "a region rule allows only others",
                lyon(),
                Excluded(Reason::Rule("rule-0".into())),
            )
        },
        Row {
            world: |w| {
                w.rule(Action::Prefer, &["tokyo"], |_| {});
            },
            ..row("a region rule prefers it", tokyo(), Usable(Tier::Preferred))
        },
        Row {
            world: |w| {
                w.rule(Action::Scale, &["lyon"], |r| r.weight_factor = Some(3.0));
            },
            ..row("a region rule scales it", lyon(), Usable(Tier::Country))
        },
        Row {
            world: |w| {
                w.rule(Action::Exclude, &["lyon"], |r| r.asns = vec![1]);
            },
            ..row(
                "a region rule for other clients",
                lyon(),
                Usable(Tier::Country),
            )
        },
        Row {
            client: |f| f.https_only = true,
            ..row(
                "no HTTPS URL for an HTTPS client",
                MirrorState::test("lyon")
                    .in_country("FR")
                    .at(45.76, 4.84)
                    .carrying("p", "http://lyon.example/p/"),
                Excluded(Reason::NoScheme),
            )
        },
        Row {
            world: |w| {
                w.down("lyon", ProbeScheme::Https, Family::Ipv4).down(
                    "lyon",
                    ProbeScheme::Http,
                    Family::Ipv4,
                );
            },
            ..row(
                "down for the client's schemes and family",
                lyon(),
                Excluded(Reason::Down("ConnectRefused".into())),
            )
        },
        Row {
            world: |w| {
                w.down("lyon", ProbeScheme::Https, Family::Ipv4);
            },
            ..row(
                "HTTPS down, HTTP up for a plain-HTTP client",
                lyon(),
                Usable(Tier::Country),
            )
        },
        row(
            "a sub-tree without the file",
            lyon().with(|m| m.projects[0].paths = vec!["dists/".into()]),
            Excluded(Reason::NotCarried),
        ),
        row(
            "a sub-tree with the file",
            lyon().with(|m| m.projects[0].paths = vec!["pool/".into()]),
            Usable(Tier::Country),
        ),
        Row {
            world: |w| {
                w.avail.remove(&("lyon".into(), "p".into()));
            },
            ..row("never scanned", lyon(), Excluded(Reason::NotScanned))
        },
        Row {
            world: |w| {
                w.holds("lyon", &["pool/b.deb"]);
            },
            ..row("the file missing there", lyon(), Excluded(Reason::Missing))
        },
        Row {
            world: |w| {
                w.holds("lyon", &["pool/a.deb"]);
            },
            path: "dists/stable/InRelease",
            ..row(
                "mutable metadata not proven current",
                lyon(),
                Excluded(Reason::Outdated),
            )
        },
    ]
}

#[test]
fn each_rule_decides_the_same_bare_and_explained() {
    for r in rows() {
        let name = r.mirror.name.clone();
        let mut w = World::new(vec![r.mirror]);
        (r.world)(&mut w);
        let snap = w.snapshot();
        let mut f = facts(r.path, paris());
        (r.client)(&mut f);
        let explained = select(&Facts { explain: true, ..f }, &snap);
        let bare = select(&f, &snap);
        let rule = r.rule;
        match r.expect {
            Usable(tier) => {
                for (how, d) in [("explained", &explained), ("bare", &bare)] {
                    assert_eq!(d.outcome, Outcome::Mirror, "{rule} ({how})");
                    assert_eq!(d.choices[0].tier, tier, "{rule} ({how})");
                    assert_eq!(snap.mirrors[d.choices[0].mirror].state.name, name);
                }
                assert!(explained.excluded.is_empty(), "{rule}");
            }
            Excluded(reason) => {
                assert_eq!(
                    explained.excluded,
                    [(0, reason)],
                    "{rule}: the reason named"
                );
                assert!(explained.choices.is_empty(), "{rule} (explained)");
                assert!(bare.choices.is_empty(), "{rule} (bare)");
                assert_ne!(bare.outcome, Outcome::Mirror, "{rule} (bare)");
            }
        }
    }
}

#[test]
fn a_scale_rule_scales_the_share() {
    // Two mirrors in one place, the second scaled by 3: it takes 3/4 of the draws.
    let mut w = World::new(vec![
        lyon(),
        mirror("lyon2").in_country("FR").at(45.76, 4.84),
    ]);
    w.rule(Action::Scale, &["lyon2"], |r| r.weight_factor = Some(3.0));
    let snap = w.snapshot();
    let n = 20_000;
    let c = spread(&snap, facts("pool/a.deb", paris()), n);
    let share = c["lyon2"] as f64 / n as f64;
    assert!((share - 0.75).abs() < 0.02, "{c:?}");
    let d = select(&facts("pool/a.deb", paris()), &snap);
    let shares: f64 = d.choices.iter().map(|c| c.share).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{:?}", d.choices);
}
