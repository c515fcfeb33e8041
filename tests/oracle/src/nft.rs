//! The oracle's own reading of a network namespace's nftables ruleset, from `nft -j list ruleset` (nft's JSON, not
//! jpki-access's text format): which verdict a new TCP connection from a source gets on its way in.
//!
//! Every table is read, not just the agent's: a rogue chain elsewhere counts. The evaluation walks the base chains
//! of the hooks a packet crosses (prerouting, then input or forward, then postrouting for forwarded packets) in
//! priority order, as the kernel does: an `accept` ends one base chain only, a `drop` or `reject` ends the packet.
//! Only the expressions a firewall of this kind uses are understood; anything else makes the read fail with the
//! rule named, so that the oracle never guesses.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where the packet goes after routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// To the node itself (the `input` hook).
    Local,
    /// Routed through the node (the `forward` hook).
    Forwarded,
}

/// The first packet (SYN) of a new TCP connection.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub port: u16,
    pub path: Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    Refused,
}

#[derive(Debug, Clone)]
struct Chain {
    family: String,
    table: String,
    name: String,
    /// (hook, priority, policy accepts) for a base chain.
    base: Option<(String, i64, bool)>,
    rules: Vec<Vec<Value>>,
}

/// A parsed ruleset.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    /// (family, table, name) -> elements as JSON values.
    sets: BTreeMap<(String, String, String), Vec<Value>>,
    chains: BTreeMap<(String, String, String), Chain>,
}

enum Flow {
    Continue,
    Accept,
    Drop,
    Return,
}

const HOOK_ORDER: [&str; 4] = ["prerouting", "input", "forward", "postrouting"];

impl Ruleset {
    /// Parses the output of `nft -j list ruleset` (or `list table`).
    pub fn parse(json: &str) -> Result<Ruleset, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft -j output is not JSON: {e}"))?;
        let items = doc.get("nftables").and_then(Value::as_array).ok_or("no \"nftables\" array")?;
        let mut out = Ruleset::default();
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).ok_or(format!("no {k} in {v}"));
        for item in items {
            if let Some(table) = item.get("table") {
                let family = text(table, "family")?;
                if !["inet", "ip", "ip6"].contains(&family.as_str()) {
                    return Err(format!("a table of family {family} ({table}): the oracle judges only inet, ip and ip6"));
                }
            } else if let Some(set) = item.get("set").or_else(|| item.get("map")) {
                if item.get("map").is_some() {
                    return Err(format!("a map ({set}): not understood"));
                }
                let elems = set.get("elem").and_then(Value::as_array).cloned().unwrap_or_default();
                out.sets.insert((text(set, "family")?, text(set, "table")?, text(set, "name")?), elems);
            } else if let Some(c) = item.get("chain") {
                let base = match c.get("hook").and_then(Value::as_str) {
                    Some(hook) => {
                        let prio = c.get("prio").and_then(Value::as_i64).ok_or(format!("base chain without a numeric prio: {c}"))?;
                        let policy = c.get("policy").and_then(Value::as_str).unwrap_or("accept");
                        Some((hook.to_string(), prio, policy == "accept"))
                    }
                    None => None,
                };
                let chain = Chain { family: text(c, "family")?, table: text(c, "table")?, name: text(c, "name")?, base, rules: Vec::new() };
                out.chains.insert((chain.family.clone(), chain.table.clone(), chain.name.clone()), chain);
            } else if let Some(r) = item.get("rule") {
                let key = (text(r, "family")?, text(r, "table")?, text(r, "chain")?);
                let expr = r.get("expr").and_then(Value::as_array).cloned().ok_or(format!("rule without expr: {r}"))?;
                out.chains.get_mut(&key).ok_or(format!("rule of an unknown chain: {r}"))?.rules.push(expr);
            }
        }
        Ok(out)
    }

    /// The verdict on `packet`.
    pub fn verdict(&self, packet: &Packet) -> Result<Verdict, String> {
        let v6 = packet.source.is_ipv6();
        let hooks: &[&str] = match packet.path {
            Path::Local => &["prerouting", "input"],
            Path::Forwarded => &["prerouting", "forward", "postrouting"],
        };
        let mut bases: Vec<&Chain> = self
            .chains
            .values()
            .filter(|c| c.family == "inet" || c.family == if v6 { "ip6" } else { "ip" })
            .filter(|c| c.base.as_ref().is_some_and(|(hook, _, _)| hooks.contains(&hook.as_str())))
            .collect();
        let stage = |c: &Chain| c.base.as_ref().map(|(h, p, _)| (HOOK_ORDER.iter().position(|x| x == h), *p));
        bases.sort_by_key(|c| stage(c));
        for chain in bases {
            let accepts_by_policy = chain.base.as_ref().is_some_and(|b| b.2);
            match self.run(chain, packet, 0)? {
                Flow::Drop => return Ok(Verdict::Refused),
                Flow::Accept => {}
                Flow::Continue | Flow::Return if !accepts_by_policy => return Ok(Verdict::Refused),
                Flow::Continue | Flow::Return => {}
            }
        }
        Ok(Verdict::Admitted)
    }

    fn run(&self, chain: &Chain, packet: &Packet, depth: usize) -> Result<Flow, String> {
        if depth > 16 {
            return Err(format!("jumps nested deeper than 16 from chain {}", chain.name));
        }
        'rules: for rule in &chain.rules {
            for expr in rule {
                let Some((kind, body)) = expr.as_object().and_then(|o| o.iter().next()) else {
                    return Err(format!("an expression that is not an object: {expr}"));
                };
                match kind.as_str() {
                    "match" => {
                        if !self.matches(chain, body, packet).map_err(|e| format!("{e} (chain {}, rule {rule:?})", chain.name))? {
                            continue 'rules;
                        }
                    }
                    "counter" | "log" => {}
                    "accept" => return Ok(Flow::Accept),
                    "drop" | "reject" => return Ok(Flow::Drop),
                    "return" => return Ok(Flow::Return),
                    "continue" => {}
                    "jump" | "goto" => {
                        let target = body.get("target").and_then(Value::as_str).ok_or(format!("{kind} without target: {body}"))?;
                        let key = (chain.family.clone(), chain.table.clone(), target.to_string());
                        let next = self.chains.get(&key).ok_or(format!("{kind} to a missing chain {target}"))?;
                        match self.run(next, packet, depth + 1)? {
                            Flow::Accept => return Ok(Flow::Accept),
                            Flow::Drop => return Ok(Flow::Drop),
                            Flow::Continue | Flow::Return if kind == "goto" => return Ok(Flow::Return),
                            Flow::Continue | Flow::Return => continue 'rules,
                        }
                    }
                    other => return Err(format!("expression {other} not understood (chain {}, rule {rule:?})", chain.name)),
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Whether a `match` holds for the packet. A payload of another protocol than the packet's never matches,
    /// whatever the operator (nft adds that dependency itself).
    fn matches(&self, chain: &Chain, body: &Value, packet: &Packet) -> Result<bool, String> {
        let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
        let left = body.get("left").ok_or("match without left")?;
        let right = body.get("right").ok_or("match without right")?;
        let v6 = packet.source.is_ipv6();
        let value: Value = if let Some(p) = left.get("payload") {
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or_default();
            let field = p.get("field").and_then(Value::as_str).unwrap_or_default();
            match (protocol, field) {
                ("ip", _) if v6 => return Ok(false),
                ("ip6", _) if !v6 => return Ok(false),
                ("ip" | "ip6", "saddr") => Value::String(packet.source.to_string()),
                ("ip" | "ip6", "daddr") => Value::String(packet.destination.to_string()),
                ("tcp" | "th", "dport") => Value::from(packet.port),
                ("udp" | "sctp" | "dccp", _) => return Ok(false),
                _ => return Err(format!("payload {protocol} {field} not understood")),
            }
        } else if let Some(m) = left.get("meta") {
            match m.get("key").and_then(Value::as_str).unwrap_or_default() {
                "l4proto" => Value::from("tcp"),
                "nfproto" => Value::from(if v6 { "ipv6" } else { "ipv4" }),
                key => return Err(format!("meta {key} not understood")),
            }
        } else if let Some(ct) = left.get("ct") {
            match ct.get("key").and_then(Value::as_str).unwrap_or_default() {
                "state" => Value::from("new"),
                key => return Err(format!("ct {key} not understood")),
            }
        } else {
            return Err(format!("left side {left} not understood"));
        };
        let hit = self.contains(chain, right, &value)?;
        match op {
            "==" | "in" => Ok(hit),
            "!=" => Ok(!hit),
            other => Err(format!("operator {other} not understood")),
        }
    }

    /// Whether `value` (an address, a port or a keyword) is matched by `right`.
    fn contains(&self, chain: &Chain, right: &Value, value: &Value) -> Result<bool, String> {
        if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
            let key = (chain.family.clone(), chain.table.clone(), name.to_string());
            let elems = self.sets.get(&key).ok_or(format!("a missing set @{name}"))?;
            return any(elems, |e| self.contains(chain, e, value));
        }
        if let Some(items) = right.get("set").and_then(Value::as_array).or_else(|| right.as_array()) {
            return any(items, |e| self.contains(chain, e, value));
        }
        if let Some(elem) = right.get("elem") {
            return self.contains(chain, elem.get("val").ok_or("elem without val")?, value);
        }
        if let Some(prefix) = right.get("prefix") {
            let (Some(addr), Some(len)) = (prefix.get("addr").and_then(Value::as_str), prefix.get("len").and_then(Value::as_u64)) else {
                return Err(format!("prefix not understood: {prefix}"));
            };
            let net: ipnet::IpNet = format!("{addr}/{len}").parse().map_err(|e| format!("prefix {addr}/{len}: {e}"))?;
            return Ok(address(value).is_some_and(|a| net.contains(&a)));
        }
        if let Some([lo, hi]) = right.get("range").and_then(Value::as_array).map(Vec::as_slice) {
            return Ok(match (address(value), address(lo), address(hi)) {
                (Some(v), Some(lo), Some(hi)) => lo <= v && v <= hi,
                _ => match (value.as_u64(), lo.as_u64(), hi.as_u64()) {
                    (Some(v), Some(lo), Some(hi)) => lo <= v && v <= hi,
                    _ => return Err(format!("range not understood: {right}")),
                },
            });
        }
        match (address(value), address(right)) {
            (Some(a), Some(b)) => Ok(a == b),
            _ => Ok(value == right || (value == &Value::from("tcp") && right == &Value::from(6))),
        }
    }
}

fn address(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}

fn any(items: &[Value], mut f: impl FnMut(&Value) -> Result<bool, String>) -> Result<bool, String> {
    for item in items {
        if f(item)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "inet", "name": "t", "handle": 1}},
      {"set": {"family": "inet", "name": "a", "table": "t", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
        "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "10.1.0.1", {"range": ["10.2.0.1", "10.2.0.9"]}]}},
      {"chain": {"family": "inet", "table": "t", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 3, "expr": [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 4, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 443}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@a"}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 5, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [443, {"range": [8000, 8100]}]}}},
        {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}]}"#;

    fn local(source: &str, port: u16) -> Packet {
        Packet { source: source.parse().unwrap(), destination: "198.51.100.1".parse().unwrap(), port, path: Path::Local }
    }

    #[test]
    fn sets_prefixes_ranges_and_the_final_drop() {
        let r = Ruleset::parse(LISTING).unwrap();
        for (src, port, want) in [
            ("10.0.0.7", 443, Verdict::Admitted),
            ("10.1.0.1", 443, Verdict::Admitted),
            ("10.1.0.2", 443, Verdict::Refused),
            ("10.2.0.9", 443, Verdict::Admitted),
            ("10.2.0.10", 443, Verdict::Refused),
            ("10.9.9.9", 8050, Verdict::Refused),
            ("10.9.9.9", 8443, Verdict::Admitted),
            ("2001:db8::1", 443, Verdict::Refused),
        ] {
            assert_eq!(r.verdict(&local(src, port)).unwrap(), want, "{src}:{port}");
        }
    }

    #[test]
    fn no_table_admits_and_a_forward_only_table_leaves_local_traffic_alone() {
        assert_eq!(Ruleset::parse(r#"{"nftables": []}"#).unwrap().verdict(&local("10.9.9.9", 443)).unwrap(), Verdict::Admitted);
        let fwd = LISTING.replace("\"hook\": \"input\"", "\"hook\": \"forward\"");
        let r = Ruleset::parse(&fwd).unwrap();
        assert_eq!(r.verdict(&local("10.9.9.9", 443)).unwrap(), Verdict::Admitted);
        let forwarded = Packet { path: Path::Forwarded, ..local("10.9.9.9", 443) };
        assert_eq!(r.verdict(&forwarded).unwrap(), Verdict::Refused);
    }

    #[test]
    fn a_policy_drop_refuses_and_an_accept_in_one_table_does_not_overrule_a_drop_in_another() {
        let dropping = LISTING.replace("\"policy\": \"accept\"", "\"policy\": \"drop\"");
        assert_eq!(Ruleset::parse(&dropping).unwrap().verdict(&local("10.9.9.9", 22)).unwrap(), Verdict::Refused);
        let other = r#"{"nftables": [{"table": {"family": "ip", "name": "u"}},
          {"chain": {"family": "ip", "table": "u", "name": "c", "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}},
          {"rule": {"family": "ip", "table": "u", "chain": "c", "expr": [{"accept": null}]}},
          {"chain": {"family": "ip", "table": "u", "name": "d", "type": "filter", "hook": "input", "prio": 10, "policy": "drop"}}]}"#;
        assert_eq!(Ruleset::parse(other).unwrap().verdict(&local("10.0.0.7", 443)).unwrap(), Verdict::Refused);
        assert_eq!(Ruleset::parse(other).unwrap().verdict(&local("2001:db8::1", 443)).unwrap(), Verdict::Admitted);
    }

    #[test]
    fn what_is_not_understood_is_an_error_not_a_guess() {
        let limit = LISTING.replace("{\"counter\": {\"packets\": 0, \"bytes\": 0}}", "{\"limit\": {\"rate\": 1}}");
        let err = Ruleset::parse(&limit).unwrap().verdict(&local("10.9.9.9", 443)).unwrap_err();
        assert!(err.contains("limit"), "{err}");
        assert!(Ruleset::parse(r#"{"nftables": [{"table": {"family": "netdev", "name": "x"}}]}"#).is_err());
    }

    #[test]
    fn jumps_and_negation() {
        let text = r#"{"nftables": [{"table": {"family": "inet", "name": "t"}},
          {"chain": {"family": "inet", "table": "t", "name": "in", "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
          {"rule": {"family": "inet", "table": "t", "chain": "in", "expr": [
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.1"}}, {"jump": {"target": "j"}}]}},
          {"chain": {"family": "inet", "table": "t", "name": "j"}},
          {"rule": {"family": "inet", "table": "t", "chain": "j", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"drop": null}]}}]}"#;
        let r = Ruleset::parse(text).unwrap();
        assert_eq!(r.verdict(&local("10.0.0.1", 443)).unwrap(), Verdict::Admitted);
        assert_eq!(r.verdict(&local("10.0.0.2", 443)).unwrap(), Verdict::Refused);
    }
}
