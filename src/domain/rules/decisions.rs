//! Which approvals bind to a registration, and which decision is in force.
//!
//! An approval counts for a registration only when it names that very object (`registrationUid`), carries the copy
//! its digest says (`specDigest` recomputed over `approved`), is for the same environment, was stored after the
//! registration, and no recorded fact made it void (`super::records`). Decisions are ordered by the API server's
//! `creationTimestamp`: a client can write any `approvedAt`, but not the time the server stored its object.
//! Offline, forms written by hand have no creation time; `approvedAt` stands in for it there (a server never
//! stores an object without one).

use super::Context;
use super::reason::Reason;
use crate::api::AccessApproval;
use crate::api::AccessRegistration;
use crate::api::approval::Decision;
use crate::domain::digest::digest_of;
use crate::domain::forms::{ValidApproval, check_approval};
use crate::domain::problem::Problem;
use jiff::Timestamp;

/// An approval that binds to the registration.
#[derive(Debug, Clone)]
pub struct Bound<'a> {
    pub approval: &'a AccessApproval,
    pub name: &'a str,
    /// The server's creation time (or, offline, `approvedAt`).
    pub decided_at: Timestamp,
    pub valid: ValidApproval,
}

/// The verdict on one approval that names the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalVerdict {
    pub name: String,
    pub uid: Option<String>,
    /// True when the approval binds (in force or replaced by a newer decision).
    pub accepted: bool,
    pub reason: Reason,
    pub message: String,
    /// For a binding decision: what, when (server time) and by whom, for the audit record.
    pub decision: Decision,
    pub decided_at: Option<Timestamp>,
    pub decided_by: String,
    pub digest: String,
}

impl ApprovalVerdict {
    fn of(approval: &AccessApproval, accepted: bool, reason: Reason, message: String, decided_at: Option<Timestamp>) -> Self {
        ApprovalVerdict {
            name: approval.metadata.name.clone().unwrap_or_default(),
            uid: approval.metadata.uid.clone(),
            accepted,
            reason,
            message,
            decision: approval.spec.decision,
            decided_at,
            decided_by: approval.spec.approved_by.clone(),
            digest: approval.spec.spec_digest.clone(),
        }
    }
}

/// Every decision on one registration.
#[derive(Debug, Clone, Default)]
pub struct Decisions<'a> {
    /// One per approval naming the registration, in decision order.
    pub verdicts: Vec<ApprovalVerdict>,
    /// The newest binding decision: approved or rejected.
    pub in_force: Option<Bound<'a>>,
    /// The binding approvals since the newest binding rejection, oldest first; the last is `in_force` when it is an
    /// approval. Their order gives a registration's place in line (see `crate::planner::liveness`).
    pub run: Vec<Bound<'a>>,
}

/// When the server stored an object (offline: `fallback`).
pub fn stored_at(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Timestamp> {
    meta.creation_timestamp.as_ref().map(|t| t.0)
}

/// Why an approval does not bind to `reg`, if it does not (void decisions are judged later, by [`decide`]).
pub fn binding_problem(approval: &AccessApproval, reg: &AccessRegistration) -> Result<(ValidApproval, Timestamp), Problem> {
    let checked = check_approval(&approval.spec);
    let Some(valid) = checked.value else {
        let first = checked.problems.into_iter().find(Problem::is_error);
        return Err(first.unwrap_or_else(|| Problem::error("spec", "invalid")));
    };
    if reg.metadata.uid.as_deref() != Some(approval.spec.registration_uid.as_str()) {
        return Err(Problem::refusal(
            Reason::RegistrationUidMismatch,
            "spec.registrationUid",
            format!(
                "decided on the object with uid {}, not this registration (uid {}): a registration filed again needs a decision of its own",
                approval.spec.registration_uid,
                reg.metadata.uid.as_deref().unwrap_or("none: never stored by the API server")
            ),
        ));
    }
    if let Some(copy) = &approval.spec.approved {
        match digest_of(copy) {
            Ok(d) if d == approval.spec.spec_digest => {}
            Ok(d) => {
                return Err(Problem::refusal(
                    Reason::DigestMismatch,
                    "spec.specDigest",
                    format!("{} is not the digest of the approved copy ({d}): the approval does not say what was decided on", approval.spec.spec_digest),
                ));
            }
            Err(e) => {
                return Err(Problem::refusal(Reason::DigestMismatch, "spec.approved", format!("cannot compute the digest: {e}")));
            }
        }
    }
    if let Some(terms) = &valid.approved
        && terms.environment != reg.spec.environment
    {
        return Err(Problem::refusal(
            Reason::EnvironmentMismatch,
            "spec.approved.environment",
            format!("the registration is for {}, the approval for {}: environments never mix", reg.spec.environment, terms.environment),
        ));
    }
    let decided_at = stored_at(&approval.metadata).unwrap_or(valid.approved_at);
    if let Some(filed) = stored_at(&reg.metadata)
        && decided_at < filed
    {
        return Err(Problem::refusal(
            Reason::DecidedBeforeFiling,
            "metadata.creationTimestamp",
            format!("stored at {decided_at}, before the registration was filed at {filed}"),
        ));
    }
    Ok((valid, decided_at))
}

/// Judges every approval that names `reg` and finds the decision in force.
pub fn decide<'c>(reg: &'c AccessRegistration, ctx: &'c Context<'_>) -> Decisions<'c> {
    let approvals = ctx.approvals_of(reg);
    if approvals.is_empty() {
        return Decisions::default();
    }
    let void = reg.metadata.uid.as_deref().map(|uid| ctx.records.void_line(uid, approvals)).unwrap_or_default();
    let mut verdicts = Vec::with_capacity(approvals.len());
    let mut bound: Vec<Bound<'c>> = Vec::new();
    for &approval in approvals {
        let name = approval.metadata.name.as_deref().unwrap_or_default();
        match binding_problem(approval, reg) {
            Err(problem) => verdicts.push(ApprovalVerdict::of(approval, false, problem.reason, format!("{}: {}", problem.field, problem.message), None)),
            Ok((_, decided_at)) if void.voids(decided_at) => verdicts.push(ApprovalVerdict::of(
                approval,
                false,
                Reason::DecisionVoid,
                "a later rejection, or the withdrawal of a later decision, on this registration made it void".into(),
                Some(decided_at),
            )),
            Ok((valid, decided_at)) => bound.push(Bound { approval, name, decided_at, valid }),
        }
    }
    bound.sort_by(|a, b| (a.decided_at, a.name).cmp(&(b.decided_at, b.name)));
    let in_force = bound.last().cloned();
    for b in &bound {
        let newest = in_force.as_ref().is_some_and(|f| f.name == b.name);
        let (reason, message) = if newest { (Reason::InForce, "the decision in force") } else { (Reason::Replaced, "a newer decision is in force") };
        verdicts.push(ApprovalVerdict::of(b.approval, true, reason, message.into(), Some(b.decided_at)));
    }
    verdicts.sort_by(|a, b| a.name.cmp(&b.name));
    let since_rejection = bound.iter().rposition(|b| b.valid.decision == Decision::Rejected).map_or(0, |i| i + 1);
    let run = bound.split_off(since_rejection);
    Decisions { verdicts, in_force, run }
}

/// The verdict on an approval whose registration does not exist (in its namespace, by the name it gives).
pub fn not_found(approval: &AccessApproval) -> ApprovalVerdict {
    ApprovalVerdict::of(
        approval,
        false,
        Reason::RegistrationNotFound,
        format!(
            "spec.registrationRef: no AccessRegistration {:?} in namespace {:?}",
            approval.spec.registration_ref,
            approval.metadata.namespace.as_deref().unwrap_or_default()
        ),
        None,
    )
}
