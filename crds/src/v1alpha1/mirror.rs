//! `Mirror`: one mirror server, the projects it carries and how to route clients to it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{AddressFamily, Condition, GeoLocation, ResolvedLocation, Scheme};

/// A mirror server. A mirror may carry only some projects (a "micro mirror"), each under its
/// own base URLs. Sponsors add mirrors by pull request; `mirrorfleet validate` checks them.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mirrorfleet.io",
    version = "v1alpha1",
    kind = "Mirror",
    plural = "mirrors",
    namespaced,
    status = "MirrorStatus",
    shortname = "mir",
    shortname = "mirror",
    category = "mirrorfleet",
    printcolumn(name = "Sponsor", type_ = "string", json_path = ".spec.sponsorRef"),
    printcolumn(
        name = "Country",
        type_ = "string",
        json_path = ".status.location.country"
    ),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.healthSummary"),
    printcolumn(
        name = "Projects",
        type_ = "string",
        json_path = ".status.projectsSummary"
    ),
    printcolumn(name = "Last Scan", type_ = "date", json_path = ".status.lastScan"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.restrictions) || !has(self.restrictions.asOnly) || !self.restrictions.asOnly || (has(self.asns) && size(self.asns) > 0)").message("restrictions.asOnly needs at least one entry in asns"))]
#[x_kube(validation = Rule::new("!has(self.restrictions) || !has(self.restrictions.networksOnly) || !self.restrictions.networksOnly || (has(self.networks) && size(self.networks) > 0)").message("restrictions.networksOnly needs at least one entry in networks"))]
#[x_kube(validation = Rule::new("!has(self.restrictions) || !has(self.restrictions.countryOnly) || !self.restrictions.countryOnly || (has(self.location) && has(self.location.country)) || (has(self.additionalCountries) && size(self.additionalCountries) > 0)").message("restrictions.countryOnly needs location.country or additionalCountries"))]
#[schemars(transform = cel::excluded_not_served, transform = cel::address_families)]
pub struct MirrorSpec {
    /// Name of the `Sponsor` (in the same namespace) that hosts this mirror.
    #[schemars(length(min = 1, max = 253))]
    pub sponsor_ref: String,
    /// The projects this mirror carries, each with its base URLs. A micro mirror lists only
    /// a few; a big mirror lists all.
    #[schemars(length(min = 1, max = 500))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["project".into()]))]
    pub projects: Vec<MirrorProject>,
    /// Where the mirror is. Left out (or partly left out), it is resolved from GeoIP of the
    /// mirror's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoLocation>,
    /// Other countries this mirror serves besides its own (ISO 3166-1 alpha-2). Clients there
    /// get a bonus, smaller than the mirror's own country.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // The maxLength (beyond what the pattern allows anyway) bounds the estimated cost of the
    // rule comparing this list with the other.
    #[schemars(
        length(max = 250),
        inner(length(max = 64), regex(pattern = r"^[A-Z]{2}$")),
        transform = cel::country_items
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub additional_countries: Vec<String>,
    /// Autonomous system numbers the mirror is reachable in. Clients in one of them prefer it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 4294967295u32)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub asns: Vec<u32>,
    /// Client networks (CIDRs) this mirror prefers, e.g. an ISP's customer ranges. Each is a
    /// network address (no host bits set), e.g. `198.51.100.0/24` or `2001:db8::/32`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1024),
        inner(length(min = 3, max = 43)),
        transform = cel::cidr_items
    )]
    pub networks: Vec<String>,
    /// Who may be sent to this mirror. By default, anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<Restrictions>,
    /// Relative weight when spreading load among comparable mirrors (1–1000, default 100).
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: u32,
    /// How much the mirror can serve; load is spread in proportion to weight × capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// Address families the mirror is reachable over. Clients are only sent to a mirror that
    /// is declared, and healthy, for their own family.
    #[serde(default = "default_address_families")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub address_families: Vec<AddressFamily>,
    /// Whether the mirror receives traffic at all. A disabled mirror is still scanned.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Maintenance windows: the mirror is drained (receives no new redirects) while one is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub maintenance: Vec<MaintenanceWindow>,
    /// Health check settings; defaults detect a dead mirror within about 10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Scan settings: how the operator learns which files the mirror holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<MirrorScan>,
    /// Contact address of the mirror's administrators. Used for notifications; never shown
    /// publicly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 254),
        regex(pattern = r"^[^@\s]+@[^@\s]+$"),
        transform = cel::no_unicode_space
    )]
    pub contact: Option<String>,
    /// Private notes for the fleet operators; never shown publicly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub notes: Option<String>,
}

fn default_weight() -> u32 {
    100
}

fn default_true() -> bool {
    true
}

fn default_address_families() -> Vec<AddressFamily> {
    vec![AddressFamily::Ipv4]
}

/// One project carried by a mirror, with the base URL of the project's tree per scheme.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.http) || has(self.https)").message("give at least one download URL: http or https"))]
#[schemars(transform = cel::no_credentials(&["http", "https", "rsync", "ftp"]))]
pub struct MirrorProject {
    /// Name of the `Project` (in the same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub project: String,
    /// Base URL over plain HTTP; must start with `http://` and end with `/`. Like every URL
    /// here: a host (and port) right after `://`, no credentials, query, fragment or backslash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^http://[^\s]+/$"),
        transform = cel::special_url_in_long_list
    )]
    pub http: Option<String>,
    /// Base URL over HTTPS; must start with `https://` and end with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https://[^\s]+/$"),
        transform = cel::special_url_in_long_list
    )]
    pub https: Option<String>,
    /// rsync URL of the same tree, used for scans; must start with `rsync://` and end with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^rsync://[^\s]+/$"),
        transform = cel::rsync_url_in_long_list
    )]
    pub rsync: Option<String>,
    /// FTP URL of the same tree, used for scans; must start with `ftp://` and end with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^ftp://[^\s]+/$"),
        transform = cel::special_url_in_long_list
    )]
    pub ftp: Option<String>,
    /// Only these sub-trees of the project are carried (path prefixes relative to the
    /// project root, e.g. `releases/`). Empty means the whole project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    pub paths: Vec<String>,
}

/// Who may be sent to a mirror.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel::one_area_restriction)]
pub struct Restrictions {
    /// Only clients in the mirror's country or additional countries.
    #[serde(default)]
    pub country_only: bool,
    /// Only clients on the mirror's continent.
    #[serde(default)]
    pub continent_only: bool,
    /// Only clients in one of the mirror's ASNs.
    #[serde(default)]
    pub as_only: bool,
    /// Only clients inside one of the mirror's networks.
    #[serde(default)]
    pub networks_only: bool,
    /// Clients in these countries are never sent here (ISO 3166-1 alpha-2); not the mirror's
    /// own country nor one of its additional countries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // The maxLength (beyond what the pattern allows anyway) bounds the estimated cost of the
    // rule comparing this list with the other.
    #[schemars(
        length(max = 250),
        inner(length(max = 64), regex(pattern = r"^[A-Z]{2}$")),
        transform = cel::country_items
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub excluded_countries: Vec<String>,
}

/// How much a mirror can serve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Uplink bandwidth available to the fleet, in megabits per second (1–10,000,000).
    #[schemars(range(min = 1, max = 10000000))]
    pub bandwidth_mbps: u64,
}

/// A time window during which a mirror receives no new redirects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("timestamp(self.end) > timestamp(self.start)").message("end must be after start"))]
pub struct MaintenanceWindow {
    /// Start of the window (RFC 3339, e.g. `2026-12-01T02:00:00Z`).
    #[schemars(regex(
        pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
    ))]
    pub start: String,
    /// End of the window (RFC 3339); must be after `start`.
    #[schemars(regex(
        pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
    ))]
    pub end: String,
    /// Why, shown to fleet operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// Health check settings for one mirror.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.timeoutSeconds) || !has(self.intervalSeconds) || self.timeoutSeconds <= self.intervalSeconds").message("timeoutSeconds must not exceed intervalSeconds"))]
pub struct HealthCheck {
    /// Seconds between probes of one (scheme, address family) (1–3600, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: Option<u32>,
    /// Seconds a probe may take before it counts as failed (1–60, default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<u32>,
    /// Consecutive failures before the mirror is taken out of rotation (1–20, default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub failure_threshold: Option<u32>,
    /// Consecutive successes before it is put back (1–20, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 20))]
    pub success_threshold: Option<u32>,
    /// Whether a redirect answer to a probe counts as healthy (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_redirects: Option<bool>,
    /// Turn health checks off (the mirror is then always considered healthy). Default false.
    #[serde(default)]
    pub disabled: bool,
}

/// The protocol used to scan a mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScanProtocol {
    /// An rsync listing (the preferred way).
    Rsync,
    /// An FTP listing (MLSD, or LIST).
    Ftp,
    /// A crawl of HTTP autoindex pages.
    Http,
    /// Only the project's trace file is read: the mirror is assumed complete as of its trace.
    Trace,
}

/// How a mirror is scanned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorScan {
    /// Minutes between scans (5–10080, default from the project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 10080))]
    pub interval_minutes: Option<u32>,
    /// Protocols to try, in order. Default: rsync, ftp, http — whichever URLs are given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub protocols: Vec<ScanProtocol>,
    /// Deadline of one scan in seconds (10–86400, default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub timeout_seconds: Option<u32>,
}

/// The observed state of a mirror, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStatus {
    /// Conditions: `Ready` (spec valid and compiled), `Healthy`, `Synced`, `Scanned`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The location used for routing (spec, else GeoIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<ResolvedLocation>,
    /// One-word health for `kubectl get`: `Healthy`, `Degraded`, `Down`, `Disabled`, `Draining`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_summary: Option<String>,
    /// Health per scheme and address family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthEntry>,
    /// Short per-project summary for `kubectl get`, e.g. `3/3 synced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects_summary: Option<String>,
    /// What the last scans found, per project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<MirrorProjectStatus>,
    /// When the last scan of any project finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<String>,
    /// Traffic this mirror was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
}

/// Health of one (scheme, address family) of a mirror.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthEntry {
    /// The scheme probed.
    pub scheme: Scheme,
    /// The address family probed.
    pub family: AddressFamily,
    /// Whether this scheme and family receive traffic.
    pub healthy: bool,
    /// PascalCase reason of the last change, e.g. `ConnectRefused`, `Timeout`, `HttpStatus`.
    pub reason: String,
    /// Details of the last probe result.
    #[serde(default)]
    pub message: String,
    /// Since when this state holds (RFC 3339).
    pub since: String,
}

/// What the scans of one project on a mirror found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorProjectStatus {
    /// The project.
    pub project: String,
    /// Files present with the right size.
    pub files: u64,
    /// Bytes in those files.
    pub bytes: u64,
    /// Files of the source index the mirror does not have.
    pub missing: u64,
    /// Files the mirror has with another size (or mtime).
    pub mismatched: u64,
    /// When the last successful scan finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<String>,
    /// The mirror's last sync, from its trace file (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    /// Seconds the mirror lags behind the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_lag_seconds: Option<i64>,
}

/// Traffic counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Redirects to this mirror today (UTC).
    pub redirects_today: u64,
    /// Redirects this month (UTC).
    pub redirects_this_month: u64,
    /// Bytes of the files redirected this month (assuming complete downloads).
    pub bytes_this_month: u64,
}
