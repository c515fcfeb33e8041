//! Properties of the planner over random sets of registrations and approvals (issue #5, acceptance 2): the
//! allowlist is exactly the union of the live CIDRs (checked point-wise), holds nothing of a registration that is
//! not live or of the other environment, and does not depend on the order of the input.
#![allow(clippy::unwrap_used, clippy::panic)]

use ipnet::IpNet;
use jpki_access::api::registration::RegistrationPhase;
use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, Decision, Environment, SignatureVerifier};
use jpki_access::domain::approve::approval_for;
use jpki_access::planner::{Objects, Plan, plan};
use proptest::prelude::*;
use serde_json::json;
use std::net::IpAddr;

const NOW: &str = "2026-06-15T03:00:00Z";
const VERIFIERS: [&str; 3] = ["a", "b", "c"];

/// A small universe of networks with nesting (/23 over two /24s) and both families, so overlaps happen often.
fn pool() -> Vec<&'static str> {
    vec![
        "10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/23", "10.0.2.0/24", "10.0.3.0/24", "10.0.2.0/23", "10.1.0.0/24",
        "10.1.0.128/25", "2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:2:8000::/49", "2001:db8::/47",
    ]
}

fn verifier(name: &str) -> SignatureVerifier {
    serde_json::from_value(json!({
        "apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier", "metadata": {"name": name},
        "spec": {"displayName": name, "organizationType": "LocalGovernment", "lgCode": "011002",
                 "roles": ["SignatureVerifier", "UserAuthenticationVerifier"], "namespace": format!("ns-{name}"),
                 "agreement": {"effectiveDate": "2026-01-01"},
                 "procedure": {"confidentialityPledgeReceivedOn": "2026-01-01", "testEnvironmentApplicationReceivedOn": "2026-01-01",
                               "verificationTestCompletedOn": "2026-01-01"}}
    }))
    .unwrap()
}

fn environment(name: &str, env: Environment) -> AccessEnvironment {
    serde_json::from_value(json!({
        "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": name},
        "spec": {"environment": env, "serviceNamespace": format!("jpki-{name}"), "podSelector": {"matchLabels": {"app": "r"}},
                 "endpoints": [{"name": "ocsp", "provisionMethod": "Ocsp", "service": {"name": "ocsp", "port": 8080}, "host": "ocsp.example"}],
                 "policy": {"minPrefixLengthV4": 8, "minPrefixLengthV6": 16, "maxCidrsPerObject": 3}}
    }))
    .unwrap()
}

fn date(offset_days: i64) -> String {
    jiff::civil::date(2026, 6, 15).checked_add(jiff::Span::new().days(offset_days)).unwrap().to_string()
}

#[derive(Debug, Clone)]
struct RegSpec {
    verifier: usize,
    production: bool,
    cidrs: Vec<usize>,
    start: i64,
    end: Option<i64>,
    /// 0: no approval, 1: approved as is, 2: rejected, 3: approved with fewer CIDRs (the rest pending), 4: approved then rejected
    decision: u8,
    approved_at: i64,
}

fn reg_spec() -> impl Strategy<Value = RegSpec> {
    (0..VERIFIERS.len(), any::<bool>(), prop::collection::vec(0..pool().len(), 1..4), -40i64..40, prop::option::of(-20i64..60), 0u8..5, 0i64..1000)
        .prop_map(|(verifier, production, cidrs, start, end, decision, approved_at)| RegSpec {
            verifier,
            production,
            cidrs,
            start,
            end: end.map(|e| start + e.abs()),
            decision,
            approved_at,
        })
}

fn build(specs: &[RegSpec]) -> (Vec<AccessRegistration>, Vec<AccessApproval>) {
    let mut regs = Vec::new();
    let mut approvals = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let v = VERIFIERS[s.verifier];
        let mut cidrs: Vec<&str> = s.cidrs.iter().map(|c| pool()[*c]).collect();
        cidrs.sort();
        cidrs.dedup();
        let mut spec = json!({"verifierRef": v, "environment": if s.production { "Production" } else { "Test" },
            "connectionMethod": "Lgwan", "sourceCidrs": cidrs, "accessStartDate": date(s.start),
            "provisionMethods": {"signing": "Ocsp", "userAuthentication": "Crl"}, "officialSealAffixed": true});
        if let Some(e) = s.end {
            spec["accessEndDate"] = json!(date(e));
        }
        let reg: AccessRegistration = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
            "metadata": {"name": format!("r{i}"), "namespace": format!("ns-{v}")}, "spec": spec})).unwrap();
        let at = jiff::Timestamp::from_second(1_767_225_600 + s.approved_at * 60).unwrap(); // 2026-01-01 + minutes
        match s.decision {
            1 => approvals.push(approval_for(&reg, Decision::Approved, "x", at, None).unwrap()),
            2 => approvals.push(approval_for(&reg, Decision::Rejected, "x", at, None).unwrap()),
            3 => {
                let mut narrower = reg.clone();
                narrower.spec.source_cidrs.truncate(1);
                approvals.push(approval_for(&narrower, Decision::Approved, "x", at, None).unwrap());
            }
            4 => {
                approvals.push(approval_for(&reg, Decision::Approved, "x", at, None).unwrap());
                let later = at.checked_add(jiff::SignedDuration::from_secs(60)).unwrap();
                let mut rejection = approval_for(&reg, Decision::Rejected, "x", later, None).unwrap();
                rejection.metadata.name = Some(format!("r{i}-rejected-later"));
                approvals.push(rejection);
            }
            _ => {}
        }
        regs.push(reg);
    }
    (regs, approvals)
}

fn run(verifiers: &[SignatureVerifier], regs: &[AccessRegistration], approvals: &[AccessApproval], envs: &[AccessEnvironment]) -> Plan {
    plan(&Objects::of(verifiers, regs, approvals, envs).input(), NOW.parse().unwrap())
}

fn contains(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&addr))
}

/// Sample points: the first and last address of every network of the pool, and one just past it.
fn samples() -> Vec<IpAddr> {
    pool()
        .into_iter()
        .flat_map(|c| {
            let net: IpNet = c.parse().unwrap();
            let next = match net.broadcast() {
                IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
                IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
            };
            [net.network(), net.broadcast(), next]
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_allowlist_is_exactly_the_union_of_live_cidrs(specs in prop::collection::vec(reg_spec(), 0..12), seed in any::<u64>()) {
        let verifiers: Vec<SignatureVerifier> = VERIFIERS.iter().map(|v| verifier(v)).collect();
        let envs = vec![environment("production", Environment::Production), environment("test", Environment::Test)];
        let (regs, approvals) = build(&specs);
        let p = run(&verifiers, &regs, &approvals, &envs);

        for (env_name, env) in [("production", Environment::Production), ("test", Environment::Test)] {
            let published = &p.environments[env_name].cidrs;
            let live: Vec<IpNet> = p.registrations.values()
                .filter(|r| r.resolved.phase == RegistrationPhase::Active && r.resolved.evaluation.environment == env)
                .flat_map(|r| r.status.effective_cidrs.iter().map(|c| c.as_str().parse::<IpNet>().unwrap()))
                .collect();
            for addr in samples() {
                prop_assert_eq!(contains(published, addr), contains(&live, addr), "{} in {}", addr, env_name);
            }
            // Nothing of a registration that is not live, or of the other environment, unless a live one covers it.
            for (key, r) in &p.registrations {
                let reg = regs.iter().find(|x| x.metadata.name.as_deref() == Some(key.name.as_str())).unwrap();
                if r.resolved.phase == RegistrationPhase::Active && reg.spec.environment == env { continue; }
                for c in &reg.spec.source_cidrs {
                    let net: IpNet = c.as_str().parse().unwrap();
                    for addr in [net.network(), net.broadcast()] {
                        if !contains(&live, addr) {
                            prop_assert!(!contains(published, addr), "{} of {} ({:?}) leaked into {}", addr, key, r.resolved.phase, env_name);
                        }
                    }
                }
            }
        }
        // Live means approved (latest decision), in its environment, and inside its window.
        for (key, r) in &p.registrations {
            if r.resolved.phase != RegistrationPhase::Active { continue; }
            let idx: usize = key.name.trim_start_matches('r').parse().unwrap();
            let s = &specs[idx];
            prop_assert!(matches!(s.decision, 1 | 3), "{} is Active with decision {}", key, s.decision);
            prop_assert!(s.start <= 0 && s.end.is_none_or(|e| e >= 0), "{} is Active outside its window", key);
        }
        // Active registrations of different verifiers never overlap in one environment.
        let active: Vec<_> = p.registrations.values().filter(|r| r.resolved.phase == RegistrationPhase::Active).collect();
        for a in &active {
            for b in &active {
                if a.resolved.evaluation.verifier == b.resolved.evaluation.verifier || a.resolved.evaluation.environment != b.resolved.evaluation.environment { continue; }
                for x in &a.status.effective_cidrs {
                    for y in &b.status.effective_cidrs {
                        let (x, y): (IpNet, IpNet) = (x.as_str().parse().unwrap(), y.as_str().parse().unwrap());
                        prop_assert!(!x.contains(&y) && !y.contains(&x), "{} and {} overlap across verifiers", x, y);
                    }
                }
            }
        }

        // Shuffled input, same output.
        let mut order: Vec<usize> = (0..regs.len()).collect();
        let mut state = seed | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let shuffled_regs: Vec<_> = order.iter().map(|i| regs[*i].clone()).collect();
        let mut shuffled_approvals = approvals.clone();
        shuffled_approvals.reverse();
        let mut shuffled_envs = envs.clone();
        shuffled_envs.reverse();
        let q = run(&verifiers, &shuffled_regs, &shuffled_approvals, &shuffled_envs);
        for (name, e) in &p.environments {
            let f = &q.environments[name];
            prop_assert_eq!(&e.nft, &f.nft);
            prop_assert_eq!(e.children.iter().map(|c| c.to_json()).collect::<Vec<_>>(), f.children.iter().map(|c| c.to_json()).collect::<Vec<_>>());
        }
        for (key, r) in &p.registrations {
            prop_assert_eq!(&r.status, &q.registrations[key].status);
        }
    }
}
