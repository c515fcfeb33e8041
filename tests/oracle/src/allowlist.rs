//! The oracle's own reader of the published allowlist, written from its documentation (SECURITY.md, "The published
//! allowlist") as a third party would: the index `jpki-allowlist-<environment>` in the allowlist namespace is signed
//! with Ed25519 over `"jpki-access allowlist v1\n" + namespace + "\n" + canonical JSON of its spec with an empty
//! signature`; each shard's `spec.cidrs` text has the `sha256:` digest its index entry names, and the shards'
//! texts in index order have the set's digest. A set that fails any check is not read at all (a reader keeps what
//! it had).

use base64::Engine;
use ipnet::IpNet;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;
use std::net::IpAddr;

/// A verified set: its CIDRs and its (protocol, port) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub serial: i64,
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<(String, u16)>,
}

impl Published {
    /// Whether the set lets `source` reach TCP `port`: a port it does not name is not filtered at all.
    pub fn admits(&self, source: IpAddr, port: u16) -> bool {
        !self.ports.iter().any(|(proto, p)| proto == "TCP" && *p == port) || self.cidrs.iter().any(|c| c.contains(&source))
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "access.jpki.dev".into(),
        version: "v1alpha1".into(),
        api_version: "access.jpki.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Reads and verifies the set of `environment` in `namespace`: `Err` when it cannot be read or does not verify.
pub async fn read(client: &kube::Client, namespace: &str, environment: &str, public_key: &[u8; 32]) -> Result<Published, String> {
    let indexes: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource("AccessAllowlist", "accessallowlists"));
    let shards: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource("AccessAllowlistShard", "accessallowlistshards"));
    let name = format!("jpki-allowlist-{environment}");
    let index = indexes.get(&name).await.map_err(|e| format!("index {name}: {e}"))?;
    let shards = shards.list(&ListParams::default()).await.map_err(|e| format!("shards: {e}"))?;
    let shard_spec = |n: &str| shards.items.iter().find(|s| s.metadata.name.as_deref() == Some(n)).and_then(|s| s.data.get("spec").cloned());
    verify(namespace, environment, index.data.get("spec").ok_or("index without spec")?, shard_spec, public_key)
}

/// The checks of [`read`] on objects already fetched: `spec` of the index, `shard` the spec of a shard by name.
pub fn verify(namespace: &str, environment: &str, spec: &Value, shard: impl Fn(&str) -> Option<Value>, public_key: &[u8; 32]) -> Result<Published, String> {
    let signature = spec.get("signature").and_then(Value::as_str).ok_or("no signature")?;
    let signature = base64::engine::general_purpose::STANDARD.decode(signature).map_err(|e| format!("signature not base64: {e}"))?;
    let mut unsigned = spec.clone();
    unsigned["signature"] = Value::from("");
    let message = format!("jpki-access allowlist v1\n{namespace}\n{}", canonical(&unsigned));
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(message.as_bytes(), &signature)
        .map_err(|_| "the signature does not verify".to_string())?;
    let text = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or_default();
    if text("environment") != environment || text("purpose") != "Enforce" {
        return Err(format!("signed for environment {:?} purpose {:?}", text("environment"), text("purpose")));
    }
    let mut whole = String::new();
    let mut cidrs = Vec::new();
    for entry in spec.get("shards").and_then(Value::as_array).ok_or("no shards")? {
        let name = entry.get("name").and_then(Value::as_str).ok_or("a shard entry without name")?;
        let body = shard(name).ok_or(format!("shard {name} missing"))?;
        if body.get("environment").and_then(Value::as_str) != Some(environment) {
            return Err(format!("shard {name} of another environment"));
        }
        let lines = body.get("cidrs").and_then(Value::as_str).ok_or(format!("shard {name} without cidrs"))?;
        if entry.get("digest").and_then(Value::as_str) != Some(sha256(lines).as_str()) {
            return Err(format!("shard {name}: digest differs"));
        }
        for line in lines.lines() {
            cidrs.push(line.parse::<IpNet>().map_err(|e| format!("shard {name}: {line:?}: {e}"))?);
        }
        whole.push_str(lines);
    }
    if text("digest") != sha256(&whole) {
        return Err("the set's digest differs".into());
    }
    let mut ports = Vec::new();
    for p in spec.get("ports").and_then(Value::as_array).ok_or("no ports")? {
        let proto = p.get("protocol").and_then(Value::as_str).ok_or("a port without protocol")?;
        let port = p.get("port").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()).ok_or("a port out of range")?;
        ports.push((proto.to_string(), port));
    }
    if ports.is_empty() {
        return Err("a set to enforce without ports".into());
    }
    Ok(Published { serial: spec.get("serial").and_then(Value::as_i64).unwrap_or_default(), cidrs, ports })
}

/// The raw Ed25519 key of a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`): 12 bytes of fixed DER header,
/// then the 32 key bytes.
pub fn public_key_from_pem(pem: &str) -> Result<[u8; 32], String> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body.trim()).map_err(|e| format!("PEM body: {e}"))?;
    const HEADER: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    match der.strip_prefix(&HEADER[..]) {
        Some(key) if key.len() == 32 => Ok(key.try_into().map_err(|_| "key length")?),
        _ => Err("not an Ed25519 SubjectPublicKeyInfo".into()),
    }
}

fn sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// JSON with object keys sorted, no whitespace.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys.iter().map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&map[*k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_set_signed_by_the_key_verifies_and_any_change_does_not() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key: [u8; 32] = ring::signature::KeyPair::public_key(&pair).as_ref().try_into().unwrap();
        let lines = "198.51.100.10/32\n";
        let mut spec = json!({"environment": "production", "purpose": "Enforce", "serial": 3, "digest": sha256(lines), "cidrCount": 1,
            "shards": [{"name": "s-0", "digest": sha256(lines), "count": 1}], "ports": [{"protocol": "TCP", "port": 443}], "signature": ""});
        let sig = pair.sign(format!("jpki-access allowlist v1\njpki-system\n{}", canonical(&spec)).as_bytes());
        spec["signature"] = Value::from(base64::engine::general_purpose::STANDARD.encode(sig.as_ref()));
        let shard = |_: &str| Some(json!({"environment": "production", "cidrs": lines}));
        let set = verify("jpki-system", "production", &spec, shard, &key).unwrap();
        assert!(set.admits("198.51.100.10".parse().unwrap(), 443));
        assert!(!set.admits("198.51.100.20".parse().unwrap(), 443));
        assert!(set.admits("198.51.100.20".parse().unwrap(), 8443), "a port the set does not name is not filtered");
        assert!(verify("other", "production", &spec, shard, &key).is_err(), "the namespace is signed");
        let forged = |_: &str| Some(json!({"environment": "production", "cidrs": "0.0.0.0/0\n"}));
        assert!(verify("jpki-system", "production", &spec, forged, &key).is_err());
        let mut more_ports = spec.clone();
        more_ports["ports"] = json!([]);
        assert!(verify("jpki-system", "production", &more_ports, shard, &key).is_err());
    }
}
