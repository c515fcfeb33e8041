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
use std::sync::Arc;

/// The planner's verdict on one registration at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Shared with the memo of earlier passes (`super::memo`): a verdict is rebuilt on every pass, its evaluation not.
    pub evaluation: Arc<Evaluation>,
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
pub fn resolve(evaluations: Vec<Arc<Evaluation>>, now: Timestamp) -> BTreeMap<RegKey, Resolved> {
    let mut out: BTreeMap<RegKey, Resolved> = evaluations.into_iter().map(|e| (e.key.clone(), in_time(e, now))).collect();
    // A successor held in Conflict must not make its predecessor step down (that would leave the verifier with
    // nothing): such successors are blocked and the decision is taken again. Each round blocks at least one more
    // successor, so this ends; in practice it runs once. A round records what it changes, so the next one starts
    // from the verdicts in time by undoing only that (copying every verdict per round was a third of this step).
    let mut blocked: HashSet<RegKey> = HashSet::new();
    loop {
        let mut undo = Undo::default();
        let successors = supersede(&mut out, now, &blocked, &mut undo);
        decide_conflicts(&mut out, &mut undo);
        let newly: Vec<RegKey> =
            successors.into_iter().filter(|k| out[k].phase == RegistrationPhase::Conflict && !blocked.contains(k)).collect();
        if newly.is_empty() {
            return out;
        }
        undo.restore(&mut out);
        blocked.extend(newly);
    }
}

/// What a round of [`resolve`] changed in a verdict, to put back before the next round.
#[derive(Default)]
struct Undo(Vec<(RegKey, Verdict)>);

/// The fields of a [`Resolved`] that supersession and conflicts change.
struct Verdict {
    phase: RegistrationPhase,
    reason: &'static str,
    message: String,
    conflicts: Vec<ConflictRef>,
    next_transition: Option<Timestamp>,
}

impl Undo {
    /// Records `r`'s verdict before it is changed.
    fn save(&mut self, key: &RegKey, r: &Resolved) {
        self.0.push((key.clone(), Verdict {
            phase: r.phase,
            reason: r.reason,
            message: r.message.clone(),
            conflicts: r.conflicts.clone(),
            next_transition: r.next_transition,
        }));
    }

    /// Puts every saved verdict back, newest first (so a verdict changed twice gets its first state).
    fn restore(self, out: &mut BTreeMap<RegKey, Resolved>) {
        for (key, v) in self.0.into_iter().rev() {
            if let Some(r) = out.get_mut(&key) {
                (r.phase, r.reason, r.message, r.conflicts, r.next_transition) = (v.phase, v.reason, v.message, v.conflicts, v.next_transition);
            }
        }
    }
}

/// Phase from the standing and the clock alone.
fn in_time(evaluation: Arc<Evaluation>, now: Timestamp) -> Resolved {
    let wake = evaluation.wake_ups.iter().copied().filter(|t| *t > now).min();
    let (phase, reason, message, decided, window, next_transition) = match &evaluation.standing {
        Standing::Invalid(r) => (RegistrationPhase::Invalid, r.reason, r.message.clone(), None, None, wake),
        Standing::PendingApproval(r) => (RegistrationPhase::PendingApproval, r.reason, r.message.clone(), None, None, wake),
        Standing::Rejected(d) => {
            (RegistrationPhase::Rejected, "Rejected", format!("rejected by AccessApproval {}", d.approval), Some(d.clone()), None, wake)
        }
        Standing::Approved(d, w) => {
            let (phase, reason, message, next) = if w.cidrs.is_empty() {
                (RegistrationPhase::PendingApproval, "AwaitingApprovalOfChange",
                    "none of the CIDRs in the spec was approved; the change waits for a new approval".to_string(), wake)
            } else if w.end.is_some_and(|end| end <= now) {
                (RegistrationPhase::Expired, "Expired", format!("access ended at {}", w.end.map(jst).unwrap_or_default()), wake)
            } else if now < w.start {
                (RegistrationPhase::Scheduled, "Scheduled", format!("approved; access starts at {}", jst(w.start)), earliest(wake, Some(w.start)))
            } else {
                let message = match w.end {
                    Some(end) => format!("{} CIDRs live until {}", w.cidrs.len(), jst(end)),
                    None => format!("{} CIDRs live", w.cidrs.len()),
                };
                (RegistrationPhase::Active, "Active", message, earliest(wake, w.end))
            };
            (phase, reason, message, Some(d.clone()), Some(w.clone()), next)
        }
    };
    Resolved { evaluation, phase, reason, message, decided, window, conflicts: Vec::new(), next_transition }
}

/// A successor (same namespace, verifier and environment) that is approved takes over at the start of its
/// window; its predecessor steps down at that same instant, never earlier (no gap) and never later (no overlap
/// beyond what both approvals cover).
fn supersede(out: &mut BTreeMap<RegKey, Resolved>, now: Timestamp, blocked: &HashSet<RegKey>, undo: &mut Undo) -> Vec<RegKey> {
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
        undo.save(&old, r);
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
fn decide_conflicts(out: &mut BTreeMap<RegKey, Resolved>, undo: &mut Undo) {
    // Decided first with shared borrows (the owners of the networks by reference: one key copy per network was most
    // of this step at the national scale), then written.
    let mut decisions: Vec<(RegKey, Vec<ConflictRef>, String)> = Vec::new();
    let mut by_environment: HashMap<crate::api::Environment, (Vec<IpNet>, Vec<&RegKey>)> = HashMap::new();
    for (key, r) in out.iter().filter(|(_, r)| r.is_live()) {
        let (nets, owners) = by_environment.entry(r.evaluation.environment).or_default();
        for net in r.window.iter().flat_map(|w| &w.cidrs) {
            nets.push(*net);
            owners.push(key);
        }
    }
    for (nets, owners) in by_environment.into_values() {
        // Edges between registrations of different verifiers, with the networks involved.
        let mut edges: HashMap<(&RegKey, &RegKey), Vec<IpNet>> = HashMap::new();
        for (a, b, _) in overlaps_within(&nets) {
            let (ka, kb) = (owners[a], owners[b]);
            if out[ka].evaluation.verifier == out[kb].evaluation.verifier {
                continue; // one verifier's own registrations may overlap
            }
            edges.entry((ka, kb)).or_default().push(nets[a]);
            edges.entry((kb, ka)).or_default().push(nets[b]);
        }
        if edges.is_empty() {
            continue;
        }
        // Neighbours per registration, so each decision looks only at its own overlaps: O(k), not O(n²).
        let mut neighbours: HashMap<&RegKey, Vec<&RegKey>> = HashMap::new();
        for (a, b) in edges.keys() {
            neighbours.entry(*a).or_default().push(*b);
        }
        let mut involved: Vec<&RegKey> = neighbours.keys().copied().collect();
        involved.sort_by_key(|k| (out[*k].decided.as_ref().map(|d| d.first_approved_at), *k));
        let mut kept: HashSet<&RegKey> = HashSet::new();
        for key in involved {
            let mut against: Vec<&RegKey> = neighbours[key].iter().copied().filter(|k| kept.contains(k)).collect();
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
                    cidrs: edges[&(key, *other)].iter().map(|n| CidrString(n.to_string())).collect(),
                })
                .collect();
            let names: Vec<String> = against.iter().map(|k| format!("{k} (verifier {})", out[*k].evaluation.verifier)).collect();
            decisions.push((key.clone(), conflicts, format!("CIDRs overlap {}, approved earlier; they keep them", names.join(", "))));
        }
    }
    for (key, conflicts, message) in decisions {
        let r = out.get_mut(&key).expect("involved keys come from out");
        undo.save(&key, r);
        r.phase = RegistrationPhase::Conflict;
        r.reason = "Conflict";
        r.message = message;
        r.conflicts = conflicts;
    }
}
