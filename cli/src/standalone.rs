//! `mirrorfleet standalone`: the whole job in one process, without Kubernetes or Redis — the
//! manifests compiled into an embedded store, source and mirror scans as bounded in-process
//! tasks (the same code the scan Jobs run), and the redirector embedded as a library.
//!
//! The manifests are re-read every `reload_every`; a change that validates replaces the fleet,
//! a change that does not is reported (file, line, problem) and the last good fleet stays.
//! Health checks run as a task of their own ([`health::Checker`]): verdicts go to the store
//! at once; a mirror back from a long outage is rescanned here before it gets traffic.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mirrorfleet_crds::state::{FileIndex, FleetState, PathClasses};
use mirrorfleet_store::{EmbeddedStore, LoadedState, StateReader, StateWriter};
use tokio::sync::Mutex;

use mirrorfleet_geo::Locator;
use mirrorfleet_health::{self as health, Change, Checker, Transition};
use mirrorfleet_manifests::{self as manifests, GitSource};
use mirrorfleet_scan::{self as scan, run};
use mirrorfleet_validate::compile;

use crate::cmd;

/// Mirror scans running at once.
const MAX_SCANS: usize = 4;

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
}

/// Reads, validates and compiles the manifests; `Err` lists the problems.
pub fn load(dir: &PathBuf) -> Result<FleetState, String> {
    let manifests = manifests::read(std::slice::from_ref(dir))
        .map_err(|e| mirrorfleet_runtime::error_chain(&e))?;
    let outcome = manifests.validate(Default::default());
    if !outcome.problems.is_empty() {
        return Err(outcome
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"));
    }
    Ok(compile::compile(&outcome.fleet))
}

/// Where the manifests are now: the directory, or the Git working copy after a fetch and
/// fast-forward (with the commit, to name it in messages).
async fn manifests_dir(settings: &Settings) -> Result<(PathBuf, Option<String>), String> {
    let Some(git) = settings.git.clone() else {
        return Ok((settings.manifests.clone(), None));
    };
    let synced = tokio::task::spawn_blocking(move || git.sync())
        .await
        .map_err(|e| format!("the Git task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    if synced.changed {
        tracing::info!(commit = %synced.commit, "manifests repository updated");
    }
    Ok((synced.dir, Some(synced.commit)))
}

/// Reads the manifests from wherever they are; `Err` names the commit and the problems.
async fn load_current(settings: &Settings) -> Result<FleetState, String> {
    let (dir, commit) = manifests_dir(settings).await?;
    let mut fleet = load(&dir).map_err(|problems| match commit {
        Some(c) => format!("commit {c}: {problems}"),
        None => problems,
    })?;
    if let Some(l) = &settings.locator {
        l.fill(&mut fleet).await;
    }
    Ok(fleet)
}

/// Keeps the store's fleet, indexes and availability current until the task is dropped.
pub async fn maintain(
    settings: Settings,
    store: EmbeddedStore,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let fleet = load_current(&settings)
        .await
        .map_err(|problems| anyhow::anyhow!("the manifests have problems:\n{problems}"))?;
    let writer = StateWriter::new(store.clone());
    writer.write_fleet(&fleet).await?;
    let fleet = Arc::new(Mutex::new(fleet));
    let (targets_tx, targets_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let (rescanned_tx, rescanned_rx) = tokio::sync::mpsc::channel::<String>(64);
    let (transitions_tx, mut transitions) = tokio::sync::mpsc::channel::<Transition>(1024);
    let checker = Checker::new(writer.clone(), cmd::now);
    let checker = tokio::spawn(checker.run(targets_rx, rescanned_rx, transitions_tx));
    let handle = tokio::spawn(async move {
        // Dropped with this task: the checker stops with it.
        let _checker = AbortOnDrop(checker);
        // Mirrors back from a long outage, with the projects still to rescan.
        let mut rescans: HashMap<String, HashSet<String>> = HashMap::new();
        let mut targets_of: Option<(u64, u64)> = None;
        let mut fleet_version = 0u64;
        let mut last_source: HashMap<String, Instant> = HashMap::new();
        let mut last_mirror: HashMap<(String, String), Instant> = HashMap::new();
        let mut last_reload = Instant::now();
        let mut last_recheck = Instant::now();
        let reader = StateReader::new(store.clone());
        let mut state = LoadedState::default();
        type ScanDone = ((String, String), Result<run::MirrorScan, scan::ScanError>);
        let mut scans: tokio::task::JoinSet<ScanDone> = tokio::task::JoinSet::new();
        let mut running: HashSet<(String, String)> = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if last_reload.elapsed() >= settings.reload_every {
                last_reload = Instant::now();
                match load_current(&settings).await {
                    Ok(new) => {
                        let mut current = fleet.lock().await;
                        if *current != new {
                            tracing::info!("manifests changed; applying the new fleet");
                            if let Err(e) = writer.write_fleet(&new).await {
                                tracing::warn!(error = %mirrorfleet_runtime::error_chain(&e), "cannot store the fleet");
                            }
                            *current = new;
                            fleet_version += 1;
                            last_source.clear();
                            last_mirror.clear();
                        }
                    }
                    Err(problems) => {
                        let problems = problems.replace('\n', "; ");
                        tracing::warn!(%problems, "manifests have problems; keeping the last good fleet")
                    }
                }
            }
            let current = fleet.lock().await.clone();
            // Only what changed is read again (the indexes can be large).
            if let Err(e) = reader.resync(&mut state).await {
                tracing::warn!(error = %mirrorfleet_runtime::error_chain(&e), "cannot read the store");
                continue;
            }
            for project in &current.projects {
                let due = last_source
                    .get(&project.name)
                    .is_none_or(|t| t.elapsed() >= settings.source_every);
                let previous = state.indexes.get(&project.name).cloned();
                if due {
                    last_source.insert(project.name.clone(), Instant::now());
                    match run::scan_source(
                        project,
                        previous.as_deref(),
                        &scan::Limits::default(),
                        false,
                    )
                    .await
                    {
                        Ok(index) if previous.as_ref().is_none_or(|p| p.serial != index.serial) => {
                            tracing::info!(project = %project.name, files = index.len(), serial = %index.serial, "source indexed");
                            store_index(&writer, &index).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(project = %project.name, error = %mirrorfleet_runtime::error_chain(&e), "source scan failed")
                        }
                    }
                } else if last_recheck.elapsed() >= settings.recheck_every
                    && let (Some(root), Some(prev), Ok(classes)) = (
                        &project.source.local,
                        previous.as_ref(),
                        PathClasses::of(project),
                    )
                {
                    let (root, prev) = (PathBuf::from(root), prev.clone());
                    let rechecked = tokio::task::spawn_blocking(move || {
                        scan::source::recheck_mutable(&root, &prev, &classes)
                    })
                    .await;
                    if let Ok(Ok(Some(index))) = rechecked {
                        tracing::info!(project = %project.name, "mutable metadata changed");
                        store_index(&writer, &index).await;
                    }
                }
            }
            if last_recheck.elapsed() >= settings.recheck_every {
                last_recheck = Instant::now();
            }
            if reader.resync(&mut state).await.is_err() {
                continue;
            }
            // Probe targets follow the fleet, indexes and scans (computed when they change).
            if targets_of != Some((state.generation, fleet_version)) {
                targets_of = Some((state.generation, fleet_version));
                let targets =
                    health::checker::targets(&current, &state.indexes, &state.availability);
                targets_tx.send_if_modified(|t| {
                    let changed = **t != targets;
                    if changed {
                        *t = Arc::new(targets);
                    }
                    changed
                });
            }
            while let Ok(t) = transitions.try_recv() {
                if t.change == Change::RescanFirst
                    && let Some(m) = current.mirror(&t.key.mirror)
                {
                    let projects: HashSet<String> =
                        m.projects.iter().map(|p| p.project.clone()).collect();
                    for p in &projects {
                        last_mirror.remove(&(m.name.clone(), p.clone()));
                    }
                    rescans.insert(m.name.clone(), projects);
                }
            }
            // Finished scans report here; new ones start while fewer than MAX_SCANS run, so a
            // slow mirror never holds up the others or the manifest reload.
            while let Some(done) = scans.try_join_next() {
                if let Ok((key, result)) = done {
                    running.remove(&key);
                    match result {
                        Ok(s) => {
                            tracing::info!(mirror = %key.0, project = %key.1, protocol = s.protocol, files = s.availability.counts.files, missing = s.availability.counts.missing, "mirror scanned");
                            if let Some(left) = rescans.get_mut(&key.0) {
                                left.remove(&key.1);
                                if left.is_empty() {
                                    rescans.remove(&key.0);
                                    let _ = rescanned_tx.try_send(key.0.clone());
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "mirror scan failed"),
                    }
                }
            }
            for mirror in &current.mirrors {
                for carried in &mirror.projects {
                    let key = (mirror.name.clone(), carried.project.clone());
                    if running.len() >= MAX_SCANS
                        || running.contains(&key)
                        || last_mirror
                            .get(&key)
                            .is_some_and(|t| t.elapsed() < settings.mirror_every)
                    {
                        continue;
                    }
                    let (Some(project), Some(index)) = (
                        current.project(&carried.project),
                        state.indexes.get(&carried.project),
                    ) else {
                        continue;
                    };
                    last_mirror.insert(key.clone(), Instant::now());
                    running.insert(key.clone());
                    let (writer, mirror, project, index) = (
                        writer.clone(),
                        mirror.clone(),
                        project.clone(),
                        index.clone(),
                    );
                    scans.spawn(async move {
                        let result = run::scan_mirror(
                            &writer,
                            &mirror,
                            &project,
                            &index,
                            &run::limits_for(&mirror),
                            cmd::now(),
                        )
                        .await;
                        (key, result)
                    });
                }
            }
        }
    });
    Ok(handle)
}

async fn store_index(writer: &StateWriter<EmbeddedStore>, index: &FileIndex) {
    if let Err(e) = writer.write_index(index, cmd::now()).await {
        tracing::warn!(project = %index.project, error = %mirrorfleet_runtime::error_chain(&e), "cannot store the index");
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
