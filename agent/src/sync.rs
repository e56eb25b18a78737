//! One worker per project: waits for a push or its fallback timer, then runs the project's
//! stages one after the other — never two runs of a project at once; pushes arriving during a
//! run make it run once more afterwards, with the newest serial — writes the trace file and
//! hands the report to be published.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mirrorfleet_crds::state::ProjectDuty;
use tokio::sync::{Notify, mpsc};

use crate::fleet;
use crate::plan::{self, Pacing, Report};
use crate::rsync;

/// A project's pending push: set by the MQTT task, taken by the worker.
#[derive(Debug, Default)]
pub struct Trigger {
    serial: Mutex<Option<String>>,
    notify: Notify,
}

impl Trigger {
    /// Asks for a run for `serial` (the newest wins if one is already pending).
    pub fn fire(&self, serial: &str) {
        if let Ok(mut s) = self.serial.lock() {
            *s = Some(serial.to_owned());
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Option<String> {
        self.serial.lock().ok().and_then(|mut s| s.take())
    }
}

/// What every worker of the node shares.
#[derive(Debug)]
pub struct Node {
    /// The mirror.
    pub mirror: String,
    /// The local root: a project goes into `<root>/<its directory>`.
    pub root: PathBuf,
    /// The rsync program.
    pub rsync: PathBuf,
    /// Pace and I/O timeout.
    pub pacing: Pacing,
    /// A run's overall deadline.
    pub deadline: Duration,
    /// The fallback timer's period and jitter (a fraction).
    pub fallback: (Duration, f64),
    /// Where the duties are re-read for timer runs (for the fleet's serial).
    pub source: fleet::Source,
}

/// Runs `duty`'s worker until dropped: a first run at once, then on pushes and timers.
pub async fn worker(
    node: Arc<Node>,
    mut duty: ProjectDuty,
    trigger: Arc<Trigger>,
    reports: mpsc::Sender<Report>,
) {
    let mut last_serial = duty.serial.clone();
    let mut pushed = None;
    loop {
        let serial = match pushed.take() {
            Some(s) => s,
            None => {
                // A timer run (or the first): the fleet's serial, read now.
                match node.source.load(&node.mirror).await {
                    Ok(d) => {
                        if let Some(fresh) =
                            d.projects.into_iter().find(|p| p.project == duty.project)
                        {
                            duty = fresh;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(project = %duty.project, error = %mirrorfleet_runtime::error_chain(&e), "cannot re-read the duties; syncing with those known")
                    }
                }
                duty.serial
                    .clone()
                    .or_else(|| last_serial.clone())
                    .unwrap_or_else(|| "unknown".to_owned())
            }
        };
        let report = run(&node, &duty, serial).await;
        if report.result == "ok" {
            last_serial = Some(report.serial.clone());
        }
        if reports.send(report).await.is_err() {
            return;
        }
        let wait = plan::next_fallback(node.fallback.0, node.fallback.1, random());
        tokio::select! {
            () = trigger.notify.notified() => pushed = trigger.take(),
            () = tokio::time::sleep(wait) => {
                tracing::info!(project = %duty.project, "fallback timer: syncing");
            }
        }
    }
}

/// One run of `duty` for `serial`: its stages, then its trace file; the report either way.
pub async fn run(node: &Node, duty: &ProjectDuty, serial: String) -> Report {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    tracing::info!(project = %duty.project, %serial, "sync starting");
    let mut bytes = 0;
    let outcome = async {
        let hub = duty.hub_rsync.as_deref().ok_or_else(|| {
            "the project has no rsync source to sync from (give the Project spec.source.rsync)"
                .to_owned()
        })?;
        let dest = node.root.join(duty.directory.trim_matches('/'));
        tokio::fs::create_dir_all(&dest)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let stages = plan::stages(duty, hub, &dest, &node.pacing);
        let count = stages.len();
        for (n, args) in stages.iter().enumerate() {
            let left = node.deadline.saturating_sub(started.elapsed());
            let got = rsync::stage(&node.rsync, args, left).await.map_err(|e| {
                format!(
                    "stage {} of {count} from {hub}: {}",
                    n + 1,
                    mirrorfleet_runtime::error_chain(&e)
                )
            })?;
            bytes += got;
        }
        if let Some(trace) = &duty.trace_file {
            write_trace(
                &dest,
                trace,
                &plan::trace_content(started_unix, &node.mirror, &serial),
            )
            .await
            .map_err(|e| format!("cannot write the trace file {trace}: {e}"))?;
        }
        Ok::<(), String>(())
    }
    .await;
    let duration_seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    match &outcome {
        Ok(()) => {
            tracing::info!(project = %duty.project, %serial, bytes, duration_seconds, "synced")
        }
        Err(why) => {
            tracing::warn!(project = %duty.project, %serial, error = %why, duration_seconds, "sync failed")
        }
    }
    Report {
        project: duty.project.clone(),
        serial,
        duration_seconds,
        bytes,
        result: if outcome.is_ok() { "ok" } else { "failed" },
        error: outcome.err(),
    }
}

/// Writes `content` to `dest/trace` through a temporary file renamed into place.
async fn write_trace(dest: &Path, trace: &str, content: &str) -> std::io::Result<()> {
    let path = dest.join(trace.trim_start_matches('/'));
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut tmp = path.clone().into_os_string();
    tmp.push(".mirrorfleet-agent.tmp");
    tokio::fs::write(&tmp, content).await?;
    tokio::fs::rename(&tmp, &path).await
}

/// A random number for the timer's jitter (std's per-process random hash keys; no crate
/// needed for this).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
