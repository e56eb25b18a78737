//! `/-/mirrors/<name>.json`: one mirror's duties as the fleet has them — its projects and
//! sub-trees, the hub's rsync URL, the announcement topic, the pace, the two-stage hint and
//! the current serial ([`mirrorfleet_crds::state::duties`]) — for `mirrorfleet agent` on
//! that mirror's node. Public and read-only, like `?mirrorstats`: nothing private (no
//! contacts, notes, or the mirror's own scan URLs, which may hold credentials).

use hyper::StatusCode;
use mirrorfleet_crds::state::duties;

use super::{private_page, text};
use crate::metrics::Outcome as M;
use crate::respond::answer::Answer;
use crate::snapshot::Snapshot;

/// The prefix of the path, then `<mirror>.json`.
pub const PREFIX: &str = "/-/mirrors/";

/// The mirror a path names, if it is a duties path.
pub fn mirror_of(path: &str) -> Option<&str> {
    path.strip_prefix(PREFIX)?
        .strip_suffix(".json")
        .filter(|m| !m.is_empty() && !m.contains('/'))
}

/// The duties of `mirror` in `snap`: `200` with JSON, or `404` for no such mirror.
pub fn answer(snap: &Snapshot, mirror: &str) -> Answer {
    let Some(m) = snap.mirrors.iter().find(|m| m.state.name == mirror) else {
        return (
            text(
                StatusCode::NOT_FOUND,
                format!("no mirror {mirror:?} in the fleet\n"),
            ),
            M::NotFound,
        );
    };
    let project = |name: &str| snap.projects.iter().find(|p| p.state.name == name);
    let d = duties::of_mirror(
        &m.state,
        |name| project(name).map(|p| &p.state),
        |name| project(name)?.index.as_ref().map(|i| i.serial.clone()),
    );
    let body = serde_json::to_vec_pretty(&d).unwrap_or_default();
    (
        private_page(body, "application/json; charset=utf-8"),
        M::Duties,
    )
}
