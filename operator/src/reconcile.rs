//! One reconcile for the four kinds: assess the fleet and store it when it changed, compute
//! the object's status, apply it when it differs ([`Context::apply_status`]). What differs
//! by kind — its status type, what of the store and caches that status reads, the status
//! function of [`crate::status`] — is the [`Reconciled`] trait.
//!
//! It must not write anything but the fleet state, statuses and Events, nor hold state of
//! its own between reconciles (each one starts from the caches and the store).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use mirrorfleet_crds::v1alpha1::{
    Mirror, MirrorStatus, Project, ProjectStatus, RegionRule, RegionRuleStatus, Sponsor,
    SponsorStatus,
};
use mirrorfleet_store::Store;

use crate::assess::Assessment;
use crate::{Context, Error, HasConditions, Namespaced, jobs, status};

/// A kind the operator reconciles: what its reconcile reads and computes.
pub trait Reconciled: Namespaced + Send + Sync + 'static {
    /// Its status.
    type Status: HasConditions + Send + Sync;

    /// The kind, as the label of the reconciles metric.
    const KIND: &'static str;

    /// The status the object has.
    fn status(&self) -> Option<&Self::Status>;

    /// The status it should have, given the fleet's assessment; reads what else it needs
    /// from the store and the caches of `ctx`.
    fn desired<S: Store>(
        &self,
        a: &Assessment,
        ctx: &Context<S>,
    ) -> impl Future<Output = Result<Self::Status, Error>> + Send;

    /// When the status computed at `now` will change although nothing else does (e.g. at a
    /// maintenance window's edge); `None`: only a change will change it.
    fn changes_at(&self, _a: &Assessment, _now: i64) -> Option<i64> {
        None
    }
}

/// Reconciles an object of any of the four kinds: the fleet first (it is one unit), then the
/// object's status. Idempotent: an unchanged world makes no write.
pub async fn reconcile<K: Reconciled, S: Store>(
    obj: Arc<K>,
    ctx: Arc<Context<S>>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc(K::KIND);
    tracing::debug!(kind = K::KIND, name = %obj.name_any(), generation = ?obj.meta().generation, "reconcile");
    let a = ctx.sync_fleet().await?;
    let new = obj.desired(&a, &ctx).await?;
    ctx.apply_status(&*obj, obj.status(), &new).await?;
    tracing::debug!(kind = K::KIND, name = %obj.name_any(), "reconciled");
    let now = (ctx.now)();
    Ok(match obj.changes_at(&a, now) {
        Some(at) => Action::requeue(Duration::from_secs((at - now).clamp(1, 86_400) as u64)),
        None => Action::await_change(),
    })
}

/// Requeue after an error, counting it by kind and fixed label; logs the error's chain.
pub fn error_policy<K: Resource<DynamicType = ()>, S: Store>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context<S>>,
) -> Action {
    ctx.metrics.errors.inc(error.label());
    tracing::warn!(
        kind = %K::kind(&()),
        name = %obj.name_any(),
        error = %mirrorfleet_runtime::error_chain(error),
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

impl Reconciled for Mirror {
    type Status = MirrorStatus;
    const KIND: &'static str = "Mirror";

    fn status(&self) -> Option<&MirrorStatus> {
        self.status.as_ref()
    }

    /// Ready, Healthy from the stored health, Scanned and Synced from the stored scans and
    /// the scan Jobs in the cache.
    async fn desired<S: Store>(
        &self,
        a: &Assessment,
        ctx: &Context<S>,
    ) -> Result<MirrorStatus, Error> {
        let state = ctx.state().await?;
        let name = self.name_any();
        let cached = ctx.caches.scan_jobs();
        let mut scans = BTreeMap::new();
        for p in &self.spec.projects {
            let project = ctx
                .caches
                .projects
                .get(&ObjectRef::new(&p.project).within(&ctx.namespace));
            let interval = jobs::mirror_interval(self, project.as_deref(), ctx.mirror_interval);
            let history = jobs::history(&cached, &p.project, Some(&name));
            let retry_at = history.retry_at(interval);
            scans.insert(p.project.clone(), status::ScanJobs { history, retry_at });
        }
        let from_spec = self
            .spec
            .location
            .as_ref()
            .is_some_and(|l| l.country.is_some());
        Ok(status::mirror(
            a,
            &name,
            self.metadata.generation,
            self.status.as_ref(),
            &state,
            &scans,
            from_spec,
            (ctx.now)(),
        ))
    }

    /// At the next edge of a maintenance window.
    fn changes_at(&self, a: &Assessment, now: i64) -> Option<i64> {
        status::next_window_edge(a, &self.name_any(), now)
    }
}

impl Reconciled for Project {
    type Status = ProjectStatus;
    const KIND: &'static str = "Project";

    fn status(&self) -> Option<&ProjectStatus> {
        self.status.as_ref()
    }

    /// Ready, and Scanned from the stored index and the source's scan Jobs.
    async fn desired<S: Store>(
        &self,
        a: &Assessment,
        ctx: &Context<S>,
    ) -> Result<ProjectStatus, Error> {
        let state = ctx.state().await?;
        let name = self.name_any();
        let index = state
            .indexes
            .get(&name)
            .map(|i| (i.as_ref(), state.index_meta.get(&name).map(|m| m.as_ref())));
        let cached = ctx.caches.scan_jobs();
        let history = jobs::history(&cached, &name, None);
        let retry_at = history.retry_at(jobs::source_interval(self));
        let scans = status::ScanJobs { history, retry_at };
        let impossible = jobs::source_job(self, &jobs::JobSettings::default(), 0).err();
        let jobs = match &impossible {
            Some(why) => status::SourceJobs::Impossible(why),
            None => status::SourceJobs::Jobs(&scans),
        };
        Ok(status::project(
            a,
            &name,
            self.metadata.generation,
            self.status.as_ref(),
            index,
            jobs,
            (ctx.now)(),
        ))
    }
}

impl Reconciled for Sponsor {
    type Status = SponsorStatus;
    const KIND: &'static str = "Sponsor";

    fn status(&self) -> Option<&SponsorStatus> {
        self.status.as_ref()
    }

    /// From the assessment alone.
    async fn desired<S: Store>(
        &self,
        a: &Assessment,
        ctx: &Context<S>,
    ) -> Result<SponsorStatus, Error> {
        Ok(status::sponsor(
            a,
            &self.name_any(),
            self.metadata.generation,
            self.status.as_ref(),
            (ctx.now)(),
        ))
    }
}

impl Reconciled for RegionRule {
    type Status = RegionRuleStatus;
    const KIND: &'static str = "RegionRule";

    fn status(&self) -> Option<&RegionRuleStatus> {
        self.status.as_ref()
    }

    /// From the assessment alone.
    async fn desired<S: Store>(
        &self,
        a: &Assessment,
        ctx: &Context<S>,
    ) -> Result<RegionRuleStatus, Error> {
        Ok(status::rule(
            a,
            &self.name_any(),
            self.metadata.generation,
            self.status.as_ref(),
            (ctx.now)(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<K: Reconciled>() -> (String, &'static str) {
        (K::kind(&()).into_owned(), K::KIND)
    }

    #[test]
    fn the_metric_label_is_the_kind() {
        for (kind, label) in [
            kind::<Project>(),
            kind::<Mirror>(),
            kind::<Sponsor>(),
            kind::<RegionRule>(),
        ] {
            assert_eq!(kind, label);
        }
    }
}
