//! The rule engine: every rule that judges a form against the other objects, written once, with a typed
//! [`Reason`]. `jpki-access validate` (over files) and the planner (over the cluster's objects) call the same
//! functions, so the offline gate and the controller refuse the same forms for the same reasons
//! (`tests/rules_agree.rs` checks it over every fixture).
//!
//! - [`Context`]: the objects a rule may look at, indexed once per run or pass.
//! - [`judge_registration`]: a registration's own fields, its references (environment, verifier, namespace,
//!   supersedes), roles against provision methods, and the procedure's gates.
//! - [`decisions`]: which approvals bind to a registration and which decision is in force.
//! - [`records`]: the durable facts the controller recorded (`AccessRecord`), which nothing may undo.
//!
//! Rules that relate registrations over time (supersession, conflicts) are decided by the planner's `resolve`,
//! which `validate` calls too.

pub mod decisions;
pub mod reason;
pub mod records;

pub use reason::Reason;

use super::cidr::CidrPolicy;
use super::date::{jst_date_of, start_of_day_jst};
use super::forms::{self, ValidRegistration, ValidVerifier};
use super::problem::Problem;
use crate::api::registration::ConnectionMethod;
use crate::api::verifier::VerifierRole;
use crate::api::{AccessApproval, AccessEnvironment, AccessRecord, AccessRegistration, Environment, ProvisionMethod, SignatureVerifier};
use jiff::Timestamp;
use jiff::civil::Date;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What an environment imposes on its registrations.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentRules {
    pub name: String,
    pub cidr_policy: CidrPolicy,
    pub require_verification_test: bool,
}

/// The AccessEnvironments in force: the first valid one (by name) per environment, with its rules; every other one
/// with why it is not used.
pub struct EnvironmentsInForce<'a> {
    pub objects: HashMap<Environment, &'a AccessEnvironment>,
    pub rules: HashMap<Environment, EnvironmentRules>,
    /// Problems per AccessEnvironment name: its own fields, and [`Reason::EnvironmentServedTwice`].
    pub problems: BTreeMap<String, Vec<Problem>>,
}

impl EnvironmentsInForce<'_> {
    /// The first error of an environment that is not used.
    pub fn refusal(&self, name: &str) -> Option<&Problem> {
        self.problems.get(name)?.iter().find(|p| p.is_error())
    }
}

/// Judges every AccessEnvironment; one per environment is in force.
pub fn environments_in_force<'a>(environments: &[&'a AccessEnvironment]) -> EnvironmentsInForce<'a> {
    let mut sorted: Vec<&AccessEnvironment> = environments.to_vec();
    sorted.sort_by_key(|e| e.metadata.name.clone());
    let mut out = EnvironmentsInForce { objects: HashMap::new(), rules: HashMap::new(), problems: BTreeMap::new() };
    for env in sorted {
        let name = env.metadata.name.clone().unwrap_or_default();
        let checked = forms::check_environment(&env.spec);
        let mut problems = checked.problems;
        match (checked.value, out.objects.get(&env.spec.environment)) {
            (None, _) => {}
            (Some(_), Some(first)) => problems.push(Problem::refusal(
                Reason::EnvironmentServedTwice,
                "spec.environment",
                format!(
                    "AccessEnvironment {} already serves {}: one AccessEnvironment per environment",
                    first.metadata.name.clone().unwrap_or_default(),
                    env.spec.environment
                ),
            )),
            (Some(valid), None) => {
                out.objects.insert(env.spec.environment, env);
                out.rules.insert(
                    env.spec.environment,
                    EnvironmentRules {
                        name: name.clone(),
                        cidr_policy: valid.cidr_policy,
                        require_verification_test: env.spec.policy.require_verification_test,
                    },
                );
            }
        }
        if !problems.is_empty() {
            out.problems.insert(name, problems);
        }
    }
    out
}

/// A verifier as the rules see it: the object, its own validity, and whether it owns the namespace it names.
pub struct VerifierEntry<'a> {
    pub object: &'a SignatureVerifier,
    pub valid: Option<ValidVerifier>,
    /// The verifier that claimed the same namespace first, when it is not this one.
    pub namespace_taken_by: Option<&'a str>,
}

/// The objects the rules look at, indexed once.
pub struct Context<'a> {
    pub verifiers: HashMap<&'a str, VerifierEntry<'a>>,
    /// Registrations by namespace and name.
    pub registrations: HashMap<(&'a str, &'a str), &'a AccessRegistration>,
    /// Approvals by namespace and the registration they name.
    pub approvals: HashMap<(&'a str, &'a str), Vec<&'a AccessApproval>>,
    pub environments: HashMap<Environment, EnvironmentRules>,
    /// Whether every AccessEnvironment is known: the controller's view of the cluster, or files that hold at least
    /// one. A folder of forms without any is judged against the absolute CIDR floor, and a missing environment is
    /// not its fault.
    pub environments_known: bool,
    pub records: records::RecordIndex<'a>,
}

/// The objects a [`Context`] is built from.
#[derive(Default, Clone, Copy)]
pub struct Objects<'a> {
    pub verifiers: &'a [&'a SignatureVerifier],
    pub registrations: &'a [&'a AccessRegistration],
    pub approvals: &'a [&'a AccessApproval],
    pub records: &'a [&'a AccessRecord],
}

impl<'a> Context<'a> {
    /// Indexes `objects`; `check` judges each verifier's own fields (the planner's memo reuses earlier verdicts).
    pub fn new(
        objects: Objects<'a>,
        environments: HashMap<Environment, EnvironmentRules>,
        environments_known: bool,
        mut check: impl FnMut(&SignatureVerifier) -> Option<ValidVerifier>,
    ) -> Self {
        // One namespace, one verifier: the verifier the API server stored first (then by name) owns it.
        let mut by_age: Vec<&SignatureVerifier> = objects.verifiers.to_vec();
        by_age.sort_by(|a, b| {
            let key = |v: &SignatureVerifier| (v.metadata.creation_timestamp.as_ref().map(|t| t.0), v.metadata.name.clone());
            key(a).cmp(&key(b))
        });
        let mut owners: HashMap<&str, &str> = HashMap::new();
        let mut verifiers = HashMap::with_capacity(by_age.len());
        for v in by_age {
            let name = v.metadata.name.as_deref().unwrap_or_default();
            let owner = *owners.entry(v.spec.namespace.as_str()).or_insert(name);
            let namespace_taken_by = (owner != name).then_some(owner);
            verifiers.insert(name, VerifierEntry { object: v, valid: check(v), namespace_taken_by });
        }
        let registrations = objects
            .registrations
            .iter()
            .map(|&r| ((r.metadata.namespace.as_deref().unwrap_or_default(), r.metadata.name.as_deref().unwrap_or_default()), r))
            .collect();
        let mut approvals: HashMap<(&str, &str), Vec<&AccessApproval>> = HashMap::new();
        for &a in objects.approvals {
            let namespace = a.metadata.namespace.as_deref().unwrap_or_default();
            approvals.entry((namespace, a.spec.registration_ref.as_str())).or_default().push(a);
        }
        Context { verifiers, registrations, approvals, environments, environments_known, records: records::RecordIndex::new(objects.records) }
    }

    /// The approvals that name `reg` (by namespace and name; whether they bind to it is [`decisions`]' business).
    pub fn approvals_of<'s>(&'s self, reg: &'s AccessRegistration) -> &'s [&'s AccessApproval] {
        let namespace = reg.metadata.namespace.as_deref().unwrap_or_default();
        let name = reg.metadata.name.as_deref().unwrap_or_default();
        self.approvals.get(&(namespace, name)).map(Vec::as_slice).unwrap_or_default()
    }
}

/// The verdict of [`judge_registration`].
#[derive(Debug, Clone, Default)]
pub struct RegistrationJudgement<'a> {
    /// Every finding, in the order the rules ran; the first error is the registration's reason.
    pub problems: Vec<Problem>,
    pub valid: Option<ValidRegistration>,
    pub verifier: Option<&'a ValidVerifier>,
    pub rules: Option<&'a EnvironmentRules>,
    /// Instants after `now` at which a gate opens by itself (a milestone dated ahead).
    pub wake_ups: Vec<Timestamp>,
}

impl RegistrationJudgement<'_> {
    /// The first refusing finding, if any: why the registration contributes nothing.
    pub fn refusal(&self) -> Option<&Problem> {
        self.problems.iter().find(|p| p.is_error())
    }
}

/// Why a verifier is refused because of the others: another verifier claimed its namespace first.
pub fn verifier_problems(name: &str, ctx: &Context<'_>) -> Vec<Problem> {
    let Some(entry) = ctx.verifiers.get(name) else {
        return Vec::new();
    };
    match entry.namespace_taken_by {
        Some(owner) => vec![Problem::refusal(
            Reason::NamespaceClaimed,
            "spec.namespace",
            format!("namespace {:?} belongs to verifier {owner}, which claimed it first: one namespace, one verifier", entry.object.spec.namespace),
        )],
        None => Vec::new(),
    }
}

/// Every rule about one registration: its own fields, its references, roles against provision methods, and the
/// procedure's gates at `now`. The agreement gate judges the start access would have: the later of the spec's and
/// the approved one (an edit to an earlier start waits for approval and must not cut the approved access off).
pub fn judge_registration<'a>(reg: &AccessRegistration, ctx: &'a Context<'_>, now: Timestamp) -> RegistrationJudgement<'a> {
    let approved_start = decisions::decide(reg, ctx).in_force.and_then(|b| b.valid.approved.map(|t| t.start));
    judge_registration_with(reg, ctx, now, approved_start)
}

/// [`judge_registration`] with the approved start of the decision in force already known.
pub fn judge_registration_with<'a>(reg: &AccessRegistration, ctx: &'a Context<'_>, now: Timestamp, approved_start: Option<Date>) -> RegistrationJudgement<'a> {
    let mut out = RegistrationJudgement::default();
    let environment = reg.spec.environment;
    out.rules = ctx.environments.get(&environment);
    if out.rules.is_none() && ctx.environments_known {
        out.problems.push(Problem::refusal(Reason::EnvironmentNotFound, "spec.environment", format!("no valid AccessEnvironment serves {environment}")));
        return out;
    }
    let policy = out.rules.map(|r| r.cidr_policy).unwrap_or(CidrPolicy::ABSOLUTE_FLOOR);
    let checked = forms::check_registration(&reg.spec, &policy);
    out.problems = checked.problems;
    reference_rules(reg, ctx, &mut out);
    supersedes_rules(reg, ctx, &mut out.problems);
    if let (Some(valid), Some(verifier)) = (&checked.value, out.verifier) {
        let start = approved_start.map_or(valid.start, |a| a.max(valid.start));
        gate_rules(reg, valid, start, verifier, out.rules, now, &mut out.problems, &mut out.wake_ups);
    }
    out.valid = checked.value.filter(|_| out.refusal().is_none());
    out
}

/// Verifier, namespace binding, roles against provision methods.
fn reference_rules<'a>(reg: &AccessRegistration, ctx: &'a Context<'_>, out: &mut RegistrationJudgement<'a>) {
    let name = &reg.spec.verifier_ref;
    let Some(entry) = ctx.verifiers.get(name.as_str()) else {
        out.problems.push(Problem::refusal(Reason::VerifierNotFound, "spec.verifierRef", format!("no SignatureVerifier named {name:?}")));
        return;
    };
    let verifier = entry.object;
    match reg.metadata.namespace.as_deref() {
        Some(ns) if ns == verifier.spec.namespace => {}
        found => out.problems.push(Problem::refusal(
            Reason::NamespaceMismatch,
            "spec.verifierRef",
            format!(
                "verifier {name} files its forms in namespace {:?}, not {}: one verifier, one namespace",
                verifier.spec.namespace,
                found.map(|n| format!("{n:?}")).unwrap_or_else(|| "without a namespace".into())
            ),
        )),
    }
    if let Some(owner) = entry.namespace_taken_by {
        out.problems.push(Problem::refusal(
            Reason::NamespaceClaimed,
            "spec.verifierRef",
            format!("verifier {name} names namespace {:?}, which verifier {owner} claimed first: one namespace, one verifier", verifier.spec.namespace),
        ));
    }
    match &entry.valid {
        Some(valid) => out.verifier = Some(valid),
        None => out.problems.push(Problem::refusal(Reason::VerifierInvalid, "spec.verifierRef", format!("SignatureVerifier {name} is invalid"))),
    }
    let methods = reg.spec.provision_methods.clone().unwrap_or_default();
    for (role, method, field) in [
        (VerifierRole::SignatureVerifier, methods.signing, "spec.provisionMethods.signing"),
        (VerifierRole::UserAuthenticationVerifier, methods.user_authentication, "spec.provisionMethods.userAuthentication"),
    ] {
        let has_role = verifier.spec.roles.contains(&role);
        match method {
            Some(ProvisionMethod::None) if has_role && reg.spec.environment == Environment::Production => out.problems.push(Problem::refusal(
                Reason::ProvisionMethodForRole,
                field,
                format!("the verifier is a {role:?}: choose Crl or Ocsp for this certificate type"),
            )),
            Some(ProvisionMethod::Crl | ProvisionMethod::Ocsp) if !has_role => out.problems.push(Problem::notice(
                Reason::ProvisionMethodForRole,
                field,
                format!("the verifier does not list the role {role:?}; set None or add the role"),
            )),
            _ => {}
        }
    }
}

/// `supersedes` names a registration of the same namespace, verifier and environment, and chains have no cycle.
/// A predecessor that is gone is fine once the records say it stepped down for this registration.
fn supersedes_rules(reg: &AccessRegistration, ctx: &Context<'_>, problems: &mut Vec<Problem>) {
    let Some(target) = reg.spec.supersedes.as_deref() else {
        return;
    };
    let name = reg.metadata.name.as_deref().unwrap_or_default();
    let namespace = reg.metadata.namespace.as_deref().unwrap_or_default();
    if target == name {
        problems.push(Problem::refusal(Reason::SupersedesCycle, "spec.supersedes", "a registration cannot supersede itself"));
        return;
    }
    let Some(old) = ctx.registrations.get(&(namespace, target)) else {
        if ctx.records.superseded_by(namespace, target) != Some(name) {
            problems.push(Problem::refusal(
                Reason::SupersedesNotFound,
                "spec.supersedes",
                format!("no AccessRegistration {target:?} in namespace {namespace:?} to supersede"),
            ));
        }
        return;
    };
    if old.spec.verifier_ref != reg.spec.verifier_ref || old.spec.environment != reg.spec.environment {
        problems.push(Problem::refusal(
            Reason::SupersedesOtherLine,
            "spec.supersedes",
            format!(
                "{target} belongs to verifier {} in {}; a registration can only supersede one of the same verifier and environment",
                old.spec.verifier_ref, old.spec.environment
            ),
        ));
        return;
    }
    // Follow the chain; each step is a hash lookup and the chain is at most as long as the namespace's forms.
    let mut seen = HashSet::from([name]);
    let mut current = *old;
    loop {
        let current_name = current.metadata.name.as_deref().unwrap_or_default();
        if !seen.insert(current_name) {
            problems.push(Problem::refusal(
                Reason::SupersedesCycle,
                "spec.supersedes",
                format!("the supersedes chain from {name} loops back through {current_name}"),
            ));
            return;
        }
        match current.spec.supersedes.as_deref().and_then(|n| ctx.registrations.get(&(namespace, n))) {
            Some(next) => current = next,
            None => return,
        }
    }
}

/// A milestone counts once its date has come (JST); a date still ahead wakes the planner up then.
fn on_record(date: Option<Date>, now: Timestamp, wake_ups: &mut Vec<Timestamp>) -> bool {
    match date {
        Some(d) if d <= jst_date_of(now) => true,
        Some(d) => {
            wake_ups.push(start_of_day_jst(d));
            false
        }
        None => false,
    }
}

/// The production and test gates (DESIGN §3 rule 2) at `now`, for access starting on `start`.
#[allow(clippy::too_many_arguments)]
fn gate_rules(
    reg: &AccessRegistration,
    valid: &ValidRegistration,
    start: Date,
    verifier: &ValidVerifier,
    rules: Option<&EnvironmentRules>,
    now: Timestamp,
    problems: &mut Vec<Problem>,
    wake_ups: &mut Vec<Timestamp>,
) {
    let name = &reg.spec.verifier_ref;
    match valid.environment {
        Environment::Production => {
            match verifier.agreement_effective {
                None => problems.push(Problem::refusal(
                    Reason::AgreementMissing,
                    "spec.verifierRef",
                    format!("verifier {name} has no agreement (協定書) on record: production access starts on or after its effective date"),
                )),
                Some(effective) if start < effective => problems.push(Problem::refusal(
                    Reason::StartBeforeAgreement,
                    "spec.accessStartDate",
                    format!("{start} is before the agreement's effective date {effective} (協定書 第13条): start on or after it"),
                )),
                Some(_) => {}
            }
            if let Some(rules) = rules
                && rules.require_verification_test
                && !on_record(verifier.verification_test_completed, now, wake_ups)
            {
                problems.push(Problem::refusal(
                    Reason::VerificationTestPending,
                    "spec.verifierRef",
                    format!("environment {} requires a completed verification test (A-10) of verifier {name}", rules.name),
                ));
            }
        }
        Environment::Test => {
            let pledge = on_record(verifier.pledge_received, now, wake_ups);
            let application = on_record(verifier.test_application_received, now, wake_ups);
            if !pledge || !application {
                problems.push(Problem::refusal(
                    Reason::ProcedureIncomplete,
                    "spec.verifierRef",
                    format!("verifier {name} needs the confidentiality pledge (A-03-3) and the test-environment application (A-03-4) on record"),
                ));
            }
        }
    }
    // The LGPKI route goes through the LGWAN全国センター in either environment.
    if reg.spec.connection_method == ConnectionMethod::LgwanViaLgpki && !on_record(verifier.lgwan_center_notified, now, wake_ups) {
        problems.push(Problem::refusal(
            Reason::LgwanCenterPending,
            "spec.connectionMethod",
            format!("the LGPKI route needs the LGWAN全国センター step (A-8) on record (spec.procedure.lgwanCenterNotifiedOn of verifier {name})"),
        ));
    }
}
