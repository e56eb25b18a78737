//! `mirrorfleet operator`: waits for the leader Lease, then runs the four controllers, the
//! health checker and the scan scheduler until leadership is lost (then exits, so that the
//! pod restarts as a standby — controller-runtime's convention).
//!
//! This is the wiring only: [`Controllers`] (the four controllers, their caches and the scan
//! Jobs' watch), [`forward_transitions`] (a health verdict change re-reconciles the mirrors),
//! [`Scheduler`] (the scan Jobs) and [`run`], which starts them with the Lease, the checker,
//! the Git follower and the metrics server. It must not decide anything a reconcile, the
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

/// Runs the operator until leadership is lost or the controllers stop.
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

    let controllers = Controllers::new(&client, ns);
    let mut ctx = Context::new(
        client.clone(),
        ns,
        controllers.caches(),
        store.clone(),
        metrics.clone(),
        now,
    );
    if let Some(l) = &settings.locator {
        ctx = ctx.with_locator(l.clone());
    }
    let ctx = Arc::new(ctx);

    // Health: targets follow the fleet and the scans; a verdict change re-reconciles the
    // mirrors (status, Event) at once.
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let (rescanned_tx, rescanned_rx) = mpsc::channel::<String>(64);
    let (transitions_tx, transitions_rx) = mpsc::channel::<Transition>(1024);
    let checker = Checker::new(StateWriter::new(store.clone()), now);
    let checking = tokio::spawn(checker.run(targets_rx, rescanned_rx, transitions_tx));
    let (health_tx, health_rx) = mpsc::channel::<()>(1024);
    let (rescan_tx, rescan_rx) = mpsc::channel::<String>(64);
    let forwarding = tokio::spawn(forward_transitions(transitions_rx, rescan_tx, health_tx));
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
        () = controllers.run(ctx.clone(), health_rx) => Err(Error::ControllersStopped),
        () = elector.hold() => Err(Error::LeadershipLost),
        () = mirrorfleet_runtime::shutdown_signal() => Ok(()),
    };
    metrics.leader.store(false, Ordering::Relaxed);
    for t in [checking, forwarding, scheduling].into_iter().chain(git) {
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
            projects: Controller::new(api(client, namespace), wc()),
            mirrors: Controller::new(api(client, namespace), wc()).owns(
                api::<Job>(client, namespace),
                wc().labels("app.kubernetes.io/managed-by=mirrorfleet"),
            ),
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
    /// watch; each message on `health_changed` reconciles every Mirror at once. Returns when
    /// the controllers' streams have ended.
    pub async fn run<S: Store>(self, ctx: Arc<Context<S>>, health_changed: mpsc::Receiver<()>) {
        let health_changed = futures_util::stream::unfold(health_changed, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        });
        let controllers = futures_util::future::join4(
            self.projects
                .run(reconcile::<Project, S>, error_policy, ctx.clone())
                .for_each(drain),
            self.mirrors
                // A health verdict changed: statuses (and Events) follow at once.
                .reconcile_all_on(health_changed)
                .run(reconcile::<Mirror, S>, error_policy, ctx.clone())
                .for_each(drain),
            self.sponsors
                .run(reconcile::<Sponsor, S>, error_policy, ctx.clone())
                .for_each(drain),
            self.rules
                .run(reconcile::<RegionRule, S>, error_policy, ctx)
                .for_each(drain),
        );
        // The Jobs' watch never ends on its own; it stops with the controllers.
        futures_util::future::select(Box::pin(controllers), self.jobs_watch).await;
    }
}

/// Forwards the checker's transitions until it stops: each one asks for the Mirrors'
/// reconcile on `health_changed` (not when that channel is full: one request waiting is
/// enough); a mirror answering again after a long outage also goes to `rescan`.
pub async fn forward_transitions(
    mut transitions: mpsc::Receiver<Transition>,
    rescan: mpsc::Sender<String>,
    health_changed: mpsc::Sender<()>,
) {
    while let Some(t) = transitions.recv().await {
        if t.change == health::Change::RescanFirst {
            let _ = rescan.send(t.key.mirror.clone()).await;
        }
        tracing::debug!(mirror = %t.key.mirror, "health changed");
        let _ = health_changed.try_send(());
    }
}

/// Logs what a controller's stream reports as an error, once: a failed reconcile is logged
/// by [`error_policy`] already; watch and queue errors (e.g. a forbidden list) are retried by
/// the stream, but they must be seen.
async fn drain<T>(r: Result<T, controller::Error<Error, watcher::Error>>) {
    match r {
        Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(error = %error_chain(&KubeError(e)), "controller stream"),
    }
}
