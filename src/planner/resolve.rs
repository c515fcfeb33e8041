//! From each registration's own standing to its phase: the access window in time (rule 8), supersession
//! (rule 4: the successor takes over at its start, the predecessor steps down at that same instant), and
//! conflicts between verifiers (rule 6: the registration approved first keeps the CIDRs).

use super::liveness::{Decided, Evaluation, RegKey, Standing, Window};
use crate::api::CidrString;
use crate::api::registration::{ConflictRef, RegistrationPhase};
use crate::domain::cidr::containment_forest;
use crate::domain::rules::Reason;
use crate::domain::rules::records::Terminal;
use ipnet::IpNet;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The planner's verdict on one registration at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Shared with the memo of earlier passes (`super::memo`): a verdict is rebuilt on every pass, its evaluation not.
    pub evaluation: Arc<Evaluation>,
    pub phase: RegistrationPhase,
    pub reason: Reason,
    pub message: String,
    /// The decision in force (approved or rejected), if any.
    pub decided: Option<Decided>,
    /// The approved window, for Scheduled, Active, Superseded and Expired registrations.
    pub window: Option<Window>,
    pub conflicts: Vec<ConflictRef>,
    /// When it steps down for an approved successor whose start is still ahead.
    pub steps_down_at: Option<Timestamp>,
    /// The successor it stepped down for in this pass, and when (to be recorded as final).
    pub superseded_by: Option<(String, Timestamp)>,
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
        decide_conflicts(&mut out, now, &mut undo);
        let newly: Vec<RegKey> = successors.into_iter().filter(|k| out[k].phase == RegistrationPhase::Conflict && !blocked.contains(k)).collect();
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
    reason: Reason,
    message: String,
    conflicts: Vec<ConflictRef>,
    steps_down_at: Option<Timestamp>,
    superseded_by: Option<(String, Timestamp)>,
    next_transition: Option<Timestamp>,
}

impl Undo {
    /// Records `r`'s verdict before it is changed.
    fn save(&mut self, key: &RegKey, r: &Resolved) {
        self.0.push((
            key.clone(),
            Verdict {
                phase: r.phase,
                reason: r.reason,
                message: r.message.clone(),
                conflicts: r.conflicts.clone(),
                steps_down_at: r.steps_down_at,
                superseded_by: r.superseded_by.clone(),
                next_transition: r.next_transition,
            },
        ));
    }

    /// Puts every saved verdict back, newest first (so a verdict changed twice gets its first state).
    fn restore(self, out: &mut BTreeMap<RegKey, Resolved>) {
        for (key, v) in self.0.into_iter().rev() {
            if let Some(r) = out.get_mut(&key) {
                (r.phase, r.reason, r.message, r.conflicts, r.steps_down_at, r.superseded_by, r.next_transition) =
                    (v.phase, v.reason, v.message, v.conflicts, v.steps_down_at, v.superseded_by, v.next_transition);
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
            (RegistrationPhase::Rejected, Reason::Rejected, format!("rejected by AccessApproval {}", d.approval), Some(d.clone()), None, wake)
        }
        Standing::Ended(Terminal::Superseded { successor, at }) => {
            (RegistrationPhase::Superseded, Reason::Superseded, format!("superseded by {successor} at {} (recorded; final)", jst(*at)), None, None, None)
        }
        Standing::Ended(Terminal::Expired { at }) => {
            (RegistrationPhase::Expired, Reason::Expired, format!("access ended at {} (recorded; final)", jst(*at)), None, None, None)
        }
        Standing::Approved(d, w) => {
            let (phase, reason, message, next) = if w.cidrs.is_empty() {
                (
                    RegistrationPhase::PendingApproval,
                    Reason::AwaitingApprovalOfChange,
                    "none of the CIDRs in the spec was approved; the change waits for a new approval".to_string(),
                    wake,
                )
            } else if w.end.is_some_and(|end| end <= now) {
                (RegistrationPhase::Expired, Reason::Expired, format!("access ended at {}", w.end.map(jst).unwrap_or_default()), wake)
            } else if now < w.start {
                (RegistrationPhase::Scheduled, Reason::Scheduled, format!("approved; access starts at {}", jst(w.start)), earliest(wake, Some(w.start)))
            } else {
                let message = match w.end {
                    Some(end) => format!("{} CIDRs live until {}", w.cidrs.len(), jst(end)),
                    None => format!("{} CIDRs live", w.cidrs.len()),
                };
                (RegistrationPhase::Active, Reason::Active, message, earliest(wake, w.end))
            };
            (phase, reason, message, Some(d.clone()), Some(w.clone()), next)
        }
    };
    Resolved { evaluation, phase, reason, message, decided, window, conflicts: Vec::new(), steps_down_at: None, superseded_by: None, next_transition }
}

/// A successor (same namespace, verifier and environment, named by its approval too) that is approved takes over
/// at the start of its window; its predecessor steps down at that same instant, never earlier (no gap) and never
/// later (no overlap beyond what both approvals cover).
fn supersede(out: &mut BTreeMap<RegKey, Resolved>, now: Timestamp, blocked: &HashSet<RegKey>, undo: &mut Undo) -> Vec<RegKey> {
    let mut takeovers: Vec<(RegKey, RegKey, Timestamp)> = Vec::new(); // (old, new, instant)
    for (key, r) in out.iter().filter(|(k, _)| !blocked.contains(*k)) {
        let (Some(old_name), Some(window)) = (&r.evaluation.supersedes, &r.window) else {
            continue;
        };
        let old = RegKey { namespace: key.namespace.clone(), name: old_name.clone() };
        let same_line = out.get(&old).is_some_and(|o| o.evaluation.verifier == r.evaluation.verifier && o.evaluation.environment == r.evaluation.environment);
        if same_line && !window.cidrs.is_empty() && r.phase != RegistrationPhase::Expired {
            takeovers.push((old, key.clone(), window.start));
        }
    }
    // Every successor, also one whose start is ahead: one held in Conflict must not cut its predecessor's window.
    let successors: Vec<RegKey> = takeovers.iter().map(|(_, new, _)| new.clone()).collect();
    for (old, new, instant) in takeovers {
        let Some(r) = out.get_mut(&old) else { continue };
        if !matches!(r.phase, RegistrationPhase::Active | RegistrationPhase::Scheduled) {
            continue;
        }
        undo.save(&old, r);
        if now >= instant {
            r.phase = RegistrationPhase::Superseded;
            r.reason = Reason::Superseded;
            r.message = format!("superseded by {} at {}", new.name, jst(instant));
            r.superseded_by = Some((new.name.clone(), instant));
            r.next_transition = None;
        } else {
            r.steps_down_at = earliest(r.steps_down_at, Some(instant));
            r.next_transition = earliest(r.next_transition, Some(instant));
        }
    }
    successors
}

/// The part of a registration's window still ahead of `now`, cut at its predecessor's step-down: `[from, until)`.
fn time_window(r: &Resolved, now: Timestamp) -> Option<(Timestamp, Option<Timestamp>)> {
    let w = r.window.as_ref()?;
    let from = w.start.max(now);
    let until = match (w.end, r.steps_down_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if until.is_some_and(|u| u <= from) {
        return None;
    }
    Some((from, until))
}

fn windows_overlap(a: (Timestamp, Option<Timestamp>), b: (Timestamp, Option<Timestamp>)) -> Option<Timestamp> {
    let from = a.0.max(b.0);
    let before_end = |end: Option<Timestamp>| end.is_none_or(|e| from < e);
    (before_end(a.1) && before_end(b.1)).then_some(from)
}

/// Conflicts between verifiers (DESIGN §3 rule 6), decided over time and not only now: two registrations of
/// different verifiers in one environment conflict when their CIDRs overlap and so do their access windows, live or
/// scheduled. Each network has a place in line (`Window::places`); the networks are taken in that order (then by
/// registration), and a registration whose network overlaps one taken earlier by another verifier is held in
/// Conflict as soon as it is approved, naming the other and when their overlap begins. Its networks taken before
/// stay taken: deterministic, and the rare tangle it leaves fails closed for a person to sort out.
fn decide_conflicts(out: &mut BTreeMap<RegKey, Resolved>, now: Timestamp, undo: &mut Undo) {
    struct Entry<'a> {
        key: &'a RegKey,
        net: IpNet,
        place: Timestamp,
        window: (Timestamp, Option<Timestamp>),
    }
    let mut decisions: Vec<(RegKey, Vec<ConflictRef>, String)> = Vec::new();
    let mut by_environment: HashMap<crate::api::Environment, Vec<Entry<'_>>> = HashMap::new();
    for (key, r) in out.iter().filter(|(_, r)| matches!(r.phase, RegistrationPhase::Active | RegistrationPhase::Scheduled)) {
        let (Some(w), Some(window)) = (&r.window, time_window(r, now)) else {
            continue;
        };
        let entries = by_environment.entry(r.evaluation.environment).or_default();
        for (i, net) in w.cidrs.iter().enumerate() {
            let place = w.places.get(i).copied().or(r.decided.as_ref().map(|d| d.decided_at)).unwrap_or(Timestamp::MIN);
            entries.push(Entry { key, net: *net, place, window });
        }
    }
    for mut entries in by_environment.into_values() {
        entries.sort_by(|a, b| (a.place, a.key, crate::domain::cidr::interval(&a.net)).cmp(&(b.place, b.key, crate::domain::cidr::interval(&b.net))));
        let nets: Vec<IpNet> = entries.iter().map(|e| e.net).collect();
        // Earlier entries each entry overlaps, in CIDRs and in time, from another verifier (i < j; the order within
        // each list does not matter below). Overlapping networks are the (network, ancestor) pairs of the forest.
        let forest = containment_forest(&nets);
        let mut earlier: HashMap<usize, Vec<(usize, Timestamp)>> = HashMap::new();
        for (i, j) in (0..nets.len()).flat_map(|x| forest.ancestors(x).map(move |y| (x.min(y), x.max(y)))) {
            let (a, b) = (&entries[i], &entries[j]);
            if out[a.key].evaluation.verifier == out[b.key].evaluation.verifier {
                continue; // one verifier's own registrations may overlap
            }
            if let Some(from) = windows_overlap(a.window, b.window) {
                earlier.entry(j).or_default().push((i, from));
            }
        }
        if earlier.is_empty() {
            continue;
        }
        let mut in_conflict: BTreeSet<&RegKey> = BTreeSet::new();
        let mut taken = vec![false; entries.len()];
        for j in 0..entries.len() {
            let key = entries[j].key;
            if in_conflict.contains(key) {
                continue;
            }
            if earlier.get(&j).into_iter().flatten().any(|(i, _)| taken[*i]) {
                in_conflict.insert(key);
            } else {
                taken[j] = true;
            }
        }
        let mut entries_of: HashMap<&RegKey, Vec<usize>> = HashMap::new();
        for (j, e) in entries.iter().enumerate().filter(|(_, e)| in_conflict.contains(e.key)) {
            entries_of.entry(e.key).or_default().push(j);
        }
        for key in in_conflict {
            // Each other registration, with this one's networks that overlap what it holds, and from when.
            let mut by_other: BTreeMap<&RegKey, (Vec<CidrString>, Timestamp)> = BTreeMap::new();
            for &j in &entries_of[key] {
                for &(i, from) in earlier.get(&j).into_iter().flatten().filter(|(i, _)| taken[*i] && entries[*i].key != key) {
                    let slot = by_other.entry(entries[i].key).or_insert((Vec::new(), from));
                    let mine = CidrString(entries[j].net.to_string());
                    if !slot.0.contains(&mine) {
                        slot.0.push(mine);
                    }
                    slot.1 = slot.1.min(from);
                }
            }
            let conflicts: Vec<ConflictRef> = by_other
                .iter()
                .map(|(other, (cidrs, from))| ConflictRef {
                    namespace: other.namespace.clone(),
                    name: other.name.clone(),
                    verifier: out[*other].evaluation.verifier.clone(),
                    cidrs: cidrs.clone(),
                    from: Some(from.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                })
                .collect();
            let names: Vec<String> =
                by_other.iter().map(|(k, (_, from))| format!("{k} (verifier {}) from {}", out[*k].evaluation.verifier, jst(*from))).collect();
            decisions.push((key.clone(), conflicts, format!("CIDRs overlap {}, approved for them earlier; they keep them", names.join(", "))));
        }
    }
    for (key, conflicts, message) in decisions {
        let r = out.get_mut(&key).expect("involved keys come from out");
        undo.save(&key, r);
        r.phase = RegistrationPhase::Conflict;
        r.reason = Reason::Conflict;
        r.message = message;
        r.conflicts = conflicts;
    }
}
