//! `CidrString`: a source network as written in a form, with the server-side CEL checks that the Kubernetes
//! IP/CIDR library can express. The full rules (and the friendlier messages) are in `crate::domain::cidr`.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A CIDR such as `192.0.2.0/28` or `2001:db8:10::/56`, in canonical form.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct CidrString(pub String);

impl CidrString {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CidrString {
    fn from(s: &str) -> Self {
        CidrString(s.to_string())
    }
}

impl std::fmt::Display for CidrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The special-purpose ranges of `crate::domain::cidr` that the Kubernetes CIDR library does not know by itself
/// (it knows loopback, link-local, multicast and the like through `isGlobalUnicast`): refused by the API server too.
const SPECIAL_PURPOSE_RULE: &str = "!isCIDR(self) || ![\
     '100.64.0.0/10', '198.18.0.0/15', '192.0.0.0/24', '192.88.99.0/24', \
     '64:ff9b::/96', '64:ff9b:1::/48', '::/96', '2001::/23', '2002::/16'\
     ].exists(r, cidr(r).ip().family() == cidr(self).ip().family() && (cidr(r).containsCIDR(self) || cidr(self).containsCIDR(r)))";

impl JsonSchema for CidrString {
    fn schema_name() -> Cow<'static, str> {
        "CidrString".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Each rule guards with isCIDR so that a malformed value gets one clear message, not several.
        json_schema!({
            "type": "string",
            "maxLength": 43,
            "description": "Source network, IPv4 or IPv6, in canonical CIDR form (host bits clear).",
            "x-kubernetes-validations": [
                {
                    "rule": "isCIDR(self)",
                    "message": "must be a CIDR such as 192.0.2.0/28 or 2001:db8::/48 (no leading zeros, zone ID or IPv4-mapped IPv6)"
                },
                {
                    "rule": "!isCIDR(self) || string(cidr(self).masked()) == self",
                    "message": "must be a network address in canonical form: host bits set or non-canonical spelling"
                },
                {
                    "rule": "!isCIDR(self) || cidr(self).ip().isGlobalUnicast()",
                    "message": "must be a global unicast network: not unspecified, loopback, link-local, multicast or broadcast"
                },
                {
                    "rule": SPECIAL_PURPOSE_RULE,
                    "message": "must not overlap a special-purpose range: shared 100.64.0.0/10, benchmarking 198.18.0.0/15, IETF 192.0.0.0/24 and 2001::/23, 6to4 2002::/16 and 192.88.99.0/24, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, IPv4-compatible ::/96 (see jpki-access validate for why)"
                },
                {
                    "rule": "!isCIDR(self) || (cidr(self).ip().family() == 4 ? cidr(self).prefixLength() >= 8 : cidr(self).prefixLength() >= 16)",
                    "message": "prefix is too broad: at most /8 for IPv4 and /16 for IPv6 (the environment's policy may require narrower)"
                }
            ]
        })
    }
}

/// Schema of a list of CIDRs the controller writes into a status (at most 256): plain strings, without the CEL rules
/// of [`CidrString`]. Nobody but the controller writes a status, what it writes passed those rules as a spec, and the
/// rules' cost in a nested status list would exceed the API server's budget for the CRD.
pub fn status_cidrs_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {"type": "string", "maxLength": 43}
    })
}
