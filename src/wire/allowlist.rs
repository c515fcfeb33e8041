//! The published allowlist on the wire: an `AccessAllowlist` index, signed by the controller, naming its
//! `AccessAllowlistShard`s with their digests.
//!
//! The signature covers the index's whole spec (environment, purpose, serial, the set's digest and count, every
//! shard's name, digest and count, the ports, the forward destinations, the hold's bookkeeping) and the namespace,
//! as canonical JSON after a fixed context line. The shards are covered through their digests. A reader accepts a
//! set only when [`assemble`] finds all of it consistent with a valid signature and every CIDR acceptable under the
//! forms' own rules (`crate::domain::cidr::parse_cidr`: never `/0`, never a special-purpose range).

use super::signing::{PublicKey, SignatureError, SigningKey};
use crate::api::allowlist::{AccessAllowlist, AccessAllowlistShard, AccessAllowlistSpec, AllowlistPurpose, HoldBookkeeping};
use crate::api::environment::FirewallPort;
use crate::domain::cidr::{CidrError, interval, parse_cidr};
use crate::domain::digest::{canonical_json, digest_bytes};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The first line of every signed message: a signature over an allowlist can never be taken for one over anything
/// else, and a later format gets another line.
pub const SIGNING_CONTEXT: &str = "jpki-access allowlist v1\n";

/// Name of an environment's allowlist index; its shards add `-<n>`.
pub fn index_name(environment: &str) -> String {
    format!("jpki-allowlist-{environment}")
}

/// Name of an environment's hold baseline index; its shards add `-<n>`.
pub fn baseline_name(environment: &str) -> String {
    format!("jpki-hold-baseline-{environment}")
}

/// The bytes the controller signs: the context line, the namespace, and the spec without its signature as
/// canonical JSON (keys sorted, no whitespace), so no two different specs share a message.
pub fn signed_message(namespace: &str, spec: &AccessAllowlistSpec) -> Vec<u8> {
    let mut unsigned = spec.clone();
    unsigned.signature = String::new();
    let json = serde_json::to_value(&unsigned).unwrap_or_default();
    let mut message = String::with_capacity(256 + 120 * spec.shards.len());
    message.push_str(SIGNING_CONTEXT);
    message.push_str(namespace);
    message.push('\n');
    message.push_str(&canonical_json(&json));
    message.into_bytes()
}

/// Signs `spec` for `namespace` in place.
pub fn sign(namespace: &str, spec: &mut AccessAllowlistSpec, key: &SigningKey) {
    spec.signature = key.sign(&signed_message(namespace, spec));
}

/// Whether the signature of `index` (as stored in `namespace`) holds.
pub fn verify_signature(namespace: &str, spec: &AccessAllowlistSpec, key: &PublicKey) -> Result<(), SignatureError> {
    key.verify(&signed_message(namespace, spec), &spec.signature)
}

/// A set that passed every check of [`assemble`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedSet {
    pub serial: i64,
    pub digest: String,
    /// IPv4 before IPv6, each in address order, disjoint.
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<FirewallPort>,
    pub forward_destinations: Vec<IpNet>,
    pub registrations: i64,
    pub hold: Option<HoldBookkeeping>,
}

impl VerifiedSet {
    pub fn v4(&self) -> Vec<Ipv4Net> {
        self.cidrs.iter().filter_map(|c| if let IpNet::V4(n) = c { Some(*n) } else { None }).collect()
    }
    pub fn v6(&self) -> Vec<Ipv6Net> {
        self.cidrs.iter().filter_map(|c| if let IpNet::V6(n) = c { Some(*n) } else { None }).collect()
    }
}

/// Why a published set is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no allowlist index {0}")]
    NoIndex(String),
    #[error("index {index}: {error}")]
    Signature { index: String, error: SignatureError },
    #[error("index {index} is for environment {found:?}, not {expected:?}")]
    WrongEnvironment { index: String, expected: String, found: String },
    #[error("index {index} is a {found:?} set, not {expected:?}")]
    WrongPurpose { index: String, expected: AllowlistPurpose, found: AllowlistPurpose },
    #[error("shard {0} named by the signed index is missing")]
    MissingShard(String),
    #[error("shard {name} has digest {found}, the signed index announces {expected}")]
    ShardDigest { name: String, expected: String, found: String },
    #[error("shard {name} is for environment {found:?}")]
    ShardEnvironment { name: String, found: String },
    #[error("the shards add up to {found}, the signed index announces {expected}")]
    SetDigest { expected: String, found: String },
    #[error("the shards hold {found} CIDRs, the signed index announces {expected}")]
    Count { expected: i64, found: i64 },
    #[error("shard {shard} line {line}: {error}")]
    InvalidCidr { shard: String, line: usize, error: CidrError },
    #[error("shard {shard} line {line}: {cidr} is not after the previous CIDR (the set must be sorted and disjoint)")]
    Unordered { shard: String, line: usize, cidr: String },
    #[error("index {0} names no port to filter (nothing would be filtered)")]
    NoPorts(String),
    #[error("index {index}: port {port} is out of range 1-65535")]
    BadPort { index: String, port: i32 },
    #[error("index {index}: forward destination {text:?} is not a canonical CIDR other than /0")]
    BadDestination { index: String, text: String },
    #[error("index {index} has serial {found}, older than serial {enforced} already enforced (an old set replayed?)")]
    Older { index: String, found: i64, enforced: i64 },
}

impl Refusal {
    /// A bounded label for metrics, reports and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Refusal::NoIndex(_) => "no_index",
            Refusal::Signature { .. } => "signature",
            Refusal::WrongEnvironment { .. } | Refusal::ShardEnvironment { .. } => "environment",
            Refusal::WrongPurpose { .. } => "purpose",
            Refusal::MissingShard(_) => "missing_shard",
            Refusal::ShardDigest { .. } => "shard_digest",
            Refusal::SetDigest { .. } => "set_digest",
            Refusal::Count { .. } => "count",
            Refusal::InvalidCidr { .. } => "invalid_cidr",
            Refusal::Unordered { .. } => "unordered",
            Refusal::NoPorts(_) => "no_ports",
            Refusal::BadPort { .. } => "bad_port",
            Refusal::BadDestination { .. } => "bad_destination",
            Refusal::Older { .. } => "replayed",
        }
    }

    /// True for states the controller passes through while it writes a new set (a shard rewritten before the index
    /// that announces it): a reader waits a moment before it calls them a refusal. Never true for a signature,
    /// environment, CIDR or port problem.
    pub fn may_be_in_flight(&self) -> bool {
        matches!(self, Refusal::MissingShard(_) | Refusal::ShardDigest { .. } | Refusal::SetDigest { .. } | Refusal::Count { .. })
    }
}

/// What a reader expects: where the set is stored and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub namespace: &'a str,
    pub environment: &'a str,
    pub purpose: AllowlistPurpose,
}

/// Checks an index and its shards (looked up by name) completely: signature, environment, purpose, every shard's
/// digest, the set's digest and count, each CIDR by the forms' rules, order, ports and destinations.
pub fn assemble<'s>(
    expected: Expected<'_>,
    index: Option<&AccessAllowlist>,
    shard: impl Fn(&str) -> Option<&'s AccessAllowlistShard>,
    key: &PublicKey,
) -> Result<VerifiedSet, Refusal> {
    let name = index.and_then(|i| i.metadata.name.clone()).unwrap_or_else(|| match expected.purpose {
        AllowlistPurpose::Enforce => index_name(expected.environment),
        AllowlistPurpose::HoldBaseline => baseline_name(expected.environment),
    });
    let Some(index) = index else {
        return Err(Refusal::NoIndex(name));
    };
    let spec = &index.spec;
    verify_signature(expected.namespace, spec, key).map_err(|error| Refusal::Signature { index: name.clone(), error })?;
    if spec.environment != expected.environment {
        return Err(Refusal::WrongEnvironment { index: name, expected: expected.environment.to_string(), found: spec.environment.clone() });
    }
    if spec.purpose != expected.purpose {
        return Err(Refusal::WrongPurpose { index: name, expected: expected.purpose, found: spec.purpose });
    }
    let mut text = String::new();
    let mut cidrs: Vec<IpNet> = Vec::with_capacity(usize::try_from(spec.cidr_count).unwrap_or(0).min(1_000_000));
    for r in &spec.shards {
        let s = shard(&r.name).ok_or_else(|| Refusal::MissingShard(r.name.clone()))?;
        let found = digest_bytes(s.spec.cidrs.as_bytes());
        if found != r.digest {
            return Err(Refusal::ShardDigest { name: r.name.clone(), expected: r.digest.clone(), found });
        }
        if s.spec.environment != expected.environment {
            return Err(Refusal::ShardEnvironment { name: r.name.clone(), found: s.spec.environment.clone() });
        }
        for (i, line) in s.spec.cidrs.lines().enumerate() {
            let net = parse_cidr(line).map_err(|error| Refusal::InvalidCidr { shard: r.name.clone(), line: i + 1, error })?;
            if let Some(previous) = cidrs.last() {
                let ((pf, plo, phi), (nf, nlo, _)) = (interval(previous), interval(&net));
                if (pf, plo) >= (nf, nlo) || (pf == nf && phi >= nlo) {
                    return Err(Refusal::Unordered { shard: r.name.clone(), line: i + 1, cidr: line.to_string() });
                }
            }
            cidrs.push(net);
        }
        text.push_str(&s.spec.cidrs);
    }
    let found = digest_bytes(text.as_bytes());
    if found != spec.digest {
        return Err(Refusal::SetDigest { expected: spec.digest.clone(), found });
    }
    if cidrs.len() as i64 != spec.cidr_count {
        return Err(Refusal::Count { expected: spec.cidr_count, found: cidrs.len() as i64 });
    }
    if expected.purpose == AllowlistPurpose::Enforce && spec.ports.is_empty() {
        return Err(Refusal::NoPorts(name));
    }
    if let Some(p) = spec.ports.iter().find(|p| !(1..=65535).contains(&p.port)) {
        return Err(Refusal::BadPort { index: name, port: p.port });
    }
    let mut forward_destinations = Vec::with_capacity(spec.forward_destinations.len());
    for text in &spec.forward_destinations {
        match text.parse::<IpNet>() {
            Ok(net) if net.prefix_len() > 0 && net.trunc() == net && net.to_string() == *text => forward_destinations.push(net),
            _ => return Err(Refusal::BadDestination { index: name, text: text.clone() }),
        }
    }
    Ok(VerifiedSet {
        serial: spec.serial,
        digest: spec.digest.clone(),
        cidrs,
        ports: spec.ports.clone(),
        forward_destinations,
        registrations: spec.registrations,
        hold: spec.hold.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::planner::children::Child;
    use crate::wire::signing::generate;

    struct Published {
        index: AccessAllowlist,
        shards: Vec<AccessAllowlistShard>,
    }

    impl Published {
        fn assemble(&self, key: &PublicKey) -> Result<VerifiedSet, Refusal> {
            self.assemble_as("jpki-system", "production", key)
        }
        fn assemble_as(&self, namespace: &str, environment: &str, key: &PublicKey) -> Result<VerifiedSet, Refusal> {
            let expected = Expected { namespace, environment, purpose: AllowlistPurpose::Enforce };
            assemble(expected, Some(&self.index), |n| self.shards.iter().find(|s| s.metadata.name.as_deref() == Some(n)), key)
        }
        fn shard_mut(&mut self, n: usize) -> &mut AccessAllowlistShard {
            &mut self.shards[n]
        }
    }

    fn keys() -> (SigningKey, PublicKey) {
        let (private, _) = generate().unwrap();
        let key = SigningKey::from_pem(&private, "test").unwrap();
        let public = key.public_key();
        (key, public)
    }

    /// The planner's children for these CIDRs, signed as the controller signs them.
    fn published(cidrs: &[&str], per_object: i32, key: &SigningKey) -> Published {
        let mut env: crate::api::AccessEnvironment = serde_json::from_value(serde_json::json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": "production"},
            "spec": {"environment": "Production", "serviceNamespace": "s", "podSelector": {"matchLabels": {"a": "b"}},
                     "endpoints": [{"name": "o", "provisionMethod": "Ocsp", "service": {"name": "o", "port": 1}, "host": "o.example"}],
                     "firewall": {"allowlistNamespace": "jpki-system", "ports": [{"protocol": "TCP", "port": 443}], "forwardDestinations": ["203.0.113.0/24"]}}
        }))
        .unwrap();
        env.spec.policy.max_cidrs_per_object = per_object;
        let nets: Vec<IpNet> = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        let (children, _) = crate::planner::children::allowlist(&env, &nets, 1);
        let mut index = None;
        let mut shards = Vec::new();
        for c in children {
            match c {
                Child::Allowlist(i) => index = Some(i),
                Child::AllowlistShard(s) => shards.push(s),
                _ => {}
            }
        }
        let mut index = index.unwrap();
        index.spec.serial = 7;
        sign("jpki-system", &mut index.spec, key);
        Published { index, shards }
    }

    /// Recomputes every digest of the index from the shards, as someone who can write the objects but has no key.
    fn recompute_digests(p: &mut Published) {
        let mut text = String::new();
        for (r, s) in p.index.spec.shards.iter_mut().zip(&p.shards) {
            r.digest = digest_bytes(s.spec.cidrs.as_bytes());
            r.count = s.spec.cidrs.lines().count() as i64;
            text.push_str(&s.spec.cidrs);
        }
        p.index.spec.digest = digest_bytes(text.as_bytes());
        p.index.spec.cidr_count = text.lines().count() as i64;
    }

    const SET: [&str; 3] = ["192.0.2.0/28", "198.51.100.0/24", "2001:db8::/48"];

    #[test]
    fn a_set_signed_by_the_controller_is_assembled_in_order() {
        let (key, public) = keys();
        let p = published(&SET, 2, &key);
        let set = p.assemble(&public).unwrap();
        assert_eq!(set.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(), SET);
        assert_eq!((set.v4().len(), set.v6().len(), set.serial), (2, 1, 7));
        assert_eq!(set.ports, vec![FirewallPort { protocol: crate::api::environment::Protocol::Tcp, port: 443 }]);
        assert_eq!(set.forward_destinations, vec!["203.0.113.0/24".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn every_tampering_of_someone_without_the_key_is_refused() {
        let (key, public) = keys();
        let good = published(&SET, 2, &key);

        // (a) the ports emptied, or changed.
        let mut p = published(&SET, 2, &key);
        p.index.spec.ports.clear();
        assert!(matches!(p.assemble(&public), Err(Refusal::Signature { error: SignatureError::Invalid, .. })));
        // (b) 0.0.0.0/0 added to a shard: its digest no longer matches the signed index.
        let mut p = published(&SET, 2, &key);
        p.shard_mut(0).spec.cidrs.insert_str(0, "0.0.0.0/0\n");
        assert!(matches!(p.assemble(&public), Err(Refusal::ShardDigest { .. })));
        // (c) a shard replaced by another valid-looking set, every digest recomputed: the signature fails.
        let mut p = published(&SET, 2, &key);
        p.shard_mut(0).spec.cidrs = "203.0.113.0/24\n".into();
        recompute_digests(&mut p);
        assert!(matches!(p.assemble(&public), Err(Refusal::Signature { .. })));
        // ... and signed with another key.
        let (other, _) = keys();
        sign("jpki-system", &mut p.index.spec, &other);
        assert!(matches!(p.assemble(&public), Err(Refusal::Signature { error: SignatureError::Invalid, .. })));
        // Unsigned.
        let mut p = published(&SET, 2, &key);
        p.index.spec.signature.clear();
        assert!(matches!(p.assemble(&public), Err(Refusal::Signature { error: SignatureError::Missing, .. })));
        // (d) no index at all.
        let expected = Expected { namespace: "jpki-system", environment: "production", purpose: AllowlistPurpose::Enforce };
        let err = assemble(expected, None, |_| None, &public).unwrap_err();
        assert_eq!(err, Refusal::NoIndex("jpki-allowlist-production".into()));
        assert_eq!(err.category(), "no_index");
        // A good set copied to another namespace or read as another environment's.
        assert!(matches!(good.assemble_as("elsewhere", "production", &public), Err(Refusal::Signature { .. })));
        assert!(matches!(good.assemble_as("jpki-system", "test", &public), Err(Refusal::WrongEnvironment { .. })));
        assert!(good.assemble(&public).is_ok());
    }

    #[test]
    fn a_signed_set_is_still_checked_by_the_forms_rules_and_must_name_a_port() {
        // What a compromised or broken controller could sign is refused all the same.
        let (key, public) = keys();
        for (bad, category) in [("0.0.0.0/0", "invalid_cidr"), ("127.0.0.0/8", "invalid_cidr"), ("10.0.0.1/8", "invalid_cidr")] {
            let mut p = published(&SET, 2, &key);
            p.shard_mut(0).spec.cidrs = format!("{bad}\n");
            recompute_digests(&mut p);
            sign("jpki-system", &mut p.index.spec, &key);
            let err = p.assemble(&public).unwrap_err();
            assert_eq!(err.category(), category, "{bad}: {err}");
            assert!(err.to_string().contains("line 1"), "{err}");
        }
        let mut p = published(&SET, 2, &key);
        p.index.spec.ports.clear();
        sign("jpki-system", &mut p.index.spec, &key);
        assert_eq!(p.assemble(&public).unwrap_err(), Refusal::NoPorts("jpki-allowlist-production".into()));
        let mut p = published(&SET, 3, &key);
        p.shard_mut(0).spec.cidrs = "198.51.100.0/24\n192.0.2.0/28\n2001:db8::/48\n".into();
        recompute_digests(&mut p);
        sign("jpki-system", &mut p.index.spec, &key);
        assert_eq!(p.assemble(&public).unwrap_err().category(), "unordered");
    }

    #[test]
    fn a_half_written_set_waits_and_is_told_apart_from_a_forgery() {
        let (key, public) = keys();
        let mut p = published(&SET, 2, &key);
        let removed = p.shards.remove(1);
        let err = p.assemble(&public).unwrap_err();
        assert_eq!(err, Refusal::MissingShard("jpki-allowlist-production-1".into()));
        assert!(err.may_be_in_flight());
        let mut newer = removed;
        newer.spec.cidrs = "2001:db8:1::/48\n".into();
        p.shards.push(newer);
        assert!(p.assemble(&public).unwrap_err().may_be_in_flight());
        assert!(!Refusal::NoPorts("x".into()).may_be_in_flight());
    }
}
