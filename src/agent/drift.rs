//! Drift: a change to the agent's table made behind its back (`nft add element` by hand, a rule inserted, a chain
//! added). The tag in the `applied` set says what the agent applied, not what the kernel holds now,
//! so on every resync the agent lists its table and compares:
//!
//! - the **set elements**, as merged address ranges, with the allowlist (the kernel may show a network as a prefix,
//!   a single address or a range; merging makes the forms comparable);
//! - **everything else** (sets' types and flags, chains, rules), as a fingerprint: the listing without handles and
//!   set elements, recorded after each apply from a terse listing (`nft -t`, which omits elements and so costs no
//!   set dump).
//!
//! The full listing on a resync costs a set dump (see BENCHMARKS.md); it runs once per resync period (60 s by
//! default), never on the change path.

use crate::domain::cidr::{Family, interval};
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;

/// Inclusive address ranges of one family, sorted and merged (adjacent or overlapping ranges joined).
type Ranges = Vec<(Family, u128, u128)>;

/// What differs between the kernel's table and what the agent applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Drift {
    /// Merged ranges the kernel admits that the allowlist does not hold (the dangerous direction).
    pub extra: usize,
    /// Merged ranges of the allowlist the kernel does not hold.
    pub missing: usize,
    /// Sets, chains or rules differ from the ones applied.
    pub rules_changed: bool,
}

impl Drift {
    pub fn is_none(&self) -> bool {
        self == &Drift::default()
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} range(s) not in the allowlist, {} range(s) of the allowlist missing", self.extra, self.missing)?;
        if self.rules_changed {
            write!(f, ", sets/chains/rules changed")?;
        }
        Ok(())
    }
}

/// The table as listed by `nft -j list table`: its set elements by role and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Elements of the allow sets (`allow_v4`, `allow_v6`), merged.
    pub allowed: Ranges,
    /// Elements of the forward-destination sets (`forward_v4`, `forward_v6`), merged.
    pub forward: Ranges,
    /// Elements of any other set (a set the agent never writes: all of them are extra).
    pub other: Ranges,
    pub fingerprint: String,
}

/// Reads `nft -j list table` output (with or without `-t`). Elements of every set of the table count: a rogue set
/// is caught by the fingerprint, a rogue element of ours by the ranges.
pub fn parse_listing(json: &str) -> Result<Listed, String> {
    use crate::planner::nft::{FORWARD_V4, FORWARD_V6, SET_APPLIED, SET_V4, SET_V6};
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft listing is not JSON: {e}"))?;
    let items = doc.get("nftables").and_then(Value::as_array).ok_or("nft listing has no \"nftables\" array")?;
    let (mut allowed, mut forward, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let mut shape = Vec::new();
    for item in items {
        if item.get("metainfo").is_some() {
            continue;
        }
        let mut item = item.clone();
        if let Some(set) = item.get_mut("set").and_then(Value::as_object_mut) {
            let name = set.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let into = match name.as_str() {
                // The agent's tag (no rule refers to it; a rule that did would change the fingerprint).
                n if n == SET_APPLIED => {
                    set.remove("elem");
                    strip_handles(&mut item);
                    shape.push(item);
                    continue;
                }
                n if n == SET_V4 || n == SET_V6 => &mut allowed,
                n if n == FORWARD_V4 || n == FORWARD_V6 => &mut forward,
                _ => &mut other,
            };
            for element in set.remove("elem").and_then(|e| e.as_array().cloned()).unwrap_or_default() {
                into.push(element_range(&element)?);
            }
        }
        strip_handles(&mut item);
        shape.push(item);
    }
    Ok(Listed { allowed: merge(allowed), forward: merge(forward), other: merge(other), fingerprint: Value::Array(shape).to_string() })
}

/// Compares a full listing with the sets applied (allowed sources, forward destinations) and the fingerprint
/// recorded after that apply.
pub fn compare(listed: &Listed, allowed: &[IpNet], forward: &[IpNet], fingerprint: Option<&str>) -> Drift {
    let ranges = |nets: &[IpNet]| merge(nets.iter().map(interval).collect());
    let (want_allowed, want_forward) = (ranges(allowed), ranges(forward));
    let extra = |listed: &Ranges, wanted: &Ranges| listed.iter().filter(|r| !wanted.contains(r)).count();
    Drift {
        extra: extra(&listed.allowed, &want_allowed) + extra(&listed.forward, &want_forward) + listed.other.len(),
        missing: extra(&want_allowed, &listed.allowed) + extra(&want_forward, &listed.forward),
        rules_changed: fingerprint.is_some_and(|f| f != listed.fingerprint),
    }
}

/// One element: `"10.0.1.5"`, `{"prefix": {"addr", "len"}}`, `{"range": [lo, hi]}`, or any of them wrapped in
/// `{"elem": {"val": ...}}` (elements with a timeout or comment).
fn element_range(element: &Value) -> Result<(Family, u128, u128), String> {
    let address =
        |v: &Value| -> Result<IpAddr, String> { v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| format!("unexpected set element address {v}")) };
    let of = |a: IpAddr| match a {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (Family::V6, u128::from(a)),
    };
    if let Some(inner) = element.get("elem").and_then(|e| e.get("val")) {
        return element_range(inner);
    }
    if let Some(prefix) = element.get("prefix") {
        let addr = address(&prefix["addr"])?;
        let len = prefix["len"].as_u64().and_then(|l| u8::try_from(l).ok()).ok_or("prefix without a length")?;
        let net = IpNet::new(addr, len).map_err(|e| format!("prefix {addr}/{len}: {e}"))?;
        return Ok(interval(&net.trunc()));
    }
    if let Some([lo, hi]) = element.get("range").and_then(Value::as_array).map(Vec::as_slice) {
        let ((f, lo), (g, hi)) = (of(address(lo)?), of(address(hi)?));
        return if f == g { Ok((f, lo, hi)) } else { Err("range across address families".into()) };
    }
    let (f, a) = of(address(element)?);
    Ok((f, a, a))
}

fn merge(mut ranges: Ranges) -> Ranges {
    ranges.sort();
    let mut out: Ranges = Vec::with_capacity(ranges.len());
    for (f, lo, hi) in ranges {
        match out.last_mut() {
            Some((lf, _, lhi)) if *lf == f && lo <= lhi.saturating_add(1) => *lhi = (*lhi).max(hi),
            _ => out.push((f, lo, hi)),
        }
    }
    out
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("handle");
            map.values_mut().for_each(strip_handles);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Real `nft -j list table` output of nft 1.0.6 (Debian 12), shortened to one rule.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "t", "handle": 1}},
        {"set": {"family": "inet", "name": "allow_v4", "table": "t", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
                 "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "10.0.1.5", {"prefix": {"addr": "192.0.2.0", "len": 25}}]}},
        {"set": {"family": "inet", "name": "allow_v6", "table": "t", "type": "ipv6_addr", "handle": 3, "flags": ["interval"],
                 "elem": [{"prefix": {"addr": "2001:db8::", "len": 48}}, "2001:db8:1::10"]}},
        {"chain": {"family": "inet", "table": "t", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 4, "expr": [
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@allow_v4"}}, {"drop": null}]}}]}"#;

    fn nets(text: &[&str]) -> Vec<IpNet> {
        text.iter().map(|t| t.parse().unwrap()).collect()
    }

    const APPLIED: [&str; 5] = ["10.0.0.0/24", "10.0.1.5/32", "192.0.2.0/25", "2001:db8::/48", "2001:db8:1::10/128"];

    #[test]
    fn the_table_as_applied_shows_no_drift_and_the_terse_listing_has_the_same_fingerprint() {
        let listed = parse_listing(LISTING).unwrap();
        let applied = nets(&APPLIED);
        // A terse listing (nft -t) of the same table, with other handles (the table was replaced since).
        let terse = LISTING.replace(r#""handle": 4"#, r#""handle": 9"#);
        let terse: Value = serde_json::from_str(&terse).unwrap();
        let mut terse = terse.clone();
        for item in terse["nftables"].as_array_mut().unwrap() {
            if let Some(set) = item.get_mut("set").and_then(Value::as_object_mut) {
                set.remove("elem");
            }
        }
        let fingerprint = parse_listing(&terse.to_string()).unwrap().fingerprint;
        assert_eq!(compare(&listed, &applied, &[], Some(&fingerprint)), Drift::default());
    }

    #[test]
    fn an_element_added_by_hand_is_extra_and_a_removed_one_missing() {
        let rogue = LISTING.replace(r#""10.0.1.5","#, r#""10.0.1.5", {"range": ["172.16.0.1", "172.16.0.9"]},"#);
        let listed = parse_listing(&rogue).unwrap();
        let drift = compare(&listed, &nets(&APPLIED), &[], None);
        assert_eq!(drift, Drift { extra: 1, missing: 0, rules_changed: false });
        assert_eq!(drift.to_string(), "1 range(s) not in the allowlist, 0 range(s) of the allowlist missing");

        let more = nets(&[&APPLIED[..], &["198.51.100.0/24"]].concat());
        assert_eq!(compare(&parse_listing(LISTING).unwrap(), &more, &[], None), Drift { extra: 0, missing: 1, rules_changed: false });
        // The allowed sources where the forward destinations should be: extra in one role, missing in the other.
        assert_eq!(compare(&parse_listing(LISTING).unwrap(), &[], &nets(&APPLIED), None), Drift { extra: 5, missing: 5, rules_changed: false });
    }

    #[test]
    fn a_widened_element_is_extra_even_when_it_contains_an_allowed_network() {
        // 10.0.0.0/23 in place of 10.0.0.0/24 swallows 10.0.1.5: one merged range the allowlist does not have, and
        // neither of the two it has.
        let wider = LISTING.replace(r#""len": 24"#, r#""len": 23"#);
        assert_eq!(compare(&parse_listing(&wider).unwrap(), &nets(&APPLIED), &[], None), Drift { extra: 1, missing: 2, rules_changed: false });
    }

    #[test]
    fn the_same_addresses_in_other_forms_are_no_drift() {
        // The kernel may show two adjacent networks as one range or a /32 as an address.
        let listing = LISTING.replace(
            r#"{"prefix": {"addr": "10.0.0.0", "len": 24}}, "10.0.1.5""#,
            r#"{"range": ["10.0.0.0", "10.0.0.255"]}, {"elem": {"val": {"prefix": {"addr": "10.0.1.5", "len": 32}}, "comment": "x"}}"#,
        );
        assert!(compare(&parse_listing(&listing).unwrap(), &nets(&APPLIED), &[], None).is_none());
    }

    #[test]
    fn a_rule_inserted_by_hand_changes_the_fingerprint() {
        let applied = parse_listing(LISTING).unwrap().fingerprint;
        let inserted = LISTING.replace(
            r#"{"drop": null}]}}]}"#,
            r#"{"drop": null}]}}, {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 7, "expr": [{"accept": null}]}}]}"#,
        );
        assert_eq!(compare(&parse_listing(&inserted).unwrap(), &nets(&APPLIED), &[], Some(&applied)), Drift { extra: 0, missing: 0, rules_changed: true });
    }

    #[test]
    fn malformed_listings_are_errors_not_silence() {
        assert!(parse_listing("not json").is_err());
        assert!(parse_listing("{}").is_err());
        assert!(parse_listing(&LISTING.replace("10.0.1.5", "10.0.1.x")).unwrap_err().contains("10.0.1.x"));
    }
}
