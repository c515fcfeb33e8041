//! From one allowlist to the next as a few element changes of the kernel's interval sets (pure; the agent sends
//! them with `netlink`).
//!
//! An interval set holds each network `a..=b` as two elements, as nft writes it: the key `a` (a start) and the key
//! `b + 1` flagged as an interval end. Two adjacent networks share a key, once as an end and once as a start.
//!
//! The change is computed per network, as nft's own `delete element` and `add element` do: a network in the old
//! list only loses both its elements, a network in the new list only gains both, and the networks of both lists
//! are not touched. A finer diff (per element, keeping an end that two networks share) is not possible: the kernel
//! checks every insertion against the tree as it is at that moment, and splitting a network needs an end inserted
//! before a kept end, which it refuses as an overlap (seen in tests/netlink_deltas.rs). Deletions first, then each
//! added network's start and end in ascending order, keeps every intermediate tree a set of disjoint intervals.
//! Both lists are sorted, so the diff is a merge: O(n + m).

use super::netlink::{Change, Element};
use crate::planner::nft::{SET_APPLIED, SET_V4, SET_V6, tag_comment, tag_key};
use ipnet::IpNet;
use std::cmp::Ordering;

/// A network as the kernel's interval: first address and the address after its last, or None when it reaches
/// the family's last address (its interval would have no end element; nft marks it open in user data, and the
/// agent replaces the whole table instead; the forms' rules never admit such a network: it lies in reserved space).
fn interval(net: &IpNet) -> Option<(u128, u128)> {
    let (start, last, max) = match net {
        IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())), u128::from(u32::MAX)),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast()), u128::MAX),
    };
    (last != max).then(|| (start, last + 1))
}

/// The networks of `old` not in `new` (to delete) and of `new` not in `old` (to add), as intervals; both lists
/// of one family, sorted and disjoint. None when a network has no end (see [`interval`]).
#[allow(clippy::type_complexity)]
pub fn diff(old: &[IpNet], new: &[IpNet]) -> Option<(Vec<(u128, u128)>, Vec<(u128, u128)>)> {
    let (old, new): (Vec<_>, Vec<_>) = (old.iter().map(interval).collect::<Option<_>>()?, new.iter().map(interval).collect::<Option<_>>()?);
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            Ordering::Less => {
                removed.push(old[i]);
                i += 1;
            }
            Ordering::Greater => {
                added.push(new[j]);
                j += 1;
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    removed.extend_from_slice(&old[i..]);
    added.extend_from_slice(&new[j..]);
    Some((removed, added))
}

/// The two elements of each interval, in order, for a set of addresses `width` bytes long (4 or 16).
pub fn elements(intervals: &[(u128, u128)], width: usize) -> Vec<Element> {
    let key = |k: u128| k.to_be_bytes()[16 - width..].to_vec();
    intervals
        .iter()
        .flat_map(|&(start, end)| [Element { key: key(start), end: false, comment: None }, Element { key: key(end), end: true, comment: None }])
        .collect()
}

/// The one batch that turns the table tagged `tags.0` holding `old` into the table tagged `tags.1` holding `new`
/// (both sorted and disjoint, either family): deletions first (an element removed and added back in one batch
/// would otherwise collide), then additions, the tag's element replaced last. None when a set would go from empty
/// to not empty or back (nft writes a leading interval end for a set's first range, which the agent does not
/// track), when a network reaches its family's last address, or when more than `max_elements` elements change.
pub fn changes(old: &[IpNet], new: &[IpNet], tags: (&str, &str), max_elements: usize) -> Option<Vec<Change>> {
    let (mut deletions, mut additions, mut count) = (Vec::new(), Vec::new(), 0);
    for (set, v4, width) in [(SET_V4, true, 4), (SET_V6, false, 16)] {
        let family = |nets: &[IpNet]| nets.iter().filter(|n| matches!(n, IpNet::V4(_)) == v4).copied().collect::<Vec<_>>();
        let (old, new) = (family(old), family(new));
        if old.is_empty() != new.is_empty() {
            return None;
        }
        let (removed, added) = diff(&old, &new)?;
        count += 2 * (removed.len() + added.len());
        let change = |add: bool, list: &[(u128, u128)]| Change { set: set.into(), add, elements: elements(list, width) };
        if !removed.is_empty() {
            deletions.push(change(false, &removed));
        }
        if !added.is_empty() {
            additions.push(change(true, &added));
        }
    }
    if count > max_elements {
        return None;
    }
    deletions.push(Change { set: SET_APPLIED.into(), add: false, elements: vec![tag_element(tags.0)] });
    deletions.extend(additions);
    deletions.push(Change { set: SET_APPLIED.into(), add: true, elements: vec![tag_element(tags.1)] });
    Some(deletions)
}

/// The element of [`SET_APPLIED`] for `tag`.
pub fn tag_element(tag: &str) -> Element {
    Element { key: tag_key(tag).octets().to_vec(), end: false, comment: Some(tag_comment(tag)) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn adjacent_networks_share_a_key_as_an_end_then_a_start() {
        let (_, added) = diff(&[], &nets(&["11.1.1.0/24", "11.1.2.0/23"])).unwrap();
        let keys: Vec<(Vec<u8>, bool)> = elements(&added, 4).into_iter().map(|e| (e.key, e.end)).collect();
        // As `nft --debug=netlink` shows nft's own elements for these two networks.
        assert_eq!(keys, vec![(vec![11, 1, 1, 0], false), (vec![11, 1, 2, 0], true), (vec![11, 1, 2, 0], false), (vec![11, 1, 4, 0], true)]);
    }

    #[test]
    fn a_network_up_to_the_last_address_has_no_end_and_is_left_to_a_full_replace() {
        assert!(diff(&[], &nets(&["255.255.255.0/24"])).is_none());
        assert!(diff(&nets(&["ffff::/16"]), &[]).is_none());
        assert!(diff(&[], &nets(&["2001:db8::/32"])).is_some());
    }

    #[test]
    fn a_network_that_grows_is_deleted_and_added_whole_and_the_others_are_not_touched() {
        let (removed, added) = diff(&nets(&["10.0.0.0/24", "10.9.0.0/16"]), &nets(&["10.0.0.0/23", "10.9.0.0/16"])).unwrap();
        assert_eq!(removed, vec![(0x0a00_0000, 0x0a00_0100)]);
        assert_eq!(added, vec![(0x0a00_0000, 0x0a00_0200)]);
    }

    proptest! {
        /// The diff is the set difference both ways, whatever the two lists.
        #[test]
        fn the_diff_is_the_set_difference(a in proptest::collection::btree_set((0u32..4096, 20u8..=32), 0..60), b in proptest::collection::btree_set((0u32..4096, 20u8..=32), 0..60)) {
            let list = |s: &BTreeSet<(u32, u8)>| {
                let raw: Vec<IpNet> = s.iter().map(|(a, p)| IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 | (a << 8)), *p).unwrap().trunc())).collect();
                IpNet::aggregate(&raw)
            };
            let (old, new) = (list(&a), list(&b));
            let (removed, added) = diff(&old, &new).unwrap();
            let (o, n): (BTreeSet<_>, BTreeSet<_>) = (old.iter().filter_map(interval).collect(), new.iter().filter_map(interval).collect());
            prop_assert_eq!(removed.iter().copied().collect::<BTreeSet<_>>(), o.difference(&n).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(added.iter().copied().collect::<BTreeSet<_>>(), n.difference(&o).copied().collect::<BTreeSet<_>>());
        }
    }
}
