//! `mirrorfleet standalone`: the whole job in one process, without Kubernetes or Redis — the
//! manifests compiled into an embedded store, source and mirror scans as in-process tasks
//! (the same code the scan Jobs run), health checks, and the redirector embedded as a library.
//!
//! It runs as tasks joined by `watch` channels; each is a function of its inputs that returns
//! when its input closes, so each can be tested alone:
//!
//! ```text
//!  manifests (a directory, or Git: fetch + fast-forward), every reload_every
//!      │
//!  [follower] ──── write_fleet ────▶ store (fleet, indexes, availability, health)
//!      │                                 │
//!      │ watch<Arc<FleetState>>          │ follow → watch<Arc<LoadedState>>
//!      │ (only when it changed)          │
//!      └──▶ each of [sources], [mirrors] and [targets] takes both ◀──┘
//!
//!  [sources]  a task per project, its scan in a task of its own ── write_index ──────▶ store
//!  [mirrors]  ≤ 4 scans at once, due per (mirror, project) ─── write_availability ──▶ store
//!      ▲  └── mpsc<String> "rescanned" ───▶ [Checker] ── write_health ──▶ store
//!      └───── mpsc<Transition> (RescanFirst) ──┘  ▲
//!  [targets] ── watch<Arc<Vec<Target>>> ──────────┘
//!  [push]  store: a new index serial ──▶ Pusher (MQTT, webhooks; never waits on them)
//! ```
//!
//! Nothing here awaits a scan in a loop that serves other duties: a source scan runs in a task
//! of its own project, mirror scans in a bounded set the scheduler only collects. Dropping the
//! [`Standalone`] handle stops every task.

pub mod admin;
mod follower;
mod mirrors;
mod push;
mod sources;
mod targets;
mod tree;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{FleetState, MirrorState, ProjectState};
use mirrorfleet_geo::Locator;
use mirrorfleet_health::Checker;
use mirrorfleet_manifests::GitSource;
use mirrorfleet_store::{EmbeddedStore, StateWriter};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cmd;

/// Mirror scans running at once.
pub const MAX_SCANS: usize = 4;

/// How often the store follower re-reads the whole manifest as a safety net (events carry
/// every change in between).
const STORE_RESYNC: Duration = Duration::from_secs(30);

/// What standalone mode needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory of manifests (with `git`: the directory inside the repository is used).
    pub manifests: PathBuf,
    /// Follow a Git repository instead of a directory (polled every `reload_every`).
    pub git: Option<GitSource>,
    /// Locates mirrors whose spec gives no location (GeoIP of their host).
    pub locator: Option<Arc<Locator>>,
    /// How often the manifests are re-read.
    pub reload_every: Duration,
    /// How often sources are rescanned (mutable metadata is rechecked every few seconds).
    pub source_every: Duration,
    /// How often each mirror is rescanned.
    pub mirror_every: Duration,
    /// How often mutable metadata of local sources is re-checked.
    pub recheck_every: Duration,
    /// Where new source serials are announced (MQTT, the Projects' webhooks).
    pub push: Option<mirrorfleet_push::Settings>,
}

impl Settings {
    /// The scan schedule these settings give.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            source_every: self.source_every,
            recheck_every: self.recheck_every,
            mirror_every: self.mirror_every,
        }
    }
}

/// The default scan intervals. Every task asks it per project or mirror, so that intervals
/// given in the fleet (a Project's `scan` settings) can take over here without the tasks
/// changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Between two full scans of a source.
    pub source_every: Duration,
    /// Between two rechecks of a local source's mutable metadata.
    pub recheck_every: Duration,
    /// Between two scans of one mirror's copy of one project.
    pub mirror_every: Duration,
}

/// How often one project's source is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceIntervals {
    /// Between two full scans.
    pub rescan: Duration,
    /// Between two rechecks of mutable metadata (local sources only).
    pub recheck: Duration,
}

impl Schedule {
    /// The intervals of `project`'s source scans: the Project's `scan` settings, else these.
    pub fn source(&self, project: &ProjectState) -> SourceIntervals {
        SourceIntervals {
            rescan: seconds_or(project.source_interval_seconds, self.source_every),
            recheck: seconds_or(project.metadata_recheck_seconds, self.recheck_every),
        }
    }

    /// The interval between scans of `mirror`'s copy of `project`: the Mirror's
    /// `scan.intervalMinutes`, else the Project's `scan.mirrorIntervalMinutes`, else this
    /// schedule's.
    pub fn mirror(&self, mirror: &MirrorState, project: &ProjectState) -> Duration {
        let given = mirror
            .scan_interval_seconds
            .or(project.mirror_interval_seconds);
        seconds_or(given, self.mirror_every)
    }
}

/// `seconds` (at least one) when given, else `default`.
fn seconds_or(seconds: Option<u32>, default: Duration) -> Duration {
    seconds.map_or(default, |s| Duration::from_secs(u64::from(s.max(1))))
}

/// The running standalone tasks; dropping it stops them all.
#[derive(Debug)]
pub struct Standalone {
    /// Asks for a project's source to be indexed at once.
    pub publisher: Publisher,
    _supervisor: Task<()>,
}

/// Asks the source indexer to index a project at once (`mirrorfleet publish`).
#[derive(Debug, Clone)]
pub struct Publisher {
    fleet: watch::Receiver<Arc<FleetState>>,
    requests: mpsc::Sender<String>,
}

impl Publisher {
    /// Asks for `project` to be indexed now; `false` when the fleet has no such project.
    pub fn publish(&self, project: &str) -> bool {
        if self.fleet.borrow().project(project).is_none() {
            return false;
        }
        // A full queue already holds requests that will index it.
        let _ = self.requests.try_send(project.to_owned());
        true
    }
}

/// Loads the manifests (an error when they have problems), writes the fleet, then starts the
/// tasks that keep the store's fleet, indexes, availability and health current.
pub async fn maintain(settings: Settings, store: EmbeddedStore) -> anyhow::Result<Standalone> {
    let source = follower::ManifestSource {
        dir: settings.manifests.clone(),
        git: settings.git.clone(),
        locator: settings.locator.clone(),
    };
    let follower::Outcome { commit, fleet } = follower::read_once(&source).await;
    let first = fleet.map_err(|problems| {
        let problems = follower::Outcome::described(commit.as_deref(), &problems);
        anyhow::anyhow!("the manifests have problems:\n{problems}")
    })?;
    let writer = StateWriter::new(store.clone());
    let generation = writer.write_fleet(&first).await?;
    // Every task that reads the store starts from a state holding at least that fleet (and
    // whatever indexes earlier runs left).
    let mut state = mirrorfleet_store::follow(store.clone(), STORE_RESYNC).await;
    state
        .wait_for(|s| s.generation >= generation)
        .await
        .map_err(|_| anyhow::anyhow!("the store follower stopped"))?;
    let (fleet_tx, fleet) = watch::channel(Arc::new(first));
    let (targets_tx, targets_rx) = watch::channel(Arc::new(Vec::new()));
    let (rescanned_tx, rescanned_rx) = mpsc::channel::<String>(64);
    let (transitions_tx, transitions_rx) = mpsc::channel(1024);
    let (reading_tx, _) = watch::channel(follower::Reading {
        reads: 1,
        commit,
        problems: None,
    });
    let schedule = settings.schedule();
    // The serials held before any task runs are not new (see [`push`]).
    let held = state.borrow().index_meta.clone();
    let (publish_tx, publish_rx) = mpsc::channel(64);
    let publisher = Publisher {
        fleet: fleet.clone(),
        requests: publish_tx,
    };

    let mut tasks: JoinSet<&'static str> = JoinSet::new();
    tasks.spawn(named(
        "manifest follower",
        follower::follow(
            source,
            settings.reload_every,
            writer.clone(),
            fleet_tx,
            reading_tx,
        ),
    ));
    tasks.spawn(named(
        "source indexer",
        sources::index_sources(
            fleet.clone(),
            state.clone(),
            writer.clone(),
            schedule,
            publish_rx,
        ),
    ));
    // Sync reports from mirrors (MQTT), checked against the fleet and rate-limited, go to
    // the targeted checks, which also follow every index change; what checks cannot prove
    // goes on to the scan scheduler.
    let (reports_tx, reports_rx) = mpsc::channel::<mirrors::Pair>(256);
    if let Some(broker) = settings.push.as_ref().and_then(|p| p.broker.clone()) {
        tasks.spawn(named(
            "sync reports",
            push::follow_reports(broker, fleet.clone(), reports_tx),
        ));
    }
    if let Some(broker) = settings.push.as_ref().and_then(|p| p.broker.clone()) {
        tasks.spawn(named(
            "MQTT publish requests",
            push::follow_publishes(broker, publisher.clone()),
        ));
    }
    let (scans_tx, scans_rx) = mpsc::channel::<mirrors::Pair>(256);
    tasks.spawn(named(
        "targeted checks",
        mirrorfleet_scan::verify::follow(
            fleet.clone(),
            state.clone(),
            writer.clone(),
            reports_rx,
            scans_tx,
            mirrorfleet_scan::verify::Settings::default(),
        ),
    ));
    tasks.spawn(named(
        "mirror scan scheduler",
        mirrors::schedule_scans(
            fleet.clone(),
            state.clone(),
            writer.clone(),
            transitions_rx,
            rescanned_tx,
            scans_rx,
            mirrors::ScanSettings {
                schedule,
                max_scans: MAX_SCANS,
            },
        ),
    ));
    if let Some(push) = settings.push.clone() {
        let pusher = mirrorfleet_push::Pusher::start(push)?;
        tasks.spawn(named(
            "serial announcer",
            push::announce_serials(held, state.clone(), fleet.clone(), pusher),
        ));
    }
    tasks.spawn(named(
        "health targets",
        targets::publish_targets(fleet, state, targets_tx),
    ));
    let checker = Checker::new(writer, cmd::now);
    tasks.spawn(named(
        "health checker",
        checker.run(targets_rx, rescanned_rx, transitions_tx),
    ));
    // The set lives in the supervisor: aborting it drops the set, which aborts every task.
    let supervisor = Task::spawn(async move {
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok(task) => tracing::error!(task, "a standalone task stopped"),
                Err(e) => tracing::error!(error = %e, "a standalone task failed"),
            }
        }
    });
    Ok(Standalone {
        publisher,
        _supervisor: supervisor,
    })
}

/// Runs `task`, then gives its name (for the supervisor's log).
async fn named(name: &'static str, task: impl Future<Output = ()>) -> &'static str {
    task.await;
    name
}

/// A spawned task that is aborted when dropped; awaiting it gives the task's result.
#[derive(Debug)]
pub(crate) struct Task<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Task<T> {
    /// Spawns `fut` on the runtime.
    pub(crate) fn spawn(fut: impl Future<Output = T> + Send + 'static) -> Task<T> {
        Task(tokio::spawn(fut))
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
