//! Health-check targets: what the [`mirrorfleet_health::Checker`] probes, computed from the
//! fleet, the indexes and the availability (canaries are files a mirror was found to hold),
//! again whenever one of those changes, and sent on the checker's watch channel when the
//! targets differ from those it has.
//!
//! It must not recompute on changes that cannot alter the targets (the checker's own health
//! writes change the store too), nor compute on the runtime's worker threads: a large index
//! is walked to find a canary.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use mirrorfleet_crds::state::FleetState;
use mirrorfleet_health::checker::{self, Target};
use mirrorfleet_store::LoadedState;
use tokio::sync::watch;

/// Sends the targets of `fleet` and `state` on `targets` until either input closes or nobody
/// receives the targets any more.
pub async fn publish_targets(
    mut fleet: watch::Receiver<Arc<FleetState>>,
    mut state: watch::Receiver<Arc<LoadedState>>,
    targets: watch::Sender<Arc<Vec<Target>>>,
) {
    let mut computed_from: Option<(Arc<FleetState>, Arc<LoadedState>)> = None;
    loop {
        let f = fleet.borrow_and_update().clone();
        let s = state.borrow_and_update().clone();
        let stale = computed_from
            .as_ref()
            .is_none_or(|(cf, cs)| !Arc::ptr_eq(cf, &f) || !same_inputs(cs, &s));
        if stale {
            let (fc, sc) = (f.clone(), s.clone());
            match tokio::task::spawn_blocking(move || {
                checker::targets(&fc, &sc.indexes, &sc.availability)
            })
            .await
            {
                Ok(new) => {
                    targets.send_if_modified(|held| {
                        let changed = **held != new;
                        if changed {
                            tracing::debug!(targets = new.len(), "health targets changed");
                            *held = Arc::new(new);
                        }
                        changed
                    });
                    computed_from = Some((f, s));
                }
                Err(e) => tracing::error!(error = %e, "computing the health targets failed"),
            }
        }
        tokio::select! {
            changed = fleet.changed() => if changed.is_err() { return },
            changed = state.changed() => if changed.is_err() { return },
            () = targets.closed() => return,
        }
    }
}

/// Whether `a` and `b` hold the same indexes and availability. The store follower shares
/// every value it did not re-read, so the same value is the same allocation.
fn same_inputs(a: &LoadedState, b: &LoadedState) -> bool {
    same_values(&a.indexes, &b.indexes) && same_values(&a.availability, &b.availability)
}

fn same_values<K: Eq + Hash, V>(a: &HashMap<K, Arc<V>>, b: &HashMap<K, Arc<V>>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| Arc::ptr_eq(v, w)))
}

#[cfg(test)]
mod tests;
