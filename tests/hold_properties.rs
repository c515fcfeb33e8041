//! The mass-revocation hold cannot be sliced (issue 17, acceptance 3): over random sequences of passes that remove
//! and add registrations and CIDRs (in any mix, any size per pass), no pass publishes a set from which more than the
//! policy's threshold of the released set is gone without a person's release.
//!
//! The oracle is the test's own: it keeps the released set per registration (what was live at the last release, or
//! at the first pass, and everything live since), and judges each published set by its own coverage check of
//! address intervals; it uses nothing of the planner but its output.
#![allow(clippy::unwrap_used, clippy::panic)]

use ipnet::IpNet;
use jpki_access::api::environment::MassRevocationHold;
use jpki_access::planner::hold::{HoldInput, LiveSet, PublishedAllowlist, decide, sorted_aggregate};
use proptest::prelude::*;
use std::collections::BTreeMap;

const POLICY: MassRevocationHold = MassRevocationHold { percent: 25, min_cidrs: 8, window_hours: None };

/// Network `i` of a pool of /24s, with a /23 over some pairs so that later sets merge and split.
fn net(i: u16) -> IpNet {
    if i % 17 == 16 {
        format!("10.{}.{}.0/23", i / 128, ((i % 128) * 2) & 0xfe).parse().unwrap()
    } else {
        format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap()
    }
}

/// Address range of a network, for the oracle's own coverage check.
fn range(n: &IpNet) -> (u128, u128) {
    match n {
        IpNet::V4(v) => (u32::from(v.network()) as u128, u32::from(v.broadcast()) as u128),
        IpNet::V6(v) => (u128::from(v.network()), u128::from(v.broadcast())),
    }
}

/// Whether the union of `set` covers every address of `n` (set: any networks, in any order).
fn covered(n: &IpNet, set: &[IpNet]) -> bool {
    let (lo, hi) = range(n);
    let mut parts: Vec<(u128, u128)> = set.iter().map(range).filter(|(a, b)| *b >= lo && *a <= hi).collect();
    parts.sort();
    let mut next = lo;
    for (a, b) in parts {
        if a > next {
            return false;
        }
        if b >= next {
            if b == u128::MAX || b >= hi {
                return true;
            }
            next = b + 1;
        }
    }
    false
}

/// One pass: registrations to drop, registrations to narrow (drop their first network), registrations to add.
#[derive(Debug, Clone)]
struct Pass {
    remove: Vec<u16>,
    narrow: Vec<u16>,
    add: Vec<Vec<u16>>,
    release: bool,
}

fn pass() -> impl Strategy<Value = Pass> {
    (
        prop::collection::vec(0u16..400, 0..30),
        prop::collection::vec(0u16..400, 0..10),
        prop::collection::vec(prop::collection::vec(0u16..600, 1..4), 0..30),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(remove, narrow, add, release)| Pass { remove, narrow, add, release })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_removes_more_than_the_threshold_from_the_released_set_without_a_release(
        initial in prop::collection::vec(prop::collection::vec(0u16..600, 1..4), 20..120),
        passes in prop::collection::vec(pass(), 1..25),
    ) {
        let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
        let mut live: LiveSet = initial.iter().enumerate().map(|(i, nets)| (format!("r{i}"), nets.iter().map(|n| net(*n)).collect())).collect();
        let mut next_uid = live.len();
        let mut previously_live = LiveSet::new();
        let mut published: Option<PublishedAllowlist> = None;
        // The oracle's released set: per registration, its networks when a person last released (or at the start).
        let mut released: BTreeMap<String, Vec<IpNet>> = live.clone();
        let mut release_next = false;
        for (round, p) in std::iter::once(Pass { remove: vec![], narrow: vec![], add: vec![], release: false }).chain(passes).enumerate() {
            let keys: Vec<String> = live.keys().cloned().collect();
            for r in &p.remove {
                if !keys.is_empty() {
                    live.remove(&keys[*r as usize % keys.len()]);
                }
            }
            for r in &p.narrow {
                if let Some(nets) = keys.get(*r as usize % keys.len().max(1)).and_then(|k| live.get_mut(k)) && nets.len() > 1 {
                    nets.remove(0);
                }
            }
            for nets in &p.add {
                live.insert(format!("r{next_uid}"), nets.iter().map(|n| net(*n)).collect());
                next_uid += 1;
            }
            let next = sorted_aggregate(&live.values().flatten().copied().collect::<Vec<_>>());
            let held_digest = jpki_access::domain::digest::digest_bytes(jpki_access::planner::children::cidr_text(&next).as_bytes());
            let release = release_next.then_some(held_digest.as_str());
            let outcome = decide(HoldInput {
                policy: Some(&POLICY),
                published: published.as_ref(),
                previously_live: &previously_live,
                live: &live,
                next: next.clone(),
                release,
                now,
            });
            if outcome.released.is_some() || round == 0 {
                released = live.clone();
            }
            // Everything published since the release belongs to what its removals are measured against.
            for (uid, nets) in &live {
                let entry = released.entry(uid.clone()).or_default();
                for n in nets {
                    if !entry.contains(n) {
                        entry.push(*n);
                    }
                }
            }
            // The oracle: what of the released set the published set no longer covers.
            // Counted in the registrations' own CIDRs (the policy's unit), each once.
            let mut baseline: Vec<IpNet> = released.values().flatten().copied().collect();
            baseline.sort();
            baseline.dedup();
            let removed = baseline.iter().filter(|n| !covered(n, &outcome.publish)).count();
            let affected = released.values().filter(|nets| nets.iter().any(|n| !covered(n, &outcome.publish))).count();
            let over = removed >= POLICY.min_cidrs as usize && removed * 100 >= POLICY.percent as usize * baseline.len().max(1) && affected >= 2;
            prop_assert!(!over, "round {round}: {removed} of {} released CIDRs ({affected} registrations) gone without a release", baseline.len());
            // Whatever is live is always published, held or not.
            for n in &next {
                prop_assert!(covered(n, &outcome.publish), "round {round}: live {n} not published");
            }
            // A person releases what is held, sometimes.
            release_next = outcome.hold.is_some() && p.release;
            previously_live = outcome.published_live.clone();
            published = Some(PublishedAllowlist {
                digest: String::new(),
                cidrs: outcome.publish,
                live_registrations: outcome.published_live.len(),
                baseline: outcome.baseline,
            });
        }
    }
}

/// The two inputs of the issue, spelled out: 49 removals per pass with `minCidrs: 50`, and 60 removals with 59
/// additions in one pass.
#[test]
fn sliced_and_offset_removals_are_held() {
    let policy = MassRevocationHold { percent: 10, min_cidrs: 50, window_hours: None };
    let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
    let run = |passes: &[(usize, usize)]| -> Vec<bool> {
        let mut live: LiveSet = (0..300u16).map(|i| (format!("r{i}"), vec![net(i)])).collect();
        let mut previously_live = LiveSet::new();
        let mut published: Option<PublishedAllowlist> = None;
        let mut next_new = 1000u16;
        let mut held = Vec::new();
        for (round, (remove, add)) in std::iter::once((0, 0)).chain(passes.iter().copied()).enumerate() {
            let keys: Vec<String> = live.keys().take(remove).cloned().collect();
            for k in keys {
                live.remove(&k);
            }
            for _ in 0..add {
                live.insert(format!("n{next_new}"), vec![net(next_new % 600 + 600)]);
                next_new += 1;
            }
            let next = sorted_aggregate(&live.values().flatten().copied().collect::<Vec<_>>());
            let outcome = decide(HoldInput {
                policy: Some(&policy),
                published: published.as_ref(),
                previously_live: &previously_live,
                live: &live,
                next,
                release: None,
                now,
            });
            if round > 0 {
                held.push(outcome.hold.is_some());
            }
            previously_live = outcome.published_live.clone();
            published = Some(PublishedAllowlist {
                digest: String::new(),
                cidrs: outcome.publish,
                live_registrations: outcome.published_live.len(),
                baseline: outcome.baseline,
            });
        }
        held
    };
    assert_eq!(run(&[(49, 0), (49, 0)]), [false, true], "49 + 49 from the same baseline reach 50");
    assert_eq!(run(&[(60, 59)]), [true], "additions do not offset removals");
    assert_eq!(run(&[(1, 0), (1, 0), (1, 0)]), [false, false, false], "single revocations stay immediate");
}
