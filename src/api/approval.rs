//! `AccessApproval`: the 承認書 half of 「アクセス権登録申請書兼承認書」, an immutable record of J-LIS's decision on one
//! registration as it stood when decided.
//!
//! A decision is bound to exactly what was decided on: the registration's `uid` (so a registration deleted and filed
//! again with the same name and content is a new registration that no earlier decision covers) and the digest of a
//! full copy of its spec (which the planner recomputes). Decisions are ordered by the API server's
//! `metadata.creationTimestamp`, which no client can choose; `approvedAt` is what the approver wrote, for people.

use super::common::{Conditions, conditions_schema};
use super::registration::AccessRegistrationSpec;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// 承認書: J-LIS's decision on an AccessRegistration. The whole spec is immutable; a new decision is a new object.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "access.jpki.dev",
    version = "v1alpha1",
    kind = "AccessApproval",
    plural = "accessapprovals",
    namespaced,
    shortname = "aapr",
    shortname = "approval",
    category = "jpki",
    status = "AccessApprovalStatus",
    validation = kube::core::cel::Rule::new("self.spec == oldSelf.spec").message("spec is immutable: record a new AccessApproval instead"),
    printcolumn = r#"{"name":"Registration","type":"string","jsonPath":".spec.registrationRef"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"By","type":"string","jsonPath":".spec.approvedBy"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "承認書 (アクセス権登録申請書兼承認書の承認欄): J-LIS's immutable decision on one AccessRegistration."
)]
#[x_kube(validation = kube::core::cel::Rule::new(
    "self.decision != 'Approved' || has(self.approved)"
).message("an Approved decision must carry a copy of the approved content in spec.approved").field_path(".approved"))]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalSpec {
    /// Name of the AccessRegistration (same namespace) this decision is about.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    pub registration_ref: String,
    /// `metadata.uid` of that registration when it was decided on. A decision covers only that object: one filed
    /// again under the same name (a new uid) needs a decision of its own. `kubectl jpki approve` fills it in.
    #[schemars(length(min = 1, max = 64))]
    pub registration_uid: String,
    /// Approved or Rejected.
    pub decision: Decision,
    /// Digest of the registration's spec as decided on: `sha256:` and 64 lowercase hex digits over its canonical
    /// JSON. For an approval it must be the digest of `approved`, which the planner recomputes.
    #[schemars(length(max = 71), regex(pattern = "^sha256:[0-9a-f]{64}$"))]
    pub spec_digest: String,
    /// A full copy of the registration's spec as approved. Live access is this content narrowed by the
    /// registration's current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<AccessRegistrationSpec>,
    /// The user who recorded the decision; the chart's admission policy refuses any other value.
    #[schemars(length(min = 1, max = 253))]
    pub approved_by: String,
    /// When the approver says the decision was made (RFC 3339), for people. Decisions are ordered by the API
    /// server's `metadata.creationTimestamp` instead, which a client cannot choose.
    #[schemars(length(max = 64))]
    pub approved_at: String,
    /// Free text recorded with the decision (e.g. the reason of a rejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Decision {
    /// 承認.
    Approved,
    /// 却下: no access.
    Rejected,
}

/// Whether the controller takes the decision into account (condition `Accepted`), and if not, why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (metav1.Condition, one per type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}
