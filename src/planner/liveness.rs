//! Liveness of one registration at one instant, before the rules that relate registrations to each other
//! (supersession and conflicts, in `super::resolve`): validity, the approval, the approved content narrowed by the
//! current spec (DESIGN §3 rule 1), the production and test gates (rule 2), and the access window in JST (rule 8).

use crate::api::approval::Decision;
use crate::api::registration::ConnectionMethod;
use crate::api::{AccessApproval, AccessRegistration, CidrString, Environment, JstDate, ProvisionMethods, SignatureVerifier};
use crate::domain::cidr::{CidrPolicy, interval};
use crate::domain::date::{add_days, end_of_day_jst, jst_date_of, start_of_day_jst};
use crate::domain::forms::{ValidRegistration, ValidVerifier, check_approval, check_registration, check_verifier};
use crate::domain::problem::Problem;
use crate::api::registration::PendingDifference;
use ipnet::IpNet;
use jiff::Timestamp;
use jiff::civil::Date;
use kube::ResourceExt;
use std::collections::HashMap;

/// J-LIS sets access up within a week of receiving the form (the seed flow's lead time for ).
pub const SETUP_LEAD_TIME_DAYS: i64 = 7;

/// Namespace and name of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegKey {
    pub namespace: String,
    pub name: String,
}

impl RegKey {
    pub fn of(reg: &AccessRegistration) -> Self {
        RegKey { namespace: reg.namespace().unwrap_or_default(), name: reg.name_any() }
    }
}

impl std::fmt::Display for RegKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a registration contributes nothing, before time is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// CamelCase reason for conditions and events.
    pub reason: &'static str,
    pub message: String,
}

/// The approval that decides a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub approval: String,
    pub approved_at: Timestamp,
    /// When this registration was first approved (its place in line for conflicts: a later re-approval of a
    /// widening does not make it lose what it has held since).
    pub first_approved_at: Timestamp,
}

/// Approved content narrowed by the current spec: what may be live, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub cidrs: Vec<IpNet>,
    pub start: Timestamp,
    /// Exclusive: 00:00 JST the day after the end date.
    pub end: Option<Timestamp>,
    pub provision_methods: ProvisionMethods,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Invalid(Refusal),
    PendingApproval(Refusal),
    Rejected(Decided),
    /// Approved and through the gates: live inside the window, unless superseded or in conflict.
    Approved(Decided, Window),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub key: RegKey,
    pub verifier: String,
    pub environment: Environment,
    pub supersedes: Option<String>,
    pub generation: Option<i64>,
    pub standing: Standing,
    pub pending: Option<PendingDifference>,
    pub setup_due: Option<Date>,
    /// Instants after `now` at which this evaluation changes by itself (a gate's milestone date).
    pub wake_ups: Vec<Timestamp>,
    pub problems: Vec<Problem>,
}

/// What an environment imposes on its registrations.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentRules {
    pub name: String,
    pub cidr_policy: CidrPolicy,
    pub require_verification_test: bool,
}

/// The objects a registration is judged against.
pub struct Context<'a> {
    pub verifiers: HashMap<&'a str, (&'a SignatureVerifier, Option<ValidVerifier>)>,
    pub approvals: HashMap<(&'a str, &'a str), Vec<&'a AccessApproval>>,
    pub environments: HashMap<Environment, EnvironmentRules>,
}

impl<'a> Context<'a> {
    pub fn new(verifiers: &[&'a SignatureVerifier], approvals: &[&'a AccessApproval], environments: HashMap<Environment, EnvironmentRules>) -> Self {
        Self::with_checked(verifiers, approvals, environments, |v| check_verifier(&v.spec).value)
    }

    /// [`Context::new`] with each verifier's validity from `check` (the memo of `super::memo` reuses it).
    pub fn with_checked(
        verifiers: &[&'a SignatureVerifier],
        approvals: &[&'a AccessApproval],
        environments: HashMap<Environment, EnvironmentRules>,
        mut check: impl FnMut(&SignatureVerifier) -> Option<ValidVerifier>,
    ) -> Self {
        let verifiers = verifiers.iter().map(|&v| (v.metadata.name.as_deref().unwrap_or_default(), (v, check(v)))).collect();
        let mut by_registration: HashMap<(&str, &str), Vec<&AccessApproval>> = HashMap::new();
        for &a in approvals {
            let namespace = a.metadata.namespace.as_deref().unwrap_or_default();
            by_registration.entry((namespace, a.spec.registration_ref.as_str())).or_default().push(a);
        }
        Context { verifiers, approvals: by_registration, environments }
    }
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { reason, message: message.into() }
}

/// Evaluates one registration at `now`.
pub fn evaluate(reg: &AccessRegistration, ctx: &Context<'_>, now: Timestamp) -> Evaluation {
    let key = RegKey::of(reg);
    let mut evaluation = Evaluation {
        key,
        verifier: reg.spec.verifier_ref.clone(),
        environment: reg.spec.environment,
        supersedes: reg.spec.supersedes.clone(),
        generation: reg.metadata.generation,
        standing: Standing::Invalid(refuse("Unevaluated", "")),
        pending: None,
        setup_due: None,
        wake_ups: Vec::new(),
        problems: Vec::new(),
    };
    evaluation.standing = match standing(reg, ctx, now, &mut evaluation) {
        Ok(standing) | Err(standing) => standing,
    };
    evaluation
}

// Err carries a Standing as large as Ok's (an early verdict), built once per registration: no need to box it.
#[allow(clippy::result_large_err)]
fn standing(reg: &AccessRegistration, ctx: &Context<'_>, now: Timestamp, out: &mut Evaluation) -> Result<Standing, Standing> {
    let invalid = |reason, message: String| Standing::Invalid(refuse(reason, message));
    let Some(rules) = ctx.environments.get(&reg.spec.environment) else {
        return Err(invalid("EnvironmentNotFound", format!("no valid AccessEnvironment serves {}", reg.spec.environment)));
    };
    let checked = check_registration(&reg.spec, &rules.cidr_policy);
    out.problems = checked.problems.clone();
    let valid = checked.value.ok_or_else(|| {
        let first = checked.problems.iter().find(|p| p.is_error()).map(|p| format!("{}: {}", p.field, p.message)).unwrap_or_default();
        invalid("ValidationFailed", first)
    })?;
    out.setup_due = valid.received_on.map(|d| add_days(d, SETUP_LEAD_TIME_DAYS));
    let Some((verifier, verifier_valid)) = ctx.verifiers.get(reg.spec.verifier_ref.as_str()) else {
        return Err(invalid("VerifierNotFound", format!("no SignatureVerifier named {:?}", reg.spec.verifier_ref)));
    };
    if reg.namespace().as_deref() != Some(verifier.spec.namespace.as_str()) {
        return Err(invalid("NamespaceMismatch", format!(
            "verifier {} files its forms in namespace {:?}: one verifier, one namespace", reg.spec.verifier_ref, verifier.spec.namespace
        )));
    }
    let Some(vv) = verifier_valid else {
        return Err(invalid("VerifierInvalid", format!("SignatureVerifier {} is invalid", reg.spec.verifier_ref)));
    };

    let (decided, terms) = match latest_decision(reg, ctx) {
        None => return Err(Standing::PendingApproval(refuse("AwaitingApproval", "no AccessApproval of this registration yet"))),
        Some((decided, None)) => return Err(Standing::Rejected(decided)),
        Some((decided, Some(terms))) => (decided, terms),
    };
    let window = narrow(&terms, &valid, out);
    gates(reg, &valid, vv, rules, &window, now, out).map_err(Standing::Invalid)?;
    Ok(Standing::Approved(decided, window))
}

/// The content an approval covers, parsed.
struct Terms {
    cidrs: Vec<IpNet>,
    start: Date,
    end: Option<Date>,
}

/// The newest valid decision on this registration (by `approvedAt`, then name); `None` terms means rejected.
fn latest_decision(reg: &AccessRegistration, ctx: &Context<'_>) -> Option<(Decided, Option<Terms>)> {
    let namespace = reg.metadata.namespace.as_deref().unwrap_or_default();
    let name = reg.metadata.name.as_deref().unwrap_or_default();
    let candidates = ctx.approvals.get(&(namespace, name))?;
    let valid: Vec<_> = candidates
        .iter()
        .filter_map(|a| {
            let valid = check_approval(&a.spec).value?;
            // An approval of the other environment approves nothing here (rule 5: environments never mix).
            if valid.approved.as_ref().is_some_and(|t| t.environment != reg.spec.environment) {
                return None;
            }
            Some((valid.approved_at, a.name_any(), valid))
        })
        .collect();
    let first_approved_at = valid.iter().filter(|v| v.2.decision == Decision::Approved).map(|v| v.0).min();
    valid
        .into_iter()
        .max_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)))
        .map(|(approved_at, approval, valid)| {
            let terms = match valid.decision {
                Decision::Approved => valid.approved.map(|t| Terms { cidrs: t.cidrs, start: t.start, end: t.end }),
                Decision::Rejected => None,
            };
            (Decided { approval, approved_at, first_approved_at: first_approved_at.unwrap_or(approved_at) }, terms)
        })
}

/// Approved content narrowed by the current spec: networks in both, the later start, the earlier end. What the
/// spec asks beyond the approval is recorded as the pending difference (it waits for a new approval).
fn narrow(terms: &Terms, spec: &ValidRegistration, out: &mut Evaluation) -> Window {
    let approved = IpNet::aggregate(&terms.cidrs);
    let mut live = Vec::new();
    let mut added = Vec::new();
    for s in &spec.cidrs {
        let mut covered: u128 = 0;
        for a in &approved {
            if a.contains(s) {
                live.push(*s);
                covered = size(s);
                break;
            }
            if s.contains(a) {
                live.push(*a);
                covered += size(a);
            }
        }
        if covered < size(s) {
            added.push(CidrString(s.to_string()));
        }
    }
    let start = terms.start.max(spec.start);
    let end = match (terms.end, spec.end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let earlier_start = (spec.start < terms.start).then(|| JstDate(spec.start.to_string()));
    let later_end = match (terms.end, spec.end) {
        (Some(a), Some(b)) if b > a => Some(JstDate(b.to_string())),
        _ => None,
    };
    let end_date_removed = (terms.end.is_some() && spec.end.is_none()).then_some(true);
    if !added.is_empty() || earlier_start.is_some() || later_end.is_some() || end_date_removed.is_some() {
        out.pending = Some(PendingDifference {
            added_cidrs: added,
            earlier_start_date: earlier_start,
            later_end_date: later_end,
            end_date_removed,
        });
    }
    Window {
        cidrs: IpNet::aggregate(&live),
        start: start_of_day_jst(start),
        end: end.map(end_of_day_jst),
        provision_methods: spec.provision_methods.clone(),
    }
}

/// Number of addresses of a network (prefixes are at least /8 and /16, so this never overflows).
fn size(net: &IpNet) -> u128 {
    let (_, lo, hi) = interval(net);
    hi - lo + 1
}

/// A milestone counts once its date has come (JST); a date still ahead wakes the planner up then.
fn on_record(date: Option<Date>, now: Timestamp, out: &mut Evaluation) -> bool {
    match date {
        Some(d) if d <= jst_date_of(now) => true,
        Some(d) => {
            out.wake_ups.push(start_of_day_jst(d));
            false
        }
        None => false,
    }
}

/// Production and test gates (DESIGN §3 rule 2).
fn gates(
    reg: &AccessRegistration,
    valid: &ValidRegistration,
    verifier: &ValidVerifier,
    rules: &EnvironmentRules,
    window: &Window,
    now: Timestamp,
    out: &mut Evaluation,
) -> Result<(), Refusal> {
    let name = &reg.spec.verifier_ref;
    match valid.environment {
        Environment::Production => {
            let Some(effective) = verifier.agreement_effective else {
                return Err(refuse("AgreementMissing", format!("verifier {name} has no agreement (協定書) on record")));
            };
            if window.start < start_of_day_jst(effective) {
                return Err(refuse("StartBeforeAgreement", format!(
                    "access would start before the agreement's effective date {effective} (協定書 第13条)"
                )));
            }
            if rules.require_verification_test && !on_record(verifier.verification_test_completed, now, out) {
                return Err(refuse("VerificationTestPending", format!(
                    "environment {} requires a completed verification test (A-10) of verifier {name}", rules.name
                )));
            }
        }
        Environment::Test => {
            if !on_record(verifier.pledge_received, now, out) || !on_record(verifier.test_application_received, now, out) {
                return Err(refuse("ProcedureIncomplete", format!(
                    "verifier {name} needs the confidentiality pledge (A-03-3) and the test-environment application (A-03-4) on record"
                )));
            }
            if reg.spec.connection_method == ConnectionMethod::LgwanViaLgpki && !on_record(verifier.lgwan_center_notified, now, out) {
                return Err(refuse("ProcedureIncomplete", "the LGPKI route needs the LGWAN全国センター step (A-8) on record"));
            }
        }
    }
    Ok(())
}
