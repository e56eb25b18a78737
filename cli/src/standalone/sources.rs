//! The source indexer: one task per project of the fleet. Each scans its project's source (a
//! local tree, or an rsync or HTTP upstream) in a task of its own every `rescan` interval,
//! rechecks a local tree's mutable metadata every `recheck` interval meanwhile, and writes
//! each new index to the store. A fleet change that alters how a project is indexed (its
//! source or hashes) abandons that project's scan in flight and scans it again at once; a
//! project leaving the fleet stops its task (and its scan).
//!
//! It must not let one project's scan hold up another project, its own rechecks or a fleet
//! change; nor write a project's indexes out of order: every write of a project is made by
//! its one task, one after the other, so an index built from an older one never overwrites a
//! newer one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{FileIndex, FleetState, PathClasses, ProjectState};
use mirrorfleet_scan::{self as scan, ScanError, run};
use mirrorfleet_store::{LoadedState, StateWriter, Store};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Schedule, Task, tree};
use crate::cmd;

/// A project's task, the channel that gives it the project's current settings, and the one
/// that asks it to index at once.
#[derive(Debug)]
struct Worker {
    project: watch::Sender<ProjectState>,
    kick: mpsc::Sender<()>,
    _task: Task<()>,
}

/// How long a local file must be left alone before it is indexed (younger ones are probably
/// still being written: looked at again after this long).
pub const SETTLE: Duration = Duration::from_millis(300);

/// Indexes the sources of `fleet`'s projects until `fleet` closes. A project's first index
/// is built on the one `state` holds for it (left by an earlier run), so unchanged files
/// are not hashed again. A project named on `publish` is indexed at once (an unknown name
/// is ignored: the sender checks it against the fleet).
pub async fn index_sources<S: Store + Clone>(
    mut fleet: watch::Receiver<Arc<FleetState>>,
    state: watch::Receiver<Arc<LoadedState>>,
    writer: StateWriter<S>,
    schedule: Schedule,
    mut publish: mpsc::Receiver<String>,
) {
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut publish_open = true;
    loop {
        let current = fleet.borrow_and_update().clone();
        workers.retain(|name, _| {
            let kept = current.project(name).is_some();
            if !kept {
                tracing::info!(project = %name, "project left the fleet; no longer indexing it");
            }
            kept
        });
        for p in &current.projects {
            if let Some(w) = workers.get(&p.name) {
                w.project.send_if_modified(|held| {
                    let changed = held != p;
                    if changed {
                        *held = p.clone();
                    }
                    changed
                });
                continue;
            }
            let previous = state.borrow().indexes.get(&p.name).cloned();
            let (tx, rx) = watch::channel(p.clone());
            // One pending request is enough: the scan it starts sees every change before it.
            let (kick, kicked) = mpsc::channel(1);
            let task = Task::spawn(index_project(
                rx,
                previous,
                writer.clone(),
                schedule,
                kicked,
            ));
            workers.insert(
                p.name.clone(),
                Worker {
                    project: tx,
                    kick,
                    _task: task,
                },
            );
        }
        loop {
            tokio::select! {
                changed = fleet.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                name = publish.recv(), if publish_open => match name {
                    Some(name) => match workers.get(&name) {
                        Some(w) => {
                            tracing::info!(project = %name, "publish: indexing at once");
                            let _ = w.kick.try_send(());
                        }
                        None => tracing::warn!(project = %name, "publish for a project not in the fleet"),
                    },
                    None => publish_open = false,
                },
            }
        }
    }
}

/// What a scan of a source gave.
struct Scanned {
    index: FileIndex,
    /// Files left as they were because they are still being written.
    unsettled: usize,
    /// An upstream's fingerprint taken before it was listed: a later probe that differs
    /// means a change the index may not have.
    fingerprint: Option<String>,
}

/// Indexes one project until `project` closes: a scan at once, then every `rescan` interval
/// (the next one starts `rescan` after the previous one started, or when it ends if it took
/// longer); between them, rechecks of a local tree's mutable metadata, or probes of an
/// upstream's trace file (a change scans it at once). A local tree is watched: a change in
/// it is indexed as soon as it has settled. A message on `kick` scans at once. `current` is
/// the index the store holds for it, if any.
pub async fn index_project<S: Store + Clone>(
    mut project: watch::Receiver<ProjectState>,
    mut current: Option<Arc<FileIndex>>,
    writer: StateWriter<S>,
    schedule: Schedule,
    mut kick: mpsc::Receiver<()>,
) {
    let mut p = project.borrow_and_update().clone();
    let mut intervals = schedule.source(&p);
    let mut started: Option<Instant> = None;
    let mut next_scan = Instant::now();
    let mut next_recheck = Instant::now() + intervals.recheck;
    let mut scanning: Option<Task<Result<Scanned, ScanError>>> = None;
    let mut probing: Option<Task<Result<Option<String>, ScanError>>> = None;
    let mut fingerprint: Option<String> = None;
    let mut watched = watch_tree(&p);
    let mut kick_open = true;
    loop {
        let local = p.source.local.is_some();
        let recheckable = current.is_some() && (!local || !p.mutable.is_empty());
        tokio::select! {
            changed = project.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = project.borrow_and_update().clone();
                intervals = schedule.source(&new);
                if new.source != p.source || new.hashes != p.hashes {
                    tracing::info!(project = %new.name, "project's source changed; scanning it again");
                    // Dropping the scan in flight aborts it: it reads what is no longer wanted.
                    scanning = None;
                    probing = None;
                    fingerprint = None;
                    next_scan = Instant::now();
                    // The index held describes the old source: no digest of it is reused, and
                    // no recheck holds it against the new tree, until the new one is built.
                    current = None;
                    watched = watch_tree(&new);
                } else if let Some(s) = started {
                    next_scan = s + intervals.rescan;
                }
                next_recheck = next_recheck.min(Instant::now() + intervals.recheck);
                p = new;
            }
            done = finish(&mut scanning) => {
                scanning = None;
                let took = started.map(|s| s.elapsed()).unwrap_or_default();
                match done {
                    Ok(Ok(scanned)) => {
                        if scanned.unsettled > 0 {
                            tracing::debug!(project = %p.name, files = scanned.unsettled, "files still being written; looking again shortly");
                            next_scan = next_scan.min(Instant::now() + SETTLE);
                        }
                        fingerprint = scanned.fingerprint;
                        let index = scanned.index;
                        if current.as_ref().is_some_and(|c| c.serial == index.serial) {
                            tracing::debug!(project = %p.name, serial = %index.serial, ?took, "source unchanged");
                        } else {
                            tracing::info!(project = %p.name, files = index.len(), serial = %index.serial, ?took, "source indexed");
                            if store(&writer, &index).await {
                                current = Some(Arc::new(index));
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(project = %p.name, error = %mirrorfleet_runtime::error_chain(&e), ?took, "source scan failed");
                    }
                    Err(e) => tracing::error!(project = %p.name, error = %e, "source scan task failed"),
                }
            }
            () = tokio::time::sleep_until(next_scan), if scanning.is_none() => {
                let now = Instant::now();
                started = Some(now);
                next_scan = now + intervals.rescan;
                let (project, previous) = (p.clone(), current.clone());
                scanning = Some(Task::spawn(async move { scan(&project, previous.as_deref()).await }));
            }
            () = tree::settled(&mut watched) => {
                tracing::debug!(project = %p.name, "the tree changed; indexing it");
                next_scan = Instant::now();
            }
            k = kick.recv(), if kick_open => match k {
                Some(()) => next_scan = Instant::now(),
                None => kick_open = false,
            },
            () = tokio::time::sleep_until(next_recheck), if recheckable && probing.is_none() => {
                next_recheck = Instant::now() + intervals.recheck;
                let Some(held) = current.clone() else { continue };
                if local {
                    if let Some(index) = recheck(&p, held).await {
                        tracing::info!(project = %p.name, serial = %index.serial, "mutable metadata changed");
                        if store(&writer, &index).await {
                            current = Some(Arc::new(index));
                        }
                    }
                } else {
                    let project = p.clone();
                    let limits = scan::Limits {
                        io_timeout: intervals.recheck.clamp(Duration::from_secs(2), Duration::from_secs(30)),
                        ..scan::Limits::default()
                    };
                    probing = Some(Task::spawn(async move {
                        run::probe_upstream(&project, Some(&held), &limits).await
                    }));
                }
            }
            probed = finish(&mut probing) => {
                probing = None;
                match probed {
                    Ok(Ok(Some(seen))) => {
                        if fingerprint.as_ref().is_some_and(|f| *f != seen) {
                            tracing::info!(project = %p.name, "the upstream changed; indexing it");
                            next_scan = Instant::now();
                        }
                        fingerprint = Some(seen);
                    }
                    // Nothing cheap to look at: the periodic scans carry on alone.
                    Ok(Ok(None)) => next_recheck = Instant::now() + intervals.rescan,
                    Ok(Err(e)) => {
                        tracing::debug!(project = %p.name, error = %mirrorfleet_runtime::error_chain(&e), "upstream probe failed");
                    }
                    Err(e) => tracing::error!(project = %p.name, error = %e, "upstream probe task failed"),
                }
            }
        }
    }
}

/// A watch of `p`'s local tree; `None` for an upstream, or when it cannot be set up (logged:
/// the periodic scans carry on).
fn watch_tree(p: &ProjectState) -> Option<tree::TreeWatch> {
    let root = p.source.local.as_ref()?;
    match tree::TreeWatch::start(Path::new(root)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(project = %p.name, root = %root, error = %e, "cannot watch the source tree; changes wait for the next full scan");
            None
        }
    }
}

/// Scans `project`'s source: a local tree with [`SETTLE`], so that files still being
/// written are not indexed half-written, or its upstream.
async fn scan(project: &ProjectState, previous: Option<&FileIndex>) -> Result<Scanned, ScanError> {
    let Some(root) = &project.source.local else {
        let limits = scan::Limits::default();
        // Taken first, so that a change during the listing shows in the next probe.
        let fingerprint = match run::probe_upstream(project, previous, &limits).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(project = %project.name, error = %mirrorfleet_runtime::error_chain(&e), "upstream probe failed");
                None
            }
        };
        let index = run::scan_source(project, previous, &limits, false).await?;
        return Ok(Scanned {
            index,
            unsettled: 0,
            fingerprint,
        });
    };
    let limits = scan::Limits {
        settle: SETTLE,
        ..scan::Limits::default()
    };
    let scanned = run::scan_local(project, Path::new(root), previous, &limits, false).await?;
    Ok(Scanned {
        index: scanned.index,
        unsettled: scanned.unsettled.len(),
        fingerprint: None,
    })
}

/// The result of the scan in `scanning`; never ready when there is none.
async fn finish<T>(scanning: &mut Option<Task<T>>) -> Result<T, tokio::task::JoinError> {
    match scanning {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Re-stats the mutable metadata of `p`'s local tree against `index` (on the blocking pool);
/// the new index when any changed.
async fn recheck(p: &ProjectState, index: Arc<FileIndex>) -> Option<FileIndex> {
    let root = PathBuf::from(p.source.local.as_ref()?);
    let classes = match PathClasses::of(p) {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(project = %p.name, %why, "cannot recheck mutable metadata");
            return None;
        }
    };
    let rechecked =
        tokio::task::spawn_blocking(move || scan::source::recheck_mutable(&root, &index, &classes))
            .await;
    match rechecked {
        Ok(Ok(changed)) => changed,
        Ok(Err(e)) => {
            tracing::warn!(project = %p.name, error = %mirrorfleet_runtime::error_chain(&e), "mutable metadata recheck failed");
            None
        }
        Err(e) => {
            tracing::error!(project = %p.name, error = %e, "mutable metadata recheck task failed");
            None
        }
    }
}

/// Writes `index`; whether the store took it.
async fn store<S: Store>(writer: &StateWriter<S>, index: &FileIndex) -> bool {
    match writer.write_index(index, cmd::now()).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(project = %index.project, error = %mirrorfleet_runtime::error_chain(&e), "cannot store the index");
            false
        }
    }
}

#[cfg(test)]
mod tests;
