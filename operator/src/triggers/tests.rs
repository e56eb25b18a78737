//! What a change of the assessment or of the store asks to reconcile.

use std::collections::BTreeMap;

use mirrorfleet_crds::state::{Availability, IndexMeta, MirrorHealth, MirrorState, SponsorState};

use super::*;

fn mirror(name: &str, sponsor: &str, projects: &[&str]) -> MirrorState {
    let mut m = MirrorState::test(name);
    m.sponsor = sponsor.into();
    projects.iter().fold(m, |m, p| {
        m.carrying(p, format!("https://{name}.example/{p}/"))
    })
}

fn sponsor(name: &str) -> SponsorState {
    SponsorState {
        name: name.into(),
        ..SponsorState::default()
    }
}

fn assessment(mirrors: Vec<MirrorState>, problems: &[(&str, &str, &str)]) -> Assessment {
    let mut a = Assessment::default();
    a.fleet.mirrors = mirrors;
    a.fleet.sponsors = vec![sponsor("s1"), sponsor("s2")];
    let mut map: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
    for (k, n, p) in problems {
        map.entry(key(k, n)).or_default().push((*p).into());
    }
    a.problems = map;
    a
}

#[test]
fn an_assessment_concerns_what_changed_and_nothing_else() {
    let old = assessment(
        vec![mirror("m1", "s1", &["p"]), mirror("m2", "s1", &["p"])],
        &[("RegionRule", "r1", "mirrors[0]: no Mirror m3")],
    );
    assert!(assessment_changes(&old, &old.clone()).is_empty());

    // m2 moves to s2: both sponsors count differently and m2's entry changed; the rule's
    // problem is unchanged; a new problem of m1 concerns m1.
    let new = assessment(
        vec![mirror("m1", "s1", &["p"]), mirror("m2", "s2", &["p"])],
        &[
            ("RegionRule", "r1", "mirrors[0]: no Mirror m3"),
            ("Mirror", "m1", "spec.sponsorRef: no Sponsor s9"),
        ],
    );
    let want: BTreeSet<ObjectKey> = [
        key("Mirror", "m1"),
        key("Mirror", "m2"),
        key("Sponsor", "s1"),
        key("Sponsor", "s2"),
    ]
    .into();
    assert_eq!(assessment_changes(&old, &new), want);
}

fn meta(project: &str, serial: &str) -> Arc<IndexMeta> {
    Arc::new(IndexMeta {
        project: project.into(),
        serial: serial.into(),
        generated_at: 1,
        hashes: vec![],
        files: 0,
        bytes: 0,
        next_id: 0,
        chunks: vec![],
    })
}

#[test]
fn a_store_change_concerns_the_mirror_or_project_it_is_about() {
    let fleet = FleetState {
        mirrors: vec![
            mirror("m1", "s1", &["p"]),
            mirror("m2", "s1", &["q"]),
            mirror("m3", "s1", &["p", "q"]),
        ],
        ..FleetState::default()
    };
    let mut old = LoadedState::default();
    let health = |m: &str| {
        Arc::new(MirrorHealth {
            mirror: m.into(),
            ..MirrorHealth::default()
        })
    };
    old.health.insert("m1".into(), health("m1"));
    old.health.insert("m2".into(), health("m2"));
    old.index_meta.insert("p".into(), meta("p", "1"));
    old.index_meta.insert("q".into(), meta("q", "1"));
    assert!(state_changes(&old, &old.clone(), &fleet).is_empty());

    // m1's health is written again (a new value, even if equal), m2's removed.
    let mut new = old.clone();
    new.health.insert("m1".into(), health("m1"));
    new.health.remove("m2");
    let want: BTreeSet<ObjectKey> = [key("Mirror", "m1"), key("Mirror", "m2")].into();
    assert_eq!(state_changes(&old, &new, &fleet), want);

    // A scan of (m2, q).
    let mut new = old.clone();
    let avail = Availability {
        mirror: "m2".into(),
        project: "q".into(),
        serial: "1".into(),
        scanned_at: 5,
        last_sync: None,
        counts: Default::default(),
        present: Default::default(),
        mutable: vec![],
    };
    new.availability
        .insert(("m2".into(), "q".into()), Arc::new(avail));
    let want: BTreeSet<ObjectKey> = [key("Mirror", "m2")].into();
    assert_eq!(state_changes(&old, &new, &fleet), want);

    // A new index of p: the project and the mirrors carrying it.
    let mut new = old.clone();
    new.index_meta.insert("p".into(), meta("p", "2"));
    let want: BTreeSet<ObjectKey> = [
        key("Project", "p"),
        key("Mirror", "m1"),
        key("Mirror", "m3"),
    ]
    .into();
    assert_eq!(state_changes(&old, &new, &fleet), want);
}
