//! The driver of targeted checks. It follows the store: each index change is remembered
//! ([`Recent`]) and makes every mirror carrying the project due for a check; a mirror's sync
//! report makes it due at once. A mirror not yet proven to hold everything that changed is
//! checked again after 1, 2, 4, 8, 15, 30 and then every 60 s, until it is, or until the
//! changes leave the window (its full scans take over). At most one check per (mirror,
//! project) at a time, and a bounded number at once.
//!
//! A report it cannot answer with checks — the mirror serves the project over neither HTTP
//! nor HTTPS, it was never scanned, or changes since its last scan were not all remembered —
//! goes on to `scans`, for a full scan. It must never await a mirror in its loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{FleetState, PathClasses};
use mirrorfleet_store::{LoadedState, StateWriter, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Recent, Target, apply, base_url, check, pending};
use crate::{ScanError, http};

/// (mirror, project).
pub type Pair = (String, String);

/// How checks run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a change stays to be proven on each mirror.
    pub window: Duration,
    /// Most files checked on a mirror per round.
    pub max_per_round: usize,
    /// Mirrors checked at once.
    pub max_rounds: usize,
    /// HEADs in flight per mirror.
    pub concurrency: usize,
    /// Timeout of one HEAD.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            window: Duration::from_secs(30 * 60),
            max_per_round: 64,
            max_rounds: 8,
            concurrency: 4,
            timeout: Duration::from_secs(10),
        }
    }
}

/// How often remembered changes older than the window are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// Waits before a mirror not yet proven is checked again; the last one repeats.
const BACKOFF: [u64; 7] = [1, 2, 4, 8, 15, 30, 60];

/// Runs checks until `state` or `fleet` closes; see the module documentation.
pub async fn follow<S: Store + Clone>(
    mut fleet: watch::Receiver<Arc<FleetState>>,
    mut state: watch::Receiver<Arc<LoadedState>>,
    writer: StateWriter<S>,
    mut reports: mpsc::Receiver<Pair>,
    scans: mpsc::Sender<Pair>,
    settings: Settings,
) {
    let mut d = Driver {
        writer,
        settings,
        fleet: fleet.clone(),
        state: state.clone(),
        scans,
        indexes: HashMap::new(),
        recent: HashMap::new(),
        due: HashMap::new(),
        running: HashMap::new(),
        rounds: JoinSet::new(),
        expired_at: Instant::now(),
    };
    let mut reports_open = true;
    loop {
        let st = state.borrow_and_update().clone();
        let fl = fleet.borrow_and_update().clone();
        d.observe(&st, &fl);
        let wake = d.start_due(&st, &fl);
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            changed = fleet.changed() => if changed.is_err() { return },
            r = reports.recv(), if reports_open => match r {
                Some(pair) => d.reported(pair, &st, &fl),
                None => reports_open = false,
            },
            Some(done) = d.rounds.join_next(), if !d.rounds.is_empty() => d.finished(done),
            () = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When a pair is checked next, and how many checks it has had since it was last asked for.
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    step: usize,
}

/// What a round found: files still to prove (`Ok`) or why the mirror could not be checked.
type Done = (Pair, Result<usize, ScanError>);

struct Driver<S> {
    writer: StateWriter<S>,
    settings: Settings,
    fleet: watch::Receiver<Arc<FleetState>>,
    state: watch::Receiver<Arc<LoadedState>>,
    scans: mpsc::Sender<Pair>,
    /// The index of each project last observed.
    indexes: HashMap<String, Arc<mirrorfleet_crds::state::FileIndex>>,
    recent: HashMap<String, Arc<Recent>>,
    due: HashMap<Pair, Due>,
    /// Pairs being checked, and whether they were asked for again meanwhile.
    running: HashMap<Pair, bool>,
    rounds: JoinSet<Done>,
    /// When old changes were last forgotten.
    expired_at: Instant,
}

impl<S: Store + Clone> Driver<S> {
    /// Takes in the indexes that changed: their changes are remembered and every mirror
    /// carrying the project is due now. A project's first index is no change.
    fn observe(&mut self, st: &LoadedState, fl: &FleetState) {
        let now = Instant::now();
        self.indexes.retain(|p, _| st.indexes.contains_key(p));
        self.recent.retain(|p, _| st.indexes.contains_key(p));
        for (project, index) in &st.indexes {
            let old = self.indexes.get(project);
            if old.is_some_and(|o| Arc::ptr_eq(o, index)) {
                continue;
            }
            let recent = Arc::make_mut(self.recent.entry(project.clone()).or_default());
            recent.observe(old.map(|o| &**o), index, now, self.settings.window);
            let first = old.is_none();
            self.indexes.insert(project.clone(), index.clone());
            if first {
                continue;
            }
            for m in &fl.mirrors {
                if m.projects
                    .iter()
                    .any(|c| &c.project == project && base_url(c).is_some())
                {
                    self.ask((m.name.clone(), project.clone()), now);
                }
            }
        }
    }

    /// A check of `pair` is wanted now.
    fn ask(&mut self, pair: Pair, now: Instant) {
        if let Some(again) = self.running.get_mut(&pair) {
            *again = true;
        }
        self.due.insert(pair, Due { at: now, step: 0 });
    }

    /// Starts the checks that are due while there is room; returns when the next falls due.
    fn start_due(&mut self, st: &LoadedState, fl: &FleetState) -> Option<Instant> {
        let now = Instant::now();
        // Once a minute is enough for a 30-minute window, and spares copying a set that a
        // round still holds on every turn of the loop.
        if now.saturating_duration_since(self.expired_at) >= EXPIRE_EVERY {
            self.expired_at = now;
            for r in self.recent.values_mut() {
                if !r.is_empty() {
                    Arc::make_mut(r).expire(now, self.settings.window);
                }
            }
        }
        let mut wake: Option<Instant> = None;
        let ready: Vec<Pair> = self
            .due
            .iter()
            .filter(|(p, _)| !self.running.contains_key(*p))
            .filter_map(|(p, d)| {
                if d.at > now {
                    wake = Some(wake.map_or(d.at, |w| w.min(d.at)));
                    None
                } else {
                    Some(p.clone())
                }
            })
            .collect();
        for pair in ready {
            if self.running.len() >= self.settings.max_rounds {
                // A finished round wakes the loop.
                return None;
            }
            match self.round(&pair, st, fl) {
                Some((round, targets)) => {
                    self.running.insert(pair.clone(), false);
                    let key = pair.clone();
                    self.rounds
                        .spawn(async move { (key, round.run(targets).await) });
                }
                None => {
                    self.due.remove(&pair);
                }
            }
        }
        wake
    }

    /// The round checking `pair`, or `None` when there is nothing to check or bump.
    fn round(
        &self,
        pair: &Pair,
        st: &LoadedState,
        fl: &FleetState,
    ) -> Option<(Round<S>, Vec<Target>)> {
        let (mirror, project) = pair;
        let carried = fl
            .mirror(mirror)?
            .projects
            .iter()
            .find(|c| &c.project == project)?;
        let base = base_url(carried)?.to_owned();
        let index = st.indexes.get(project)?.clone();
        let avail = st.availability.get(pair)?;
        let recent = self.recent.get(project)?.clone();
        let classes = PathClasses::of(fl.project(project)?).ok()?;
        let targets = pending(
            &index,
            avail,
            &classes,
            &carried.paths,
            &recent,
            self.settings.max_per_round,
        );
        let bump = avail.serial != index.serial && recent.covers(&avail.serial);
        if targets.is_empty() && !bump {
            return None;
        }
        let ctx = Round {
            pair: pair.clone(),
            base,
            carried: carried.paths.clone(),
            classes,
            recent,
            writer: self.writer.clone(),
            state: self.state.clone(),
            fleet: self.fleet.clone(),
            settings: self.settings,
        };
        Some((ctx, targets))
    }

    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) {
        let (pair, outcome) = match done {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "a mirror check failed");
                // Which pair is unknown: forget every running one rather than none.
                self.running.clear();
                return;
            }
        };
        let again = self.running.remove(&pair).unwrap_or(false);
        let (mirror, project) = (&pair.0, &pair.1);
        let left = match outcome {
            Ok(left) => left,
            Err(e) => {
                tracing::info!(%mirror, %project, error = %mirrorfleet_runtime::error_chain(&e), "cannot check the mirror's new files");
                1
            }
        };
        if again {
            self.due.insert(
                pair,
                Due {
                    at: Instant::now(),
                    step: 0,
                },
            );
        } else if left == 0 {
            self.due.remove(&pair);
        } else if let Some(d) = self.due.get_mut(&pair) {
            d.at = Instant::now() + Duration::from_secs(BACKOFF[d.step.min(BACKOFF.len() - 1)]);
            d.step += 1;
        }
    }

    /// The mirror says it synced the project: checked now when checks can prove it, else
    /// passed on for a full scan.
    fn reported(&mut self, pair: Pair, st: &LoadedState, fl: &FleetState) {
        let (mirror, project) = (&pair.0, &pair.1);
        let Some(carried) = fl
            .mirror(mirror)
            .and_then(|m| m.projects.iter().find(|c| &c.project == project))
        else {
            return;
        };
        let provable = base_url(carried).is_some()
            && match (
                st.availability.get(&pair),
                st.indexes.get(project),
                self.recent.get(project),
            ) {
                (Some(a), Some(i), Some(r)) => a.serial == i.serial || r.covers(&a.serial),
                _ => false,
            };
        if provable {
            tracing::info!(%mirror, %project, "sync reported; checking what changed");
            self.ask(pair, Instant::now());
        } else {
            tracing::info!(%mirror, %project, "sync reported; a full scan will check it");
            if let Err(e) = self.scans.try_send(pair) {
                tracing::warn!(error = %e, "cannot ask for a scan of the reported mirror");
            }
        }
    }
}

/// One check of one mirror.
struct Round<S> {
    pair: Pair,
    base: String,
    carried: Vec<String>,
    classes: PathClasses,
    recent: Arc<Recent>,
    writer: StateWriter<S>,
    state: watch::Receiver<Arc<LoadedState>>,
    fleet: watch::Receiver<Arc<FleetState>>,
    settings: Settings,
}

impl<S: Store> Round<S> {
    /// HEADs `targets`, adds what they prove to the newest availability (and its serial,
    /// once everything that changed since is proven), writes it if it changed, and returns
    /// how many files are still to prove.
    async fn run(self, targets: Vec<Target>) -> Result<usize, ScanError> {
        let (mirror, project) = (&self.pair.0, &self.pair.1);
        let held = if targets.is_empty() {
            Vec::new()
        } else {
            let client = http::client(self.settings.timeout)?;
            check(
                &client,
                &self.base,
                &targets,
                self.settings.concurrency,
                self.settings.timeout,
            )
            .await?
        };
        let st = self.state.borrow().clone();
        let (Some(index), Some(avail)) = (st.indexes.get(project), st.availability.get(&self.pair))
        else {
            return Ok(0);
        };
        if self.fleet.borrow().mirror(mirror).is_none() {
            // Left the fleet meanwhile: writing would bring its availability back.
            return Ok(0);
        }
        let mut avail = (**avail).clone();
        let mut changed = apply(&mut avail, index, &held);
        let left = pending(
            index,
            &avail,
            &self.classes,
            &self.carried,
            &self.recent,
            usize::MAX,
        )
        .len();
        if left == 0 && avail.serial != index.serial && self.recent.covers(&avail.serial) {
            avail.serial = index.serial.clone();
            changed = true;
        }
        if changed {
            if let Err(e) = self.writer.write_availability(&avail).await {
                tracing::warn!(%mirror, %project, error = %mirrorfleet_runtime::error_chain(&e), "cannot write what the check proved");
                return Ok(left.max(1));
            }
            tracing::info!(%mirror, %project, proven = held.len(), left, serial = %avail.serial, "mirror checked for new files");
        }
        Ok(left)
    }
}
