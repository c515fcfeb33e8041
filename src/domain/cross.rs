//! `validate`'s view of a set of forms: every object's findings, from the rule engine the controller uses
//! (`super::rules`), plus the overlaps between registrations not yet approved (a warning here; the planner decides
//! conflicts between approved ones, and `crate::cli::validate` reports them).
//!
//! Everything here is a pure function of the whole set of objects, linear or O(n log n) in their number, so a
//! GitOps repository with thousands of forms validates in about the time it takes to parse.

use super::cidr::{CidrPolicy, overlaps_within};
use super::forms::{self, ValidRegistration};
use super::problem::Problem;
use super::rules::{self, Reason, decisions};
use crate::api::{AccessApproval, AccessEnvironment, AccessRegistration, Environment, SignatureVerifier};
use ipnet::IpNet;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};

/// Which object a problem belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn of<K: kube::Resource<DynamicType = ()>>(obj: &K) -> Self {
        ObjectKey { kind: leak_kind::<K>(), namespace: obj.meta().namespace.clone(), name: obj.meta().name.clone().unwrap_or_default() }
    }
}

fn leak_kind<K: kube::Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "SignatureVerifier" => "SignatureVerifier",
        "AccessRegistration" => "AccessRegistration",
        "AccessApproval" => "AccessApproval",
        "AccessEnvironment" => "AccessEnvironment",
        _ => "Object",
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// Every form of one validation run.
#[derive(Default)]
pub struct FormSet<'a> {
    pub verifiers: Vec<&'a SignatureVerifier>,
    pub registrations: Vec<&'a AccessRegistration>,
    pub approvals: Vec<&'a AccessApproval>,
    pub environments: Vec<&'a AccessEnvironment>,
}

/// Problems per object: the single-object checks and the cross-object rules together.
pub type Findings = BTreeMap<ObjectKey, Vec<Problem>>;

/// Validates a whole set of forms at `now` with the rule engine the controller uses (`super::rules`). Files
/// carry no records, so no recorded fact applies.
pub fn validate_set(set: &FormSet<'_>, now: jiff::Timestamp) -> Findings {
    let mut findings = Findings::new();
    let mut add = |key: ObjectKey, problems: Vec<Problem>| findings.entry(key).or_default().extend(problems);

    let in_force = rules::environments_in_force(&set.environments);
    for env in &set.environments {
        add(ObjectKey::of(*env), in_force.problems.get(&env.name_any()).cloned().unwrap_or_default());
    }
    let objects = rules::Objects { verifiers: &set.verifiers, registrations: &set.registrations, approvals: &set.approvals, records: &[] };
    let mut verifier_checks = HashMap::new();
    let ctx = rules::Context::new(objects, in_force.rules.clone(), !set.environments.is_empty(), |v| {
        let checked = forms::check_verifier(&v.spec);
        verifier_checks.insert(v.name_any(), checked.problems);
        checked.value
    });
    for v in &set.verifiers {
        let mut problems = verifier_checks.remove(&v.name_any()).unwrap_or_default();
        problems.extend(rules::verifier_problems(&v.name_any(), &ctx));
        add(ObjectKey::of(*v), problems);
    }

    let mut valid_registrations: Vec<(&AccessRegistration, ValidRegistration)> = Vec::new();
    for reg in &set.registrations {
        let judged = rules::judge_registration(reg, &ctx, now);
        // Without any AccessEnvironment among the files, CIDRs are judged against the absolute floor only.
        let problems = judged.problems;
        // The overlap rule looks at every registration whose form is valid, approved or not.
        if let Some(valid) = forms::check_registration(&reg.spec, &judged.rules.map(|r| r.cidr_policy).unwrap_or(CidrPolicy::ABSOLUTE_FLOOR)).value {
            valid_registrations.push((reg, valid));
        }
        add(ObjectKey::of(*reg), problems);
    }

    for approval in &set.approvals {
        let checked = forms::check_approval(&approval.spec);
        let mut problems: Vec<Problem> = checked.problems.into_iter().filter(|p| !p.is_error()).collect();
        let namespace = approval.namespace().unwrap_or_default();
        let verdict = match ctx.registrations.get(&(namespace.as_str(), approval.spec.registration_ref.as_str())) {
            None => decisions::not_found(approval),
            Some(reg) => {
                decisions::decide(reg, &ctx).verdicts.into_iter().find(|v| v.name == approval.name_any()).unwrap_or_else(|| decisions::not_found(approval))
            }
        };
        if !verdict.accepted {
            let (field, message) = verdict.message.split_once(": ").map(|(f, m)| (f.to_string(), m.to_string())).unwrap_or_default();
            problems.push(Problem::refusal(verdict.reason, field, message));
        }
        add(ObjectKey::of(*approval), problems);
    }

    for (key, problems) in overlap_rules(&valid_registrations) {
        add(key, problems);
    }
    findings.retain(|_, problems| !problems.is_empty());
    findings
}

/// Overlapping CIDRs of different verifiers in one environment: both registrations are told with whom. The
/// controller keeps the CIDRs with the registration approved first and holds the other in Conflict (the planner
/// decides that, and `validate` reports it); before any approval this is a warning.
fn overlap_rules(valid: &[(&AccessRegistration, ValidRegistration)]) -> Vec<(ObjectKey, Vec<Problem>)> {
    let mut out = Vec::new();
    for environment in [Environment::Test, Environment::Production] {
        let mut nets: Vec<IpNet> = Vec::new();
        let mut owners: Vec<(usize, usize)> = Vec::new(); // (registration index, cidr index)
        for (ri, (_, v)) in valid.iter().enumerate().filter(|(_, (_, v))| v.environment == environment) {
            for (ci, net) in v.cidrs.iter().enumerate() {
                nets.push(*net);
                owners.push((ri, ci));
            }
        }
        for (a, b, _) in overlaps_within(&nets) {
            let ((ra, ca), (rb, cb)) = (owners[a], owners[b]);
            let (reg_a, reg_b) = (valid[ra].0, valid[rb].0);
            if reg_a.spec.verifier_ref == reg_b.spec.verifier_ref {
                continue; // one verifier's own registrations may overlap (e.g. during a supersession)
            }
            for (me, mine, other, theirs) in [(reg_a, (ca, nets[a]), reg_b, nets[b]), (reg_b, (cb, nets[b]), reg_a, nets[a])] {
                out.push((ObjectKey::of(me), vec![Problem::notice(Reason::Conflict, format!("spec.sourceCidrs[{}]", mine.0), format!(
                    "{} overlaps {theirs} of {}/{} (verifier {}) in {environment}: if their access windows overlap, the registration approved first keeps it and the other is held in Conflict",
                    mine.1, other.namespace().unwrap_or_default(), other.name_any(), other.spec.verifier_ref
                ))]));
            }
        }
    }
    out
}
