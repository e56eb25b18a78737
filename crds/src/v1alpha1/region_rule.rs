//! `RegionRule`: routing policy beyond geography.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::{Condition, Continent};

/// A routing policy: clients matching `match` are steered by `action` towards (or away from)
/// the listed mirrors and sponsors' mirrors. Rules apply in order of descending `priority`.
/// Example: clients in AS 64500 are served only by that ISP's micro mirror.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mirrorfleet.io",
    version = "v1alpha1",
    kind = "RegionRule",
    plural = "regionrules",
    namespaced,
    status = "RegionRuleStatus",
    shortname = "rr",
    category = "mirrorfleet",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.mirrors) ? size(self.mirrors) : 0) + (has(self.sponsors) ? size(self.sponsors) : 0) > 0").message("name at least one mirror or sponsor"))]
#[x_kube(validation = Rule::new("(self.action == 'Scale') == has(self.weightFactor)").message("weightFactor is required with action Scale and not allowed otherwise"))]
pub struct RegionRuleSpec {
    /// Higher priorities apply first (0–1000, default 100).
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
    /// Why the rule exists, for the next maintainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Which clients the rule applies to. A client matches when it matches every field given.
    #[serde(rename = "match")]
    pub client_match: ClientMatch,
    /// What the rule does with the listed mirrors.
    pub action: RuleAction,
    /// Mirrors the action applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub mirrors: Vec<String>,
    /// Sponsors whose mirrors the action applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub sponsors: Vec<String>,
    /// With action `Scale`: the factor applied to the mirrors' weights (0.01–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 100.0))]
    pub weight_factor: Option<f64>,
    /// Only requests for these projects; empty means all projects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub projects: Vec<String>,
}

fn default_priority() -> u32 {
    100
}

/// Which clients a rule applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.countries) ? size(self.countries) : 0) + (has(self.continents) ? size(self.continents) : 0) + (has(self.asns) ? size(self.asns) : 0) + (has(self.networks) ? size(self.networks) : 0) > 0").message("match at least one of countries, continents, asns or networks"))]
pub struct ClientMatch {
    /// Client countries (ISO 3166-1 alpha-2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 250),
        inner(regex(pattern = r"^[A-Z]{2}$")),
        transform = cel::country_items
    )]
    pub countries: Vec<String>,
    /// Client continents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub continents: Vec<Continent>,
    /// Client autonomous system numbers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(range(min = 1, max = 4294967295u32)))]
    pub asns: Vec<u32>,
    /// Client networks (CIDRs), each a network address (no host bits set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 4096),
        inner(length(min = 3, max = 43)),
        transform = cel::cidr_items
    )]
    pub networks: Vec<String>,
}

/// What a rule does with its mirrors for matching clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RuleAction {
    /// Rank the listed mirrors above all others (others remain as alternatives).
    Prefer,
    /// Use only the listed mirrors (fall back to the project's fallbacks if none qualifies).
    Only,
    /// Never use the listed mirrors.
    Exclude,
    /// Multiply the listed mirrors' weights by `weightFactor`.
    Scale,
}

/// The observed state of a region rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionRuleStatus {
    /// Conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
