//! From each registration's own standing to its phase: the access window in time (rule 8), supersession
//! (rule 4: the successor takes over at its start, the predecessor steps down at that same instant), and
//! conflicts between verifiers (rule 6: the registration approved first keeps the CIDRs).

use super::liveness::{Decided, Evaluation, RegKey, Standing, Window};
use crate::api::CidrString;
use crate::api::registration::{ConflictRef, RegistrationPhase};
use crate::domain::cidr::overlaps_within;
use ipnet::IpNet;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The planner's verdict on one registration at one instant.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub evaluation: Evaluation,
    pub phase: RegistrationPhase,
    pub reason: &'static str,
    pub message: String,
    /// The decision in force (approved or rejected), if any.
    pub decided: Option<Decided>,
    /// The approved window, for Scheduled, Active, Superseded and Expired registrations.
    pub window: Option<Window>,
    pub conflicts: Vec<ConflictRef>,
    /// Earliest instant after `now` at which this verdict changes by itself.
    pub next_transition: Option<Timestamp>,
}

impl Resolved {
    /// Contributes its CIDRs to the outputs right now.
    pub fn is_live(&self) -> bool {
        self.phase == RegistrationPhase::Active
    }
}

fn jst(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::fixed(crate::domain::date::JST)).strftime("%Y-%m-%d %H:%M JST").to_string()
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Resolves every registration; `evaluations` may be in any order, the result is keyed and so deterministic.
pub fn resolve(evaluations: Vec<Evaluation>, now: Timestamp) -> BTreeMap<RegKey, Resolved> {
    let base: BTreeMap<RegKey, Resolved> = evaluations.into_iter().map(|e| (e.key.clone(), in_time(e, now))).collect();
    // A successor held in Conflict must not make its predecessor step down (that would leave the verifier with
    // nothing): such successors are blocked and the decision is taken again. Each round blocks at least one more
    // successor, so this ends; in practice it runs once.
    let mut blocked: HashSet<RegKey> = HashSet::new();
    loop {
        let mut out = base.clone();
        let successors = supersede(&mut out, now, &blocked);
        decide_conflicts(&mut out);
        let newly: Vec<RegKey> =
            successors.into_iter().filter(|k| out[k].phase == RegistrationPhase::Conflict && !blocked.contains(k)).collect();
        if newly.is_empty() {
            return out;
        }
        blocked.extend(newly);
    }
}

/// Phase from the standing and the clock alone.
fn in_time(evaluation: Evaluation, now: Timestamp) -> Resolved {
    let wake = evaluation.wake_ups.iter().copied().filter(|t| *t > now).min();
    let base = |phase, reason, message: String, decided: Option<Decided>| Resolved {
        evaluation: evaluation.clone(),
        phase,
        reason,
        message,
        decided,
        window: None,
        conflicts: Vec::new(),
        next_transition: wake,
    };
    match &evaluation.standing {
        Standing::Invalid(r) => base(RegistrationPhase::Invalid, r.reason, r.message.clone(), None),
        Standing::PendingApproval(r) => base(RegistrationPhase::PendingApproval, r.reason, r.message.clone(), None),
        Standing::Rejected(d) => {
            base(RegistrationPhase::Rejected, "Rejected", format!("rejected by AccessApproval {}", d.approval), Some(d.clone()))
        }
        Standing::Approved(d, w) => {
            let mut r = base(RegistrationPhase::Active, "Active", String::new(), Some(d.clone()));
            r.window = Some(w.clone());
            if w.cidrs.is_empty() {
                (r.phase, r.reason) = (RegistrationPhase::PendingApproval, "AwaitingApprovalOfChange");
                r.message = "none of the CIDRs in the spec was approved; the change waits for a new approval".into();
            } else if w.end.is_some_and(|end| end <= now) {
                (r.phase, r.reason) = (RegistrationPhase::Expired, "Expired");
                r.message = format!("access ended at {}", w.end.map(jst).unwrap_or_default());
            } else if now < w.start {
                (r.phase, r.reason) = (RegistrationPhase::Scheduled, "Scheduled");
                r.message = format!("approved; access starts at {}", jst(w.start));
                r.next_transition = earliest(r.next_transition, Some(w.start));
            } else {
                r.message = match w.end {
                    Some(end) => format!("{} CIDRs live until {}", w.cidrs.len(), jst(end)),
                    None => format!("{} CIDRs live", w.cidrs.len()),
                };
                r.next_transition = earliest(r.next_transition, w.end);
            }
            r
        }
    }
}

/// A successor (same namespace, verifier and environment) that is approved takes over at the start of its
/// window; its predecessor steps down at that same instant, never earlier (no gap) and never later (no overlap
/// beyond what both approvals cover).
fn supersede(out: &mut BTreeMap<RegKey, Resolved>, now: Timestamp, blocked: &HashSet<RegKey>) -> Vec<RegKey> {
    let mut takeovers: Vec<(RegKey, RegKey, Timestamp)> = Vec::new(); // (old, new, instant)
    for (key, r) in out.iter().filter(|(k, _)| !blocked.contains(*k)) {
        let (Some(old_name), Some(window)) = (&r.evaluation.supersedes, &r.window) else { continue };
        let old = RegKey { namespace: key.namespace.clone(), name: old_name.clone() };
        let same_line = out.get(&old).is_some_and(|o| o.evaluation.verifier == r.evaluation.verifier && o.evaluation.environment == r.evaluation.environment);
        if same_line && !window.cidrs.is_empty() {
            takeovers.push((old, key.clone(), window.start));
        }
    }
    let successors: Vec<RegKey> = takeovers.iter().filter(|(_, _, at)| now >= *at).map(|(_, new, _)| new.clone()).collect();
    for (old, new, instant) in takeovers {
        let Some(r) = out.get_mut(&old) else { continue };
        if !matches!(r.phase, RegistrationPhase::Active | RegistrationPhase::Scheduled) {
            continue;
        }
        if now >= instant {
            r.phase = RegistrationPhase::Superseded;
            r.reason = "Superseded";
            r.message = format!("superseded by {} at {}", new.name, jst(instant));
            r.next_transition = None;
        } else {
            r.next_transition = earliest(r.next_transition, Some(instant));
        }
    }
    successors
}

/// Overlaps between live registrations of different verifiers in one environment, found by one sort-and-sweep
/// over all their networks (O(n log n + k)); then, in approval order, a registration that overlaps one already
/// kept is held in Conflict and names it.
fn decide_conflicts(out: &mut BTreeMap<RegKey, Resolved>) {
    let mut by_environment: HashMap<crate::api::Environment, (Vec<IpNet>, Vec<RegKey>)> = HashMap::new();
    for (key, r) in out.iter().filter(|(_, r)| r.is_live()) {
        let (nets, owners) = by_environment.entry(r.evaluation.environment).or_default();
        for net in r.window.iter().flat_map(|w| &w.cidrs) {
            nets.push(*net);
            owners.push(key.clone());
        }
    }
    for (nets, owners) in by_environment.into_values() {
        // Edges between registrations of different verifiers, with the networks involved.
        let mut edges: HashMap<(RegKey, RegKey), Vec<IpNet>> = HashMap::new();
        for (a, b, _) in overlaps_within(&nets) {
            let (ka, kb) = (&owners[a], &owners[b]);
            if out[ka].evaluation.verifier == out[kb].evaluation.verifier {
                continue; // one verifier's own registrations may overlap
            }
            edges.entry((ka.clone(), kb.clone())).or_default().push(nets[a]);
            edges.entry((kb.clone(), ka.clone())).or_default().push(nets[b]);
        }
        if edges.is_empty() {
            continue;
        }
        // Neighbours per registration, so each decision looks only at its own overlaps: O(k), not O(n²).
        let mut neighbours: HashMap<RegKey, Vec<RegKey>> = HashMap::new();
        for (a, b) in edges.keys() {
            neighbours.entry(a.clone()).or_default().push(b.clone());
        }
        let mut involved: Vec<RegKey> = neighbours.keys().cloned().collect();
        involved.sort_by_key(|k| (out[k].decided.as_ref().map(|d| d.first_approved_at), k.clone()));
        let mut kept: HashSet<RegKey> = HashSet::new();
        for key in involved {
            let mut against: Vec<&RegKey> = neighbours[&key].iter().filter(|k| kept.contains(*k)).collect();
            against.sort();
            against.dedup();
            if against.is_empty() {
                kept.insert(key);
                continue;
            }
            let conflicts: Vec<ConflictRef> = against
                .iter()
                .map(|other| ConflictRef {
                    namespace: other.namespace.clone(),
                    name: other.name.clone(),
                    verifier: out[*other].evaluation.verifier.clone(),
                    cidrs: edges[&(key.clone(), (*other).clone())].iter().map(|n| CidrString(n.to_string())).collect(),
                })
                .collect();
            let names: Vec<String> = against.iter().map(|k| format!("{k} (verifier {})", out[*k].evaluation.verifier)).collect();
            let r = out.get_mut(&key).expect("involved keys come from out");
            r.phase = RegistrationPhase::Conflict;
            r.reason = "Conflict";
            r.message = format!("CIDRs overlap {}, approved earlier; they keep them", names.join(", "));
            r.conflicts = conflicts;
        }
    }
}
