//! The probing loop. Every target — (mirror, scheme, family) with its canaries — is probed
//! once per its interval, at a phase drawn when it first appears so that probes spread over
//! time; at most [`MAX_IN_FLIGHT`] probes run at once. A verdict change is written to the
//! store at once (one small value per mirror) and reported on the transitions channel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{
    Availability, Family, FileIndex, FleetState, HealthCheckState, HealthState, MirrorHealth,
    PathClasses, ProbeScheme,
};
use mirrorfleet_crds::url::encode_path;
use mirrorfleet_store::{StateWriter, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::probe::{Canary, Outcome, ProbeSettings, probe_all};
use super::verdict::{Change, Tracker};

/// Probes running at once, across the fleet.
pub const MAX_IN_FLIGHT: usize = 64;

/// What is probed: one (mirror, scheme, family).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Mirror name.
    pub mirror: String,
    /// Scheme.
    pub scheme: ProbeScheme,
    /// Address family.
    pub family: Family,
}

/// A key with its canaries and settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What.
    pub key: Key,
    /// The canary of each carried project reachable over this scheme.
    pub canaries: Vec<Canary>,
    /// Settings.
    pub policy: HealthCheckState,
}

/// The probe targets of a fleet: each enabled mirror with checks on, each scheme it has a
/// URL for, each family it declares. The canary of a project is its `canaryFile`, else its
/// trace file, else the first immutable file of the index that the mirror's last scan found
/// (within the sub-trees it carries), else the mirror's base URL itself; the expected size
/// comes from the index.
pub fn targets(
    fleet: &FleetState,
    indexes: &HashMap<String, Arc<FileIndex>>,
    availability: &HashMap<(String, String), Arc<Availability>>,
) -> Vec<Target> {
    let classes: HashMap<&str, PathClasses> = fleet
        .projects
        .iter()
        .map(|p| (p.name.as_str(), PathClasses::of(p).unwrap_or_default()))
        .collect();
    let mut out = Vec::new();
    for m in &fleet.mirrors {
        if !m.enabled || m.health_check.disabled {
            continue;
        }
        for scheme in [ProbeScheme::Http, ProbeScheme::Https] {
            let mut canaries = Vec::new();
            for carried in &m.projects {
                let base = match scheme {
                    ProbeScheme::Http => carried.http.as_deref(),
                    ProbeScheme::Https => carried.https.as_deref(),
                };
                let Some(base) = base else { continue };
                let project = fleet.project(&carried.project);
                let index = indexes.get(&carried.project);
                let declared = project
                    .and_then(|p| p.canary_file.as_ref().or(p.trace_file.as_ref()))
                    .map(|f| f.trim_start_matches('/').to_owned());
                let held = || {
                    let avail = availability.get(&(m.name.clone(), carried.project.clone()))?;
                    let classes = classes.get(carried.project.as_str())?;
                    index?
                        .iter()
                        .find(|e| {
                            avail.present.contains(e.id)
                                && !classes.is_mutable(e.path)
                                && (carried.paths.is_empty()
                                    || carried.paths.iter().any(|p| e.path.starts_with(p.as_str())))
                        })
                        .map(|e| e.path.to_owned())
                };
                let canary = match declared.or_else(held) {
                    Some(f) => Canary {
                        size: index.and_then(|i| i.find(&f)).map(|e| e.size),
                        url: format!("{base}{}", encode_path(&f)),
                    },
                    None => Canary {
                        url: base.to_owned(),
                        size: None,
                    },
                };
                canaries.push(canary);
            }
            if canaries.is_empty() {
                continue;
            }
            for (declared, family) in [(m.ipv4, Family::Ipv4), (m.ipv6, Family::Ipv6)] {
                if declared {
                    out.push(Target {
                        key: Key {
                            mirror: m.name.clone(),
                            scheme,
                            family,
                        },
                        canaries: canaries.clone(),
                        policy: m.health_check,
                    });
                }
            }
        }
    }
    out
}

/// A verdict change, for conditions, Events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// What.
    pub key: Key,
    /// The change.
    pub change: Change,
    /// The tracker's message.
    pub message: String,
}

/// The health checker; see [`Checker::run`].
#[derive(Debug)]
pub struct Checker<S: Store> {
    writer: StateWriter<S>,
    targets: HashMap<Key, (Target, Instant)>,
    trackers: HashMap<Key, Tracker>,
    now: fn() -> i64,
}

impl<S: Store> Checker<S> {
    /// A checker writing through `writer`; `now` gives Unix seconds.
    pub fn new(writer: StateWriter<S>, now: fn() -> i64) -> Checker<S> {
        Checker {
            writer,
            targets: HashMap::new(),
            trackers: HashMap::new(),
            now,
        }
    }

    /// Probes until `targets` closes. `rescanned` receives the names of mirrors whose rescan
    /// (asked for with [`Change::RescanFirst`]) is done; transitions go to `transitions`.
    pub async fn run(
        mut self,
        mut targets: watch::Receiver<Arc<Vec<Target>>>,
        mut rescanned: mpsc::Receiver<String>,
        transitions: mpsc::Sender<Transition>,
    ) {
        let mut in_flight: JoinSet<(Key, Outcome)> = JoinSet::new();
        let mut busy: HashSet<Key> = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let first = targets.borrow_and_update().clone();
        self.set_targets(&first).await;
        loop {
            tokio::select! {
                changed = targets.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let t = targets.borrow_and_update().clone();
                    self.set_targets(&t).await;
                }
                Some(mirror) = rescanned.recv() => {
                    let now = (self.now)();
                    let keys: Vec<Key> = self.trackers.keys().filter(|k| k.mirror == mirror).cloned().collect();
                    for key in keys {
                        let change = self.trackers.get_mut(&key).and_then(|t| t.rescanned(now));
                        if let Some(change) = change {
                            self.changed(key, change, &transitions).await;
                        }
                    }
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let Ok((key, outcome)) = done else { continue };
                    busy.remove(&key);
                    let Some((target, _)) = self.targets.get(&key) else { continue };
                    let policy = target.policy;
                    let change = self
                        .trackers
                        .entry(key.clone())
                        .or_default()
                        .observe(&outcome, (self.now)(), &policy);
                    if let Some(change) = change {
                        self.changed(key, change, &transitions).await;
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    for (key, (target, due)) in self.targets.iter_mut() {
                        if in_flight.len() >= MAX_IN_FLIGHT {
                            break;
                        }
                        if *due > now || busy.contains(key) {
                            continue;
                        }
                        *due = now + Duration::from_secs(u64::from(target.policy.interval_seconds));
                        busy.insert(key.clone());
                        let (key, canaries) = (key.clone(), target.canaries.clone());
                        let settings = ProbeSettings {
                            family: key.family,
                            timeout: Duration::from_secs(u64::from(target.policy.timeout_seconds)),
                            allow_redirects: target.policy.allow_redirects,
                        };
                        in_flight.spawn(async move { (key, probe_all(&canaries, &settings).await) });
                    }
                }
            }
        }
    }

    /// Replaces the targets: new ones start at a random phase of their interval; removed ones
    /// lose their verdicts (and the store its entries).
    async fn set_targets(&mut self, targets: &[Target]) {
        let now = Instant::now();
        let mut next: HashMap<Key, (Target, Instant)> = HashMap::new();
        for t in targets {
            let due = match self.targets.get(&t.key) {
                Some((_, due)) => *due,
                None => {
                    let interval_ms = u64::from(t.policy.interval_seconds) * 1000;
                    now + Duration::from_millis(phase(&t.key) % interval_ms.max(1))
                }
            };
            next.insert(t.key.clone(), (t.clone(), due));
        }
        let gone: HashSet<String> = self
            .trackers
            .keys()
            .filter(|k| !next.contains_key(*k))
            .map(|k| k.mirror.clone())
            .collect();
        self.trackers.retain(|k, _| next.contains_key(k));
        self.targets = next;
        for mirror in gone {
            self.write(&mirror).await;
        }
    }

    async fn changed(&mut self, key: Key, change: Change, transitions: &mpsc::Sender<Transition>) {
        let message = self
            .trackers
            .get(&key)
            .map(|t| t.message.clone())
            .unwrap_or_default();
        match &change {
            Change::Down { reason, .. } => {
                tracing::warn!(mirror = %key.mirror, scheme = ?key.scheme, family = ?key.family, %reason, %message, "mirror out of rotation")
            }
            Change::RescanFirst => {
                tracing::info!(mirror = %key.mirror, scheme = ?key.scheme, family = ?key.family, %message, "mirror answers again; rescanning it first")
            }
            Change::Up => {
                tracing::info!(mirror = %key.mirror, scheme = ?key.scheme, family = ?key.family, %message, "mirror in rotation")
            }
        }
        if !matches!(change, Change::RescanFirst) {
            self.write(&key.mirror).await;
        }
        let _ = transitions.try_send(Transition {
            key,
            change,
            message,
        });
    }

    /// Writes a mirror's verdicts to the store.
    async fn write(&self, mirror: &str) {
        let mut entries: Vec<HealthState> = self
            .trackers
            .iter()
            .filter(|(k, _)| k.mirror == mirror)
            .filter_map(|(k, t)| {
                Some(HealthState {
                    scheme: k.scheme,
                    family: k.family,
                    up: t.up?,
                    reason: t.reason.clone(),
                    since: t.since,
                })
            })
            .collect();
        entries.sort_by_key(|e| (e.scheme == ProbeScheme::Https, e.family == Family::Ipv6));
        let health = MirrorHealth {
            mirror: mirror.to_owned(),
            entries,
        };
        if let Err(e) = self.writer.write_health(&health).await {
            tracing::warn!(%mirror, error = %mirrorfleet_runtime::error_chain(&e), "cannot store the mirror's health");
        }
    }
}

/// A stable pseudo-random phase (milliseconds) for a key, so that probes spread over the
/// interval and keep their spacing across restarts.
fn phase(key: &Key) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .mirror
        .bytes()
        .chain([key.scheme as u8, key.family as u8])
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
