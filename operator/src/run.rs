//! `mirrorfleet operator`: waits for the leader Lease, then runs the four controllers, the
//! health checker and the scan scheduler until leadership is lost (then exits, so that the
//! pod restarts as a standby — controller-runtime's convention).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use mirrorfleet_crds::state::FleetState;
use mirrorfleet_crds::v1alpha1::{Mirror, Project, RegionRule, Sponsor};
use mirrorfleet_health::{self as health, Checker, Transition};
use mirrorfleet_store::{LoadedState, StateWriter, Store};
use tokio::sync::mpsc;

use crate::jobs::{self, JobSettings, LABEL_MIRROR, LABEL_PROJECT, SCAN_REQUESTED, ScanFacts};
use crate::lease::Elector;
use crate::metrics::{self, Metrics};
use crate::{Caches, Context, Error, error_policy};

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of the resources (and of the Lease and Jobs).
    pub namespace: String,
    /// Name of the leader Lease.
    pub lease: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// Scan Jobs.
    pub jobs: JobSettings,
    /// Seconds between two scans of one (mirror, project).
    pub scan_interval_seconds: i64,
    /// Locates mirrors whose spec gives no location (GeoIP of their host).
    pub locator: Option<Arc<mirrorfleet_geo::Locator>>,
    /// Follow this repository of manifests and apply it to the namespace (polled every
    /// given interval).
    pub git: Option<(mirrorfleet_manifests::GitSource, Duration)>,
}

/// Runs the operator until leadership is lost or a controller stops.
pub async fn run<S: Store + Clone>(
    client: Client,
    store: S,
    settings: Settings,
    now: fn() -> i64,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let serving = tokio::spawn(metrics::serve(settings.metrics_addr, metrics.clone()));
    // A standby is healthy and ready: it is doing its job, waiting.
    metrics.ready.store(true, Ordering::Relaxed);
    let ns = settings.namespace.as_str();
    let elector = Elector::new(
        Api::<Lease>::namespaced(client.clone(), ns),
        &settings.lease,
        &settings.identity,
    );
    elector.acquire().await;
    metrics.leader.store(true, Ordering::Relaxed);

    let wc = watcher::Config::default;
    let projects = Controller::new(Api::<Project>::namespaced(client.clone(), ns), wc());
    let mirrors = Controller::new(Api::<Mirror>::namespaced(client.clone(), ns), wc()).owns(
        Api::<Job>::namespaced(client.clone(), ns),
        wc().labels("app.kubernetes.io/managed-by=mirrorfleet"),
    );
    let sponsors = Controller::new(Api::<Sponsor>::namespaced(client.clone(), ns), wc());
    let rules = Controller::new(Api::<RegionRule>::namespaced(client.clone(), ns), wc());
    // The scan Jobs, cached for their failures to reach the Mirrors' status.
    let (jobs_cache, jobs_writer) = kube::runtime::reflector::store::<Job>();
    let jobs_watch = tokio::spawn(
        kube::runtime::reflector(
            jobs_writer,
            watcher(
                Api::<Job>::namespaced(client.clone(), ns),
                wc().labels("app.kubernetes.io/component=scan"),
            ),
        )
        .for_each(drain),
    );
    let caches = Caches {
        projects: projects.store(),
        mirrors: mirrors.store(),
        sponsors: sponsors.store(),
        rules: rules.store(),
        jobs: Some(jobs_cache),
    };
    let mut ctx = Context::new(
        client.clone(),
        ns,
        caches,
        store.clone(),
        metrics.clone(),
        now,
    );
    if let Some(l) = &settings.locator {
        ctx = ctx.with_locator(l.clone());
    }
    let ctx = Arc::new(ctx);

    // Health: targets follow the fleet and the scans; a verdict change re-reconciles the
    // mirror (status, Event) at once.
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let (rescanned_tx, rescanned_rx) = mpsc::channel::<String>(64);
    let (transitions_tx, mut transitions) = mpsc::channel::<Transition>(1024);
    let checker = Checker::new(StateWriter::new(store.clone()), now);
    let checking = tokio::spawn(checker.run(targets_rx, rescanned_rx, transitions_tx));
    let (trigger_tx, trigger_rx) = mpsc::channel::<()>(1024);
    let (rescan_tx, mut rescan_rx) = mpsc::channel::<String>(64);
    let forwarding = {
        let ns = ns.to_owned();
        tokio::spawn(async move {
            while let Some(t) = transitions.recv().await {
                if t.change == health::Change::RescanFirst {
                    let _ = rescan_tx.send(t.key.mirror.clone()).await;
                }
                tracing::debug!(mirror = %t.key.mirror, namespace = %ns, "health changed");
                let _ = trigger_tx.try_send(());
            }
        })
    };
    let scheduling = {
        let ctx = ctx.clone();
        let client = client.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            // Mirrors back from a long outage, and when that was noticed.
            let mut wanted_rescan: BTreeMap<String, i64> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                while let Ok(m) = rescan_rx.try_recv() {
                    wanted_rescan.insert(m, (ctx.now)());
                }
                let Ok(state) = ctx.state().await else {
                    continue;
                };
                let fleet = ctx.latest.borrow().clone();
                let targets = health::checker::targets(&fleet, &state.indexes, &state.availability);
                targets_tx.send_if_modified(|t| {
                    let changed = **t != targets;
                    if changed {
                        *t = Arc::new(targets);
                    }
                    changed
                });
                if let Err(e) = schedule_scans(
                    &ctx,
                    &client,
                    &settings,
                    &fleet,
                    &state,
                    &mut wanted_rescan,
                    &rescanned_tx,
                )
                .await
                {
                    tracing::warn!(error = %e, "scan scheduling failed");
                }
            }
        })
    };

    let git = settings.git.clone().map(|(source, every)| {
        tokio::spawn(crate::gitsync::follow(
            client.clone(),
            settings.namespace.clone(),
            source,
            every,
        ))
    });
    let trigger = futures_util::stream::unfold(trigger_rx, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    let controllers = futures_util::future::join4(
        projects
            .run(crate::reconcile::<Project, S>, error_policy, ctx.clone())
            .for_each(drain),
        mirrors
            // A health verdict changed: statuses (and Events) follow at once.
            .reconcile_all_on(trigger)
            .run(crate::reconcile::<Mirror, S>, error_policy, ctx.clone())
            .for_each(drain),
        sponsors
            .run(crate::reconcile::<Sponsor, S>, error_policy, ctx.clone())
            .for_each(drain),
        rules
            .run(crate::reconcile::<RegionRule, S>, error_policy, ctx.clone())
            .for_each(drain),
    );
    let outcome = tokio::select! {
        _ = controllers => Err(Error::ControllersStopped),
        _ = elector.hold() => Err(Error::LeadershipLost),
        _ = mirrorfleet_runtime::shutdown_signal() => Ok(()),
    };
    metrics.leader.store(false, Ordering::Relaxed);
    jobs_watch.abort();
    for t in [checking, forwarding, scheduling].into_iter().chain(git) {
        t.abort();
    }
    serving.abort();
    outcome
}

/// Starts the scan Jobs that are due, within the cap on concurrent scans; clears served
/// `scan-requested` annotations; tells the checker about mirrors rescanned after an outage.
async fn schedule_scans<S: Store>(
    ctx: &Context<S>,
    client: &Client,
    settings: &Settings,
    fleet: &FleetState,
    state: &LoadedState,
    wanted_rescan: &mut BTreeMap<String, i64>,
    rescanned: &mpsc::Sender<String>,
) -> Result<(), kube::Error> {
    let ns = settings.namespace.as_str();
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), ns);
    let jobs = jobs_api
        .list(&ListParams::default().labels("app.kubernetes.io/component=scan"))
        .await?;
    let finished = jobs::finished;
    let running = |m: &str, p: &str| {
        jobs.items.iter().any(|j| {
            let l = j.labels();
            !finished(j)
                && l.get(LABEL_MIRROR).is_some_and(|v| v == m)
                && l.get(LABEL_PROJECT).is_some_and(|v| v == p)
        })
    };
    let mut active = jobs.items.iter().filter(|j| !finished(j)).count();
    let now = (ctx.now)();
    for m in &fleet.mirrors {
        let Some(obj) = ctx.caches.mirrors.get(&ObjectRef::new(&m.name).within(ns)) else {
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
            let Some(why) = jobs::due(&facts, settings.scan_interval_seconds, now) else {
                continue;
            };
            if active >= settings.jobs.max_concurrent {
                return Ok(());
            }
            let job = jobs::scan_job(&obj, &carried.project, &settings.jobs, now);
            jobs_api.create(&PostParams::default(), &job).await?;
            active += 1;
            ctx.metrics.scan_jobs.inc();
            tracing::info!(mirror = %m.name, project = %carried.project, reason = ?why, "scan Job created");
        }
        if requested {
            let clear = serde_json::json!({"metadata": {"annotations": {SCAN_REQUESTED: null}}});
            Api::<Mirror>::namespaced(client.clone(), ns)
                .patch(&m.name, &PatchParams::default(), &Patch::Merge(&clear))
                .await?;
        }
        if rescan_since.is_some() && all_rescanned {
            wanted_rescan.remove(&m.name);
            let _ = rescanned.send(m.name.clone()).await;
        }
    }
    Ok(())
}

/// Logs what a controller stream reports as an error (reconcile errors are logged by the
/// error policy; these are watch and queue errors).
async fn drain<T, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        // Watch errors (e.g. a forbidden list): the stream retries, but they must be seen.
        tracing::warn!(error = %e, "controller stream");
    }
}
