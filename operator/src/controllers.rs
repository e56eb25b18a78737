//! The four controllers of a namespace (Project, Mirror, Sponsor, RegionRule) and the watch
//! of its scan Jobs: their caches, what reconciles an object besides its own changes (the
//! triggers, the owner of a Job that changed), and a new assessment after deletions. Wiring
//! only: what a reconcile does is [`crate::reconcile`].

use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store as Cache;
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use mirrorfleet_crds::v1alpha1::{Mirror, Project, RegionRule, Sponsor};
use mirrorfleet_runtime::error_chain;
use mirrorfleet_store::Store;
use tokio::sync::mpsc;

use crate::assess::ObjectKey;
use crate::schedule::SCAN_JOBS;
use crate::triggers::{self, TriggerStreams, Triggers};
use crate::{Caches, Context, Error, KubeError, error_policy, reconcile};

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
