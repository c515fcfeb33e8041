//! Kubernetes Events on every transition, through one shared Recorder (its cache folds repeats into series, so
//! RBAC must allow events `create` and `patch`).

use super::stores::Unreadable;
use crate::api::environment::AccessEnvironmentStatus;
use crate::api::registration::{AccessRegistrationStatus, RegistrationPhase};
use crate::api::{AccessEnvironment, AccessRegistration};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

pub fn recorder(client: &Client, identity: &str) -> Recorder {
    Recorder::new(client.clone(), Reporter { controller: "jpki-access".into(), instance: Some(identity.to_string()) })
}

fn condition_status<'a>(conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

/// The events a change of a registration's status calls for: (type, reason, note).
pub fn registration_events(old: Option<&AccessRegistrationStatus>, new: &AccessRegistrationStatus) -> Vec<(EventType, &'static str, String)> {
    use RegistrationPhase::*;
    let mut out = Vec::new();
    let old_phase = old.and_then(|s| s.phase);
    let message = new.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
    let was_approved = old.and_then(|s| condition_status(&s.conditions, "Approved")) == Some("True");
    if !was_approved && condition_status(&new.conditions, "Approved") == Some("True") {
        out.push((EventType::Normal, "Approved", new.conditions.iter().find(|c| c.type_ == "Approved").map(|c| c.message.clone()).unwrap_or_default()));
    }
    if old_phase == new.phase {
        return out;
    }
    let (type_, reason) = match new.phase {
        Some(Active) => (EventType::Normal, "Activated"),
        Some(Scheduled) => (EventType::Normal, "Scheduled"),
        Some(Superseded) => (EventType::Normal, "Superseded"),
        Some(Expired) => (EventType::Normal, "Expired"),
        Some(Rejected) => (EventType::Warning, "Rejected"),
        Some(Conflict) => (EventType::Warning, "Conflict"),
        Some(Invalid) => (EventType::Warning, "Invalid"),
        Some(Held) => (EventType::Warning, "Held"),
        Some(PendingApproval) | None => (EventType::Normal, "PendingApproval"),
    };
    if old_phase == Some(Active) && matches!(new.phase, Some(PendingApproval | Rejected | Invalid | Conflict)) {
        out.push((EventType::Warning, "Revoked", format!("access withdrawn: {message}")));
    }
    out.push((type_, reason, message));
    out
}

async fn publish<K: Resource<DynamicType = ()>>(recorder: &Recorder, obj: &K, type_: EventType, reason: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note.chars().take(1000).collect()), action: "Reconcile".into(), secondary: None };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "event not recorded");
    }
}

pub async fn registration_transition(recorder: &Recorder, reg: &AccessRegistration, new: &AccessRegistrationStatus) {
    for (type_, reason, note) in registration_events(reg.status.as_ref(), new) {
        publish(recorder, reg, type_, reason, note).await;
    }
}

pub async fn environment_transition(recorder: &Recorder, env: &AccessEnvironment, new: &AccessEnvironmentStatus) {
    let held = |s: Option<&AccessEnvironmentStatus>| s.and_then(|s| condition_status(&s.conditions, "Held")) == Some("True");
    if !held(env.status.as_ref()) && held(Some(new)) {
        let note = new.conditions.iter().find(|c| c.type_ == "Held").map(|c| c.message.clone()).unwrap_or_default();
        publish(recorder, env, EventType::Warning, "Held", note).await;
    }
}

pub async fn unreadable(recorder: &Recorder, u: &Unreadable) {
    let reference = ObjectReference {
        api_version: Some("access.jpki.dev/v1alpha1".into()),
        kind: Some(u.kind.into()),
        name: Some(u.name.clone()),
        namespace: u.namespace.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "Unreadable".into(),
        note: Some(format!("stored object does not fit the types and contributes nothing: {}", u.error).chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "event not recorded");
    }
}
