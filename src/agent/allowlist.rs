//! Reading a published allowlist: the index and its shards, accepted only when complete and consistent (every
//! shard the index names is present with the digest it announces, and the whole set hashes to the index's
//! digest). A half-written set is never applied.

use crate::api::environment::{FirewallPort, Protocol};
use crate::domain::digest::digest_bytes;
use crate::planner::children::{ALLOWLIST_LABEL, DIGEST_ANNOTATION};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::HashMap;

/// A complete allowlist, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowlist {
    pub digest: String,
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
    pub ports: Vec<FirewallPort>,
}

/// Why an allowlist cannot be applied yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    #[error("no allowlist index {0} yet")]
    NoIndex(String),
    #[error("shard {0} named by the index is missing")]
    MissingShard(String),
    #[error("shard {name} has digest {found}, the index announces {expected}")]
    ShardDigest { name: String, expected: String, found: String },
    #[error("the shards add up to {found}, the index announces {expected}")]
    SetDigest { expected: String, found: String },
    #[error("index field {0} is malformed")]
    Malformed(&'static str),
}

fn label<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Assembles the allowlist of `environment` from the ConfigMaps of its namespace.
pub fn assemble(environment: &str, config_maps: &[ConfigMap]) -> Result<Allowlist, Incomplete> {
    let index_name = format!("jpki-allowlist-{environment}");
    let by_name: HashMap<&str, &ConfigMap> = config_maps.iter().filter_map(|c| Some((c.metadata.name.as_deref()?, c))).collect();
    let index =
        by_name.get(index_name.as_str()).filter(|c| label(c, ALLOWLIST_LABEL) == Some("index")).ok_or_else(|| Incomplete::NoIndex(index_name.clone()))?;
    let data = index.data.clone().unwrap_or_default();
    let digest = data.get("digest").cloned().ok_or(Incomplete::Malformed("digest"))?;
    let mut text = String::new();
    for line in data.get("shards").map(String::as_str).unwrap_or_default().lines() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(expected)) = (fields.next(), fields.next()) else {
            return Err(Incomplete::Malformed("shards"));
        };
        let shard = by_name.get(name).ok_or_else(|| Incomplete::MissingShard(name.to_string()))?;
        let cidrs = shard.data.as_ref().and_then(|d| d.get("cidrs")).cloned().unwrap_or_default();
        let announced = shard.metadata.annotations.as_ref().and_then(|a| a.get(DIGEST_ANNOTATION)).cloned().unwrap_or_default();
        let found = digest_bytes(cidrs.as_bytes());
        if found != expected || announced != expected {
            return Err(Incomplete::ShardDigest { name: name.to_string(), expected: expected.to_string(), found });
        }
        text.push_str(&cidrs);
    }
    let found = digest_bytes(text.as_bytes());
    if found != digest {
        return Err(Incomplete::SetDigest { expected: digest, found });
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for line in text.lines() {
        match line.parse::<IpNet>() {
            Ok(IpNet::V4(n)) => v4.push(n),
            Ok(IpNet::V6(n)) => v6.push(n),
            Err(_) => return Err(Incomplete::Malformed("cidrs")),
        }
    }
    let mut ports = Vec::new();
    for line in data.get("ports").map(String::as_str).unwrap_or_default().lines() {
        let (protocol, port) = line.split_once('/').ok_or(Incomplete::Malformed("ports"))?;
        let protocol = match protocol {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            _ => return Err(Incomplete::Malformed("ports")),
        };
        ports.push(FirewallPort { protocol, port: port.parse().map_err(|_| Incomplete::Malformed("ports"))? });
    }
    Ok(Allowlist { digest, v4, v6, ports })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::planner::children::Child;

    fn published(cidrs: &[&str], per_object: i32) -> Vec<ConfigMap> {
        let mut env: crate::api::AccessEnvironment = serde_json::from_value(serde_json::json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": "production"},
            "spec": {"environment": "Production", "serviceNamespace": "s", "podSelector": {"matchLabels": {"a": "b"}},
                     "endpoints": [{"name": "o", "provisionMethod": "Ocsp", "service": {"name": "o", "port": 1}, "host": "o.example"}],
                     "firewall": {"allowlistNamespace": "jpki-system", "ports": [{"protocol": "TCP", "port": 443}]}}
        }))
        .unwrap();
        env.spec.policy.max_cidrs_per_object = per_object;
        let nets: Vec<IpNet> = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        crate::planner::children::allowlist(&env, &nets, 1).0.into_iter().map(|c| if let Child::ConfigMap(c) = c { c } else { unreachable!() }).collect()
    }

    #[test]
    fn a_complete_set_is_assembled_in_order() {
        let cms = published(&["192.0.2.0/28", "198.51.100.0/24", "2001:db8::/48"], 2);
        let a = assemble("production", &cms).unwrap();
        assert_eq!(a.v4.len() + a.v6.len(), 3);
        assert_eq!(a.v6[0].to_string(), "2001:db8::/48");
        assert_eq!(a.ports, vec![FirewallPort { protocol: Protocol::Tcp, port: 443 }]);
    }

    #[test]
    fn a_half_written_set_is_refused() {
        let mut cms = published(&["192.0.2.0/28", "198.51.100.0/24", "2001:db8::/48"], 2);
        let shard = cms.iter().position(|c| c.metadata.name.as_deref() == Some("jpki-allowlist-production-1")).unwrap();
        let removed = cms.remove(shard);
        assert_eq!(assemble("production", &cms).unwrap_err(), Incomplete::MissingShard("jpki-allowlist-production-1".into()));
        // A shard whose content changed but whose index was not yet rewritten.
        let mut stale = removed;
        stale.data.as_mut().unwrap().insert("cidrs".into(), "203.0.113.0/24\n".into());
        cms.push(stale);
        assert!(matches!(assemble("production", &cms), Err(Incomplete::ShardDigest { .. })));
        assert!(matches!(assemble("test", &cms), Err(Incomplete::NoIndex(_))));
    }
}
