//! What one sync run does, decided without I/O: the rsync command lines of its stages (pace,
//! timeouts, the filters that keep a mirror to its declared sub-trees and keep the trace file
//! the agent's own), what rsync's `--stats` say was moved, what an exit code means, the sync
//! report and trace file written afterwards, and when the fallback timer fires next. Nothing
//! here spawns, reads or writes.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use mirrorfleet_crds::state::ProjectDuty;
use serde::Serialize;

/// rsync's `--bwlimit` (KiB/s) for a pace of `mbps` Mbit/s: never 0, which rsync takes as
/// "no limit".
pub fn bwlimit_kib(mbps: u64) -> u64 {
    (mbps.saturating_mul(1_000_000) / 8 / 1024).max(1)
}

/// How a run is made, the same for every project of the node.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// rsync's `--bwlimit`, KiB/s.
    pub bwlimit_kib: u64,
    /// rsync's `--timeout` and `--contimeout`: seconds without I/O before it gives up.
    pub io_timeout: Duration,
}

/// The rsync filter rules (in order; the first match wins) that keep a sync to `duty`'s
/// carried sub-trees, leave its trace file alone (the agent writes it) and, when
/// `without_index`, skip its index and metadata globs.
pub fn filters(duty: &ProjectDuty, without_index: bool) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(trace) = &duty.trace_file {
        rules.push(format!("--exclude=/{}", trace.trim_start_matches('/')));
    }
    if without_index {
        for glob in &duty.index_globs {
            // A leading `**/` matches at any depth, top level included: rsync's unanchored
            // pattern. Any other glob is relative to the project root: anchored.
            let rule = match glob.strip_prefix("**/") {
                Some(rest) => rest.to_owned(),
                None => format!("/{}", glob.trim_start_matches('/')),
            };
            rules.push(format!("--exclude={rule}"));
        }
    }
    let carried: Vec<&str> = duty
        .paths
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .collect();
    // An empty list, or a path that is the root, means the whole project.
    if carried.is_empty() || carried.len() < duty.paths.len() {
        return rules;
    }
    let mut parents = Vec::new();
    for path in carried {
        let parts: Vec<&str> = path.split('/').collect();
        for depth in 1..parts.len() {
            let parent = format!("--include=/{}/", parts[..depth].join("/"));
            if !parents.contains(&parent) {
                parents.push(parent);
            }
        }
        parents.push(format!("--include=/{path}/***"));
    }
    rules.extend(parents);
    rules.push("--exclude=*".to_owned());
    rules
}

/// The stages of a run of `duty` from `hub` into `dest`: one (everything, with deletions), or
/// when the project has index globs two — content without them and without deletions, then
/// everything with deletions — so that an index never names a file not there yet.
pub fn stages(duty: &ProjectDuty, hub: &str, dest: &Path, pacing: &Pacing) -> Vec<Vec<OsString>> {
    let io = pacing.io_timeout.as_secs().max(1);
    let base = |without_index: bool, delete: bool| {
        let mut a: Vec<OsString> = [
            "--recursive",
            "--links",
            "--perms",
            "--times",
            "--safe-links",
            "--delay-updates",
            "--no-motd",
            "--stats",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        a.push(format!("--bwlimit={}", pacing.bwlimit_kib).into());
        a.push(format!("--timeout={io}").into());
        if hub.starts_with("rsync://") {
            a.push(format!("--contimeout={io}").into());
        }
        if delete {
            a.push("--delete-delay".into());
        }
        a.extend(filters(duty, without_index).into_iter().map(OsString::from));
        let mut src = hub.to_owned();
        if !src.ends_with('/') {
            src.push('/');
        }
        a.push(src.into());
        let mut d = dest.as_os_str().to_owned();
        d.push("/");
        a.push(d);
        a
    };
    if duty.two_stage() {
        vec![base(true, false), base(false, true)]
    } else {
        vec![base(false, true)]
    }
}

/// The bytes received, from rsync's `--stats` output (`Total bytes received: 1,234`).
pub fn bytes_received(stdout: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let n = l.trim().strip_prefix("Total bytes received:")?;
        n.trim().replace(',', "").parse().ok()
    })
}

/// What rsync's exit `code` means (its manual's list, the common ones).
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files or directories",
        5 => "error starting the client-server protocol (unknown module?)",
        10 => "error in socket I/O (hub unreachable?)",
        11 => "error in file I/O (disk full? permissions?)",
        12 => "error in the rsync protocol data stream",
        20 => "interrupted",
        23 => "partial transfer due to an error",
        24 => "partial transfer: source files vanished",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for the daemon connection",
        _ => "see rsync(1), EXIT VALUES",
    }
}

/// The last `max` bytes of `text`, cut at a character boundary, trimmed.
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim()
}

/// A sync report, published on `mirrorfleet/report/<mirror>`: the `project` and `serial` the
/// redirectors' report readers need (`mirrorfleet_push::report::parse`), and what the run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The project.
    pub project: String,
    /// The serial the run was for: the push's payload, else the fleet's, else `unknown`.
    pub serial: String,
    /// Wall time of the whole run.
    pub duration_seconds: f64,
    /// Bytes received over all stages.
    pub bytes: u64,
    /// `ok`, or `failed`.
    pub result: &'static str,
    /// What failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The trace file's content after a run that started at `started` (Unix seconds): the number
/// on the first line, the form `scan/src/trace.rs` parses as "synced at".
pub fn trace_content(started: i64, mirror: &str, serial: &str) -> String {
    format!("{started}\nmirrorfleet-agent {mirror} serial {serial}\n")
}

/// The wait before the fallback run after `every`: `every` ± `jitter` (a fraction, e.g. 0.1),
/// `draw` a uniform random number, so that nodes started together spread out.
pub fn next_fallback(every: Duration, jitter: f64, draw: u64) -> Duration {
    let unit = (draw % 1_000_001) as f64 / 1_000_000.0; // 0..=1
    let factor = 1.0 + jitter.clamp(0.0, 0.9) * (2.0 * unit - 1.0);
    every.mul_f64(factor)
}

/// Whether `payload` is a serial a push may carry: UTF-8, 1–256 bytes once trimmed, no
/// control characters. Returns it trimmed, or why not.
pub fn push_serial(payload: &[u8]) -> Result<&str, String> {
    if payload.len() > 1024 {
        return Err(format!("payload of {} bytes (at most 1024)", payload.len()));
    }
    let s = std::str::from_utf8(payload)
        .map_err(|_| "payload is not UTF-8".to_owned())?
        .trim();
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        return Err("payload is empty, over 256 bytes, or has control characters".to_owned());
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
