//! The mirrorfleet redirector: answers download requests from an immutable in-memory
//! snapshot of the fleet, kept current from the store. Also a library, so that
//! `mirrorfleet standalone` can embed it.
//!
//! It never talks to the store on the request path: [`snapshot`] is rebuilt off the path and
//! swapped whole; [`select`] is a pure function of (request facts, snapshot); the fleet-wide
//! counters of [`mirrorstats`] are read back by the stats task. The one exception is a file's
//! `?stats` ([`filestats`]): a rare question, answered with one batched read under a deadline.

pub mod facts;
pub mod filestats;
pub mod metrics;
pub mod mirrorstats;
pub mod request;
pub mod respond;
pub mod select;
pub mod server;
pub mod snapshot;
pub mod stats;
