//! Types shared by the four resources: environments, provision methods, dates, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// API group of every resource of this operator.
pub const GROUP: &str = "access.jpki.dev";
/// The one served (and stored) version.
pub const VERSION: &str = "v1alpha1";

/// テスト環境 or 本番環境. Test access is registered on form A-08-1, production on A-11-2.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum Environment {
    /// テスト環境 (form A-08-1).
    Test,
    /// 本番環境 (form A-11-2).
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Test => "Test",
            Environment::Production => "Production",
        }
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 情報提供方式 (form A-11-1), chosen per certificate type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum ProvisionMethod {
    /// CRL提供方式: the full revocation list, updated once a day.
    Crl,
    /// OCSPレスポンダ方式: one query per certificate, data refreshed every 15 minutes.
    Ocsp,
    /// This certificate type is not verified, so no revocation information is provided for it.
    None,
}

/// 情報提供方式の選択 (A-11-1): the provision method per certificate type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionMethods {
    /// 署名用電子証明書: the method for signing certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<ProvisionMethod>,
    /// 利用者証明用電子証明書: the method for user-authentication certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_authentication: Option<ProvisionMethod>,
}

/// A calendar date in Japan (JST, UTC+9), written `YYYY-MM-DD`. Kept as the string the user wrote, so the
/// object round-trips unchanged; `crate::domain::date` parses it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct JstDate(pub String);

impl JstDate {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for JstDate {
    fn from(s: &str) -> Self {
        JstDate(s.to_string())
    }
}

impl std::fmt::Display for JstDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for JstDate {
    fn schema_name() -> Cow<'static, str> {
        "JstDate".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date",
            "maxLength": 10,
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "description": "A calendar date in Japan (JST), YYYY-MM-DD."
        })
    }
}

/// Schema for a list of metav1 Conditions keyed by type, so server-side apply merges them per type.
pub fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "properties": {
                "lastTransitionTime": { "format": "date-time", "type": "string", "description": "When status last changed." },
                "message": { "type": "string", "maxLength": 32768, "description": "Details for people; may be empty." },
                "observedGeneration": { "type": "integer", "format": "int64", "minimum": 0, "description": "The metadata.generation the condition was set for." },
                "reason": { "type": "string", "maxLength": 1024, "description": "Why, as one CamelCase word (e.g. AwaitingApproval)." },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"], "description": "True, False or Unknown." },
                "type": { "type": "string", "maxLength": 316, "description": "The condition's type (e.g. Ready); one condition per type." }
            },
            "required": ["lastTransitionTime", "message", "reason", "status", "type"]
        }
    })
}

/// Conditions as stored in status (metav1.Condition).
pub type Conditions = Vec<Condition>;
