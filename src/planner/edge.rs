//! The edge's side of the status, pure (the controller gathers the inputs from its caches):
//!
//! - **agents**: an environment's firewall agents from their heartbeats (`crate::wire::report`) and the nodes
//!   expected to run one: expected, reporting, in sync, stale, missing, behind;
//! - **enforcement**: whether every expected agent enforces a registration's CIDRs, which gates the registration's
//!   `Ready` where the environment expects agents (so `kubectl wait --for=condition=Ready` waits for the edge);
//! - **foreign NetworkPolicies**: policies of the services' namespace that may select the services' pods and are not
//!   ours. NetworkPolicies add up: an allow-all next to our default deny opens the services to everyone.

use crate::api::environment::AgentsStatus;
use crate::api::registration::{AccessRegistrationStatus, RegistrationPhase};
use crate::wire::report::{Enforcing, Heartbeat};
use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use std::collections::{BTreeMap, BTreeSet};

/// Node lists in status are cut here; the counts stay whole.
pub const MAX_NAMES: usize = 32;

/// One agent as the status counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    /// Fresh heartbeat, enforcing the current digest, no error.
    InSync,
    /// Fresh heartbeat, but an error, a refused set, or another digest: enforcing `digest` (if any set).
    Behind {
        digest: Option<String>,
    },
    Stale,
    Missing,
}

/// What the status says about an environment's agents.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agents {
    pub status: AgentsStatus,
    /// "in sync/total", as `agentsInSync` has always read.
    pub in_sync_text: Option<String>,
    /// The environment names the nodes that must run an agent.
    pub expects_agents: bool,
    /// Per expected node (or per reporting agent), the digest it enforces; `None` for one that enforces no set we
    /// can count (missing, stale, closed, failing).
    pub enforced: BTreeMap<String, Option<String>>,
    /// When the next fresh heartbeat turns stale (the controller looks again then).
    pub next_stale: Option<Timestamp>,
}

/// Counts the agents of one environment at `now`.
pub fn agents(expected_nodes: Option<&BTreeSet<String>>, heartbeats: &[Heartbeat], digest: &str, now: Timestamp, stale_after: SignedDuration) -> Agents {
    let mut by_node: BTreeMap<&str, &Heartbeat> = BTreeMap::new();
    for hb in heartbeats {
        let newer = by_node.get(hb.node.as_str()).is_none_or(|old| old.renewed < hb.renewed);
        if newer {
            by_node.insert(&hb.node, hb);
        }
    }
    let mut states: BTreeMap<String, AgentState> = BTreeMap::new();
    let mut next_stale: Option<Timestamp> = None;
    for (node, hb) in &by_node {
        let fresh_until = hb.renewed.and_then(|r| r.checked_add(stale_after).ok());
        let state = match (fresh_until, &hb.report) {
            (Some(until), Ok(report)) if until >= now => {
                next_stale = Some(next_stale.map_or(until, |n| n.min(until)));
                let enforces_set = matches!(report.enforcing, Enforcing::Verified | Enforcing::Persisted) && !report.applied_digest.is_empty();
                if report.ready && enforces_set && report.error.is_empty() && report.applied_digest == digest {
                    AgentState::InSync
                } else {
                    AgentState::Behind { digest: enforces_set.then(|| report.applied_digest.clone()) }
                }
            }
            (Some(until), Err(_)) if until >= now => {
                next_stale = Some(next_stale.map_or(until, |n| n.min(until)));
                AgentState::Behind { digest: None }
            }
            _ => AgentState::Stale,
        };
        states.insert(node.to_string(), state);
    }
    if let Some(expected) = expected_nodes {
        for node in expected {
            states.entry(node.clone()).or_insert(AgentState::Missing);
        }
    }
    let names = |want: fn(&AgentState) -> bool| -> (Vec<String>, i64) {
        let all: Vec<&String> = states.iter().filter(|(_, s)| want(s)).map(|(n, _)| n).collect();
        (all.iter().take(MAX_NAMES).map(|n| n.to_string()).collect(), all.len() as i64)
    };
    let (stale, stale_count) = names(|s| *s == AgentState::Stale);
    let (missing, missing_count) = names(|s| *s == AgentState::Missing);
    let (behind, behind_count) = names(|s| matches!(s, AgentState::Behind { .. }));
    let in_sync = states.values().filter(|s| **s == AgentState::InSync).count() as i64;
    let reporting = states.values().filter(|s| matches!(s, AgentState::InSync | AgentState::Behind { .. })).count() as i64;
    let total = match expected_nodes {
        Some(e) => e.len(),
        None => states.len(),
    };
    let in_sync_expected = match expected_nodes {
        Some(e) => e.iter().filter(|n| states.get(*n) == Some(&AgentState::InSync)).count(),
        None => in_sync as usize,
    };
    let in_sync_text = (expected_nodes.is_some() || total > 0).then(|| format!("{in_sync_expected}/{total}"));
    let counted: Vec<&String> = match expected_nodes {
        Some(e) => e.iter().collect(),
        None => states.keys().collect(),
    };
    let enforced = counted
        .into_iter()
        .map(|n| {
            let d = match states.get(n) {
                Some(AgentState::InSync) => Some(digest.to_string()),
                Some(AgentState::Behind { digest }) => digest.clone(),
                _ => None,
            };
            (n.clone(), d)
        })
        .collect();
    Agents {
        status: AgentsStatus {
            expected: expected_nodes.map(|e| e.len() as i64),
            reporting,
            in_sync,
            stale,
            missing,
            behind,
            stale_count,
            missing_count,
            behind_count,
        },
        in_sync_text,
        expects_agents: expected_nodes.is_some(),
        enforced,
        next_stale,
    }
}

/// The environment's `AgentsInSync` condition: true when every counted agent is in sync (and, where nodes are
/// expected, none is missing or stale).
pub fn agents_condition(a: &Agents) -> (bool, &'static str, String) {
    let s = &a.status;
    let total = s.expected.unwrap_or(s.reporting + s.stale_count);
    if total == 0 {
        let why = if a.expects_agents { "no node matches spec.firewall.expectedNodes" } else { "no agent reports and spec.firewall.expectedNodes names none" };
        return (true, "NoAgentsExpected", why.to_string());
    }
    let ok = s.stale_count == 0 && s.missing_count == 0 && s.behind_count == 0 && s.in_sync == total;
    let mut parts = vec![format!("{} of {total} agents in sync", s.in_sync)];
    for (n, label, list) in [(s.stale_count, "stale", &s.stale), (s.missing_count, "missing", &s.missing), (s.behind_count, "behind", &s.behind)] {
        if n > 0 {
            parts.push(format!("{n} {label} ({})", list.join(", ")));
        }
    }
    let reason = if ok {
        "InSync"
    } else if s.missing_count > 0 {
        "AgentsMissing"
    } else if s.stale_count > 0 {
        "AgentsStale"
    } else {
        "AgentsBehind"
    };
    (ok, reason, parts.join("; "))
}

/// Whether every expected agent enforces all of `cidrs`: each must enforce a set (known by its digest through
/// `sets`) that covers every one of them. A digest the controller does not know (published before it started)
/// counts as not enforcing.
pub fn enforcement(cidrs: &[IpNet], agents: &Agents, sets: &BTreeMap<String, Vec<IpNet>>) -> (bool, String) {
    let mut lacking = Vec::new();
    for (node, digest) in &agents.enforced {
        let covered = digest.as_ref().and_then(|d| sets.get(d)).is_some_and(|set| cidrs.iter().all(|c| covers(set, c)));
        if !covered {
            lacking.push(node.as_str());
        }
    }
    let total = agents.enforced.len();
    if lacking.is_empty() {
        (true, format!("all {total} expected firewall agents enforce its CIDRs"))
    } else {
        let shown: Vec<&str> = lacking.iter().take(8).copied().collect();
        let more = if lacking.len() > shown.len() { format!(" and {} more", lacking.len() - shown.len()) } else { String::new() };
        (false, format!("{} of {total} expected firewall agents do not enforce its CIDRs yet: {}{more}", lacking.len(), shown.join(", ")))
    }
}

/// `set` is aggregated and sorted (IPv4 first): the one network that can contain `net` is the last starting at or
/// before it.
fn covers(set: &[IpNet], net: &IpNet) -> bool {
    use crate::domain::cidr::interval;
    let (family, lo, hi) = interval(net);
    let at = set.partition_point(|s| {
        let (f, slo, _) = interval(s);
        (f, slo) <= (family, lo)
    });
    at > 0 && {
        let (f, _, shi) = interval(&set[at - 1]);
        f == family && shi >= hi
    }
}

/// Adds the `Enforced` condition to an Active registration's status where its environment expects agents, and holds
/// `Ready` (with `Reconciling`) until every expected agent enforces its CIDRs.
pub fn gate_registration(status: &mut AccessRegistrationStatus, agents: &Agents, sets: &BTreeMap<String, Vec<IpNet>>, previous: &[Condition], now: Timestamp) {
    if !agents.expects_agents || status.phase != Some(RegistrationPhase::Active) {
        return;
    }
    let cidrs: Vec<IpNet> = status.effective_cidrs.iter().filter_map(|c| c.as_str().parse().ok()).collect();
    let (enforced, message) = enforcement(&cidrs, agents, sets);
    let generation = status.observed_generation;
    let cond = |t: &str, s: bool, reason: &str, message: &str| super::status::condition(t, s, reason, message, generation, previous, now);
    status.conditions.retain(|c| c.type_ != "Enforced");
    status.conditions.push(cond("Enforced", enforced, if enforced { "AgentsEnforce" } else { "AwaitingAgents" }, &message));
    if !enforced {
        for c in status.conditions.iter_mut() {
            match c.type_.as_str() {
                "Ready" => *c = cond("Ready", false, "AwaitingAgents", &message),
                "Reconciling" => *c = cond("Reconciling", true, "AwaitingAgents", &message),
                _ => {}
            }
        }
    }
}

/// Whether a policy's pod selector may select pods that `env_labels` selects: false only where one of its
/// requirements contradicts a label the environment's selector fixes (the pods may carry any other label). The
/// chart's admission policy `jpki-access-foreign-network-policies` applies the same rule in CEL.
pub fn may_select(selector: Option<&LabelSelector>, env_labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let labels_agree = selector.match_labels.iter().flatten().all(|(k, v)| env_labels.get(k).is_none_or(|e| e == v));
    let expressions_agree = selector.match_expressions.iter().flatten().all(|e| match env_labels.get(&e.key) {
        None => true,
        Some(value) => match e.operator.as_str() {
            "In" => e.values.iter().flatten().any(|v| v == value),
            "NotIn" => !e.values.iter().flatten().any(|v| v == value),
            "DoesNotExist" => false,
            _ => true,
        },
    });
    labels_agree && expressions_agree
}

/// NetworkPolicies of `namespace` that judge ingress, may select the environment's pods and are not among `ours`
/// (the names the controller writes there), sorted by name.
pub fn foreign_policies<'a>(
    namespace: &str,
    env_labels: &BTreeMap<String, String>,
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    ours: &BTreeSet<String>,
) -> Vec<String> {
    let mut out: Vec<String> = policies
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| p.metadata.name.as_ref().is_some_and(|n| !ours.contains(n)))
        .filter(|p| {
            let spec = p.spec.as_ref();
            let ingress = spec.and_then(|s| s.policy_types.as_ref()).is_none_or(|t| t.iter().any(|t| t == "Ingress"));
            ingress && may_select(spec.and_then(|s| s.pod_selector.as_ref()), env_labels)
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::report::AgentReport;
    use serde_json::json;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hb(node: &str, renewed: &str, digest: &str, ready: bool) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            renewed: Some(t(renewed)),
            report: Ok(AgentReport {
                environment: "production".into(),
                node: node.into(),
                enforcing: if digest.is_empty() { Enforcing::Closed } else { Enforcing::Verified },
                applied_digest: digest.into(),
                applied_serial: 1,
                ready,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn expected_agents_are_counted_in_sync_stale_missing_and_behind() {
        let now = t("2026-05-01T00:01:00Z");
        let expected: BTreeSet<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        let beats = vec![
            hb("a", "2026-05-01T00:00:55Z", "sha256:new", true),
            hb("b", "2026-05-01T00:00:50Z", "sha256:old", true),
            hb("c", "2026-05-01T00:00:10Z", "sha256:new", true), // 50 s old: stale after 30 s
            hb("e", "2026-05-01T00:00:58Z", "", true),           // closed: no set yet
            hb("x", "2026-05-01T00:00:58Z", "sha256:new", true), // not expected: counted, not in the total
        ];
        let a = agents(Some(&expected), &beats, "sha256:new", now, SignedDuration::from_secs(30));
        assert_eq!(a.status.expected, Some(5));
        assert_eq!((a.status.in_sync, a.status.reporting), (2, 4));
        assert_eq!(a.status.stale, ["c"]);
        assert_eq!(a.status.missing, ["d"]);
        assert_eq!(a.status.behind, ["b", "e"]);
        assert_eq!(a.in_sync_text.as_deref(), Some("1/5"));
        assert_eq!(a.enforced["b"], Some("sha256:old".into()));
        assert_eq!(a.enforced["e"], None);
        assert!(!a.enforced.contains_key("x"), "only expected nodes gate registrations");
        assert_eq!(a.next_stale, Some(t("2026-05-01T00:01:20Z")));
        let (ok, reason, message) = agents_condition(&a);
        assert!(!ok);
        assert_eq!(reason, "AgentsMissing");
        assert_eq!(message, "2 of 5 agents in sync; 1 stale (c); 1 missing (d); 2 behind (b, e)");
    }

    #[test]
    fn without_expected_nodes_the_reporting_agents_are_the_total() {
        let now = t("2026-05-01T00:01:00Z");
        let a = agents(None, &[hb("a", "2026-05-01T00:00:55Z", "sha256:d", true)], "sha256:d", now, SignedDuration::from_secs(30));
        assert_eq!(a.in_sync_text.as_deref(), Some("1/1"));
        assert!(!a.expects_agents);
        assert_eq!(agents_condition(&a).1, "InSync");
        let none = agents(None, &[], "sha256:d", now, SignedDuration::from_secs(30));
        assert_eq!(none.in_sync_text, None);
        assert_eq!(agents_condition(&none).1, "NoAgentsExpected");
    }

    #[test]
    fn a_registration_is_enforced_when_every_expected_agent_holds_a_set_covering_it() {
        let now = t("2026-05-01T00:01:00Z");
        let expected: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let nets = |v: &[&str]| v.iter().map(|s| s.parse::<IpNet>().unwrap()).collect::<Vec<_>>();
        let sets =
            BTreeMap::from([("sha256:old".to_string(), nets(&["192.0.2.0/24"])), ("sha256:new".to_string(), nets(&["192.0.2.0/24", "198.51.100.0/24"]))]);
        let beats = vec![hb("a", "2026-05-01T00:00:55Z", "sha256:new", true), hb("b", "2026-05-01T00:00:55Z", "sha256:old", true)];
        let a = agents(Some(&expected), &beats, "sha256:new", now, SignedDuration::from_secs(30));
        assert!(enforcement(&nets(&["192.0.2.16/28"]), &a, &sets).0, "an older set that covers it counts");
        let (ok, message) = enforcement(&nets(&["198.51.100.0/25"]), &a, &sets);
        assert!(!ok);
        assert_eq!(message, "1 of 2 expected firewall agents do not enforce its CIDRs yet: b");

        let mut status: AccessRegistrationStatus = serde_json::from_value(json!({"phase": "Active", "effectiveCidrs": ["198.51.100.0/25"],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Active", "message": "", "lastTransitionTime": "2026-05-01T00:00:00Z"},
                           {"type": "Reconciling", "status": "False", "reason": "Reconciled", "message": "", "lastTransitionTime": "2026-05-01T00:00:00Z"}]}))
        .unwrap();
        gate_registration(&mut status, &a, &sets, &[], now);
        let get = |s: &AccessRegistrationStatus, t: &str| s.conditions.iter().find(|c| c.type_ == t).map(|c| (c.status.clone(), c.reason.clone())).unwrap();
        assert_eq!(get(&status, "Ready"), ("False".into(), "AwaitingAgents".into()));
        assert_eq!(get(&status, "Reconciling"), ("True".into(), "AwaitingAgents".into()));
        assert_eq!(get(&status, "Enforced"), ("False".into(), "AwaitingAgents".into()));
    }

    fn np(name: &str, selector: serde_json::Value, types: Option<&[&str]>) -> NetworkPolicy {
        let mut spec = json!({"podSelector": selector});
        if let Some(t) = types {
            spec["policyTypes"] = json!(t);
        }
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "jpki-production"}, "spec": spec})).unwrap()
    }

    #[test]
    fn foreign_policies_that_may_select_the_services_are_found_and_ours_are_not() {
        let env = BTreeMap::from([("app.kubernetes.io/part-of".to_string(), "revocation-services".to_string())]);
        let ours = BTreeSet::from(["jpki-production-default-deny".to_string()]);
        let policies = [
            np("jpki-production-default-deny", json!({}), Some(&["Ingress"])),
            np("allow-all", json!({}), None),
            np("same-label", json!({"matchLabels": {"app.kubernetes.io/part-of": "revocation-services"}}), Some(&["Ingress"])),
            np("other-app", json!({"matchLabels": {"app.kubernetes.io/part-of": "other"}}), None),
            np("egress-only", json!({}), Some(&["Egress"])),
            np("extra-label", json!({"matchLabels": {"tier": "web"}}), None),
            np("not-in", json!({"matchExpressions": [{"key": "app.kubernetes.io/part-of", "operator": "NotIn", "values": ["revocation-services"]}]}), None),
            np("in", json!({"matchExpressions": [{"key": "app.kubernetes.io/part-of", "operator": "In", "values": ["revocation-services", "x"]}]}), None),
        ];
        let mut elsewhere = np("allow-all-elsewhere", json!({}), None);
        elsewhere.metadata.namespace = Some("other".into());
        let found = foreign_policies("jpki-production", &env, policies.iter().chain([&elsewhere]), &ours);
        assert_eq!(found, ["allow-all", "extra-label", "in", "same-label"]);
    }
}
