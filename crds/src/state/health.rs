//! A mirror's health per scheme and address family, written by the health checker the moment
//! it changes, so that every redirector stops using a failed mirror within about a second.

use serde::{Deserialize, Serialize};

use super::DecodeError;
use super::envelope::{self, Kind};

/// The scheme probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeScheme {
    /// HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// Health of one (scheme, family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// The scheme.
    pub scheme: ProbeScheme,
    /// The family.
    pub family: Family,
    /// Whether it receives traffic.
    pub up: bool,
    /// PascalCase reason of the last change (`Ok`, `ConnectRefused`, `Timeout`, …).
    pub reason: String,
    /// Since when (Unix seconds).
    pub since: i64,
}

/// A mirror's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorHealth {
    /// The mirror.
    pub mirror: String,
    /// One entry per (scheme, family) probed. A pair without an entry has not been probed yet.
    pub entries: Vec<HealthState>,
}

impl MirrorHealth {
    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode_json(Kind::Health, self)
    }

    /// Decodes from the store.
    pub fn decode(value: &[u8]) -> Result<MirrorHealth, DecodeError> {
        envelope::decode_json(Kind::Health, value)
    }

    /// The state of (scheme, family), if probed.
    pub fn get(&self, scheme: ProbeScheme, family: Family) -> Option<&HealthState> {
        self.entries
            .iter()
            .find(|e| e.scheme == scheme && e.family == family)
    }
}
