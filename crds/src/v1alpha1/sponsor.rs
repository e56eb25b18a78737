//! `Sponsor`: who hosts mirrors, shown to users on mirror lists.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::common::Condition;

/// An organisation that hosts mirrors. Its display name, URL and logo are shown publicly on
/// mirror lists; its contact is not.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mirrorfleet.io",
    version = "v1alpha1",
    kind = "Sponsor",
    plural = "sponsors",
    namespaced,
    status = "SponsorStatus",
    shortname = "spon",
    category = "mirrorfleet",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Mirrors", type_ = "integer", json_path = ".status.mirrors"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SponsorSpec {
    /// The sponsor's name as shown to users.
    #[schemars(length(min = 1, max = 256))]
    pub display_name: String,
    /// The sponsor's web site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s]+$"),
        transform = cel::no_unicode_space
    )]
    pub url: Option<String>,
    /// URL of the sponsor's logo (shown on mirror lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https://[^\s]+$"),
        transform = cel::no_unicode_space
    )]
    pub logo: Option<String>,
    /// A short public description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// Contact address for the fleet operators; never shown publicly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 254),
        regex(pattern = r"^[^@\s]+@[^@\s]+$"),
        transform = cel::no_unicode_space
    )]
    pub contact: Option<String>,
}

/// The observed state of a sponsor, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SponsorStatus {
    /// Conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of mirrors referring to this sponsor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<u32>,
    /// Redirects to this sponsor's mirrors this month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirects_this_month: Option<u64>,
    /// Bytes redirected to this sponsor's mirrors this month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_this_month: Option<u64>,
}
