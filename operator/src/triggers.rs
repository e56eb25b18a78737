//! Which objects to reconcile again, and nothing more: no object is requeued blindly. An
//! object's own edits reach it through its controller's watch; what else its status shows
//! changes in two places, each diffed here — pure:
//! - the fleet's assessment ([`assessment_changes`]): an edit of one object can make another
//!   one invalid or valid (a mirror naming a sponsor just deleted) or change what another
//!   one counts (a sponsor's mirrors);
//! - the store ([`state_changes`]): a mirror's health, a scan's result, a project's index.
//!
//! [`Triggers`] carries the keys found to the controllers (their `reconcile_on` streams).

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use mirrorfleet_crds::state::FleetState;
use mirrorfleet_crds::v1alpha1::{Mirror, Project, RegionRule, Sponsor};
use mirrorfleet_store::LoadedState;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::assess::{Assessment, ObjectKey};

fn key(kind: &str, name: &str) -> ObjectKey {
    (kind.to_owned(), name.to_owned())
}

/// The objects whose status may differ between two assessments: whose problems changed,
/// mirrors whose compiled entry changed (e.g. a location GeoIP resolved), sponsors whose
/// count of mirrors changed.
pub fn assessment_changes(old: &Assessment, new: &Assessment) -> BTreeSet<ObjectKey> {
    let mut keys = BTreeSet::new();
    for k in old.problems.keys().chain(new.problems.keys()) {
        if old.problems.get(k) != new.problems.get(k) {
            keys.insert(k.clone());
        }
    }
    for m in &new.fleet.mirrors {
        if old.fleet.mirror(&m.name).is_some_and(|o| o != m) {
            keys.insert(key("Mirror", &m.name));
        }
    }
    let sponsors = old.fleet.sponsors.iter().chain(&new.fleet.sponsors);
    for s in sponsors {
        let count = |f: &FleetState| f.mirrors.iter().filter(|m| m.sponsor == s.name).count();
        if count(&old.fleet) != count(&new.fleet) {
            keys.insert(key("Sponsor", &s.name));
        }
    }
    keys
}

/// The objects whose status may differ between two states of the store: the mirror of every
/// health or scan result that changed; the project of every index that changed, and the
/// mirrors carrying it in `fleet` (whether they are in sync follows the source's serial).
pub fn state_changes(
    old: &LoadedState,
    new: &LoadedState,
    fleet: &FleetState,
) -> BTreeSet<ObjectKey> {
    let mut keys = BTreeSet::new();
    for (mirror, h) in &new.health {
        if old.health.get(mirror).is_none_or(|o| !Arc::ptr_eq(o, h)) {
            keys.insert(key("Mirror", mirror));
        }
    }
    for mirror in old.health.keys() {
        if !new.health.contains_key(mirror) {
            keys.insert(key("Mirror", mirror));
        }
    }
    for ((mirror, project), a) in &new.availability {
        let before = old.availability.get(&(mirror.clone(), project.clone()));
        if before.is_none_or(|o| !Arc::ptr_eq(o, a)) {
            keys.insert(key("Mirror", mirror));
        }
    }
    for (mirror, project) in old.availability.keys() {
        if !new
            .availability
            .contains_key(&(mirror.clone(), project.clone()))
        {
            keys.insert(key("Mirror", mirror));
        }
    }
    let mut projects = BTreeSet::new();
    for (p, m) in &new.index_meta {
        if old.index_meta.get(p).is_none_or(|o| !Arc::ptr_eq(o, m)) {
            projects.insert(p.clone());
        }
    }
    for p in old.index_meta.keys() {
        if !new.index_meta.contains_key(p) {
            projects.insert(p.clone());
        }
    }
    for p in &projects {
        keys.insert(key("Project", p));
        for m in &fleet.mirrors {
            if m.projects.iter().any(|c| &c.project == p) {
                keys.insert(key("Mirror", &m.name));
            }
        }
    }
    keys
}

/// Sends keys to the controllers of their kinds.
#[derive(Debug, Clone)]
pub struct Triggers {
    namespace: String,
    projects: UnboundedSender<ObjectRef<Project>>,
    mirrors: UnboundedSender<ObjectRef<Mirror>>,
    sponsors: UnboundedSender<ObjectRef<Sponsor>>,
    rules: UnboundedSender<ObjectRef<RegionRule>>,
}

/// The receiving ends of [`Triggers`], one per controller.
#[derive(Debug)]
pub struct TriggerStreams {
    /// Projects to reconcile.
    pub projects: UnboundedReceiver<ObjectRef<Project>>,
    /// Mirrors to reconcile.
    pub mirrors: UnboundedReceiver<ObjectRef<Mirror>>,
    /// Sponsors to reconcile.
    pub sponsors: UnboundedReceiver<ObjectRef<Sponsor>>,
    /// Region rules to reconcile.
    pub rules: UnboundedReceiver<ObjectRef<RegionRule>>,
}

impl Triggers {
    /// Triggers for the objects of `namespace`, and their streams.
    pub fn new(namespace: &str) -> (Triggers, TriggerStreams) {
        let (projects, p) = unbounded_channel();
        let (mirrors, m) = unbounded_channel();
        let (sponsors, s) = unbounded_channel();
        let (rules, r) = unbounded_channel();
        let triggers = Triggers {
            namespace: namespace.to_owned(),
            projects,
            mirrors,
            sponsors,
            rules,
        };
        let streams = TriggerStreams {
            projects: p,
            mirrors: m,
            sponsors: s,
            rules: r,
        };
        (triggers, streams)
    }

    /// Asks for a reconcile of each object (unknown kinds are ignored; a controller that
    /// stopped no longer listens, which is not an error here).
    pub fn send(&self, keys: impl IntoIterator<Item = ObjectKey>) {
        let ns = self.namespace.as_str();
        for (kind, name) in keys {
            tracing::debug!(%kind, %name, "reconcile triggered");
            let _ = match kind.as_str() {
                "Project" => self.projects.send(ObjectRef::new(&name).within(ns)).is_ok(),
                "Mirror" => self.mirrors.send(ObjectRef::new(&name).within(ns)).is_ok(),
                "Sponsor" => self.sponsors.send(ObjectRef::new(&name).within(ns)).is_ok(),
                "RegionRule" => self.rules.send(ObjectRef::new(&name).within(ns)).is_ok(),
                _ => false,
            };
        }
    }
}

/// A receiver as a stream (for `Controller::reconcile_on`).
pub fn stream<T: Send + 'static>(
    rx: UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

#[cfg(test)]
mod tests;
