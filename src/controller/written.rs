//! What this replica last wrote of each environment's published allowlist and hold baseline, and what each
//! registration had published with it: the mass-revocation hold's input on the next pass.
//!
//! The informer caches are not enough for it. The index, its shards and the baseline are separate objects seen
//! through separate watches, so right after a write the caches can show the previous version, or a new index whose
//! shards have not arrived yet (which does not verify, and counts as not published). A pass that read such a cache
//! started the baseline again from what was live, forgetting the removals already counted against it: removals
//! sliced over a few passes were then never held (tests/decisions_history.rs failed in CI with "not held within
//! 10 s"). So what this replica wrote is taken over the caches for as long as it leads; a new leader (or a
//! restart) starts from the caches, which then show the previous leader's last writes.

use crate::planner::EnvironmentPlan;
use crate::planner::hold::{LiveSet, PublishedAllowlist};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Written {
    /// The published set and baseline of each environment, as this replica last wrote them completely.
    sets: BTreeMap<String, PublishedAllowlist>,
    /// What each registration had published after that write, per environment (the hold's `previously_live`).
    live: BTreeMap<String, LiveSet>,
}

impl Written {
    /// The published sets the planner reads: this replica's last complete write of an environment, else the cache.
    pub fn published(&self, cached: &BTreeMap<String, PublishedAllowlist>) -> BTreeMap<String, PublishedAllowlist> {
        let mut out = cached.clone();
        out.extend(self.sets.iter().map(|(name, set)| (name.clone(), set.clone())));
        out
    }

    /// What this replica last published for `environment` (a rollback's cap).
    pub fn published_cidrs(&self, environment: &str) -> Option<&Vec<ipnet::IpNet>> {
        self.sets.get(environment).map(|s| &s.cidrs)
    }

    /// What each registration had published before this pass (empty after a start: the planner reads the statuses).
    pub fn previously_live(&self) -> &BTreeMap<String, LiveSet> {
        &self.live
    }

    /// Every write of `environment`'s plan succeeded.
    pub fn wrote(&mut self, environment: &str, plan: &EnvironmentPlan) {
        self.sets.insert(
            environment.to_string(),
            PublishedAllowlist {
                digest: plan.digest.clone(),
                cidrs: plan.cidrs.clone(),
                live_registrations: plan.recorded_live,
                baseline: plan.baseline.clone(),
            },
        );
        self.live.insert(environment.to_string(), plan.published_live.clone());
    }

    /// Environments no longer planned are forgotten.
    pub fn retain(&mut self, planned: impl Fn(&str) -> bool) {
        self.sets.retain(|name, _| planned(name));
        self.live.retain(|name, _| planned(name));
    }

    /// Leadership was gained: another replica may have written since, so the caches are the truth again.
    pub fn forget(&mut self) {
        *self = Written::default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::Environment;
    use crate::api::environment::MassRevocationHold;
    use crate::planner::tests::{World, approve, registration};

    const NOW: &str = "2026-05-01T00:00:00Z";

    /// 20 registrations of one /24 each, approved and published; the hold's policy is 10 % and at least 5 CIDRs.
    fn published_world() -> (World, Written) {
        let mut w = World::new();
        w.environments[0].spec.policy.mass_revocation_hold = Some(MassRevocationHold { percent: 10, min_cidrs: 5, window_hours: None });
        w.registrations =
            (0..20).map(|i| registration("sapporo", &format!("r{i}"), Environment::Production, &[&format!("10.180.{i}.0/24")], "2026-04-01", None)).collect();
        w.approvals = w.registrations.iter().map(|r| approve(r, "2026-03-05T01:00:00Z")).collect();
        let mut written = Written::default();
        let plan = w.plan(NOW);
        written.wrote("production", &plan.environments["production"]);
        w.published = written.sets.clone();
        (w, written)
    }

    /// One pass as the controller runs it: the planner reads `cached` through the memory, and its plan is written.
    fn pass(w: &World, written: &mut Written, cached: &BTreeMap<String, PublishedAllowlist>) -> crate::planner::Plan {
        let mut input = w.clone();
        input.published = written.published(cached);
        input.previously_live = Some(written.previously_live().clone());
        let plan = input.plan(NOW);
        written.wrote("production", &plan.environments["production"]);
        plan
    }

    #[test]
    fn removals_sliced_over_passes_are_held_while_the_cache_lags_behind_our_writes() {
        let (mut w, mut written) = published_world();
        let before = w.published.clone();
        // 4 revoked (under minCidrs 5): immediate.
        w.approvals.drain(0..4);
        let plan = pass(&w, &mut written, &before);
        assert!(plan.environments["production"].hold.is_none());
        // 4 more, while the cache still shows the set before the first 4 (the index's update not seen yet) and
        // while it shows an index whose shards have not arrived (not verified: no set at all). Either way 8 of the
        // 20 CIDRs counted from the same baseline: held.
        for cached in [before.clone(), BTreeMap::new()] {
            let mut memory = Written { sets: written.sets.clone(), live: written.live.clone() };
            let mut next = w.clone();
            next.approvals.drain(0..4);
            let plan = pass(&next, &mut memory, &cached);
            let hold = plan.environments["production"].hold.clone();
            assert!(hold.is_some(), "cache {:?}: 8 of 20 removed since the baseline must be held", cached.keys().collect::<Vec<_>>());
            assert_eq!(hold.unwrap().removed_cidrs, 8);
        }
    }

    #[test]
    fn after_leadership_is_gained_the_cache_is_read_again() {
        let (_, mut written) = published_world();
        written.forget();
        let cached: BTreeMap<String, PublishedAllowlist> = [("production".to_string(), PublishedAllowlist { digest: "d".into(), ..Default::default() })].into();
        assert_eq!(written.published(&cached)["production"].digest, "d");
        assert!(written.previously_live().is_empty());
    }
}
