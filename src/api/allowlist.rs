//! `AccessAllowlist` and `AccessAllowlistShard`: an environment's published allowlist (what the firewall agents
//! enforce) and the mass-revocation hold's baseline, written by the controller only.
//!
//! Kinds of their own, not ConfigMaps: the built-in `edit` and `admin` roles may write every ConfigMap of a namespace,
//! and no role of the chart aggregates these kinds into them, so only the controller's role (and a cluster
//! administrator) can write them. The index is also signed (Ed25519, `crate::wire::signing`) over its whole content:
//! a set the controller did not produce is refused by every reader that checks the signature, even if someone with
//! rights to these kinds writes it. The format and its checks live in `crate::wire`.

use super::environment::FirewallPort;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The signed index of a published allowlist (or of the hold's baseline): the digest of the whole set, each shard
/// with its digest, the ports and destinations the agents filter, a serial that only grows, and the signature.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "access.jpki.dev",
    version = "v1alpha1",
    kind = "AccessAllowlist",
    plural = "accessallowlists",
    derive = "PartialEq",
    shortname = "aal",
    namespaced,
    category = "jpki",
    validation = kube::core::cel::Rule::new("self.spec.purpose != 'Enforce' || size(self.spec.ports) >= 1")
        .message("spec.ports: an allowlist to enforce names at least one port (without one, no traffic would be filtered)"),
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Purpose","type":"string","jsonPath":".spec.purpose"}"#,
    printcolumn = r#"{"name":"CIDRs","type":"integer","jsonPath":".spec.cidrCount"}"#,
    printcolumn = r#"{"name":"Serial","type":"integer","jsonPath":".spec.serial"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".spec.digest","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "An environment's published allowlist (or the mass-revocation hold's baseline): written and signed by the controller only."
)]
#[serde(rename_all = "camelCase")]
pub struct AccessAllowlistSpec {
    /// The AccessEnvironment (metadata.name) this set belongs to.
    #[schemars(length(min = 1, max = 63))]
    pub environment: String,
    pub purpose: AllowlistPurpose,
    /// Grows with every set the controller signs (milliseconds since the epoch, or one more than the previous
    /// serial): an agent never goes back to a set older than one it enforced, so an old signed set cannot be
    /// replayed.
    #[schemars(range(min = 0))]
    pub serial: i64,
    /// `sha256:` of the whole set's text (one CIDR a line, the shards' texts in order).
    #[schemars(length(max = 71))]
    pub digest: String,
    /// How many CIDRs the set holds, over all shards.
    #[schemars(range(min = 0))]
    pub cidr_count: i64,
    /// Registrations whose CIDRs the set holds (Enforce), or registrations that lost CIDRs since the baseline
    /// (HoldBaseline).
    #[schemars(range(min = 0))]
    pub registrations: i64,
    /// The shards in order, each with the digest of its text.
    #[schemars(length(max = 10000))]
    pub shards: Vec<ShardRef>,
    /// Destination ports the agents filter (the environment's spec.firewall.ports).
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub ports: Vec<FirewallPort>,
    /// Destinations whose forwarded traffic the agents judge (spec.firewall.forwardDestinations); empty: the
    /// agents judge only traffic to the node itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 43)))]
    pub forward_destinations: Vec<String>,
    /// The hold's bookkeeping (HoldBaseline only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldBookkeeping>,
    /// Ed25519 signature (base64) of the controller's key over everything above, the namespace included.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub signature: String,
}

/// What a signed set is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AllowlistPurpose {
    /// The set the firewall agents enforce.
    Enforce,
    /// The mass-revocation hold's baseline; read by the controller only.
    HoldBaseline,
}

/// One shard named by an index.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardRef {
    /// Name of the AccessAllowlistShard.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Digest (sha256) of the shard's CIDRs, checked by the agents.
    #[schemars(length(max = 71))]
    pub digest: String,
    /// How many CIDRs the shard holds.
    #[schemars(range(min = 0))]
    pub count: i64,
}

/// The mass-revocation hold's state, kept with its baseline (see `crate::planner::hold`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldBookkeeping {
    /// When the baseline was taken (RFC 3339, UTC).
    #[schemars(length(max = 32))]
    pub since: String,
    /// The digest held now, while a removal is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub holding: Option<String>,
}

/// One shard of a published set: CIDRs, one a line, in the canonical spelling. Its digest is in the signed index.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "access.jpki.dev",
    version = "v1alpha1",
    kind = "AccessAllowlistShard",
    plural = "accessallowlistshards",
    derive = "PartialEq",
    shortname = "aals",
    namespaced,
    category = "jpki",
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "One shard of an AccessAllowlist: CIDRs, one a line. Written by the controller only; its digest is in the signed index."
)]
#[serde(rename_all = "camelCase")]
pub struct AccessAllowlistShardSpec {
    /// The AccessEnvironment (metadata.name) whose allowlist this shard is part of.
    #[schemars(length(min = 1, max = 63))]
    pub environment: String,
    /// One CIDR a line (at most 10,000 lines of at most 43 characters).
    #[schemars(length(max = 450000))]
    pub cidrs: String,
}
