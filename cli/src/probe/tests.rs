//! The probe's pure parts: which mirrors a base revision selects, the checks of a mirror,
//! and the report's lines.

use std::time::Duration;

use mirrorfleet_crds::state::{
    FallbackState, Family, FleetState, MirrorState, ProbeScheme, ProjectState, SourceState,
};

use super::plan::{self, Change, Check, ListProtocol, Origin};
use super::{CheckResult, Found, MirrorReport, report};

fn project(name: &str) -> ProjectState {
    ProjectState {
        name: name.into(),
        canary_file: Some("TIME".into()),
        source: SourceState {
            http: Some("https://origin.example/p/".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn fleet(mirrors: Vec<MirrorState>) -> FleetState {
    FleetState {
        projects: vec![project("p"), project("q")],
        mirrors,
        ..Default::default()
    }
}

fn names(selected: &[(String, Change)]) -> Vec<(&str, Change)> {
    selected.iter().map(|(n, c)| (n.as_str(), *c)).collect()
}

#[test]
fn selection_against_the_base() {
    let a = MirrorState::test("a").carrying("p", "http://a.example/p/");
    let b = MirrorState::test("b").carrying("p", "http://b.example/p/");
    let head = fleet(vec![a.clone(), b.clone()]);
    // (rule, base, expected)
    type Row<'a> = (&'a str, Option<FleetState>, Vec<(&'a str, Change)>);
    let rows: Vec<Row<'_>> = vec![
        (
            "no base: every mirror",
            None,
            vec![("a", Change::All), ("b", Change::All)],
        ),
        ("the same fleet: nothing", Some(head.clone()), vec![]),
        (
            "a mirror the base lacks is new",
            Some(fleet(vec![a.clone()])),
            vec![("b", Change::New)],
        ),
        (
            "a different spec is a change",
            Some(fleet(vec![a.clone(), b.clone().with(|m| m.ipv6 = false)])),
            vec![("b", Change::Changed)],
        ),
        (
            "a carried project's canary moved: its mirrors change",
            Some(FleetState {
                projects: vec![
                    ProjectState {
                        canary_file: Some("OLD".into()),
                        ..project("p")
                    },
                    project("q"),
                ],
                ..head.clone()
            }),
            vec![("a", Change::Changed), ("b", Change::Changed)],
        ),
        (
            "a project nobody carries changed: nothing",
            Some(FleetState {
                projects: vec![
                    project("p"),
                    ProjectState {
                        canary_file: Some("OLD".into()),
                        ..project("q")
                    },
                ],
                ..head.clone()
            }),
            vec![],
        ),
        (
            "a mirror the pull request removes is not probed",
            Some(fleet(vec![
                a.clone(),
                b.clone(),
                MirrorState::test("gone").carrying("p", "http://gone.example/p/"),
            ])),
            vec![],
        ),
    ];
    for (rule, base, expected) in rows {
        let selected = plan::select(base.as_ref(), &head);
        assert_eq!(names(&selected), expected, "{rule}");
    }
}

#[test]
fn a_mirror_is_checked_over_every_url_and_family_it_declares() {
    let m = MirrorState::test("m")
        .carrying("p", "http://m.example/p/")
        .carrying("p", "https://m.example/p/")
        .carrying("q", "https://[2001:db8::1]/q/")
        .with(|m| {
            m.enabled = false; // still probed: the pull request says it will answer
            m.health_check.disabled = true;
            m.projects[0].rsync = Some("rsync://m.example/p/".into());
            m.projects[1].ftp = Some("ftp://ftp.m.example/q/".into());
        });
    let f = fleet(vec![m.clone()]);
    let checks = plan::checks(&f, &m);
    let labels: Vec<String> = checks.iter().map(Check::label).collect();
    assert_eq!(
        labels,
        [
            "DNS m.example IPv4",
            "DNS m.example IPv6",
            "DNS 2001:db8::1 IPv4",
            "DNS 2001:db8::1 IPv6",
            "DNS ftp.m.example IPv4",
            "DNS ftp.m.example IPv6",
            "HTTP IPv4 p",
            "HTTP IPv6 p",
            "HTTPS IPv4 p",
            "HTTPS IPv6 p",
            "HTTPS IPv4 q",
            "HTTPS IPv6 q",
            "rsync p",
            "ftp q",
        ]
    );
    let Check::Head {
        canary,
        origin,
        scheme,
        family,
        ..
    } = &checks[8]
    else {
        panic!("{:?}", checks[8]);
    };
    assert_eq!(canary.url, "https://m.example/p/TIME", "the canary file");
    assert_eq!(canary.size, None, "learned from the origin when probing");
    assert_eq!(
        origin,
        &Some(Origin::Http("https://origin.example/p/TIME".into()))
    );
    assert_eq!((*scheme, *family), (ProbeScheme::Https, Family::Ipv4));
    assert_eq!(
        checks[12],
        Check::List {
            project: "p".into(),
            protocol: ListProtocol::Rsync,
            url: "rsync://m.example/p/".into()
        }
    );
}

#[test]
fn the_canary_and_where_its_size_comes_from() {
    let m = MirrorState::test("m")
        .carrying("p", "http://m.example/p/")
        .with(|m| m.ipv6 = false);
    // (rule, project, canary URL, origin)
    let rows: Vec<(&str, ProjectState, &str, Option<Origin>)> = vec![
        (
            "the canary file, sized at the HTTP source",
            project("p"),
            "http://m.example/p/TIME",
            Some(Origin::Http("https://origin.example/p/TIME".into())),
        ),
        (
            "else the trace file",
            ProjectState {
                canary_file: None,
                trace_file: Some("trace/master".into()),
                ..project("p")
            },
            "http://m.example/p/trace/master",
            Some(Origin::Http("https://origin.example/p/trace/master".into())),
        ),
        (
            "a local source is looked at on disk",
            ProjectState {
                source: SourceState {
                    local: Some("/srv/p".into()),
                    ..Default::default()
                },
                ..project("p")
            },
            "http://m.example/p/TIME",
            Some(Origin::Local("/srv/p/TIME".into())),
        ),
        (
            "an rsync source: the first fallback is the origin",
            ProjectState {
                source: SourceState {
                    rsync: Some("rsync://origin.example/p/".into()),
                    ..Default::default()
                },
                fallbacks: vec![FallbackState {
                    url: "https://dl.example/p".into(),
                    country: None,
                    continent: None,
                }],
                ..project("p")
            },
            "http://m.example/p/TIME",
            Some(Origin::Http("https://dl.example/p/TIME".into())),
        ),
        (
            "no canary and no trace file: the base URL, no size",
            ProjectState {
                canary_file: None,
                ..project("p")
            },
            "http://m.example/p/",
            None,
        ),
        (
            "names are percent-encoded",
            ProjectState {
                canary_file: Some("a b/c#d".into()),
                ..project("p")
            },
            "http://m.example/p/a%20b/c%23d",
            Some(Origin::Http("https://origin.example/p/a%20b/c%23d".into())),
        ),
    ];
    for (rule, p, url, expected_origin) in rows {
        let f = FleetState {
            projects: vec![p],
            mirrors: vec![m.clone()],
            ..Default::default()
        };
        let heads: Vec<Check> = plan::checks(&f, &m)
            .into_iter()
            .filter(|c| matches!(c, Check::Head { .. }))
            .collect();
        assert_eq!(heads.len(), 1, "{rule}: {heads:?}");
        let Check::Head { canary, origin, .. } = &heads[0] else {
            unreachable!()
        };
        assert_eq!(canary.url, url, "{rule}");
        assert_eq!(origin, &expected_origin, "{rule}");
    }
}

#[test]
fn a_mirror_declaring_no_family_gets_no_dns_or_head_checks() {
    let m = MirrorState::test("m")
        .carrying("p", "http://m.example/p/")
        .with(|m| {
            m.ipv4 = false;
            m.ipv6 = false;
            m.projects[0].rsync = Some("rsync://m.example/p/".into());
        });
    let labels: Vec<String> = plan::checks(&fleet(vec![m.clone()]), &m)
        .iter()
        .map(Check::label)
        .collect();
    assert_eq!(labels, ["rsync p"]);
}

fn report_of(checks: Vec<(&str, Found)>) -> MirrorReport {
    MirrorReport {
        mirror: "m".into(),
        change: Change::New,
        checks: checks
            .into_iter()
            .map(|(label, found)| CheckResult {
                label: label.into(),
                found,
            })
            .collect(),
        elapsed: Duration::from_millis(420),
    }
}

#[test]
fn the_report_names_each_failure_with_its_reason() {
    let r = report_of(vec![
        ("DNS m.example IPv4", Found::Ok("127.0.0.1".into())),
        (
            "HTTPS IPv4 p",
            Found::Failed {
                reason: "TlsFailed".into(),
                message: "https://m.example/p/TIME: TLS with 127.0.0.1:40443 failed: bad cert"
                    .into(),
            },
        ),
    ]);
    assert_eq!(
        report::text(std::slice::from_ref(&r)),
        "mirror m (new): 1 of 2 checks failed in 0.4 s\n\
         \x20 ok    DNS m.example IPv4: 127.0.0.1\n\
         \x20 FAIL  HTTPS IPv4 p: https://m.example/p/TIME: TLS with 127.0.0.1:40443 failed: bad cert [TlsFailed]\n"
    );
    assert_eq!(
        report::summary(&[r.clone(), report_of(vec![])]),
        "probed 2 mirrors: 1 failed (m)"
    );
    let json = report::json(&[r]);
    assert_eq!(json[0]["change"], "new");
    assert_eq!(json[0]["failures"], 1);
    assert_eq!(json[0]["checks"][1]["reason"], "TlsFailed");
    assert_eq!(json[0]["checks"][0]["ok"], true);
}

#[test]
fn a_mirror_without_urls_says_so() {
    let r = MirrorReport {
        change: Change::All,
        ..report_of(vec![])
    };
    assert_eq!(
        report::text(std::slice::from_ref(&r)),
        "mirror m: nothing to probe: it declares no URL\n"
    );
    assert_eq!(report::summary(&[r]), "probed 1 mirror: all passed");
}

#[test]
fn addresses_are_named_up_to_three() {
    let a = |s: &str| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(report::addresses(&[a("127.0.0.1:0")]), "127.0.0.1");
    assert_eq!(
        report::addresses(&[
            a("10.0.0.1:0"),
            a("10.0.0.2:0"),
            a("[2001:db8::1]:0"),
            a("10.0.0.4:0"),
            a("10.0.0.5:0")
        ]),
        "10.0.0.1, 10.0.0.2, 2001:db8::1, 2 more"
    );
}
