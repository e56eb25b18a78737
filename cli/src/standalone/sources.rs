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
use std::path::PathBuf;
use std::sync::Arc;

use mirrorfleet_crds::state::{FileIndex, FleetState, PathClasses, ProjectState};
use mirrorfleet_scan::{self as scan, ScanError, run};
use mirrorfleet_store::{LoadedState, StateWriter, Store};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Schedule, Task};
use crate::cmd;

/// A project's task and the channel that gives it the project's current settings.
#[derive(Debug)]
struct Worker {
    project: watch::Sender<ProjectState>,
    _task: Task<()>,
}

/// Indexes the sources of `fleet`'s projects until `fleet` closes. A project's first index
/// is built on the one `state` holds for it (left by an earlier run), so unchanged files
/// are not hashed again.
pub async fn index_sources<S: Store + Clone>(
    mut fleet: watch::Receiver<Arc<FleetState>>,
    state: watch::Receiver<Arc<LoadedState>>,
    writer: StateWriter<S>,
    schedule: Schedule,
) {
    let mut workers: HashMap<String, Worker> = HashMap::new();
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
            let task = Task::spawn(index_project(rx, previous, writer.clone(), schedule));
            workers.insert(
                p.name.clone(),
                Worker {
                    project: tx,
                    _task: task,
                },
            );
        }
        if fleet.changed().await.is_err() {
            return;
        }
    }
}

/// Indexes one project until `project` closes: a scan at once, then every `rescan` interval
/// (the next one starts `rescan` after the previous one started, or when it ends if it took
/// longer); between them, rechecks of a local tree's mutable metadata. `current` is the
/// index the store holds for it, if any.
pub async fn index_project<S: Store + Clone>(
    mut project: watch::Receiver<ProjectState>,
    mut current: Option<Arc<FileIndex>>,
    writer: StateWriter<S>,
    schedule: Schedule,
) {
    let mut p = project.borrow_and_update().clone();
    let mut intervals = schedule.source(&p);
    let mut started: Option<Instant> = None;
    let mut next_scan = Instant::now();
    let mut next_recheck = Instant::now() + intervals.recheck;
    let mut scanning: Option<Task<Result<FileIndex, ScanError>>> = None;
    loop {
        let recheckable = p.source.local.is_some() && !p.mutable.is_empty() && current.is_some();
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
                    next_scan = Instant::now();
                    // The index held describes the old source: no digest of it is reused, and
                    // no recheck holds it against the new tree, until the new one is built.
                    current = None;
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
                    Ok(Ok(index)) if current.as_ref().is_some_and(|c| c.serial == index.serial) => {
                        tracing::debug!(project = %p.name, serial = %index.serial, ?took, "source unchanged");
                    }
                    Ok(Ok(index)) => {
                        tracing::info!(project = %p.name, files = index.len(), serial = %index.serial, ?took, "source indexed");
                        if store(&writer, &index).await {
                            current = Some(Arc::new(index));
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
                scanning = Some(Task::spawn(async move {
                    run::scan_source(&project, previous.as_deref(), &scan::Limits::default(), false)
                        .await
                }));
            }
            () = tokio::time::sleep_until(next_recheck), if recheckable => {
                next_recheck = Instant::now() + intervals.recheck;
                if let Some(held) = current.clone()
                    && let Some(index) = recheck(&p, held).await
                {
                    tracing::info!(project = %p.name, serial = %index.serial, "mutable metadata changed");
                    if store(&writer, &index).await {
                        current = Some(Arc::new(index));
                    }
                }
            }
        }
    }
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
