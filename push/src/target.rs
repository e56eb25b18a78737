//! Where a project's new serial is announced — pure: the MQTT topic (the Project's
//! `spec.push.topic`, else `rsync/<origin host>/<project>`, the form `mqtt-exec -t
//! 'rsync/<hub>/#'` subscribers expect). The function lives in `mirrorfleet-crds`
//! (`state::duties`) so that the redirector's description of a mirror's duties names the same
//! topic without depending on this crate; the tests here pin what publishers use.

pub use mirrorfleet_crds::state::duties::topic;

#[cfg(test)]
mod tests {
    use super::*;
    use mirrorfleet_crds::state::{ProjectState, PushState, SourceState};

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
