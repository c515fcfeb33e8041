//! `AccessRecord`: the durable history of one registration or environment, written only by the controller.
//!
//! It holds the facts that must stay true whatever later happens to other objects (a supersession, an expiry, a
//! withdrawn decision) and the audit history people read with `kubectl jpki history`: who filed, approved, rejected,
//! withdrew and released, and when. Events last beyond the API server's Event retention (one hour by default).
//!
//! Cluster-scoped, so a record outlives its registration and even the registration's namespace; append-only, enforced
//! by the API server itself (CEL): the subject never changes, an event is never changed or removed. Only the
//! controller's role may create or patch records; nobody's may delete them (see SECURITY.md).

use super::common::Environment;
use kube::{CustomResource, KubeSchema};
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many events per record: a registration is filed, decided on a few times, and ends once.
pub const MAX_EVENTS: usize = 64;

/// The history of one registration or environment (履歴). Written by the controller only; append-only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "access.jpki.dev",
    version = "v1alpha1",
    kind = "AccessRecord",
    plural = "accessrecords",
    shortname = "arec",
    shortname = "record",
    category = "jpki",
    validation = kube::core::cel::Rule::new("self.spec.subject == oldSelf.spec.subject").message("the subject of a record is immutable"),
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.subject.kind"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.subject.namespace"}"#,
    printcolumn = r#"{"name":"Name","type":"string","jsonPath":".spec.subject.name"}"#,
    printcolumn = r#"{"name":"Verifier","type":"string","jsonPath":".spec.subject.verifier"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "履歴: what happened to one AccessRegistration or AccessEnvironment, written by the controller only and append-only."
)]
#[serde(rename_all = "camelCase")]
pub struct AccessRecordSpec {
    pub subject: RecordSubject,
    /// Events by a key the controller derives from the fact itself (for example `approved-<approval uid>`), so
    /// recording the same fact twice changes nothing. Append-only.
    #[schemars(schema_with = "events_schema")]
    pub events: BTreeMap<String, RecordEvent>,
}

/// What a record is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordSubject {
    /// Kind of the recorded object.
    pub kind: SubjectKind,
    /// Namespace of the recorded object (none for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// Name of the recorded object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The subject's `metadata.uid`: a registration filed again under the same name is another subject.
    #[schemars(length(min = 1, max = 64))]
    pub uid: String,
    /// The registration's verifier (for `kubectl jpki history VERIFIER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub verifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
pub enum SubjectKind {
    AccessRegistration,
    AccessEnvironment,
}

/// One fact, with the server-side time it happened at and who did it, where that is known.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordEvent {
    #[serde(rename = "type")]
    pub type_: RecordEventType,
    /// When it happened (RFC 3339, UTC): the API server's creation time of the decision, the instant of a
    /// supersession or expiry, or when the controller saw an object gone.
    #[schemars(length(max = 64))]
    pub at: String,
    /// Who did it: the approver, the user who released a hold, the registration's author where recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub actor: Option<String>,
    /// The AccessApproval of a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub approval: Option<String>,
    /// metadata.uid of the AccessApproval this event comes from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub approval_uid: Option<String>,
    /// The registration that superseded this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub successor: Option<String>,
    /// The digest decided on (a decision's spec digest, a released hold's allowlist digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 71))]
    pub digest: Option<String>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}

/// Kinds of recorded facts. `Rejected`, `Withdrawn`, `Superseded`, `Expired` and `Deleted` end what came before
/// them for good: the planner reads them (see `crate::domain::rules::records`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
pub enum RecordEventType {
    /// The registration was filed (its creation time; the author when the separation-of-duties annotation says).
    Filed,
    /// An approval (承認) was recorded and accepted.
    Approved,
    /// A rejection (却下) was recorded: every decision made before it is void.
    Rejected,
    /// The decision in force was deleted (revocation): it and every decision made before it are void.
    Withdrawn,
    /// The registration stepped down for its successor (A-13). Final.
    Superseded,
    /// The registration's access ended with its end date. Final.
    Expired,
    /// The registration was deleted (revocation).
    Deleted,
    /// A mass removal was held.
    HoldStarted,
    /// A person released a held mass removal.
    HoldReleased,
}

impl RecordEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordEventType::Filed => "Filed",
            RecordEventType::Approved => "Approved",
            RecordEventType::Rejected => "Rejected",
            RecordEventType::Withdrawn => "Withdrawn",
            RecordEventType::Superseded => "Superseded",
            RecordEventType::Expired => "Expired",
            RecordEventType::Deleted => "Deleted",
            RecordEventType::HoldStarted => "HoldStarted",
            RecordEventType::HoldReleased => "HoldReleased",
        }
    }
}

/// The events map: at most [`MAX_EVENTS`], none ever removed, each immutable once written. The per-value rule is a
/// transition rule on map values, which the API server correlates by key.
fn events_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut event = generator.subschema_for::<RecordEvent>();
    event.insert("x-kubernetes-validations".into(), serde_json::json!([{"rule": "self == oldSelf", "message": "a recorded event is immutable"}]));
    json_schema!({
        "type": "object",
        "maxProperties": MAX_EVENTS,
        "additionalProperties": event,
        "x-kubernetes-validations": [
            {"rule": "oldSelf.all(k, k in self)", "message": "a record is append-only: events are never removed"}
        ]
    })
}

/// The name of the record of a subject: its kind's short name and its uid (so a subject has exactly one).
pub fn record_name(kind: SubjectKind, uid: &str) -> String {
    let prefix = match kind {
        SubjectKind::AccessRegistration => "areg",
        SubjectKind::AccessEnvironment => "aenv",
    };
    format!("{prefix}-{uid}")
}
