//! The manifest follower: reads the manifests every `reload_every` — a directory, or a Git
//! repository fetched and fast-forwarded — validates and compiles them, and when the compiled
//! fleet changed, writes it to the store and then publishes it. A reading with problems is
//! logged once per distinct problem (with the commit id when following Git) and the last good
//! fleet stays.
//!
//! It must not publish a fleet the store does not hold (the redirector reads the store), nor
//! publish an unchanged fleet (every publication restarts schedules downstream), nor read
//! files or Git on the runtime's worker threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::FleetState;
use mirrorfleet_geo::Locator;
use mirrorfleet_manifests::{self as manifests, GitSource};
use mirrorfleet_store::{StateWriter, Store};
use mirrorfleet_validate::compile;
use tokio::sync::watch;

/// Where the manifests come from.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    /// The directory of manifests (with `git`, the directory inside the repository).
    pub dir: PathBuf,
    /// The Git repository to follow, if any.
    pub git: Option<GitSource>,
    /// Fills in mirror locations the manifests leave out.
    pub locator: Option<Arc<Locator>>,
}

/// What the follower's readings found so far, for whoever reports on it (and for tests, to
/// know a reading happened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// Readings so far, the first one (before the follower started) included.
    pub reads: u64,
    /// The Git commit of the last reading, when following Git.
    pub commit: Option<String>,
    /// The problems of the last reading, one per line; `None` when it was good.
    pub problems: Option<String>,
}

/// One reading of the manifests.
#[derive(Debug)]
pub struct Outcome {
    /// The commit read, when following Git (and the fetch worked).
    pub commit: Option<String>,
    /// The compiled fleet, or the problems found, one per line.
    pub fleet: Result<FleetState, String>,
}

impl Outcome {
    /// The problems with the commit they were found in, for a message.
    pub fn described(commit: Option<&str>, problems: &str) -> String {
        match commit {
            Some(c) => format!("commit {c}: {problems}"),
            None => problems.to_owned(),
        }
    }
}

/// Reads, validates and compiles the manifests in `dir`; `Err` lists the problems.
pub fn load(dir: &Path) -> Result<FleetState, String> {
    let manifests =
        manifests::read(&[dir.to_path_buf()]).map_err(|e| mirrorfleet_runtime::error_chain(&e))?;
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
/// fast-forward (with the commit).
async fn manifests_dir(source: &ManifestSource) -> Result<(PathBuf, Option<String>), String> {
    let Some(git) = source.git.clone() else {
        return Ok((source.dir.clone(), None));
    };
    let synced = tokio::task::spawn_blocking(move || git.sync())
        .await
        .map_err(|e| format!("the Git task failed: {e}"))?
        .map_err(|e| mirrorfleet_runtime::error_chain(&e))?;
    if synced.changed {
        tracing::info!(commit = %synced.commit, "manifests repository updated");
    }
    Ok((synced.dir, Some(synced.commit)))
}

/// Reads the manifests from wherever they are, once.
pub async fn read_once(source: &ManifestSource) -> Outcome {
    let (dir, commit) = match manifests_dir(source).await {
        Ok(found) => found,
        Err(problems) => {
            return Outcome {
                commit: None,
                fleet: Err(problems),
            };
        }
    };
    let loaded = tokio::task::spawn_blocking(move || load(&dir))
        .await
        .unwrap_or_else(|e| Err(format!("the manifest reading task failed: {e}")));
    let fleet = match loaded {
        Ok(mut fleet) => {
            if let Some(l) = &source.locator {
                l.fill(&mut fleet).await;
            }
            Ok(fleet)
        }
        Err(problems) => Err(problems),
    };
    Outcome { commit, fleet }
}

/// Follows the manifests: a reading every `every` (the first one `every` after the start: the
/// fleet published when it starts is the one just read); a changed fleet is written through
/// `writer`, then published on `fleet`. Each reading is reported on `reading`. Returns when
/// nobody receives `fleet` any more.
pub async fn follow<S: Store>(
    source: ManifestSource,
    every: Duration,
    writer: StateWriter<S>,
    fleet: watch::Sender<Arc<FleetState>>,
    reading: watch::Sender<Reading>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The problems last logged, so that a broken commit is reported once, not every poll.
    let mut reported: Option<(Option<String>, String)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = fleet.closed() => return,
        }
        let Outcome {
            commit,
            fleet: read,
        } = read_once(&source).await;
        let problems = match read {
            Ok(new) => {
                reported = None;
                apply(new, commit.as_deref(), &writer, &fleet).await;
                None
            }
            Err(problems) => {
                let seen = (commit.clone(), problems.clone());
                if reported.as_ref() != Some(&seen) {
                    let oneline = Outcome::described(commit.as_deref(), &problems);
                    tracing::warn!(
                        commit = commit.as_deref(),
                        problems = %oneline.replace('\n', "; "),
                        "manifests have problems; keeping the last good fleet"
                    );
                    reported = Some(seen);
                }
                Some(problems)
            }
        };
        reading.send_modify(|r| {
            r.reads += 1;
            r.commit = commit;
            r.problems = problems;
        });
    }
}

/// Stores and publishes `new` if it differs from the fleet published. A fleet the store
/// refused is not published: the next reading tries again.
async fn apply<S: Store>(
    new: FleetState,
    commit: Option<&str>,
    writer: &StateWriter<S>,
    fleet: &watch::Sender<Arc<FleetState>>,
) {
    let unchanged = **fleet.borrow() == new;
    if unchanged {
        return;
    }
    match writer.write_fleet(&new).await {
        Ok(generation) => {
            tracing::info!(
                commit,
                generation,
                projects = new.projects.len(),
                mirrors = new.mirrors.len(),
                "manifests changed; applying the new fleet"
            );
            fleet.send_replace(Arc::new(new));
        }
        Err(e) => tracing::warn!(
            error = %mirrorfleet_runtime::error_chain(&e),
            "cannot store the new fleet; trying again at the next reading"
        ),
    }
}

#[cfg(test)]
mod tests;
