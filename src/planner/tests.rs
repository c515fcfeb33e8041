//! Unit tests of the planner, one or more per rule of DESIGN §3, with an injected clock. Whole generated objects
//! are asserted where it matters (NetworkPolicies, the allowlist index and shards, the nft ruleset's sets).
#![allow(clippy::unwrap_used, clippy::panic)]

use super::hold::{PublishedAllowlist, RELEASE_ANNOTATION};
use super::liveness::RegKey;
use super::*;
use crate::api::approval::Decision;
use crate::api::environment::{AccessEnvironmentSpec, EnvironmentPolicy, MassRevocationHold};
use crate::api::registration::{AccessRegistrationSpec, ConnectionMethod, RegistrationPhase, RegistrationReason};
use crate::api::verifier::{Agreement, OrganizationType, ProcedureMilestones, SignatureVerifierSpec, VerifierRole};
use crate::api::{ProvisionMethod, ProvisionMethods};
use crate::domain::approve::approval_for;
use RegistrationPhase::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

pub(crate) fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub(crate) fn environment(name: &str, environment: Environment) -> AccessEnvironment {
    let spec: AccessEnvironmentSpec = serde_json::from_value(json!({
        "environment": environment,
        "serviceNamespace": format!("jpki-{name}"),
        "podSelector": {"matchLabels": {"app": "revocation"}},
        "endpoints": [
            {"name": "ocsp", "provisionMethod": "Ocsp", "service": {"name": "ocsp", "port": 8080}, "host": format!("ocsp.{name}.example"), "path": "/"},
            {"name": "crl", "provisionMethod": "Crl", "service": {"name": "crl", "port": 8080, "targetPort": 8081}, "host": format!("crl.{name}.example"), "path": "/crl"}
        ],
        "exposure": {"ingressClassName": "nginx"},
        "policy": {"minPrefixLengthV4": 24, "minPrefixLengthV6": 48, "maxCidrsPerObject": 5000},
        "firewall": {"allowlistNamespace": "jpki-system", "ports": [{"protocol": "TCP", "port": 443}]}
    }))
    .unwrap();
    let mut env = AccessEnvironment::new(name, spec);
    env.metadata.uid = Some(format!("uid-env-{name}"));
    env.metadata.generation = Some(1);
    env
}

pub(super) fn verifier(name: &str) -> SignatureVerifier {
    SignatureVerifier::new(
        name,
        SignatureVerifierSpec {
            display_name: name.to_uppercase(),
            organization_type: OrganizationType::LocalGovernment,
            lg_code: Some("011002".into()),
            corporate_number: None,
            roles: vec![VerifierRole::SignatureVerifier, VerifierRole::UserAuthenticationVerifier],
            namespace: format!("ns-{name}"),
            agreement: Some(Agreement { effective_date: "2026-04-01".into() }),
            system_contractor: None,
            contacts: vec![],
            procedure: Some(ProcedureMilestones {
                confidentiality_pledge_received_on: Some("2026-01-20".into()),
                test_environment_application_received_on: Some("2026-01-20".into()),
                verification_test_completed_on: Some("2026-02-20".into()),
                ..Default::default()
            }),
        },
    )
}

pub(crate) fn registration(verifier: &str, name: &str, environment: Environment, cidrs: &[&str], start: &str, end: Option<&str>) -> AccessRegistration {
    let mut reg = AccessRegistration::new(
        name,
        AccessRegistrationSpec {
            verifier_ref: verifier.into(),
            environment,
            reason: RegistrationReason::Initial,
            supersedes: None,
            received_on: Some("2026-03-01".into()),
            connection_method: ConnectionMethod::Lgwan,
            source_cidrs: cidrs.iter().map(|c| (*c).into()).collect(),
            access_start_date: start.into(),
            access_end_date: end.map(Into::into),
            provision_methods: Some(ProvisionMethods { signing: Some(ProvisionMethod::Ocsp), user_authentication: Some(ProvisionMethod::Crl) }),
            official_seal_affixed: Some(true),
        },
    );
    reg.metadata.namespace = Some(format!("ns-{verifier}"));
    reg.metadata.uid = Some(format!("uid-reg-{name}"));
    reg.metadata.generation = Some(1);
    reg.metadata.creation_timestamp = Some(Time(t("2026-01-01T00:00:00Z")));
    reg
}

/// As the API server stores it: a uid and the creation time (`at`, which the approval also gives as approvedAt).
pub(super) fn stored_decision(mut a: AccessApproval, at: &str) -> AccessApproval {
    a.metadata.uid = Some(format!("uid-{}", a.metadata.name.clone().unwrap_or_default()));
    a.metadata.creation_timestamp = Some(Time(t(at)));
    a
}

pub(crate) fn approve(reg: &AccessRegistration, at: &str) -> AccessApproval {
    stored_decision(approval_for(reg, Decision::Approved, "approver@j-lis", t(at), None).unwrap(), at)
}

pub(super) fn reject(reg: &AccessRegistration, at: &str) -> AccessApproval {
    stored_decision(approval_for(reg, Decision::Rejected, "approver@j-lis", t(at), Some("不備".into())).unwrap(), at)
}

/// The objects of one test.
#[derive(Default, Clone)]
pub(crate) struct World {
    pub verifiers: Vec<SignatureVerifier>,
    pub registrations: Vec<AccessRegistration>,
    pub approvals: Vec<AccessApproval>,
    pub environments: Vec<AccessEnvironment>,
    pub records: Vec<crate::api::AccessRecord>,
    pub published: BTreeMap<String, PublishedAllowlist>,
    /// The controller's memory of what each registration had published (None: from the statuses).
    pub previously_live: Option<BTreeMap<String, hold::LiveSet>>,
}

impl World {
    pub(crate) fn new() -> Self {
        World {
            verifiers: vec![verifier("sapporo"), verifier("hakodate")],
            environments: vec![environment("production", Environment::Production), environment("test", Environment::Test)],
            ..Default::default()
        }
    }
    /// As the controller does after writing: what `plan` published becomes what the next pass reads back.
    pub(super) fn publish(&mut self, plan: &Plan) {
        for (name, e) in &plan.environments {
            self.published.insert(
                name.clone(),
                PublishedAllowlist { digest: e.digest.clone(), cidrs: e.cidrs.clone(), live_registrations: e.recorded_live, baseline: e.baseline.clone() },
            );
            self.previously_live.get_or_insert_default().insert(name.clone(), e.published_live.clone());
        }
    }

    pub(crate) fn plan(&self, now: &str) -> Plan {
        let objects = Objects::of(&self.verifiers, &self.registrations, &self.approvals, &self.environments).with_records(&self.records);
        plan(&PlanInput { published: Some(&self.published), previously_live: self.previously_live.as_ref(), ..objects.input() }, t(now))
    }
}

pub(super) fn phase(plan: &Plan, verifier: &str, name: &str) -> RegistrationPhase {
    plan.registrations[&RegKey { namespace: format!("ns-{verifier}"), name: name.into() }].resolved.phase
}

pub(super) fn reg_plan<'a>(plan: &'a Plan, verifier: &str, name: &str) -> &'a RegistrationPlan {
    &plan.registrations[&RegKey { namespace: format!("ns-{verifier}"), name: name.into() }]
}

pub(crate) fn allowlist(plan: &Plan, env: &str) -> Vec<String> {
    plan.environments[env].cidrs.iter().map(ToString::to_string).collect()
}

fn child(plan: &Plan, env: &str, kind: &str, name: &str) -> serde_json::Value {
    let found = plan.environments[env].children.iter().find(|c| {
        let (_, k, _, n) = c.identity();
        k == kind && n == name
    });
    found.unwrap_or_else(|| panic!("{kind}/{name} not in the plan")).to_json()
}

fn owner_refs(env: &str) -> serde_json::Value {
    json!([{"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "name": env,
            "uid": format!("uid-env-{env}"), "controller": true}])
}

#[test]
fn an_approved_registration_is_active_and_every_output_is_exact() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28", "2001:db8:10::/56", "192.0.2.16/28"], "2026-04-01", None);
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!(phase(&plan, "sapporo", "prod"), Active);
    // Aggregated: the two adjacent /28s become one /27; IPv4 before IPv6.
    assert_eq!(allowlist(&plan, "production"), ["192.0.2.0/27", "2001:db8:10::/56"]);
    assert_eq!(allowlist(&plan, "test"), Vec::<String>::new(), "environments never mix");

    let labels = json!({"access.jpki.dev/environment": "production", "app.kubernetes.io/managed-by": "jpki-access"});
    assert_eq!(
        child(&plan, "production", "NetworkPolicy", "jpki-production-default-deny"),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "jpki-production-default-deny", "namespace": "jpki-production", "labels": labels, "ownerReferences": owner_refs("production")},
            "spec": {"podSelector": {"matchLabels": {"app": "revocation"}}, "policyTypes": ["Ingress"]}
        })
    );
    assert_eq!(
        child(&plan, "production", "NetworkPolicy", "jpki-production-allow-0"),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "jpki-production-allow-0", "namespace": "jpki-production", "labels": labels, "ownerReferences": owner_refs("production")},
            "spec": {
                "podSelector": {"matchLabels": {"app": "revocation"}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"ipBlock": {"cidr": "192.0.2.0/27"}}, {"ipBlock": {"cidr": "2001:db8:10::/56"}}],
                    "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8081}]
                }]
            }
        })
    );
    let shard_text = "192.0.2.0/27\n2001:db8:10::/56\n";
    let digest = crate::domain::digest::digest_bytes(shard_text.as_bytes());
    let mut shard_labels = labels.clone();
    shard_labels["access.jpki.dev/allowlist"] = json!("shard");
    assert_eq!(
        child(&plan, "production", "AccessAllowlistShard", "jpki-allowlist-production-0"),
        json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessAllowlistShard",
            "metadata": {"name": "jpki-allowlist-production-0", "namespace": "jpki-system", "labels": shard_labels, "ownerReferences": owner_refs("production")},
            "spec": {"environment": "production", "cidrs": shard_text}
        })
    );
    let mut index_labels = labels.clone();
    index_labels["access.jpki.dev/allowlist"] = json!("index");
    // Planned unsigned (serial 0, no signature): the controller signs as it writes.
    assert_eq!(
        child(&plan, "production", "AccessAllowlist", "jpki-allowlist-production"),
        json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessAllowlist",
            "metadata": {"name": "jpki-allowlist-production", "namespace": "jpki-system", "labels": index_labels, "ownerReferences": owner_refs("production")},
            "spec": {"environment": "production", "purpose": "Enforce", "serial": 0, "digest": digest, "cidrCount": 2, "registrations": 1,
                     "shards": [{"name": "jpki-allowlist-production-0", "digest": digest, "count": 2}],
                     "ports": [{"protocol": "TCP", "port": 443}], "signature": ""}
        })
    );
    assert_eq!(plan.environments["production"].digest, digest);
    let status = &reg_plan(&plan, "sapporo", "prod").status;
    assert_eq!(status.effective_cidrs, vec!["192.0.2.0/27".into(), "2001:db8:10::/56".into()]);
    assert_eq!(status.url_notice.as_deref(), Some("prod-url-notice"));
}

#[test]
fn without_an_approval_or_with_a_rejection_nothing_is_live() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    w.registrations.push(reg.clone());
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!(phase(&plan, "sapporo", "prod"), PendingApproval);
    assert!(allowlist(&plan, "production").is_empty());

    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.approvals.push(reject(&reg, "2026-03-06T01:00:00Z"));
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!(phase(&plan, "sapporo", "prod"), Rejected, "the newest decision wins");
    assert!(allowlist(&plan, "production").is_empty());
    let status = &reg_plan(&plan, "sapporo", "prod").status;
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "Rejected"));
}

#[test]
fn a_widening_edit_waits_for_approval_and_a_narrowing_edit_takes_effect_at_once() {
    let mut w = World::new();
    let approved = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/24"], "2026-04-01", Some("2027-03-31"));
    w.approvals.push(approve(&approved, "2026-03-05T01:00:00Z"));
    let mut widened = approved.clone();
    widened.spec.source_cidrs.push("198.51.100.0/24".into());
    widened.spec.access_start_date = "2026-03-15".into();
    widened.spec.access_end_date = None;
    w.registrations.push(widened);
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!(phase(&plan, "sapporo", "prod"), Active, "the approved content stays live: no outage");
    assert_eq!(allowlist(&plan, "production"), ["192.0.2.0/24"]);
    let pending = reg_plan(&plan, "sapporo", "prod").status.pending_difference.clone().unwrap();
    assert_eq!(pending.added_cidrs, vec!["198.51.100.0/24".into()]);
    assert_eq!(pending.earlier_start_date.as_ref().map(|d| d.as_str()), Some("2026-03-15"));
    assert_eq!(pending.end_date_removed, Some(true));

    let mut narrowed = approved.clone();
    narrowed.spec.source_cidrs = vec!["192.0.2.128/25".into()];
    narrowed.spec.access_end_date = Some("2026-06-30".into());
    w.registrations = vec![narrowed];
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!(allowlist(&plan, "production"), ["192.0.2.128/25"]);
    assert_eq!(reg_plan(&plan, "sapporo", "prod").status.pending_difference, None);
    let plan = w.plan("2026-06-30T15:00:00Z"); // 2026-07-01 00:00 JST: the narrowed end date has passed
    assert_eq!(phase(&plan, "sapporo", "prod"), Expired);
    assert!(allowlist(&plan, "production").is_empty());
}

#[test]
fn access_starts_at_midnight_jst_and_ends_after_the_end_date() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", Some("2026-09-30"));
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);

    let before = w.plan("2026-03-31T14:59:59Z"); // 23:59:59 JST on 31 March
    assert_eq!(phase(&before, "sapporo", "prod"), Scheduled);
    assert!(allowlist(&before, "production").is_empty());
    assert_eq!(before.next_transition(), Some(t("2026-03-31T15:00:00Z")), "requeue exactly at the start");
    assert_eq!(reg_plan(&before, "sapporo", "prod").status.next_transition.as_deref(), Some("2026-03-31T15:00:00Z"));

    let start = w.plan("2026-03-31T15:00:00Z");
    assert_eq!(phase(&start, "sapporo", "prod"), Active);
    assert_eq!(allowlist(&start, "production"), ["192.0.2.0/28"]);
    assert_eq!(start.next_transition(), Some(t("2026-09-30T15:00:00Z")), "then at the end");

    let last_second = w.plan("2026-09-30T14:59:59Z");
    assert_eq!(phase(&last_second, "sapporo", "prod"), Active);
    let after = w.plan("2026-09-30T15:00:00Z");
    assert_eq!(phase(&after, "sapporo", "prod"), Expired);
    assert!(allowlist(&after, "production").is_empty());
}

#[test]
fn a_successor_takes_over_at_its_start_and_the_predecessor_steps_down_at_that_instant() {
    let mut w = World::new();
    let old = registration("sapporo", "prod-2026", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let mut new = registration("sapporo", "prod-2027", Environment::Production, &["198.51.100.0/28"], "2026-07-01", None);
    new.spec.supersedes = Some("prod-2026".into());
    new.spec.reason = RegistrationReason::SystemConfigurationChange;
    w.approvals.push(approve(&old, "2026-03-05T01:00:00Z"));
    w.approvals.push(approve(&new, "2026-06-01T01:00:00Z"));
    w.registrations = vec![old, new];

    let before = w.plan("2026-06-30T14:59:59Z");
    assert_eq!((phase(&before, "sapporo", "prod-2026"), phase(&before, "sapporo", "prod-2027")), (Active, Scheduled));
    assert_eq!(allowlist(&before, "production"), ["192.0.2.0/28"]);
    assert_eq!(before.next_transition(), Some(t("2026-06-30T15:00:00Z")));
    assert_eq!(reg_plan(&before, "sapporo", "prod-2026").next_transition, Some(t("2026-06-30T15:00:00Z")));

    let at = w.plan("2026-06-30T15:00:00Z");
    assert_eq!((phase(&at, "sapporo", "prod-2026"), phase(&at, "sapporo", "prod-2027")), (Superseded, Active));
    assert_eq!(allowlist(&at, "production"), ["198.51.100.0/28"]);
    assert!(reg_plan(&at, "sapporo", "prod-2026").status.effective_cidrs.is_empty());
}

#[test]
fn overlapping_cidrs_of_two_verifiers_go_to_the_one_approved_first() {
    let mut w = World::new();
    let first = registration("sapporo", "a", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let mut second = registration("hakodate", "b", Environment::Production, &["192.0.2.128/25", "198.51.100.0/24"], "2026-04-01", None);
    second.metadata.namespace = Some("ns-hakodate".into());
    w.approvals.push(approve(&second, "2026-03-06T01:00:00Z"));
    w.approvals.push(approve(&first, "2026-03-05T01:00:00Z"));
    w.registrations = vec![second, first];
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!((phase(&plan, "sapporo", "a"), phase(&plan, "hakodate", "b")), (Active, Conflict));
    assert_eq!(allowlist(&plan, "production"), ["192.0.2.0/24"], "a registration in conflict contributes nothing");
    let conflicts = &reg_plan(&plan, "hakodate", "b").status.conflicts;
    assert_eq!(conflicts.len(), 1);
    assert_eq!((conflicts[0].namespace.as_str(), conflicts[0].name.as_str(), conflicts[0].verifier.as_str()), ("ns-sapporo", "a", "sapporo"));
    assert_eq!(conflicts[0].cidrs, vec!["192.0.2.128/25".into()]);
    assert!(reg_plan(&plan, "sapporo", "a").status.conflicts.is_empty());

    // One verifier's own registrations may overlap.
    let mut w2 = World::new();
    let a = registration("sapporo", "a", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let b = registration("sapporo", "b", Environment::Production, &["192.0.2.0/25"], "2026-04-01", None);
    w2.approvals = vec![approve(&a, "2026-03-05T01:00:00Z"), approve(&b, "2026-03-06T01:00:00Z")];
    w2.registrations = vec![a, b];
    let plan = w2.plan("2026-05-01T00:00:00Z");
    assert_eq!((phase(&plan, "sapporo", "a"), phase(&plan, "sapporo", "b")), (Active, Active));
}

#[test]
fn production_and_test_gates() {
    let at = "2026-05-01T00:00:00Z";
    // Start before the agreement's effective date (協定書 第13条).
    let mut w = World::new();
    let early = registration("sapporo", "early", Environment::Production, &["192.0.2.0/28"], "2026-03-01", None);
    w.approvals.push(approve(&early, "2026-02-05T01:00:00Z"));
    w.registrations.push(early);
    let plan = w.plan(at);
    assert_eq!((phase(&plan, "sapporo", "early"), plan.registrations.values().next().unwrap().resolved.reason.as_str()), (Invalid, "StartBeforeAgreement"));

    // A required verification test not on record.
    let mut w = World::new();
    w.environments[0].spec.policy.require_verification_test = true;
    w.verifiers[0].spec.procedure.as_mut().unwrap().verification_test_completed_on = None;
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    assert_eq!(reg_plan(&w.plan(at), "sapporo", "prod").resolved.reason, "VerificationTestPending");
    // Recorded for a future date: live from that day, and the plan wakes up then.
    w.verifiers[0].spec.procedure.as_mut().unwrap().verification_test_completed_on = Some("2026-05-10".into());
    let plan = w.plan(at);
    assert_eq!(phase(&plan, "sapporo", "prod"), Invalid);
    assert_eq!(plan.next_transition(), Some(t("2026-05-09T15:00:00Z")));
    assert_eq!(phase(&w.plan("2026-05-09T15:00:00Z"), "sapporo", "prod"), Active);

    // Test access needs the pledge and the test-environment application; the LGPKI route the LGWAN centre step.
    let mut w = World::new();
    w.verifiers[0].spec.procedure.as_mut().unwrap().confidentiality_pledge_received_on = None;
    let mut reg = registration("sapporo", "test", Environment::Test, &["192.0.2.0/28"], "2026-02-01", None);
    w.approvals.push(approve(&reg, "2026-01-25T01:00:00Z"));
    w.registrations.push(reg.clone());
    assert_eq!(reg_plan(&w.plan(at), "sapporo", "test").resolved.reason, "ProcedureIncomplete");
    w.verifiers[0].spec.procedure.as_mut().unwrap().confidentiality_pledge_received_on = Some("2026-01-20".into());
    assert_eq!(phase(&w.plan(at), "sapporo", "test"), Active);
    reg.spec.connection_method = ConnectionMethod::LgwanViaLgpki;
    w.registrations = vec![reg];
    assert_eq!(reg_plan(&w.plan(at), "sapporo", "test").resolved.reason, "LgwanCenterPending");
}

#[test]
fn missing_references_are_reported_never_skipped() {
    let at = "2026-05-01T00:00:00Z";
    let mut w = World::new();
    let reg = registration("nobody", "orphan", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    let plan = w.plan(at);
    let r = reg_plan(&plan, "nobody", "orphan");
    assert_eq!((r.resolved.phase, r.resolved.reason.as_str()), (Invalid, "VerifierNotFound"));
    let ready = r.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "VerifierNotFound"));

    w.environments.retain(|e| e.spec.environment != Environment::Production);
    w.registrations[0].spec.verifier_ref = "sapporo".into();
    w.registrations[0].metadata.namespace = Some("ns-sapporo".into());
    let plan = w.plan(at);
    assert_eq!(reg_plan(&plan, "sapporo", "orphan").resolved.reason, "EnvironmentNotFound");

    // Wrong namespace: one verifier, one namespace.
    let mut w = World::new();
    let mut reg = registration("sapporo", "moved", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    reg.metadata.namespace = Some("ns-hakodate".into());
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    assert_eq!(reg_plan(&w.plan(at), "hakodate", "moved").resolved.reason, "NamespaceMismatch");
}

#[test]
fn large_sets_are_sharded_with_stable_names() {
    let mut w = World::new();
    w.environments[0].spec.policy = EnvironmentPolicy { max_cidrs_per_object: 2, ..EnvironmentPolicy::default() };
    let reg = registration(
        "sapporo",
        "prod",
        Environment::Production,
        &["192.0.2.0/28", "192.0.2.64/28", "198.51.100.0/28", "203.0.113.0/28", "2001:db8::/48"],
        "2026-04-01",
        None,
    );
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    let plan = w.plan("2026-05-01T00:00:00Z");
    let names: Vec<String> = plan.environments["production"].children.iter().map(|c| c.identity().3).collect();
    assert_eq!(
        names,
        [
            "jpki-production-default-deny",
            "jpki-production-allow-0",
            "jpki-production-allow-1",
            "jpki-production-allow-2",
            "jpki-allowlist-production",
            "jpki-allowlist-production-0",
            "jpki-allowlist-production-1",
            "jpki-allowlist-production-2",
            "jpki-production-ocsp",
            "jpki-production-crl",
        ]
    );
    let shard = child(&plan, "production", "AccessAllowlistShard", "jpki-allowlist-production-2");
    assert_eq!(shard["spec"]["cidrs"], "2001:db8::/48\n");
    let index = child(&plan, "production", "AccessAllowlist", "jpki-allowlist-production");
    assert_eq!(index["spec"]["shards"].as_array().unwrap().len(), 3);
}

#[test]
fn a_mass_removal_is_held_until_confirmed_and_a_single_revocation_never_is() {
    let mut w = World::new();
    w.environments[0].spec.policy.mass_revocation_hold = Some(MassRevocationHold { percent: 25, min_cidrs: 2, window_hours: None });
    let regs: Vec<AccessRegistration> =
        (0..4).map(|i| registration("sapporo", &format!("r{i}"), Environment::Production, &[&format!("198.51.{}.0/24", i * 2)], "2026-04-01", None)).collect();
    w.approvals = regs.iter().map(|r| approve(r, "2026-03-05T01:00:00Z")).collect();
    w.registrations = regs.clone();
    let full = w.plan("2026-05-01T00:00:00Z");
    w.publish(&full);

    // One revocation: immediate.
    let mut one_less = w.clone();
    one_less.registrations.truncate(3);
    let plan = one_less.plan("2026-05-01T00:00:00Z");
    assert!(plan.environments["production"].hold.is_none());
    assert_eq!(allowlist(&plan, "production").len(), 3);

    // Three at once (75 %; their approvals deleted): held, the previous set stays published, the environment says
    // how to confirm, and the three registrations say Held.
    let mut mass = w.clone();
    mass.approvals.truncate(1);
    let plan = mass.plan("2026-05-01T00:00:00Z");
    let e = &plan.environments["production"];
    let hold = e.hold.clone().unwrap();
    assert_eq!((hold.removed_cidrs, hold.baseline_cidrs, hold.affected_registrations), (3, 4, 3));
    assert_eq!(allowlist(&plan, "production").len(), 4);
    for name in ["r1", "r2", "r3"] {
        let held = reg_plan(&plan, "sapporo", name);
        assert_eq!(held.resolved.phase, RegistrationPhase::Held, "{name}: its CIDRs are still published");
        assert_eq!(held.status.effective_cidrs.len(), 1);
    }
    let held = e.status.conditions.iter().find(|c| c.type_ == "Held").unwrap();
    assert_eq!(held.status, "True");
    assert!(held.message.contains(&hold.held_digest) && held.message.contains(RELEASE_ANNOTATION));

    // Confirmed with the held digest: released.
    mass.environments[0].metadata.annotations = Some([(RELEASE_ANNOTATION.to_string(), hold.held_digest.clone())].into());
    let plan = mass.plan("2026-05-01T00:00:00Z");
    assert!(plan.environments["production"].hold.is_none());
    assert_eq!(allowlist(&plan, "production"), ["198.51.0.0/24"]);
}

#[test]
fn setup_due_date_and_overdue_flag() {
    let mut w = World::new();
    w.registrations.push(registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None));
    let on_due_day = w.plan("2026-03-08T14:59:59Z"); // 2026-03-08 23:59:59 JST; received 03-01, due 03-08
    let status = &reg_plan(&on_due_day, "sapporo", "prod").status;
    assert_eq!((status.setup_due_date.as_ref().map(|d| d.as_str()), status.setup_overdue), (Some("2026-03-08"), Some(false)));
    assert_eq!(on_due_day.next_transition(), Some(t("2026-03-08T15:00:00Z")));
    let late = w.plan("2026-03-08T15:00:00Z");
    assert_eq!(reg_plan(&late, "sapporo", "prod").status.setup_overdue, Some(true));
}

#[test]
fn conditions_keep_their_transition_time_while_unchanged() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    let first = w.plan("2026-05-01T00:00:00Z");
    w.registrations[0].status = Some(reg_plan(&first, "sapporo", "prod").status.clone());
    let again = w.plan("2026-05-02T00:00:00Z");
    assert_eq!(reg_plan(&again, "sapporo", "prod").status, reg_plan(&first, "sapporo", "prod").status, "nothing changed, nothing to write");
    let ready = |p: &Plan| reg_plan(p, "sapporo", "prod").status.conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
    assert_eq!(ready(&again).last_transition_time.0, t("2026-05-01T00:00:00Z"));
}

#[test]
fn the_url_notice_lists_the_chosen_methods() {
    let mut w = World::new();
    let mut reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", Some("2031-03-31"));
    reg.spec.provision_methods = Some(ProvisionMethods { signing: Some(ProvisionMethod::Ocsp), user_authentication: Some(ProvisionMethod::None) });
    // A signature verifier only: it has no user-authentication certificates to check (None fits its role).
    w.verifiers[0].spec.roles = vec![VerifierRole::SignatureVerifier];
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    let plan = w.plan("2026-05-01T00:00:00Z");
    let p = reg_plan(&plan, "sapporo", "prod");
    let notice = p.notice_data.clone().unwrap();
    assert_eq!(
        serde_json::to_value(&notice).unwrap(),
        json!({
            "registration": "prod", "namespace": "ns-sapporo", "verifier": "sapporo", "environment": "Production",
            "accessStart": "2026-04-01", "accessEnd": "2031-03-31",
            "endpoints": [{"certificateType": "signing", "provisionMethod": "Ocsp", "url": "https://ocsp.production.example/"}]
        })
    );
    let cm = p.notice.as_ref().unwrap().to_json();
    assert_eq!(cm["metadata"]["name"], "prod-url-notice");
    assert_eq!(cm["metadata"]["namespace"], "ns-sapporo");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "AccessRegistration");
    assert!(cm["data"]["notice.ja.txt"].as_str().unwrap().contains("署名用電子証明書 (OCSPレスポンダ方式): https://ocsp.production.example/"));
    assert!(!cm["data"]["notice.ja.txt"].as_str().unwrap().contains("crl"));
}

#[test]
fn the_nft_ruleset_carries_the_published_sets() {
    let mut w = World::new();
    let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28", "2001:db8:10::/56"], "2026-04-01", None);
    w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z"));
    w.registrations.push(reg);
    let plan = w.plan("2026-05-01T00:00:00Z");
    let nft = &plan.environments["production"].nft;
    let expected = nft::render_ruleset(
        "production",
        &["192.0.2.0/28".parse().unwrap()],
        &["2001:db8:10::/56".parse().unwrap()],
        &w.environments[0].spec.firewall.as_ref().unwrap().ports,
    );
    assert_eq!(nft, &expected);
}

#[test]
fn a_gateway_exposure_renders_one_httproute_per_endpoint() {
    let mut w = World::new();
    w.environments[0].spec.exposure = Some(crate::api::environment::Exposure {
        ingress_class_name: None,
        gateway: Some(crate::api::environment::GatewayRef { name: "jpki".into(), namespace: Some("gateways".into()), section_name: Some("https".into()) }),
    });
    let plan = w.plan("2026-05-01T00:00:00Z");
    let route = child(&plan, "production", "HTTPRoute", "jpki-production-crl");
    assert_eq!(
        route,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "jpki-production-crl", "namespace": "jpki-production",
                         "labels": {"access.jpki.dev/environment": "production", "app.kubernetes.io/managed-by": "jpki-access"},
                         "ownerReferences": owner_refs("production")},
            "spec": {"parentRefs": [{"name": "jpki", "namespace": "gateways", "sectionName": "https"}],
                     "hostnames": ["crl.production.example"],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/crl"}}], "backendRefs": [{"name": "crl", "port": 8080}]}]}
        })
    );
    assert!(plan.environments["production"].children.iter().all(|c| c.identity().1 != "Ingress"));
}

#[test]
fn a_held_removal_stays_held_on_the_next_pass_until_released() {
    let mut w = World::new();
    w.environments[0].spec.policy.mass_revocation_hold = Some(MassRevocationHold { percent: 25, min_cidrs: 2, window_hours: None });
    let regs: Vec<AccessRegistration> =
        (0..4).map(|i| registration("sapporo", &format!("r{i}"), Environment::Production, &[&format!("198.51.{}.0/24", i * 2)], "2026-04-01", None)).collect();
    w.approvals = regs.iter().map(|r| approve(r, "2026-03-05T01:00:00Z")).collect();
    w.registrations = regs;
    let full = w.plan("2026-05-01T00:00:00Z");
    w.publish(&full);
    w.registrations.truncate(1);
    // Pass after pass (each one reading back what the previous one published), the removal stays held; also after
    // a restart, when the previous set comes from the statuses.
    for pass in 0..4 {
        if pass == 2 {
            w.previously_live = None;
        }
        let plan = w.plan("2026-05-01T00:00:00Z");
        assert!(plan.environments["production"].hold.is_some(), "released by itself on pass {pass}");
        assert_eq!(allowlist(&plan, "production").len(), 4);
        w.publish(&plan);
        for reg in &mut w.registrations {
            reg.status = Some(plan.registrations[&RegKey::of(reg)].status.clone());
        }
    }
}

#[test]
fn a_successor_in_conflict_does_not_make_its_predecessor_step_down() {
    let mut w = World::new();
    let old = registration("sapporo", "a1", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
    let mut new = registration("sapporo", "a2", Environment::Production, &["198.51.100.0/28"], "2026-04-01", None);
    new.spec.supersedes = Some("a1".into());
    let mut other = registration("hakodate", "h", Environment::Production, &["198.51.100.0/24"], "2026-04-01", None);
    other.metadata.namespace = Some("ns-hakodate".into());
    w.approvals = vec![approve(&old, "2026-03-01T01:00:00Z"), approve(&other, "2026-03-02T01:00:00Z"), approve(&new, "2026-03-03T01:00:00Z")];
    w.registrations = vec![old, new, other];
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!((phase(&plan, "sapporo", "a1"), phase(&plan, "sapporo", "a2"), phase(&plan, "hakodate", "h")), (Active, Conflict, Active));
    assert_eq!(allowlist(&plan, "production"), ["192.0.2.0/28", "198.51.100.0/24"], "sapporo keeps its old access");
}

#[test]
fn re_approving_a_widening_keeps_the_place_in_line_for_conflicts() {
    let mut w = World::new();
    let mut sapporo = registration("sapporo", "s", Environment::Production, &["192.0.2.0/24"], "2026-04-01", None);
    let mut hakodate = registration("hakodate", "h", Environment::Production, &["192.0.2.0/25", "203.0.113.0/24"], "2026-04-01", None);
    hakodate.metadata.namespace = Some("ns-hakodate".into());
    w.approvals = vec![approve(&sapporo, "2026-03-01T01:00:00Z"), approve(&hakodate, "2026-03-02T01:00:00Z")];
    sapporo.spec.source_cidrs.push("198.51.100.0/24".into());
    w.approvals.push(approve(&sapporo, "2026-04-10T01:00:00Z")); // the widening, approved later
    w.registrations = vec![sapporo, hakodate];
    let plan = w.plan("2026-05-01T00:00:00Z");
    assert_eq!((phase(&plan, "sapporo", "s"), phase(&plan, "hakodate", "h")), (Active, Conflict));
}

/// `n` disjoint IPv4 /28s, 64 addresses apart, from 10.0.0.0 (an aggregated allowlist in address order).
fn spaced_cidrs(n: u32, skip: Option<u32>) -> Vec<IpNet> {
    (0..n).filter(|i| Some(*i) != skip).map(|i| IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 + i * 64), 28).unwrap())).collect()
}

#[test]
fn shards_keep_every_cidr_in_order_and_never_exceed_the_maximum() {
    let cidrs = spaced_cidrs(30_000, None);
    let shards = crate::planner::children::shards(&cidrs, 5000);
    assert_eq!(shards.concat(), cidrs);
    assert!(shards.iter().all(|s| !s.is_empty() && s.len() <= 5000));
    // About 3/8 of the maximum on average: more, smaller objects than fixed chunks of 5000 (6 here).
    assert!((10..=25).contains(&shards.len()), "{} shards", shards.len());
    assert!(shards.iter().filter(|s| s.len() < 5000 / 8).count() <= 1, "only the last shard may be under the minimum");
}

#[test]
fn a_cidr_added_low_in_the_address_space_changes_one_shard_not_every_later_one() {
    use crate::planner::children::shards;
    for added in [3, 2_000, 17_777, 29_990] {
        let before = spaced_cidrs(30_000, Some(added));
        let after = spaced_cidrs(30_000, None);
        let (old, new) = (shards(&before, 5000), shards(&after, 5000));
        assert_eq!(old.len(), new.len(), "CIDR {added}: no shard appears or goes");
        let changed = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1, "CIDR {added}: only the shard it falls in changes");
        // Fixed chunks of 5000 (the old sharding) would have changed every shard from the added CIDR on.
        let fixed_changed = before.chunks(5000).zip(after.chunks(5000)).filter(|(a, b)| a != b).count();
        assert!(added > 25_000 || fixed_changed > 1);
    }
}

#[test]
fn shard_boundaries_do_not_move_between_versions() {
    // Boundaries are a function of the CIDRs alone. If this changes, every published shard is rewritten on upgrade.
    let sizes: Vec<usize> = crate::planner::children::shards(&spaced_cidrs(12_000, None), 5000).iter().map(|s| s.len()).collect();
    assert_eq!(sizes, PINNED_SHARD_SIZES);
}
const PINNED_SHARD_SIZES: &[usize] = &[1309, 681, 1729, 1663, 1462, 768, 3213, 859, 316];
