//! The oracle's own reading of Kubernetes NetworkPolicies: whether a connection from an address outside the cluster
//! reaches a pod with given labels on a given port, judged on every policy of the namespace (the operator's and
//! anyone else's), as the NetworkPolicy API defines it: a pod selected by no Ingress policy admits everything; a
//! selected pod admits what any rule of any selecting policy allows.

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A pod as the policies see it: its labels and the port (number and name) the connection goes to.
#[derive(Debug, Clone)]
pub struct Target {
    pub labels: BTreeMap<String, String>,
    pub port: i32,
    pub port_name: Option<String>,
}

/// Whether `policies` (all of the target's namespace) admit a TCP connection from `source` to `target`.
pub fn admits(policies: &[NetworkPolicy], target: &Target, source: IpAddr) -> Result<bool, String> {
    let mut isolated = false;
    for np in policies {
        let Some(spec) = &np.spec else { continue };
        if !selects(spec.pod_selector.as_ref().unwrap_or(&LabelSelector::default()), &target.labels)? {
            continue;
        }
        let ingress_type = spec.policy_types.as_ref().is_none_or(|t| t.iter().any(|t| t == "Ingress"));
        if !ingress_type {
            continue;
        }
        isolated = true;
        for rule in spec.ingress.iter().flatten() {
            let port_ok = rule.ports.as_ref().is_none_or(|ports| ports.is_empty() || ports.iter().any(|p| port_matches(p, target)));
            let from_ok = match &rule.from {
                None => true,
                Some(peers) if peers.is_empty() => true,
                Some(peers) => peers.iter().map(|p| peer_admits(p, source)).collect::<Result<Vec<_>, _>>()?.into_iter().any(|b| b),
            };
            if port_ok && from_ok {
                return Ok(true);
            }
        }
    }
    Ok(!isolated)
}

fn port_matches(p: &NetworkPolicyPort, target: &Target) -> bool {
    if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
        return false;
    }
    match &p.port {
        None => true,
        Some(IntOrString::Int(n)) => {
            let end = p.end_port.unwrap_or(*n);
            *n <= target.port && target.port <= end
        }
        Some(IntOrString::String(name)) => target.port_name.as_deref() == Some(name.as_str()),
    }
}

/// An address outside the cluster is matched only by ipBlock peers (pod and namespace selectors select pods).
fn peer_admits(peer: &NetworkPolicyPeer, source: IpAddr) -> Result<bool, String> {
    let Some(block) = &peer.ip_block else {
        return Ok(false);
    };
    let net: IpNet = block.cidr.parse().map_err(|e| format!("ipBlock.cidr {}: {e}", block.cidr))?;
    if !net.contains(&source) {
        return Ok(false);
    }
    for except in block.except.iter().flatten() {
        let net: IpNet = except.parse().map_err(|e| format!("ipBlock.except {except}: {e}"))?;
        if net.contains(&source) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Label selector semantics: matchLabels and every matchExpression; an empty selector selects every pod.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    for (k, v) in selector.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => return Err(format!("label selector operator {other} not understood")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": json})).unwrap()
    }

    fn target() -> Target {
        Target { labels: BTreeMap::from([("app".into(), "ocsp".into())]), port: 8080, port_name: Some("http".into()) }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unselected_pods_admit_everything_and_selected_ones_only_what_a_rule_allows() {
        let other = policy(serde_json::json!({"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]}));
        assert!(admits(std::slice::from_ref(&other), &target(), ip("10.0.0.1")).unwrap());
        let deny = policy(serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress"]}));
        assert!(!admits(&[other.clone(), deny.clone()], &target(), ip("10.0.0.1")).unwrap());
        let allow = policy(serde_json::json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["ocsp"]}]},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.128/25"]}}], "ports": [{"port": 8080}]}]}));
        assert!(admits(&[deny.clone(), allow.clone()], &target(), ip("10.0.0.1")).unwrap());
        assert!(!admits(&[deny.clone(), allow.clone()], &target(), ip("10.0.0.200")).unwrap());
        assert!(!admits(&[deny.clone(), allow], &target(), ip("2001:db8::1")).unwrap());
    }

    #[test]
    fn an_allow_all_rule_and_named_or_ranged_ports() {
        let all = policy(serde_json::json!({"podSelector": {}, "ingress": [{}]}));
        assert!(admits(&[all], &target(), ip("192.0.2.1")).unwrap());
        let named = policy(serde_json::json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}));
        assert!(admits(&[named], &target(), ip("192.0.2.1")).unwrap());
        let range = policy(serde_json::json!({"podSelector": {}, "ingress": [{"ports": [{"port": 9000, "endPort": 9100}]}]}));
        assert!(!admits(&[range], &target(), ip("192.0.2.1")).unwrap());
        let pods_only = policy(serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}));
        assert!(!admits(&[pods_only], &target(), ip("192.0.2.1")).unwrap());
    }
}
