//! Desired status of a registration: phase and metav1 Conditions that kstatus (Flux) and Argo CD read the usual
//! way: `Stalled=True` for what only a person can fix (Invalid, Rejected, Conflict), `Ready=True` once the
//! registration needs nothing more (Active, Scheduled, Superseded, Expired), `observedGeneration` on each
//! condition and at the top. A condition keeps its `lastTransitionTime` while its status does not change.

use super::resolve::Resolved;
use crate::api::registration::{AccessRegistrationStatus, RegistrationPhase};
use crate::api::{CidrString, JstDate};
use crate::domain::date::{add_days, start_of_day_jst};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Builds one condition, keeping the previous transition time when the status is unchanged.
pub fn condition(type_: &str, status: bool, reason: &str, message: &str, generation: Option<i64>, previous: &[Condition], now: Timestamp) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        // Whole seconds, as the API server stores a metav1.Time: a condition read back then equals the one planned,
        // and the next pass can reuse the plan (`super::memo`) instead of planning every registration again.
        .unwrap_or_else(|| Time(Timestamp::from_second(now.as_second()).unwrap_or(now)));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// Setup is overdue while J-LIS has not set the access up (not yet approved and through its gates) after the
/// due date has passed (JST).
fn overdue(r: &Resolved, now: Timestamp) -> (Option<bool>, Option<Timestamp>) {
    let Some(due) = r.evaluation.setup_due else {
        return (None, None);
    };
    let waiting = matches!(r.phase, RegistrationPhase::PendingApproval | RegistrationPhase::Invalid | RegistrationPhase::Conflict);
    if !waiting {
        return (Some(false), None);
    }
    let becomes_overdue = start_of_day_jst(add_days(due, 1));
    if now >= becomes_overdue { (Some(true), None) } else { (Some(false), Some(becomes_overdue)) }
}

/// The full desired status of a registration.
pub fn registration_status(r: &Resolved, notice: Option<String>, previous: &[Condition], now: Timestamp) -> (AccessRegistrationStatus, Option<Timestamp>) {
    use RegistrationPhase::*;
    let generation = r.evaluation.generation;
    let cond = |t: &str, s: bool, reason: &str, message: &str| condition(t, s, reason, message, generation, previous, now);
    let (approved, approved_reason, approved_message) = match (&r.decided, r.phase) {
        (Some(d), Rejected) => (false, "Rejected", format!("rejected by {}", d.approval)),
        (Some(d), _) => (true, "Approved", format!("approved by {}", d.approval)),
        (None, _) => (false, "AwaitingApproval", "no approval of this registration yet".to_string()),
    };
    let ready = matches!(r.phase, Active | Scheduled | Superseded | Expired);
    let stalled = matches!(r.phase, Invalid | Rejected | Conflict | Held);
    let conditions = vec![
        cond("Ready", ready, r.reason.as_str(), &r.message),
        cond("Reconciling", false, "Reconciled", "the plan for this generation is computed"),
        cond("Stalled", stalled, if stalled { r.reason.as_str() } else { "NotStalled" }, if stalled { &r.message } else { "" }),
        cond("Approved", approved, approved_reason, &approved_message),
        cond("Active", r.phase == Active, r.reason.as_str(), &r.message),
    ];
    // Held ones show the CIDRs the hold keeps published (what a restarted controller reads back as published).
    let live: Vec<CidrString> =
        if r.is_live() || r.phase == Held { r.window.iter().flat_map(|w| &w.cidrs).map(|c| CidrString(c.to_string())).collect() } else { Vec::new() };
    let (setup_overdue, overdue_at) = overdue(r, now);
    let next = match (r.next_transition, overdue_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let status = AccessRegistrationStatus {
        observed_generation: generation,
        phase: Some(r.phase),
        conditions,
        effective_cidr_count: Some(live.len() as i64),
        effective_cidrs: live,
        pending_difference: r.evaluation.pending.clone(),
        setup_due_date: r.evaluation.setup_due.map(|d| JstDate(d.to_string())),
        setup_overdue,
        url_notice: notice,
        conflicts: r.conflicts.clone(),
        next_transition: next.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    };
    (status, next)
}
