//! Helm (built from Go modules into target/testenv/helm by scripts/controlplane) against the test control plane,
//! and a release guard that uninstalls even when a test fails half-way (tests/chart.rs, tests/node_chart.rs).
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::*;
use std::path::PathBuf;
use std::process::Command;

/// The chart's admission policies: cluster-scoped, bound cluster-wide.
pub const POLICIES: [&str; 4] =
    ["jpki-access-approved-by-requester", "jpki-access-agent-writes-only-its-report", "jpki-access-controller-scope", "jpki-access-foreign-network-policies"];

/// The chart's cluster-scoped roles.
pub const CLUSTER_ROLES: [&str; 4] = ["jpki-access-controller", "jpki-access-viewer", "jpki-access-editor", "jpki-access-approver"];

pub fn helm_binary() -> PathBuf {
    let helm = repo_root().join("target/testenv/helm");
    assert!(helm.exists(), "{} missing: run scripts/controlplane build", helm.display());
    helm
}

/// Runs helm with the test control plane's kubeconfig; panics with its output when it fails.
pub fn helm(args: &[&str]) -> String {
    let out = helm_output(args);
    assert!(out.status.success(), "helm {args:?}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn helm_output(args: &[&str]) -> std::process::Output {
    Command::new(helm_binary())
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("jpki-helm-cache"))
        .output()
        .unwrap()
}

/// Cluster-scoped objects of an earlier run or of another test must not block an install.
pub fn remove_cluster_scoped_leftovers() {
    for role in CLUSTER_ROLES {
        let _ = kubectl(&["delete", "clusterrole", role, "--ignore-not-found"]);
    }
    let _ = kubectl(&["delete", "clusterrolebinding", "jpki-access-controller", "--ignore-not-found"]);
    for policy in POLICIES {
        let _ = kubectl(&["delete", "validatingadmissionpolicy,validatingadmissionpolicybinding", policy, "--ignore-not-found"]);
    }
}

/// Uninstalls the release `jpki` of `namespace` when dropped, even when an assertion failed: the chart's admission
/// policies bind cluster-wide and would refuse the approvals of later tests. Deletes `agent_namespace` too.
pub struct Uninstall {
    pub namespace: String,
    pub agent_namespace: String,
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = helm_output(&["uninstall", "jpki", "--namespace", &self.namespace]);
        for policy in POLICIES {
            let _ = kubectl(&["delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy, "--ignore-not-found"]);
        }
        let _ = kubectl(&["delete", "namespace", &self.agent_namespace, "--wait=false", "--ignore-not-found"]);
        // The API server stops enforcing a deleted policy a moment later: wait until an approval in someone
        // else's name passes admission again (dry run), so no later test meets the policy.
        let reg: jpki_access::api::AccessRegistration = serde_json::from_value(serde_json::json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration", "metadata": {"name": "probe", "namespace": self.namespace},
            "spec": {"verifierRef": "v", "environment": "Test", "connectionMethod": "Lgwan", "sourceCidrs": ["192.0.2.0/28"], "accessStartDate": "2026-04-01"}
        }))
        .unwrap();
        let mut reg = reg;
        reg.metadata.uid = Some("00000000-0000-4000-8000-0000000000c1".into());
        let approval =
            jpki_access::domain::approve::approval_for(&reg, jpki_access::api::Decision::Approved, "someone-else", jiff::Timestamp::now(), None).unwrap();
        let file = std::env::temp_dir().join(format!("jpki-chart-probe-{}.json", std::process::id()));
        std::fs::write(&file, serde_json::to_string(&approval).unwrap()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if kubectl(&["create", "--dry-run=server", "-f", file.to_str().unwrap()]).status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let _ = std::fs::remove_file(&file);
    }
}
