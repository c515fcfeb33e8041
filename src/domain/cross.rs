//! Rules that relate objects to each other: the namespace binding of a verifier (DESIGN §3 rule 7), the
//! agreement date and roles of the verifier behind a production registration, supersession chains, approvals that
//! name a registration, one environment object per environment, and CIDR overlaps between verifiers.
//!
//! Everything here is a pure function of the whole set of objects, linear or O(n log n) in their number, so a
//! GitOps repository with thousands of forms validates in about the time it takes to parse.

use super::cidr::{CidrPolicy, overlaps_within};
use super::forms::{self, Checked, ValidRegistration};
use super::problem::Problem;
use crate::api::verifier::VerifierRole;
use crate::api::{AccessApproval, AccessEnvironment, AccessRegistration, Environment, ProvisionMethod, SignatureVerifier};
use ipnet::IpNet;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap, HashSet};

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

/// Validates a whole set of forms.
pub fn validate_set(set: &FormSet<'_>) -> Findings {
    let mut findings = Findings::new();
    let mut add = |key: &ObjectKey, problems: Vec<Problem>| findings.entry(key.clone()).or_default().extend(problems);

    // Environments first: their policy governs the registrations' CIDRs.
    let mut policies: HashMap<Environment, CidrPolicy> = HashMap::new();
    let mut environment_names: HashMap<Environment, String> = HashMap::new();
    for env in &set.environments {
        let key = ObjectKey::of(*env);
        let checked = forms::check_environment(&env.spec);
        add(&key, checked.problems);
        if let Some(other) = environment_names.insert(env.spec.environment, env.name_any()) {
            add(&key, vec![Problem::error("spec.environment", format!(
                "AccessEnvironment {other} already serves {}: one AccessEnvironment per environment", env.spec.environment
            ))]);
        }
        if let Some(valid) = checked.value {
            policies.insert(env.spec.environment, valid.cidr_policy);
        }
    }

    let mut verifiers = HashMap::new();
    for v in &set.verifiers {
        let checked = forms::check_verifier(&v.spec);
        add(&ObjectKey::of(*v), checked.problems);
        verifiers.insert(v.name_any(), (*v, checked.value));
    }

    let registrations: HashMap<(String, String), &AccessRegistration> =
        set.registrations.iter().map(|r| ((r.namespace().unwrap_or_default(), r.name_any()), *r)).collect();
    let mut valid_registrations: Vec<(&AccessRegistration, ValidRegistration)> = Vec::new();
    for reg in &set.registrations {
        let key = ObjectKey::of(*reg);
        let policy = policies.get(&reg.spec.environment).cloned().unwrap_or(CidrPolicy::ABSOLUTE_FLOOR);
        let Checked { value, mut problems } = forms::check_registration(&reg.spec, &policy);
        if !set.environments.is_empty() && !policies.contains_key(&reg.spec.environment) {
            problems.push(Problem::warning("spec.environment", format!(
                "no valid AccessEnvironment for {} among the given objects; CIDRs were checked against the absolute floor only",
                reg.spec.environment
            )));
        }
        problems.extend(verifier_rules(reg, value.as_ref(), &verifiers));
        problems.extend(supersedes_rules(reg, &registrations));
        if let Some(valid) = value {
            valid_registrations.push((reg, valid));
        }
        add(&key, problems);
    }

    for approval in &set.approvals {
        let key = ObjectKey::of(*approval);
        let checked = forms::check_approval(&approval.spec);
        let mut problems = checked.problems;
        let namespace = approval.namespace().unwrap_or_default();
        match registrations.get(&(namespace.clone(), approval.spec.registration_ref.clone())) {
            None => problems.push(Problem::error("spec.registrationRef", format!(
                "no AccessRegistration {} in namespace {namespace:?} among the given objects", approval.spec.registration_ref
            ))),
            Some(reg) => {
                if let Some(content) = &approval.spec.approved
                    && content.environment != reg.spec.environment
                {
                    problems.push(Problem::error("spec.approved.environment", format!(
                        "the registration is for {}, the approval for {}: environments never mix", reg.spec.environment, content.environment
                    )));
                }
            }
        }
        add(&key, problems);
    }

    for (key, problems) in overlap_rules(&valid_registrations) {
        add(&key, problems);
    }
    findings.retain(|_, problems| !problems.is_empty());
    findings
}

/// Namespace binding, agreement date, roles versus provision methods, and the procedure gates (as warnings:
/// the planner holds access back until they are on record).
fn verifier_rules(
    reg: &AccessRegistration,
    valid: Option<&ValidRegistration>,
    verifiers: &HashMap<String, (&SignatureVerifier, Option<forms::ValidVerifier>)>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some((verifier, verifier_valid)) = verifiers.get(&reg.spec.verifier_ref) else {
        problems.push(Problem::error("spec.verifierRef", format!(
            "no SignatureVerifier {:?} among the given objects", reg.spec.verifier_ref
        )));
        return problems;
    };
    match reg.namespace() {
        None => problems.push(Problem::error("metadata.namespace", format!(
            "set the namespace: registrations of {} live in namespace {:?}", reg.spec.verifier_ref, verifier.spec.namespace
        ))),
        Some(ns) if ns != verifier.spec.namespace => problems.push(Problem::error("spec.verifierRef", format!(
            "verifier {} files its forms in namespace {:?}, not {ns:?}: one verifier, one namespace",
            reg.spec.verifier_ref, verifier.spec.namespace
        ))),
        Some(_) => {}
    }
    let methods = reg.spec.provision_methods.clone().unwrap_or_default();
    for (role, method, field) in [
        (VerifierRole::SignatureVerifier, methods.signing, "spec.provisionMethods.signing"),
        (VerifierRole::UserAuthenticationVerifier, methods.user_authentication, "spec.provisionMethods.userAuthentication"),
    ] {
        let has_role = verifier.spec.roles.contains(&role);
        match method {
            Some(ProvisionMethod::None) if has_role && reg.spec.environment == Environment::Production => {
                problems.push(Problem::error(field, format!("the verifier is a {role:?}: choose Crl or Ocsp for this certificate type")))
            }
            Some(ProvisionMethod::Crl | ProvisionMethod::Ocsp) if !has_role => problems.push(Problem::warning(
                field,
                format!("the verifier does not list the role {role:?}; set None or add the role"),
            )),
            _ => {}
        }
    }
    let (Some(valid), Some(vv)) = (valid, verifier_valid) else { return problems };
    match reg.spec.environment {
        Environment::Production => match vv.agreement_effective {
            None => problems.push(Problem::error("spec.accessStartDate", format!(
                "verifier {} has no agreement (協定書) on record: production access starts on or after its effective date",
                reg.spec.verifier_ref
            ))),
            Some(effective) if valid.start < effective => problems.push(Problem::error("spec.accessStartDate", format!(
                "{} is before the agreement's effective date {effective} (協定書 第13条): start on or after it",
                valid.start
            ))),
            Some(_) => {}
        },
        Environment::Test => {
            if vv.pledge_received.is_none() || vv.test_application_received.is_none() {
                problems.push(Problem::warning("spec.verifierRef", format!(
                    "verifier {} has no confidentiality pledge (A-03-3) and test-environment application (A-03-4) on record yet; test access waits for both",
                    reg.spec.verifier_ref
                )));
            }
            if reg.spec.connection_method == crate::api::ConnectionMethod::LgwanViaLgpki && vv.lgwan_center_notified.is_none() {
                problems.push(Problem::warning("spec.connectionMethod", "the LGPKI route also needs the LGWAN全国センター step (A-8) on record (spec.procedure.lgwanCenterNotifiedOn of the verifier)"));
            }
        }
    }
    problems
}

/// `supersedes` names a registration of the same namespace, verifier and environment, and chains have no cycle.
fn supersedes_rules(reg: &AccessRegistration, registrations: &HashMap<(String, String), &AccessRegistration>) -> Vec<Problem> {
    let Some(target) = reg.spec.supersedes.as_deref() else { return Vec::new() };
    if target == reg.name_any() {
        return vec![Problem::error("spec.supersedes", "a registration cannot supersede itself")];
    }
    let namespace = reg.namespace().unwrap_or_default();
    let Some(old) = registrations.get(&(namespace.clone(), target.to_string())) else {
        return vec![Problem::error("spec.supersedes", format!("no AccessRegistration {target:?} in namespace {namespace:?} among the given objects"))];
    };
    if old.spec.verifier_ref != reg.spec.verifier_ref || old.spec.environment != reg.spec.environment {
        return vec![Problem::error("spec.supersedes", format!(
            "{target} belongs to verifier {} in {}; a registration can only supersede one of the same verifier and environment",
            old.spec.verifier_ref, old.spec.environment
        ))];
    }
    // Follow the chain; each step is a hash lookup and the chain is at most as long as the namespace's forms.
    let mut seen = HashSet::from([reg.name_any()]);
    let mut current = *old;
    loop {
        if !seen.insert(current.name_any()) {
            return vec![Problem::error("spec.supersedes", format!("the supersedes chain from {} loops back through {}", reg.name_any(), current.name_any()))];
        }
        match current.spec.supersedes.as_deref().and_then(|n| registrations.get(&(namespace.clone(), n.to_string()))) {
            Some(next) => current = *next,
            None => return Vec::new(),
        }
    }
}

/// Overlapping CIDRs of different verifiers in one environment: both registrations are told with whom. The
/// controller keeps the CIDRs with the registration approved first; here, before any approval, it is an error.
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
                out.push((ObjectKey::of(me), vec![Problem::error(format!("spec.sourceCidrs[{}]", mine.0), format!(
                    "{} overlaps {theirs} of {}/{} (verifier {}) in {environment}: the registration approved first keeps it, the other is held in Conflict",
                    mine.1, other.namespace().unwrap_or_default(), other.name_any(), other.spec.verifier_ref
                ))]));
            }
        }
    }
    out
}
