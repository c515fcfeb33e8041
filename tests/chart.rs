//! The Helm chart (charts/jpki-access): its CRDs are the generated ones; `helm lint` passes; `helm install` into
//! the local control plane creates every object; the installed roles allow and refuse exactly what they should.
#![allow(clippy::unwrap_used, clippy::panic)]

#[cfg(feature = "cluster-tests")]
mod support;

#[cfg(feature = "cluster-tests")]
use serde::Deserialize;
use std::path::PathBuf;

#[cfg(feature = "cluster-tests")]
use support::helm::POLICIES;

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
            .args(["--set-file", &format!("signing.publicKey={}", root().join("tests/fixtures/signing/test-allowlist.pub").display())])
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
    use support::*;
    let chart = root().join("charts/jpki-access");
    let run = |args: &[&str]| helm::helm(args);
    let public_key = format!("signing.publicKey={}", path_str(&public_key()));
    run(&[
        "lint",
        path_str(&chart),
        "--strict",
        "--set",
        "admission.separationOfDuties=true",
        "--set",
        "controller.serviceMonitor.enabled=true",
        "--set-file",
        &public_key,
    ]);

    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "chart").await;
    let agent_ns = format!("{}-agent", ns.name);
    support::helm::remove_cluster_scoped_leftovers();
    let _uninstall = support::helm::Uninstall { namespace: ns.name.clone(), agent_namespace: agent_ns.clone() };
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
        "--set-file",
        &public_key,
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
    for policy in POLICIES {
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
        // RBAC cannot name the namespaces of the forms: it grants ConfigMaps, NetworkPolicies and Ingresses
        // everywhere, and the admission policy jpki-access-controller-scope takes back the rest (real requests below).
        (&controller, true, vec!["patch", "events.events.k8s.io", "-n", "x"]),
        (&controller, true, vec!["update", "leases.coordination.k8s.io", "-n", n]),
        (&controller, true, vec!["patch", "accessallowlists.access.jpki.dev", "-n", n]),
        (&controller, true, vec!["list", "leases.coordination.k8s.io", "-A"]),
        (&controller, false, vec!["update", "leases.coordination.k8s.io", "-n", "x"]),
        (&controller, false, vec!["get", "secrets", "-n", n]),
        (&controller, false, vec!["get", "secrets", "-n", "kube-system"]),
        (&controller, false, vec!["create", "pods", "-n", n]),
        (&controller, false, vec!["create", "accessapprovals.access.jpki.dev", "-n", "x"]),
        (&controller, false, vec!["update", "clusterroles.rbac.authorization.k8s.io"]),
        // The agent: its environment's signed allowlist (read) and its heartbeat; no ConfigMaps, no Secrets.
        (&agent, true, vec!["watch", "accessallowlists.access.jpki.dev", "-n", n]),
        (&agent, true, vec!["watch", "accessallowlistshards.access.jpki.dev", "-n", n]),
        (&agent, true, vec!["patch", "leases.coordination.k8s.io", "-n", n]),
        (&agent, false, vec!["patch", "accessallowlists.access.jpki.dev", "-n", n]),
        (&agent, false, vec!["delete", "leases.coordination.k8s.io", "-n", n]),
        (&agent, false, vec!["get", "configmaps", "-n", n]),
        (&agent, false, vec!["get", "configmaps", "-n", &agent_ns]),
        (&agent, false, vec!["get", "secrets", "-n", n]),
        (&agent, false, vec!["get", "secrets", "-n", &agent_ns]),
        (&agent, false, vec!["get", "configmaps", "-n", "x"]),
        // Its own DaemonSet, by name only (to see an uninstall coming); no other.
        (&agent, true, vec!["watch", "daemonsets.apps/jpki-access-agent", "-n", &agent_ns]),
        (&agent, false, vec!["watch", "daemonsets.apps/other", "-n", &agent_ns]),
        (&agent, false, vec!["delete", "daemonsets.apps/jpki-access-agent", "-n", &agent_ns]),
        (&agent, false, vec!["list", "accessregistrations.access.jpki.dev", "-A"]),
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

    the_controller_writes_only_what_it_manages(&ns.name).await;
    foreign_network_policies_are_refused().await;
}

/// Real requests with the controller's service-account token (not `can-i`): it may write its own objects in a
/// namespace labelled access.jpki.dev/managed=true, and nothing elsewhere: it cannot patch a ConfigMap of
/// kube-system, delete a NetworkPolicy or create an Ingress in a namespace it does not manage, nor delete a
/// NetworkPolicy it did not write in one it does.
#[cfg(feature = "cluster-tests")]
async fn the_controller_writes_only_what_it_manages(release_namespace: &str) {
    use support::*;
    let token = kubectl_ok(&["create", "token", "jpki-access-controller", "-n", release_namespace]).trim().to_string();
    let managed = format!("{release_namespace}-managed");
    let other = format!("{release_namespace}-other");
    struct Delete(Vec<String>);
    impl Drop for Delete {
        fn drop(&mut self) {
            for args in &self.0 {
                let _ = kubectl(&args.split(' ').collect::<Vec<_>>());
            }
        }
    }
    let _cleanup = Delete(vec![
        format!("delete namespace {managed} --wait=false --ignore-not-found"),
        format!("delete namespace {other} --wait=false --ignore-not-found"),
        "delete configmap jpki-chart-probe -n kube-system --ignore-not-found".into(),
    ]);
    let create = |object: serde_json::Value| {
        let file = std::env::temp_dir().join(format!("jpki-chart-object-{}.json", std::process::id()));
        std::fs::write(&file, object.to_string()).unwrap();
        kubectl_ok(&["create", "-f", path_str(&file)]);
    };
    create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": managed, "labels": {"access.jpki.dev/managed": "true"}}}));
    create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}));
    create(
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "jpki-chart-probe", "namespace": "kube-system"}, "data": {"k": "v"}}),
    );
    let deny_all = |namespace: &str| {
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "someone-elses", "namespace": namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    };
    create(deny_all(&other));
    create(deny_all(&managed));
    let as_controller = |args: &[&str], stdin: Option<serde_json::Value>| {
        let mut command = std::process::Command::new(&control_plane().kubectl);
        command.arg("--kubeconfig").arg(&control_plane().kubeconfig).args(["--token", &token]).args(args);
        let out = match stdin {
            Some(object) => {
                use std::io::Write;
                let mut child =
                    command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
                child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
                child.wait_with_output().unwrap()
            }
            None => command.output().unwrap(),
        };
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let ours = |kind: &str, namespace: &str| {
        let (api, spec) = match kind {
            "ConfigMap" => ("v1", serde_json::json!(null)),
            _ => ("networking.k8s.io/v1", serde_json::json!({"defaultBackend": {"service": {"name": "ocsp-responder", "port": {"number": 8080}}}})),
        };
        let mut o = serde_json::json!({"apiVersion": api, "kind": kind, "metadata": {"name": "jpki-probe", "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "jpki-access"}}});
        if kind == "ConfigMap" {
            o["data"] = serde_json::json!({"k": "v"});
        } else {
            o["spec"] = spec;
        }
        o
    };
    // The policy takes effect a moment after it is created.
    eventually(std::time::Duration::from_secs(20), "the controller-scope policy in force", || async {
        as_controller(&["patch", "configmap", "jpki-chart-probe", "-n", "kube-system", "--type=merge", "-p", r#"{"data":{"k":"forged"}}"#], None)
            .1
            .contains("writes only in namespaces labelled access.jpki.dev/managed=true")
    })
    .await;
    let refused = [
        (
            "patch kube-system's ConfigMap",
            as_controller(
                &[
                    "patch",
                    "configmap",
                    "jpki-chart-probe",
                    "-n",
                    "kube-system",
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"labels":{"app.kubernetes.io/managed-by":"jpki-access"}},"data":{"k":"forged"}}"#,
                ],
                None,
            ),
        ),
        ("delete a NetworkPolicy in an unmanaged namespace", as_controller(&["delete", "networkpolicy", "someone-elses", "-n", &other], None)),
        ("create an Ingress in an unmanaged namespace", as_controller(&["create", "-f", "-"], Some(ours("Ingress", &other)))),
        ("create a ConfigMap in an unmanaged namespace", as_controller(&["create", "-f", "-"], Some(ours("ConfigMap", &other)))),
        ("delete a NetworkPolicy it did not write in a managed namespace", as_controller(&["delete", "networkpolicy", "someone-elses", "-n", &managed], None)),
    ];
    for (what, (ok, err)) in &refused {
        assert!(!ok && (err.contains("Forbidden") || err.contains("forbidden")), "the controller could {what}: {err}");
    }
    assert_eq!(
        kubectl_ok(&["get", "configmap", "jpki-chart-probe", "-n", "kube-system", "-o", "jsonpath={.data.k}"]),
        "v",
        "kube-system's ConfigMap unchanged"
    );
    kubectl_ok(&["get", "networkpolicy", "someone-elses", "-n", &other]);
    kubectl_ok(&["get", "networkpolicy", "someone-elses", "-n", &managed]);
    // What it manages: its own, labelled objects in a managed namespace.
    for kind in ["ConfigMap", "Ingress"] {
        let (ok, err) = as_controller(&["create", "-f", "-"], Some(ours(kind, &managed)));
        assert!(ok, "the controller creates its {kind} in a managed namespace: {err}");
        let (ok, err) = as_controller(&["delete", &kind.to_lowercase(), "jpki-probe", "-n", &managed], None);
        assert!(ok, "and deletes it: {err}");
    }
}

/// Acceptance 5 of issue 18, option on (the chart's default): an allow-all NetworkPolicy next to the controller's in
/// the production service namespace is refused, whoever writes it (here the cluster admin); one that selects other
/// pods, or judges egress only, is not.
#[cfg(feature = "cluster-tests")]
async fn foreign_network_policies_are_refused() {
    use support::*;
    kubectl_ok(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-R", "-f", path_str(&root().join("examples"))]);
    let create = |name: &str, spec: serde_json::Value| {
        let file = std::env::temp_dir().join(format!("jpki-chart-np-{}-{name}.json", std::process::id()));
        let np = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "jpki-production"}, "spec": spec});
        std::fs::write(&file, np.to_string()).unwrap();
        let out = kubectl(&["create", "-f", path_str(&file)]);
        let _ = std::fs::remove_file(&file);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let allow_all = serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]});
    eventually(std::time::Duration::from_secs(20), "the foreign-policy policy in force", || async {
        let (ok, err) = create("allow-all", allow_all.clone());
        if ok {
            let _ = kubectl(&["delete", "networkpolicy", "allow-all", "-n", "jpki-production"]);
        }
        !ok && err.contains("may select the revocation services of AccessEnvironment production")
    })
    .await;
    let (ok, err) =
        create("allow-all-named", serde_json::json!({"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "revocation-services"}}, "ingress": [{}]}));
    assert!(!ok && err.contains("only the jpki-access controller writes policies for them"), "{err}");
    for (name, spec) in [
        ("billing", serde_json::json!({"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "billing"}}, "ingress": [{}]})),
        ("egress-only", serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})),
    ] {
        let (ok, err) = create(name, spec);
        assert!(ok, "{name} does not select the services' pods for ingress: {err}");
        kubectl_ok(&["delete", "networkpolicy", name, "-n", "jpki-production"]);
    }
}
