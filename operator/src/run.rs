//! `mirrorfleet operator`: waits for the leader Lease, then runs the four controllers, the
//! health checker and the scan scheduler until leadership is lost (then exits, so that the
//! pod restarts as a standby — controller-runtime's convention).
//!
//! This is the wiring only: [`Controllers`] (the four controllers, their caches and the scan
//! Jobs' watch), [`follow_store`] (what changes in the store reconciles the objects it
//! concerns, e.g. a health verdict the mirror it is about), [`forward_transitions`] (a mirror
//! back from a long outage is rescanned), [`Scheduler`] (the scan Jobs) and [`run`], which
//! starts them with the Lease, the checker, the Git follower and the metrics server. It must not decide anything a reconcile, the
//! scheduler or the checker decides.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store as Cache;
use kube::runtime::{Controller, controller, watcher};
use mirrorfleet_crds::v1alpha1::{Mirror, Project, RegionRule, Sponsor};
use mirrorfleet_health::{self as health, Checker, Transition};
use mirrorfleet_runtime::error_chain;
use mirrorfleet_store::{StateWriter, Store};
use tokio::sync::mpsc;

use crate::jobs::JobSettings;
use crate::lease::Elector;
use crate::metrics::{self, Metrics};
use crate::schedule::{SCAN_JOBS, Scheduler};
use crate::triggers::{self, TriggerStreams, Triggers};
use crate::{Caches, Context, Error, KubeError, error_policy, reconcile};

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

/// Runs the operator with the API server of `config` until leadership is lost or the
/// controllers stop.
pub async fn run<S: Store + Clone>(
    config: kube::Config,
    store: S,
    settings: Settings,
    now: fn() -> i64,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let client = crate::client::counted(config, metrics.clone())?;
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: settings.metrics_addr,
            source,
        })?;
    let serving = tokio::spawn(metrics::serve(listener, metrics.clone()));
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

    let controllers = Controllers::new(&client, ns);
    let (triggers, trigger_streams) = Triggers::new(ns);
    let mut ctx = Context::new(
        client.clone(),
        ns,
        controllers.caches(),
        store.clone(),
        metrics.clone(),
        now,
    )
    .with_triggers(triggers.clone());
    ctx.mirror_interval = settings.scan_interval_seconds;
    if let Some(l) = &settings.locator {
        ctx = ctx.with_locator(l.clone());
    }
    let ctx = Arc::new(ctx);
    let following = tokio::spawn(follow_store(store.clone(), ctx.clone(), triggers));

    // Health: targets follow the fleet and the scans; a verdict reaches the store, and from
    // there the mirror's status (follow_store).
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let (rescanned_tx, rescanned_rx) = mpsc::channel::<String>(64);
    let (transitions_tx, transitions_rx) = mpsc::channel::<Transition>(1024);
    let checker = Checker::new(StateWriter::new(store.clone()), now);
    let checking = tokio::spawn(checker.run(targets_rx, rescanned_rx, transitions_tx));
    let (rescan_tx, rescan_rx) = mpsc::channel::<String>(64);
    let forwarding = tokio::spawn(forward_transitions(transitions_rx, rescan_tx));
    let scheduler = Scheduler::new(
        client.clone(),
        ns,
        settings.jobs.clone(),
        settings.scan_interval_seconds,
    );
    let scheduling = tokio::spawn(scheduler.run(ctx.clone(), targets_tx, rescan_rx, rescanned_tx));
    let git = settings.git.clone().map(|(source, every)| {
        tokio::spawn(crate::gitsync::follow(
            client.clone(),
            settings.namespace.clone(),
            source,
            every,
        ))
    });
    let outcome = tokio::select! {
        () = controllers.run(ctx.clone(), trigger_streams) => Err(Error::ControllersStopped),
        () = elector.hold() => Err(Error::LeadershipLost),
        () = mirrorfleet_runtime::shutdown_signal() => Ok(()),
    };
    metrics.leader.store(false, Ordering::Relaxed);
    if outcome.is_ok() {
        elector.release().await;
    }
    for t in [checking, forwarding, scheduling, following]
        .into_iter()
        .chain(git)
    {
        t.abort();
    }
    serving.abort();
    outcome
}

/// The four controllers of a namespace, and the watch of its scan Jobs (cached for their
/// failures to reach the Mirrors' status). Their caches fill once [`Controllers::run`] runs.
pub struct Controllers {
    projects: Controller<Project>,
    mirrors: Controller<Mirror>,
    sponsors: Controller<Sponsor>,
    rules: Controller<RegionRule>,
    jobs: Cache<Job>,
    jobs_watch: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Controllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controllers").finish_non_exhaustive()
    }
}

impl Controllers {
    /// The controllers of `namespace`; the Mirrors' also watches the Jobs they own.
    pub fn new(client: &Client, namespace: &str) -> Controllers {
        fn api<K: crate::Namespaced>(client: &Client, namespace: &str) -> Api<K> {
            Api::namespaced(client.clone(), namespace)
        }
        let wc = watcher::Config::default;
        let (jobs, jobs_writer) = kube::runtime::reflector::store::<Job>();
        let jobs_watch = kube::runtime::reflector(
            jobs_writer,
            watcher(api(client, namespace), wc().labels(SCAN_JOBS)),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %error_chain(&KubeError(e)), "scan Jobs watch");
            }
        });
        Controllers {
            // Each owns its scan Jobs: a Job's progress reaches its status.
            projects: Controller::new(api(client, namespace), wc())
                .owns(api::<Job>(client, namespace), wc().labels(SOURCE_JOBS)),
            mirrors: Controller::new(api(client, namespace), wc())
                .owns(api::<Job>(client, namespace), wc().labels(MIRROR_JOBS)),
            sponsors: Controller::new(api(client, namespace), wc()),
            rules: Controller::new(api(client, namespace), wc()),
            jobs,
            jobs_watch: Box::pin(jobs_watch),
        }
    }

    /// The caches the reconciles read (the context's).
    pub fn caches(&self) -> Caches {
        Caches {
            projects: self.projects.store(),
            mirrors: self.mirrors.store(),
            sponsors: self.sponsors.store(),
            rules: self.rules.store(),
            jobs: Some(self.jobs.clone()),
        }
    }

    /// Runs the four controllers with `ctx` (built on [`Controllers::caches`]) and the Jobs'
    /// watch; each object sent on `triggers` is reconciled (besides its own changes).
    /// Returns when the controllers' streams have ended.
    pub async fn run<S: Store>(self, ctx: Arc<Context<S>>, triggers: TriggerStreams) {
        let controllers = futures_util::future::join4(
            self.projects
                .reconcile_on(triggers::stream(triggers.projects))
                .run(reconcile::<Project, S>, error_policy, ctx.clone())
                .for_each(drain),
            self.mirrors
                .reconcile_on(triggers::stream(triggers.mirrors))
                .run(reconcile::<Mirror, S>, error_policy, ctx.clone())
                .for_each(drain),
            self.sponsors
                .reconcile_on(triggers::stream(triggers.sponsors))
                .run(reconcile::<Sponsor, S>, error_policy, ctx.clone())
                .for_each(drain),
            self.rules
                .reconcile_on(triggers::stream(triggers.rules))
                .run(reconcile::<RegionRule, S>, error_policy, ctx)
                .for_each(drain),
        );
        // The Jobs' watch never ends on its own; it stops with the controllers.
        futures_util::future::select(Box::pin(controllers), self.jobs_watch).await;
    }
}

/// Forwards the checker's transitions until it stops: a mirror answering again after a long
/// outage goes to `rescan` (its status follows from the store, [`follow_store`]).
pub async fn forward_transitions(
    mut transitions: mpsc::Receiver<Transition>,
    rescan: mpsc::Sender<String>,
) {
    while let Some(t) = transitions.recv().await {
        tracing::debug!(mirror = %t.key.mirror, change = ?t.change, "health changed");
        if t.change == health::Change::RescanFirst {
            let _ = rescan.send(t.key.mirror.clone()).await;
        }
    }
}

/// Follows the store until the task is dropped: each change reconciles the objects whose
/// status it concerns ([`triggers::state_changes`]) — a health verdict its mirror, a scan
/// its mirror, an index its project and the mirrors carrying it.
pub async fn follow_store<S: Store + Clone>(store: S, ctx: Arc<Context<S>>, triggers: Triggers) {
    let mut states = mirrorfleet_store::follow(store, FOLLOW_RESYNC).await;
    let mut last = states.borrow_and_update().clone();
    while states.changed().await.is_ok() {
        let state = states.borrow_and_update().clone();
        let fleet = ctx.latest.borrow().clone();
        triggers.send(triggers::state_changes(&last, &state, &fleet));
        last = state;
    }
}

/// How often the store follower compares the whole manifest, in case events were lost.
const FOLLOW_RESYNC: Duration = Duration::from_secs(300);

/// The label selector of the Jobs indexing sources.
const SOURCE_JOBS: &str = "app.kubernetes.io/component=scan,mirrorfleet.io/scan=source";
/// The label selector of the Jobs scanning mirrors (older Jobs carry no `mirrorfleet.io/scan`).
const MIRROR_JOBS: &str = "app.kubernetes.io/component=scan,mirrorfleet.io/scan!=source";

/// Logs what a controller's stream reports as an error, once: a failed reconcile is logged
/// by [`error_policy`] already; watch and queue errors (e.g. a forbidden list) are retried by
/// the stream, but they must be seen.
async fn drain<T>(r: Result<T, controller::Error<Error, watcher::Error>>) {
    match r {
        Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(error = %error_chain(&KubeError(e)), "controller stream"),
    }
}
