//! Planner benchmarks, each next to its baseline in the same run (see BENCHMARKS.md):
//! - aggregation of 1M random prefixes (ipnet, as the planner does it) vs a plain sort-and-merge of intervals;
//! - the containment forest (nearest covering network of each) at 100k and 1M vs a bare sort of the same packed
//!   keys (issue #22 P2); every overlapping pair by sort and sweep at 10k, 100k and 1M vs naive pairwise at 10k;
//! - a full plan of 10,000 registrations (5,000 verifiers, test and production each, all approved).
//!
//! Run: `cargo bench --bench planner` (divan prints median times; ratios are computed from one run).
//!
//! With `JPKI_BENCH_AGGREGATE_DIR=<dir>` set, the binary instead writes the aggregation's 1M prefixes to
//! `<dir>/prefixes.txt`, reads them back, times the planner's aggregation of them against a fair sort-and-merge of
//! u32 intervals, writes the result to `<dir>/rust.txt` and prints the medians as JSON: `scripts/bench-aggregate`
//! runs it next to Python's `ipaddress.collapse_addresses` on the same file (issue #22 P1).
#![allow(clippy::unwrap_used, clippy::panic)]

use ipnet::{IpNet, Ipv4Net};
use jpki_access::domain::cidr::{ContainmentKeys, containment_forest, interval, overlaps_within, radix_sort_from_bit};
use jpki_access::planner::hold::sorted_aggregate;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn main() {
    match std::env::var_os("JPKI_BENCH_AGGREGATE_DIR") {
        Some(dir) => aggregate_file(std::path::Path::new(&dir)),
        None => divan::main(),
    }
}

/// Median wall time of `runs` calls of `f` (after one warm-up call), and its last result.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            out = std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], out)
}

/// IPv4 intervals sorted and merged (overlapping or adjacent ones joined), not split back into CIDRs: the least any
/// aggregation of the same input must do (issue #22 P1's "fair u32 sort-and-merge").
fn u32_sort_and_merge(nets: &[IpNet]) -> Vec<(u32, u32)> {
    let mut intervals: Vec<(u32, u32)> = nets
        .iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some((u32::from(n.network()), u32::from(n.broadcast()))),
            IpNet::V6(_) => None,
        })
        .collect();
    intervals.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match merged.last_mut() {
            Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// `scripts/bench-aggregate`'s Rust half (see the module's documentation).
fn aggregate_file(dir: &std::path::Path) {
    use std::fmt::Write as _;
    let prefixes = dir.join("prefixes.txt");
    let text: String = random_prefixes(1_000_000, 7).iter().fold(String::new(), |mut s, n| {
        writeln!(s, "{n}").unwrap();
        s
    });
    std::fs::write(&prefixes, text).unwrap();
    let input: Vec<IpNet> = std::fs::read_to_string(&prefixes).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let runs = 7;
    let (planner, published) = median(runs, || sorted_aggregate(divan::black_box(&input)));
    let (ipnet, _) = median(runs, || IpNet::aggregate(&divan::black_box(&input).to_vec()).len());
    let (fair, merged) = median(runs, || u32_sort_and_merge(divan::black_box(&input)));
    let out: String = published.iter().fold(String::new(), |mut s, n| {
        writeln!(s, "{n}").unwrap();
        s
    });
    std::fs::write(dir.join("rust.txt"), out).unwrap();
    println!(
        "{{\"prefixes\": {}, \"cidrs_out\": {}, \"intervals_out\": {}, \"runs\": {runs}, \"planner_sorted_aggregate_s\": {}, \"ipnet_aggregate_s\": {}, \"u32_sort_and_merge_s\": {}}}",
        input.len(),
        published.len(),
        merged.len(),
        planner.as_secs_f64(),
        ipnet.as_secs_f64(),
        fair.as_secs_f64()
    );
}

/// Deterministic xorshift, so every run measures the same input.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random IPv4 prefixes, /16 to /32, outside 0/8, 10/8, 127/8 and 224/3 (as in PERFORMANCE.md's data set).
fn random_prefixes(n: usize, seed: u64) -> Vec<IpNet> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next();
        let addr = (r >> 32) as u32;
        let first = addr >> 24;
        if first == 0 || first == 10 || first == 127 || first >= 224 {
            continue;
        }
        let len = 16 + (r % 17) as u8;
        out.push(IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc()));
    }
    out
}

mod aggregation {
    use super::*;

    #[divan::bench(sample_count = 5)]
    fn ipnet_aggregate_1m(bencher: divan::Bencher) {
        let input = random_prefixes(1_000_000, 7);
        bencher.bench(|| IpNet::aggregate(divan::black_box(&input)).len());
    }

    /// What the planner publishes with (`planner::hold::sorted_aggregate`: ipnet's aggregate, then in address order).
    #[divan::bench(sample_count = 5)]
    fn planner_sorted_aggregate_1m(bencher: divan::Bencher) {
        let input = random_prefixes(1_000_000, 7);
        bencher.bench(|| sorted_aggregate(divan::black_box(&input)).len());
    }

    /// Fair baseline (issue #22 P1): u32 intervals sorted and merged.
    #[divan::bench(sample_count = 5)]
    fn baseline_u32_sort_and_merge_1m(bencher: divan::Bencher) {
        let input = random_prefixes(1_000_000, 7);
        bencher.bench(|| super::u32_sort_and_merge(divan::black_box(&input)).len());
    }

    /// Baseline: sort intervals and merge overlapping or adjacent ones, without splitting back into CIDRs.
    #[divan::bench(sample_count = 5)]
    fn baseline_sort_and_merge_1m(bencher: divan::Bencher) {
        let input = random_prefixes(1_000_000, 7);
        bencher.bench(|| {
            let mut intervals: Vec<(u128, u128)> = divan::black_box(&input)
                .iter()
                .map(|n| {
                    let (_, lo, hi) = interval(n);
                    (lo, hi)
                })
                .collect();
            intervals.sort_unstable();
            let mut merged: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
            for (lo, hi) in intervals {
                match merged.last_mut() {
                    Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                    _ => merged.push((lo, hi)),
                }
            }
            merged.len()
        });
    }
}

mod conflicts {
    use super::*;

    #[divan::bench(args = [10_000, 100_000, 1_000_000], sample_count = 5)]
    fn sort_and_sweep(bencher: divan::Bencher, n: usize) {
        let input = random_prefixes(n, 11);
        bencher.bench(|| overlaps_within(divan::black_box(&input)).len());
    }

    /// The containment forest: the nearest covering network of each (issue #22 P2).
    #[divan::bench(args = [100_000, 1_000_000], sample_count = 11)]
    fn forest(bencher: divan::Bencher, n: usize) {
        let input = random_prefixes(n, 11);
        bencher.bench(|| containment_forest(divan::black_box(&input)).len());
    }

    /// Baseline of the forest: a bare `sort_unstable` of the same packed keys (built, and copied for each sample,
    /// outside the timing).
    #[divan::bench(args = [100_000, 1_000_000], sample_count = 11)]
    fn baseline_bare_sort_of_packed_keys(bencher: divan::Bencher, n: usize) {
        let keys = ContainmentKeys::of(&random_prefixes(n, 11)).v4;
        assert_eq!(keys.len(), n);
        bencher.with_inputs(|| keys.clone()).bench_local_values(|mut k| {
            k.sort_unstable();
            k
        });
    }

    /// For reading the forest's figure: the radix sort it uses (on the 32 bits of the start), alone, on the same keys.
    #[divan::bench(args = [100_000, 1_000_000], sample_count = 11)]
    fn radix_sort_of_packed_keys(bencher: divan::Bencher, n: usize) {
        let keys = ContainmentKeys::of(&random_prefixes(n, 11)).v4;
        bencher.with_inputs(|| keys.clone()).bench_local_values(|mut k| {
            radix_sort_from_bit(&mut k, 32);
            k
        });
    }

    /// Baseline: every pair.
    #[divan::bench(args = [10_000], sample_count = 3)]
    fn baseline_naive_pairwise(bencher: divan::Bencher, n: usize) {
        let input = random_prefixes(n, 11);
        bencher.bench(|| {
            let nets = divan::black_box(&input);
            let mut found = 0usize;
            for i in 0..nets.len() {
                for j in i + 1..nets.len() {
                    if nets[i].contains(&nets[j]) || nets[j].contains(&nets[i]) {
                        found += 1;
                    }
                }
            }
            found
        });
    }
}

mod plan {
    use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, Decision, SignatureVerifier};
    use jpki_access::planner::{Objects, plan};
    use serde_json::json;

    struct Fleet {
        verifiers: Vec<SignatureVerifier>,
        registrations: Vec<AccessRegistration>,
        approvals: Vec<AccessApproval>,
        environments: Vec<AccessEnvironment>,
    }

    fn fleet(verifiers: usize) -> Fleet {
        let env = |name: &str, e: &str| -> AccessEnvironment {
            serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": name},
                "spec": {"environment": e, "serviceNamespace": format!("jpki-{name}"), "podSelector": {"matchLabels": {"app": "r"}},
                    "endpoints": [{"name": "ocsp", "provisionMethod": "Ocsp", "service": {"name": "ocsp", "port": 8080}, "host": "ocsp.example"},
                                  {"name": "crl", "provisionMethod": "Crl", "service": {"name": "crl", "port": 8080}, "host": "crl.example", "path": "/crl"}],
                    "exposure": {"ingressClassName": "nginx"},
                    "firewall": {"allowlistNamespace": "jpki-system", "ports": [{"protocol": "TCP", "port": 443}]}}}))
            .unwrap()
        };
        let mut f =
            Fleet { verifiers: vec![], registrations: vec![], approvals: vec![], environments: vec![env("production", "Production"), env("test", "Test")] };
        for v in 0..verifiers {
            let name = format!("v{v}");
            f.verifiers.push(serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier", "metadata": {"name": name},
                "spec": {"displayName": name, "organizationType": "LocalGovernment", "lgCode": "011002", "roles": ["SignatureVerifier", "UserAuthenticationVerifier"],
                    "namespace": format!("ns-{v}"), "agreement": {"effectiveDate": "2026-01-01"},
                    "procedure": {"confidentialityPledgeReceivedOn": "2026-01-01", "testEnvironmentApplicationReceivedOn": "2026-01-01"}}})).unwrap());
            for (i, e) in ["Test", "Production"].iter().enumerate() {
                let k = v * 2 + i;
                let reg: AccessRegistration = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
                    "metadata": {"name": format!("r-{e}"), "namespace": format!("ns-{v}")},
                    "spec": {"verifierRef": name, "environment": e, "connectionMethod": "Lgwan", "receivedOn": "2026-03-01",
                        "sourceCidrs": [format!("{}.{}.{}.0/28", 11 + k / 65536, (k / 256) % 256, k % 256), format!("2001:db8:{:x}::/48", k + 1)],
                        "accessStartDate": "2026-04-01", "provisionMethods": {"signing": "Ocsp", "userAuthentication": "Crl"}, "officialSealAffixed": true}}))
                .unwrap();
                let at = jiff::Timestamp::from_second(1_767_225_600 + k as i64).unwrap();
                f.approvals.push(jpki_access::domain::approve::approval_for(&reg, Decision::Approved, "approver", at, None).unwrap());
                f.registrations.push(reg);
            }
        }
        f
    }

    #[divan::bench(sample_count = 5)]
    fn full_plan_10k_registrations(bencher: divan::Bencher) {
        let f = fleet(5_000);
        let now: jiff::Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        bencher.bench(|| {
            let p = plan(&Objects::of(&f.verifiers, &f.registrations, &f.approvals, &f.environments).input(), now);
            assert_eq!(p.environments["production"].live_registrations, 5_000);
            p.registrations.len()
        });
    }
}

/// A controller pass's planning over the synthetic national fleet (`jpki_access::fleet`; 1× is 6,190 registrations,
/// 10× is 61,900), from scratch (the baseline, as every pass planned before the memo) and with the memo the
/// controller keeps across passes (`planner::memo`): nothing changed since the last pass, or one approval added.
mod fleet_pass {
    use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, SignatureVerifier};
    use jpki_access::fleet::{COMPANIES_2026, FleetSettings, generate};
    use jpki_access::planner::liveness::RegKey;
    use jpki_access::planner::memo::Memo;
    use jpki_access::planner::{Objects, plan, plan_environments_with};

    struct Fleet {
        verifiers: Vec<SignatureVerifier>,
        registrations: Vec<AccessRegistration>,
        approvals: Vec<AccessApproval>,
        environments: Vec<AccessEnvironment>,
    }

    /// Objects as the controller's caches hold them: with a uid and a generation.
    fn stored<K: kube::Resource>(mut obj: K) -> K {
        let meta = obj.meta_mut();
        meta.uid = Some(format!("{}/{}", meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default()));
        meta.generation = Some(1);
        obj
    }

    fn fleet(scale: f64) -> Fleet {
        let bundles = generate(&FleetSettings { scale, companies: COMPANIES_2026, approved_at: "2026-03-15T00:00:00Z".parse().unwrap() }).unwrap();
        let registrations: Vec<AccessRegistration> = bundles.iter().flat_map(|b| b.registrations.clone()).map(stored).collect();
        // Each approval bound to its stored registration, as `kubectl jpki approve` makes it.
        let approved_at = "2026-03-15T00:00:00Z".parse().unwrap();
        let approvals = registrations
            .iter()
            .map(|r| stored(jpki_access::domain::approve::approval_for(r, jpki_access::api::Decision::Approved, "approver@j-lis", approved_at, None).unwrap()))
            .collect();
        Fleet {
            verifiers: bundles.iter().map(|b| stored(serde_json::from_value(b.verifier.clone()).unwrap())).collect(),
            registrations,
            approvals,
            environments: jpki_access::cli::fleet::environment_objects()
                .unwrap()
                .into_iter()
                .filter(|v| v["kind"] == "AccessEnvironment")
                .map(|v| stored(serde_json::from_value(v).unwrap()))
                .collect(),
        }
    }

    fn now() -> jiff::Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    /// The fleet after a first pass whose statuses were written, and the memo that pass left.
    fn settled(scale: f64) -> (Fleet, Memo) {
        let mut f = fleet(scale);
        let mut memo = Memo::default();
        let objects = Objects::of(&f.verifiers, &f.registrations, &f.approvals, &f.environments);
        let first = plan_environments_with(&objects.input(), now(), Some(&mut memo)).finish_with(Some(&mut memo));
        let statuses: Vec<_> = f.registrations.iter().map(|r| first.registrations[&RegKey::of(r)].status.clone()).collect();
        drop(first);
        for (r, s) in f.registrations.iter_mut().zip(statuses) {
            r.status = Some(s);
        }
        (f, memo)
    }

    /// Args: the fleet's scale in tenths (10 = 1×, 100 = 10×).
    #[divan::bench(args = [10, 100], sample_count = 5)]
    fn baseline_from_scratch(bencher: divan::Bencher, tenths: u32) {
        let (f, _) = settled(f64::from(tenths) / 10.0);
        bencher.bench(|| plan(&Objects::of(&f.verifiers, &f.registrations, &f.approvals, &f.environments).input(), now()).registrations.len());
    }

    #[divan::bench(args = [10, 100], sample_count = 5)]
    fn memo_nothing_changed(bencher: divan::Bencher, tenths: u32) {
        let (f, mut memo) = settled(f64::from(tenths) / 10.0);
        bencher.bench_local(|| {
            let objects = Objects::of(&f.verifiers, &f.registrations, &f.approvals, &f.environments);
            let p = plan_environments_with(&objects.input(), now(), Some(&mut memo)).finish_with(Some(&mut memo));
            assert_eq!(memo.stats().evaluations_computed + memo.stats().plans_computed, 0);
            p.registrations.len()
        });
    }

    /// Each pass sees one approval more or less than the pass before: one registration to judge again.
    #[divan::bench(args = [10, 100], sample_count = 5)]
    fn memo_one_approval_changed(bencher: divan::Bencher, tenths: u32) {
        let (f, mut memo) = settled(f64::from(tenths) / 10.0);
        let fewer: Vec<AccessApproval> = f.approvals[1..].to_vec();
        let mut flip = false;
        bencher.bench_local(|| {
            flip = !flip;
            let approvals = if flip { &fewer } else { &f.approvals };
            let objects = Objects::of(&f.verifiers, &f.registrations, approvals, &f.environments);
            let p = plan_environments_with(&objects.input(), now(), Some(&mut memo)).finish_with(Some(&mut memo));
            assert_eq!(memo.stats().evaluations_computed, 1);
            p.registrations.len()
        });
    }
}
