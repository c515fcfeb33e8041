//! The objects an environment's plan consists of: NetworkPolicies (a default deny and sharded allows), the
//! allowlist (sharded ConfigMaps and an index that announces the digest of the whole set), and an Ingress or a
//! Gateway API HTTPRoute per endpoint. Names are stable and content sorted, so the same input renders the same
//! bytes and an unchanged shard is recognisably unchanged.

use crate::api::environment::{AccessEnvironment, Firewall, Protocol};
use crate::domain::digest::digest_bytes;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec, NetworkPolicy,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde_json::json;
use std::collections::BTreeMap;

pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "jpki-access");
pub const ENVIRONMENT_LABEL: &str = "access.jpki.dev/environment";
pub const ALLOWLIST_LABEL: &str = "access.jpki.dev/allowlist";
pub const DIGEST_ANNOTATION: &str = "access.jpki.dev/allowlist-digest";

/// One object the plan wants to exist.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    NetworkPolicy(NetworkPolicy),
    ConfigMap(ConfigMap),
    Ingress(Ingress),
    /// gateway.networking.k8s.io/v1 HTTPRoute (no k8s-openapi type exists for it).
    HttpRoute(serde_json::Value),
}

impl Child {
    /// `apiVersion`, `kind`, namespace and name.
    pub fn identity(&self) -> (String, String, String, String) {
        fn of<K: Resource<DynamicType = ()>>(o: &K) -> (String, String, String, String) {
            let m = o.meta();
            (K::api_version(&()).into(), K::kind(&()).into(), m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
        }
        match self {
            Child::NetworkPolicy(o) => of(o),
            Child::ConfigMap(o) => of(o),
            Child::Ingress(o) => of(o),
            Child::HttpRoute(v) => (
                "gateway.networking.k8s.io/v1".into(),
                "HTTPRoute".into(),
                v["metadata"]["namespace"].as_str().unwrap_or_default().into(),
                v["metadata"]["name"].as_str().unwrap_or_default().into(),
            ),
        }
    }

    /// The object as JSON with apiVersion and kind, as it is applied and rendered.
    pub fn to_json(&self) -> serde_json::Value {
        fn with_type<K: Resource<DynamicType = ()> + serde::Serialize>(o: &K) -> serde_json::Value {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            v["apiVersion"] = json!(K::api_version(&()));
            v["kind"] = json!(K::kind(&()));
            v
        }
        match self {
            Child::NetworkPolicy(o) => with_type(o),
            Child::ConfigMap(o) => with_type(o),
            Child::Ingress(o) => with_type(o),
            Child::HttpRoute(v) => v.clone(),
        }
    }
}

/// Labels on everything we create for an environment.
pub fn labels(environment: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()), (ENVIRONMENT_LABEL.to_string(), environment.to_string())])
}

/// A controller reference to the owning object, when it has been stored (offline renders have no uid).
pub fn owner<K: Resource<DynamicType = ()>>(obj: &K) -> Option<Vec<OwnerReference>> {
    obj.controller_owner_ref(&()).map(|r| vec![r])
}

fn meta(name: String, namespace: &str, environment: &str, owners: Option<Vec<OwnerReference>>) -> ObjectMeta {
    ObjectMeta { name: Some(name), namespace: Some(namespace.to_string()), labels: Some(labels(environment)), owner_references: owners, ..Default::default() }
}

/// Splits the aggregated set into shards of at most `per_object` CIDRs (IPv4 first, each family in address order).
///
/// Where a shard ends depends on the CIDRs themselves (content-defined chunking): after a CIDR whose hash marks a
/// boundary, once the shard holds at least an eighth of the maximum, or when it is full. Shards then hold about
/// 3/8 of the maximum. Adding or removing one CIDR changes the shard it falls in (and, about once in `per_object / 4`
/// changes, its neighbours' numbering), where fixed-size chunks shifted every later shard by one: one approval low in
/// the address space rewrote all of an environment's shards and policies. Below 16 per object the bounds leave no
/// room to vary, and the chunks are fixed.
pub fn shards(cidrs: &[IpNet], per_object: usize) -> Vec<&[IpNet]> {
    let max = per_object.max(1);
    if max < 16 {
        return cidrs.chunks(max).collect();
    }
    let (min, spacing) = (max / 8, (max / 4) as u64);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, cidr) in cidrs.iter().enumerate() {
        let len = i + 1 - start;
        if len >= max || (len >= min && boundary_hash(cidr).is_multiple_of(spacing)) {
            out.push(&cidrs[start..=i]);
            start = i + 1;
        }
    }
    if start < cidrs.len() {
        out.push(&cidrs[start..]);
    }
    out
}

/// A hash of a CIDR that never changes between versions or machines (shard boundaries must not move on an
/// upgrade): FNV-1a over its address bytes and prefix length, then the SplitMix64 finaliser so every bit of the
/// result depends on every input byte. `std`'s hashers are randomly seeded or unspecified, hence our own.
fn boundary_hash(cidr: &IpNet) -> u64 {
    let mut bytes = Vec::with_capacity(17);
    match cidr {
        IpNet::V4(n) => bytes.extend_from_slice(&n.addr().octets()),
        IpNet::V6(n) => bytes.extend_from_slice(&n.addr().octets()),
    }
    bytes.push(cidr.prefix_len());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The text of a list of CIDRs, one per line; what digests are computed over.
pub fn cidr_text(cidrs: &[IpNet]) -> String {
    let mut text = String::with_capacity(cidrs.len() * 20);
    for c in cidrs {
        text.push_str(&c.to_string());
        text.push('\n');
    }
    text
}

/// Ports the NetworkPolicies open: the endpoints' pod ports, TCP, deduplicated and sorted.
fn policy_ports(env: &AccessEnvironment) -> Vec<NetworkPolicyPort> {
    let mut ports: Vec<i32> = env.spec.endpoints.iter().map(|e| e.service.target_port.unwrap_or(e.service.port)).collect();
    ports.sort_unstable();
    ports.dedup();
    ports.into_iter().map(|p| NetworkPolicyPort { protocol: Some("TCP".into()), port: Some(IntOrString::Int(p)), end_port: None }).collect()
}

/// Default-deny plus one allow policy per shard.
pub fn network_policies(env: &AccessEnvironment, cidrs: &[IpNet]) -> Vec<Child> {
    let name = env.metadata.name.clone().unwrap_or_default();
    let namespace = &env.spec.service_namespace;
    let selector = LabelSelector { match_labels: Some(env.spec.pod_selector.match_labels.clone()), match_expressions: None };
    let owners = owner(env);
    let mut out = vec![Child::NetworkPolicy(NetworkPolicy {
        metadata: meta(format!("jpki-{name}-default-deny"), namespace, &name, owners.clone()),
        spec: Some(NetworkPolicySpec { pod_selector: Some(selector.clone()), policy_types: Some(vec!["Ingress".into()]), ingress: None, egress: None }),
    })];
    let ports = policy_ports(env);
    for (i, shard) in shards(cidrs, env.spec.policy.max_cidrs_per_object as usize).into_iter().enumerate() {
        let from = shard.iter().map(|c| NetworkPolicyPeer { ip_block: Some(IPBlock { cidr: c.to_string(), except: None }), ..Default::default() }).collect();
        out.push(Child::NetworkPolicy(NetworkPolicy {
            metadata: meta(format!("jpki-{name}-allow-{i}"), namespace, &name, owners.clone()),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector.clone()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule { from: Some(from), ports: Some(ports.clone()) }]),
                egress: None,
            }),
        }));
    }
    out
}

/// Where the allowlist lives: the firewall's namespace, else the services' namespace.
pub fn allowlist_namespace(env: &AccessEnvironment) -> &str {
    env.spec.firewall.as_ref().map(|f| f.allowlist_namespace.as_str()).unwrap_or(&env.spec.service_namespace)
}

/// `TCP/443` lines: the ports the firewall agents filter.
pub fn firewall_ports_text(firewall: Option<&Firewall>) -> String {
    let mut lines: Vec<String> = firewall
        .map(|f| f.ports.iter().map(|p| format!("{}/{}", if p.protocol == Protocol::Udp { "UDP" } else { "TCP" }, p.port)).collect())
        .unwrap_or_default();
    lines.sort();
    lines.dedup();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Shards of `cidrs` named `<prefix>-<n>` with the `ALLOWLIST_LABEL` value `label`; returns them and the index lines
/// (`name digest count`).
fn shard_maps(env: &AccessEnvironment, cidrs: &[IpNet], prefix: &str, label: &str) -> (Vec<Child>, String) {
    let name = env.metadata.name.clone().unwrap_or_default();
    let namespace = allowlist_namespace(env);
    let owners = owner(env);
    let mut out = Vec::new();
    let mut index_lines = String::new();
    for (i, shard) in shards(cidrs, env.spec.policy.max_cidrs_per_object as usize).into_iter().enumerate() {
        let text = cidr_text(shard);
        let shard_digest = digest_bytes(text.as_bytes());
        let shard_name = format!("{prefix}-{i}");
        index_lines.push_str(&format!("{shard_name} {shard_digest} {}\n", shard.len()));
        let mut m = meta(shard_name, namespace, &name, owners.clone());
        m.labels.get_or_insert_default().insert(ALLOWLIST_LABEL.into(), label.into());
        m.annotations = Some(BTreeMap::from([(DIGEST_ANNOTATION.to_string(), shard_digest)]));
        out.push(Child::ConfigMap(ConfigMap { metadata: m, data: Some(BTreeMap::from([("cidrs".to_string(), text)])), ..Default::default() }));
    }
    (out, index_lines)
}

/// The allowlist shards and their index. The index names every shard with its digest and announces the digest of
/// the whole set, so a reader applies only a complete, consistent set.
pub fn allowlist(env: &AccessEnvironment, cidrs: &[IpNet], live_registrations: usize) -> (Vec<Child>, String) {
    let name = env.metadata.name.clone().unwrap_or_default();
    let namespace = allowlist_namespace(env);
    let digest = digest_bytes(cidr_text(cidrs).as_bytes());
    let (mut out, index_lines) = shard_maps(env, cidrs, &format!("jpki-allowlist-{name}"), "shard");
    let mut m = meta(format!("jpki-allowlist-{name}"), namespace, &name, owner(env));
    m.labels.get_or_insert_default().insert(ALLOWLIST_LABEL.into(), "index".into());
    m.annotations = Some(BTreeMap::from([(DIGEST_ANNOTATION.to_string(), digest.clone())]));
    let data = BTreeMap::from([
        ("environment".to_string(), name.clone()),
        ("digest".to_string(), digest.clone()),
        ("cidrCount".to_string(), cidrs.len().to_string()),
        ("liveRegistrations".to_string(), live_registrations.to_string()),
        ("shards".to_string(), index_lines),
        ("ports".to_string(), firewall_ports_text(env.spec.firewall.as_ref())),
    ]);
    out.insert(0, Child::ConfigMap(ConfigMap { metadata: m, data: Some(data), ..Default::default() }));
    (out, digest)
}

/// The mass-revocation hold's baseline (`super::hold`), stored beside the allowlist in the same shape (index and
/// shards, label values `baseline-index` and `baseline-shard`, which readers of the allowlist ignore), so it survives
/// restarts of the controller.
pub fn hold_baseline(env: &AccessEnvironment, baseline: &super::hold::Baseline) -> Vec<Child> {
    let name = env.metadata.name.clone().unwrap_or_default();
    let prefix = baseline_name(&name);
    let (mut out, index_lines) = shard_maps(env, &baseline.cidrs, &prefix, "baseline-shard");
    let mut m = meta(prefix, allowlist_namespace(env), &name, owner(env));
    m.labels.get_or_insert_default().insert(ALLOWLIST_LABEL.into(), "baseline-index".into());
    let mut data = BTreeMap::from([
        ("environment".to_string(), name.clone()),
        ("digest".to_string(), baseline.digest()),
        ("since".to_string(), baseline.since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        ("affectedRegistrations".to_string(), baseline.affected_registrations.to_string()),
        ("shards".to_string(), index_lines),
    ]);
    if let Some(holding) = &baseline.holding {
        data.insert("holding".to_string(), holding.clone());
    }
    out.insert(0, Child::ConfigMap(ConfigMap { metadata: m, data: Some(data), ..Default::default() }));
    out
}

/// Name of an environment's hold baseline index (its shards add `-<n>`).
pub fn baseline_name(environment: &str) -> String {
    format!("jpki-hold-baseline-{environment}")
}

/// An Ingress per endpoint, or an HTTPRoute per endpoint when the environment names a Gateway.
pub fn routes(env: &AccessEnvironment) -> Vec<Child> {
    let name = env.metadata.name.clone().unwrap_or_default();
    let namespace = &env.spec.service_namespace;
    let Some(exposure) = &env.spec.exposure else {
        return Vec::new();
    };
    let owners = owner(env);
    env.spec
        .endpoints
        .iter()
        .filter_map(|e| {
            let object_name = format!("jpki-{name}-{}", e.name);
            if let Some(gateway) = &exposure.gateway {
                let mut parent = json!({"name": gateway.name});
                if let Some(ns) = &gateway.namespace {
                    parent["namespace"] = json!(ns);
                }
                if let Some(section) = &gateway.section_name {
                    parent["sectionName"] = json!(section);
                }
                let mut metadata = serde_json::to_value(meta(object_name, namespace, &name, owners.clone())).unwrap_or_default();
                if metadata.get("ownerReferences").is_some_and(|o| o.is_null()) {
                    metadata.as_object_mut().map(|m| m.remove("ownerReferences"));
                }
                return Some(Child::HttpRoute(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "HTTPRoute",
                    "metadata": metadata,
                    "spec": {
                        "parentRefs": [parent],
                        "hostnames": [e.host],
                        "rules": [{
                            "matches": [{"path": {"type": "PathPrefix", "value": e.path}}],
                            "backendRefs": [{"name": e.service.name, "port": e.service.port}]
                        }]
                    }
                })));
            }
            let class = exposure.ingress_class_name.clone()?;
            Some(Child::Ingress(Ingress {
                metadata: meta(object_name, namespace, &name, owners.clone()),
                spec: Some(IngressSpec {
                    ingress_class_name: Some(class),
                    rules: Some(vec![IngressRule {
                        host: Some(e.host.clone()),
                        http: Some(HTTPIngressRuleValue {
                            paths: vec![HTTPIngressPath {
                                path: Some(e.path.clone()),
                                path_type: "Prefix".into(),
                                backend: IngressBackend {
                                    service: Some(IngressServiceBackend {
                                        name: e.service.name.clone(),
                                        port: Some(ServiceBackendPort { number: Some(e.service.port), name: None }),
                                    }),
                                    resource: None,
                                },
                            }],
                        }),
                    }]),
                    ..Default::default()
                }),
                status: None,
            }))
        })
        .collect()
}
