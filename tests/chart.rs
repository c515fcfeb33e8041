//! The Helm chart (charts/jpki-access): its CRDs are the generated ones; `helm lint` passes; `helm install` into
//! the local control plane creates every object; the installed roles allow and refuse exactly what they should.
#![allow(clippy::unwrap_used, clippy::panic)]

#[cfg(feature = "cluster-tests")]
mod support;

#[cfg(feature = "cluster-tests")]
use serde::Deserialize;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let chart = std::fs::read_to_string(root().join("charts/jpki-access/crds/jpki-access.crds.yaml")).unwrap();
    assert!(chart == jpki_access::api::crds_yaml().unwrap(), "copy crds/jpki-access.crds.yaml into charts/jpki-access/crds/");
}

#[test]
fn the_controller_role_of_the_chart_equals_the_tested_fixture() {
    // tests/controller.rs runs the controller under tests/fixtures/rbac/controller.yaml; the chart must grant the
    // same rules (its leader-election Lease rights are a Role in the release namespace instead of cluster-wide).
    let fixture: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(root().join("tests/fixtures/rbac/controller.yaml")).unwrap()).unwrap();
    let chart = std::fs::read_to_string(root().join("charts/jpki-access/templates/controller-rbac.yaml")).unwrap();
    let first: String = chart.split("\n---\n").next().unwrap().lines().filter(|l| !l.contains("{{")).map(|l| format!("{l}\n")).collect();
    let chart: serde_yaml::Value = serde_yaml::from_str(&first).unwrap();
    let leader_election = |r: &serde_yaml::Value| r["apiGroups"][0] == "coordination.k8s.io" && r["verbs"].as_sequence().unwrap().iter().any(|v| v == "update");
    let without_leases: Vec<serde_yaml::Value> = fixture["rules"].as_sequence().unwrap().iter().filter(|r| !leader_election(r)).cloned().collect();
    assert_eq!(chart["rules"].as_sequence().unwrap(), &without_leases);
}

/// The image references `scripts/image refs` prints: what scripts/image builds and names.
fn built_images() -> Vec<String> {
    let out = std::process::Command::new(root().join("scripts/image")).arg("refs").env_remove("JPKI_IMAGE_REGISTRY").output().unwrap();
    assert!(out.status.success(), "scripts/image refs: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn the_charts_default_images_are_the_ones_scripts_image_builds() {
    let chart: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(root().join("charts/jpki-access/Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")), "the chart's appVersion (the images' default tag) must be the crate's version");
    let values: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(root().join("charts/jpki-access/values.yaml")).unwrap()).unwrap();
    assert_eq!(values["image"]["tag"].as_str(), Some(""), "the default tag is the appVersion");
    let defaults: Vec<String> = ["controller", "agent"]
        .iter()
        .map(|c| {
            assert_eq!(values[c]["image"]["digest"].as_str(), Some(""), "{c}: no default digest (it changes with every commit)");
            format!("{}/{}:{}", values["image"]["registry"].as_str().unwrap(), values[c]["image"]["name"].as_str().unwrap(), env!("CARGO_PKG_VERSION"))
        })
        .collect();
    assert_eq!(defaults, built_images());
}

#[cfg(feature = "cluster-tests")]
#[test]
fn helm_template_with_defaults_names_the_built_images_and_pins_a_digest_when_given() {
    use std::process::Command;
    let helm = root().join("target/testenv/helm");
    assert!(helm.exists(), "{} missing: run scripts/controlplane build", helm.display());
    let template = |args: &[&str]| {
        let out = Command::new(&helm)
            .arg("template")
            .arg("jpki")
            .arg(root().join("charts/jpki-access"))
            .args(["--kube-version", "v1.36.3"])
            .args(args)
            .env("HELM_CACHE_HOME", std::env::temp_dir().join("jpki-helm-cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
        let images: Vec<String> = serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
            .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
            .filter(|doc| doc["kind"] == "Deployment" || doc["kind"] == "DaemonSet")
            .map(|doc| doc["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string())
            .collect();
        images
    };
    let [controller, agent] = <[String; 2]>::try_from(built_images()).unwrap();
    assert_eq!(template(&[]), [agent.clone(), controller.clone()], "helm template with defaults (DaemonSet first, as helm orders kinds)");
    let digest = format!("sha256:{}", "0".repeat(64));
    let pinned = template(&["--set", &format!("controller.image.digest={digest}"), "--set", &format!("agent.image.digest={digest}")]);
    assert_eq!(pinned, [format!("{agent}@{digest}"), format!("{controller}@{digest}")]);
}

#[cfg(feature = "cluster-tests")]
#[tokio::test]
async fn helm_lints_installs_and_the_roles_allow_exactly_what_they_should() {
    use std::process::Command;
    use support::*;
    let helm = root().join("target/testenv/helm");
    assert!(helm.exists(), "{} missing: run scripts/controlplane build", helm.display());
    let chart = root().join("charts/jpki-access");
    let kubeconfig = control_plane().kubeconfig.clone();
    let run = |args: &[&str]| {
        let out = Command::new(&helm)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HELM_CACHE_HOME", std::env::temp_dir().join("jpki-helm-cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "helm {args:?}:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["lint", path_str(&chart), "--strict", "--set", "admission.separationOfDuties=true", "--set", "controller.serviceMonitor.enabled=true"]);

    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "chart").await;
    let agent_ns = format!("{}-agent", ns.name);
    // Cluster-scoped names of an earlier run or of another test must not block the install.
    for role in ["jpki-access-controller", "jpki-access-viewer", "jpki-access-editor", "jpki-access-approver"] {
        let _ = kubectl(&["delete", "clusterrole", role, "--ignore-not-found"]);
    }
    let _ = kubectl(&["delete", "clusterrolebinding", "jpki-access-controller", "--ignore-not-found"]);
    for policy in ["jpki-access-approved-by-requester", "jpki-access-agent-writes-only-its-report"] {
        let _ = kubectl(&["delete", "validatingadmissionpolicy,validatingadmissionpolicybinding", policy, "--ignore-not-found"]);
    }
    /// Uninstalls even when an assertion fails: the chart's admission policy binds cluster-wide and would refuse
    /// the approvals of later tests.
    struct Uninstall(PathBuf, PathBuf, String, String);
    impl Drop for Uninstall {
        fn drop(&mut self) {
            let _ = Command::new(&self.0).args(["uninstall", "jpki", "--namespace", &self.2]).env("KUBECONFIG", &self.1).output();
            let _ =
                kubectl(&["delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", "jpki-access-approved-by-requester", "--ignore-not-found"]);
            let _ = kubectl(&["delete", "namespace", &self.3, "--wait=false", "--ignore-not-found"]);
            // The API server stops enforcing a deleted policy a moment later: wait until an approval in someone
            // else's name passes admission again (dry run), so no later test meets the policy.
            let reg: jpki_access::api::AccessRegistration = serde_json::from_value(serde_json::json!({
                "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration", "metadata": {"name": "probe", "namespace": self.2},
                "spec": {"verifierRef": "v", "environment": "Test", "connectionMethod": "Lgwan", "sourceCidrs": ["192.0.2.0/28"], "accessStartDate": "2026-04-01"}
            })).unwrap();
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
    let _uninstall = Uninstall(helm.clone(), kubeconfig.clone(), ns.name.clone(), agent_ns.clone());
    let installed = run(&[
        "install",
        "jpki",
        path_str(&chart),
        "--namespace",
        &ns.name,
        "--wait=false",
        "--set",
        &format!("agent.namespace={agent_ns}"),
        "--set",
        &format!("agent.allowlistNamespace={}", ns.name),
    ]);
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    for (kind, name, namespace) in [
        ("deployment", "jpki-access-controller", ns.name.as_str()),
        ("daemonset", "jpki-access-agent", agent_ns.as_str()),
        ("networkpolicy", "jpki-access-controller", ns.name.as_str()),
        ("role", "jpki-access-leader-election", ns.name.as_str()),
        ("role", "jpki-access-agent", ns.name.as_str()),
    ] {
        kubectl_ok(&["get", kind, name, "-n", namespace]);
    }
    for name in ["jpki-access-controller", "jpki-access-viewer", "jpki-access-editor", "jpki-access-approver"] {
        kubectl_ok(&["get", "clusterrole", name]);
    }
    for policy in ["jpki-access-approved-by-requester", "jpki-access-agent-writes-only-its-report"] {
        kubectl_ok(&["get", "validatingadmissionpolicy,validatingadmissionpolicybinding", policy]);
    }
    let label = kubectl_ok(&["get", "namespace", &agent_ns, "-o", "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}"]);
    assert_eq!(label, "privileged");

    // Who may do what, through impersonation of the chart's subjects and of people bound to its roles.
    for (role, user) in [("jpki-access-viewer", "vera"), ("jpki-access-editor", "eddie"), ("jpki-access-approver", "april")] {
        kubectl_ok(&["create", "clusterrolebinding", &format!("{}-{user}", ns.name), &format!("--clusterrole={role}"), &format!("--user={user}")]);
    }
    let controller = format!("system:serviceaccount:{}:jpki-access-controller", ns.name);
    let agent = format!("system:serviceaccount:{agent_ns}:jpki-access-agent");
    let n = ns.name.as_str();
    let matrix: Vec<(&str, bool, Vec<&str>)> = vec![
        (&controller, true, vec!["list", "accessregistrations.access.jpki.dev", "-A"]),
        (&controller, true, vec!["patch", "accessregistrations.access.jpki.dev", "--subresource=status", "-n", "x"]),
        (&controller, true, vec!["create", "configmaps", "-n", "x"]),
        (&controller, true, vec!["delete", "networkpolicies.networking.k8s.io", "-n", "x"]),
        (&controller, true, vec!["patch", "events.events.k8s.io", "-n", "x"]),
        (&controller, true, vec!["update", "leases.coordination.k8s.io", "-n", n]),
        (&controller, false, vec!["update", "leases.coordination.k8s.io", "-n", "x"]),
        (&controller, false, vec!["get", "secrets", "-n", n]),
        (&controller, false, vec!["create", "pods", "-n", n]),
        (&controller, false, vec!["create", "accessapprovals.access.jpki.dev", "-n", "x"]),
        (&agent, true, vec!["watch", "configmaps", "-n", n]),
        (&agent, true, vec!["patch", "configmaps", "-n", n]),
        (&agent, false, vec!["get", "configmaps", "-n", "x"]),
        (&agent, false, vec!["list", "accessregistrations.access.jpki.dev", "-A"]),
        (&agent, false, vec!["get", "secrets", "-n", n]),
        ("vera", true, vec!["list", "accessregistrations.access.jpki.dev", "-A"]),
        ("vera", false, vec!["create", "accessregistrations.access.jpki.dev", "-n", n]),
        ("vera", false, vec!["create", "accessapprovals.access.jpki.dev", "-n", n]),
        ("eddie", true, vec!["create", "accessregistrations.access.jpki.dev", "-n", n]),
        ("eddie", false, vec!["create", "accessapprovals.access.jpki.dev", "-n", n]),
        ("eddie", false, vec!["delete", "accessapprovals.access.jpki.dev", "-n", n]),
        ("april", true, vec!["create", "accessapprovals.access.jpki.dev", "-n", n]),
        ("april", false, vec!["create", "accessregistrations.access.jpki.dev", "-n", n]),
        ("april", false, vec!["delete", "accessapprovals.access.jpki.dev", "-n", n]),
    ];
    let mut wrong = Vec::new();
    for (user, expected, args) in &matrix {
        let mut full = vec!["auth", "can-i", "--as", user];
        full.extend(args);
        let answer = String::from_utf8_lossy(&kubectl(&full).stdout).trim() == "yes";
        if answer != *expected {
            wrong.push(format!("{user} can-i {args:?}: {answer}, expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    for user in ["vera", "eddie", "april"] {
        let _ = kubectl(&["delete", "clusterrolebinding", &format!("{}-{user}", ns.name)]);
    }
}
