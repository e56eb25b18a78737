//! Scan scheduling, every [`TICK`]: the health checker's probe targets follow the fleet and
//! the scans, and the scan Jobs that are due start, within the cap on concurrent scans —
//! each Project's source indexed on its `scan.sourceIntervalMinutes`, each mirror's projects
//! (once their source has an index) on the Mirror's or Project's interval, failing scans
//! retried after a wait that doubles. A Mirror's or Project's `scan-requested` annotation is
//! removed once its Jobs exist; a mirror back from a long outage has every project scanned
//! again, then the checker is told so. It reads the Jobs from the cache: a quiet fleet
//! costs no request.
//!
//! It must not probe (the checker does) nor write the store (the scans do, in their Jobs):
//! its only writes are Job creations and the annotation's removal. One step
//! ([`Scheduler::step`]) decides from what it is given, so that it can be tested alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use mirrorfleet_crds::state::FleetState;
use mirrorfleet_crds::v1alpha1::{Mirror, Project};
use mirrorfleet_health::checker::{self, Target};
use mirrorfleet_runtime::error_chain;
use mirrorfleet_store::{LoadedState, Store};
use tokio::sync::{mpsc, watch};

use crate::jobs::{self, Due, JobSettings, SCAN_REQUESTED, ScanFacts};
use crate::{Caches, Context, Error};

/// How often the scheduler looks.
pub const TICK: Duration = Duration::from_secs(10);

/// After being woken (a new fleet, an index, a Job that finished), how long the scheduler
/// waits for more of the same before it looks.
const WAKE_COALESCE: Duration = Duration::from_millis(200);

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
#[derive(Debug, Clone)]
pub struct Started {
    /// The mirror scanned (`None`: the project's source).
    pub mirror: Option<String>,
    /// The project scanned.
    pub project: String,
    /// The Job's name.
    pub job: String,
    /// Why now.
    pub due: Due,
    /// The Job as the API server returned it.
    pub created: Arc<Job>,
}

/// What one step did, also when it stopped early.
#[derive(Debug, Default)]
pub struct Step {
    /// The Jobs created, in the fleet's order.
    pub started: Vec<Started>,
    /// Objects whose `scan-requested` annotation was removed: mirrors by name, projects as
    /// `Project/name`.
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
    /// `interval_seconds` unless the Mirror's or Project's spec says otherwise.
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

    /// Every [`TICK`], and when woken through the context (a new fleet, an index or a scan
    /// result in the store, a Job that finished), until the task is dropped: sends the checker its targets, runs a
    /// [`step`](Scheduler::step) on the cached scan Jobs (and those it created that the cache
    /// does not show yet), tells the checker of the mirrors rescanned. `rescan` receives
    /// mirrors back from a long outage. Makes no request when nothing is due.
    pub async fn run<S: Store>(
        self,
        ctx: Arc<Context<S>>,
        targets: watch::Sender<Arc<Vec<Target>>>,
        mut rescan: mpsc::Receiver<String>,
        rescanned: mpsc::Sender<String>,
        mut reports: mpsc::Receiver<(String, String)>,
    ) {
        // (mirror, project) pairs their mirror reported synced, scanned as if requested.
        let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
        // Mirrors back from a long outage, and when that was noticed.
        let mut wanted_rescan: BTreeMap<String, i64> = BTreeMap::new();
        // Jobs created that the cache may not show yet, with when.
        let mut created: Vec<(i64, Arc<Job>)> = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        let mut reports_open = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = ctx.wake_scheduler.notified() => {
                    // Whatever else woke it meanwhile is looked at in the same step.
                    tokio::time::sleep(WAKE_COALESCE).await;
                }
                pair = reports.recv(), if reports_open => match pair {
                    Some(pair) => {
                        reported.insert(pair);
                        tokio::time::sleep(WAKE_COALESCE).await;
                    }
                    None => reports_open = false,
                },
            }
            while let Ok(m) = rescan.try_recv() {
                wanted_rescan.insert(m, (ctx.now)());
            }
            while let Ok(pair) = reports.try_recv() {
                reported.insert(pair);
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
            let now = (ctx.now)();
            let mut jobs = ctx.caches.scan_jobs();
            created.retain(|(at, j)| {
                now - at < 120 && !jobs.iter().any(|c| c.name_any() == j.name_any())
            });
            jobs.extend(created.iter().map(|(_, j)| j.clone()));
            let step = self
                .step(
                    &ctx.caches,
                    &fleet,
                    &state,
                    &jobs,
                    (&mut wanted_rescan, &mut reported),
                    now,
                )
                .await;
            for s in &step.started {
                ctx.metrics.scan_jobs.inc();
                created.push((now, s.created.clone()));
            }
            for m in step.rescanned {
                let _ = rescanned.send(m).await;
            }
            if let Some(e) = step.error {
                tracing::warn!(error = %error_chain(&e), "scan scheduling failed");
            }
        }
    }

    /// One look: starts the scans due — each project's source first (owned by the Project),
    /// then the fleet's mirrors' projects that have an index — from the scans in `state` and
    /// the scan `jobs` (running ones, failures in a row and the wait after them), until the
    /// cap on running Jobs; removes `scan-requested` annotations once every scan they asked
    /// for has started; forgets from `wanted.0` the mirrors whose every project was scanned
    /// since their outage ended, and from `wanted.1` the (mirror, project) pairs reported
    /// synced once their scan started. Stops at the first failed request.
    pub async fn step(
        &self,
        caches: &Caches,
        fleet: &FleetState,
        state: &LoadedState,
        jobs: &[Arc<Job>],
        wanted: (&mut BTreeMap<String, i64>, &mut BTreeSet<(String, String)>),
        now: i64,
    ) -> Step {
        let (wanted_rescan, reported) = wanted;
        let mut step = Step::default();
        let mut active = jobs.iter().filter(|j| !jobs::finished(j)).count();
        let mut look = Look {
            step: &mut step,
            active: &mut active,
            jobs,
            now,
        };
        let outcome = match self.sources(&mut look, caches, fleet, state).await {
            Ok(()) => {
                self.mirrors(&mut look, caches, fleet, state, wanted_rescan, reported)
                    .await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) | Err(Stop::Capped) => {}
            Err(Stop::Failed(e)) => step.error = Some(e),
        }
        step
    }

    async fn sources(
        &self,
        look: &mut Look<'_>,
        caches: &Caches,
        fleet: &FleetState,
        state: &LoadedState,
    ) -> Result<(), Stop> {
        let ns = self.namespace.as_str();
        for p in &fleet.projects {
            let Some(obj) = caches.projects.get(&ObjectRef::new(&p.name).within(ns)) else {
                continue;
            };
            let requested = obj.annotations().contains_key(SCAN_REQUESTED);
            let history = jobs::history(look.jobs, &p.name, None);
            let interval = jobs::source_interval(&obj);
            let facts = ScanFacts {
                last_scan: state.index_meta.get(&p.name).map(|m| m.generated_at),
                last_sync: None,
                running: history.running,
                requested,
                retry_at: history.retry_at(interval),
            };
            let Some(due) = jobs::due(&facts, interval, look.now) else {
                continue;
            };
            let job = match jobs::source_job(&obj, &self.jobs, look.now) {
                Ok(job) => job,
                // The Project's status says why; nothing to start.
                Err(_) => continue,
            };
            self.start(look, job, &p.name, None, due).await?;
            if requested {
                self.clear_request::<Project>(&p.name).await?;
                look.step.cleared.push(format!("Project/{}", p.name));
            }
        }
        Ok(())
    }

    async fn mirrors(
        &self,
        look: &mut Look<'_>,
        caches: &Caches,
        fleet: &FleetState,
        state: &LoadedState,
        wanted_rescan: &mut BTreeMap<String, i64>,
        reported: &mut BTreeSet<(String, String)>,
    ) -> Result<(), Stop> {
        let ns = self.namespace.as_str();
        for m in &fleet.mirrors {
            let Some(obj) = caches.mirrors.get(&ObjectRef::new(&m.name).within(ns)) else {
                continue;
            };
            let requested = obj.annotations().contains_key(SCAN_REQUESTED);
            let rescan_since = wanted_rescan.get(&m.name).copied();
            let mut all_rescanned = true;
            let mut request_served = true;
            for carried in &m.projects {
                let p = carried.project.as_str();
                // Nothing to compare a mirror with before the source is indexed.
                if !state.index_meta.contains_key(p) {
                    request_served = false;
                    continue;
                }
                let avail = state.availability.get(&(m.name.clone(), p.to_owned()));
                let last_scan = avail.map(|a| a.scanned_at);
                // After a long outage every project is scanned again before traffic returns.
                let stale = rescan_since.is_some_and(|t| last_scan.is_none_or(|s| s < t));
                all_rescanned &= !stale;
                let project = caches.projects.get(&ObjectRef::new(p).within(ns));
                let interval =
                    jobs::mirror_interval(&obj, project.as_deref(), self.interval_seconds);
                let history = jobs::history(look.jobs, p, Some(&m.name));
                let pair = (m.name.clone(), p.to_owned());
                let synced = reported.contains(&pair);
                let facts = ScanFacts {
                    last_scan,
                    last_sync: avail.and_then(|a| a.last_sync),
                    running: history.running,
                    requested: requested || stale || synced,
                    retry_at: history.retry_at(interval),
                };
                let Some(due) = jobs::due(&facts, interval, look.now) else {
                    // A request while a scan runs waits for it, then gets its own.
                    request_served &= !(requested && history.running);
                    continue;
                };
                let job = jobs::scan_job(&obj, p, &self.jobs, look.now);
                self.start(look, job, p, Some(&m.name), due).await?;
                reported.remove(&pair);
            }
            if requested && request_served {
                self.clear_request::<Mirror>(&m.name).await?;
                look.step.cleared.push(m.name.clone());
            }
            if rescan_since.is_some() && all_rescanned {
                wanted_rescan.remove(&m.name);
                look.step.rescanned.push(m.name.clone());
            }
        }
        Ok(())
    }

    /// Creates `job` unless the cap is reached.
    async fn start(
        &self,
        look: &mut Look<'_>,
        job: Job,
        project: &str,
        mirror: Option<&str>,
        due: Due,
    ) -> Result<(), Stop> {
        if *look.active >= self.jobs.max_concurrent {
            look.step.capped = true;
            return Err(Stop::Capped);
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = job.name_any();
        let created = api
            .create(&PostParams::default(), &job)
            .await
            .map_err(|e| Stop::Failed(Error::kube(format!("create the scan Job {name}"), e)))?;
        *look.active += 1;
        tracing::info!(mirror = mirror.unwrap_or("(source)"), %project, reason = ?due, job = %name, "scan Job created");
        look.step.started.push(Started {
            mirror: mirror.map(str::to_owned),
            project: project.to_owned(),
            job: name,
            due,
            created: Arc::new(created),
        });
        Ok(())
    }

    /// Removes the `scan-requested` annotation of a `K` named `name`.
    async fn clear_request<K>(&self, name: &str) -> Result<(), Stop>
    where
        K: crate::Namespaced,
    {
        let clear = serde_json::json!({"metadata": {"annotations": {SCAN_REQUESTED: null}}});
        Api::<K>::namespaced(self.client.clone(), &self.namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&clear))
            .await
            .map_err(|e| {
                let doing = format!("remove the scan request of {} {name}", K::kind(&()));
                Stop::Failed(Error::kube(doing, e))
            })?;
        Ok(())
    }
}

/// What one step is working on.
struct Look<'a> {
    step: &'a mut Step,
    active: &'a mut usize,
    jobs: &'a [Arc<Job>],
    now: i64,
}

/// Why a step stopped early.
enum Stop {
    /// The cap on running scans.
    Capped,
    /// A request failed.
    Failed(Error),
}
