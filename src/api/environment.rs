//! `AccessEnvironment`: J-LIS's side of アクセス権設定 (A-9 for the test environment, A-12 for production): where the
//! revocation services run, how they are exposed, and the policy every registration is held to.

use super::common::{Conditions, Environment, ProvisionMethod, conditions_schema};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// アクセス権設定 (A-9 / A-12): one per environment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "access.jpki.dev",
    version = "v1alpha1",
    kind = "AccessEnvironment",
    plural = "accessenvironments",
    shortname = "aenv",
    category = "jpki",
    status = "AccessEnvironmentStatus",
    // The name becomes part of object names (jpki-<name>-allow-<n>) and of the nftables table, whose names are
    // limited: keep it a short DNS label so that two environments never map to the same table.
    validation = kube::core::cel::Rule::new("self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name: an AccessEnvironment name is a DNS label of at most 40 characters"),
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.serviceNamespace"}"#,
    printcolumn = r#"{"name":"Live","type":"integer","jsonPath":".status.liveRegistrations"}"#,
    printcolumn = r#"{"name":"CIDRs","type":"integer","jsonPath":".status.cidrCount"}"#,
    printcolumn = r#"{"name":"Agents","type":"string","jsonPath":".status.agentsInSync"}"#,
    // Health at a glance: a held environment (a mass removal waiting for a person) must not look normal.
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Held","type":"string","jsonPath":".status.conditions[?(@.type==\"Held\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "アクセス権設定 (A-9 テスト環境 / A-12 本番環境): where J-LIS's revocation services run and the policy for access to them."
)]
#[x_kube(validation = kube::core::cel::Rule::new(
    "!has(self.exposure) || !(has(self.exposure.ingressClassName) && has(self.exposure.gateway))"
).message("exposure: name either ingressClassName or gateway, not both").field_path(".exposure"))]
#[serde(rename_all = "camelCase")]
pub struct AccessEnvironmentSpec {
    /// Test or Production. Immutable.
    #[x_kube(validation = kube::core::cel::Rule::new("self == oldSelf").message("environment is immutable"))]
    pub environment: Environment,
    /// Namespace of the revocation services (OCSP responder, CRL distribution).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub service_namespace: String,
    /// Pods of the revocation services that the generated NetworkPolicies select.
    pub pod_selector: PodSelector,
    /// The endpoints told to verifiers in the URL notice (URL通知書).
    #[schemars(length(min = 1, max = 8))]
    pub endpoints: Vec<Endpoint>,
    /// How endpoints are exposed: an Ingress class, or a Gateway API parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Exposure>,
    #[serde(default)]
    pub policy: EnvironmentPolicy,
    /// Host firewall (nftables) agents on edge nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Firewall>,
}

/// A label selector with `matchLabels` only (bounded, so CEL cost stays low).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    /// Labels that every selected object must carry (at most 16).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 16))]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::cel::Rule::new("self.provisionMethod != 'None'")
    .message("an endpoint serves Crl or Ocsp").field_path(".provisionMethod"))]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Short name, used in generated object names.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Which provision method this endpoint serves (Crl or Ocsp).
    pub provision_method: ProvisionMethod,
    /// The Service in serviceNamespace that serves this endpoint.
    pub service: ServiceRef,
    /// Host name told to verifiers.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub host: String,
    /// Path prefix, starting with `/`.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 256), regex(pattern = "^/"))]
    pub path: String,
}

fn default_path() -> String {
    "/".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service port the Ingress or HTTPRoute sends to.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The port the pods listen on, which the NetworkPolicies open (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// Expose each endpoint through an Ingress of this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub ingress_class_name: Option<String>,
    /// Expose each endpoint through a Gateway API HTTPRoute attached to this Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway (default: the route's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// The Gateway's listener to attach to (default: every listener that allows the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub section_name: Option<String>,
}

/// What every registration of this environment is held to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentPolicy {
    /// Narrowest IPv4 prefix length allowed, i.e. no CIDR broader than this (default 24).
    #[serde(default = "default_min_prefix_v4")]
    #[schemars(range(min = 8, max = 32))]
    pub min_prefix_length_v4: i32,
    /// Narrowest IPv6 prefix length allowed (default 48).
    #[serde(default = "default_min_prefix_v6")]
    #[schemars(range(min = 16, max = 128))]
    pub min_prefix_length_v6: i32,
    /// Production access needs a completed verification test (A-10) on record.
    #[serde(default)]
    pub require_verification_test: bool,
    /// How many CIDRs one generated NetworkPolicy or allowlist shard holds at most (default 5000).
    #[serde(default = "default_max_cidrs_per_object")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_cidrs_per_object: i32,
    /// Hold a sudden mass removal until a person confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_revocation_hold: Option<MassRevocationHold>,
}

impl Default for EnvironmentPolicy {
    fn default() -> Self {
        EnvironmentPolicy {
            min_prefix_length_v4: default_min_prefix_v4(),
            min_prefix_length_v6: default_min_prefix_v6(),
            require_verification_test: false,
            max_cidrs_per_object: default_max_cidrs_per_object(),
            mass_revocation_hold: None,
        }
    }
}

fn default_min_prefix_v4() -> i32 {
    24
}
fn default_min_prefix_v6() -> i32 {
    48
}
fn default_max_cidrs_per_object() -> i32 {
    5000
}

/// Removals are counted against a baseline: the set a person last released (or, with `windowHours`, the set
/// published at the start of the current window). Once the CIDRs removed since then reach `percent` % of the
/// baseline and at least `minCidrs`, from at least two registrations, the removal is held until a person confirms
/// it. Additions never offset removals, so a mass removal cannot be sliced into small ones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MassRevocationHold {
    /// Share of the baseline's CIDRs whose removal is held.
    #[schemars(range(min = 1, max = 100))]
    pub percent: i32,
    /// Fewer removed CIDRs than this are never held.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000000))]
    pub min_cidrs: i32,
    /// A rolling window: every this many hours without a hold, the baseline becomes the set published then.
    /// Unset: the baseline changes only when a person releases a hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8760))]
    pub window_hours: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Firewall {
    /// Namespace of the signed allowlist (AccessAllowlist and its shards) the agents read, and of their heartbeats.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub allowlist_namespace: String,
    /// Destination ports the agents filter; other traffic is not their business.
    #[schemars(length(min = 1, max = 16))]
    pub ports: Vec<FirewallPort>,
    /// Destinations (CIDRs, canonical) whose forwarded traffic the agents judge on these ports: the services'
    /// addresses behind an edge node that routes to them. Empty: the agents judge only traffic to the node itself,
    /// and nothing the node forwards (its pods' own outgoing HTTPS, other services) is touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub forward_destinations: Vec<super::CidrString>,
    /// The nodes that must run an agent of this environment (their labels): each is expected to report, and one
    /// that does not is counted as missing. Unset: no node is expected (the agents that report are counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_nodes: Option<PodSelector>,
    /// An agent whose heartbeat (its Lease) is older than this is stale (default 60 s).
    #[serde(default = "default_stale_after_seconds")]
    #[schemars(range(min = 5, max = 3600))]
    pub stale_after_seconds: i32,
}

fn default_stale_after_seconds() -> i32 {
    60
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirewallPort {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Destination port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessEnvironmentStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (metav1.Condition, one per type): Ready, Held, Stalled, Reconciling, AgentsInSync, AllowlistIntact, ForeignNetworkPolicies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
    /// Registrations whose access is live now in this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_registrations: Option<i64>,
    /// CIDRs in the published allowlist (aggregated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_count: Option<i64>,
    /// Digest (sha256) of the published allowlist, as the agents report what they enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub allowlist_digest: Option<String>,
    /// Firewall agents that applied the current digest, as "in sync/total" (e.g. "3/3"); the total is the expected
    /// nodes where the environment names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub agents_in_sync: Option<String>,
    /// The firewall agents in detail: expected, in sync, stale, missing, not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentsStatus>,
    /// NetworkPolicies of the services' namespace that may select the services' pods and are not the controller's:
    /// they add to what ours allow (NetworkPolicies are additive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub foreign_network_policies: Vec<String>,
}

/// The environment's firewall agents, from their heartbeats (Leases) and the nodes expected to run one. Node lists
/// are cut at 32 names; the counts are whole.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentsStatus {
    /// Nodes expected to run an agent (spec.firewall.expectedNodes); absent when none are named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<i64>,
    /// Agents with a fresh heartbeat.
    pub reporting: i64,
    /// Fresh agents that enforce the current digest and report no error.
    pub in_sync: i64,
    /// Agents whose heartbeat is older than spec.firewall.staleAfterSeconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub stale: Vec<String>,
    /// Expected nodes without any heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub missing: Vec<String>,
    /// Fresh agents that report an error (nftables missing or failing, a refused allowlist) or enforce another
    /// digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub behind: Vec<String>,
    /// How many agents are stale (stale lists at most 32 of them).
    #[serde(default)]
    pub stale_count: i64,
    /// How many expected nodes have no heartbeat (missing lists at most 32 of them).
    #[serde(default)]
    pub missing_count: i64,
    /// How many agents are behind (behind lists at most 32 of them).
    #[serde(default)]
    pub behind_count: i64,
}
