//! `mirrorfleet validate --probe`: reaches each Mirror a pull request adds or changes (or
//! every one) over the URLs it declares, with the code the fleet itself uses — the health
//! crate's resolution and `HEAD` probes, the scan crate's rsync and FTP listings — and reports
//! per mirror. The checks of one mirror run at once, each bounded by the timeout, so a mirror
//! takes at most that long; at most [`MIRRORS_AT_ONCE`] mirrors are probed at once.
//!
//! This is the I/O shell: what to check is decided in [`plan`], the report is written by
//! [`report`]. It must not write anything anywhere (no store, no cluster).

pub mod plan;
pub mod report;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mirrorfleet_crds::state::{Family, FleetState};
use mirrorfleet_health::probe::{self, ProbeSettings};
use mirrorfleet_scan as scan;
use tokio::task::JoinSet;

use plan::{Change, Check, ListProtocol, Origin};

/// Mirrors probed at once.
pub const MIRRORS_AT_ONCE: usize = 8;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// It passed; what was seen.
    Ok(String),
    /// It failed: a fixed reason (`DnsFailed`, `TlsFailed`, `WrongSize`, `rsync:exit`, …) and
    /// the message.
    Failed {
        /// The reason, as the health checker or the scanner names it.
        reason: String,
        /// What went wrong, with the URL.
        message: String,
    },
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// [`Check::label`].
    pub label: String,
    /// The result.
    pub found: Found,
}

/// The report of one mirror.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorReport {
    /// The mirror.
    pub mirror: String,
    /// Why it was probed.
    pub change: Change,
    /// Each check in the plan's order.
    pub checks: Vec<CheckResult>,
    /// How long its checks took.
    pub elapsed: Duration,
}

impl MirrorReport {
    /// The number of failed checks.
    pub fn failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| matches!(c.found, Found::Failed { .. }))
            .count()
    }
}

/// Probes the `selected` mirrors of `fleet`, each check bounded by `timeout`; reports in the
/// order given.
pub async fn run(
    fleet: &FleetState,
    selected: &[(String, Change)],
    timeout: Duration,
) -> Vec<MirrorReport> {
    let plans: Vec<(String, Change, Vec<Check>)> = selected
        .iter()
        .filter_map(|(name, change)| {
            let m = fleet.mirror(name)?;
            Some((name.clone(), *change, plan::checks(fleet, m)))
        })
        .collect();
    let sizes = Arc::new(origin_sizes(&plans, timeout).await);
    let gate = Arc::new(tokio::sync::Semaphore::new(MIRRORS_AT_ONCE));
    let mut mirrors = JoinSet::new();
    for (i, (name, change, checks)) in plans.into_iter().enumerate() {
        let (sizes, gate) = (sizes.clone(), gate.clone());
        mirrors.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let started = Instant::now();
            let mut running = JoinSet::new();
            for (j, check) in checks.into_iter().enumerate() {
                let sizes = sizes.clone();
                running.spawn(async move {
                    let label = check.label();
                    let found = run_check(check, &sizes, timeout).await;
                    (j, CheckResult { label, found })
                });
            }
            let mut results = Vec::new();
            while let Some(done) = running.join_next().await {
                if let Ok(r) = done {
                    results.push(r);
                }
            }
            results.sort_by_key(|(j, _)| *j);
            let report = MirrorReport {
                mirror: name,
                change,
                checks: results.into_iter().map(|(_, r)| r).collect(),
                elapsed: started.elapsed(),
            };
            (i, report)
        });
    }
    let mut reports = Vec::new();
    while let Some(done) = mirrors.join_next().await {
        if let Ok(r) = done {
            reports.push(r);
        }
    }
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// The canary's size at each origin the plans name, learned once each: `Ok(None)` when the
/// origin answers without a length, `Err` when it cannot be asked.
async fn origin_sizes(
    plans: &[(String, Change, Vec<Check>)],
    timeout: Duration,
) -> HashMap<Origin, Result<Option<u64>, String>> {
    let mut origins: Vec<Origin> = Vec::new();
    for (_, _, checks) in plans {
        for c in checks {
            if let Check::Head {
                origin: Some(o), ..
            } = c
                && !origins.contains(o)
            {
                origins.push(o.clone());
            }
        }
    }
    let mut asking = JoinSet::new();
    for origin in origins {
        asking.spawn(async move {
            let size = origin_size(&origin, timeout).await;
            (origin, size)
        });
    }
    let mut sizes = HashMap::new();
    while let Some(done) = asking.join_next().await {
        if let Ok((origin, size)) = done {
            sizes.insert(origin, size);
        }
    }
    sizes
}

async fn origin_size(origin: &Origin, timeout: Duration) -> Result<Option<u64>, String> {
    match origin {
        Origin::Local(path) => std::fs::metadata(path)
            .map(|m| Some(m.len()))
            .map_err(|e| format!("{path}: {e}")),
        Origin::Http(url) => {
            // The origin's family is not declared anywhere: IPv4, else IPv6.
            let canary = probe::Canary {
                url: url.clone(),
                size: None,
            };
            let mut last = String::new();
            for family in [Family::Ipv4, Family::Ipv6] {
                let settings = ProbeSettings {
                    family,
                    timeout,
                    allow_redirects: false,
                };
                match probe::head(&canary, &settings).await {
                    Ok(size) => return Ok(size),
                    Err(probe::Failure::NoAddress { .. }) if family == Family::Ipv4 => {}
                    Err(f) => {
                        last = format!("{url}: {f}");
                        break;
                    }
                }
            }
            Err(last)
        }
    }
}

/// Runs one check within `timeout`.
async fn run_check(
    check: Check,
    sizes: &HashMap<Origin, Result<Option<u64>, String>>,
    timeout: Duration,
) -> Found {
    let secs = timeout.as_secs().max(1);
    match check {
        Check::Dns { host, family } => {
            match tokio::time::timeout(timeout, probe::resolve(&host, 0, family)).await {
                Err(_) => Found::Failed {
                    reason: "Timeout".into(),
                    message: format!("no answer from the resolver within {secs} s"),
                },
                Ok(Err(f)) => Found::Failed {
                    reason: f.reason().into(),
                    message: f.to_string(),
                },
                Ok(Ok(addrs)) => Found::Ok(report::addresses(&addrs)),
            }
        }
        Check::Head {
            mut canary,
            origin,
            family,
            allow_redirects,
            ..
        } => {
            let known = origin.as_ref().map(|o| sizes.get(o).cloned());
            let note = match &known {
                None => "no canary or trace file: the base URL was probed".to_owned(),
                Some(Some(Ok(Some(n)))) => {
                    canary.size = Some(*n);
                    format!("{n} bytes, as at the origin")
                }
                Some(Some(Ok(None))) => "size not compared: the origin gives none".to_owned(),
                Some(Some(Err(e))) => format!("size not compared: the origin: {e}"),
                Some(None) => "size not compared".to_owned(),
            };
            let settings = ProbeSettings {
                family,
                timeout,
                allow_redirects,
            };
            match probe::head(&canary, &settings).await {
                Ok(_) => Found::Ok(format!("{}: {note}", canary.url)),
                Err(f) => Found::Failed {
                    reason: f.reason().into(),
                    message: format!("{}: {f}", canary.url),
                },
            }
        }
        Check::List { protocol, url, .. } => {
            let limits = scan::Limits {
                deadline: timeout,
                io_timeout: timeout,
                max_entries: 100_000,
                max_requests: 1,
                ..scan::Limits::default()
            };
            let listed = match protocol {
                ListProtocol::Rsync => scan::rsync::list_root(&url, &limits).await,
                ListProtocol::Ftp => scan::ftp::list_root(&url, &limits).await,
            };
            match listed {
                Ok(listing) => Found::Ok(format!(
                    "{url}: the root lists {} file{}",
                    listing.files.len(),
                    if listing.files.len() == 1 { "" } else { "s" }
                )),
                Err(e) => Found::Failed {
                    reason: format!("{}:{}", protocol.as_str(), e.metric_label()),
                    message: format!("{url}: {}", mirrorfleet_runtime::error_chain(&e)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
