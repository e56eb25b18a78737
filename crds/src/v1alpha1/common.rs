//! Types shared by several resources: conditions, locations, enums for continents, schemes
//! and address families.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::geo::Continent;

/// A condition on a resource's status, shaped as the Kubernetes API conventions describe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in PascalCase, e.g. `Ready`, `Healthy`, `Synced`, `Scanned`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds: `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A machine-readable PascalCase reason for the last transition, e.g. `ConnectRefused`.
    pub reason: String,
    /// A human-readable explanation of the last transition.
    #[serde(default)]
    pub message: String,
    /// When the condition last changed status (RFC 3339).
    pub last_transition_time: String,
    /// The `.metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status of a [`Condition`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell (yet).
    #[default]
    Unknown,
}

/// A download scheme a mirror can be reached with.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
    /// rsync (used for scans, never for downloads).
    Rsync,
    /// FTP.
    Ftp,
}

/// An IP address family.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// Where a server is, as declared in its spec. Anything left out is resolved from GeoIP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.latitude) == has(self.longitude)").message("give both latitude and longitude, or neither"))]
#[schemars(transform = super::cel::continent_of_country)]
pub struct GeoLocation {
    /// ISO 3166-1 alpha-2 country code, upper case (e.g. `DE`). This is the mirror's primary
    /// country: clients in it are preferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]{2}$"), transform = super::cel::country_code)]
    pub country: Option<String>,
    /// Continent code; derived from the country when left out; must be the country's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<Continent>,
    /// Latitude in decimal degrees (-90 to 90). Give both latitude and longitude, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -90.0, max = 90.0))]
    pub latitude: Option<f64>,
    /// Longitude in decimal degrees (-180 to 180). Give both latitude and longitude, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -180.0, max = 180.0))]
    pub longitude: Option<f64>,
}

/// A location as the operator resolved it (spec first, then GeoIP of the mirror's host).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedLocation {
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Continent code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<Continent>,
    /// Latitude in decimal degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude in decimal degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// Where the location came from: `Spec`, `GeoIP` or `CountryCentroid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}
