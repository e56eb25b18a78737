//! [`JobRunner`]: an open stand-in for the kubelet and the job controller. It watches
//! `batch/v1` Jobs in one namespace and runs each new one as a local process, then writes
//! the Job's status through the status subresource the way the job controller does.
//!
//! What it does, and does not, imitate:
//! - The image is ignored. The test's binary stands for the container's entrypoint: with no
//!   `command` it runs `program args…`; with a `command` it runs
//!   `program command[1..]… args…` (the test's binary replaces `command[0]`).
//! - The environment is cleared except `PATH`, then the container's `env` values are set;
//!   an `env` entry using `valueFrom` fails the Job (nothing resolves it here).
//! - PersistentVolumeClaim volumes registered with [`JobRunnerBuilder::with_volume`] are
//!   "mounted" by rewriting paths: every argument, `env` value and `workingDir` that is the
//!   container's `mountPath` of that volume, or starts with it followed by `/`, has that
//!   prefix replaced by the host directory (plus the mount's `subPath`, if any). A claim
//!   that is mounted but not registered fails the Job.
//! - One attempt per Job: `backoffLimit`, parallelism, completions and pod failure
//!   policies are not honoured; `activeDeadlineSeconds` is (the process is killed and the
//!   Job fails with reason `DeadlineExceeded`). Suspended Jobs wait until resumed.
//! - No Pods are created and a Job deleted while it runs is not noticed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long [`JobRunner::wait_run`] waits.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a [`JobRunner`] is given before it starts: see [`JobRunner::builder`].
pub struct JobRunnerBuilder {
    client: kube::Client,
    namespace: String,
    program: PathBuf,
    selector: Option<String>,
    volumes: Vec<(String, PathBuf)>,
}

impl std::fmt::Debug for JobRunnerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunnerBuilder")
            .field("namespace", &self.namespace)
            .field("program", &self.program)
            .field("selector", &self.selector)
            .field("volumes", &self.volumes)
            .finish_non_exhaustive()
    }
}

impl JobRunnerBuilder {
    /// Runs only the Jobs matching the label selector `selector` (e.g. `app=scan`).
    pub fn selector(mut self, selector: &str) -> Self {
        self.selector = Some(selector.to_owned());
        self
    }

    /// Maps the PersistentVolumeClaim `claim` to `host_dir` (see the module docs for how
    /// paths are rewritten).
    pub fn with_volume(mut self, claim: &str, host_dir: impl Into<PathBuf>) -> Self {
        self.volumes.push((claim.to_owned(), host_dir.into()));
        self
    }

    /// Starts watching (in a task of the current tokio runtime).
    pub fn start(self) -> JobRunner {
        let (tx, rx) = watch::channel(State::default());
        let task = tokio::spawn(watch_jobs(Arc::new(self), tx));
        JobRunner { task, state: rx }
    }
}

/// Runs the Jobs of a namespace as local processes; stops (killing what runs) when dropped.
#[derive(Debug)]
pub struct JobRunner {
    task: tokio::task::JoinHandle<()>,
    state: watch::Receiver<State>,
}

/// One Job's process, once it has ended and the Job's status has been written.
#[derive(Debug, Clone)]
pub struct Run {
    /// The Job's name.
    pub job: String,
    /// The arguments it ran with, after path rewriting.
    pub args: Vec<String>,
    /// The environment it ran with (besides `PATH`), after path rewriting.
    pub env: Vec<(String, String)>,
    /// The exit code; `None` when it was killed or could not start.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Killed at `activeDeadlineSeconds`.
    pub deadline_exceeded: bool,
    /// Whether the Job's status says Complete (otherwise Failed); `Err` when writing it was
    /// refused.
    pub status_written: Result<bool, String>,
}

#[derive(Debug, Default)]
struct State {
    started: usize,
    finished: Vec<Run>,
    errors: Vec<String>,
}

impl JobRunner {
    /// A runner of the Jobs in `namespace`, running each with `program` (a local binary
    /// standing for the container's entrypoint).
    pub fn builder(
        client: kube::Client,
        namespace: &str,
        program: impl Into<PathBuf>,
    ) -> JobRunnerBuilder {
        JobRunnerBuilder {
            client,
            namespace: namespace.to_owned(),
            program: program.into(),
            selector: None,
            volumes: Vec::new(),
        }
    }

    /// The runs that have ended, in the order they ended.
    pub fn runs(&self) -> Vec<Run> {
        self.state.borrow().finished.clone()
    }

    /// How many Jobs it has started (ended or not).
    pub fn started(&self) -> usize {
        self.state.borrow().started
    }

    /// Waits (up to 60 s) until the Job `job` has run and its status is written; panics
    /// naming the runs seen and any watch or status errors.
    pub async fn wait_run(&self, job: &str) -> Run {
        let mut state = self.state.clone();
        let found = tokio::time::timeout(
            RUN_TIMEOUT,
            state.wait_for(|s| s.finished.iter().any(|r| r.job == job)),
        )
        .await;
        let s = self.state.borrow();
        match found {
            Ok(Ok(_)) => s.finished.iter().find(|r| r.job == job).cloned().unwrap(),
            _ => panic!(
                "Job {job} did not run within {RUN_TIMEOUT:?}; {} started, ended: {:?}, errors: {:?}",
                s.started,
                s.finished.iter().map(|r| &r.job).collect::<Vec<_>>(),
                s.errors
            ),
        }
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the Jobs and runs each unfinished, unsuspended one once. The processes' tasks
/// live in a `JoinSet` owned here, so aborting this task kills them.
async fn watch_jobs(cfg: Arc<JobRunnerBuilder>, state: watch::Sender<State>) {
    let api: Api<Job> = Api::namespaced(cfg.client.clone(), &cfg.namespace);
    let mut config = watcher::Config::default();
    if let Some(selector) = &cfg.selector {
        config = config.labels(selector);
    }
    let mut events = watcher::watcher(api.clone(), config)
        .default_backoff()
        .boxed();
    let mut seen = HashSet::new();
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(job) | Event::InitApply(job))) => {
                    let Some(uid) = job.metadata.uid.clone() else { continue };
                    if wants_run(&job) && seen.insert(uid) {
                        state.send_modify(|s| s.started += 1);
                        running.spawn(run_job(cfg.clone(), api.clone(), job, state.clone()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => state.send_modify(|s| s.errors.push(format!("watching Jobs: {e}"))),
                None => return,
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

/// Not suspended, and without a terminal condition.
fn wants_run(job: &Job) -> bool {
    let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
    !suspended && !finished
}

/// What to run for a Job: the pure part, from the Job and the registered volumes.
#[derive(Debug, PartialEq)]
struct Plan {
    args: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    deadline: Option<Duration>,
}

fn plan(job: &Job, volumes: &[(String, PathBuf)]) -> Result<Plan, String> {
    let spec = job.spec.as_ref().ok_or("the Job has no spec")?;
    let pod = spec
        .template
        .spec
        .as_ref()
        .ok_or("the Job has no pod spec")?;
    let container = pod
        .containers
        .first()
        .ok_or("the pod spec has no container")?;

    // (mountPath, host path) of every registered claim the container mounts.
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = pod.volumes.iter().flatten().find(|v| v.name == mount.name) else {
            continue;
        };
        let Some(pvc) = &volume.persistent_volume_claim else {
            continue;
        };
        let host = volumes
            .iter()
            .find(|(claim, _)| *claim == pvc.claim_name)
            .map(|(_, dir)| dir)
            .ok_or_else(|| {
                format!(
                    "volume {} mounts the claim {}, which the test did not register with with_volume",
                    volume.name, pvc.claim_name
                )
            })?;
        let host = match mount.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => host.join(sub),
            _ => host.clone(),
        };
        mounts.push((mount.mount_path.trim_end_matches('/').to_owned(), host));
    }
    let rewrite = |value: &str| -> String {
        for (mount_path, host) in &mounts {
            if let Some(rest) = value.strip_prefix(mount_path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", host.display());
            }
        }
        value.to_owned()
    };

    let command = container.command.iter().flatten().skip(1);
    let args = command
        .chain(container.args.iter().flatten())
        .map(|a| rewrite(a))
        .collect();
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        if var.value_from.is_some() {
            return Err(format!(
                "env {} uses valueFrom, which the JobRunner does not resolve",
                var.name
            ));
        }
        env.push((
            var.name.clone(),
            rewrite(var.value.as_deref().unwrap_or("")),
        ));
    }
    let deadline = spec
        .active_deadline_seconds
        .map(|s| Duration::from_secs(s.max(0).unsigned_abs()));
    Ok(Plan {
        args,
        env,
        working_dir: container.working_dir.as_deref().map(rewrite),
        deadline,
    })
}

/// How a run ended, as the Job's status will say.
struct Ending {
    complete: bool,
    reason: &'static str,
    message: String,
}

/// Runs one Job: marks it started, runs the process, writes the terminal status, and
/// records the run.
async fn run_job(cfg: Arc<JobRunnerBuilder>, api: Api<Job>, job: Job, state: watch::Sender<State>) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    // Kept if a runner before this one had set it: the API server refuses to change it.
    let start_time = job
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    let mut run = Run {
        job: name.clone(),
        args: Vec::new(),
        env: Vec::new(),
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        deadline_exceeded: false,
        status_written: Ok(false),
    };
    let running = json!({ "status": {
        "startTime": start_time,
        "active": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }});
    if let Err(e) = write_status(&api, &name, running).await {
        run.status_written = Err(format!("marking the Job started: {e}"));
        state.send_modify(|s| s.finished.push(run));
        return;
    }

    let ending = match plan(&job, &cfg.volumes) {
        Err(why) => {
            run.stderr = format!("testkit JobRunner: {why}\n");
            Ending {
                complete: false,
                reason: "BackoffLimitExceeded",
                message: format!("Job has reached the specified backoff limit: {why}"),
            }
        }
        Ok(plan) => {
            run.args = plan.args.clone();
            run.env = plan.env.clone();
            let remaining = plan.deadline.map(|d| d.saturating_sub(started.elapsed()));
            execute(&cfg.program, &plan, remaining, &mut run).await
        }
    };
    run.status_written = finish(&api, &name, &ending).await.map(|()| ending.complete);
    state.send_modify(|s| s.finished.push(run));
}

/// Runs the process of `plan`, killed after `deadline`, filling in `run`'s output.
async fn execute(program: &Path, plan: &Plan, deadline: Option<Duration>, run: &mut Run) -> Ending {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&plan.args)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &plan.working_dir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            run.stderr = format!("testkit JobRunner: starting {}: {e}\n", program.display());
            return Ending {
                complete: false,
                reason: "BackoffLimitExceeded",
                message: format!("Job has reached the specified backoff limit: {e}"),
            };
        }
    };
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let exit = match deadline {
        Some(d) => tokio::time::timeout(d, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    if exit.is_none() {
        let _ = child.kill().await;
        run.deadline_exceeded = true;
    }
    run.stdout = stdout.await.unwrap_or_default();
    run.stderr = stderr.await.unwrap_or_default();
    run.exit_code = exit.and_then(|e| e.ok()).and_then(|s| s.code());
    if run.deadline_exceeded {
        return Ending {
            complete: false,
            reason: "DeadlineExceeded",
            message: "Job was active longer than specified deadline".to_owned(),
        };
    }
    if run.exit_code == Some(0) {
        return Ending {
            complete: true,
            reason: "CompletionsReached",
            message: "Reached expected number of succeeded pods".to_owned(),
        };
    }
    let last_line = run
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Ending {
        complete: false,
        reason: "BackoffLimitExceeded",
        message: format!(
            "Job has reached the specified backoff limit: exit code {}: {last_line}",
            run.exit_code
                .map_or("none (killed)".to_owned(), |c| c.to_string())
        ),
    }
}

/// Reads `pipe` to its end, in a task.
fn collect<R>(pipe: Option<R>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Writes the end of a Job as the job controller does, in two steps: first the interim
/// condition (`SuccessCriteriaMet` or `FailureTarget`) with the pod counted, then the
/// terminal one (`Complete` with `completionTime`, or `Failed`) next to it.
async fn finish(api: &Api<Job>, name: &str, ending: &Ending) -> Result<(), String> {
    let now = Time(Timestamp::now());
    let condition = |type_: &str| {
        json!({
            "type": type_,
            "status": "True",
            "reason": ending.reason,
            "message": ending.message,
            "lastProbeTime": now,
            "lastTransitionTime": now,
        })
    };
    let (interim, terminal, counter) = if ending.complete {
        ("SuccessCriteriaMet", "Complete", "succeeded")
    } else {
        ("FailureTarget", "Failed", "failed")
    };
    let mut status = json!({
        "active": 0,
        "ready": 0,
        "terminating": 0,
        counter: 1,
        "conditions": [condition(interim)],
    });
    write_status(api, name, json!({ "status": status.clone() }))
        .await
        .map_err(|e| format!("writing {interim}: {e}"))?;
    status["conditions"] = json!([condition(interim), condition(terminal)]);
    if ending.complete {
        status["completionTime"] = json!(now);
    }
    write_status(api, name, json!({ "status": status }))
        .await
        .map_err(|e| format!("writing {terminal}: {e}"))
}

/// A JSON merge patch of the Job's status subresource.
async fn write_status(
    api: &Api<Job>,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests;
