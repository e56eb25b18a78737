//! `mirrorfleet operator`: waits for the leader Lease, then runs the four controllers, the
//! health checker and the scan scheduler until leadership is lost (then exits, so that the
//! pod restarts as a standby — controller-runtime's convention).
//!
//! This is the wiring only: [`Controllers`] (the four controllers, their caches, the scan
//! Jobs' watch, and a new assessment after deletions), [`follow_store`] (what changes in the store reconciles the objects it
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
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use mirrorfleet_crds::v1alpha1::{Mirror, Project, RegionRule, Sponsor};
use mirrorfleet_health::{self as health, Checker, Transition};
use mirrorfleet_runtime::error_chain;
use mirrorfleet_store::{StateWriter, Store};
use tokio::sync::mpsc;

use crate::assess::ObjectKey;
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
    /// Where new index serials are announced (MQTT, the Projects' webhooks); started once
    /// this replica leads.
    pub push: Option<mirrorfleet_push::Settings>,
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
    ctx.wake_scheduler = controllers.finished_jobs();
    if let Some(push) = settings.push.clone() {
        match mirrorfleet_push::Pusher::start(push) {
            Ok(p) => ctx.push = Some(p),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot start pushing to mirrors; going on without")
            }
        }
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
    // Mirrors' sync reports (MQTT): each one checked against the fleet asks for a scan of
    // that (mirror, project).
    let (reports_tx, reports_rx) = mpsc::channel::<(String, String)>(256);
    let reporting = settings
        .push
        .as_ref()
        .and_then(|p| p.broker.clone())
        .map(|broker| tokio::spawn(follow_reports(broker, ctx.clone(), reports_tx)));
    let scheduling =
        tokio::spawn(scheduler.run(ctx.clone(), targets_tx, rescan_rx, rescanned_tx, reports_rx));
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
        .chain(reporting)
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
    /// The owners of the Jobs that changed, from `jobs_watch` (Projects and Mirrors).
    job_owned: TriggerStreams,
    /// Notified when a scan Job finishes; the scheduler's wake-up.
    finished: Arc<tokio::sync::Notify>,
    /// A deletion, or a relist, in any of the four watches (see [`controller`]).
    removals: mpsc::UnboundedReceiver<()>,
}

impl std::fmt::Debug for Controllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controllers").finish_non_exhaustive()
    }
}

impl Controllers {
    /// The controllers of `namespace`, and the watch of its scan Jobs.
    pub fn new(client: &Client, namespace: &str) -> Controllers {
        fn api<K: crate::Namespaced>(client: &Client, namespace: &str) -> Api<K> {
            Api::namespaced(client.clone(), namespace)
        }
        let wc = watcher::Config::default;
        let (jobs, jobs_writer) = kube::runtime::reflector::store::<Job>();
        // The owner of each Job that changed is reconciled, sent from the Jobs' reflector once
        // it has updated the cache that the reconciles read. (`Controller::owns` would
        // trigger from a watch of its own, which may run ahead of that cache: the owner is
        // reconciled before the change is visible, e.g. a failed scan never shown.)
        let (job_owners, job_owned) = Triggers::new(namespace);
        // A Job that finished frees a place under the cap: the scheduler looks at once.
        let finished = Arc::new(tokio::sync::Notify::new());
        let finished_job = finished.clone();
        let jobs_watch = kube::runtime::reflector(
            jobs_writer,
            watcher(api(client, namespace), wc().labels(SCAN_JOBS)),
        )
        .for_each(move |r| {
            match r {
                Ok(watcher::Event::Apply(job)) => {
                    if crate::jobs::finished(&job) {
                        finished_job.notify_one();
                    }
                    job_owners.send(job_owner(&job));
                }
                Ok(watcher::Event::InitApply(job) | watcher::Event::Delete(job)) => {
                    job_owners.send(job_owner(&job))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %error_chain(&KubeError(e)), "scan Jobs watch"),
            }
            async {}
        });
        let (removed, removals) = mpsc::unbounded_channel();
        Controllers {
            projects: controller(api(client, namespace), &removed),
            mirrors: controller(api(client, namespace), &removed),
            sponsors: controller(api(client, namespace), &removed),
            rules: controller(api(client, namespace), &removed),
            jobs,
            jobs_watch: Box::pin(jobs_watch),
            job_owned,
            finished,
            removals,
        }
    }

    /// What wakes the scan scheduler: notified when a scan Job finishes (and by the
    /// context when the fleet or the store changes).
    pub fn finished_jobs(&self) -> Arc<tokio::sync::Notify> {
        self.finished.clone()
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
    /// watch; each object sent on `triggers` is reconciled (besides its own changes), and
    /// the fleet is assessed again after each deletion. Returns when the controllers'
    /// streams have ended.
    pub async fn run<S: Store>(self, ctx: Arc<Context<S>>, triggers: TriggerStreams) {
        use futures_util::stream::select;
        let (job_projects, job_mirrors) = (self.job_owned.projects, self.job_owned.mirrors);
        let mut removals = self.removals;
        let reassess = ctx.clone();
        let after_removals = async move {
            while removals.recv().await.is_some() {
                // Several at once (a relist of each kind, `kubectl delete -f`): one assessment.
                while removals.try_recv().is_ok() {}
                if let Err(e) = reassess.sync_fleet().await {
                    tracing::warn!(error = %error_chain(&e), "cannot assess the fleet after a deletion");
                }
            }
        };
        let controllers = futures_util::future::join4(
            self.projects
                .reconcile_on(select(
                    triggers::stream(triggers.projects),
                    triggers::stream(job_projects),
                ))
                .run(reconcile::<Project, S>, error_policy, ctx.clone())
                .for_each(drain),
            self.mirrors
                .reconcile_on(select(
                    triggers::stream(triggers.mirrors),
                    triggers::stream(job_mirrors),
                ))
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
        let watches = futures_util::future::join(self.jobs_watch, after_removals);
        futures_util::future::select(Box::pin(controllers), Box::pin(watches)).await;
    }
}

/// The controller of the objects of `api`, whose watch also says on `removed` when objects
/// may have left the cache: at a deletion, and at every relist (which drops what was deleted
/// while the watch was down). A deleted object is never reconciled (it is gone from the
/// cache), so without this the fleet would keep it until another object changed.
fn controller<K>(api: Api<K>, removed: &mpsc::UnboundedSender<()>) -> Controller<K>
where
    K: crate::Namespaced + Send + Sync + 'static,
{
    let (cache, writer) = kube::runtime::reflector::store();
    let removed = removed.clone();
    let events = kube::runtime::reflector(writer, watcher(api, watcher::Config::default()))
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(_) | watcher::Event::InitDone) = event {
                let _ = removed.send(());
            }
        });
    Controller::for_stream(events.applied_objects(), cache)
}

/// At most one sync report acted on per mirror in this time (a report costs a scan Job).
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// Reads mirrors' sync reports (`mirrorfleet/report/<mirror>`) from `broker` and sends each
/// (mirror, project) of the fleet to `scans`, at most one per mirror every
/// [`REPORT_EVERY`], waking the scheduler: a report is a hint that the scan checks, never
/// trusted alone. Reports of unknown mirrors or of projects a mirror does not carry, and
/// garbage, are logged and change nothing.
pub async fn follow_reports<S: Store>(
    broker: mirrorfleet_push::Broker,
    ctx: Arc<Context<S>>,
    scans: mpsc::Sender<(String, String)>,
) {
    use mirrorfleet_push::report;
    let mut reports = report::subscribe(broker, REPORTS);
    let mut limit = report::RateLimit::new(REPORT_EVERY);
    while let Some(r) = reports.recv().await {
        let fleet = ctx.latest.borrow().clone();
        if let Err(why) = report::check(&r, &fleet) {
            tracing::warn!(mirror = %r.mirror, project = %r.project, %why, "sync report ignored");
            continue;
        }
        if !limit.allow(&r.mirror, std::time::Instant::now()) {
            continue;
        }
        tracing::info!(mirror = %r.mirror, project = %r.project, serial = %r.serial, "sync reported");
        if scans.send((r.mirror, r.project)).await.is_err() {
            return;
        }
        ctx.wake_scheduler.notify_one();
    }
}

/// Where mirrors publish their sync reports: `<prefix>/<mirror>`.
pub const REPORTS: &str = "mirrorfleet/report";

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
/// its mirror, an index its project and the mirrors carrying it — and each new index serial
/// is announced to mirrors (`ctx.push`; the serials held at start are not new).
pub async fn follow_store<S: Store + Clone>(store: S, ctx: Arc<Context<S>>, triggers: Triggers) {
    let mut states = mirrorfleet_store::follow(store, FOLLOW_RESYNC).await;
    let mut last = states.borrow_and_update().clone();
    while states.changed().await.is_ok() {
        let state = states.borrow_and_update().clone();
        let fleet = ctx.latest.borrow().clone();
        if let Some(pusher) = &ctx.push {
            for (project, serial) in
                mirrorfleet_push::new_serials(&last.index_meta, &state.index_meta)
            {
                match fleet.project(project) {
                    Some(p) => pusher.announce(p, serial),
                    None => {
                        tracing::debug!(%project, %serial, "an index of a project not in the fleet; not announced")
                    }
                }
            }
        }
        let changed = triggers::state_changes(&last, &state, &fleet);
        // An index or a scan result can make scans due (a project's first mirror scans).
        if !changed.is_empty() {
            ctx.wake_scheduler.notify_one();
        }
        triggers.send(changed);
        last = state;
    }
}

/// How often the store follower compares the whole manifest, in case events were lost.
const FOLLOW_RESYNC: Duration = Duration::from_secs(300);

/// Logs what a controller's stream reports as an error, once: a failed reconcile is logged
/// by [`error_policy`] already; watch and queue errors (e.g. a forbidden list) are retried by
/// the stream, but they must be seen.
async fn drain<T>(r: Result<T, controller::Error<Error, watcher::Error>>) {
    match r {
        Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(error = %error_chain(&KubeError(e)), "controller stream"),
    }
}

/// The Project or Mirror controlling `job` (its source's or its mirror's scan) — pure.
fn job_owner(job: &Job) -> Option<ObjectKey> {
    let owners = job.metadata.owner_references.iter().flatten();
    owners
        .filter(|o| o.controller == Some(true) && o.api_version.starts_with("mirrorfleet.io/"))
        .find(|o| o.kind == "Project" || o.kind == "Mirror")
        .map(|o| (o.kind.clone(), o.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{self, JobSettings};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    fn owned_by(api_version: &str, kind: &str, controller: bool) -> Job {
        let mut job = Job::default();
        job.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "x".into(),
            uid: "u".into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }]);
        job
    }

    #[test]
    fn a_scan_job_reconciles_the_project_or_mirror_controlling_it() {
        let object = |kind: &str, name: &str, spec| {
            json!({
                "apiVersion": "mirrorfleet.io/v1alpha1", "kind": kind,
                "metadata": {"name": name, "namespace": "fleet", "uid": "u-1"}, "spec": spec,
            })
        };
        let mirror: Mirror = serde_json::from_value(object(
            "Mirror",
            "m",
            json!({"sponsorRef": "s", "projects": [{"project": "demo", "https": "https://m.example/"}]}),
        ))
        .unwrap();
        let project: Project = serde_json::from_value(object(
            "Project",
            "demo",
            json!({"routing": {"pathPrefix": "/demo/"}, "source": {"rsync": "rsync://o.example/demo/"}}),
        ))
        .unwrap();
        let settings = JobSettings::default();
        let key = |kind: &str, name: &str| Some((kind.to_owned(), name.to_owned()));
        let cases = [
            (
                "a mirror's scan: the Mirror",
                jobs::scan_job(&mirror, "demo", &settings, 0),
                key("Mirror", "m"),
            ),
            (
                "a source's indexing: the Project",
                jobs::source_job(&project, &settings, 0).unwrap(),
                key("Project", "demo"),
            ),
            ("no owner", Job::default(), None),
            (
                "an owner that does not control it",
                owned_by("mirrorfleet.io/v1alpha1", "Mirror", false),
                None,
            ),
            (
                "a Mirror of another group",
                owned_by("example.com/v1", "Mirror", true),
                None,
            ),
            (
                "another kind of ours",
                owned_by("mirrorfleet.io/v1alpha1", "Sponsor", true),
                None,
            ),
        ];
        for (rule, job, want) in cases {
            assert_eq!(job_owner(&job), want, "{rule}");
        }
    }
}
