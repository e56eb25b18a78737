//! The operator's own Git sync: follow a repository of manifests and apply what it holds to
//! the namespace — server-side apply with field manager `mirrorfleet-git`, each object
//! labelled as coming from Git — and delete the labelled objects a commit no longer has.
//! A commit with problems is reported (commit, file, line, problem) and nothing of it is
//! applied: the last good state stays in force. Flux or Argo CD can do the same job; this is
//! for clusters without them.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use mirrorfleet_crds::v1alpha1::{Mirror, Project, RegionRule, Sponsor};
use mirrorfleet_manifests::{self as manifests, GitSource};
use mirrorfleet_validate::{Fleet, Options};
use serde::Serialize;

use mirrorfleet_runtime::error_chain;

use crate::{Error, Namespaced};

/// Field manager of what the sync applies.
pub const GIT_MANAGER: &str = "mirrorfleet-git";
/// Label on every object the sync applied (pruning only ever touches these).
pub const FROM_GIT: &str = "mirrorfleet.io/from-git";

/// What a commit asks for: objects to apply (kind, name, body) and labelled objects to
/// delete — pure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// (kind, name, object) to apply.
    pub apply: Vec<(String, String, serde_json::Value)>,
    /// (kind, name) to delete.
    pub delete: Vec<(String, String)>,
}

/// Plans the sync of `fleet` (a valid commit) over `existing` (kind, name) objects that carry
/// the [`FROM_GIT`] label.
pub fn plan(fleet: &Fleet, existing: &BTreeSet<(String, String)>) -> Plan {
    let mut out = Plan::default();
    let mut wanted = BTreeSet::new();
    let mut add = |kind: &str, name: &str, value: serde_json::Value| {
        wanted.insert((kind.to_owned(), name.to_owned()));
        out.apply.push((kind.to_owned(), name.to_owned(), value));
    };
    for p in &fleet.projects {
        add("Project", p.name(), body(&p.resource));
    }
    for s in &fleet.sponsors {
        add("Sponsor", s.name(), body(&s.resource));
    }
    for m in &fleet.mirrors {
        add("Mirror", m.name(), body(&m.resource));
    }
    for r in &fleet.rules {
        add("RegionRule", r.name(), body(&r.resource));
    }
    out.delete = existing.difference(&wanted).cloned().collect();
    out
}

/// The object as applied: name, labels (with [`FROM_GIT`]), annotations and spec — never a
/// namespace (the sync's own) or a status.
fn body<K: Resource<DynamicType = ()> + Serialize>(k: &K) -> serde_json::Value {
    let mut v = serde_json::to_value(k).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("namespace");
            let labels = meta
                .entry("labels")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(FROM_GIT.into(), "true".into());
            }
        }
    }
    v
}

/// Follows `source` until the task is dropped, applying each new valid commit to `namespace`.
pub async fn follow(client: Client, namespace: String, source: GitSource, every: Duration) {
    let mut applied: Option<String> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = source.clone();
        let synced = match tokio::task::spawn_blocking(move || s.sync()).await {
            Ok(Ok(synced)) => synced,
            Ok(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "cannot sync the manifests repository");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "the Git task failed");
                continue;
            }
        };
        if applied.as_deref() == Some(synced.commit.as_str()) {
            continue;
        }
        let outcome = match manifests::read(std::slice::from_ref(&synced.dir)) {
            Ok(m) => m.validate(Options { skip_foreign: true }),
            Err(e) => {
                tracing::warn!(commit = %synced.commit, error = %error_chain(&e), "cannot read the manifests");
                continue;
            }
        };
        if !outcome.problems.is_empty() {
            for p in &outcome.problems {
                tracing::warn!(commit = %synced.commit, problem = %p, "commit not applied");
            }
            tracing::warn!(commit = %synced.commit, problems = outcome.problems.len(), "commit has problems; the last good state stays");
            applied = Some(synced.commit);
            continue;
        }
        match apply(&client, &namespace, &outcome.fleet).await {
            Ok(p) => {
                tracing::info!(commit = %synced.commit, applied = p.apply.len(), deleted = p.delete.len(), "commit applied");
                applied = Some(synced.commit);
            }
            Err(e) => {
                tracing::warn!(commit = %synced.commit, error = %error_chain(&e), "cannot apply the commit; retrying")
            }
        }
    }
}

/// Applies a valid fleet to `namespace` and prunes what left; returns the plan carried out.
pub async fn apply(client: &Client, namespace: &str, fleet: &Fleet) -> Result<Plan, Error> {
    let mut existing = BTreeSet::new();
    let lp = ListParams::default().labels(&format!("{FROM_GIT}=true"));
    labelled::<Project>(client, namespace, &lp, &mut existing).await?;
    labelled::<Sponsor>(client, namespace, &lp, &mut existing).await?;
    labelled::<Mirror>(client, namespace, &lp, &mut existing).await?;
    labelled::<RegionRule>(client, namespace, &lp, &mut existing).await?;
    let p = plan(fleet, &existing);
    let pp = PatchParams::apply(GIT_MANAGER).force();
    for (kind, name, body) in &p.apply {
        match kind.as_str() {
            "Project" => patch::<Project>(client, namespace, name, &pp, body).await?,
            "Sponsor" => patch::<Sponsor>(client, namespace, name, &pp, body).await?,
            "Mirror" => patch::<Mirror>(client, namespace, name, &pp, body).await?,
            _ => patch::<RegionRule>(client, namespace, name, &pp, body).await?,
        }
    }
    for (kind, name) in &p.delete {
        let dp = DeleteParams::default();
        match kind.as_str() {
            "Project" => delete::<Project>(client, namespace, name, &dp).await?,
            "Sponsor" => delete::<Sponsor>(client, namespace, name, &dp).await?,
            "Mirror" => delete::<Mirror>(client, namespace, name, &dp).await?,
            _ => delete::<RegionRule>(client, namespace, name, &dp).await?,
        }
    }
    Ok(p)
}

async fn labelled<K>(
    client: &Client,
    namespace: &str,
    lp: &ListParams,
    into: &mut BTreeSet<(String, String)>,
) -> Result<(), Error>
where
    K: Namespaced,
{
    let list = Api::<K>::namespaced(client.clone(), namespace)
        .list(lp)
        .await
        .map_err(|e| Error::kube(format!("list the {}s applied from Git", K::kind(&())), e))?;
    for o in list.items {
        into.insert((K::kind(&()).into_owned(), o.name_any()));
    }
    Ok(())
}

async fn patch<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    pp: &PatchParams,
    body: &serde_json::Value,
) -> Result<(), Error>
where
    K: Namespaced,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(name, pp, &Patch::Apply(body))
        .await
        .map_err(|e| Error::kube(format!("apply {} {name}", K::kind(&())), e))?;
    Ok(())
}

async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    dp: &DeleteParams,
) -> Result<(), Error>
where
    K: Namespaced,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, dp)
        .await
        .map(|_| ())
        .map_err(|e| Error::kube(format!("delete {} {name}", K::kind(&())), e))
}
