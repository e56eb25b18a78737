//! The index follows its source between the interval Jobs (the leader's): an upstream
//! source (rsync or HTTP) is probed cheaply every `scan.metadataRecheckSeconds` (default 5 s)
//! — its trace file, or a `HEAD` of its mutable metadata ([`run::probe_upstream`]) — and an
//! MQTT publish request (`mirrorfleet/publish/<project>`) names a project to index now. Either
//! sets the Project's `scan-requested` annotation, as `mirrorfleet publish --kubernetes` does:
//! the scheduler then starts its index Job at once.
//!
//! It must not index anything itself (Jobs do), nor await a probe in its loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use mirrorfleet_crds::state::ProjectState;
use mirrorfleet_crds::v1alpha1::Project;
use mirrorfleet_runtime::error_chain;
use mirrorfleet_scan::{Limits, run};
use mirrorfleet_store::{LoadedState, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Context;
use crate::jobs::SCAN_REQUESTED;

/// Between two probes of an upstream when its Project does not say.
const RECHECK_DEFAULT: Duration = Duration::from_secs(5);

/// At most one MQTT publish request acted on per project in this time.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Asks for `project`'s source to be indexed now.
pub async fn request_index<S: Store>(ctx: &Context<S>, project: &str, why: &str) {
    let api: Api<Project> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {SCAN_REQUESTED: (ctx.now)().to_string()}}
    });
    match api
        .patch(project, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(%project, why, "indexing the source now");
            ctx.wake_scheduler.notify_one();
        }
        Err(e) => {
            tracing::warn!(%project, why, error = %error_chain(&e), "cannot ask for the source to be indexed")
        }
    }
}

/// Reads MQTT publish requests from `broker` until the task is dropped; each naming a
/// project of the fleet asks for its index, at most once a second per project.
pub async fn follow_publishes<S: Store>(broker: mirrorfleet_push::Broker, ctx: Arc<Context<S>>) {
    use mirrorfleet_push::report;
    let mut requests = report::subscribe_publishes(broker, report::PUBLISH);
    let mut limit = report::RateLimit::new(PUBLISH_EVERY);
    while let Some(project) = requests.recv().await {
        if ctx.latest.borrow().project(&project).is_none() {
            tracing::warn!(%project, "publish request ignored: no such project in the fleet");
            continue;
        }
        if limit.allow("", &project, std::time::Instant::now()) {
            request_index(&ctx, &project, "publish requested over MQTT").await;
        }
    }
}

/// Probes each upstream source on its recheck interval until the task is dropped, asking for
/// an index when its fingerprint changes. The first fingerprint of a project (or after a
/// failed probe) is only remembered.
pub async fn probe_upstreams<S: Store>(
    ctx: Arc<Context<S>>,
    mut state: watch::Receiver<Arc<LoadedState>>,
) {
    let mut last: HashMap<String, String> = HashMap::new();
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut probes: JoinSet<(String, Result<Option<String>, mirrorfleet_scan::ScanError>)> =
        JoinSet::new();
    let mut in_flight: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = state.changed() => if changed.is_err() { return },
            Some(done) = probes.join_next(), if !probes.is_empty() => {
                let Ok((project, result)) = done else { continue };
                in_flight.retain(|p| *p != project);
                match result {
                    Ok(Some(fingerprint)) => {
                        let before = last.insert(project.clone(), fingerprint.clone());
                        if before.is_some_and(|b| b != fingerprint) {
                            request_index(&ctx, &project, "the upstream changed").await;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(%project, error = %error_chain(&e), "upstream probe failed");
                        last.remove(&project);
                    }
                }
                continue;
            }
        }
        let fleet = ctx.latest.borrow().clone();
        let st = state.borrow_and_update().clone();
        let now = Instant::now();
        last.retain(|p, _| fleet.project(p).is_some());
        due.retain(|p, _| fleet.project(p).is_some());
        for p in fleet.projects.iter().filter(|p| upstream(p)) {
            if in_flight.contains(&p.name) || due.get(&p.name).is_some_and(|at| *at > now) {
                continue;
            }
            let every = p.metadata_recheck_seconds.map_or(RECHECK_DEFAULT, |s| {
                Duration::from_secs(u64::from(s.max(1)))
            });
            due.insert(p.name.clone(), now + every);
            in_flight.push(p.name.clone());
            let (project, index) = (p.clone(), st.indexes.get(&p.name).cloned());
            probes.spawn(async move {
                let limits = Limits {
                    io_timeout: Duration::from_secs(10),
                    ..Limits::default()
                };
                let result = run::probe_upstream(&project, index.as_deref(), &limits).await;
                (project.name, result)
            });
        }
    }
}

/// Whether `p`'s source is an upstream (rsync or HTTP), not a local tree.
fn upstream(p: &ProjectState) -> bool {
    p.source.local.is_none() && (p.source.rsync.is_some() || p.source.http.is_some())
}
