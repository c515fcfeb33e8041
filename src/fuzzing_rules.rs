//! The fuzz target `rules` (issue 17): arbitrary bytes build a small world of verifiers, registrations, approvals
//! (bound or not, with good or forged digests, stored before or after their registration), durable records and a
//! clock, which the rule engine (`validate`'s view) and the planner (the controller's) both judge. Properties that
//! hold for every world:
//!
//! - nothing panics;
//! - the planner refuses a registration (Invalid) only for a reason the rule engine also gives for it;
//! - an Active registration has an approval that names its uid, whose digest is that of its copy, for its
//!   environment, stored no earlier than it; its live CIDRs lie inside both that copy and its spec;
//! - nothing recorded as superseded or expired is Active;
//! - no two Active registrations of different verifiers in one environment share an address;
//! - each environment's allowlist covers exactly the live CIDRs of that environment (no hold is configured).

use crate::api::approval::Decision;
use crate::api::record::{AccessRecordSpec, RecordEvent, RecordEventType, RecordSubject, SubjectKind, record_name};
use crate::api::registration::RegistrationPhase;
use crate::api::{AccessApproval, AccessEnvironment, AccessRecord, AccessRegistration, Environment, SignatureVerifier};
use crate::domain::cross::{FormSet, ObjectKey, validate_set};
use crate::domain::digest::digest_of;
use crate::domain::problem::Problem;
use crate::planner::liveness::RegKey;
use crate::planner::{Objects, plan};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

/// Reads choices from the input; zeros once it is used up, so every input builds a world.
struct Choices<'a>(&'a [u8], usize);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.0.get(self.1).copied().unwrap_or(0);
        self.1 += 1;
        b
    }
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }
    fn pick<'p, T>(&mut self, pool: &'p [T]) -> &'p T {
        &pool[self.below(pool.len())]
    }
    fn coin(&mut self) -> bool {
        self.byte() & 1 == 1
    }
}

const CIDRS: [&str; 9] =
    ["10.0.0.0/24", "10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24", "10.0.0.0/23", "2001:db8::/48", "2001:db8::/47", "100.64.0.0/24", "10.0.0.7/24"];
const DATES: [&str; 5] = ["2026-01-01", "2026-04-01", "2026-06-01", "2026-09-30", "2027-01-01"];
const TIMES: [&str; 6] =
    ["2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-03-01T00:00:01Z", "2026-05-01T00:00:00Z", "2026-08-01T00:00:00Z"];
const NOW: [&str; 4] = ["2026-02-01T00:00:00Z", "2026-05-15T00:00:00Z", "2026-08-15T00:00:00Z", "2027-02-01T00:00:00Z"];

fn time(text: &str) -> Option<Time> {
    text.parse().ok().map(Time)
}

fn environment(name: &str, env: &str) -> Option<AccessEnvironment> {
    serde_json::from_value(
        json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": name, "uid": format!("env-{name}"), "generation": 1},
        "spec": {"environment": env, "serviceNamespace": format!("svc-{name}"), "podSelector": {"matchLabels": {"app": "r"}},
                 "endpoints": [{"name": "ocsp", "provisionMethod": "Ocsp", "service": {"name": "ocsp", "port": 8080}, "host": "ocsp.example"},
                               {"name": "crl", "provisionMethod": "Crl", "service": {"name": "crl", "port": 8080}, "host": "crl.example", "path": "/crl"}],
                 "policy": {"minPrefixLengthV4": 8, "minPrefixLengthV6": 16, "requireVerificationTest": true}}}),
    )
    .ok()
}

fn verifier(c: &mut Choices, i: usize) -> Option<SignatureVerifier> {
    const ROLES: [&[&str]; 3] = [&["SignatureVerifier"], &["UserAuthenticationVerifier"], &["SignatureVerifier", "UserAuthenticationVerifier"]];
    let roles: &[&str] = ROLES[c.below(ROLES.len())];
    let mut procedure = json!({});
    for field in ["confidentialityPledgeReceivedOn", "testEnvironmentApplicationReceivedOn", "verificationTestCompletedOn", "lgwanCenterNotifiedOn"] {
        if c.coin() {
            procedure[field] = json!(c.pick(&DATES));
        }
    }
    let mut spec = json!({"displayName": format!("v{i}"), "organizationType": "LocalGovernment", "lgCode": "011002", "roles": roles,
        "namespace": format!("ns{}", c.below(3)), "procedure": procedure});
    if c.coin() {
        spec["agreement"] = json!({"effectiveDate": c.pick(&DATES)});
    }
    serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier",
        "metadata": {"name": format!("v{i}"), "uid": format!("uid-v{i}"), "generation": 1, "creationTimestamp": c.pick(&TIMES)}, "spec": spec}))
    .ok()
}

fn registration(c: &mut Choices, i: usize) -> Option<AccessRegistration> {
    let cidrs: Vec<&str> = (0..=c.below(3)).map(|_| *c.pick(&CIDRS)).collect();
    let method = |c: &mut Choices| *c.pick(&["Crl", "Ocsp", "None"]);
    let mut spec = json!({"verifierRef": format!("v{}", c.below(4)), "environment": c.pick(&["Test", "Production"]),
        "connectionMethod": c.pick(&["Lgwan", "LgwanViaLgpki", "Internet"]), "sourceCidrs": cidrs, "accessStartDate": c.pick(&DATES),
        "provisionMethods": {"signing": method(c), "userAuthentication": method(c)}, "officialSealAffixed": c.coin()});
    if c.coin() {
        spec["accessEndDate"] = json!(c.pick(&DATES));
    }
    if c.below(4) == 0 {
        spec["supersedes"] = json!(format!("r{}", c.below(4)));
    }
    serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
        "metadata": {"name": format!("r{}", i % 4), "namespace": format!("ns{}", c.below(3)), "uid": format!("uid-r{i}"), "generation": 1,
                     "creationTimestamp": c.pick(&TIMES)}, "spec": spec}))
    .ok()
}

/// A decision on `reg`: as `kubectl jpki approve` makes it, then perhaps tampered with.
fn decision(c: &mut Choices, reg: &AccessRegistration, i: usize) -> Option<AccessApproval> {
    let decision = if c.below(4) == 0 { Decision::Rejected } else { Decision::Approved };
    let mut a = crate::domain::approve::approval_for(reg, decision, "approver", "2026-03-01T00:00:00Z".parse().ok()?, None).ok()?;
    a.metadata.name = Some(format!("a{i}"));
    a.metadata.uid = Some(format!("uid-a{i}"));
    a.metadata.generation = Some(1);
    a.metadata.creation_timestamp = time(c.pick::<&str>(&TIMES));
    match c.below(8) {
        0 => a.spec.registration_uid = "uid-forged".into(),
        1 => {
            if let Some(copy) = a.spec.approved.as_mut() {
                copy.source_cidrs.push((*c.pick(&CIDRS)).into()); // a copy widened after the digest was taken
            }
        }
        2 => {
            if let Some(copy) = a.spec.approved.as_mut() {
                copy.source_cidrs = vec![(*c.pick(&CIDRS)).into()];
                a.spec.spec_digest = digest_of(copy).ok()?; // consistent, but approving other content
            }
        }
        3 => a.spec.approved_at = "2099-01-01T00:00:00Z".into(),
        _ => {}
    }
    Some(a)
}

fn record(c: &mut Choices, reg: &AccessRegistration, approvals: &[AccessApproval]) -> AccessRecord {
    let uid = reg.metadata.uid.clone().unwrap_or_default();
    let (type_, successor, approval_uid) = match c.below(4) {
        0 => (RecordEventType::Superseded, Some(format!("r{}", c.below(4))), None),
        1 => (RecordEventType::Expired, None, None),
        2 => (RecordEventType::Approved, None, Some(format!("uid-a{}", c.below(approvals.len() + 2)))),
        _ => (RecordEventType::Rejected, None, Some(format!("uid-a{}", c.below(approvals.len() + 2)))),
    };
    let event = RecordEvent { type_, at: (*c.pick(&TIMES)).into(), actor: None, approval: None, approval_uid, successor, digest: None, message: None };
    let subject = RecordSubject {
        kind: SubjectKind::AccessRegistration,
        namespace: reg.metadata.namespace.clone(),
        name: reg.metadata.name.clone().unwrap_or_default(),
        uid: uid.clone(),
        verifier: Some(reg.spec.verifier_ref.clone()),
        environment: Some(reg.spec.environment),
    };
    let mut r = AccessRecord::new(&record_name(SubjectKind::AccessRegistration, &uid), AccessRecordSpec { subject, events: [("e".to_string(), event)].into() });
    r.metadata.uid = Some(format!("rec-{uid}"));
    r.metadata.generation = Some(1);
    r
}

fn covered(net: &IpNet, by: &[IpNet]) -> bool {
    let by = IpNet::aggregate(&by.to_vec());
    by.iter().any(|b| b.contains(net))
}

/// The target's body (see the module's documentation for the properties).
pub fn rules(data: &[u8]) {
    let mut c = Choices(data, 0);
    let environments: Vec<AccessEnvironment> = [environment("production", "Production"), environment("test", "Test")].into_iter().flatten().collect();
    let verifiers: Vec<SignatureVerifier> = (0..=c.below(3)).filter_map(|i| verifier(&mut c, i)).collect();
    let registrations: Vec<AccessRegistration> = (0..c.below(7)).filter_map(|i| registration(&mut c, i)).collect();
    let mut approvals = Vec::new();
    for i in 0..c.below(9) {
        if registrations.is_empty() {
            break;
        }
        let reg = &registrations[c.below(registrations.len())];
        if let Some(a) = decision(&mut c, reg, i) {
            approvals.push(a);
        }
    }
    let records: Vec<AccessRecord> = (0..c.below(4))
        .filter(|_| !registrations.is_empty())
        .map(|_| {
            let reg = &registrations[c.below(registrations.len())];
            record(&mut c, reg, &approvals)
        })
        .collect();
    let Ok(now) = c.pick(&NOW).parse::<jiff::Timestamp>() else { return };

    let objects = Objects::of(&verifiers, &registrations, &approvals, &environments).with_records(&records);
    let planned = plan(&objects.input(), now);
    let set = FormSet {
        verifiers: verifiers.iter().collect(),
        registrations: registrations.iter().collect(),
        approvals: approvals.iter().collect(),
        environments: environments.iter().collect(),
    };
    let findings = validate_set(&set, now);

    let mut live_by_env: std::collections::BTreeMap<Environment, Vec<(String, IpNet)>> = Default::default();
    for reg in &registrations {
        let Some(p) = planned.registrations.get(&RegKey::of(reg)) else { continue };
        let r = &p.resolved;
        if r.phase == RegistrationPhase::Invalid {
            let errors: Vec<&Problem> = findings.get(&ObjectKey::of(reg)).into_iter().flatten().filter(|p| p.is_error()).collect();
            assert!(errors.iter().any(|p| p.reason == r.reason), "{}: the planner says {}, the rule engine {errors:?}", RegKey::of(reg), r.reason);
        }
        let terminal = records.iter().any(|rec| {
            rec.spec.subject.uid == reg.metadata.uid.clone().unwrap_or_default()
                && rec.spec.events.values().any(|e| matches!(e.type_, RecordEventType::Superseded | RecordEventType::Expired))
        });
        if r.phase != RegistrationPhase::Active {
            continue;
        }
        assert!(!terminal, "{}: Active although recorded as ended", RegKey::of(reg));
        let window = r.window.as_ref().expect("an Active registration has a window");
        let spec_nets: Vec<IpNet> = reg.spec.source_cidrs.iter().filter_map(|s| s.as_str().parse().ok()).collect();
        let filed = reg.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let binding: Vec<&AccessApproval> = approvals
            .iter()
            .filter(|a| {
                a.metadata.namespace == reg.metadata.namespace
                    && a.spec.registration_ref == reg.metadata.name.clone().unwrap_or_default()
                    && Some(&a.spec.registration_uid) == reg.metadata.uid.as_ref()
                    && a.spec.decision == Decision::Approved
                    && a.spec
                        .approved
                        .as_ref()
                        .is_some_and(|copy| digest_of(copy).ok().as_ref() == Some(&a.spec.spec_digest) && copy.environment == reg.spec.environment)
                    && a.metadata.creation_timestamp.as_ref().map(|t| t.0) >= filed
            })
            .collect();
        assert!(!binding.is_empty(), "{}: Active without an approval bound to it", RegKey::of(reg));
        for net in &window.cidrs {
            assert!(covered(net, &spec_nets), "{}: {net} is live but not in the spec", RegKey::of(reg));
            let in_some_copy = binding.iter().any(|a| {
                let copy: Vec<IpNet> = a.spec.approved.iter().flat_map(|c| &c.source_cidrs).filter_map(|s| s.as_str().parse().ok()).collect();
                covered(net, &copy)
            });
            assert!(in_some_copy, "{}: {net} is live but no bound approval approved it", RegKey::of(reg));
            live_by_env.entry(reg.spec.environment).or_default().push((reg.spec.verifier_ref.clone(), *net));
        }
    }
    for e in planned.environments.values().filter(|e| !live_by_env.contains_key(&e.environment)) {
        assert!(e.cidrs.is_empty(), "{}: published {:?} with nothing live", e.name, e.cidrs);
    }
    for (environment, live) in &live_by_env {
        for (i, (va, a)) in live.iter().enumerate() {
            for (vb, b) in &live[i + 1..] {
                assert!(va == vb || !(a.contains(b) || b.contains(a)), "{environment}: {a} ({va}) and {b} ({vb}) are both live");
            }
        }
        let env_plan = planned.environments.values().find(|e| e.environment == *environment).expect("both environments are planned");
        let nets: Vec<IpNet> = live.iter().map(|(_, n)| *n).collect();
        for n in &env_plan.cidrs {
            assert!(covered(n, &nets), "{environment}: {n} published but not live");
        }
        for n in &nets {
            assert!(covered(n, &env_plan.cidrs), "{environment}: {n} live but not published");
        }
    }
}

#[cfg(test)]
mod tests {
    /// A quick pass over pseudo-random worlds on every `cargo test` (the fuzzer goes much further; FUZZING.md).
    #[test]
    fn random_worlds_keep_the_properties() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let data: Vec<u8> = (0..160)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            super::rules(&data);
        }
    }
}
