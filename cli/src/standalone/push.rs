//! The serial announcer: follows the store and, for each project whose index got a new
//! serial, hands the project and serial to the [`Pusher`] (MQTT, the Project's webhook).
//!
//! It must not wait on a broker or webhook ([`Pusher::announce`] returns at once), and it
//! announces only what the store holds: an index the sources task failed to store is never
//! announced. The serials held at start are not new.

use std::collections::HashMap;
use std::sync::Arc;

use mirrorfleet_crds::state::{FleetState, IndexMeta};
use mirrorfleet_push::Pusher;
use mirrorfleet_store::LoadedState;
use tokio::sync::watch;

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
