//! Where a project's new serial is announced — pure: the MQTT topic (the Project's
//! `spec.push.topic`, else `rsync/<origin host>/<project>`, the form `mqtt-exec -t
//! 'rsync/<hub>/#'` subscribers expect) and the webhook, if any.

use mirrorfleet_crds::state::ProjectState;

/// The MQTT topic of `p`'s announcements. The origin host is the host of its rsync or HTTP
/// source; a local source (or a URL without a host) is announced under `hub`.
pub fn topic(p: &ProjectState, hub: &str) -> String {
    if let Some(t) = p.push.topic.as_deref().filter(|t| !t.is_empty()) {
        return t.to_owned();
    }
    let host = [&p.source.rsync, &p.source.http]
        .into_iter()
        .flatten()
        .find_map(|u| url::Url::parse(u).ok()?.host_str().map(str::to_owned));
    format!("rsync/{}/{}", host.as_deref().unwrap_or(hub), p.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mirrorfleet_crds::state::{PushState, SourceState};

    fn project(source: SourceState, topic: Option<&str>) -> ProjectState {
        ProjectState {
            name: "demo".into(),
            source,
            push: PushState {
                topic: topic.map(str::to_owned),
                webhook: None,
            },
            ..Default::default()
        }
    }

    #[test]
    fn topics() {
        let rsync = SourceState {
            rsync: Some("rsync://rsync.example.org/demo/".into()),
            ..Default::default()
        };
        let http = SourceState {
            http: Some("https://dl.example.net:8443/pub/demo/".into()),
            ..Default::default()
        };
        let local = SourceState {
            local: Some("/srv/demo".into()),
            ..Default::default()
        };
        let cases = [
            (
                "an rsync source: its host",
                project(rsync.clone(), None),
                "rsync/rsync.example.org/demo",
            ),
            (
                "an HTTP source: its host, no port",
                project(http, None),
                "rsync/dl.example.net/demo",
            ),
            (
                "a local source: the hub",
                project(local, None),
                "rsync/hub.local/demo",
            ),
            (
                "the Project's topic wins",
                project(rsync.clone(), Some("mirrors/demo/updated")),
                "mirrors/demo/updated",
            ),
            (
                "an empty topic is no topic",
                project(rsync, Some("")),
                "rsync/rsync.example.org/demo",
            ),
        ];
        for (rule, p, want) in cases {
            assert_eq!(topic(&p, "hub.local"), want, "{rule}");
        }
    }
}
