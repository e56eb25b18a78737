//! The Kubernetes operator: controllers for Project, Mirror, Sponsor and RegionRule.
//!
//! Every reconcile ([`reconcile`], one for the four kinds; what differs by kind is
//! [`Reconciled`]) does two things, both idempotent:
//! 1. it brings the fleet up to date ([`Context::sync_fleet`]): when any object's spec,
//!    labels or annotations changed since the last assessment, the whole namespace is
//!    assessed once ([`assess`]) — resources refer to each other, so the fleet is one unit —
//!    and, when the compiled fleet differs from what the store holds, written (forgetting the
//!    health and scans of mirrors that left); the objects whose status the change concerns
//!    are reconciled next ([`triggers`]). Unchanged objects reuse the last assessment;
//! 2. it computes the reconciled object's status ([`status`]) and, when it differs from the
//!    object's, applies it (server-side apply on the status subresource, field manager
//!    `mirrorfleet`), publishing an Event when `Ready` or `Healthy` changes.
//!
//! Nothing is requeued blindly: an object is reconciled when it changes, when the assessment
//! or the store changes what its status shows ([`triggers`]), or at a time its status
//! depends on (a maintenance window's edge). A quiet fleet makes no request.
//!
//! No finalizer: deleting a resource needs no external cleanup that a later reconcile cannot
//! do — the assessment made at the deletion (the watches report deletions and relists,
//! [`run::Controllers`]) no longer contains it, and the state is rewritten without it (even
//! when the deletion happened while no operator was running).
//!
//! Only the leader ([`lease`]) runs controllers, health checks and scan scheduling.

pub mod assess;
pub mod client;
mod controllers;
mod error;
pub mod gitsync;
pub mod jobs;
pub mod lease;
pub mod metrics;
mod reconcile;
pub mod run;
pub mod schedule;
pub mod status;
pub mod triggers;
pub mod upstream;

pub use self::error::{Error, KubeError};
pub use self::reconcile::{Reconciled, error_policy, reconcile};

use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store as Cache;
use kube::{Client, Resource, ResourceExt};
use mirrorfleet_crds::state::FleetState;
use mirrorfleet_crds::v1alpha1::{
    self, Condition, ConditionStatus, Mirror, Project, RegionRule, Sponsor,
};
use mirrorfleet_store::{LoadedState, StateReader, StateWriter, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use self::assess::{Assessment, Objects};
use self::metrics::Metrics;
use self::triggers::Triggers;

/// The field manager of every status the operator applies.
pub const MANAGER: &str = "mirrorfleet";

/// How long one look at the caches' readiness waits before looking again.
const READY_LOOK: Duration = Duration::from_millis(50);

/// The caches of the four kinds, filled by the controllers' watches.
#[derive(Clone)]
pub struct Caches {
    /// Projects.
    pub projects: Cache<Project>,
    /// Mirrors.
    pub mirrors: Cache<Mirror>,
    /// Sponsors.
    pub sponsors: Cache<Sponsor>,
    /// Region rules.
    pub rules: Cache<RegionRule>,
    /// Scan Jobs (when watched), for failures to reach the Mirror's status.
    pub jobs: Option<Cache<k8s_openapi::api::batch::v1::Job>>,
}

impl Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("projects", &self.projects.len())
            .field("mirrors", &self.mirrors.len())
            .field("sponsors", &self.sponsors.len())
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Caches {
    /// Waits (at most 30 s) until the four caches are filled.
    ///
    /// kube's `Store::wait_until_ready` wakes only the last of several concurrent waiters (a
    /// oneshot receiver keeps one waker), and the controllers' runners wait on the same
    /// stores: a reconcile waiting there could sleep until its timeout — the ~30 s before
    /// any status after a start. So each wait is short and taken again: a missed wake-up
    /// costs at most [`READY_LOOK`].
    async fn ready(&self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let all = async {
                self.projects.wait_until_ready().await.ok()?;
                self.mirrors.wait_until_ready().await.ok()?;
                self.sponsors.wait_until_ready().await.ok()?;
                self.rules.wait_until_ready().await.ok()
            };
            match tokio::time::timeout(READY_LOOK, all).await {
                Ok(Some(())) => return Ok(()),
                // A writer dropped: the controllers stopped.
                Ok(None) => return Err(Error::NotReady),
                Err(_) if tokio::time::Instant::now() >= deadline => return Err(Error::NotReady),
                Err(_) => {}
            }
        }
    }

    /// The scan Jobs cached (none when the Jobs are not watched).
    pub fn scan_jobs(&self) -> Vec<Arc<k8s_openapi::api::batch::v1::Job>> {
        self.jobs.as_ref().map(|c| c.state()).unwrap_or_default()
    }

    fn objects(&self) -> Objects {
        Objects {
            projects: self.projects.state(),
            mirrors: self.mirrors.state(),
            sponsors: self.sponsors.state(),
            rules: self.rules.state(),
        }
    }
}

/// What the assessment of `objects` depends on, as one number: each object's kind, name, uid,
/// generation (which the API server bumps on every change of the spec), labels and
/// annotations — not its status or resourceVersion, which the operator's own writes change.
/// Independent of the caches' order.
pub fn fingerprint(objects: &Objects) -> u64 {
    fn add<K: Resource<DynamicType = ()> + Serialize>(list: &[Arc<K>], sum: &mut u64) {
        for o in list {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            K::kind(&()).hash(&mut h);
            let meta = o.meta();
            meta.name.hash(&mut h);
            meta.uid.hash(&mut h);
            match meta.generation {
                Some(g) => g.hash(&mut h),
                // Without a generation (not from an API server), the spec itself counts.
                None => serde_json::to_value(&**o)
                    .ok()
                    .and_then(|v| v.get("spec").map(ToString::to_string))
                    .hash(&mut h),
            }
            meta.labels.hash(&mut h);
            for (k, v) in meta.annotations.iter().flatten() {
                if k != "kubectl.kubernetes.io/last-applied-configuration"
                    && k != jobs::SCAN_REQUESTED
                {
                    (k, v).hash(&mut h);
                }
            }
            *sum = sum.wrapping_add(h.finish());
        }
    }
    let mut sum = 0u64;
    add(&objects.projects, &mut sum);
    add(&objects.mirrors, &mut sum);
    add(&objects.sponsors, &mut sum);
    add(&objects.rules, &mut sum);
    let count = objects.projects.len()
        + objects.mirrors.len()
        + objects.sponsors.len()
        + objects.rules.len();
    sum ^ (count as u64).rotate_left(32)
}

/// What the operator needs of a namespaced kind to read, apply and delete it.
pub trait Namespaced:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
{
}

impl<K> Namespaced for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
{
}

/// A status with conditions (the four kinds' statuses).
pub trait HasConditions: Serialize {
    /// The conditions.
    fn conditions(&self) -> &[Condition];
}

macro_rules! has_conditions {
    ($($t:ty),*) => {$(
        impl HasConditions for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
        }
    )*};
}
has_conditions!(
    v1alpha1::MirrorStatus,
    v1alpha1::ProjectStatus,
    v1alpha1::SponsorStatus,
    v1alpha1::RegionRuleStatus
);

/// What every reconcile shares.
pub struct Context<S: Store> {
    /// The API client.
    pub client: Client,
    /// The namespace watched.
    pub namespace: String,
    /// The caches.
    pub caches: Caches,
    /// Writes the state.
    pub writer: StateWriter<S>,
    reader: StateReader<S>,
    state: Mutex<LoadedState>,
    recorder: Recorder,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    now: fn() -> i64,
    /// The latest assessment (probe targets and scan scheduling read it).
    pub latest: tokio::sync::watch::Sender<Arc<FleetState>>,
    /// Fills mirror locations from GeoIP where specs leave them out.
    locator: Option<Arc<mirrorfleet_geo::Locator>>,
    /// The last assessment and the fingerprint of the objects it was made from.
    assessed: Mutex<Option<(u64, Arc<Assessment>)>>,
    /// Where the objects a new assessment concerns are sent.
    triggers: Option<Triggers>,
    /// Seconds between two scans of a mirror's project when neither spec says.
    pub mirror_interval: i64,
    /// Wakes the scan scheduler before its next tick: something it decides from changed.
    pub wake_scheduler: Arc<tokio::sync::Notify>,
    /// Announces each new index serial the store follower sees (the leader's only).
    pub push: Option<mirrorfleet_push::Pusher>,
}

impl<S: Store> Debug for Context<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("caches", &self.caches)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Context<S> {
    /// A context; `now` gives Unix seconds.
    pub fn new(
        client: Client,
        namespace: &str,
        caches: Caches,
        store: S,
        metrics: Arc<Metrics>,
        now: fn() -> i64,
    ) -> Context<S>
    where
        S: Clone,
    {
        Context {
            recorder: Recorder::new(client.clone(), MANAGER.into()),
            client,
            namespace: namespace.to_owned(),
            caches,
            writer: StateWriter::new(store.clone()),
            reader: StateReader::new(store),
            state: Mutex::new(LoadedState::default()),
            metrics,
            now,
            latest: tokio::sync::watch::Sender::new(Arc::new(FleetState::default())),
            locator: None,
            assessed: Mutex::new(None),
            triggers: None,
            mirror_interval: 3600,
            wake_scheduler: Arc::new(tokio::sync::Notify::new()),
            push: None,
        }
    }

    /// Sends the objects each new assessment concerns to `triggers`.
    pub fn with_triggers(mut self, triggers: Triggers) -> Self {
        self.triggers = Some(triggers);
        self
    }

    /// Locates mirrors without a declared location through GeoIP.
    pub fn with_locator(mut self, locator: Arc<mirrorfleet_geo::Locator>) -> Self {
        self.locator = Some(locator);
        self
    }

    /// The store's state, brought up to date.
    pub async fn state(&self) -> Result<LoadedState, Error> {
        let mut state = self.state.lock().await;
        self.reader
            .resync(&mut state)
            .await
            .map_err(|e| Error::store("read the state from the store", e))?;
        Ok(state.clone())
    }

    /// The fleet's assessment: the last one while no object changed, else a new one,
    /// written to the store when the store holds another fleet. One assessment at a time:
    /// reconciles arriving meanwhile wait for it and reuse it, and an older one can never
    /// overwrite a newer one in the store.
    pub async fn sync_fleet(&self) -> Result<Arc<Assessment>, Error> {
        self.caches.ready().await?;
        let mut assessed = self.assessed.lock().await;
        let objects = self.caches.objects();
        let print = fingerprint(&objects);
        if let Some((p, a)) = &*assessed
            && *p == print
        {
            return Ok(a.clone());
        }
        let mut a = assess::assess(&objects);
        self.metrics.assessments.inc();
        if let Some(l) = &self.locator {
            l.fill(&mut a.fleet).await;
        }
        let state = self.state().await?;
        let stored = state.fleet.as_deref();
        if stored != Some(&a.fleet) {
            self.wake_scheduler.notify_one();
            self.writer
                .write_fleet(&a.fleet)
                .await
                .map_err(|e| Error::store("write the fleet state", e))?;
            self.metrics.fleet_writes.inc();
            tracing::info!(
                projects = a.fleet.projects.len(),
                mirrors = a.fleet.mirrors.len(),
                invalid = a.problems.len(),
                "fleet state written"
            );
            // Mirrors that left: their health and scans go too.
            for old in stored.map_or(&[][..], |f| f.mirrors.as_slice()) {
                if a.fleet.mirror(&old.name).is_none() {
                    let projects: Vec<String> =
                        old.projects.iter().map(|p| p.project.clone()).collect();
                    self.writer
                        .remove_mirror(&old.name, &projects)
                        .await
                        .map_err(|e| {
                            let doing =
                                format!("forget the health and scans of mirror {}", old.name);
                            Error::store(doing, e)
                        })?;
                }
            }
        }
        self.latest.send_if_modified(|f| {
            let changed = **f != a.fleet;
            if changed {
                *f = Arc::new(a.fleet.clone());
            }
            changed
        });
        let a = Arc::new(a);
        if let (Some(t), Some((_, old))) = (&self.triggers, &*assessed) {
            t.send(triggers::assessment_changes(old, &a));
        }
        *assessed = Some((print, a.clone()));
        Ok(a)
    }

    /// Applies `status` to `obj` unless it already has it; publishes an Event when `Ready`
    /// or `Healthy` changes to `True` or `False` (Warning for `False`).
    async fn apply_status<K: Namespaced, T: HasConditions>(
        &self,
        obj: &K,
        old: Option<&T>,
        new: &T,
    ) -> Result<(), Error> {
        let old_conditions = old.map_or(&[][..], |o| o.conditions());
        let same =
            old.is_some_and(|o| serde_json::to_value(o).ok() == serde_json::to_value(new).ok());
        if same {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let body = serde_json::json!({
            "apiVersion": v1alpha1::API_VERSION,
            "kind": K::kind(&()),
            "status": new,
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| {
            let doing = format!("apply the status of {} {}", K::kind(&()), obj.name_any());
            Error::kube(doing, e)
        })?;
        self.metrics.status_writes.inc();
        for c in new.conditions() {
            let before = old_conditions.iter().find(|o| o.type_ == c.type_);
            if !matches!(c.type_.as_str(), "Ready" | "Healthy")
                || c.status == ConditionStatus::Unknown
                || before.is_some_and(|b| b.status == c.status)
            {
                continue;
            }
            let ev = Event {
                type_: if c.status == ConditionStatus::False {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: format!("{}{:?}", c.type_, c.status),
                note: Some(truncate(&format!("{}: {}", c.reason, c.message), 1000)),
                action: "Reconcile".into(),
                secondary: None,
            };
            // An Event that cannot be published is not worth failing the reconcile.
            if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
                tracing::warn!(error = %mirrorfleet_runtime::error_chain(&KubeError(e)), "cannot publish an Event");
            }
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
