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
        "10.0.0.0/24",
        "10.0.1.0/24",
        "10.0.0.0/23",
        "10.0.2.0/24",
        "10.0.3.0/24",
        "10.0.2.0/23",
        "10.1.0.0/24",
        "10.1.0.128/25",
        "2001:db8:1::/48",
        "2001:db8:2::/48",
        "2001:db8:2:8000::/49",
        "2001:db8::/47",
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
    (0..VERIFIERS.len(), any::<bool>(), prop::collection::vec(0..pool().len(), 1..4), -40i64..40, prop::option::of(-20i64..60), 0u8..5, 0i64..1000).prop_map(
        |(verifier, production, cidrs, start, end, decision, approved_at)| RegSpec {
            verifier,
            production,
            cidrs,
            start,
            end: end.map(|e| start + e.abs()),
            decision,
            approved_at,
        },
    )
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
            "connectionMethod": "Lgwan", "sourceCidrs": cidrs, "accessStartDate": date(s.start), "receivedOn": date(s.start - 10),
            "provisionMethods": {"signing": "Ocsp", "userAuthentication": "Crl"}, "officialSealAffixed": true});
        if let Some(e) = s.end {
            spec["accessEndDate"] = json!(date(e));
        }
        // The uid is the name, as `stored` gives it: the approvals name it.
        let reg: AccessRegistration = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
            "metadata": {"name": format!("r{i}"), "namespace": format!("ns-{v}"), "uid": format!("r{i}")}, "spec": spec}))
        .unwrap();
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

/// A stored version for `obj`, as the API server would give it: a uid per name and a generation that changes when
/// the spec does (a hash of it stands in for the server's counter).
fn stored<T: serde::Serialize + kube::Resource>(mut obj: T, uid: &str) -> T {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&obj).unwrap().hash(&mut h);
    obj.meta_mut().uid = Some(uid.to_string());
    obj.meta_mut().generation = Some((h.finish() >> 2) as i64);
    obj
}

/// A verifier whose test-environment milestones fall `pledge_days` from NOW (ahead of a clock: a wake-up).
fn verifier_with_pledge(name: &str, pledge_days: i64) -> SignatureVerifier {
    let mut v = verifier(name);
    let procedure = v.spec.procedure.get_or_insert_default();
    procedure.confidentiality_pledge_received_on = Some(date(pledge_days).as_str().into());
    procedure.test_environment_application_received_on = Some(date(pledge_days).as_str().into());
    v
}

/// One state of the cluster in a history: the forms, the verifiers' pledge dates and the clock (days from NOW).
/// One step of a history: per slot of registration (named `r<slot>`), keep it, file a new spec under its name (a new
/// generation), or delete it; the verifiers' pledge dates and the clock (days from NOW); and whether the statuses
/// planned at the step before were written (as the controller does, unless a write failed).
#[derive(Debug, Clone)]
struct Step {
    changes: Vec<(u8, RegSpec)>,
    pledge_days: [i64; 3],
    clock_days: i64,
    statuses_written: bool,
    /// The environments' endpoints moved to other hosts (a new generation; every URL notice changes).
    endpoints_moved: bool,
}

const SLOTS: usize = 6;

fn step() -> impl Strategy<Value = Step> {
    (prop::collection::vec((0u8..10, reg_spec()), SLOTS), [-3i64..4, -3i64..4, -3i64..4], -5i64..5, any::<bool>(), any::<bool>()).prop_map(
        |(changes, pledge_days, clock_days, statuses_written, endpoints_moved)| Step { changes, pledge_days, clock_days, statuses_written, endpoints_moved },
    )
}

/// The registrations after `step`: 0–5 keeps a slot as it was, 6–7 files the new spec, 8 deletes it, 9 keeps it.
fn apply_step(slots: &mut [Option<RegSpec>], step: &Step) -> (Vec<AccessRegistration>, Vec<AccessApproval>) {
    for (slot, (change, spec)) in slots.iter_mut().zip(&step.changes) {
        match change {
            6 | 7 => *slot = Some(spec.clone()),
            8 => *slot = None,
            _ => {}
        }
    }
    let placeholder = reg_spec_default();
    let all: Vec<RegSpec> = slots.iter().map(|s| s.clone().unwrap_or_else(|| placeholder.clone())).collect();
    let (regs, approvals) = build(&all);
    let gone: Vec<String> = slots.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| format!("r{i}")).collect();
    (
        regs.into_iter().filter(|r| !gone.contains(r.metadata.name.as_ref().unwrap())).collect(),
        approvals.into_iter().filter(|a| !gone.contains(&a.spec.registration_ref)).collect(),
    )
}

fn reg_spec_default() -> RegSpec {
    RegSpec { verifier: 0, production: false, cidrs: vec![0], start: 0, end: None, decision: 0, approved_at: 0 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The controller plans with a memo kept across passes (`planner::memo`); over any history of edits, deletions,
    /// approvals and clock moves, every pass's plan is the one planned from scratch, to the last byte.
    #[test]
    fn a_memo_kept_across_passes_never_changes_the_plan(history in prop::collection::vec(step(), 1..8)) {
        use jpki_access::planner::memo::Memo;
        use jpki_access::planner::plan_environments_with;
        let mut memo = Memo::default();
        let mut statuses = std::collections::HashMap::new();
        let mut slots: Vec<Option<RegSpec>> = vec![None; SLOTS];
        for (i, s) in history.iter().enumerate() {
            let verifiers: Vec<SignatureVerifier> = VERIFIERS.iter().zip(s.pledge_days).map(|(v, d)| stored(verifier_with_pledge(v, d), v)).collect();
            let (regs, approvals) = apply_step(&mut slots, s);
            let envs: Vec<_> = [("production", Environment::Production), ("test", Environment::Test)].into_iter().map(|(n, e)| {
                let mut env = environment(n, e);
                if s.endpoints_moved {
                    env.spec.endpoints[0].host = format!("ocsp.{n}.moved.example");
                }
                stored(env, n)
            }).collect();
            let regs: Vec<_> = regs.into_iter().map(|r| {
                let n = r.metadata.name.clone().unwrap();
                let mut r = stored(r, &n);
                if s.statuses_written {
                    r.status = statuses.get(&n).cloned();
                }
                r
            }).collect();
            let approvals: Vec<_> = approvals.into_iter().map(|a| { let n = a.metadata.name.clone().unwrap(); stored(a, &n) }).collect();
            let now = NOW.parse::<jiff::Timestamp>().unwrap().checked_add(jiff::SignedDuration::from_hours(24 * s.clock_days)).unwrap();
            let objects = Objects::of(&verifiers, &regs, &approvals, &envs);
            let fresh = plan(&objects.input(), now);
            let memoised = plan_environments_with(&objects.input(), now, Some(&mut memo)).finish_with(Some(&mut memo));
            prop_assert_eq!(format!("{fresh:?}"), format!("{memoised:?}"), "pass {} of {:?}", i, history);
            if s.statuses_written {
                statuses = memoised.registrations.iter().map(|(k, r)| (k.name.clone(), r.status.clone())).collect();
                // The same objects again with those statuses stored, at the same instant: nothing is planned anew.
                let regs: Vec<_> = regs.iter().cloned().map(|mut r| { r.status = statuses.get(r.metadata.name.as_deref().unwrap()).cloned(); r }).collect();
                let objects = Objects::of(&verifiers, &regs, &approvals, &envs);
                let again = plan_environments_with(&objects.input(), now, Some(&mut memo)).finish_with(Some(&mut memo));
                let stats = memo.stats();
                prop_assert_eq!((stats.evaluations_computed, stats.plans_computed), (0, 0), "{:?}", stats);
                prop_assert_eq!(format!("{:?}", plan(&objects.input(), now)), format!("{again:?}"));
            }
        }
    }
}
