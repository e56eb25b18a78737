//! The compiled fleet: projects, mirrors, sponsors and rules as the redirector needs them —
//! locations resolved, defaults applied, and nothing private (no contacts, no notes), so that
//! no redirector can ever leak them. Stored as JSON under [`super::FLEET_KEY`].

use serde::{Deserialize, Serialize};

use super::DecodeError;
use super::envelope::{self, Kind};
use crate::geo::Continent;

/// The whole compiled fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    /// Projects, sorted by name.
    pub projects: Vec<ProjectState>,
    /// Mirrors, sorted by name.
    pub mirrors: Vec<MirrorState>,
    /// Sponsors, sorted by name.
    pub sponsors: Vec<SponsorState>,
    /// Region rules, highest priority first.
    pub rules: Vec<RuleState>,
}

impl FleetState {
    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode_json(Kind::Fleet, self)
    }

    /// Decodes from the store.
    pub fn decode(value: &[u8]) -> Result<FleetState, DecodeError> {
        envelope::decode_json(Kind::Fleet, value)
    }

    /// The project named `name`.
    pub fn project(&self, name: &str) -> Option<&ProjectState> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// The mirror named `name`.
    pub fn mirror(&self, name: &str) -> Option<&MirrorState> {
        self.mirrors.iter().find(|m| m.name == name)
    }
}

/// A hash algorithm of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashKind {
    /// SHA-256.
    Sha256,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
}

impl HashKind {
    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashKind::Sha256 => 32,
            HashKind::Sha1 => 20,
            HashKind::Md5 => 16,
        }
    }
}

/// A project as compiled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    /// Resource name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Path prefix, starting and ending with `/`.
    pub path_prefix: Option<String>,
    /// Host names routed to this project.
    pub hosts: Vec<String>,
    /// Hashes in the index.
    pub hashes: Vec<HashKind>,
    /// Fallbacks, in order.
    pub fallbacks: Vec<FallbackState>,
    /// Globs of mutable metadata.
    pub mutable: Vec<String>,
    /// Globs of immutable files (win over `mutable`).
    pub immutable: Vec<String>,
    /// Trace file, relative.
    pub trace_file: Option<String>,
    /// Canary file for health probes, relative.
    pub canary_file: Option<String>,
    /// Where the authoritative tree is.
    #[serde(default)]
    pub source: SourceState,
    /// Seconds between full scans of the source (`scan.sourceIntervalMinutes`); `None`: the
    /// indexer's default (5 minutes).
    #[serde(default)]
    pub source_interval_seconds: Option<u32>,
    /// Seconds between cheap rechecks of the source's mutable metadata, or of an upstream's
    /// trace file (`scan.metadataRecheckSeconds`); `None`: the default (5 s).
    #[serde(default)]
    pub metadata_recheck_seconds: Option<u32>,
    /// Seconds between scans of each mirror carrying the project
    /// (`scan.mirrorIntervalMinutes`); `None`: the scheduler's default (60 minutes).
    #[serde(default)]
    pub mirror_interval_seconds: Option<u32>,
    /// Whom to tell when the source's serial changes.
    #[serde(default)]
    pub push: PushState,
}

/// Where a project's new serials are announced, besides the default MQTT topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushState {
    /// The MQTT topic instead of `rsync/<origin host>/<project>`.
    #[serde(default)]
    pub topic: Option<String>,
    /// A URL that gets a POST with each new serial.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Where mirrors sync from (`spec.push.rsync`), if not the rsync source.
    #[serde(default)]
    pub rsync: Option<String>,
}

/// Where a project's authoritative tree is (exactly one of the three).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// A local directory.
    pub local: Option<String>,
    /// An rsync upstream URL.
    pub rsync: Option<String>,
    /// An HTTP(S) upstream URL.
    pub http: Option<String>,
    /// Checksum files published by the project: (glob, algorithm).
    pub checksum_files: Vec<(String, HashKind)>,
}

/// A fallback location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackState {
    /// Base URL ending with `/`.
    pub url: String,
    /// Country, if known.
    pub country: Option<String>,
    /// Continent, if known.
    pub continent: Option<Continent>,
}

/// Where a mirror is, resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocationState {
    /// ISO country code.
    pub country: Option<String>,
    /// Continent.
    pub continent: Option<Continent>,
    /// Latitude, degrees.
    pub latitude: Option<f64>,
    /// Longitude, degrees.
    pub longitude: Option<f64>,
}

/// Who may be sent to a mirror.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestrictionState {
    /// Only clients in the mirror's countries.
    pub country_only: bool,
    /// Only clients on the mirror's continent.
    pub continent_only: bool,
    /// Only clients in the mirror's ASNs.
    pub as_only: bool,
    /// Only clients in the mirror's networks.
    pub networks_only: bool,
    /// Countries never sent here.
    pub excluded_countries: Vec<String>,
}

/// One project on a mirror.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MirrorProjectState {
    /// Project name.
    pub project: String,
    /// HTTP base URL.
    pub http: Option<String>,
    /// HTTPS base URL.
    pub https: Option<String>,
    /// rsync URL (scans).
    pub rsync: Option<String>,
    /// FTP URL (scans).
    pub ftp: Option<String>,
    /// Sub-trees carried; empty for the whole project.
    pub paths: Vec<String>,
}

/// A mirror as compiled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MirrorState {
    /// Resource name.
    pub name: String,
    /// Sponsor name.
    pub sponsor: String,
    /// Receives traffic at all.
    pub enabled: bool,
    /// Relative weight.
    pub weight: u32,
    /// Bandwidth in Mbit/s, if declared.
    pub bandwidth_mbps: Option<u64>,
    /// Reachable over IPv4.
    pub ipv4: bool,
    /// Reachable over IPv6.
    pub ipv6: bool,
    /// Resolved location.
    pub location: LocationState,
    /// Additional countries served.
    pub additional_countries: Vec<String>,
    /// ASNs.
    pub asns: Vec<u32>,
    /// Preferred client networks (CIDRs).
    pub networks: Vec<String>,
    /// Restrictions.
    pub restrictions: RestrictionState,
    /// Maintenance windows as (start, end) Unix seconds.
    pub maintenance: Vec<(i64, i64)>,
    /// Projects carried.
    pub projects: Vec<MirrorProjectState>,
    /// Scan protocols to try, in order (`rsync`, `ftp`, `http`, `trace`); empty: every
    /// protocol a URL is given for.
    #[serde(default)]
    pub scan_protocols: Vec<String>,
    /// Deadline of one scan in seconds, if set.
    #[serde(default)]
    pub scan_timeout_seconds: Option<u32>,
    /// Seconds between scans of each project it carries (`scan.intervalMinutes`); `None`:
    /// the project's `mirror_interval_seconds`, else the scheduler's default.
    #[serde(default)]
    pub scan_interval_seconds: Option<u32>,
    /// Health check settings.
    #[serde(default)]
    pub health_check: HealthCheckState,
}

/// Health check settings as compiled (the defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckState {
    /// Seconds between probes of one (scheme, family).
    pub interval_seconds: u32,
    /// Seconds a probe may take.
    pub timeout_seconds: u32,
    /// Consecutive failures before the mirror leaves rotation.
    pub failure_threshold: u32,
    /// Consecutive successes before it comes back.
    pub success_threshold: u32,
    /// A redirect answer counts as healthy.
    pub allow_redirects: bool,
    /// Not probed at all (always healthy).
    pub disabled: bool,
}

impl Default for HealthCheckState {
    /// Detects a refused connection, a 5xx or a hang within about 10 seconds — two failed
    /// probes 3 seconds apart, each allowed 2 seconds — while one lost probe changes nothing.
    fn default() -> Self {
        HealthCheckState {
            interval_seconds: 3,
            timeout_seconds: 2,
            failure_threshold: 2,
            success_threshold: 3,
            allow_redirects: false,
            disabled: false,
        }
    }
}

/// A sponsor as shown publicly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SponsorState {
    /// Resource name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Web site.
    pub url: Option<String>,
    /// Logo URL.
    pub logo: Option<String>,
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Rank first.
    Prefer,
    /// Only these.
    Only,
    /// Never these.
    Exclude,
    /// Scale weights.
    Scale,
}

/// A region rule as compiled (sponsors expanded to their mirrors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// Resource name.
    pub name: String,
    /// Priority; higher first.
    pub priority: u32,
    /// Client countries.
    pub countries: Vec<String>,
    /// Client continents.
    pub continents: Vec<Continent>,
    /// Client ASNs.
    pub asns: Vec<u32>,
    /// Client networks.
    pub networks: Vec<String>,
    /// The action.
    pub action: Action,
    /// Mirrors the action applies to (sponsors' mirrors included).
    pub mirrors: Vec<String>,
    /// Factor for `Scale`.
    pub weight_factor: Option<f64>,
    /// Projects; empty for all.
    pub projects: Vec<String>,
}
