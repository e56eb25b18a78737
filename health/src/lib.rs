//! Health checks: HEAD probes per mirror × scheme × address family on each carried
//! project's canary file, turned into up/down verdicts with failure and success thresholds.
//!
//! - [`verdict`]: the pure state machine of one (mirror, scheme, family) — thresholds, flap
//!   damping, the rescan required after a long outage.
//! - [`probe`]: one probe, with a precise reason when it fails (DNS, no address of the
//!   family, connection refused, connect error, TLS, timeout, HTTP status, wrong size).
//! - [`checker`]: the loop — probes spread over each interval, bounded concurrency, health
//!   written to the store the moment a verdict changes (the redirectors follow within about a
//!   second), transitions reported to whoever runs it (conditions and Events in Kubernetes,
//!   logs in standalone mode).
//!
//! It must not depend on kube, git2 or an HTTP server (a test of the workspace checks): the
//! operator, standalone and redirectors on a shared Redis all run it.

pub mod checker;
pub mod probe;
pub mod verdict;

pub use checker::{Checker, Transition};
pub use probe::{Failure, Outcome};
pub use verdict::{Change, Tracker};
