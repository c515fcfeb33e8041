//! Unit tests of access decisions that cannot be replayed, backdated or bypassed (issue 17): decisions bound to
//! the registration's uid and digest, ordered by the API server's time, voided by later facts, final once recorded,
//! conflicts decided over time windows, and the rules `validate` shares with the planner.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::tests::{World, allowlist, approve, phase, reg_plan, registration, reject, stored_decision, t, verifier};
use crate::api::approval::Decision;
use crate::api::record::{AccessRecordSpec, RecordEvent, RecordEventType, RecordSubject, SubjectKind, record_name};
use crate::api::registration::{ConnectionMethod, RegistrationPhase::*};
use crate::api::{AccessRecord, Environment, ProvisionMethod, ProvisionMethods};
use crate::domain::approve::approval_for;
use crate::domain::rules::Reason;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const NOW: &str = "2026-05-01T00:00:00Z";

fn approval_reason(plan: &super::Plan, verifier: &str, name: &str) -> Reason {
    plan.approvals[&(format!("ns-{verifier}"), name.to_string())].reason
}

/// A record of `reg` holding the facts the controller would have written.
fn record_of(reg: &crate::api::AccessRegistration, events: &[(&str, RecordEvent)]) -> AccessRecord {
    let uid = reg.metadata.uid.clone().unwrap();
    let subject = RecordSubject {
        kind: SubjectKind::AccessRegistration,
        namespace: reg.metadata.namespace.clone(),
        name: reg.metadata.name.clone().unwrap(),
        uid: uid.clone(),
        verifier: Some(reg.spec.verifier_ref.clone()),
        environment: Some(reg.spec.environment),
    };
    let mut record = AccessRecord::new(
        &record_name(SubjectKind::AccessRegistration, &uid),
        AccessRecordSpec { subject, events: events.iter().map(|(k, e)| (k.to_string(), e.clone())).collect() },
    );
    record.metadata.uid = Some(format!("uid-rec-{uid}"));
    record.metadata.generation = Some(1);
    record
}

fn fact(type_: RecordEventType, at: &str) -> RecordEvent {
    RecordEvent { type_, at: at.into(), actor: None, approval: None, approval_uid: None, successor: None, digest: None, message: None }
}

#[test]
fn a_decision_on_an_earlier_object_of_the_same_name_is_not_replayed() {
    let mut w = World::new();
    let first = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    w.approvals.push(approve(&first, "2026-03-05T01:00:00Z"));
    // Deleted to revoke, then the same YAML applied again by a pipeline: a new object with a new uid.
    let mut again = first.clone();
    again.metadata.uid = Some("uid-reg-prod-again".into());
    again.metadata.creation_timestamp = Some(Time(t("2026-04-20T00:00:00Z")));
    w.registrations.push(again);
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "prod"), PendingApproval);
    assert!(allowlist(&plan, "production").is_empty());
    let name = w.approvals[0].metadata.name.clone().unwrap();
    assert_eq!(approval_reason(&plan, "sapporo", &name), Reason::RegistrationUidMismatch);
}

#[test]
fn a_copy_that_is_not_what_the_digest_says_binds_nothing() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let mut forged = approve(&reg, "2026-03-05T01:00:00Z");
    forged.spec.approved.as_mut().unwrap().source_cidrs.push("198.51.100.0/24".into());
    w.approvals.push(forged.clone());
    let mut widened = reg.clone();
    widened.spec.source_cidrs.push("198.51.100.0/24".into());
    w.registrations.push(widened);
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "prod"), PendingApproval);
    assert_eq!(approval_reason(&plan, "sapporo", forged.metadata.name.as_deref().unwrap()), Reason::DigestMismatch);
}

#[test]
fn the_servers_time_orders_decisions_not_the_approved_at_a_client_writes() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    // An approval that claims to be from 2099, stored first; a rejection stored after it.
    let mut future = approval_for(&reg, Decision::Approved, "approver@j-lis", t("2099-01-01T00:00:00Z"), None).unwrap();
    future = stored_decision(future, "2026-03-05T01:00:00Z");
    future.spec.approved_at = "2099-01-01T00:00:00Z".into();
    w.approvals = vec![future, reject(&reg, "2026-03-06T01:00:00Z")];
    w.registrations.push(reg);
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "prod"), Rejected);
    assert!(allowlist(&plan, "production").is_empty());
}

#[test]
fn a_backdated_approval_does_not_win_a_conflict() {
    let mut w = World::new();
    let a = registration("sapporo", "a", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let b = registration("hakodate", "b", Environment::Production, &["192.0.2.0/25"], "2026-04-01", None);
    let mut backdated = approval_for(&b, Decision::Approved, "approver@j-lis", t("2020-01-01T00:00:00Z"), None).unwrap();
    backdated = stored_decision(backdated, "2026-03-06T01:00:00Z");
    backdated.spec.approved_at = "2020-01-01T00:00:00Z".into();
    w.approvals = vec![approve(&a, "2026-03-05T01:00:00Z"), backdated];
    w.registrations = vec![a, b];
    let plan = w.plan(NOW);
    assert_eq!((phase(&plan, "sapporo", "a"), phase(&plan, "hakodate", "b")), (Active, Conflict));
}

#[test]
fn a_decision_stored_before_its_registration_was_filed_is_ignored() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let early = approve(&reg, "2025-12-31T00:00:00Z"); // the registration was stored 2026-01-01
    w.approvals.push(early.clone());
    w.registrations.push(reg);
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "prod"), PendingApproval);
    assert_eq!(approval_reason(&plan, "sapporo", early.metadata.name.as_deref().unwrap()), Reason::DecidedBeforeFiling);
}

#[test]
fn a_rejection_starts_the_place_in_line_anew() {
    let mut w = World::new();
    let a = registration("sapporo", "a", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let b = registration("hakodate", "b", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let mut a_again = approve(&a, "2026-03-08T01:00:00Z");
    a_again.metadata.name = Some("a-approved-again".into());
    w.approvals = vec![approve(&a, "2026-03-05T01:00:00Z"), reject(&a, "2026-03-06T01:00:00Z"), approve(&b, "2026-03-07T01:00:00Z"), a_again];
    w.registrations = vec![a, b];
    let plan = w.plan(NOW);
    assert_eq!((phase(&plan, "sapporo", "a"), phase(&plan, "hakodate", "b")), (Conflict, Active));
    assert_eq!(allowlist(&plan, "production"), ["192.0.2.0/24"]);
}

#[test]
fn a_widening_re_approval_does_not_take_over_what_another_verifier_was_approved_for_meanwhile() {
    let mut w = World::new();
    let a = registration("sapporo", "a", Environment::Production, &["192.0.2.0/25"], "2026-04-01", None);
    let b = registration("hakodate", "b", Environment::Production, &["192.0.2.128/25"], "2026-04-01", None);
    let mut widened = a.clone();
    widened.spec.source_cidrs = vec!["192.0.2.0/24".into()];
    w.approvals = vec![approve(&a, "2026-03-05T01:00:00Z"), approve(&b, "2026-03-06T01:00:00Z"), approve(&widened, "2026-03-07T01:00:00Z")];
    w.registrations = vec![widened, b];
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "hakodate", "b"), Active, "b was approved for its /25 before a's widening");
    assert_eq!(phase(&plan, "sapporo", "a"), Conflict);
    // A re-approval that moves only a date keeps the place.
    let mut w = World::new();
    let a = registration("sapporo", "a", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let b = registration("hakodate", "b", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let mut later_end = a.clone();
    later_end.spec.access_end_date = Some("2031-03-31".into());
    w.approvals = vec![approve(&a, "2026-03-05T01:00:00Z"), approve(&b, "2026-03-06T01:00:00Z"), approve(&later_end, "2026-03-07T01:00:00Z")];
    w.registrations = vec![later_end, b];
    let plan = w.plan(NOW);
    assert_eq!((phase(&plan, "sapporo", "a"), phase(&plan, "hakodate", "b")), (Active, Conflict));
}

#[test]
fn a_supersession_is_final_once_recorded() {
    let mut w = World::new();
    let old = registration("sapporo", "old", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let mut new = registration("sapporo", "new", Environment::Production, &["198.51.100.0/28"], "2026-04-15", None);
    new.spec.supersedes = Some("old".into());
    w.approvals = vec![approve(&old, "2026-03-05T01:00:00Z"), approve(&new, "2026-04-10T01:00:00Z")];
    w.registrations = vec![old.clone(), new.clone()];
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "old"), Superseded);
    let write = plan.records.iter().find(|r| r.event.type_ == RecordEventType::Superseded).expect("the supersession is to be recorded");
    assert_eq!((write.subject.name.as_str(), write.event.successor.as_deref()), ("old", Some("new")));

    // The successor's approval is deleted later: without the record the predecessor would come back.
    w.approvals.truncate(1);
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "old"), Active, "(without the record)");
    let mut superseded = fact(RecordEventType::Superseded, "2026-04-14T15:00:00Z");
    superseded.successor = Some("new".into());
    w.records.push(record_of(&old, &[("superseded", superseded)]));
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "old"), Superseded);
    assert_eq!(allowlist(&plan, "production"), Vec::<String>::new());
    // And the predecessor's deletion does not make the successor's `supersedes` a dangling reference.
    w.registrations.retain(|r| r.metadata.name.as_deref() == Some("new"));
    w.approvals = vec![approve(&new, "2026-04-10T01:00:00Z")];
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "new"), Active);
}

#[test]
fn an_expiry_is_final_once_recorded_even_when_the_clock_goes_back() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", Some("2026-04-30"));
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.records.push(record_of(&reg, &[("expired", fact(RecordEventType::Expired, "2026-04-30T15:00:00Z"))]));
    w.registrations.push(reg);
    let plan = w.plan("2026-04-20T00:00:00Z");
    assert_eq!(phase(&plan, "sapporo", "prod"), Expired);
    assert!(allowlist(&plan, "production").is_empty());
}

#[test]
fn deleting_the_decision_in_force_never_brings_an_older_one_back() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let (older, newer) = (approve(&reg, "2026-03-05T01:00:00Z"), {
        let mut a = approve(&reg, "2026-03-06T01:00:00Z");
        a.metadata.name = Some("prod-approved-again".into());
        a.metadata.uid = Some("uid-prod-approved-again".into());
        a
    });
    let approved = |a: &crate::api::AccessApproval, at: &str| {
        let mut e = fact(RecordEventType::Approved, at);
        e.approval = a.metadata.name.clone();
        e.approval_uid = a.metadata.uid.clone();
        e
    };
    w.records.push(record_of(&reg, &[("approved-1", approved(&older, "2026-03-05T01:00:00Z")), ("approved-2", approved(&newer, "2026-03-06T01:00:00Z"))]));
    w.approvals = vec![older];
    w.registrations.push(reg);
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "prod"), PendingApproval, "the withdrawal of the newer decision voids the older one");
    assert!(plan.records.iter().any(|r| r.event.type_ == RecordEventType::Withdrawn));
}

#[test]
fn conflicts_are_decided_over_access_windows_not_only_now() {
    let mut w = World::new();
    // b is approved first, for a later start; a later, for an earlier start and no end: their windows overlap.
    let b = registration("hakodate", "b", Environment::Production, &["192.0.2.0/24"], "2026-07-01", None);
    let a = registration("sapporo", "a", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    w.approvals = vec![approve(&b, "2026-03-05T01:00:00Z"), approve(&a, "2026-03-06T01:00:00Z")];
    w.registrations = vec![a.clone(), b.clone()];
    let plan = w.plan(NOW);
    assert_eq!((phase(&plan, "sapporo", "a"), phase(&plan, "hakodate", "b")), (Conflict, Scheduled), "told at approval, not at b's start");
    let c = &reg_plan(&plan, "sapporo", "a").status.conflicts[0];
    assert_eq!((c.name.as_str(), c.from.as_deref()), ("b", Some("2026-06-30T15:00:00Z")));
    // a's window ends before b's begins: no conflict.
    let mut a_short = a;
    a_short.spec.access_end_date = Some("2026-06-30".into());
    w.approvals = vec![approve(&b, "2026-03-05T01:00:00Z"), approve(&a_short, "2026-03-06T01:00:00Z")];
    w.registrations = vec![a_short, b];
    let plan = w.plan(NOW);
    assert_eq!((phase(&plan, "sapporo", "a"), phase(&plan, "hakodate", "b")), (Active, Scheduled));
}

#[test]
fn the_planner_refuses_what_validate_refuses() {
    // Signing None for a signature verifier (production).
    let mut w = World::new();
    let mut reg = registration("sapporo", "none", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    reg.spec.provision_methods = Some(ProvisionMethods { signing: Some(ProvisionMethod::None), user_authentication: Some(ProvisionMethod::Crl) });
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    assert_eq!(reg_plan(&w.plan(NOW), "sapporo", "none").resolved.reason, Reason::ProvisionMethodForRole);

    // A supersedes target that does not exist.
    let mut w = World::new();
    let mut reg = registration("sapporo", "orphan", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    reg.spec.supersedes = Some("never-filed".into());
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    assert_eq!(reg_plan(&w.plan(NOW), "sapporo", "orphan").resolved.reason, Reason::SupersedesNotFound);

    // Production over the LGPKI route without the LGWAN全国センター step.
    let mut w = World::new();
    let mut reg = registration("sapporo", "lgpki", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    reg.spec.connection_method = ConnectionMethod::LgwanViaLgpki;
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    assert_eq!(reg_plan(&w.plan(NOW), "sapporo", "lgpki").resolved.reason, Reason::LgwanCenterPending);

    // One namespace claimed by two verifiers: the one stored first keeps it.
    let mut w = World::new();
    let mut claimant = verifier("claimant");
    claimant.spec.namespace = "ns-sapporo".into();
    claimant.metadata.creation_timestamp = Some(Time(t("2026-02-01T00:00:00Z")));
    w.verifiers[0].metadata.creation_timestamp = Some(Time(t("2026-01-01T00:00:00Z")));
    w.verifiers.push(claimant);
    let own = registration("sapporo", "own", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let mut intruder = registration("claimant", "intruder", Environment::Production, &["198.51.100.0/28"], "2026-04-01", None);
    intruder.metadata.namespace = Some("ns-sapporo".into());
    w.approvals = vec![approve(&own, "2026-03-05T01:00:00Z"), approve(&intruder, "2026-03-05T01:00:00Z")];
    w.registrations = vec![own, intruder];
    let plan = w.plan(NOW);
    assert_eq!(phase(&plan, "sapporo", "own"), Active);
    assert_eq!(reg_plan(&plan, "sapporo", "intruder").resolved.reason, Reason::NamespaceClaimed);
}

#[test]
fn switching_the_provision_method_after_approval_waits_for_a_new_approval() {
    let mut w = World::new();
    let approved = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None); // signing Ocsp, user auth Crl
    w.approvals.push(approve(&approved, "2026-03-05T01:00:00Z"));
    let mut switched = approved.clone();
    switched.spec.provision_methods = Some(ProvisionMethods { signing: Some(ProvisionMethod::Ocsp), user_authentication: Some(ProvisionMethod::Ocsp) });
    w.registrations.push(switched);
    let plan = w.plan(NOW);
    let p = reg_plan(&plan, "sapporo", "prod");
    assert_eq!(p.resolved.phase, Active);
    let methods: Vec<_> = p.notice_data.as_ref().unwrap().endpoints.iter().map(|e| (e.certificate_type, e.provision_method)).collect();
    assert_eq!(methods, [("signing", ProvisionMethod::Ocsp), ("userAuthentication", ProvisionMethod::Crl)], "the notice keeps what was approved");
    assert!(p.status.pending_difference.as_ref().unwrap().provision_methods.is_some());
}

#[test]
fn a_decision_deleted_just_before_its_registration_is_recorded_as_withdrawn_and_the_registration_as_deleted() {
    // The controller's cache of records may see the Approved fact only after the approval and then the
    // registration are gone (both deleted within a second): the withdrawal must still be recorded.
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let a = approve(&reg, "2026-03-05T01:00:00Z");
    let mut e = fact(RecordEventType::Approved, "2026-03-05T01:00:00Z");
    e.approval = a.metadata.name.clone();
    e.approval_uid = a.metadata.uid.clone();
    w.records.push(record_of(&reg, &[("approved-1", e)]));
    let plan = w.plan(NOW);
    let types: Vec<RecordEventType> = plan.records.iter().map(|r| r.event.type_).collect();
    assert!(types.contains(&RecordEventType::Deleted), "{types:?}");
    assert!(types.contains(&RecordEventType::Withdrawn), "{types:?}");
}
