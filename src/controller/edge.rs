//! The controller's view of the edge, per pass: the published sets checked for tampering (`published::Guard`),
//! the firewall agents counted from their heartbeats and the nodes expected to run one, foreign NetworkPolicies in
//! the services' namespaces, and what all that adds to the statuses (pure rules in `crate::planner::edge`).

use super::published::{Guard, Published, Signer, Tampering};
use super::stores::Stores;
use crate::api::AccessEnvironment;
use crate::api::allowlist::AllowlistPurpose;
use crate::api::environment::AccessEnvironmentStatus;
use crate::planner::EnvironmentPlan;
use crate::planner::children::{Child, allowlist_namespace};
use crate::planner::edge::{Agents, agents, agents_condition, foreign_policies};
use crate::planner::status::condition;
use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};
use kube::Client;
use std::collections::{BTreeMap, BTreeSet};

/// What the controller remembers about the edge between passes.
pub struct Edge {
    pub signer: Signer,
    pub guard: Guard,
    /// The sets published by digest, so an agent that reports an older digest can still be credited with the CIDRs
    /// it holds. Pruned to the digests some agent reports and the current ones.
    pub sets: BTreeMap<String, Vec<IpNet>>,
    /// Environments whose writes failed in the previous pass (their sets may be half-written by us).
    pub failed_last_pass: BTreeSet<String>,
    /// Tampering found in this pass, by environment (for the `AllowlistIntact` condition).
    pub tampered: BTreeMap<String, Vec<Tampering>>,
}

impl Edge {
    pub fn new(signer: Signer) -> Self {
        Edge { signer, guard: Guard::default(), sets: BTreeMap::new(), failed_last_pass: BTreeSet::new(), tampered: BTreeMap::new() }
    }

    /// Checks the published sets of every planned environment; returns what was found.
    pub async fn check(
        &mut self,
        client: &Client,
        stores: &Stores,
        plans: &BTreeMap<String, EnvironmentPlan>,
        environments: &[&AccessEnvironment],
    ) -> Vec<Tampering> {
        let published: Vec<Published<'_>> = plans
            .values()
            .filter_map(|p| {
                let (namespace, purposes) = index_children(p);
                let namespace = namespace?;
                let env = environments.iter().find(|e| e.metadata.name.as_deref() == Some(p.name.as_str()));
                let published_before = env.and_then(|e| e.status.as_ref()).is_some_and(|s| s.allowlist_digest.is_some());
                let enforced_serial =
                    stores.heartbeats(&p.name, namespace).iter().filter_map(|h| h.report.as_ref().ok()).map(|r| r.applied_serial).max().unwrap_or(0);
                Some(Published { namespace, environment: &p.name, purposes, published_before, enforced_serial })
            })
            .collect();
        let found = self.guard.check(client, stores, self.signer.public_key(), &published, &self.failed_last_pass).await;
        self.signer.saw_serial(self.guard.max_serial());
        self.tampered.clear();
        for t in &found {
            self.tampered.entry(t.environment.clone()).or_default().push(t.clone());
        }
        found
    }

    /// Remembers the sets of this pass and forgets those no agent enforces any more.
    pub fn remember_sets(&mut self, plans: &BTreeMap<String, EnvironmentPlan>, reported: &BTreeSet<String>) {
        for p in plans.values() {
            self.sets.entry(p.digest.clone()).or_insert_with(|| p.cidrs.clone());
        }
        let current: BTreeSet<&String> = plans.values().map(|p| &p.digest).collect();
        self.sets.retain(|d, _| current.contains(d) || reported.contains(d));
    }
}

/// The namespace of a plan's allowlist indexes and their purposes.
fn index_children(plan: &EnvironmentPlan) -> (Option<&str>, Vec<AllowlistPurpose>) {
    let mut namespace = None;
    let mut purposes = Vec::new();
    for c in &plan.children {
        if let Child::Allowlist(index) = c {
            namespace = index.metadata.namespace.as_deref();
            purposes.push(index.spec.purpose);
        }
    }
    (namespace, purposes)
}

/// One environment's edge, observed now.
pub struct Observed {
    pub agents: Agents,
    pub foreign: Vec<String>,
}

/// Observes the agents and foreign policies of `env` (planned as `plan`).
pub fn observe(stores: &Stores, env: &AccessEnvironment, plan: &EnvironmentPlan, now: Timestamp) -> Observed {
    let firewall = env.spec.firewall.as_ref();
    let expected = firewall.and_then(|f| f.expected_nodes.as_ref()).map(|sel| stores.nodes_matching(&sel.match_labels));
    let stale_after = SignedDuration::from_secs(i64::from(firewall.map_or(60, |f| f.stale_after_seconds)));
    let heartbeats = stores.heartbeats(&plan.name, allowlist_namespace(env));
    let agents = agents(expected.as_ref(), &heartbeats, &plan.digest, now, stale_after);
    let ours: BTreeSet<String> = plan.children.iter().filter(|c| matches!(c, Child::NetworkPolicy(_))).map(|c| c.identity().3).collect();
    let policies = stores.network_policies.state();
    let foreign = foreign_policies(&env.spec.service_namespace, &env.spec.pod_selector.match_labels, policies.iter().map(|p| &**p), &ours);
    Observed { agents, foreign }
}

/// Adds the edge to an environment's planned status: the agents (`agentsInSync`, `agents`, condition
/// `AgentsInSync`), foreign policies (`foreignNetworkPolicies`, condition `ForeignNetworkPolicies`), and whether the
/// published set is the one the controller signed (condition `AllowlistIntact`).
pub fn decorate(
    status: &mut AccessEnvironmentStatus,
    env: &AccessEnvironment,
    observed: &Observed,
    tampered: Option<&Vec<Tampering>>,
    restored: bool,
    now: Timestamp,
) {
    let generation = env.metadata.generation;
    let previous = env.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let cond = |t: &str, s: bool, reason: &str, message: &str| condition(t, s, reason, message, generation, previous, now);
    status.agents_in_sync = observed.agents.in_sync_text.clone();
    status.agents = (observed.agents.status != Default::default() || observed.agents.expects_agents).then(|| observed.agents.status.clone());
    let (ok, reason, message) = agents_condition(&observed.agents);
    status.conditions.push(cond("AgentsInSync", ok, reason, &message));
    status.foreign_network_policies = observed.foreign.iter().take(crate::planner::edge::MAX_NAMES).cloned().collect();
    let foreign_message = if observed.foreign.is_empty() {
        String::new()
    } else {
        format!(
            "{} NetworkPolicies in {} may select the services' pods and are not the controller's (NetworkPolicies add up: they may open what ours close): {}",
            observed.foreign.len(),
            env.spec.service_namespace,
            observed.foreign.join(", ")
        )
    };
    status.conditions.push(cond(
        "ForeignNetworkPolicies",
        !observed.foreign.is_empty(),
        if observed.foreign.is_empty() { "None" } else { "Found" },
        &foreign_message,
    ));
    let intact = match tampered {
        // Held after a rollback (`super::rollback`): says so, with what ends it, until a person accepts.
        Some(found) if found.iter().any(|t| t.reason == super::rollback::HELD) => {
            let held = found.iter().filter(|t| t.reason == super::rollback::HELD).map(|t| t.message.as_str()).collect::<Vec<_>>().join("; ");
            cond("AllowlistIntact", false, "HeldAfterRollback", &held)
        }
        Some(found) => {
            let what = found.iter().map(|t| t.message.as_str()).collect::<Vec<_>>().join("; ");
            if restored {
                cond(
                    "AllowlistIntact",
                    true,
                    "Restored",
                    &format!("at {}: {what}; the controller's set was written again", now.round(jiff::Unit::Second).unwrap_or(now)),
                )
            } else {
                cond("AllowlistIntact", false, "Tampered", &format!("{what}; writing the controller's set again failed, retrying"))
            }
        }
        // A past incident stays on record until the next one; otherwise the set verifies.
        None => match previous.iter().find(|c| c.type_ == "AllowlistIntact" && c.reason == "Restored") {
            Some(c) => c.clone(),
            None => cond("AllowlistIntact", true, "Verified", "the published set carries the controller's signature"),
        },
    };
    status.conditions.push(intact);
}
