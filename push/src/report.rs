//! Sync reports from mirrors: a mirror (or its agent) publishes "synced serial N" on
//! `mirrorfleet/report/<mirror>` as JSON `{"project": …, "serial": …}`. A report is a hint,
//! never trusted alone: the caller only uses it to scan that (mirror, project) sooner.
//!
//! Parsing is pure ([`parse`]); it must not decide whether the mirror or project exists.

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
