//! The fleet state: what the operator writes and every redirector reads. This module is the
//! contract — key names, value encodings, the schema version and change events — and does no
//! I/O itself (the `mirrorfleet-store` crate moves these bytes to Redis or the embedded store).
//!
//! # Keys
//!
//! Every key starts with `mf:v1:` (the schema version is part of the prefix, so two schema
//! versions can share a Redis during an upgrade without touching each other's data).
//!
//! | key | value | written by | read by |
//! | --- | --- | --- | --- |
//! | `mf:v1:schema` | the string `1` | first writer | every reader, at connect |
//! | `mf:v1:gen` | counter: the last generation handed out | every write (atomically) | readers, to notice missed events |
//! | `mf:v1:epoch` | a token set by the first write to an empty store | first writer | readers: a new epoch means "reload everything" |
//! | `mf:v1:manifest` | hash: logical key → generation of its current value | every write (atomically) | readers, to resynchronise |
//! | `mf:v1:fleet` | [`FleetState`] (JSON body) | operator: compile | redirectors, scan jobs, health checker |
//! | `mf:v1:index:<project>` | [`IndexMeta`] (JSON body): serial, counts, the chunk keys in order | source scan | redirectors, mirror scans |
//! | `mf:v1:chunk:<project>:<n>:<hash>` | [`IndexChunk`] (binary): up to [`CHUNK_FILES`] files of one id range; immutable, content-addressed | source scan | redirectors |
//! | `mf:v1:avail:<mirror>:<project>` | [`Availability`] (binary): a roaring bitmap of file ids held with the right size, plus the versions of mutable files | mirror scans | redirectors |
//! | `mf:v1:health:<mirror>` | [`MirrorHealth`] (JSON body): up/down per scheme × address family | health checker | redirectors |
//! | `mf:v1:stats:…` | counters (see [`stats`]) | redirectors (batched) | operator (status), `?mirrorstats` |
//!
//! Every value except counters is wrapped in an [`envelope`]: magic, schema version, kind,
//! length and CRC-32, so that a foreign, truncated or corrupt value is recognised and named.
//!
//! # Writes and events
//!
//! A write replaces one or more logical keys atomically: it takes the next generation from
//! `mf:v1:gen`, stores the values, records the generation of each key in `mf:v1:manifest`,
//! and publishes `<generation> <key> [<key>…]` on the channel [`EVENTS_CHANNEL`]. Readers
//! apply events in order; a gap in generations, a reconnect or a periodic check makes them
//! compare the manifest with what they hold and fetch only the keys whose generation
//! changed. Index chunks are immutable and content-addressed, so a new index generation
//! fetches only the chunks that changed; chunks no longer referenced are deleted by the write
//! that replaces the index.
//!
//! # Sizes
//!
//! Storage is O(files + mirrors × files/8 bytes): never one key per (file, mirror) pair.

pub mod avail;
pub mod classes;
mod codec;
pub mod duties;
pub mod envelope;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod fleet;
pub mod health;
pub mod index;
pub mod stats;

pub use avail::{Availability, MutableSeen, ScanCounts};
pub use classes::PathClasses;
pub use duties::{MirrorDuties, ProjectDuty};
pub use envelope::{Kind, decode, encode};
pub use fleet::{
    Action, FallbackState, FleetState, HashKind, HealthCheckState, LocationState,
    MirrorProjectState, MirrorState, ProjectState, PushState, RestrictionState, RuleState,
    SourceState, SponsorState,
};
pub use health::{Family, HealthState, MirrorHealth, ProbeScheme};
pub use index::{CHUNK_FILES, FileEntry, FileIndex, FileRecord, IndexChunk, IndexMeta};

/// The schema version: part of every key and every envelope.
pub const SCHEMA_VERSION: u16 = 1;
/// Prefix of every key.
pub const PREFIX: &str = "mf:v1:";
/// The pub/sub channel carrying change events.
pub const EVENTS_CHANNEL: &str = "mf:v1:events";
/// The key holding the schema version.
pub const SCHEMA_KEY: &str = "mf:v1:schema";
/// The generation counter.
pub const GEN_KEY: &str = "mf:v1:gen";
/// A token set by the first write to an empty store. When it changes (the store was wiped,
/// replaced or restored), readers reload everything instead of trusting generations.
pub const EPOCH_KEY: &str = "mf:v1:epoch";
/// The manifest: logical key → generation.
pub const MANIFEST_KEY: &str = "mf:v1:manifest";
/// The compiled fleet.
pub const FLEET_KEY: &str = "mf:v1:fleet";

/// The key of a project's index metadata.
pub fn index_key(project: &str) -> String {
    format!("{PREFIX}index:{project}")
}

/// The key of an index chunk: its id range and content hash.
pub fn chunk_key(project: &str, chunk_no: u32, content_hash: u64) -> String {
    format!("{PREFIX}chunk:{project}:{chunk_no}:{content_hash:016x}")
}

/// The key of a mirror's availability for a project.
pub fn avail_key(mirror: &str, project: &str) -> String {
    format!("{PREFIX}avail:{mirror}:{project}")
}

/// The key of a mirror's health.
pub fn health_key(mirror: &str) -> String {
    format!("{PREFIX}health:{mirror}")
}

/// What a logical key names, parsed back from the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// [`FLEET_KEY`].
    Fleet,
    /// A project's index metadata.
    Index(&'a str),
    /// A mirror's availability for a project.
    Avail(&'a str, &'a str),
    /// A mirror's health.
    Health(&'a str),
}

impl<'a> KeyRef<'a> {
    /// Parses a logical key (as found in the manifest or an event).
    pub fn parse(key: &'a str) -> Option<KeyRef<'a>> {
        let rest = key.strip_prefix(PREFIX)?;
        if rest == "fleet" {
            return Some(KeyRef::Fleet);
        }
        let (kind, rest) = rest.split_once(':')?;
        match kind {
            "index" => Some(KeyRef::Index(rest)),
            "health" => Some(KeyRef::Health(rest)),
            "avail" => rest.split_once(':').map(|(m, p)| KeyRef::Avail(m, p)),
            _ => None,
        }
    }
}

/// A change event: the generation of a write and the logical keys it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The generation the write took.
    pub generation: u64,
    /// The logical keys written (or deleted).
    pub keys: Vec<String>,
}

impl ChangeEvent {
    /// Encodes as published: `<generation> <key> [<key>…]`.
    pub fn encode(&self) -> String {
        let mut s = self.generation.to_string();
        for k in &self.keys {
            s.push(' ');
            s.push_str(k);
        }
        s
    }

    /// Parses a published event.
    pub fn parse(payload: &str) -> Result<ChangeEvent, DecodeError> {
        let mut parts = payload.split(' ');
        let generation =
            parts
                .next()
                .and_then(|g| g.parse().ok())
                .ok_or_else(|| DecodeError::Invalid {
                    what: "change event",
                    offset: 0,
                    why: format!("{payload:?} does not start with a generation"),
                })?;
        Ok(ChangeEvent {
            generation,
            keys: parts.filter(|k| !k.is_empty()).map(str::to_owned).collect(),
        })
    }
}

/// Why bytes from the store could not be decoded. The store layer adds the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not one of our values at all.
    #[error("not a mirrorfleet value (bad magic bytes)")]
    Foreign,
    /// No value where the manifest says there is one.
    #[error("holds no string value (another type under our key, or deleted behind our back)")]
    Empty,
    /// Written by another schema version.
    #[error("written by schema version {found}, this build reads version {SCHEMA_VERSION}")]
    Version {
        /// The version found.
        found: u16,
    },
    /// A value of another kind than expected under this key.
    #[error("holds a {found:?} value where a {expected:?} value was expected")]
    WrongKind {
        /// What the key should hold.
        expected: Kind,
        /// What it holds.
        found: u8,
    },
    /// The value ends early.
    #[error("truncated while reading {what} at byte {offset}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where.
        offset: usize,
    },
    /// The checksum does not match.
    #[error("checksum mismatch: the value is corrupt")]
    Checksum,
    /// A field is out of range or malformed.
    #[error("invalid {what} at byte {offset}: {why}")]
    Invalid {
        /// What was being read.
        what: &'static str,
        /// Where.
        offset: usize,
        /// Why it is invalid.
        why: String,
    },
    /// A JSON body did not parse.
    #[error("invalid JSON body: {0}")]
    Json(String),
}

#[cfg(test)]
mod tests;
