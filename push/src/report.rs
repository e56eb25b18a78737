//! Sync reports from mirrors: a mirror (or its agent) publishes "synced serial N" on
//! `mirrorfleet/report/<mirror>` as JSON `{"project": …, "serial": …}`. A report is a hint,
//! never trusted alone: the caller only uses it to scan that (mirror, project) sooner.
//!
//! Parsing ([`parse`]), checking against the fleet ([`check`]) and the per-mirror rate limit
//! ([`RateLimit`]) are pure; [`subscribe`] is the thin MQTT shell. Nothing here scans.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mirrorfleet_crds::state::FleetState;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::Broker;

/// The topic filter reports are read from under `prefix` (e.g. `mirrorfleet/report`).
pub fn filter(prefix: &str) -> String {
    format!("{}/+", prefix.trim_end_matches('/'))
}

/// A mirror's report, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The mirror, from the topic.
    pub mirror: String,
    /// The project it says it synced.
    pub project: String,
    /// The serial it says it has.
    pub serial: String,
}

#[derive(Deserialize)]
struct Payload {
    project: String,
    serial: serde_json::Value,
}

/// The report in a publish on `topic` under `prefix`, or why it is not one.
pub fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Result<Report, String> {
    let prefix = prefix.trim_end_matches('/');
    let mirror = topic
        .strip_prefix(prefix)
        .and_then(|t| t.strip_prefix('/'))
        .filter(|m| !m.is_empty() && !m.contains('/'))
        .ok_or_else(|| format!("topic {topic:?} is not {prefix}/<mirror>"))?;
    if payload.len() > 4096 {
        return Err(format!("payload of {} bytes (at most 4096)", payload.len()));
    }
    let p: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("payload is not {{\"project\": …, \"serial\": …}}: {e}"))?;
    let serial = match p.serial {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(format!("serial {other} is neither a string nor a number")),
    };
    let valid = |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
    if !valid(&p.project) || !valid(&serial) {
        return Err("empty, overlong or control characters in project or serial".to_owned());
    }
    Ok(Report {
        mirror: mirror.to_owned(),
        project: p.project,
        serial,
    })
}

/// Whether `report` names a mirror of `fleet` that carries the project it names; else why
/// not (for the log line).
pub fn check(report: &Report, fleet: &FleetState) -> Result<(), String> {
    let mirror = fleet
        .mirror(&report.mirror)
        .ok_or_else(|| format!("no mirror {:?} in the fleet", report.mirror))?;
    if !mirror.projects.iter().any(|p| p.project == report.project) {
        return Err(format!(
            "mirror {:?} does not carry project {:?}",
            report.mirror, report.project
        ));
    }
    Ok(())
}

/// At most one report acted on per (mirror, project) every `every`: an agent reporting
/// each of its projects in turn has every report heard.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: HashMap<(String, String), Instant>,
}

impl RateLimit {
    /// A limit of one report per (mirror, project) every `every`.
    pub fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: HashMap::new(),
        }
    }

    /// Whether a report of `mirror` about `project` at `now` may be acted on (and if so, it
    /// is counted). Only reports [`check`] accepted should come here: the keys stay bounded
    /// by the fleet.
    pub fn allow(&mut self, mirror: &str, project: &str, now: Instant) -> bool {
        let key = (mirror.to_owned(), project.to_owned());
        match self.last.get(&key) {
            Some(t) if now.saturating_duration_since(*t) < self.every => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

/// Reads reports under `prefix` from `broker` until the receiver is dropped, reconnecting
/// with backoff; garbage is logged and skipped. Reports beyond the channel's room are dropped
/// (they are hints; the next one will do).
pub fn subscribe(broker: Broker, prefix: &str) -> mpsc::Receiver<Report> {
    listen(broker, prefix, "reports", "sync report", parse)
}

/// Where archive scripts (or the hub's own hooks) ask for a project to be indexed now:
/// `<prefix>/<project>`, any payload up to 4 KiB (ignored). Whoever may publish there may
/// make the source indexed: restrict it with the broker's ACLs.
pub const PUBLISH: &str = "mirrorfleet/publish";

/// The project a publish request on `topic` under `prefix` names, or why it is not one.
pub fn parse_publish(prefix: &str, topic: &str, payload: &[u8]) -> Result<String, String> {
    let prefix = prefix.trim_end_matches('/');
    let project = topic
        .strip_prefix(prefix)
        .and_then(|t| t.strip_prefix('/'))
        .filter(|p| !p.is_empty() && !p.contains('/') && p.len() <= 253)
        .ok_or_else(|| format!("topic {topic:?} is not {prefix}/<project>"))?;
    if payload.len() > 4096 {
        return Err(format!("payload of {} bytes (at most 4096)", payload.len()));
    }
    Ok(project.to_owned())
}

/// Reads publish requests under `prefix` ([`PUBLISH`]) from `broker`, as [`subscribe`] reads
/// reports: the projects named, to be checked against the fleet by the caller.
pub fn subscribe_publishes(broker: Broker, prefix: &str) -> mpsc::Receiver<String> {
    listen(
        broker,
        prefix,
        "publishes",
        "publish request",
        parse_publish,
    )
}

/// Subscribes to `<prefix>/+` as client `<id>-<suffix>` until the receiver is dropped,
/// reconnecting with backoff, and sends what `parse` accepts; what it refuses is logged as an
/// ignored `what`.
fn listen<T: Send + 'static>(
    broker: Broker,
    prefix: &str,
    suffix: &'static str,
    what: &'static str,
    parse: fn(&str, &str, &[u8]) -> Result<T, String>,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel(256);
    let prefix = prefix.trim_end_matches('/').to_owned();
    tokio::spawn(async move {
        let options = broker.options_as(format!("{}-{suffix}", broker.client_id));
        let mut wait = broker.backoff_min;
        loop {
            let (client, mut events) = AsyncClient::new(options.clone(), 8);
            if client
                .subscribe(filter(&prefix), QoS::AtLeastOnce)
                .await
                .is_err()
            {
                return;
            }
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => wait = broker.backoff_min,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        match parse(&prefix, &p.topic, &p.payload) {
                            Ok(r) => {
                                if tx.is_closed() {
                                    return;
                                }
                                let _ = tx.try_send(r);
                            }
                            Err(why) => {
                                tracing::info!(topic = %p.topic, %why, "ignored a {what}")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %mirrorfleet_runtime::error_chain(&e), retry_in = ?wait, "{what}s: MQTT connection failed");
                        break;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(broker.backoff_max);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_requests_name_one_project() {
        let p = "mirrorfleet/publish";
        assert_eq!(
            parse_publish(p, "mirrorfleet/publish/debian", b""),
            Ok("debian".into())
        );
        assert_eq!(
            parse_publish(p, "mirrorfleet/publish/debian", b"20261202"),
            Ok("debian".into())
        );
        for topic in [
            "mirrorfleet/publish",
            "mirrorfleet/publish/",
            "mirrorfleet/publish/a/b",
            "other/debian",
        ] {
            assert!(parse_publish(p, topic, b"").is_err(), "{topic}");
        }
        assert!(parse_publish(p, "mirrorfleet/publish/debian", &[0; 4097]).is_err());
    }

    #[test]
    fn reports() {
        let ok = parse(
            "mirrorfleet/report",
            "mirrorfleet/report/m1",
            br#"{"project":"demo","serial":"42"}"#,
        );
        assert_eq!(
            ok,
            Ok(Report {
                mirror: "m1".into(),
                project: "demo".into(),
                serial: "42".into()
            })
        );
        let number = parse(
            "mirrorfleet/report/",
            "mirrorfleet/report/m1",
            br#"{"project":"demo","serial":42}"#,
        );
        assert_eq!(
            number.map(|r| r.serial),
            Ok("42".into()),
            "a numeric serial"
        );
        for (rule, topic, payload) in [
            ("not JSON", "mirrorfleet/report/m1", &b"synced 42"[..]),
            ("no project", "mirrorfleet/report/m1", br#"{"serial":"42"}"#),
            (
                "a serial that is an object",
                "mirrorfleet/report/m1",
                br#"{"project":"demo","serial":{}}"#,
            ),
            (
                "an empty project",
                "mirrorfleet/report/m1",
                br#"{"project":"","serial":"1"}"#,
            ),
            (
                "no mirror in the topic",
                "mirrorfleet/report/",
                br#"{"project":"demo","serial":"1"}"#,
            ),
            (
                "a deeper topic",
                "mirrorfleet/report/m1/x",
                br#"{"project":"demo","serial":"1"}"#,
            ),
            (
                "another prefix",
                "other/m1",
                br#"{"project":"demo","serial":"1"}"#,
            ),
        ] {
            assert!(
                parse("mirrorfleet/report", topic, payload).is_err(),
                "{rule}"
            );
        }
        assert_eq!(filter("mirrorfleet/report/"), "mirrorfleet/report/+");
    }

    #[test]
    fn a_report_counts_only_for_a_mirror_carrying_the_project() {
        use mirrorfleet_crds::state::{MirrorProjectState, MirrorState};
        let fleet = FleetState {
            mirrors: vec![MirrorState {
                name: "m1".into(),
                projects: vec![MirrorProjectState {
                    project: "demo".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let report = |mirror: &str, project: &str| Report {
            mirror: mirror.into(),
            project: project.into(),
            serial: "1".into(),
        };
        assert_eq!(check(&report("m1", "demo"), &fleet), Ok(()));
        assert!(
            check(&report("m2", "demo"), &fleet).is_err(),
            "an unknown mirror"
        );
        assert!(
            check(&report("m1", "other"), &fleet).is_err(),
            "a project it does not carry"
        );
    }

    #[test]
    fn reports_are_rate_limited_per_mirror() {
        let mut limit = RateLimit::new(Duration::from_secs(60));
        let t = Instant::now();
        assert!(limit.allow("m1", "p", t));
        assert!(
            !limit.allow("m1", "p", t + Duration::from_secs(59)),
            "too soon"
        );
        assert!(
            limit.allow("m2", "p", t + Duration::from_secs(1)),
            "another mirror has its own"
        );
        assert!(
            limit.allow("m1", "p", t + Duration::from_secs(60)),
            "after the interval"
        );
    }
}
