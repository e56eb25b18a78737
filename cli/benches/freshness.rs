//! `scripts/bench-freshness`: the churn harness of `tests/freshness.rs` run longer (20
//! publishes, 6 s apart, 4 checking clients) on a release build, giving:
//! - `index_p99_s`: seconds from a publish (files written, then `mirrorfleet publish`) until
//!   the redirector's JSON says its new package is indexed, 99th percentile;
//! - `mirror_verified_p50_s`: seconds from a publish until its new package first redirects
//!   to a mirror (the mirrors are told over MQTT, sync after 1.5–4 s and report), median;
//! - `meta_origin_share`: of the metadata requests (`Release`, `Packages`) made after the
//!   round's first sync report, the share redirected to the origin.
//!
//! It fails (exit 1) on any violation the test would fail on. Last line:
//! `bench-freshness index_p99_s=… mirror_verified_p50_s=… meta_origin_share=…`.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../tests/freshness/churn.rs"]
mod churn;

use std::time::Duration;

fn main() {
    let rounds = std::env::var("BENCH_FRESHNESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let out = churn::run(churn::Plan {
        rounds,
        every: Duration::from_secs(6),
        clients: 4,
    });
    eprintln!(
        "{} requests, {} violations; index {:?}; verified {:?}; report→mirror {:?}; {} lag-window answers; {} serials announced",
        out.requests,
        out.violations.len(),
        out.index_s,
        out.verified_s,
        out.report_to_mirror_s,
        out.lag_window_answers,
        out.announced
    );
    for v in out.violations.iter().take(10) {
        eprintln!("violation: {v}");
    }
    let share = out.meta_origin as f64 / out.meta_requests.max(1) as f64;
    println!(
        "bench-freshness index_p99_s={:.3} mirror_verified_p50_s={:.3} meta_origin_share={:.3}",
        churn::quantile(&out.index_s, 0.99),
        churn::quantile(&out.verified_s, 0.5),
        share
    );
    if !out.violations.is_empty() {
        std::process::exit(1);
    }
}
