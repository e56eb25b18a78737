use super::*;
use crate::probe::Failure;

fn refused() -> Outcome {
    Outcome::Failed(Failure::ConnectRefused("127.0.0.1:1".into()))
}

/// Feeds `steps` one second apart from t=0; returns the changes with their times.
fn run(t: &mut Tracker, steps: &[Outcome], start: i64) -> Vec<(i64, Change)> {
    let policy = HealthCheckState::default();
    steps
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let now = start + i as i64;
            t.observe(o, now, &policy).map(|c| (now, c))
        })
        .collect()
}

#[test]
fn table() {
    use Outcome::Ok as OK;
    let down = |reason: &str| Change::Down {
        reason: reason.into(),
        message: String::new(),
    };
    let timeout = || Outcome::Failed(Failure::Timeout(2));
    let status = |s| Outcome::Failed(Failure::Status(s));
    // (name, outcomes, expected changes as (index, change))
    type Case = (&'static str, Vec<Outcome>, Vec<(i64, Change)>);
    let cases: Vec<Case> = vec![
        (
            "first success marks it up",
            vec![OK, OK],
            vec![(0, Change::Up)],
        ),
        (
            "one lost probe changes nothing",
            vec![OK, timeout(), OK, OK],
            vec![(0, Change::Up)],
        ),
        (
            "two failures in a row take it down",
            vec![OK, refused(), refused(), refused()],
            vec![(0, Change::Up), (2, down("ConnectRefused"))],
        ),
        (
            "alternating failures never take it down",
            vec![OK, status(503), OK, status(503), OK, status(503)],
            vec![(0, Change::Up)],
        ),
        (
            "a never-probed mirror goes down on the threshold too",
            vec![status(502), status(502)],
            vec![(1, down("HttpStatus"))],
        ),
        (
            "back after three successes in a row",
            vec![refused(), refused(), OK, OK, timeout(), OK, OK, OK],
            vec![(1, down("ConnectRefused")), (7, Change::Up)],
        ),
    ];
    for (name, outcomes, want) in cases {
        let mut t = Tracker::default();
        let got: Vec<(i64, Change)> = run(&mut t, &outcomes, 0)
            .into_iter()
            .map(|(i, c)| match c {
                Change::Down { reason, .. } => (
                    i,
                    Change::Down {
                        reason,
                        message: String::new(),
                    },
                ),
                c => (i, c),
            })
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn the_reason_is_precise_and_kept_current_while_down() {
    let mut t = Tracker::default();
    run(&mut t, &[refused(), refused()], 0);
    assert_eq!((t.up, t.reason.as_str()), (Some(false), "ConnectRefused"));
    assert!(t.message.contains("127.0.0.1:1"), "{}", t.message);
    let since = t.since;
    run(&mut t, &[Outcome::Failed(Failure::Timeout(2))], 10);
    assert_eq!(t.reason, "Timeout");
    assert_eq!(t.since, since, "still the same outage");
}

#[test]
fn a_long_outage_needs_a_rescan_first() {
    let policy = HealthCheckState::default();
    let mut t = Tracker::default();
    run(&mut t, &[refused(), refused()], 0);
    let back = LONG_OUTAGE_SECONDS + 100;
    assert_eq!(t.observe(&Outcome::Ok, back, &policy), None);
    assert_eq!(t.observe(&Outcome::Ok, back + 1, &policy), None);
    assert_eq!(
        t.observe(&Outcome::Ok, back + 2, &policy),
        Some(Change::RescanFirst)
    );
    assert_eq!(t.up, Some(false), "no traffic before the rescan");
    assert_eq!(t.observe(&Outcome::Ok, back + 3, &policy), None);
    assert_eq!(t.rescanned(back + 4), Some(Change::Up));
    assert_eq!(t.up, Some(true));
    assert_eq!(t.rescanned(back + 5), None, "only once");
}

#[test]
fn a_failure_while_awaiting_the_rescan_cancels_it() {
    let policy = HealthCheckState::default();
    let mut t = Tracker::default();
    run(&mut t, &[refused(), refused()], 0);
    let back = LONG_OUTAGE_SECONDS + 100;
    for i in 0..3 {
        t.observe(&Outcome::Ok, back + i, &policy);
    }
    assert!(t.awaiting_rescan);
    assert_eq!(t.observe(&refused(), back + 3, &policy), None);
    assert_eq!(
        t.rescanned(back + 4),
        None,
        "the rescan no longer brings it back"
    );
    assert_eq!(t.up, Some(false));
}
