//! What one mirror's node has to do, as the fleet says: the projects it carries, the sub-trees,
//! where each syncs from (the hub's rsync URL), the MQTT topic its new serials are announced
//! on, the pace, and whether a sync runs in two stages. The redirector serves it publicly as
//! `/-/mirrors/<name>.json`; `mirrorfleet agent` reads it. Pure: built from a [`FleetState`],
//! no I/O. Nothing private goes in (no contacts, notes, or the mirror's own scan URLs); the
//! hub's rsync URL is a Project's public source, refused with credentials by validation.

use serde::{Deserialize, Serialize};

use super::fleet::{FleetState, MirrorState, ProjectState};

/// The pace of a mirror that declares no `bandwidthMbps`, in Mbit/s (what micro mirrors
/// run with by hand: `rsync --bwlimit=25M`).
pub const DEFAULT_PACE_MBPS: u64 = 200;

/// The share of a mirror's declared bandwidth its syncs may use, in percent (200 Mbit/s of a
/// 1 Gbit/s port, as above), so that a fleet pulling from one hub in lockstep leaves the
/// hosting networks room to serve.
pub const PACE_PERCENT: u64 = 20;

/// A mirror's duties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorDuties {
    /// The mirror.
    pub mirror: String,
    /// Syncs are paced at this many Mbit/s (all projects together: one runs at a time per
    /// project, each at this pace).
    pub pace_mbps: u64,
    /// The projects it carries, by name.
    pub projects: Vec<ProjectDuty>,
}

/// One project a mirror carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectDuty {
    /// Project name.
    pub project: String,
    /// Where the tree goes on the node, relative to its mirror root: `<project>/` (a hint;
    /// the agent's `--root` is the base).
    pub directory: String,
    /// Sub-trees carried (relative, ending with `/`); empty for the whole project.
    #[serde(default)]
    pub paths: Vec<String>,
    /// The rsync URL mirrors sync from: the Project's `spec.push.rsync`, else its rsync source.
    #[serde(default)]
    pub hub_rsync: Option<String>,
    /// The MQTT topic its new serials are announced on, when known without the publisher's
    /// `--push-hub` (a local source without `spec.push.topic` has none here).
    #[serde(default)]
    pub topic: Option<String>,
    /// The serial of the index the fleet has, if any.
    #[serde(default)]
    pub serial: Option<String>,
    /// The trace file the node rewrites after each sync (relative), if the project has one.
    #[serde(default)]
    pub trace_file: Option<String>,
    /// Index and metadata globs (the Project's `pathClasses.mutable`): when any are given the
    /// sync runs in two stages, content first without them, then everything with deletions.
    #[serde(default)]
    pub index_globs: Vec<String>,
}

impl ProjectDuty {
    /// Whether a sync of this project runs in two stages.
    pub fn two_stage(&self) -> bool {
        !self.index_globs.is_empty()
    }
}

/// The pace of `mirror`: [`PACE_PERCENT`] of its declared bandwidth (at least 1 Mbit/s), else
/// [`DEFAULT_PACE_MBPS`].
pub fn pace_mbps(mirror: &MirrorState) -> u64 {
    match mirror.bandwidth_mbps {
        Some(bw) => (bw.saturating_mul(PACE_PERCENT) / 100).max(1),
        None => DEFAULT_PACE_MBPS,
    }
}

/// The duties of the mirror named `name` in `fleet`, or `None` when there is no such mirror;
/// `serial` gives a project's current serial.
pub fn of(
    fleet: &FleetState,
    name: &str,
    serial: impl Fn(&str) -> Option<String>,
) -> Option<MirrorDuties> {
    let mirror = fleet.mirror(name)?;
    Some(of_mirror(mirror, |p| fleet.project(p), serial))
}

/// The duties of `mirror`, its projects looked up by `project` (those it does not find are
/// left out) and their serials by `serial`.
pub fn of_mirror<'f>(
    mirror: &MirrorState,
    project: impl Fn(&str) -> Option<&'f ProjectState>,
    serial: impl Fn(&str) -> Option<String>,
) -> MirrorDuties {
    let projects = mirror
        .projects
        .iter()
        .filter_map(|carried| {
            let p = project(&carried.project)?;
            Some(ProjectDuty {
                project: p.name.clone(),
                directory: format!("{}/", p.name),
                paths: carried.paths.clone(),
                hub_rsync: p.push.rsync.clone().or_else(|| p.source.rsync.clone()),
                topic: announced_topic(p),
                serial: serial(&p.name),
                trace_file: p.trace_file.clone(),
                index_globs: p.mutable.clone(),
            })
        })
        .collect();
    MirrorDuties {
        mirror: mirror.name.clone(),
        pace_mbps: pace_mbps(mirror),
        projects,
    }
}

/// The MQTT topic of `p`'s announcements: the Project's `spec.push.topic`, else
/// `rsync/<origin host>/<project>` (the form `mqtt-exec -t 'rsync/<hub>/#'` subscribers
/// expect), the origin host being the host of its rsync or HTTP source; a local source (or a
/// URL without a host) is announced under `hub`.
pub fn topic(p: &ProjectState, hub: &str) -> String {
    announced_topic(p).unwrap_or_else(|| format!("rsync/{hub}/{}", p.name))
}

/// [`topic`] when it does not depend on the publisher's hub name.
pub fn announced_topic(p: &ProjectState) -> Option<String> {
    if let Some(t) = p.push.topic.as_deref().filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    [&p.source.rsync, &p.source.http]
        .into_iter()
        .flatten()
        .find_map(|u| host(u))
        .map(|h| format!("rsync/{h}/{}", p.name))
}

/// The host of `url` (`scheme://[user@]host[:port]/…`), lower-cased, without port or IPv6
/// brackets.
fn host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MirrorProjectState, PushState, SourceState};

    fn project(source: SourceState, topic: Option<&str>) -> ProjectState {
        ProjectState {
            name: "demo".into(),
            source,
            push: PushState {
                topic: topic.map(str::to_owned),
                webhook: None,
                rsync: None,
            },
            ..Default::default()
        }
    }

    fn rsync(url: &str) -> SourceState {
        SourceState {
            rsync: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn topics() {
        let http = SourceState {
            http: Some("https://DL.example.net:8443/pub/demo/".into()),
            ..Default::default()
        };
        let local = SourceState {
            local: Some("/srv/demo".into()),
            ..Default::default()
        };
        let cases = [
            (
                "an rsync source: its host",
                project(rsync("rsync://rsync.example.org/demo/"), None),
                "rsync/rsync.example.org/demo",
            ),
            (
                "an HTTP source: its host, lower-cased, no port",
                project(http, None),
                "rsync/dl.example.net/demo",
            ),
            (
                "an IPv6 host: no brackets",
                project(rsync("rsync://[::1]:8873/demo/"), None),
                "rsync/::1/demo",
            ),
            (
                "a local source: the hub",
                project(local, None),
                "rsync/hub.local/demo",
            ),
            (
                "the Project's topic wins",
                project(rsync("rsync://h/demo/"), Some("mirrors/demo/updated")),
                "mirrors/demo/updated",
            ),
            (
                "an empty topic is no topic",
                project(rsync("rsync://h/demo/"), Some("")),
                "rsync/h/demo",
            ),
        ];
        for (rule, p, want) in cases {
            assert_eq!(topic(&p, "hub.local"), want, "{rule}");
        }
    }

    #[test]
    fn paces() {
        let mut m = MirrorState::test("m");
        let cases = [
            ("no bandwidth declared: the default", None, 200),
            ("a 1 Gbit/s port: a fifth", Some(1000), 200),
            ("10 Gbit/s", Some(10_000), 2000),
            ("never 0 (rsync's unlimited)", Some(3), 1),
        ];
        for (rule, bw, want) in cases {
            m.bandwidth_mbps = bw;
            assert_eq!(pace_mbps(&m), want, "{rule}");
        }
    }

    #[test]
    fn duties_of_a_mirror() {
        let mut p = project(rsync("rsync://hub.example/demo/"), None);
        p.trace_file = Some("TIME".into());
        p.mutable = vec!["**/repomd.xml".into()];
        let other = ProjectState {
            name: "other".into(),
            ..Default::default()
        };
        let mut m = MirrorState::test("m1");
        m.bandwidth_mbps = Some(40);
        m.projects = vec![
            MirrorProjectState {
                project: "demo".into(),
                paths: vec!["isos/".into()],
                ..Default::default()
            },
            MirrorProjectState {
                project: "gone".into(),
                ..Default::default()
            },
        ];
        let fleet = FleetState {
            projects: vec![p, other],
            mirrors: vec![m],
            ..Default::default()
        };
        let d = of(&fleet, "m1", |p| Some(format!("serial-of-{p}"))).expect("m1 is there");
        assert_eq!(d.pace_mbps, 8);
        assert_eq!(d.projects.len(), 1, "an unknown project is left out");
        let demo = &d.projects[0];
        assert_eq!(demo.hub_rsync.as_deref(), Some("rsync://hub.example/demo/"));
        assert_eq!(demo.topic.as_deref(), Some("rsync/hub.example/demo"));
        assert_eq!(demo.paths, ["isos/"]);
        assert_eq!(demo.serial.as_deref(), Some("serial-of-demo"));
        assert!(demo.two_stage());
        assert!(of(&fleet, "nope", |_| None).is_none());
        let mut local = fleet.clone();
        local.projects[0].source = SourceState {
            local: Some("/srv/demo".into()),
            ..Default::default()
        };
        local.projects[0].push.rsync = Some("rsync://hub.example/pub/demo/".into());
        let d2 = of(&local, "m1", |_| None).expect("m1 is there");
        assert_eq!(
            d2.projects[0].hub_rsync.as_deref(),
            Some("rsync://hub.example/pub/demo/"),
            "a local source: spec.push.rsync"
        );
        let json = serde_json::to_string(&d).expect("serialises");
        assert!(json.contains("\"hubRsync\""), "{json}");
        let back: MirrorDuties = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, d);
    }
}
