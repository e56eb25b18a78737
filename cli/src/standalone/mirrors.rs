//! The mirror-scan scheduler: each (mirror, project) of the fleet is scanned every `mirror`
//! interval of the schedule, at most `max_scans` at once, once the project has an index in
//! the store. A health transition asking for a rescan first (a mirror back from a long outage)
//! makes every project of that mirror due at once; when all of them have been scanned since,
//! the mirror is reported on the `rescanned` channel, for the checker to put it back. A fleet
//! change makes the (mirror, project) pairs whose mirror or project changed due at once and
//! abandons the scans of pairs that left the fleet.
//!
//! It must not await a scan: scans run in a set it only collects from, so a slow mirror
//! holds up neither the other mirrors nor a fleet change nor a transition. Nor may it count a
//! scan that started before a rescan was asked for as that rescan.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mirrorfleet_crds::state::{FileIndex, FleetState, MirrorState, ProjectState};
use mirrorfleet_health::{Change, Transition};
use mirrorfleet_scan::{ScanError, run};
use mirrorfleet_store::{LoadedState, StateWriter, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;

use super::Schedule;
use crate::cmd;

/// How the scheduler runs.
#[derive(Debug, Clone, Copy)]
pub struct ScanSettings {
    /// The intervals.
    pub schedule: Schedule,
    /// Scans running at once.
    pub max_scans: usize,
}

/// (mirror, project).
pub type Pair = (String, String);

type Done = (Pair, Result<run::MirrorScan, ScanError>);

/// A scan in flight.
#[derive(Debug)]
struct Running {
    id: tokio::task::Id,
    abort: AbortHandle,
    /// Started after a rescan of its mirror was asked for: it counts for that rescan.
    counts: bool,
}

/// Schedules mirror scans of `fleet` against the indexes of `state`, writing through
/// `writer`, until `fleet` or `state` closes. Transitions come from the health checker;
/// mirrors rescanned as they asked go back on `rescanned`; a (mirror, project) on `reports`
/// (the mirror said it synced, and targeted checks cannot prove it: `verify::follow`) is
/// scanned at once — after the scan running, if one is.
pub async fn schedule_scans<S: Store + Clone>(
    mut fleet: watch::Receiver<Arc<FleetState>>,
    mut state: watch::Receiver<Arc<LoadedState>>,
    writer: StateWriter<S>,
    mut transitions: mpsc::Receiver<Transition>,
    rescanned: mpsc::Sender<String>,
    mut reports: mpsc::Receiver<Pair>,
    settings: ScanSettings,
) {
    let mut s = Scheduler::new(
        writer,
        rescanned,
        settings,
        fleet.borrow_and_update().clone(),
    );
    let mut transitions_open = true;
    let mut reports_open = true;
    loop {
        let held = state.borrow_and_update().clone();
        let wake = s.start_due(&held);
        tokio::select! {
            changed = fleet.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = fleet.borrow_and_update().clone();
                s.set_fleet(new);
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            t = transitions.recv(), if transitions_open => match t {
                Some(t) => s.transition(&t),
                None => transitions_open = false,
            },
            r = reports.recv(), if reports_open => match r {
                Some(pair) => s.reported(pair),
                None => reports_open = false,
            },
            Some(done) = s.scans.join_next_with_id(), if !s.scans.is_empty() => s.finished(done),
            () = sleep_until(wake) => {}
        }
    }
}

/// Sleeps until `at`; forever when `None`.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug)]
struct Scheduler<S> {
    writer: StateWriter<S>,
    rescanned: mpsc::Sender<String>,
    settings: ScanSettings,
    fleet: Arc<FleetState>,
    /// When each pair is due next; a pair without an entry is due now.
    due: HashMap<Pair, Instant>,
    running: HashMap<Pair, Running>,
    /// Mirrors to report rescanned, with the projects still to scan.
    rescans: HashMap<String, HashSet<String>>,
    /// Pairs reported synced while their scan ran: scanned again once it ends.
    again: HashSet<Pair>,
    scans: JoinSet<Done>,
    /// Where every pair's slots are counted from.
    epoch: Instant,
}

impl<S: Store + Clone> Scheduler<S> {
    fn new(
        writer: StateWriter<S>,
        rescanned: mpsc::Sender<String>,
        settings: ScanSettings,
        fleet: Arc<FleetState>,
    ) -> Scheduler<S> {
        Scheduler {
            writer,
            rescanned,
            settings,
            fleet,
            due: HashMap::new(),
            running: HashMap::new(),
            rescans: HashMap::new(),
            again: HashSet::new(),
            scans: JoinSet::new(),
            epoch: Instant::now(),
        }
    }

    /// Starts the scans that are due, in fleet order, while there is room; returns when the
    /// next one falls due (`None` when nothing is waiting for a time, or there is no room).
    fn start_due(&mut self, state: &LoadedState) -> Option<Instant> {
        let now = Instant::now();
        let fleet = self.fleet.clone();
        let mut wake: Option<Instant> = None;
        for m in &fleet.mirrors {
            for carried in &m.projects {
                let pair = (m.name.clone(), carried.project.clone());
                if self.running.contains_key(&pair) {
                    continue;
                }
                let (Some(project), Some(index)) = (
                    fleet.project(&carried.project),
                    state.indexes.get(&carried.project),
                ) else {
                    continue;
                };
                if let Some(&at) = self.due.get(&pair)
                    && at > now
                {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    continue;
                }
                if self.running.len() >= self.settings.max_scans {
                    // A finished scan wakes the loop; no time to wait for until then.
                    return None;
                }
                self.start(pair, m, project, index, now);
            }
        }
        wake
    }

    fn start(
        &mut self,
        pair: Pair,
        mirror: &MirrorState,
        project: &ProjectState,
        index: &Arc<FileIndex>,
        now: Instant,
    ) {
        let every = self.settings.schedule.mirror(mirror, project);
        let next = next_slot(self.epoch, now, every, phase(&pair));
        self.due.insert(pair.clone(), next);
        let counts = self
            .rescans
            .get(&pair.0)
            .is_some_and(|left| left.contains(&pair.1));
        let (writer, mirror, project, index) = (
            self.writer.clone(),
            mirror.clone(),
            project.clone(),
            index.clone(),
        );
        let key = pair.clone();
        let abort = self.scans.spawn(async move {
            let limits = run::limits_for(&mirror);
            let result =
                run::scan_mirror(&writer, &mirror, &project, &index, &limits, cmd::now()).await;
            (key, result)
        });
        let id = abort.id();
        self.running.insert(pair, Running { id, abort, counts });
    }

    /// Takes a finished scan in; a scan abandoned meanwhile is ignored.
    fn finished(&mut self, done: Result<(tokio::task::Id, Done), JoinError>) {
        let (id, outcome) = match done {
            Ok((id, (_, result))) => (id, Ok(result)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(pair) = self
            .running
            .iter()
            .find(|(_, r)| r.id == id)
            .map(|(p, _)| p.clone())
        else {
            return;
        };
        let Some(run) = self.running.remove(&pair) else {
            return;
        };
        if self.again.remove(&pair) {
            self.due.remove(&pair);
        }
        let (mirror, project) = (&pair.0, &pair.1);
        match outcome {
            Ok(Ok(s)) => {
                let c = &s.availability.counts;
                tracing::info!(%mirror, %project, protocol = s.protocol, files = c.files, missing = c.missing, "mirror scanned");
                if run.counts {
                    self.rescanned_project(&pair);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(%mirror, %project, error = %mirrorfleet_runtime::error_chain(&e), "mirror scan failed")
            }
            Err(e) => tracing::error!(%mirror, %project, error = %e, "mirror scan task failed"),
        }
    }

    /// The mirror says it synced the project: a hint, checked by scanning that pair now (or
    /// right after the scan running). Pairs the fleet does not have are ignored.
    fn reported(&mut self, pair: Pair) {
        let carried = self
            .fleet
            .mirror(&pair.0)
            .is_some_and(|m| m.projects.iter().any(|c| c.project == pair.1));
        if !carried {
            return;
        }
        tracing::info!(mirror = %pair.0, project = %pair.1, "sync reported; scanning it now");
        if self.running.contains_key(&pair) {
            self.again.insert(pair);
        } else {
            self.due.remove(&pair);
        }
    }

    fn rescanned_project(&mut self, (mirror, project): &Pair) {
        let Some(left) = self.rescans.get_mut(mirror) else {
            return;
        };
        left.remove(project);
        if left.is_empty() {
            self.rescans.remove(mirror);
            self.report(mirror);
        }
    }

    fn report(&self, mirror: &str) {
        tracing::info!(%mirror, "mirror rescanned after its outage");
        if let Err(e) = self.rescanned.try_send(mirror.to_owned()) {
            tracing::warn!(%mirror, error = %e, "cannot tell the health checker the mirror was rescanned");
        }
    }

    /// A mirror back from a long outage: every project it carries is due now, and scans in
    /// flight do not count (they started before it was back). Asked again while a rescan is
    /// pending (another scheme or family came back), the pending rescan serves both.
    fn transition(&mut self, t: &Transition) {
        if t.change != Change::RescanFirst || self.rescans.contains_key(&t.key.mirror) {
            return;
        }
        let Some(m) = self.fleet.mirror(&t.key.mirror) else {
            return;
        };
        let projects: HashSet<String> = m.projects.iter().map(|c| c.project.clone()).collect();
        for p in &projects {
            let pair = (m.name.clone(), p.clone());
            self.due.remove(&pair);
            if let Some(r) = self.running.get_mut(&pair) {
                r.counts = false;
            }
        }
        let name = m.name.clone();
        if projects.is_empty() {
            self.report(&name);
        } else {
            self.rescans.insert(name, projects);
        }
    }

    /// A new fleet: pairs whose mirror or project changed are due now (a scan in flight is
    /// followed by another); pairs that left it are forgotten and their scans abandoned.
    fn set_fleet(&mut self, new: Arc<FleetState>) {
        let old = std::mem::replace(&mut self.fleet, new.clone());
        let mut wanted: HashSet<Pair> = HashSet::new();
        for m in &new.mirrors {
            for c in &m.projects {
                let pair = (m.name.clone(), c.project.clone());
                let same = old.mirror(&m.name) == Some(m)
                    && old.project(&c.project) == new.project(&c.project);
                if !same {
                    self.due.remove(&pair);
                    if let Some(r) = self.running.get_mut(&pair) {
                        r.counts = false;
                    }
                }
                wanted.insert(pair);
            }
        }
        self.due.retain(|p, _| wanted.contains(p));
        self.running.retain(|(mirror, project), r| {
            let kept = wanted.contains(&(mirror.clone(), project.clone()));
            if !kept {
                tracing::info!(%mirror, %project, "left the fleet; abandoning its scan");
                r.abort.abort();
            }
            kept
        });
        self.rescans
            .retain(|mirror, left| match new.mirror(mirror) {
                Some(m) => {
                    left.retain(|p| m.projects.iter().any(|c| &c.project == p));
                    true
                }
                None => false,
            });
        let complete: Vec<String> = self
            .rescans
            .iter()
            .filter(|(_, left)| left.is_empty())
            .map(|(m, _)| m.clone())
            .collect();
        for m in complete {
            self.rescans.remove(&m);
            self.report(&m);
        }
    }
}

/// A pair's stable place in any interval, as a fraction of it (FNV-1a of its names): the
/// scans of many pairs with one interval spread over it instead of coming in one burst.
pub fn phase((mirror, project): &Pair) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mirror.bytes().chain([0]).chain(project.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// When a pair scanned at `now` is due next: the first of its slots — `epoch + phase ×
/// every + k × every` — later than `now` by at least half an interval (so that a scan
/// started late, or the first one, is not followed at once by another).
pub fn next_slot(epoch: Instant, now: Instant, every: Duration, phase: f64) -> Instant {
    let every_ns = every.as_nanos().max(1);
    let offset = (every_ns as f64 * phase.clamp(0.0, 1.0)) as u128 % every_ns;
    let since = now.saturating_duration_since(epoch).as_nanos() + every_ns / 2;
    let at = if since < offset {
        offset
    } else {
        offset + ((since - offset) / every_ns + 1) * every_ns
    };
    epoch + Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
