//! Liveness of one registration at one instant, before the rules that relate registrations to each other
//! (supersession and conflicts, in `super::resolve`): the rule engine's verdict on the form
//! (`crate::domain::rules`), the recorded facts that ended it, the decision in force, and the approved content
//! narrowed by the current spec (DESIGN §3 rule 1), with its access window in JST (rule 8) and its place in line.

use crate::api::registration::PendingDifference;
use crate::api::{AccessRegistration, CidrString, Environment, JstDate, ProvisionMethod, ProvisionMethods};
use crate::domain::cidr::interval;
use crate::domain::date::{add_days, end_of_day_jst, start_of_day_jst};
use crate::domain::forms::{ApprovedTerms, ValidRegistration};
use crate::domain::problem::Problem;
use crate::domain::rules::decisions::{ApprovalVerdict, Bound, decide};
use crate::domain::rules::records::Terminal;
use crate::domain::rules::{Context, Reason, judge_registration_with};
use ipnet::IpNet;
use jiff::Timestamp;
use jiff::civil::Date;
use kube::ResourceExt;

pub use crate::domain::rules::EnvironmentRules;

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
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    fn of(problem: &Problem) -> Self {
        let message = if problem.field.is_empty() { problem.message.clone() } else { format!("{}: {}", problem.field, problem.message) };
        Refusal { reason: problem.reason, message }
    }
}

/// The decision in force on a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub approval: String,
    /// When the API server stored the decision.
    pub decided_at: Timestamp,
    pub decided_by: String,
}

/// Approved content narrowed by the current spec: what may be live, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub cidrs: Vec<IpNet>,
    /// Each network's place in line for conflicts, in the order of `cidrs` (see [`places_in_line`]).
    pub places: Vec<Timestamp>,
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
    /// A recorded fact ended it for good (`AccessRecord`): superseded or expired.
    Ended(Terminal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub key: RegKey,
    pub verifier: String,
    pub environment: Environment,
    /// The predecessor this registration takes over from: only one its approval names too.
    pub supersedes: Option<String>,
    pub generation: Option<i64>,
    pub standing: Standing,
    pub pending: Option<PendingDifference>,
    pub setup_due: Option<Date>,
    /// Instants after `now` at which this evaluation changes by itself (a gate's milestone date).
    pub wake_ups: Vec<Timestamp>,
    pub problems: Vec<Problem>,
    /// The verdict on each approval that names this registration.
    pub approvals: Vec<ApprovalVerdict>,
}

/// Evaluates one registration at `now`.
pub fn evaluate(reg: &AccessRegistration, ctx: &Context<'_>, now: Timestamp) -> Evaluation {
    let mut out = Evaluation {
        key: RegKey::of(reg),
        verifier: reg.spec.verifier_ref.clone(),
        environment: reg.spec.environment,
        supersedes: None,
        generation: reg.metadata.generation,
        standing: Standing::PendingApproval(Refusal { reason: Reason::AwaitingApproval, message: String::new() }),
        pending: None,
        setup_due: None,
        wake_ups: Vec::new(),
        problems: Vec::new(),
        approvals: Vec::new(),
    };
    let decisions = decide(reg, ctx);
    out.approvals = decisions.verdicts.clone();
    if let Some(terminal) = reg.metadata.uid.as_deref().and_then(|uid| ctx.records.terminal(uid)) {
        out.standing = Standing::Ended(terminal);
        return out;
    }
    let approved_start = decisions.in_force.as_ref().and_then(|b| b.valid.approved.as_ref().map(|t| t.start));
    let judged = judge_registration_with(reg, ctx, now, approved_start);
    out.problems = judged.problems.clone();
    out.wake_ups = judged.wake_ups.clone();
    out.setup_due = judged.valid.as_ref().and_then(|v| v.received_on).map(|d| add_days(d, SETUP_LEAD_TIME_DAYS));
    if let Some(problem) = judged.refusal() {
        out.standing = Standing::Invalid(Refusal::of(problem));
        return out;
    }
    let Some(valid) = judged.valid else {
        out.standing = Standing::Invalid(Refusal { reason: Reason::ValidationFailed, message: "invalid".into() });
        return out;
    };
    let Some(in_force) = &decisions.in_force else {
        out.standing = Standing::PendingApproval(Refusal { reason: Reason::AwaitingApproval, message: "no AccessApproval of this registration yet".into() });
        return out;
    };
    let decided = Decided { approval: in_force.name.to_string(), decided_at: in_force.decided_at, decided_by: in_force.approval.spec.approved_by.clone() };
    out.standing = match &in_force.valid.approved {
        None => Standing::Rejected(decided),
        Some(terms) => {
            let mut window = narrow(terms, &valid, &reg.spec.supersedes, &mut out);
            window.places = places_in_line(&decisions.run, &window.cidrs, in_force.decided_at);
            Standing::Approved(decided, window)
        }
    };
    out
}

/// Each live network's place in line: the oldest decision of the unbroken run of approvals since the last
/// rejection (newest first) that all cover it. A re-approval that only moves a date keeps the places; a network
/// added by a later approval gets that approval's time, so it cannot take over what another verifier was approved
/// for in between; a rejection starts every place anew.
fn places_in_line(run: &[Bound<'_>], live: &[IpNet], newest: Timestamp) -> Vec<Timestamp> {
    let approved: Vec<Vec<IpNet>> = run.iter().map(|b| b.valid.approved.as_ref().map(|t| IpNet::aggregate(&t.cidrs)).unwrap_or_default()).collect();
    live.iter()
        .map(|net| {
            let mut since = newest;
            for (bound, nets) in run.iter().zip(&approved).rev() {
                if !nets.iter().any(|a| a.contains(net)) {
                    break;
                }
                since = bound.decided_at;
            }
            since
        })
        .collect()
}

/// Approved content narrowed by the current spec: networks in both, the later start, the earlier end, per certificate
/// type the approved provision method unless the spec dropped it. What the spec asks beyond the approval is recorded
/// as the pending difference (it waits for a new approval).
fn narrow(terms: &ApprovedTerms, spec: &ValidRegistration, spec_supersedes: &Option<String>, out: &mut Evaluation) -> Window {
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
    let (provision_methods, methods_pending) = narrow_methods(&terms.provision_methods, &spec.provision_methods);
    // A supersession takes effect only as approved: the successor must name the predecessor its approval names.
    out.supersedes = terms.supersedes.clone().filter(|approved| spec_supersedes.as_ref() == Some(approved));
    let pending = PendingDifference {
        added_cidrs: added,
        earlier_start_date: (spec.start < terms.start).then(|| JstDate(spec.start.to_string())),
        later_end_date: match (terms.end, spec.end) {
            (Some(a), Some(b)) if b > a => Some(JstDate(b.to_string())),
            _ => None,
        },
        end_date_removed: (terms.end.is_some() && spec.end.is_none()).then_some(true),
        provision_methods: methods_pending.then(|| spec.provision_methods.clone()),
        supersedes: spec_supersedes.clone().filter(|s| terms.supersedes.as_ref() != Some(s)),
    };
    if pending != PendingDifference::default() {
        out.pending = Some(pending);
    }
    Window { cidrs: IpNet::aggregate(&live), places: Vec::new(), start: start_of_day_jst(start), end: end.map(end_of_day_jst), provision_methods }
}

/// Per certificate type: the approved method, or `None` where the spec gives the type up (narrowing); any other
/// change (CRL to OCSP, or a type the approval left out) waits for a new approval. Returns the methods in force
/// and whether the spec asks for something else.
fn narrow_methods(approved: &ProvisionMethods, spec: &ProvisionMethods) -> (ProvisionMethods, bool) {
    let one = |a: Option<ProvisionMethod>, s: Option<ProvisionMethod>| match (a, s) {
        (a, s) if a == s => (a, false),
        (_, Some(ProvisionMethod::None)) => (Some(ProvisionMethod::None), false),
        (a, _) => (a, true),
    };
    let (signing, p1) = one(approved.signing, spec.signing);
    let (user_authentication, p2) = one(approved.user_authentication, spec.user_authentication);
    (ProvisionMethods { signing, user_authentication }, p1 || p2)
}

/// Number of addresses of a network (prefixes are at least /8 and /16, so this never overflows).
fn size(net: &IpNet) -> u128 {
    let (_, lo, hi) = interval(net);
    hi - lo + 1
}
