//! The chart's ValidatingAdmissionPolicies on the real API server: an approval must be recorded by the requesting
//! user, and (separation of duties) not by the user who last changed the registration. The policies come from
//! charts/jpki-access/templates; the test binds them to its own namespace only, so no other test is affected.
#![cfg(feature = "cluster-tests")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::{AccessRegistration, Decision};
use jpki_access::domain::approve::approval_for;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

/// `kubectl create -f -` of `object`, as user `user` (the admin impersonates; "admin" is the admin itself).
fn create_as(user: &str, object: &serde_json::Value) -> Output {
    create_as_with(user, object, false)
}

/// The same; with `dry_run` the API server runs admission but stores nothing.
fn create_as_with(user: &str, object: &serde_json::Value, dry_run: bool) -> Output {
    let mut impersonate = if user == "admin" { vec![] } else { vec!["--as", user] };
    if dry_run {
        impersonate.push("--dry-run=server");
    }
    let mut child = Command::new(&control_plane().kubectl)
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .arg("create")
        .args(impersonate)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Removes the test's policies and bindings even when the test fails half-way.
struct Cleanup(Vec<(String, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = kubectl(&["delete", kind, name, "--ignore-not-found"]);
        }
    }
}

#[tokio::test]
async fn approvals_are_recorded_by_the_requester_and_not_by_the_registrations_author() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "admission").await;
    kubectl_ok(&["label", "namespace", &ns.name, &format!("jpki-admission-test={}", ns.name)]);
    let templates = repo_root().join("charts/jpki-access/templates");
    let mut cleanup = Cleanup(Vec::new());

    // The policies of the chart; bindings of this test, limited to its namespace.
    let mut policies = Vec::new();
    for file in ["admission-policy.yaml", "separation-of-duties.yaml"] {
        // The policies are plain YAML inside one `{{- if }}` of the chart: drop the template lines.
        let text: String = std::fs::read_to_string(templates.join(file)).unwrap().lines().filter(|l| !l.starts_with("{{")).map(|l| format!("{l}\n")).collect();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["kind"] == "ValidatingAdmissionPolicy" {
                policies.push(v);
            } else {
                assert_eq!(v["kind"], "ValidatingAdmissionPolicyBinding");
            }
        }
    }
    assert_eq!(policies.len(), 3);
    for policy in &policies {
        let name = policy["metadata"]["name"].as_str().unwrap().to_string();
        let out = create_as("admin", policy);
        assert!(out.status.success(), "{}", stderr(&out));
        cleanup.0.push(("validatingadmissionpolicy".into(), name.clone()));
        let mut binding = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": format!("{name}-{}", ns.name)},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {"matchLabels": {"jpki-admission-test": ns.name}}}}});
        if policy["spec"].get("paramKind").is_some() {
            binding["spec"]["paramRef"] = json!({"selector": {}, "parameterNotFoundAction": "Allow"});
        }
        let out = create_as("admin", &binding);
        assert!(out.status.success(), "{}", stderr(&out));
        cleanup.0.push(("validatingadmissionpolicybinding".into(), format!("{name}-{}", ns.name)));
    }
    // Two people who may write forms and approvals here (RBAC is not what this test is about).
    let role = format!("jpki-admission-{}", ns.name);
    kubectl_ok(&["create", "clusterrole", &role, "--verb=get,list,create,update,patch", "--resource=accessapprovals.access.jpki.dev,accessregistrations.access.jpki.dev"]);
    kubectl_ok(&["create", "rolebinding", "people", "-n", &ns.name, &format!("--clusterrole={role}"), "--user=alice", "--user=bob"]);
    cleanup.0.push(("clusterrole".into(), role));

    let registration = |annotate: bool| {
        let mut r = json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
            "metadata": {"name": "r", "namespace": ns.name},
            "spec": {"verifierRef": "v", "environment": "Test", "connectionMethod": "Lgwan", "sourceCidrs": ["192.0.2.0/28"], "accessStartDate": "2026-04-01"}});
        if annotate {
            r["metadata"]["annotations"] = json!({"access.jpki.dev/last-changed-by": "bob"});
        }
        r
    };
    // The policies take effect a moment after they are created.
    eventually(Duration::from_secs(20), "the author policy in force", || async {
        stderr(&create_as_with("bob", &registration(false), true)).contains("access.jpki.dev/last-changed-by")
    })
    .await;
    let out = create_as("bob", &registration(true));
    assert!(out.status.success(), "bob records himself as the author: {}", stderr(&out));
    let reg: AccessRegistration = serde_json::from_value(registration(true)).unwrap();
    let approval = |by: &str| {
        let mut a = serde_json::to_value(approval_for(&reg, Decision::Approved, by, jiff::Timestamp::now(), None).unwrap()).unwrap();
        a["metadata"]["name"] = json!(format!("r-by-{}", by.replace('@', "-")));
        a
    };

    // The other two policies were created before the probe above succeeded; still, wait for each likewise.
    eventually(Duration::from_secs(20), "the approval policies in force", || async {
        stderr(&create_as_with("alice", &approval("bob"), true)).contains("must be the requesting user")
            && stderr(&create_as_with("bob", &approval("bob"), true)).contains("separation of duties")
    })
    .await;
    let forged = create_as("alice", &approval("bob"));
    assert!(stderr(&forged).contains("spec.approvedBy must be the requesting user (alice), not bob"), "{}", stderr(&forged));
    let own = create_as("bob", &approval("bob"));
    assert!(stderr(&own).contains("separation of duties: bob last changed registration r"), "{}", stderr(&own));
    let fine = create_as("alice", &approval("alice"));
    assert!(fine.status.success(), "a true approval by another person is accepted: {}", stderr(&fine));
    drop(cleanup);
}
