//! The verdict of one (mirror, scheme, address family): a pure state machine over probe
//! outcomes. A mirror not yet probed counts as up (the redirectors treat a missing entry as
//! healthy), so a new mirror gets traffic at once and loses it after `failure_threshold`
//! consecutive failures; a down mirror comes back after `success_threshold` consecutive
//! successes — and, after a long outage, only once it has been rescanned, since whatever it
//! held before may be stale.

use mirrorfleet_crds::state::HealthCheckState;

use super::probe::Outcome;

/// An outage longer than this needs a rescan before the mirror gets traffic again.
pub const LONG_OUTAGE_SECONDS: i64 = 15 * 60;

/// A change of verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Out of rotation.
    Down {
        /// PascalCase reason (`ConnectRefused`, `Timeout`, …).
        reason: String,
        /// What the last probe saw.
        message: String,
    },
    /// Healthy again after a long outage: rescan it, then call [`Tracker::rescanned`].
    RescanFirst,
    /// Back in rotation (or first seen healthy).
    Up,
}

/// The state of one (mirror, scheme, family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracker {
    /// `None` until a verdict is reached; `Some(true)` up, `Some(false)` down.
    pub up: Option<bool>,
    /// Reason of the current verdict.
    pub reason: String,
    /// Message of the current verdict.
    pub message: String,
    /// When the current verdict started (Unix seconds).
    pub since: i64,
    /// Waiting for a rescan before coming back.
    pub awaiting_rescan: bool,
    fails: u32,
    oks: u32,
}

impl Tracker {
    /// Takes one probe outcome at `now`; returns the change of verdict, if any.
    pub fn observe(
        &mut self,
        outcome: &Outcome,
        now: i64,
        policy: &HealthCheckState,
    ) -> Option<Change> {
        match outcome {
            Outcome::Ok => {
                self.fails = 0;
                self.oks = self.oks.saturating_add(1);
                match self.up {
                    // Never judged: one success is enough (it was already getting traffic).
                    None => {
                        self.set(true, "Ok", "probe succeeded", now);
                        Some(Change::Up)
                    }
                    Some(true) => None,
                    Some(false) if self.awaiting_rescan => None,
                    Some(false) if self.oks >= policy.success_threshold => {
                        if now - self.since >= LONG_OUTAGE_SECONDS {
                            self.awaiting_rescan = true;
                            self.reason = "RescanPending".into();
                            self.message = format!(
                                "answering again after {} s down; rescanning before traffic",
                                now - self.since
                            );
                            Some(Change::RescanFirst)
                        } else {
                            self.set(true, "Ok", "probes succeed again", now);
                            Some(Change::Up)
                        }
                    }
                    Some(false) => None,
                }
            }
            Outcome::Failed(f) => {
                self.oks = 0;
                self.fails = self.fails.saturating_add(1);
                if self.awaiting_rescan {
                    // Failed again while waiting: the outage goes on.
                    self.awaiting_rescan = false;
                    self.reason = f.reason().into();
                    self.message = f.to_string();
                    return None;
                }
                match self.up {
                    Some(false) => {
                        // Still down: keep the reason current, but it is not a change.
                        self.reason = f.reason().into();
                        self.message = f.to_string();
                        None
                    }
                    _ if self.fails >= policy.failure_threshold => {
                        self.set(false, f.reason(), &f.to_string(), now);
                        Some(Change::Down {
                            reason: f.reason().into(),
                            message: f.to_string(),
                        })
                    }
                    _ => None,
                }
            }
        }
    }

    /// The rescan asked for by [`Change::RescanFirst`] is done: back in rotation.
    pub fn rescanned(&mut self, now: i64) -> Option<Change> {
        if !self.awaiting_rescan {
            return None;
        }
        self.awaiting_rescan = false;
        self.set(
            true,
            "Ok",
            "probes succeed again and the mirror was rescanned",
            now,
        );
        Some(Change::Up)
    }

    fn set(&mut self, up: bool, reason: &str, message: &str, now: i64) {
        self.up = Some(up);
        self.reason = reason.into();
        self.message = message.into();
        self.since = now;
    }
}

#[cfg(test)]
mod tests;
