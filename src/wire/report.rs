//! The firewall agents' heartbeats and reports: one `coordination.k8s.io/v1` Lease per node and environment,
//! renewed by the agent every heartbeat period, with the agent's report (a typed [`AgentReport`], as JSON) in an
//! annotation. One small object per node: its renewal is the heartbeat, and the report rides along.
//!
//! The controller reads them to count expected, in-sync, stale and missing agents. The chart's admission policy
//! lets an agent write only the Lease named for its own node (from its pod-bound token).

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use serde::{Deserialize, Serialize};

/// Label of the agents' Leases; its value is the environment (AccessEnvironment name).
pub const REPORT_LABEL: &str = "access.jpki.dev/agent-report";
/// Label naming the agent's node.
pub const NODE_LABEL: &str = "access.jpki.dev/node";
/// Annotation holding the report as JSON.
pub const REPORT_ANNOTATION: &str = "access.jpki.dev/agent-report";

/// The Lease of one agent.
pub fn lease_name(environment: &str, node: &str) -> String {
    format!("jpki-agent-{environment}-{node}")
}

/// What the kernel of the agent's node enforces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Enforcing {
    /// Nothing of ours: nftables could not be run or refused every ruleset.
    #[default]
    Nothing,
    /// No verified set yet: the protected ports are dropped for every source (the boot state without a set on disk).
    Closed,
    /// The last verified set persisted on the node, verified again at start (the API server not reached yet).
    Persisted,
    /// A verified set from the API server.
    Verified,
}

/// A set the agent refused, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefusedSet {
    /// `crate::wire::allowlist::Refusal::category`.
    pub reason: String,
    pub message: String,
    /// When it was refused (RFC 3339, UTC).
    pub at: String,
}

/// An agent's report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    pub environment: String,
    pub node: String,
    pub enforcing: Enforcing,
    /// Digest and serial of the verified set in force ("" and 0 while none).
    #[serde(default)]
    pub applied_digest: String,
    #[serde(default)]
    pub applied_serial: i64,
    /// The agent's readiness: a set (verified or closed) in force and its last nft call succeeded.
    pub ready: bool,
    /// The last failure of nftables ("" when the last call succeeded).
    #[serde(default)]
    pub error: String,
    /// The last published set refused (kept while the set in the API server is still refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedSet>,
    /// The last change made to the table behind the agent's back, and that it was replaced.
    #[serde(default)]
    pub drift: String,
}

/// The server-side apply body of an agent's Lease: renewed now, the report in its annotation.
pub fn lease_body(namespace: &str, report: &AgentReport, now: Timestamp, duration_seconds: i32) -> serde_json::Value {
    let name = lease_name(&report.environment, &report.node);
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {REPORT_LABEL: report.environment, NODE_LABEL: report.node, "app.kubernetes.io/managed-by": "jpki-access-agent"},
            "annotations": {REPORT_ANNOTATION: serde_json::to_string(report).unwrap_or_default()},
        },
        "spec": {
            "holderIdentity": report.node,
            "leaseDurationSeconds": duration_seconds,
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        }
    })
}

/// An agent's heartbeat as read back: its node, when it was last renewed, and its report.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub node: String,
    pub renewed: Option<Timestamp>,
    /// The report, or why the annotation could not be read (an agent that writes garbage is not in sync).
    pub report: Result<AgentReport, String>,
}

/// Reads an agent's Lease.
pub fn heartbeat(lease: &Lease) -> Heartbeat {
    let labels = lease.metadata.labels.as_ref();
    let spec = lease.spec.as_ref();
    let node = labels
        .and_then(|l| l.get(NODE_LABEL))
        .cloned()
        .or_else(|| spec.and_then(|s| s.holder_identity.clone()))
        .unwrap_or_else(|| lease.metadata.name.clone().unwrap_or_default());
    let renewed = spec.and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref())).map(|t| t.0);
    let report = match lease.metadata.annotations.as_ref().and_then(|a| a.get(REPORT_ANNOTATION)) {
        Some(text) => serde_json::from_str::<AgentReport>(text).map_err(|e| format!("annotation {REPORT_ANNOTATION} is not a report: {e}")),
        None => Err(format!("no annotation {REPORT_ANNOTATION}")),
    };
    Heartbeat { node, renewed, report }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_written_reads_back_as_the_same_report() {
        let report = AgentReport {
            environment: "production".into(),
            node: "edge-1".into(),
            enforcing: Enforcing::Verified,
            applied_digest: "sha256:00".into(),
            applied_serial: 7,
            ready: true,
            error: String::new(),
            refused: Some(RefusedSet { reason: "signature".into(), message: "m".into(), at: "2026-01-01T00:00:00Z".into() }),
            drift: String::new(),
        };
        let now: Timestamp = "2026-05-01T01:02:03.456789Z".parse().unwrap();
        let body = lease_body("jpki-system", &report, now, 30);
        assert_eq!(body["metadata"]["name"], "jpki-agent-production-edge-1");
        assert_eq!(body["spec"]["renewTime"], "2026-05-01T01:02:03.456789Z");
        let lease: Lease = serde_json::from_value(body).unwrap();
        let hb = heartbeat(&lease);
        assert_eq!(hb, Heartbeat { node: "edge-1".into(), renewed: Some(now), report: Ok(report) });
    }

    #[test]
    fn a_lease_without_a_readable_report_says_why() {
        let lease: Lease = serde_json::from_value(serde_json::json!({"metadata": {"name": "x", "annotations": {REPORT_ANNOTATION: "{"}}})).unwrap();
        assert!(heartbeat(&lease).report.unwrap_err().contains("is not a report"));
        assert_eq!(heartbeat(&lease).renewed, None);
    }
}
