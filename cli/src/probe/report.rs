//! The probe's report, short enough to read in a CI log: one header line per mirror (how many
//! checks failed, how long it took), then one line per check, failures first-word `FAIL`
//! with their reason in brackets; or the same as JSON. Pure.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::{Found, MirrorReport};

/// The lines of `reports`, each ending in a newline.
pub fn text(reports: &[MirrorReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let failures = r.failures();
        let change = match r.change {
            super::plan::Change::All => String::new(),
            c => format!(" ({})", c.as_str()),
        };
        let secs = r.elapsed.as_secs_f64();
        let verdict = match (r.checks.len(), failures) {
            (0, _) => "nothing to probe: it declares no URL".to_owned(),
            (n, 0) => format!("{n} check{} passed in {secs:.1} s", plural(n)),
            (n, f) => format!("{f} of {n} check{} failed in {secs:.1} s", plural(n)),
        };
        let _ = writeln!(out, "mirror {}{change}: {verdict}", r.mirror);
        for c in &r.checks {
            let _ = match &c.found {
                Found::Ok(seen) => writeln!(out, "  ok    {}: {seen}", c.label),
                Found::Failed { reason, message } => {
                    writeln!(out, "  FAIL  {}: {message} [{reason}]", c.label)
                }
            };
        }
    }
    out
}

/// The summary line: `probed 3 mirrors: 1 failed (mm-x)`.
pub fn summary(reports: &[MirrorReport]) -> String {
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.failures() > 0)
        .map(|r| r.mirror.as_str())
        .collect();
    let n = reports.len();
    match failed.len() {
        0 => format!("probed {n} mirror{}: all passed", plural(n)),
        f => format!(
            "probed {n} mirror{}: {f} failed ({})",
            plural(n),
            failed.join(", ")
        ),
    }
}

/// `reports` for tools: `[{mirror, change, seconds, failures, checks: [{check, ok, reason?,
/// message}]}]`.
pub fn json(reports: &[MirrorReport]) -> serde_json::Value {
    reports
        .iter()
        .map(|r| {
            let checks: Vec<serde_json::Value> = r
                .checks
                .iter()
                .map(|c| match &c.found {
                    Found::Ok(seen) => serde_json::json!({
                        "check": c.label, "ok": true, "message": seen,
                    }),
                    Found::Failed { reason, message } => serde_json::json!({
                        "check": c.label, "ok": false, "reason": reason, "message": message,
                    }),
                })
                .collect();
            serde_json::json!({
                "mirror": r.mirror,
                "change": r.change.as_str(),
                "seconds": (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "failures": r.failures(),
                "checks": checks,
            })
        })
        .collect()
}

/// The addresses found, at most three named: `127.0.0.1, 127.0.0.2 and 3 more`.
pub fn addresses(addrs: &[SocketAddr]) -> String {
    let mut named: Vec<String> = addrs.iter().take(3).map(|a| a.ip().to_string()).collect();
    if addrs.len() > 3 {
        named.push(format!("{} more", addrs.len() - 3));
    }
    named.join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
