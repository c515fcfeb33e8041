//! `AccessRegistration`: one access-rights registration form, 「テスト環境アクセス権登録申請書兼承認書 (A-08-1)」 or
//! 「アクセス権登録申請書兼承認書 (A-11-2)」, with the provision-method choice of A-11-1.

use super::cidr_string::{CidrString, status_cidrs_schema};
use super::common::{Conditions, Environment, JstDate, ProvisionMethods, conditions_schema};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// アクセス権登録申請書 (A-08-1 for the test environment, A-11-2 for production, A-13 for changes).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "access.jpki.dev",
    version = "v1alpha1",
    kind = "AccessRegistration",
    plural = "accessregistrations",
    namespaced,
    shortname = "areg",
    shortname = "registration",
    category = "jpki",
    status = "AccessRegistrationStatus",
    validation = kube::core::cel::Rule::new(
        "!has(self.spec.supersedes) || self.spec.supersedes != self.metadata.name"
    ).message("a registration cannot supersede itself").field_path(".spec.supersedes"),
    printcolumn = r#"{"name":"Verifier","type":"string","jsonPath":".spec.verifierRef"}"#,
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"CIDRs","type":"integer","jsonPath":".status.effectiveCidrCount"}"#,
    printcolumn = r#"{"name":"Start","type":"string","jsonPath":".spec.accessStartDate"}"#,
    printcolumn = r#"{"name":"Approved","type":"string","jsonPath":".status.conditions[?(@.type==\"Approved\")].status"}"#,
    // Why it is not Ready (AwaitingApproval, Scheduled, Conflict, ...) and when J-LIS's setup is due.
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Due","type":"string","jsonPath":".status.setupDueDate"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "アクセス権登録申請書兼承認書 (A-11-2; テスト環境は A-08-1): the source networks an organisation asks to reach J-LIS's revocation-information services from."
)]
#[x_kube(validation = kube::core::cel::Rule::new(
    "self.environment != 'Production' || (has(self.officialSealAffixed) && self.officialSealAffixed)"
).message("a Production registration (A-11-2) must carry the official seal (役職印): set officialSealAffixed: true").field_path(".officialSealAffixed"))]
#[x_kube(validation = kube::core::cel::Rule::new(
    "self.environment != 'Production' || (has(self.provisionMethods) && has(self.provisionMethods.signing) && has(self.provisionMethods.userAuthentication))"
).message("a Production registration needs a provision method (A-11-1) for each certificate type: provisionMethods.signing and provisionMethods.userAuthentication (Crl, Ocsp or None)").field_path(".provisionMethods"))]
#[x_kube(validation = kube::core::cel::Rule::new(
    "!has(self.accessEndDate) || self.accessStartDate <= self.accessEndDate"
).message("accessEndDate must not be before accessStartDate").field_path(".accessEndDate"))]
#[serde(rename_all = "camelCase")]
pub struct AccessRegistrationSpec {
    /// Name of the SignatureVerifier filing this form; it must list this namespace. Immutable.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    #[x_kube(validation = kube::core::cel::Rule::new("self == oldSelf").message("verifierRef is immutable: file a new registration instead"))]
    pub verifier_ref: String,
    /// Test (A-08-1) or Production (A-11-2). Immutable.
    #[x_kube(validation = kube::core::cel::Rule::new("self == oldSelf").message("environment is immutable: file a new registration instead"))]
    pub environment: Environment,
    /// Why the form is filed: Initial, or an A-13 change (SystemConfigurationChange, MemberChange).
    #[serde(default)]
    pub reason: RegistrationReason,
    /// The registration of the same verifier and environment this one replaces (A-13). It steps down at this
    /// registration's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"))]
    pub supersedes: Option<String>,
    /// When J-LIS received the form; starts the setup lead time (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_on: Option<JstDate>,
    /// 接続方式.
    pub connection_method: ConnectionMethod,
    /// IPアドレス: source networks, IPv4 and IPv6, canonical CIDRs.
    #[schemars(length(min = 1, max = 256))]
    pub source_cidrs: Vec<CidrString>,
    /// アクセスを開始する日 (JST). Production: on or after the agreement's effective date (協定書 第13条).
    pub access_start_date: JstDate,
    /// Last day of access (JST), inclusive; access ends at 00:00 JST the day after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_end_date: Option<JstDate>,
    /// 情報提供方式 per certificate type (A-11-1). Required for Production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_methods: Option<ProvisionMethods>,
    /// 役職印: the form bears the official's seal. Required (true) for Production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub official_seal_affixed: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RegistrationReason {
    /// 初回.
    #[default]
    Initial,
    /// システム構成変更 (A-13).
    SystemConfigurationChange,
    /// 構成員変更 (A-13).
    MemberChange,
}

/// 接続方式.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum ConnectionMethod {
    Lgwan,
    /// LGPKI経由: also needs the LGWAN全国センター step (A-8).
    LgwanViaLgpki,
    Internet,
    IpVpn,
    LeasedLine,
}

/// Lifecycle phase of a registration, as the controller last decided it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
pub enum RegistrationPhase {
    Invalid,
    PendingApproval,
    Rejected,
    Scheduled,
    Active,
    Superseded,
    Expired,
    Conflict,
    /// No longer live, but its CIDRs stay published while a mass removal is held (the environment's `Held`).
    Held,
}

/// What the controller observed and decided about a registration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRegistrationStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RegistrationPhase>,
    /// Conditions (metav1.Condition, one per type): Ready (its reason says why, e.g. AwaitingApproval), Approved, Active, Reconciling, Stalled and, where agents are expected, Enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
    /// The CIDRs live now (approved content narrowed by the current spec), normalised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "status_cidrs_schema")]
    pub effective_cidrs: Vec<CidrString>,
    /// How many CIDRs are live (the length of effectiveCidrs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_cidr_count: Option<i64>,
    /// Widening changes in the spec that wait for a new approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_difference: Option<PendingDifference>,
    /// J-LIS setup due date: receipt + 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_due_date: Option<JstDate>,
    /// True when setupDueDate has passed (JST) and the registration is not Active yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_overdue: Option<bool>,
    /// The URL notice (URL通知書) ConfigMap in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub url_notice: Option<String>,
    /// Registrations of other verifiers that hold overlapping CIDRs in the same environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub conflicts: Vec<ConflictRef>,
    /// Next instant (RFC 3339, UTC) at which this registration's state changes by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub next_transition: Option<String>,
}

/// What the current spec asks for beyond what was approved.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingDifference {
    /// CIDRs of the spec not covered by the approved content: they wait for a new approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "status_cidrs_schema")]
    pub added_cidrs: Vec<CidrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier_start_date: Option<JstDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub later_end_date: Option<JstDate>,
    /// The spec removed the approved end date (open-ended access waits for a new approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date_removed: Option<bool>,
    /// The spec asks for other provision methods than approved (for example OCSP instead of CRL); the approved ones
    /// stay in force (and in the URL notice) until a new approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_methods: Option<ProvisionMethods>,
    /// The spec names a predecessor its approval does not: no takeover until a new approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub supersedes: Option<String>,
}

/// Another registration that claims overlapping CIDRs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictRef {
    /// Namespace of the other registration.
    #[schemars(length(max = 253))]
    pub namespace: String,
    /// Name of the other registration.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The SignatureVerifier of the other registration.
    #[schemars(length(max = 253))]
    pub verifier: String,
    /// The CIDRs of this registration that overlap the other one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "status_cidrs_schema")]
    pub cidrs: Vec<CidrString>,
    /// When the overlap in time begins (RFC 3339, UTC): the later of the two access starts, or now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub from: Option<String>,
}
