//! The agent's element changes through netlink (`src/agent/netlink.rs`, `src/agent/delta.rs`) against the real
//! kernel, issue #22: random sequences of allowlists, each applied as the batch the agent would send, and at the
//! end the kernel's sets read back once (`nft -j list set`, parsed here) and compared with the intervals the test
//! computed from its own lists; real connects from the client namespace judge a sample on the way.
//!
//! The expected intervals come from this file (its own merge of the lists it drew), never from the code under test.
#![cfg(feature = "cluster-tests")]
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use ipnet::IpNet;
use jpki_access::agent::{delta, netlink};
use jpki_access::planner::nft::{Rules, render, table_name};
use std::collections::BTreeSet;
use std::time::Duration;
use support::netns::*;

/// A small deterministic generator (xorshift64*), so that a failure names its seed and can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Networks the lists are drawn from: random ones in 10.0.0.0/16 and 2001:db8:9::/48 (no traffic), and the
/// networks that hold the client's sources, so that real connects see the changes.
fn draw(rng: &mut Rng, pool: &[IpNet]) -> Vec<IpNet> {
    let mut raw = Vec::new();
    for _ in 0..rng.below(40) {
        let prefix = 20 + rng.below(13) as u8;
        raw.push(IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 | (rng.below(1 << 16) as u32)).into(), prefix).unwrap().trunc());
    }
    for _ in 0..rng.below(20) {
        let prefix = 100 + rng.below(29) as u8;
        let addr = u128::from("2001:db8:9::".parse::<std::net::Ipv6Addr>().unwrap()) | u128::from(rng.next() as u32);
        raw.push(IpNet::new(std::net::Ipv6Addr::from(addr).into(), prefix).unwrap().trunc());
    }
    raw.extend(pool.iter().filter(|_| rng.below(2) == 0));
    // Never empty in either family (the agent replaces the whole table then; see delta::changes).
    raw.push("10.255.0.0/24".parse().unwrap());
    raw.push("2001:db8:ff::/64".parse().unwrap());
    IpNet::aggregate(&raw)
}

/// The addresses a list admits, as merged inclusive ranges: the test's own arithmetic.
fn ranges(nets: &[IpNet]) -> BTreeSet<(bool, u128, u128)> {
    merged(
        nets.iter()
            .map(|n| match n {
                IpNet::V4(n) => (true, u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))),
                IpNet::V6(n) => (false, u128::from(n.network()), u128::from(n.broadcast())),
            })
            .collect(),
    )
}

/// The kernel's elements of one set from `nft -j list set`, as inclusive ranges (prefixes, ranges, addresses).
fn kernel_ranges(topo: &Topology, set: &str) -> Vec<(bool, u128, u128)> {
    let out = topo.nft(&["-j", "list", "set", "inet", &table_name(ENV), set]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let elems = doc["nftables"].as_array().unwrap().iter().find_map(|i| i.get("set")).and_then(|s| s.get("elem")).and_then(|e| e.as_array()).cloned();
    let addr = |v: &serde_json::Value| -> (bool, u128) {
        match v.as_str().unwrap().parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(a) => (true, u128::from(u32::from(a))),
            std::net::IpAddr::V6(a) => (false, u128::from(a)),
        }
    };
    elems
        .unwrap_or_default()
        .iter()
        .map(|e| {
            if let Some(p) = e.get("prefix") {
                let net: IpNet = format!("{}/{}", p["addr"].as_str().unwrap(), p["len"]).parse().unwrap();
                ranges(&[net.trunc()]).into_iter().next().unwrap()
            } else if let Some(r) = e.get("range") {
                let ((f, lo), (_, hi)) = (addr(&r[0]), addr(&r[1]));
                (f, lo, hi)
            } else {
                let (f, a) = addr(e);
                (f, a, a)
            }
        })
        .collect()
}

fn merged(mut list: Vec<(bool, u128, u128)>) -> BTreeSet<(bool, u128, u128)> {
    list.sort();
    let mut out: Vec<(bool, u128, u128)> = Vec::new();
    for (f, lo, hi) in list {
        match out.last_mut() {
            Some((lf, _, lhi)) if *lf == f && lo <= lhi.saturating_add(1) => *lhi = (*lhi).max(hi),
            _ => out.push((f, lo, hi)),
        }
    }
    out.into_iter().collect()
}

fn ruleset(nets: &[IpNet], tag: &str) -> String {
    let v4: Vec<_> = nets.iter().filter_map(|n| if let IpNet::V4(n) = n { Some(*n) } else { None }).collect();
    let v6: Vec<_> = nets.iter().filter_map(|n| if let IpNet::V6(n) = n { Some(*n) } else { None }).collect();
    render(ENV, &Rules { allow_v4: &v4, allow_v6: &v6, ports: &[tcp(443)], tag: Some(tag), ..Rules::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_delta_sequences_through_netlink_leave_exactly_the_expected_intervals_in_the_kernel() {
    let topo = Topology::new("nd").with_listeners();
    let link = netlink::Netlink { netns: Some(topo.router.clone()), timeout: Duration::from_secs(10) };
    // Networks holding the client's sources: C4_OK alone, the /28s around each source, their /24.
    let pool: Vec<IpNet> = ["198.51.100.10/32", "198.51.100.0/28", "198.51.100.16/28", "198.51.100.0/24", "2001:db8:1::10/128", "2001:db8:1::/112"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let seed = std::env::var("JPKI_DELTA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026_1208_u64);
    eprintln!("seed {seed} (replay with JPKI_DELTA_SEED={seed})");
    let mut rng = Rng(seed);
    let mut current = draw(&mut rng, &pool);
    let mut tag = "round 0".to_string();
    topo.apply(&ruleset(&current, &tag));
    let (mut elements, mut probed) = (0, 0);
    for round in 1..=60 {
        let next = draw(&mut rng, &pool);
        let next_tag = format!("round {round}");
        let changes = delta::changes(&current, &next, (&tag, &next_tag), usize::MAX).expect("both families non-empty, no network at the end");
        elements += changes.iter().map(|c| c.elements.len()).sum::<usize>();
        if let Err(e) = link.apply(&table_name(ENV), &changes).await {
            let show = |c: &netlink::Change| {
                let keys: Vec<String> = c.elements.iter().map(|e| format!("{:?}{}", e.key, if e.end { " end" } else { "" })).collect();
                format!("{} {}: {}", if c.add { "add" } else { "delete" }, c.set, keys.join(", "))
            };
            let kernel = topo.list(&["table", "inet", &table_name(ENV)]);
            panic!(
                "round {round} (seed {seed}): {e}\nfrom {current:?}\nto {next:?}\nchanges:\n{}\nkernel:\n{kernel}",
                changes.iter().map(show).collect::<Vec<_>>().join("\n")
            );
        }
        // The tag moved with the elements, in the same batch: the old one is gone, the new one is there.
        assert!(link.holds(&table_name(ENV), "applied", &delta::tag_element(&next_tag)).await.unwrap());
        assert!(!link.holds(&table_name(ENV), "applied", &delta::tag_element(&tag)).await.unwrap());
        (current, tag) = (next, next_tag);
        if round % 10 == 0 {
            // Real connects to the router's :443 (its input chain) from the sources the pool covers.
            let admitted = |a: &str| current.iter().any(|n| n.contains(&a.parse::<std::net::IpAddr>().unwrap()));
            let probes = [
                probe(C4_OK, R4, 443, admitted(C4_OK)),
                probe(C4_NO, R4, 443, admitted(C4_NO)),
                probe(C6_OK, R6, 443, admitted(C6_OK)),
                probe(C6_NO, R6, 443, admitted(C6_NO)),
            ];
            topo.check(&format!("round {round} (seed {seed})"), &probes);
            probed += probes.len();
        }
    }
    // Read back once: the kernel holds exactly the intervals of the last list.
    let mut kernel = kernel_ranges(&topo, "allow_v4");
    kernel.extend(kernel_ranges(&topo, "allow_v6"));
    assert_eq!(merged(kernel), ranges(&current), "seed {seed}");
    eprintln!("60 rounds, {elements} elements changed through netlink, {probed} connects judged");
}

#[tokio::test]
async fn a_batch_built_on_a_wrong_belief_is_refused_whole_and_changes_nothing() {
    let topo = Topology::new("nw");
    let link = netlink::Netlink { netns: Some(topo.router.clone()), timeout: Duration::from_secs(10) };
    let before: Vec<IpNet> = ["10.1.0.0/24", "2001:db8:9::/64"].iter().map(|s| s.parse().unwrap()).collect();
    topo.apply(&ruleset(&before, "t0"));
    // Changes computed from a list the kernel does not hold (as after a change by hand): the deletion of an element
    // that is not there fails, and the additions in the same batch do not happen either.
    let believed: Vec<IpNet> = ["10.2.0.0/24", "2001:db8:9::/64"].iter().map(|s| s.parse().unwrap()).collect();
    let after: Vec<IpNet> = ["10.3.0.0/24", "2001:db8:9::/64"].iter().map(|s| s.parse().unwrap()).collect();
    let changes = delta::changes(&believed, &after, ("t0", "t1"), usize::MAX).unwrap();
    let err = link.apply(&table_name(ENV), &changes).await.unwrap_err();
    assert_eq!(err.category(), "refused", "{err}");
    assert_eq!(merged(kernel_ranges(&topo, "allow_v4")), ranges(&before[..1]));
    assert!(link.holds(&table_name(ENV), "applied", &delta::tag_element("t0")).await.unwrap());
    // No table at all: not held, no error.
    assert!(!link.holds("jpki_access_nothing_here", "applied", &delta::tag_element("t0")).await.unwrap());
}
