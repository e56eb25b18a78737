//! `Project`: a file tree the fleet distributes, how requests reach it, and where its
//! authoritative copy lives.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{Condition, Continent};

/// A project whose files the fleet distributes (e.g. `fedora`, `videolan`). Requests are routed
/// to it by path prefix and/or host name; its source is the authoritative copy that scans
/// compare mirrors against.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mirrorfleet.io",
    version = "v1alpha1",
    kind = "Project",
    plural = "projects",
    namespaced,
    status = "ProjectStatus",
    shortname = "proj",
    category = "mirrorfleet",
    printcolumn(
        name = "Prefix",
        type_ = "string",
        json_path = ".spec.routing.pathPrefix"
    ),
    printcolumn(name = "Files", type_ = "integer", json_path = ".status.files"),
    printcolumn(name = "Serial", type_ = "string", json_path = ".status.serial"),
    printcolumn(name = "Last Scan", type_ = "date", json_path = ".status.lastScan"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// A human-readable name, e.g. `Fedora Project`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// How requests are routed to this project.
    pub routing: Routing,
    /// The authoritative copy of the project's tree.
    pub source: Source,
    /// Hashes computed for every file and served as checksums, `Digest` and metalink
    /// (default: sha256).
    #[serde(default = "default_hashes")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub hashes: Vec<HashAlgorithm>,
    /// Where to send clients when no mirror qualifies (usually the origin). Tried in order of
    /// proximity when a country or continent is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub fallbacks: Vec<Fallback>,
    /// Scan schedule of the source and of the mirrors carrying this project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ProjectScan>,
    /// Path (relative to the project root) of a trace or timestamp file that the origin
    /// rewrites on every update, e.g. `project/trace/master` (Debian) or `TIME`. Used to
    /// measure how far behind each mirror is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^/]"))]
    pub trace_file: Option<String>,
    /// A small file every mirror carrying the whole project has, probed by health checks
    /// (relative path). Default: the trace file, else a file picked from the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^/]"))]
    pub canary_file: Option<String>,
    /// Which files are immutable and which are metadata rewritten in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_classes: Option<PathClasses>,
    /// Push notifications to mirrors when the source changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
}

fn default_hashes() -> Vec<HashAlgorithm> {
    vec![HashAlgorithm::Sha256]
}

/// How requests reach a project: a path prefix on the shared host, host names of its own,
/// or both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.pathPrefix) || (has(self.hosts) && size(self.hosts) > 0)").message("give a pathPrefix, hosts, or both"))]
pub struct Routing {
    /// URL path prefix, starting and ending with `/`, e.g. `/fedora/`. Requests under it are
    /// resolved against this project's index with the prefix removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^/([A-Za-z0-9._~-]+/)*$")
    )]
    pub path_prefix: Option<String>,
    /// Host names served entirely by this project, e.g. `download.videolan.org`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(regex(
            pattern = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
        ))
    )]
    pub hosts: Vec<String>,
}

/// Where the authoritative copy of a project lives. Give exactly one of `local`, `rsync`
/// or `http`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.local) ? 1 : 0) + (has(self.rsync) ? 1 : 0) + (has(self.http) ? 1 : 0) == 1").message("give exactly one of local, rsync or http"))]
#[x_kube(validation = Rule::new("!has(self.volumeClaim) || has(self.local)").message("volumeClaim holds a local source: give it only with local"))]
#[schemars(transform = cel::no_credentials(&["rsync", "http"]))]
pub struct Source {
    /// An absolute directory holding the tree, mounted into scan jobs (or local to
    /// `mirrorfleet standalone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^/"))]
    pub local: Option<String>,
    /// In a cluster: the PersistentVolumeClaim holding the `local` tree, mounted read-only at
    /// that path in the source scan Jobs. Without it the operator cannot index a local source
    /// (the Project's status says so); only with `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub volume_claim: Option<String>,
    /// An rsync URL of the origin (`rsync://host/module/path/`): its listing gives paths,
    /// sizes and mtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^rsync://[^\s]+/$"),
        transform = cel::rsync_url
    )]
    pub rsync: Option<String>,
    /// An HTTP(S) URL of the origin's tree, crawled through its autoindex pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s]+/$"),
        transform = cel::special_url
    )]
    pub http: Option<String>,
    /// Checksum files the project publishes (e.g. `SHA256SUMS`), used for hashes when the
    /// files themselves are not on local disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub checksum_files: Vec<ChecksumFile>,
}

/// Which kind of source a [`Source`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A local directory.
    Local,
    /// An rsync upstream.
    Rsync,
    /// An HTTP upstream.
    Http,
}

impl Source {
    /// The kind of source, or `None` when not exactly one is given (a validation error).
    pub fn kind(&self) -> Option<SourceKind> {
        match (&self.local, &self.rsync, &self.http) {
            (Some(_), None, None) => Some(SourceKind::Local),
            (None, Some(_), None) => Some(SourceKind::Rsync),
            (None, None, Some(_)) => Some(SourceKind::Http),
            _ => None,
        }
    }
}

/// A checksum file published by the project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChecksumFile {
    /// A glob of checksum files relative to the project root, e.g. `**/SHA256SUMS`.
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: String,
    /// The algorithm of the sums in those files.
    pub algorithm: HashAlgorithm,
}

/// A hash algorithm.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-256 (the default).
    Sha256,
    /// SHA-1 (legacy clients).
    Sha1,
    /// MD5 (legacy clients).
    Md5,
}

/// A fallback download location (usually the origin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    transform = cel::continent_of_country,
    transform = cel::no_credentials(&["url"])
)]
pub struct Fallback {
    /// Base URL of the project's tree, ending with `/`.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s]+/$"),
        transform = cel::special_url
    )]
    pub url: String,
    /// Country of the fallback (ISO 3166-1 alpha-2), to prefer it for nearby clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]{2}$"), transform = cel::country_code)]
    pub country: Option<String>,
    /// Continent of the fallback; must be the country's when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<Continent>,
}

/// Scan schedule of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectScan {
    /// Minutes between full scans of the source (1–1440, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1440))]
    pub source_interval_minutes: Option<u32>,
    /// Minutes between scans of each mirror carrying the project (5–10080, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 10080))]
    pub mirror_interval_minutes: Option<u32>,
    /// Seconds between cheap re-checks of mutable metadata files on the source (1–600,
    /// default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub metadata_recheck_seconds: Option<u32>,
}

/// Path classes: globs relative to the project root. Immutable files go to any mirror holding
/// the right size; mutable metadata only to mirrors proven to hold the current version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathClasses {
    /// Globs of metadata rewritten in place, e.g. `**/repomd.xml`, `dists/*/InRelease`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    pub mutable: Vec<String>,
    /// Globs of files that never change once published, e.g. `pool/**`, `**/*.iso`. Files in
    /// neither class are treated as immutable too; listing them documents intent and wins over
    /// `mutable` when both match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    pub immutable: Vec<String>,
}

/// Push notifications for a project, and where the mirrors it notifies sync from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel::no_credentials(&["rsync"]))]
pub struct Push {
    /// MQTT topic on which "project updated" is published, compatible with `mqtt-exec`
    /// subscribers, e.g. `mirrors/fedora/updated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[^#+\s]+$"),
        transform = cel::no_unicode_space
    )]
    pub topic: Option<String>,
    /// A webhook URL called with the new serial, as an alternative to MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s]+$"),
        transform = cel::no_unicode_space
    )]
    pub webhook: Option<String>,
    /// Where mirrors sync from (`rsync://hub/module/`), for `mirrorfleet agent` on their
    /// nodes; default: the rsync source, if the source is one. Give it for a local or HTTP
    /// source whose tree the hub also serves over rsync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^rsync://[^\s]+/$"),
        transform = cel::rsync_url
    )]
    pub rsync: Option<String>,
}

/// The observed state of a project, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// Conditions: `Ready` (spec valid and compiled), `Scanned` (an index exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Files in the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Bytes in the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The source serial: changes whenever the tree changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The state generation of the index in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_generation: Option<u64>,
    /// When the last source scan finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<String>,
}
