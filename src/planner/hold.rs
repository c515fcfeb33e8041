//! Mass-revocation hold (DESIGN §3 rule 10): a change that would remove much of an environment's allowlist at
//! once (as after an accidental namespace deletion) is held until a person confirms it, while single
//! revocations stay immediate. While held, the previous set stays published, plus anything newly approved.

use super::children::cidr_text;
use crate::api::environment::MassRevocationHold;
use crate::domain::cidr::interval;
use crate::domain::digest::digest_bytes;
use ipnet::IpNet;

/// Annotation on the AccessEnvironment that confirms a held removal: its value is the held digest.
pub const RELEASE_ANNOTATION: &str = "access.jpki.dev/release-hold";

/// What is published now (read back from the allowlist index and shards).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishedAllowlist {
    pub digest: String,
    pub cidrs: Vec<IpNet>,
    pub live_registrations: usize,
}

/// A held removal, shown in the environment's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Digest of the set that would be published without the hold; the release annotation names it.
    pub held_digest: String,
    pub removed_cidrs: usize,
    pub previous_cidrs: usize,
    pub removed_registrations: usize,
}

/// Networks of `previous` not covered by one network of `next`. Both are aggregated (disjoint) and sorted, so
/// the only candidate container is the last network of `next` starting at or before it: a binary search each,
/// O(p log n). A partly covered network counts as removed, which errs towards holding.
fn removed(previous: &[IpNet], next: &[IpNet]) -> usize {
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

/// Decides whether to hold. Returns the set to publish and the hold, if any.
///
/// A removal is held when it takes away at least `percent` % of the published CIDRs, at least `minCidrs` of
/// them, and at least two registrations' worth (the live count fell by two or more): one revocation alone is
/// never held.
pub fn apply_hold(
    policy: Option<&MassRevocationHold>,
    previous: Option<&PublishedAllowlist>,
    next: Vec<IpNet>,
    live_registrations: usize,
    release: Option<&str>,
) -> (Vec<IpNet>, Option<Hold>) {
    let (Some(policy), Some(previous)) = (policy, previous) else { return (next, None) };
    if previous.cidrs.is_empty() {
        return (next, None);
    }
    let removed_cidrs = removed(&previous.cidrs, &next);
    let removed_registrations = previous.live_registrations.saturating_sub(live_registrations);
    let percent = usize::try_from(policy.percent).unwrap_or(100);
    let min = usize::try_from(policy.min_cidrs).unwrap_or(0);
    let mass = removed_cidrs * 100 >= percent * previous.cidrs.len() && removed_cidrs >= min.max(1) && removed_registrations >= 2;
    if !mass {
        return (next, None);
    }
    let held_digest = digest_bytes(cidr_text(&next).as_bytes());
    if release == Some(held_digest.as_str()) {
        return (next, None);
    }
    let mut union = previous.cidrs.clone();
    union.extend(next);
    let hold = Hold { held_digest, removed_cidrs, previous_cidrs: previous.cidrs.len(), removed_registrations };
    (sorted_aggregate(&union), Some(hold))
}

/// Aggregated, IPv4 before IPv6, each in address order.
pub fn sorted_aggregate(cidrs: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&cidrs.to_vec());
    out.sort_by_key(interval);
    out
}
