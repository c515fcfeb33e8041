//! Mass-revocation hold (DESIGN §3 rule 10): a removal of much of an environment's allowlist (as after an
//! accidental namespace deletion) is held until a person confirms it, while single revocations stay immediate.
//!
//! Removals are measured against a **baseline**: the set a person last released (or, with the policy's
//! `windowHours`, the set published at the start of the current window), and everything published since. The
//! baseline is stored beside the allowlist (`jpki-hold-baseline-<env>`), so neither a restart nor a run of small
//! removals resets it: 49 removals per pass add up against the same baseline, and additions never offset them (they
//! join the baseline, so removing them later counts too). What counts:
//!
//! - CIDRs: the registrations' CIDRs of the baseline (each registration's own, not merged across registrations)
//!   not covered by the set that would be published; immune to how the published set is later split or merged,
//!   since the baseline does not change;
//! - registrations: how many lost any of their CIDRs since the baseline, summed pass by pass from the registrations
//!   published before each pass (the controller's memory of what it published, or the statuses after a restart)
//!   and those now live. One registration, however many CIDRs, is never held.
//!
//! While held, the previous set stays published plus anything newly live, and the registrations it keeps are `Held`.

use super::children::cidr_text;
use crate::api::environment::MassRevocationHold;
use crate::domain::cidr::interval;
use crate::domain::digest::digest_bytes;
use ipnet::IpNet;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// Annotation on the AccessEnvironment that confirms a held removal: its value is the held digest.
pub const RELEASE_ANNOTATION: &str = "access.jpki.dev/release-hold";
/// Annotation naming who released (the chart's admission policy makes it the requesting user).
pub const RELEASED_BY_ANNOTATION: &str = "access.jpki.dev/released-by";

/// What a registration had published, by its uid (or, offline, its key): the planner's view of the last pass.
pub type LiveSet = BTreeMap<String, Vec<IpNet>>;

/// What is published now (read back from the allowlist index and shards) and the hold's baseline.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishedAllowlist {
    pub digest: String,
    pub cidrs: Vec<IpNet>,
    pub live_registrations: usize,
    pub baseline: Option<Baseline>,
}

/// The set removals are counted against, and what was counted since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    /// Every registration's CIDRs (sorted, without duplicates, not merged across registrations): removals are
    /// counted in these units, so merging neighbours into one published network cannot make a mass removal small.
    pub cidrs: Vec<IpNet>,
    pub since: Timestamp,
    /// Registrations that lost CIDRs since `since` (a registration may be counted again after it came back).
    pub affected_registrations: usize,
    /// The digest held now, while a removal is held.
    pub holding: Option<String>,
}

impl Baseline {
    fn of(cidrs: Vec<IpNet>, since: Timestamp) -> Self {
        // Whole seconds, as stored, so a baseline read back equals the one planned.
        let since = Timestamp::from_second(since.as_second()).unwrap_or(since);
        Baseline { cidrs, since, affected_registrations: 0, holding: None }
    }
    pub fn digest(&self) -> String {
        digest_bytes(cidr_text(&self.cidrs).as_bytes())
    }
}

/// A held removal, shown in the environment's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Digest of the set that would be published without the hold; the release annotation names it.
    pub held_digest: String,
    pub removed_cidrs: usize,
    pub baseline_cidrs: usize,
    pub affected_registrations: usize,
}

/// Everything the hold decides on, for one environment.
pub struct HoldInput<'a> {
    pub policy: Option<&'a MassRevocationHold>,
    pub published: Option<&'a PublishedAllowlist>,
    /// What each registration had published before this pass (see [`LiveSet`]).
    pub previously_live: &'a LiveSet,
    /// What each registration has live now.
    pub live: &'a LiveSet,
    /// The set to publish without a hold: aggregated and sorted.
    pub next: Vec<IpNet>,
    pub release: Option<&'a str>,
    pub now: Timestamp,
}

/// What the hold decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldOutcome {
    pub publish: Vec<IpNet>,
    pub hold: Option<Hold>,
    /// The baseline to store (None without a policy).
    pub baseline: Option<Baseline>,
    /// A person's release took effect in this pass (recorded as `HoldReleased`).
    pub released: Option<String>,
    /// Registrations no longer live whose CIDRs stay published while held.
    pub held: BTreeSet<String>,
    /// What each registration has published after this pass: the next pass's `previously_live`.
    pub published_live: LiveSet,
    /// How many registrations the allowlist index records as published: while held, never fewer than before, so
    /// registrations deleted while the controller was restarting (whose identities no status keeps) are still
    /// counted on the next pass.
    pub recorded_live: usize,
}

/// Networks of `previous` not covered by one network of `next`. Both are aggregated (disjoint) and sorted, so
/// the only candidate container is the last network of `next` starting at or before it: a binary search each,
/// O(p log n). A partly covered network counts as removed, which errs towards holding.
pub fn removed(previous: &[IpNet], next: &[IpNet]) -> usize {
    let next: Vec<_> = next.iter().map(interval).collect();
    previous
        .iter()
        .filter(|p| {
            let (family, lo, hi) = interval(p);
            let at = next.partition_point(|(f, nlo, _)| (*f, *nlo) <= (family, lo));
            !(at > 0 && next[at - 1].0 == family && next[at - 1].2 >= hi)
        })
        .count()
}

/// The CIDRs of every registration in `set`: sorted, without duplicates, not merged across registrations.
pub fn registration_cidrs(set: &LiveSet) -> Vec<IpNet> {
    let mut all: Vec<IpNet> = set.values().flatten().copied().collect();
    all.sort_by_key(interval);
    all.dedup();
    all
}

/// Registrations that had CIDRs published that they no longer have live.
fn losing(previously_live: &LiveSet, live: &LiveSet) -> BTreeSet<String> {
    previously_live
        .iter()
        .filter(|(uid, before)| {
            let now = live.get(*uid).map(|n| sorted_aggregate(n)).unwrap_or_default();
            removed(&sorted_aggregate(before), &now) > 0
        })
        .map(|(uid, _)| uid.clone())
        .collect()
}

/// Decides whether to hold, and what the baseline is now.
pub fn decide(input: HoldInput<'_>) -> HoldOutcome {
    let HoldInput { policy, published, previously_live, live, next, release, now } = input;
    let Some(policy) = policy else {
        return HoldOutcome {
            publish: next,
            hold: None,
            baseline: None,
            released: None,
            held: BTreeSet::new(),
            recorded_live: live.len(),
            published_live: live.clone(),
        };
    };
    let published_now = published.map(|p| p.cidrs.clone()).unwrap_or_default();
    // Without a stored baseline: what was published before this pass, or on the very first pass what is live.
    let mut baseline = match (published, published.and_then(|p| p.baseline.clone())) {
        (_, Some(b)) => b,
        (Some(_), None) => Baseline::of(registration_cidrs(previously_live), now),
        (None, None) => Baseline::of(registration_cidrs(live), now),
    };
    let window = policy.window_hours.map(|h| jiff::SignedDuration::from_hours(i64::from(h)));
    if let Some(window) = window
        && baseline.holding.is_none()
        && baseline.since.checked_add(window).is_ok_and(|end| now >= end)
    {
        baseline = Baseline::of(registration_cidrs(previously_live), now);
    }
    // What is published now belongs to the baseline too: removals of what was added since the release count, and
    // additions never make up for removals (they only grow the set the share is taken of).
    let grown = registration_cidrs(live);
    if grown.iter().any(|n| baseline.cidrs.binary_search_by_key(&interval(n), interval).is_err()) {
        let mut all = std::mem::take(&mut baseline.cidrs);
        all.extend(grown);
        all.sort_by_key(interval);
        all.dedup();
        baseline.cidrs = all;
    }
    let losers = losing(previously_live, live);
    // After a restart the previous set comes from statuses; registrations the index counted but no status shows
    // (deleted meanwhile) count as losers too.
    let unseen = published.map_or(0, |p| p.live_registrations.saturating_sub(previously_live.len()));
    let affected = baseline.affected_registrations + losers.len() + unseen;
    let removed_cidrs = removed(&baseline.cidrs, &next);
    let percent = usize::try_from(policy.percent).unwrap_or(100);
    let min = usize::try_from(policy.min_cidrs).unwrap_or(0).max(1);
    let mass = removed_cidrs * 100 >= percent * baseline.cidrs.len().max(1) && removed_cidrs >= min && affected >= 2;
    let held_digest = digest_bytes(cidr_text(&next).as_bytes());
    if !mass {
        baseline.affected_registrations = affected;
        baseline.holding = None;
        return HoldOutcome {
            publish: next,
            hold: None,
            baseline: Some(baseline),
            released: None,
            held: BTreeSet::new(),
            recorded_live: live.len(),
            published_live: live.clone(),
        };
    }
    if release == Some(held_digest.as_str()) {
        let baseline = Baseline::of(registration_cidrs(live), now);
        return HoldOutcome {
            publish: next,
            hold: None,
            baseline: Some(baseline),
            released: Some(held_digest),
            held: BTreeSet::new(),
            recorded_live: live.len(),
            published_live: live.clone(),
        };
    }
    // Held: what was published stays, plus what is newly live. The registrations that lost CIDRs keep them
    // published, so the next pass sees the same removal (and holds it again) until a person releases it.
    let mut union = published_now;
    union.extend(next);
    let mut published_live = live.clone();
    for uid in &losers {
        let entry = published_live.entry(uid.clone()).or_default();
        entry.extend(previously_live[uid].iter().copied());
        *entry = sorted_aggregate(entry);
    }
    let held: BTreeSet<String> = losers.into_iter().filter(|uid| !live.contains_key(uid)).collect();
    baseline.holding = Some(held_digest.clone());
    let hold = Hold { held_digest, removed_cidrs, baseline_cidrs: baseline.cidrs.len(), affected_registrations: affected };
    let recorded_live = published_live.len().max(published.map_or(0, |p| p.live_registrations));
    HoldOutcome { publish: sorted_aggregate(&union), hold: Some(hold), baseline: Some(baseline), released: None, held, recorded_live, published_live }
}

/// The addresses in both `a` and `b`, aggregated and sorted. Two CIDRs overlap only when one contains the other, so
/// each overlapping pair gives the smaller; both lists aggregated (disjoint, sorted) make it one merge walk,
/// O(a + b), where a pairwise check of a fleet's 100k CIDRs against as many would be 10^10 steps.
pub fn intersect(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let (a, b) = (sorted_aggregate(a), sorted_aggregate(b));
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let ((fa, alo, ahi), (fb, blo, bhi)) = (interval(&a[i]), interval(&b[j]));
        if fa == fb && alo <= bhi && blo <= ahi {
            out.push(if ahi - alo <= bhi - blo { a[i] } else { b[j] });
        }
        // Step past whichever ends first (in family order): it can overlap nothing further in the other list.
        if (fa, ahi) <= (fb, bhi) {
            i += 1;
        } else {
            j += 1;
        }
    }
    sorted_aggregate(&out)
}

/// Aggregated, IPv4 before IPv6, each in address order.
pub fn sorted_aggregate(cidrs: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&cidrs.to_vec());
    out.sort_by_key(interval);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::intersect;
    use ipnet::IpNet;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_intersection_keeps_only_addresses_in_both_lists() {
        let a = nets(&["10.0.0.0/16", "192.0.2.0/24", "198.51.100.30/32", "2001:db8::/48"]);
        let b = nets(&["10.0.5.0/24", "10.1.0.0/24", "192.0.2.0/25", "192.0.2.128/25", "2001:db8:0:1::/64", "2001:db9::/32"]);
        assert_eq!(intersect(&a, &b), nets(&["10.0.5.0/24", "192.0.2.0/24", "2001:db8:0:1::/64"]));
        assert_eq!(intersect(&b, &a), intersect(&a, &b));
        assert_eq!(intersect(&a, &[]), Vec::<IpNet>::new());
        assert_eq!(intersect(&a, &a), a);
    }
}
