//! The facts a pass adds to the durable records (`AccessRecord`, see `crate::api::record`): decisions accepted,
//! decisions withdrawn, supersessions, expiries, deletions, holds started and released. Each fact has a key derived
//! from itself, and only facts not yet recorded are planned, so writing them twice changes nothing.

use super::liveness::RegKey;
use super::resolve::Resolved;
use super::{EnvironmentPlan, PlanInput};
use crate::api::approval::Decision;
use crate::api::record::{RecordEvent, RecordEventType, RecordSubject, SubjectKind, record_name};
use crate::api::registration::RegistrationPhase;
use crate::api::{AccessEnvironment, AccessRecord, AccessRegistration};
use crate::domain::rules::decisions::stored_at;
use crate::planner::hold::RELEASED_BY_ANNOTATION;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The annotation the separation-of-duties policy makes equal to the author of a registration's last change.
pub const LAST_CHANGED_BY_ANNOTATION: &str = "access.jpki.dev/last-changed-by";

/// One fact to add to a record (creating the record if it does not exist yet).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    /// The record's name ([`record_name`]).
    pub name: String,
    pub subject: RecordSubject,
    pub key: String,
    pub event: RecordEvent,
}

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn event(type_: RecordEventType, at: Timestamp) -> RecordEvent {
    RecordEvent { type_, at: time(at), actor: None, approval: None, approval_uid: None, successor: None, digest: None, message: None }
}

fn registration_subject(reg: &AccessRegistration, uid: &str) -> RecordSubject {
    RecordSubject {
        kind: SubjectKind::AccessRegistration,
        namespace: reg.metadata.namespace.clone(),
        name: reg.metadata.name.clone().unwrap_or_default(),
        uid: uid.to_string(),
        verifier: Some(reg.spec.verifier_ref.clone()),
        environment: Some(reg.spec.environment),
    }
}

/// Collects writes, skipping facts already recorded.
struct Writes<'a> {
    existing: HashMap<&'a str, &'a AccessRecord>,
    out: Vec<RecordWrite>,
}

impl Writes<'_> {
    fn has(&self, uid: &str, key: &str) -> bool {
        self.existing.get(uid).is_some_and(|r| r.spec.events.contains_key(key)) || self.out.iter().any(|w| w.subject.uid == uid && w.key == key)
    }
    fn add(&mut self, subject: &RecordSubject, key: String, event: RecordEvent) {
        if !self.has(&subject.uid, &key) {
            self.out.push(RecordWrite { name: record_name(subject.kind, &subject.uid), subject: subject.clone(), key, event });
        }
    }
}

/// The facts of this pass not yet recorded.
pub fn plan_records(
    input: &PlanInput<'_>,
    resolved: &BTreeMap<RegKey, Resolved>,
    environments: &BTreeMap<String, EnvironmentPlan>,
    now: Timestamp,
) -> Vec<RecordWrite> {
    let mut w = Writes { existing: input.records.iter().map(|r| (r.spec.subject.uid.as_str(), *r)).collect(), out: Vec::new() };
    let approval_uids: HashSet<&str> = input.approvals.iter().filter_map(|a| a.metadata.uid.as_deref()).collect();
    let mut present: HashSet<&str> = HashSet::new();
    for reg in input.registrations {
        let Some(uid) = reg.metadata.uid.as_deref() else {
            continue;
        };
        present.insert(uid);
        let Some(r) = resolved.get(&RegKey::of(reg)) else {
            continue;
        };
        let subject = registration_subject(reg, uid);
        let before = w.out.len();
        for v in r.evaluation.approvals.iter().filter(|v| v.accepted) {
            let (Some(approval_uid), Some(at)) = (&v.uid, v.decided_at) else {
                continue;
            };
            let (type_, prefix) = match v.decision {
                Decision::Approved => (RecordEventType::Approved, "approved"),
                Decision::Rejected => (RecordEventType::Rejected, "rejected"),
            };
            let mut e = event(type_, at);
            e.actor = Some(v.decided_by.clone());
            e.approval = Some(v.name.clone());
            e.approval_uid = Some(approval_uid.clone());
            e.digest = Some(v.digest.clone());
            w.add(&subject, format!("{prefix}-{approval_uid}"), e);
        }
        if let Some(record) = w.existing.get(uid).copied() {
            withdrawals(&mut w, &subject, record, &approval_uids, now);
        }
        if let (RegistrationPhase::Superseded, Some((successor, at))) = (r.phase, &r.superseded_by) {
            let mut e = event(RecordEventType::Superseded, *at);
            e.successor = Some(successor.clone());
            w.add(&subject, "superseded".into(), e);
        }
        if r.phase == RegistrationPhase::Expired
            && let Some(end) = r.window.as_ref().and_then(|w| w.end)
        {
            w.add(&subject, "expired".into(), event(RecordEventType::Expired, end));
        }
        // A record starts with the filing, once there is anything else to record.
        if w.out.len() > before && !w.existing.contains_key(uid) {
            let mut e = event(RecordEventType::Filed, stored_at(&reg.metadata).unwrap_or(now));
            e.actor = reg.metadata.annotations.as_ref().and_then(|a| a.get(LAST_CHANGED_BY_ANNOTATION)).cloned();
            w.add(&subject, "filed".into(), e);
        }
    }
    // Registrations gone since they were recorded: deleted (a revocation).
    let gone: Vec<&AccessRecord> = input
        .records
        .iter()
        .copied()
        .filter(|r| r.spec.subject.kind == SubjectKind::AccessRegistration && !present.contains(r.spec.subject.uid.as_str()))
        .collect();
    for record in gone {
        // The record may show a decision only now, after its approval and then the registration were deleted in
        // quick succession (the controller's cache of records lags its own writes): the withdrawal still counts.
        withdrawals(&mut w, &record.spec.subject, record, &approval_uids, now);
        w.add(&record.spec.subject, "deleted".into(), event(RecordEventType::Deleted, now));
    }
    let env_objects: HashMap<&str, &AccessEnvironment> = input.environments.iter().filter_map(|e| Some((e.metadata.name.as_deref()?, *e))).collect();
    for (name, plan) in environments {
        let Some(env) = env_objects.get(name.as_str()) else {
            continue;
        };
        let Some(uid) = env.metadata.uid.as_deref() else {
            continue;
        };
        let subject = RecordSubject {
            kind: SubjectKind::AccessEnvironment,
            namespace: None,
            name: name.clone(),
            uid: uid.to_string(),
            verifier: None,
            environment: Some(plan.environment),
        };
        let was_holding = input.published.and_then(|p| p.get(name)).and_then(|p| p.baseline.as_ref()).and_then(|b| b.holding.clone());
        if let Some(hold) = &plan.hold
            && was_holding.as_deref() != Some(hold.held_digest.as_str())
        {
            let mut e = event(RecordEventType::HoldStarted, now);
            e.digest = Some(hold.held_digest.clone());
            e.message = Some(format!(
                "removals since the baseline would take away {} of its {} CIDRs ({} registrations affected)",
                hold.removed_cidrs, hold.baseline_cidrs, hold.affected_registrations
            ));
            w.add(&subject, format!("hold-{}", short(&hold.held_digest)), e);
        }
        if let Some(digest) = &plan.released {
            let mut e = event(RecordEventType::HoldReleased, now);
            e.digest = Some(digest.clone());
            e.actor = env.metadata.annotations.as_ref().and_then(|a| a.get(RELEASED_BY_ANNOTATION)).cloned();
            w.add(&subject, format!("released-{}", short(digest)), e);
        }
    }
    w.out
}

/// Recorded decisions whose approval no longer exists: each one withdrawn.
fn withdrawals(w: &mut Writes<'_>, subject: &RecordSubject, record: &AccessRecord, approval_uids: &HashSet<&str>, now: Timestamp) {
    for recorded in record.spec.events.values() {
        let Some(approval_uid) = recorded.approval_uid.as_deref() else {
            continue;
        };
        if matches!(recorded.type_, RecordEventType::Approved | RecordEventType::Rejected) && !approval_uids.contains(approval_uid) {
            let mut e = event(RecordEventType::Withdrawn, now);
            e.approval = recorded.approval.clone();
            e.approval_uid = Some(approval_uid.to_string());
            e.message = Some(format!(
                "the {} decision {} was deleted; it and every decision before it are void",
                recorded.type_.as_str(),
                recorded.approval.as_deref().unwrap_or_default()
            ));
            w.add(subject, format!("withdrawn-{approval_uid}"), e);
        }
    }
}

/// The first 12 hex digits of a digest, for keys.
fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}
