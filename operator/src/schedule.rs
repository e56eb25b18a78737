//! Scan scheduling, every [`TICK`]: the health checker's probe targets follow the fleet and
//! the scans, and the scan Jobs that are due start, within the cap on concurrent scans. A
//! Mirror's `scan-requested` annotation is removed once its Jobs exist; a mirror back from a
//! long outage has every project scanned again, then the checker is told so.
//!
//! It must not probe (the checker does) nor write the store (the scans do, in their Jobs):
//! its only writes are Job creations and the annotation's removal. One step
//! ([`Scheduler::step`]) decides from what it is given, so that it can be tested alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::{Client, ResourceExt};
use mirrorfleet_crds::state::FleetState;
use mirrorfleet_crds::v1alpha1::Mirror;
use mirrorfleet_health::checker::{self, Target};
use mirrorfleet_runtime::error_chain;
use mirrorfleet_store::{LoadedState, Store};
use tokio::sync::{mpsc, watch};

use crate::jobs::{self, Due, JobSettings, LABEL_MIRROR, LABEL_PROJECT, SCAN_REQUESTED, ScanFacts};
use crate::{Context, Error};

/// How often the scheduler looks.
pub const TICK: Duration = Duration::from_secs(10);

/// The label selector of every scan Job.
pub const SCAN_JOBS: &str = "app.kubernetes.io/component=scan";

/// Starts the scan Jobs of one namespace.
#[derive(Clone)]
pub struct Scheduler {
    client: Client,
    namespace: String,
    jobs: JobSettings,
    interval_seconds: i64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("namespace", &self.namespace)
            .field("jobs", &self.jobs)
            .field("interval_seconds", &self.interval_seconds)
            .finish_non_exhaustive()
    }
}

/// A scan Job created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The mirror scanned.
    pub mirror: String,
    /// The project scanned.
    pub project: String,
    /// The Job's name.
    pub job: String,
    /// Why now.
    pub due: Due,
}

/// What one step did, also when it stopped early.
#[derive(Debug, Default)]
pub struct Step {
    /// The Jobs created, in the fleet's order.
    pub started: Vec<Started>,
    /// Mirrors whose `scan-requested` annotation was removed.
    pub cleared: Vec<String>,
    /// Mirrors whose every project was scanned again after an outage (the checker is to
    /// be told).
    pub rescanned: Vec<String>,
    /// The cap on concurrent scans stopped the step: what else is due waits for the next.
    pub capped: bool,
    /// The request that failed and stopped the step.
    pub error: Option<Error>,
}

impl Scheduler {
    /// A scheduler creating `jobs` in `namespace`, scanning each (mirror, project) every
    /// `interval_seconds`.
    pub fn new(
        client: Client,
        namespace: &str,
        jobs: JobSettings,
        interval_seconds: i64,
    ) -> Scheduler {
        Scheduler {
            client,
            namespace: namespace.to_owned(),
            jobs,
            interval_seconds,
        }
    }

    /// Every [`TICK`] until the task is dropped: sends the checker its targets, runs a
    /// [`step`](Scheduler::step), tells the checker of the mirrors rescanned. `rescan`
    /// receives mirrors back from a long outage.
    pub async fn run<S: Store>(
        self,
        ctx: Arc<Context<S>>,
        targets: watch::Sender<Arc<Vec<Target>>>,
        mut rescan: mpsc::Receiver<String>,
        rescanned: mpsc::Sender<String>,
    ) {
        // Mirrors back from a long outage, and when that was noticed.
        let mut wanted_rescan: BTreeMap<String, i64> = BTreeMap::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            while let Ok(m) = rescan.try_recv() {
                wanted_rescan.insert(m, (ctx.now)());
            }
            let state = match ctx.state().await {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "scan scheduling skipped");
                    continue;
                }
            };
            let fleet = ctx.latest.borrow().clone();
            let now_targets = checker::targets(&fleet, &state.indexes, &state.availability);
            targets.send_if_modified(|t| {
                let changed = **t != now_targets;
                if changed {
                    *t = Arc::new(now_targets);
                }
                changed
            });
            let step = self
                .step(
                    &ctx.caches.mirrors,
                    &fleet,
                    &state,
                    &mut wanted_rescan,
                    (ctx.now)(),
                )
                .await;
            for _ in &step.started {
                ctx.metrics.scan_jobs.inc();
            }
            for m in step.rescanned {
                let _ = rescanned.send(m).await;
            }
            if let Some(e) = step.error {
                tracing::warn!(error = %error_chain(&e), "scan scheduling failed");
            }
        }
    }

    /// One look: lists the scan Jobs, starts those due for the fleet's mirrors (found in
    /// `mirrors`) from the scans in `state`, until the cap; removes the served
    /// `scan-requested` annotations; forgets from `wanted_rescan` the mirrors whose every
    /// project was scanned since their outage ended. Stops at the first failed request.
    pub async fn step(
        &self,
        mirrors: &Cache<Mirror>,
        fleet: &FleetState,
        state: &LoadedState,
        wanted_rescan: &mut BTreeMap<String, i64>,
        now: i64,
    ) -> Step {
        let mut step = Step::default();
        if let Err(e) = self
            .step_into(&mut step, mirrors, fleet, state, wanted_rescan, now)
            .await
        {
            step.error = Some(e);
        }
        step
    }

    async fn step_into(
        &self,
        step: &mut Step,
        mirrors: &Cache<Mirror>,
        fleet: &FleetState,
        state: &LoadedState,
        wanted_rescan: &mut BTreeMap<String, i64>,
        now: i64,
    ) -> Result<(), Error> {
        let ns = self.namespace.as_str();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let listed = jobs_api
            .list(&ListParams::default().labels(SCAN_JOBS))
            .await
            .map_err(|e| Error::kube("list the scan Jobs", e))?;
        let running = |m: &str, p: &str| {
            listed.items.iter().any(|j| {
                let l = j.labels();
                !jobs::finished(j)
                    && l.get(LABEL_MIRROR).is_some_and(|v| v == m)
                    && l.get(LABEL_PROJECT).is_some_and(|v| v == p)
            })
        };
        let mut active = listed.items.iter().filter(|j| !jobs::finished(j)).count();
        for m in &fleet.mirrors {
            let Some(obj) = mirrors.get(&ObjectRef::new(&m.name).within(ns)) else {
                continue;
            };
            let requested = obj.annotations().contains_key(SCAN_REQUESTED);
            let rescan_since = wanted_rescan.get(&m.name).copied();
            let mut all_rescanned = true;
            for carried in &m.projects {
                let avail = state
                    .availability
                    .get(&(m.name.clone(), carried.project.clone()));
                let last_scan = avail.map(|a| a.scanned_at);
                // After a long outage every project is scanned again before traffic returns.
                let stale = rescan_since.is_some_and(|t| last_scan.is_none_or(|s| s < t));
                all_rescanned &= !stale;
                let facts = ScanFacts {
                    last_scan,
                    last_sync: avail.and_then(|a| a.last_sync),
                    running: running(&m.name, &carried.project),
                    requested: requested || stale,
                };
                let Some(due) = jobs::due(&facts, self.interval_seconds, now) else {
                    continue;
                };
                if active >= self.jobs.max_concurrent {
                    step.capped = true;
                    return Ok(());
                }
                let job = jobs::scan_job(&obj, &carried.project, &self.jobs, now);
                let name = job.name_any();
                jobs_api
                    .create(&PostParams::default(), &job)
                    .await
                    .map_err(|e| Error::kube(format!("create the scan Job {name}"), e))?;
                active += 1;
                tracing::info!(mirror = %m.name, project = %carried.project, reason = ?due, job = %name, "scan Job created");
                step.started.push(Started {
                    mirror: m.name.clone(),
                    project: carried.project.clone(),
                    job: name,
                    due,
                });
            }
            if requested {
                let clear =
                    serde_json::json!({"metadata": {"annotations": {SCAN_REQUESTED: null}}});
                Api::<Mirror>::namespaced(self.client.clone(), ns)
                    .patch(&m.name, &PatchParams::default(), &Patch::Merge(&clear))
                    .await
                    .map_err(|e| {
                        let doing = format!("remove the scan request of Mirror {}", m.name);
                        Error::kube(doing, e)
                    })?;
                step.cleared.push(m.name.clone());
            }
            if rescan_since.is_some() && all_rescanned {
                wanted_rescan.remove(&m.name);
                step.rescanned.push(m.name.clone());
            }
        }
        Ok(())
    }
}
