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
                    "rule": "!isCIDR(self) || (cidr(self).ip().family() == 4 ? cidr(self).prefixLength() >= 8 : cidr(self).prefixLength() >= 16)",
                    "message": "prefix is too broad: at most /8 for IPv4 and /16 for IPv6 (the environment's policy may require narrower)"
                }
            ]
        })
    }
}
