//! From the resources in the cluster to the fleet state and each resource's problems — pure.
//!
//! The whole fleet is assessed at once, because resources refer to each other (mirrors to
//! sponsors and projects, rules to mirrors and sponsors): each object is written out as a
//! JSON document (valid YAML, every string quoted) named `Kind/name` and run through the
//! same validation as `mirrorfleet validate`, so an invalid resource's `Ready=False`
//! message is word for word what the CLI prints. Resources with problems are left out of
//! the compiled fleet — the rest applies, never a half-applied resource.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::Resource;
use kube::api::ObjectMeta;
use mirrorfleet_crds::state::FleetState;
use mirrorfleet_crds::v1alpha1::{Mirror, Project, RegionRule, Sponsor};
use mirrorfleet_validate::{self as validate, Fleet, Located, Options, SourceFile, compile};
use serde::Serialize;

/// (kind, name).
pub type ObjectKey = (String, String);

/// The fleet as it should be, and what is wrong with which resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// The compiled fleet of the valid resources.
    pub fleet: FleetState,
    /// Problems by (kind, name), each as `field.path: message`.
    pub problems: BTreeMap<ObjectKey, Vec<String>>,
}

impl Assessment {
    /// The problems of one resource.
    pub fn problems_of(&self, kind: &str, name: &str) -> &[String] {
        self.problems
            .get(&(kind.to_owned(), name.to_owned()))
            .map_or(&[], Vec::as_slice)
    }
}

/// The resources of one namespace.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Projects.
    pub projects: Vec<Arc<Project>>,
    /// Mirrors.
    pub mirrors: Vec<Arc<Mirror>>,
    /// Sponsors.
    pub sponsors: Vec<Arc<Sponsor>>,
    /// Region rules.
    pub rules: Vec<Arc<RegionRule>>,
}

/// Assesses every resource together.
pub fn assess(objects: &Objects) -> Assessment {
    let mut files: Vec<(String, String)> = Vec::new();
    document(&objects.projects, &mut files);
    document(&objects.mirrors, &mut files);
    document(&objects.sponsors, &mut files);
    document(&objects.rules, &mut files);
    let sources: Vec<SourceFile<'_>> = files
        .iter()
        .map(|(name, text)| SourceFile { name, text })
        .collect();
    let outcome = validate::validate(&sources, Options::default());
    let mut problems: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
    for p in &outcome.problems {
        // A problem without kind/name is about the synthetic file: name it by the file.
        let key = match (&p.kind, &p.name) {
            (Some(k), Some(n)) => (k.clone(), n.clone()),
            _ => p
                .file
                .split_once('/')
                .map(|(k, n)| (k.to_owned(), n.to_owned()))
                .unwrap_or_default(),
        };
        let message = if p.path.is_empty() {
            p.message.clone()
        } else {
            format!("{}: {}", p.path, p.message)
        };
        let list = problems.entry(key).or_default();
        if !list.contains(&message) {
            list.push(message);
        }
    }
    let bad = |kind: &str, name: &str| problems.contains_key(&(kind.to_owned(), name.to_owned()));
    let fleet = Fleet {
        projects: keep(outcome.fleet.projects, "Project", &bad),
        mirrors: keep(outcome.fleet.mirrors, "Mirror", &bad),
        sponsors: keep(outcome.fleet.sponsors, "Sponsor", &bad),
        rules: keep(outcome.fleet.rules, "RegionRule", &bad),
    };
    Assessment {
        fleet: compile::compile(&fleet),
        problems,
    }
}

fn keep<T: Resource<DynamicType = ()>>(
    list: Vec<Located<T>>,
    kind: &str,
    bad: &dyn Fn(&str, &str) -> bool,
) -> Vec<Located<T>> {
    list.into_iter().filter(|l| !bad(kind, l.name())).collect()
}

/// Writes each object as the user would have written it: no status, only the metadata a
/// manifest carries.
fn document<K>(objects: &[Arc<K>], files: &mut Vec<(String, String)>)
where
    K: Resource<DynamicType = ()> + Serialize + Clone,
{
    for o in objects {
        let mut o = (**o).clone();
        let meta = o.meta_mut();
        *meta = ObjectMeta {
            name: meta.name.take(),
            labels: meta.labels.take(),
            annotations: meta.annotations.take().map(|mut a| {
                // kubectl's own bookkeeping is not part of the manifest.
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                a
            }),
            ..ObjectMeta::default()
        };
        let mut value = serde_json::to_value(&o).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("status");
        }
        let name = format!(
            "{}/{}",
            K::kind(&()),
            o.meta().name.as_deref().unwrap_or("")
        );
        files.push((
            name,
            serde_json::to_string_pretty(&value).unwrap_or_default(),
        ));
    }
}
