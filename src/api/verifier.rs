//! `SignatureVerifier`: the organisation that verifies JPKI signatures (署名検証者 / 利用者証明検証者), with its
//! contacts (form A-11-3) and the dated milestones of the procedure (A-1 … A-10).

use super::common::{Conditions, JstDate, conditions_schema};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The check digit of a 全国地方公共団体コード, recomputed on the server (weights 6,5,4,3,2; mod 11).
/// The same rule lives in Rust in `crate::domain::lg_code`, which gives the better message.
pub const LG_CODE_CHECK_DIGIT_RULE: &str = "!self.matches('^[0-9]{6}$') || int(self.substring(5, 6)) == \
     (11 - (int(self.substring(0, 1)) * 6 + int(self.substring(1, 2)) * 5 + int(self.substring(2, 3)) * 4 \
     + int(self.substring(3, 4)) * 3 + int(self.substring(4, 5)) * 2) % 11) % 10";

/// The check digit of a 法人番号 (first of 13 digits), recomputed on the server. See `crate::domain::corporate_number`.
pub const CORPORATE_NUMBER_CHECK_DIGIT_RULE: &str = "!self.matches('^[0-9]{13}$') || int(self.substring(0, 1)) == \
     9 - (int(self.substring(1, 2)) * 2 + int(self.substring(2, 3)) + int(self.substring(3, 4)) * 2 \
     + int(self.substring(4, 5)) + int(self.substring(5, 6)) * 2 + int(self.substring(6, 7)) \
     + int(self.substring(7, 8)) * 2 + int(self.substring(8, 9)) + int(self.substring(9, 10)) * 2 \
     + int(self.substring(10, 11)) + int(self.substring(11, 12)) * 2 + int(self.substring(12, 13))) % 9";

/// 署名検証者: an organisation that verifies JPKI signatures or user authentications and files the access-rights
/// forms. Cluster-scoped; its registrations live in exactly one namespace (`spec.namespace`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "access.jpki.dev",
    version = "v1alpha1",
    kind = "SignatureVerifier",
    plural = "signatureverifiers",
    shortname = "sv",
    shortname = "verifier",
    category = "jpki",
    status = "SignatureVerifierStatus",
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.organizationType"}"#,
    printcolumn = r#"{"name":"LG Code","type":"string","jsonPath":".spec.lgCode"}"#,
    printcolumn = r#"{"name":"Corporate Number","type":"string","jsonPath":".spec.corporateNumber","priority":1}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.namespace"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "署名検証者 (signature verifier / 利用者証明検証者). Contacts follow 「署名検証者側連絡先の登録・変更連絡票 (A-11-3)」."
)]
#[x_kube(validation = kube::core::cel::Rule::new("self.organizationType != 'LocalGovernment' || has(self.lgCode)")
    .message("a LocalGovernment is identified by its 全国地方公共団体コード: set lgCode").field_path(".lgCode"))]
#[x_kube(validation = kube::core::cel::Rule::new("!has(self.lgCode) || self.organizationType == 'LocalGovernment'")
    .message("only a LocalGovernment has a 全国地方公共団体コード: remove lgCode").field_path(".lgCode"))]
#[x_kube(validation = kube::core::cel::Rule::new("self.organizationType == 'LocalGovernment' || has(self.corporateNumber)")
    .message("a company or other body is identified by its 法人番号 (13 digits): set corporateNumber").field_path(".corporateNumber"))]
#[serde(rename_all = "camelCase")]
pub struct SignatureVerifierSpec {
    /// 団体名 / 法人名: the organisation's name as on its forms.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// LocalGovernment (地方公共団体), PlatformOperator (プラットフォーム事業者) or Other.
    pub organization_type: OrganizationType,
    /// 全国地方公共団体コード: 6 digits, the last a check digit. Required for a LocalGovernment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{6}$"), length(max = 6))]
    #[x_kube(validation = kube::core::cel::Rule::new(LG_CODE_CHECK_DIGIT_RULE).message("check digit of the 全国地方公共団体コード is wrong"))]
    pub lg_code: Option<String>,
    /// 法人番号: 13 digits, the first a check digit over the other 12. Required for other organisation types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{13}$"), length(max = 13))]
    #[x_kube(validation = kube::core::cel::Rule::new(CORPORATE_NUMBER_CHECK_DIGIT_RULE).message("check digit of the 法人番号 is wrong"))]
    pub corporate_number: Option<String>,
    /// 署名検証者 and/or 利用者証明検証者.
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(merge_strategy = kube::core::cel::ListMerge::Set)]
    pub roles: Vec<VerifierRole>,
    /// The only namespace whose AccessRegistrations may name this verifier.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    /// 協定書: the agreement with J-LIS. Production access may start no earlier than its effective date (第13条).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<Agreement>,
    /// 第三者 (システム受託事業者): the contractor that builds the verifier's system (A-03-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_contractor: Option<SystemContractor>,
    /// 連絡先 (A-11-3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub contacts: Vec<Contact>,
    /// Dated milestones of the procedure (A-1 … A-10); all optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<ProcedureMilestones>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum OrganizationType {
    /// 地方公共団体 (identified by its 全国地方公共団体コード).
    LocalGovernment,
    /// プラットフォーム事業者 (minister-certified; identified by its 法人番号).
    PlatformOperator,
    /// Any other body listed in 第17条第1項 (identified by its 法人番号).
    Other,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
pub enum VerifierRole {
    /// 署名検証者: verifies signatures (署名用電子証明書).
    SignatureVerifier,
    /// 利用者証明検証者: verifies user authentication (利用者証明用電子証明書).
    UserAuthenticationVerifier,
}

/// 協定書.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    /// 効力発生日 (第13条).
    pub effective_date: JstDate,
}

/// システム受託事業者 (A-03-2).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemContractor {
    /// Name of the system contractor (受託事業者名).
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// 複製申請書兼第三者開示通知書 filed, so the technical specification may be disclosed to the contractor.
    #[serde(default)]
    pub third_party_disclosure_notified: bool,
}

/// One contact of form A-11-3.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// What this contact is for (A-11-3): the roles of the form.
    pub role: ContactRole,
    /// 部署名.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub department: Option<String>,
    /// 担当者名.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// 電話.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^[0-9+][0-9-]*$"))]
    pub phone: Option<String>,
    /// e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ContactRole {
    Primary,
    Secondary,
    Technical,
}

/// Dated milestones of 「署名検証者等失効情報提供手続フロー」.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcedureMilestones {
    /// A-1 申請手続開始依頼.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_requested_on: Option<JstDate>,
    /// A-3 / A-4 守秘義務誓約書 (A-03-3) received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidentiality_pledge_received_on: Option<JstDate>,
    /// テスト環境利用申請書 (A-03-4) received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_environment_application_received_on: Option<JstDate>,
    /// A-5 技術仕様等提供.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tech_spec_provided_on: Option<JstDate>,
    /// A-6 テスト用ICカード lent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_cards_lent_on: Option<JstDate>,
    /// A-8 LGWAN全国センター notified (LGPKI route only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lgwan_center_notified_on: Option<JstDate>,
    /// A-10 署名検証テスト completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_test_completed_on: Option<JstDate>,
    /// A-10 テスト用ICカード returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_cards_returned_on: Option<JstDate>,
}

/// What the controller observed about a verifier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureVerifierStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (metav1.Condition, one per type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}
