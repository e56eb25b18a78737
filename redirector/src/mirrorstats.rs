//! `?mirrorstats` (on any path, like Mirrorbits): the whole fleet as the redirectors see it —
//! every mirror with its sponsor, country, public URLs per project, health per scheme and
//! address family with the reason, and today's redirects and bytes for the whole fleet (read
//! back from the store by the stats task, so the request itself never reads the store), the
//! fallback redirects among them apart, and those of files not indexed yet apart again. HTML,
//! or JSON with `&json` / `Accept: application/json`: a public list of mirrors for tools that
//! used to scrape one. Never contacts, notes, scan URLs (rsync/FTP may hold credentials) or
//! client networks.

use std::fmt::Write;

use hyper::Response;
use serde_json::json;

use crate::respond::{Body, esc, private_json, private_page};
use mirrorfleet_geo::cc_str;

use crate::snapshot::{Mirror, Snapshot};
use crate::stats::{FleetCounts, UNINDEXED};

/// (label, https, IPv6) of the four health entries.
const PROBES: [(&str, bool, bool); 4] = [
    ("HTTP IPv4", false, false),
    ("HTTP IPv6", false, true),
    ("HTTPS IPv4", true, false),
    ("HTTPS IPv6", true, true),
];

/// The health entries a mirror has: the schemes it offers over the families it declares.
fn probes(m: &Mirror) -> impl Iterator<Item = (&'static str, Option<bool>, &str)> + '_ {
    let http = m.state.projects.iter().any(|p| p.http.is_some());
    let https = m.state.projects.iter().any(|p| p.https.is_some());
    PROBES.iter().filter_map(move |&(label, tls, v6)| {
        let offered = if tls { https } else { http };
        let family = if v6 { m.state.ipv6 } else { m.state.ipv4 };
        (offered && family).then(|| {
            let h = m.health(tls, v6);
            (label, h.up, h.reason.as_str())
        })
    })
}

/// Mirrors by today's redirects (most first), then by name.
fn ranked<'s>(snap: &'s Snapshot, counts: &FleetCounts) -> Vec<&'s Mirror> {
    let mut mirrors: Vec<&Mirror> = snap.mirrors.iter().collect();
    let today = |m: &Mirror| counts.redirects.get(&m.state.name).copied().unwrap_or(0);
    mirrors.sort_by(|a, b| {
        today(b)
            .cmp(&today(a))
            .then_with(|| a.state.name.cmp(&b.state.name))
    });
    mirrors
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The JSON form.
pub fn json(snap: &Snapshot, counts: &FleetCounts) -> Response<Body> {
    let mirrors: Vec<serde_json::Value> = ranked(snap, counts)
        .into_iter()
        .map(|m| {
            let name = &m.state.name;
            json!({
                "name": name,
                "sponsor": m.sponsor.0,
                "sponsorUrl": m.sponsor.1,
                "country": m.country.map(cc_str),
                "continent": m.continent.map(|c| c.code()),
                "enabled": m.state.enabled,
                "ipv4": m.state.ipv4,
                "ipv6": m.state.ipv6,
                "projects": m.state.projects.iter().map(|p| json!({
                    "project": p.project,
                    "http": p.http,
                    "https": p.https,
                    "paths": p.paths,
                })).collect::<Vec<_>>(),
                "health": probes(m).map(|(probe, up, reason)| json!({
                    "probe": probe,
                    "up": up,
                    "reason": (!reason.is_empty()).then_some(reason),
                })).collect::<Vec<_>>(),
                "today": {
                    "redirects": counts.redirects.get(name).copied().unwrap_or(0),
                    "bytes": counts.bytes.get(name).copied().unwrap_or(0),
                },
            })
        })
        .collect();
    let body = json!({
        "day": counts.day,
        "countsReadAt": counts.read_at,
        "countsError": counts.error,
        "today": {
            "redirects": counts.redirects.values().sum::<u64>(),
            "fallbackRedirects": counts.redirects.get("fallback").copied().unwrap_or(0),
            "unindexedRedirects": counts.redirects.get(UNINDEXED).copied().unwrap_or(0),
            "bytes": counts.bytes.values().sum::<u64>(),
        },
        "allTime": counts.total,
        "mirrors": mirrors,
    });
    private_json(&body)
}

/// The HTML page.
pub fn html(snap: &Snapshot, counts: &FleetCounts) -> Response<Body> {
    let mut h = String::with_capacity(4096 + 512 * snap.mirrors.len());
    h.push_str(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Mirror statistics</title>",
    );
    h.push_str("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}.up{color:#070}.down{color:#b00}.unknown{color:#777}</style></head><body>");
    let total: u64 = counts.redirects.values().sum();
    let bytes: u64 = counts.bytes.values().sum();
    let _ = write!(
        h,
        "<h1>Mirror statistics</h1><p>{} mirrors. Today ({} UTC): {total} redirects, {} (fallback: {}; fallback for files not indexed yet: {}).</p>",
        snap.mirrors.len(),
        esc(&counts.day),
        human_bytes(bytes),
        counts.redirects.get("fallback").copied().unwrap_or(0),
        counts.redirects.get(UNINDEXED).copied().unwrap_or(0),
    );
    if let Some(e) = &counts.error {
        let _ = write!(h, "<p>Counts may be stale: {}</p>", esc(e));
    }
    h.push_str("<table><tr><th>Mirror</th><th>Sponsor</th><th>Country</th><th>Projects</th><th>Health</th><th>Redirects today</th><th>Share</th><th>Bytes today</th></tr>");
    for m in ranked(snap, counts) {
        let name = &m.state.name;
        let n = counts.redirects.get(name).copied().unwrap_or(0);
        let sponsor = match &m.sponsor.1 {
            Some(url) => format!("<a href=\"{}\">{}</a>", esc(url), esc(&m.sponsor.0)),
            None => esc(&m.sponsor.0),
        };
        let mut projects = String::new();
        for p in &m.state.projects {
            let _ = write!(projects, "{}", esc(&p.project));
            for url in [&p.https, &p.http].into_iter().flatten() {
                let _ = write!(projects, " <a href=\"{u}\">{u}</a>", u = esc(url));
            }
            projects.push_str("<br>");
        }
        let mut health = String::new();
        if !m.state.enabled {
            health.push_str("<span class=\"unknown\">disabled</span><br>");
        }
        for (probe, up, reason) in probes(m) {
            let (class, word) = match up {
                Some(true) => ("up", "up"),
                Some(false) => ("down", "down"),
                None => ("unknown", "not probed yet"),
            };
            let _ = write!(health, "{probe}: <span class=\"{class}\">{word}</span>");
            if up == Some(false) && !reason.is_empty() {
                let _ = write!(health, " ({})", esc(reason));
            }
            health.push_str("<br>");
        }
        let share = if total > 0 {
            n as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{sponsor}</td><td>{}</td><td>{projects}</td><td>{health}</td><td>{n}</td><td>{share:.1} %</td><td>{}</td></tr>",
            esc(name),
            m.country.map(cc_str).unwrap_or_default(),
            human_bytes(counts.bytes.get(name).copied().unwrap_or(0)),
        );
    }
    h.push_str("</table></body></html>");
    private_page(h, "text/html; charset=utf-8")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1023), "1023 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(5 << 30), "5.0 GiB");
    }
}
