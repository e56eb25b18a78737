//! Freshness under churn, end to end (the harness is `freshness/churn.rs`): an archive
//! publishing every few seconds, three mirrors syncing from its hub when told over MQTT —
//! lagging, partially, in two stages — and clients following every redirect and checking
//! SHA-256. No 404 for a file the origin serves, no redirect to a mirror lacking a file or
//! holding an old version of mutable metadata (beyond the index's own lag), a mirror that
//! reports its sync gets the new metadata within 5 s, and garbage or forged reports are
//! logged and change nothing.

#![allow(clippy::unwrap_used)]

#[path = "freshness/churn.rs"]
mod churn;

use std::time::Duration;

#[test]
fn an_archive_under_churn_is_served_fresh_and_complete() {
    let plan = churn::Plan {
        rounds: 4,
        every: Duration::from_secs(6),
        clients: 3,
    };
    let out = churn::run(plan);
    let summary = format!(
        "{} requests; index {:?}; verified {:?}; report→mirror {:?}; metadata after reports {} of which {} to the origin; {} lag-window answers; {} serials announced",
        out.requests,
        out.index_s,
        out.verified_s,
        out.report_to_mirror_s,
        out.meta_requests,
        out.meta_origin,
        out.lag_window_answers,
        out.announced
    );
    eprintln!("{summary}");
    let log_tail: String = out
        .log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.violations.is_empty(),
        "{} violations, first: {:#?}\n{summary}\nlog (last lines first):\n{log_tail}",
        out.violations.len(),
        &out.violations[..out.violations.len().min(10)]
    );
    assert!(out.requests > 100, "the clients ran: {summary}");
    assert_eq!(
        out.index_s.len(),
        plan.rounds,
        "every publish indexed within its round: {summary}"
    );
    assert!(
        out.index_s.iter().all(|s| *s < 2.0),
        "publish → index under 2 s: {summary}"
    );
    assert_eq!(
        out.verified_s.len(),
        plan.rounds,
        "every new package redirected to a mirror within its round: {summary}"
    );
    assert!(
        !out.report_to_mirror_s.is_empty() && out.report_to_mirror_s.iter().all(|s| *s < 5.0),
        "a mirror reporting its sync gets the new metadata within 5 s: {summary}"
    );
    assert!(
        out.meta_requests > 0 && out.meta_origin * 2 < out.meta_requests,
        "metadata goes to mirrors once they report: {summary}"
    );
    assert!(
        out.announced >= plan.rounds,
        "each serial announced on MQTT: {summary}"
    );
    // Garbage, an unknown mirror, a project the mirror does not carry: each logged.
    assert!(
        out.log.contains("ignored a sync report"),
        "garbage logged:\n{log_tail}"
    );
    assert!(
        out.log.matches("sync report ignored").count() >= 2,
        "forged reports logged:\n{log_tail}"
    );
}
