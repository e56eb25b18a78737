//! Where a project's new serial is announced — pure: the MQTT topic (the Project's
//! `spec.push.topic`, else `rsync/<origin host>/<project>`, the form `mqtt-exec -t
//! 'rsync/<hub>/#'` subscribers expect). The function lives in `mirrorfleet-crds`
//! (`state::duties`) so that the redirector's description of a mirror's duties names the same
//! topic without depending on this crate; its tests there pin what publishers use.

pub use mirrorfleet_crds::state::duties::topic;
