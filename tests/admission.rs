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
    let mut args = vec!["create"];
    if user != "admin" {
        args.extend(["--as", user]);
    }
    if dry_run {
        args.push("--dry-run=server");
    }
    args.extend(["-f", "-"]);
    kubectl_piped(&args, Some(object))
}

/// The control plane's kubectl with the admin kubeconfig; `stdin` (if any) is written as JSON.
fn kubectl_piped(args: &[&str], stdin: Option<&serde_json::Value>) -> Output {
    let mut child = Command::new(&control_plane().kubectl)
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(object) = stdin {
        input.write_all(object.to_string().as_bytes()).unwrap();
    }
    drop(input);
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
            // The approval policies; the records' and the hold release's are tested below.
            let approval_policy = !v["metadata"]["name"].as_str().is_some_and(|n| n.contains("records") || n.contains("release"));
            if v["kind"] == "ValidatingAdmissionPolicy" && approval_policy {
                policies.push(v);
            } else {
                assert!(v["kind"] == "ValidatingAdmissionPolicyBinding" || !approval_policy, "{v}");
            }
        }
    }
    assert_eq!(policies.len(), 4);
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
    kubectl_ok(&[
        "create",
        "clusterrole",
        &role,
        "--verb=get,list,create,update,patch",
        "--resource=accessapprovals.access.jpki.dev,accessregistrations.access.jpki.dev",
    ]);
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
    // Decided on as stored (its uid): read back.
    let reg: AccessRegistration = serde_json::from_str(&kubectl_ok(&["get", "accessregistration", "r", "-n", &ns.name, "-o", "json"])).unwrap();
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
    // An approval naming another object than the stored registration (a guessed or stale uid) is refused.
    let mut stale = approval("alice");
    stale["spec"]["registrationUid"] = json!("00000000-0000-4000-8000-000000000000");
    stale["metadata"]["name"] = json!("r-stale");
    let refused = create_as("alice", &stale);
    assert!(stderr(&refused).contains("spec.registrationUid must be the uid of AccessRegistration r"), "{}", stderr(&refused));
    let fine = create_as("alice", &approval("alice"));
    assert!(fine.status.success(), "a true approval by another person is accepted: {}", stderr(&fine));
    drop(cleanup);
}

/// The records stay (the audit history and the facts that are final), and who released a held mass removal is
/// recorded: the chart's two policies, on the real API server, for an administrator too.
#[tokio::test]
async fn records_are_never_deleted_and_a_hold_release_names_its_releaser() {
    let client = client().await;
    install_crds(&client).await;
    let templates = repo_root().join("charts/jpki-access/templates");
    let text: String =
        std::fs::read_to_string(templates.join("admission-policy.yaml")).unwrap().lines().filter(|l| !l.starts_with("{{")).map(|l| format!("{l}\n")).collect();
    let suffix = unique_suffix();
    let mut cleanup = Cleanup(Vec::new());
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if !(name.contains("records") || name.contains("release")) {
            continue;
        }
        let kind = v["kind"].as_str().unwrap().to_lowercase();
        v["metadata"]["name"] = json!(format!("{name}-{suffix}"));
        if kind == "validatingadmissionpolicybinding" {
            v["spec"]["policyName"] = json!(format!("{name}-{suffix}"));
        }
        let out = create_as("admin", &v);
        assert!(out.status.success(), "{}", stderr(&out));
        cleanup.0.push((kind, format!("{name}-{suffix}")));
    }
    let record = json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRecord", "metadata": {"name": format!("areg-{suffix}")},
        "spec": {"subject": {"kind": "AccessRegistration", "namespace": "n", "name": "r", "uid": suffix},
                 "events": {"filed": {"type": "Filed", "at": "2026-03-01T00:00:00Z"}}}});
    assert!(create_as("admin", &record).status.success());
    eventually(Duration::from_secs(20), "deleting a record refused", || async {
        stderr(&kubectl(&["delete", "accessrecord", &format!("areg-{suffix}"), "--dry-run=server"])).contains("never deleted")
    })
    .await;
    // The CRD itself refuses changing or removing a recorded event.
    let changed =
        kubectl(&["patch", "accessrecord", &format!("areg-{suffix}"), "--type=merge", "-p", r#"{"spec":{"events":{"filed":{"at":"2020-01-01T00:00:00Z"}}}}"#]);
    assert!(stderr(&changed).contains("a recorded event is immutable"), "{}", stderr(&changed));
    let removed = kubectl(&["patch", "accessrecord", &format!("areg-{suffix}"), "--type=merge", "-p", r#"{"spec":{"events":{"filed":null}}}"#]);
    assert!(stderr(&removed).contains("append-only"), "{}", stderr(&removed));
    let added = kubectl(&[
        "patch",
        "accessrecord",
        &format!("areg-{suffix}"),
        "--type=merge",
        "-p",
        r#"{"spec":{"events":{"later":{"type":"Deleted","at":"2026-04-01T00:00:00Z"}}}}"#,
    ]);
    assert!(added.status.success(), "an event may be added: {}", stderr(&added));

    // Releasing a hold without naming oneself is refused; naming oneself is accepted.
    let env = format!("release-{suffix}");
    let environment = json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": env},
        "spec": {"environment": "Test", "serviceNamespace": "jpki-release", "podSelector": {"matchLabels": {"app": "r"}},
                 "endpoints": [{"name": "ocsp", "provisionMethod": "Ocsp", "service": {"name": "ocsp", "port": 8080}, "host": "ocsp.example"}]}});
    assert!(create_as("admin", &environment).status.success());
    cleanup.0.push(("accessenvironment".into(), env.clone()));
    eventually(Duration::from_secs(20), "an unnamed release refused", || async {
        stderr(&kubectl(&["annotate", "accessenvironment", &env, "access.jpki.dev/release-hold=sha256:abc", "--dry-run=server"])).contains("released-by")
    })
    .await;
    let named = kubectl(&["annotate", "accessenvironment", &env, "access.jpki.dev/release-hold=sha256:abc", "access.jpki.dev/released-by=admin"]);
    assert!(named.status.success(), "{}", stderr(&named));
    drop(cleanup);
    // The record stays for good in this control plane: the test's own name, nothing else reads it.
}

/// `kubectl` as the holder of a service-account token (no impersonation: the token's own claims reach admission).
fn kubectl_with_token(token: &str, args: &[&str], stdin: Option<&serde_json::Value>) -> Output {
    let mut full = vec!["--token", token];
    full.extend(args);
    kubectl_piped(&full, stdin)
}

/// The chart's agent Role lets an agent read the signed allowlist and create and patch Leases of the allowlist
/// namespace, nothing else (RBAC has no per-node names); its admission policy narrows the Lease writes to the
/// heartbeat of the node in the agent's bound token. Tested with real requests with real tokens of pods bound to two
/// nodes, rendered from the chart by helm: its own heartbeat is written, another node's, the allowlist, the
/// namespace's ConfigMaps and Secrets are not.
#[tokio::test]
async fn a_firewall_agent_writes_only_its_own_nodes_report() {
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "agentreport").await;
    let agent_ns = format!("{}-agent", ns.name);
    let helm = repo_root().join("target/testenv/helm");
    let rendered = Command::new(&helm)
        .args(["template", "jpki", path_str(&repo_root().join("charts/jpki-access")), "--namespace", &ns.name])
        .args(["--show-only", "templates/agent.yaml", "--show-only", "templates/agent-report-policy.yaml"])
        .args(["--set", &format!("agent.namespace={agent_ns}"), "--set", &format!("agent.allowlistNamespace={}", ns.name)])
        .args(["--set", "agent.environment=production", "--kube-version", "1.36.3"])
        .args(["--set-file", &format!("signing.publicKey={}", path_str(&public_key()))])
        .output()
        .unwrap();
    assert!(rendered.status.success(), "helm template: {}", String::from_utf8_lossy(&rendered.stderr));
    let mut cleanup = Cleanup(vec![("namespace".into(), agent_ns.clone())]);
    let suffix = ns.name.clone();
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&rendered.stdout)) {
        let mut v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap().to_string();
        // Cluster-scoped policy names are made unique, so this test never meets the chart test's installation.
        if kind == "ValidatingAdmissionPolicy" {
            v["metadata"]["name"] = json!(format!("agent-report-{suffix}"));
            cleanup.0.push(("validatingadmissionpolicy".into(), format!("agent-report-{suffix}")));
        } else if kind == "ValidatingAdmissionPolicyBinding" {
            v["metadata"]["name"] = json!(format!("agent-report-{suffix}"));
            v["spec"]["policyName"] = json!(format!("agent-report-{suffix}"));
            cleanup.0.push(("validatingadmissionpolicybinding".into(), format!("agent-report-{suffix}")));
        }
        let out = create_as("admin", &v);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "DaemonSet",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );

    /// Pods on a node without a kubelet stay Terminating until deleted by force, and would hold their namespace.
    struct ForceDeletePods(String);
    impl Drop for ForceDeletePods {
        fn drop(&mut self) {
            let _ = kubectl(&["delete", "pods", "--all", "-n", &self.0, "--force", "--grace-period=0"]);
        }
    }
    let _pods = ForceDeletePods(agent_ns.clone());
    // Two edge nodes, an agent pod on each (never run: there is no kubelet), and the pods' bound tokens.
    let mut tokens = Vec::new();
    for node in ["edge-a", "edge-b"] {
        let node_name = format!("{suffix}-{node}");
        let out = create_as("admin", &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name}}));
        assert!(out.status.success(), "{}", stderr(&out));
        cleanup.0.push(("node".into(), node_name.clone()));
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": node, "namespace": agent_ns},
            "spec": {"nodeName": node_name, "serviceAccountName": "jpki-access-agent", "automountServiceAccountToken": false,
                     "containers": [{"name": "agent", "image": "jpki-access"}]}});
        let out = create_as("admin", &pod);
        assert!(out.status.success(), "{}", stderr(&out));
        let token = kubectl_ok(&["create", "token", "jpki-access-agent", "-n", &agent_ns, "--bound-object-kind", "Pod", "--bound-object-name", node]);
        tokens.push((node_name, token.trim().to_string()));
    }
    let unbound = kubectl_ok(&["create", "token", "jpki-access-agent", "-n", &agent_ns]).trim().to_string();
    let (node_a, token_a) = &tokens[0];
    let (node_b, _) = &tokens[1];

    // The allowlist shard every node enforces, written by the controller (here: the admin), and objects of the
    // namespace that are not the agent's.
    let shard = json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessAllowlistShard", "metadata": {"name": "jpki-allowlist-production-0",
        "namespace": ns.name, "labels": {"access.jpki.dev/environment": "production", "access.jpki.dev/allowlist": "shard"}},
        "spec": {"environment": "production", "cidrs": "192.0.2.0/28\n"}});
    assert!(create_as("admin", &shard).status.success());
    for other in [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "someone-elses", "namespace": ns.name}, "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "someone-elses", "namespace": ns.name}, "stringData": {"k": "v"}}),
    ] {
        assert!(create_as("admin", &other).status.success());
    }
    let lease = |node: &str, labelled: bool| {
        let report = jpki_access::wire::report::AgentReport { environment: "production".into(), node: node.into(), ..Default::default() };
        let mut l = jpki_access::wire::report::lease_body(&ns.name, &report, jiff::Timestamp::now(), 6);
        if !labelled {
            l["metadata"]["labels"] = json!({});
        }
        l
    };
    let apply = |token: &str, object: &serde_json::Value| {
        let out = kubectl_with_token(token, &["apply", "--server-side", "--force-conflicts", "--field-manager=jpki-access-agent", "-f", "-"], Some(object));
        (out.status.success(), stderr(&out))
    };
    // The policy takes effect a moment after it is created.
    eventually(Duration::from_secs(20), "the agent-report policy in force", || async {
        apply(token_a, &lease(node_b, true)).1.contains("may write only its heartbeat")
    })
    .await;

    let (ok, err) = apply(token_a, &lease(node_a, true));
    assert!(ok, "the agent on {node_a} writes its own heartbeat: {err}");
    let (ok, err) = apply(token_a, &lease(node_a, true));
    assert!(ok, "and renews it: {err}");
    let (ok, err) = apply(token_a, &lease(node_b, true));
    assert!(
        !ok && err
            .contains(&format!("the agent on node {node_a} may write only its heartbeat jpki-agent-production-{node_a}, not jpki-agent-production-{node_b}")),
        "{err}"
    );
    let (ok, err) = apply(token_a, &lease(node_a, false));
    assert!(!ok && err.contains("must carry the labels access.jpki.dev/agent-report=production"), "{err}");
    let (ok, err) = apply(&unbound, &lease(node_a, true));
    assert!(!ok && err.contains("not bound to a node"), "a token of no pod is refused: {err}");
    let out = kubectl_with_token(token_a, &["delete", "lease", &format!("jpki-agent-production-{node_a}"), "-n", &ns.name], None);
    assert!(!out.status.success(), "the agent may not delete Leases");

    // The allowlist: read, never written.
    let out = kubectl_with_token(token_a, &["get", "accessallowlistshards", "-n", &ns.name, "-o", "name"], None);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("jpki-allowlist-production-0"), "{}", stderr(&out));
    let mut widened = shard.clone();
    widened["spec"]["cidrs"] = json!("0.0.0.0/1\n192.0.2.0/28\n");
    let (ok, err) = apply(token_a, &widened);
    assert!(!ok && err.contains("forbidden"), "the shard every node enforces is refused: {err}");
    let out = kubectl_with_token(token_a, &["delete", "accessallowlistshard", "jpki-allowlist-production-0", "-n", &ns.name], None);
    assert!(!out.status.success(), "the agent may not delete the shard");
    // Nothing else of the namespace: its ConfigMaps and Secrets are not the agent's.
    for (verb, what) in [("get", "configmap/someone-elses"), ("get", "secret/someone-elses"), ("list", "configmaps"), ("list", "secrets")] {
        let out = kubectl_with_token(token_a, &["get", what, "-n", &ns.name], None);
        assert!(!out.status.success() && stderr(&out).contains("forbidden"), "the agent may not {verb} {what}: {}", stderr(&out));
    }

    let stored = kubectl_ok(&["get", "accessallowlistshard", "jpki-allowlist-production-0", "-n", &ns.name, "-o", "jsonpath={.spec.cidrs}"]);
    assert_eq!(stored, "192.0.2.0/28\n", "the shard is untouched");
    drop(_pods);
    drop(cleanup);
}
