//! The serial announcer: follows the store and, for each project whose index got a new
//! serial, hands the project and serial to the [`Pusher`] (MQTT, the Project's webhook).
//! And the other way: mirrors' sync reports ([`follow_reports`]) become targeted checks.
//!
//! It must not wait on a broker or webhook ([`Pusher::announce`] returns at once), and it
//! announces only what the store holds: an index the sources task failed to store is never
//! announced. The serials held at start are not new.

use std::collections::HashMap;
use std::sync::Arc;

use mirrorfleet_crds::state::{FleetState, IndexMeta};
use mirrorfleet_push::{Broker, Pusher, report};
use mirrorfleet_store::LoadedState;
use tokio::sync::{mpsc, watch};

/// Where mirrors publish their sync reports: `<prefix>/<mirror>`.
pub const REPORTS: &str = "mirrorfleet/report";

/// At most one report acted on per (mirror, project) in this time (a report costs a round
/// of HEADs, or a scan).
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads sync reports from `broker` and sends each (mirror, project) the fleet has to
/// `checks`, at most one per pair every [`REPORT_EVERY`]: a report is a hint that targeted
/// checks (or a scan) verify, never trusted alone. Reports of unknown mirrors, of projects a
/// mirror does not carry, and garbage (logged by [`report::subscribe`]) change nothing. Runs
/// until `checks` closes.
pub async fn follow_reports(
    broker: Broker,
    fleet: watch::Receiver<Arc<FleetState>>,
    checks: mpsc::Sender<(String, String)>,
) {
    let mut reports = report::subscribe(broker, REPORTS);
    let mut limit = report::RateLimit::new(REPORT_EVERY);
    while let Some(r) = reports.recv().await {
        if let Err(why) = report::check(&r, &fleet.borrow()) {
            tracing::warn!(mirror = %r.mirror, project = %r.project, %why, "sync report ignored");
            continue;
        }
        if !limit.allow(&r.mirror, &r.project, std::time::Instant::now()) {
            tracing::debug!(mirror = %r.mirror, "sync report within the rate limit; ignored");
            continue;
        }
        tracing::info!(mirror = %r.mirror, project = %r.project, serial = %r.serial, "sync reported");
        if checks.send((r.mirror, r.project)).await.is_err() {
            return;
        }
    }
    // The subscription ended (it only does when its task stops): nothing more will come.
    checks.closed().await;
}

/// At most one MQTT publish request acted on per project in this time.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads publish requests (`mirrorfleet/publish/<project>`, [`report::PUBLISH`]) from
/// `broker` and asks the source indexer to index each project of the fleet at once, at most
/// once a second per project; requests naming no project of the fleet are logged and change
/// nothing.
pub async fn follow_publishes(broker: Broker, publisher: super::Publisher) {
    let mut requests = report::subscribe_publishes(broker, report::PUBLISH);
    let mut limit = report::RateLimit::new(PUBLISH_EVERY);
    while let Some(project) = requests.recv().await {
        if !limit.allow("", &project, std::time::Instant::now()) {
            continue;
        }
        if publisher.publish(&project) {
            tracing::info!(%project, "publish requested over MQTT; indexing it now");
        } else {
            tracing::warn!(%project, "publish request ignored: no such project in the fleet");
        }
    }
}

/// Announces each index serial in `state` that is not in `last` (what the store held when
/// standalone started), until `state` closes.
pub async fn announce_serials(
    mut last: HashMap<String, Arc<IndexMeta>>,
    mut state: watch::Receiver<Arc<LoadedState>>,
    fleet: watch::Receiver<Arc<FleetState>>,
    pusher: Pusher,
) {
    state.mark_changed();
    while state.changed().await.is_ok() {
        let now = state.borrow_and_update().index_meta.clone();
        let fleet = fleet.borrow().clone();
        for (project, serial) in mirrorfleet_push::new_serials(&last, &now) {
            match fleet.project(project) {
                Some(p) => pusher.announce(p, serial),
                None => {
                    tracing::debug!(%project, %serial, "an index of a project not in the fleet; not announced")
                }
            }
        }
        last = now;
    }
}
