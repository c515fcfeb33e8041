//! Prometheus metrics with bounded labels: kinds, results, phases and environment names, never object names or
//! error texts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub environment: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabel {
    pub environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentStateLabel {
    pub environment: String,
    /// expected, reporting, in_sync, stale, missing, behind
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TamperLabel {
    pub environment: String,
    /// `wire::allowlist::Refusal::category`, or `deleted`
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// What the planner did for one object: `work` is `evaluation` (a registration judged on its own) or `plan` (its
/// status and URL notice), `result` is `computed` or `reused` (from the memo of earlier passes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlannedLabel {
    pub work: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: &'static str,
}

/// Every metric of the controller.
pub struct Metrics {
    pub registry: Registry,
    /// Reconcile passes (one plans every environment), by result.
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_seconds: Histogram,
    /// Time of each step of a pass (snapshot, plan, environments, notices, stale, statuses): where a pass goes.
    pub step_seconds: Family<StepLabel, Histogram>,
    /// Writes to the API server by operation (apply, delete, status, failed).
    pub writes: Family<WriteLabel, Counter>,
    /// Registrations the planner judged or planned anew, or reused from earlier passes: the planner's work per object.
    pub planned: Family<PlannedLabel, Counter>,
    pub registrations: Family<PhaseLabel, Gauge>,
    pub cidrs: Family<EnvironmentLabel, Gauge>,
    pub overdue_setups: Family<EnvironmentLabel, Gauge>,
    /// Stored objects the types cannot read, by kind.
    pub unreadable_objects: Family<KindLabel, Gauge>,
    pub is_leader: Gauge,
    /// Firewall agents per environment and state (expected, reporting, in_sync, stale, missing, behind).
    pub agents: Family<AgentStateLabel, Gauge>,
    /// NetworkPolicies that may select an environment's services and are not ours.
    pub foreign_policies: Family<EnvironmentLabel, Gauge>,
    /// Published sets found not to be the controller's (forged, altered, replayed, deleted), replaced.
    pub tampering: Family<TamperLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("jpki_access");
        let m = Metrics {
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            step_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            writes: Family::default(),
            planned: Family::default(),
            registrations: Family::default(),
            cidrs: Family::default(),
            overdue_setups: Family::default(),
            unreadable_objects: Family::default(),
            is_leader: Gauge::default(),
            agents: Family::default(),
            foreign_policies: Family::default(),
            tampering: Family::default(),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Reconcile passes by result", m.reconciles.clone());
        registry.register("reconcile_duration_seconds", "Duration of a reconcile pass", m.reconcile_seconds.clone());
        registry.register("pass_step_duration_seconds", "Duration of each step of a reconcile pass", m.step_seconds.clone());
        registry.register("writes", "Writes to the API server by operation", m.writes.clone());
        registry.register("planned_objects", "Registrations evaluated or planned, computed anew or reused from earlier passes", m.planned.clone());
        registry.register("registrations", "Registrations by environment and phase", m.registrations.clone());
        registry.register("allowlist_cidrs", "Published CIDRs per environment", m.cidrs.clone());
        registry.register("overdue_setups", "Registrations whose setup due date has passed", m.overdue_setups.clone());
        registry.register("unreadable_objects", "Stored objects that do not fit the types", m.unreadable_objects.clone());
        registry.register("leader", "1 while this replica holds the Lease", m.is_leader.clone());
        registry.register("agents", "Firewall agents per environment and state", m.agents.clone());
        registry.register("foreign_network_policies", "NetworkPolicies that may select an environment's services and are not ours", m.foreign_policies.clone());
        registry.register("allowlist_tampering", "Published allowlists found not to be the controller's, and replaced", m.tampering.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
