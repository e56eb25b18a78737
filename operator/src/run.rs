//! `mirrorfleet operator`: waits for the leader Lease, then runs the four controllers, the
//! health checker and the scan scheduler until leadership is lost (then exits, so that the
//! pod restarts as a standby — controller-runtime's convention).
//!
//! This is the wiring only: [`Controllers`] (the four controllers, their caches, the scan
//! Jobs' watch, and a new assessment after deletions: `controllers.rs`), [`follow_store`]
//! (what changes in the store reconciles the objects it concerns, e.g. a health verdict the
//! mirror it is about), [`follow_reports`] (mirrors' sync reports ask for scans),
//! [`forward_transitions`] (a mirror back from a long outage is rescanned), [`Scheduler`]
//! (the scan Jobs) and [`run`], which starts them with the Lease, the checker, the Git
//! follower and the metrics server. It must not decide anything a reconcile, the scheduler
//! or the checker decides.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use mirrorfleet_health::{self as health, Checker, Transition};
use mirrorfleet_runtime::error_chain;
use mirrorfleet_store::{LoadedState, StateWriter, Store};
use tokio::sync::mpsc;

pub use crate::controllers::Controllers;
use crate::jobs::JobSettings;
use crate::lease::Elector;
use crate::metrics::{self, Metrics};
use crate::schedule::Scheduler;
use crate::triggers::{self, Triggers};
use crate::{Context, Error};

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
    let states = mirrorfleet_store::follow(store.clone(), FOLLOW_RESYNC).await;
    let following = tokio::spawn(follow_store(states.clone(), ctx.clone(), triggers));

    // Health: targets follow the fleet and the scans; a verdict reaches the store, and from
    // there the mirror's status (follow_store).
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let (rescanned_tx, rescanned_rx) = mpsc::channel::<String>(64);
    let (transitions_tx, transitions_rx) = mpsc::channel::<Transition>(1024);
    let checker = Checker::new(StateWriter::new(store.clone()), now);
    let checking = tokio::spawn(checker.run(targets_rx, rescanned_rx, transitions_tx));
    let (rescan_tx, rescan_rx) = mpsc::channel::<String>(64);
    let forwarding = tokio::spawn(forward_transitions(
        transitions_rx,
        rescan_tx,
        metrics.clone(),
    ));
    let scheduler = Scheduler::new(
        client.clone(),
        ns,
        settings.jobs.clone(),
        settings.scan_interval_seconds,
    );
    // Mirrors' sync reports (MQTT), each checked against the fleet, go to the targeted
    // checks, which also follow every index change: a HEAD per changed file proves what a
    // mirror holds without a scan Job. What they cannot prove asks for a scan.
    let (reports_tx, reports_rx) = mpsc::channel::<(String, String)>(256);
    let reporting = settings
        .push
        .as_ref()
        .and_then(|p| p.broker.clone())
        .map(|broker| tokio::spawn(follow_reports(broker, ctx.clone(), reports_tx)));
    // The index follows upstream sources between interval Jobs, and MQTT publish requests.
    let probing = tokio::spawn(crate::upstream::probe_upstreams(
        ctx.clone(),
        states.clone(),
    ));
    let publishing = settings
        .push
        .as_ref()
        .and_then(|p| p.broker.clone())
        .map(|broker| tokio::spawn(crate::upstream::follow_publishes(broker, ctx.clone())));
    let (scans_tx, scans_rx) = mpsc::channel::<(String, String)>(256);
    let checking_changes = tokio::spawn(mirrorfleet_scan::verify::follow(
        ctx.latest.subscribe(),
        states,
        StateWriter::new(store.clone()),
        reports_rx,
        scans_tx,
        mirrorfleet_scan::verify::Settings::default(),
    ));
    let scheduling =
        tokio::spawn(scheduler.run(ctx.clone(), targets_tx, rescan_rx, rescanned_tx, scans_rx));
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
    for t in [
        checking,
        checking_changes,
        forwarding,
        scheduling,
        following,
        probing,
    ]
    .into_iter()
    .chain(git)
    .chain(reporting)
    .chain(publishing)
    {
        t.abort();
    }
    serving.abort();
    outcome
}

/// At most one sync report acted on per (mirror, project) in this time (a report costs a
/// round of HEADs, or a scan Job).
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Reads mirrors' sync reports (`mirrorfleet/report/<mirror>`) from `broker` and sends each
/// (mirror, project) of the fleet to `checks`, at most one per pair every [`REPORT_EVERY`]:
/// a report is a hint that targeted checks (or a scan) verify, never trusted alone. Reports of unknown mirrors or of projects a mirror does not carry, and
/// garbage, are logged and change nothing.
pub async fn follow_reports<S: Store>(
    broker: mirrorfleet_push::Broker,
    ctx: Arc<Context<S>>,
    checks: mpsc::Sender<(String, String)>,
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
        if !limit.allow(&r.mirror, &r.project, std::time::Instant::now()) {
            continue;
        }
        tracing::info!(mirror = %r.mirror, project = %r.project, serial = %r.serial, "sync reported");
        if checks.send((r.mirror, r.project)).await.is_err() {
            return;
        }
    }
}

/// Where mirrors publish their sync reports: `<prefix>/<mirror>`.
pub const REPORTS: &str = "mirrorfleet/report";

/// Forwards the checker's transitions until it stops: each is counted in `metrics`; a mirror
/// answering again after a long outage goes to `rescan` (its status follows from the store,
/// [`follow_store`]).
pub async fn forward_transitions(
    mut transitions: mpsc::Receiver<Transition>,
    rescan: mpsc::Sender<String>,
    metrics: Arc<Metrics>,
) {
    while let Some(t) = transitions.recv().await {
        tracing::debug!(mirror = %t.key.mirror, change = ?t.change, "health changed");
        metrics.health_transitions.inc(match t.change {
            health::Change::Down { .. } => "down",
            health::Change::Up => "up",
            health::Change::RescanFirst => "rescan_first",
        });
        if t.change == health::Change::RescanFirst {
            let _ = rescan.send(t.key.mirror.clone()).await;
        }
    }
}

/// Follows the store until the task is dropped: each change reconciles the objects whose
/// status it concerns ([`triggers::state_changes`]) — a health verdict its mirror, a scan
/// its mirror, an index its project and the mirrors carrying it — and each new index serial
/// is announced to mirrors (`ctx.push`; the serials held at start are not new).
pub async fn follow_store<S: Store + Clone>(
    mut states: tokio::sync::watch::Receiver<Arc<LoadedState>>,
    ctx: Arc<Context<S>>,
    triggers: Triggers,
) {
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
