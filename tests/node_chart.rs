//! The chart's pods on the test node (issue #21, second part): `helm install` of charts/jpki-access with the images
//! scripts/image builds, imported into the node's containerd without a registry. Both controller replicas become
//! Ready through their probes and one holds the Lease; deleting the leader's pod hands the Lease over with no write
//! storm; the agent DaemonSet's pod enforces the allowlist on the node itself (host network); the controller's
//! projected token is refused what the chart does not grant; `helm upgrade` keeps the node closed while the agent
//! rolls, and `helm uninstall` leaves no chart object and no nft table.
//!
//! Judged from outside: pod conditions, the Lease and resourceVersions through the API server, real TCP connects
//! from a network namespace to ports on the node (the agent's table is in the node's own network namespace, the
//! machine's: the protected ports here are test ports), and `nft list tables`.
#![cfg(all(feature = "cluster-tests", feature = "image-tests"))]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_oracle::netns::{Outcome, connect_in};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};
use support::edge::{FormsCleanup, approve, setup};
use support::helm::{Uninstall, helm, remove_cluster_scoped_leftovers};
use support::node::*;
use support::*;

/// The client namespace's addresses: one approved by the test's registration, one never registered. Neither is
/// used by another test, so a set left by an earlier test cannot make a check pass.
const APPROVED: &str = "198.51.100.77";
const REFUSED: &str = "198.51.100.78";
/// The node's side of the client link, where the test's listeners are.
const NODE_SIDE: &str = "198.51.100.1";
/// Protected by the install; the upgrade adds the second.
const PORT: u16 = 18443;
const ADDED_PORT: u16 = 18444;
const CLIENT_NETNS: &str = "jpki-nodechart";
const HOST_LINK: &str = "jpkinc0";
/// The agent's table on the node, as nft names it (environment "production").
const AGENT_TABLE: &str = "inet jpki_access_production";

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of clients joined to the node's own network namespace by a veth pair, and listeners on
/// the node's side. Removed when dropped, with the agent's table if a failed test left it on the machine.
struct Clients;

impl Clients {
    fn new() -> Clients {
        Clients::remove();
        run(&["ip", "netns", "add", CLIENT_NETNS]);
        run(&["ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", "jpkinc1"]);
        run(&["ip", "link", "set", "jpkinc1", "netns", CLIENT_NETNS]);
        run(&["ip", "addr", "add", &format!("{NODE_SIDE}/24"), "dev", HOST_LINK]);
        run(&["ip", "link", "set", HOST_LINK, "up"]);
        for args in [
            vec!["ip", "addr", "add", "198.51.100.77/24", "dev", "jpkinc1"],
            vec!["ip", "addr", "add", "198.51.100.78/24", "dev", "jpkinc1"],
            vec!["ip", "link", "set", "jpkinc1", "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            let mut full = vec!["ip", "netns", "exec", CLIENT_NETNS];
            full.extend(args);
            run(&full);
        }
        for port in [PORT, ADDED_PORT] {
            let listener = TcpListener::bind((NODE_SIDE, port)).unwrap_or_else(|e| panic!("listen on {NODE_SIDE}:{port}: {e}"));
            std::thread::spawn(move || for _ in listener.incoming() {});
        }
        Clients
    }

    fn reaches(&self, source: &str, port: u16) -> bool {
        let dst = SocketAddr::new(NODE_SIDE.parse().unwrap(), port);
        match connect_in(CLIENT_NETNS, source.parse().unwrap(), dst, Duration::from_millis(1000)) {
            Outcome::Connected => true,
            Outcome::TimedOut => false,
            Outcome::Error(e) => panic!("connect from {source} to {dst}: {e}"),
        }
    }

    fn remove() {
        let _ = Command::new("ip").args(["netns", "del", CLIENT_NETNS]).output();
        let _ = Command::new("ip").args(["link", "del", HOST_LINK]).output();
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        Clients::remove();
        if node_has_agent_table() {
            let _ = Command::new("nft").args(["delete", "table", "inet", "jpki_access_production"]).output();
        }
    }
}

fn node_has_agent_table() -> bool {
    String::from_utf8_lossy(&Command::new("nft").args(["list", "tables"]).output().unwrap().stdout).lines().any(|l| l.trim() == format!("table {AGENT_TABLE}"))
}

/// Builds both images (scripts/image: the release build is cached, so after tests/image.rs this assembles only)
/// and imports them into the node's containerd under the names the chart's defaults give.
fn build_and_import_images() {
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let image = repo_root().join("scripts/image");
    run(&[image.to_str().unwrap(), "build", "--out", path_str(out.path())]);
    eprintln!("scripts/image build: {:.0} s", started.elapsed().as_secs_f64());
    let node = repo_root().join("scripts/node");
    let archives: Vec<String> = ["controller", "agent"].iter().map(|i| out.path().join(format!("{i}.oci.tar")).display().to_string()).collect();
    run(&[node.to_str().unwrap(), "import", &archives[0], &archives[1]]);
}

fn ready(pod: &Pod) -> bool {
    condition_time(pod, "Ready").is_some() && pod.metadata.deletion_timestamp.is_none()
}

/// Pod statuses, events and logs of a namespace, for a failure message.
fn diagnose(namespace: &str) -> String {
    let mut out = String::new();
    for args in [vec!["get", "pods", "-o", "wide", "-n", namespace], vec!["get", "events", "-n", namespace]] {
        out.push_str(&String::from_utf8_lossy(&kubectl(&args).stdout));
    }
    for pod in String::from_utf8_lossy(&kubectl(&["get", "pods", "-o", "name", "-n", namespace]).stdout).lines() {
        let logs = kubectl(&["logs", pod, "-n", namespace, "--tail", "30"]);
        out.push_str(&format!("--- {pod}\n{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr)));
    }
    out
}

/// The pods of a component, once `count` of them are Ready; the time it took.
async fn wait_component_ready(client: &Client, namespace: &str, component: &str, count: usize, limit: Duration) -> (Vec<Pod>, Duration) {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("app.kubernetes.io/component={component}"));
    let started = Instant::now();
    loop {
        let pods: Vec<Pod> = api.list(&params).await.unwrap().items.into_iter().filter(ready).collect();
        if pods.len() >= count {
            return (pods, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{count} {component} pods not Ready within {limit:?}:\n{}", diagnose(namespace));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace).get_opt("jpki-access-controller").await.unwrap()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// resourceVersions of the controller's outputs for the production environment: the signed allowlist and its
/// shards, the NetworkPolicies of the services' namespace, the URL notice of the test's registration.
fn outputs(forms_namespace: &str) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    for (kinds, namespace) in
        [("accessallowlists,accessallowlistshards", "jpki-system"), ("networkpolicies", "jpki-production"), ("configmaps", forms_namespace)]
    {
        let listed = kubectl_ok(&[
            "get",
            kinds,
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/managed-by=jpki-access",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
        ]);
        for line in listed.lines() {
            let (name, version) = line.split_once('=').unwrap();
            versions.insert(format!("{namespace}/{name}"), version.to_string());
        }
    }
    versions
}

#[tokio::test]
async fn the_chart_runs_on_the_node_hands_over_its_lease_enforces_at_the_node_and_uninstalls_cleanly() {
    let client = client().await;
    let node_name = node();
    build_and_import_images();

    // The forms first, before the chart's admission policies exist: one registration for the approved address.
    let forms = format!("nodechart-forms-{}", unique_suffix());
    let _forms = FormsCleanup(forms.clone());
    let registration = setup(&client, &control_plane().kubeconfig, &forms, &[&format!("{APPROVED}/32")]).await;
    kubectl_ok(&["label", "namespace", &forms, "access.jpki.dev/managed=true"]);
    let approval = approve(&client, &registration).await;

    let release = namespace_with_pod_security(&client, "nodechart", "restricted").await;
    let agents = format!("{}-agent", release.name);
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "jpki-access-signing-key",
        "-n",
        &release.name,
        &format!("--from-file=ed25519.key={}", path_str(&signing_key())),
    ]);
    let state_dir = format!("/var/lib/jpki-access-test-{}", release.name);
    remove_cluster_scoped_leftovers();
    let _uninstall = Uninstall { namespace: release.name.clone(), agent_namespace: agents.clone() };
    let clients = Clients::new();
    assert!(clients.reaches(REFUSED, PORT), "before the install, the test port is open to everyone");

    let chart = repo_root().join("charts/jpki-access");
    let public_key = format!("signing.publicKey={}", path_str(&public_key()));
    let values = [
        format!("agent.namespace={agents}"),
        "agent.allowlistNamespace=jpki-system".to_string(),
        "agent.environment=production".to_string(),
        format!("agent.protectedPorts={{TCP/{PORT}}}"),
        format!("agent.stateDir={state_dir}"),
        "agent.metricsPort=19477".to_string(),
    ];
    let mut install = vec!["install", "jpki", path_str(&chart), "--namespace", &release.name, "--wait=false", "--set-file", &public_key];
    for v in &values {
        install.extend(["--set", v.as_str()]);
    }
    let installed_at = Instant::now();
    helm(&install);

    // 1. Both controller replicas Ready through their probes; one holds the Lease.
    let (controllers, took) = wait_component_ready(&client, &release.name, "controller", 2, Duration::from_secs(180)).await;
    eprintln!("controllers Ready {:.1} s after helm install", took.as_secs_f64());
    let names: Vec<String> = controllers.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    for pod in &controllers {
        assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(node_name));
    }
    eventually(Duration::from_secs(30), "a controller pod holds the Lease", || async {
        lease_holder(&client, &release.name).await.is_some_and(|h| names.contains(&h))
    })
    .await;
    let leader = lease_holder(&client, &release.name).await.unwrap();

    // 2. The agent's pod: host network, on the node's address; it enforces the set at the node.
    let (agent_pods, took) = wait_component_ready(&client, &agents, "agent", 1, Duration::from_secs(120)).await;
    eprintln!("agent Ready {:.1} s after helm install", took.as_secs_f64());
    let agent_pod = &agent_pods[0];
    assert_eq!(agent_pod.spec.as_ref().unwrap().host_network, Some(true));
    assert_eq!(agent_pod.status.as_ref().unwrap().pod_ip.as_deref(), Some(NODE_IP.to_string().as_str()), "a host-network pod has the node's address");
    let opened = eventually(Duration::from_secs(60), "the approved source reaches the node's port, the refused one does not", || async {
        clients.reaches(APPROVED, PORT) && !clients.reaches(REFUSED, PORT)
    })
    .await;
    eprintln!("edge enforced {:.1} s after helm install ({:.1} s of waiting here)", installed_at.elapsed().as_secs_f64(), opened.as_secs_f64());
    assert!(node_has_agent_table(), "the agent's table is in the node's own network namespace");

    // 3. The controller's projected token (a pod of its service account) is refused what the chart does not grant.
    controller_token_rights(&client, &release.name, &forms).await;

    // 4. The leader's pod is deleted: the other replica takes the Lease within the lease period (15 s), and the
    //    outputs are not written again.
    let before = outputs(&forms);
    assert!(before.keys().any(|k| k.contains("AccessAllowlist/")), "no allowlist among the outputs: {before:?}");
    let follower = names.iter().find(|n| **n != leader).unwrap().clone();
    let deleted_at = Instant::now();
    Api::<Pod>::namespaced(client.clone(), &release.name).delete(&leader, &DeleteParams::default()).await.unwrap();
    // The leader releases the Lease as it stops; the follower, or the replacement pod if it starts first, takes it.
    let new_leader = loop {
        match lease_holder(&client, &release.name).await {
            Some(holder) if holder != leader => break holder,
            _ => {}
        }
        assert!(deleted_at.elapsed() < Duration::from_secs(30), "no new Lease holder 30 s after the leader's pod was deleted:\n{}", diagnose(&release.name));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let handover = deleted_at.elapsed();
    let who = if new_leader == follower { "the follower" } else { "the replacement pod" };
    eprintln!("Lease handed over to {who} ({new_leader}) {:.1} s after the leader's pod was deleted", handover.as_secs_f64());
    assert!(handover <= Duration::from_secs(15), "handover took {handover:?}, more than the lease period");
    tokio::time::sleep(Duration::from_secs(10)).await; // the new leader's first passes
    let after = outputs(&forms);
    let rewritten: Vec<&String> = before.iter().filter(|(k, v)| after.get(*k) != Some(*v)).map(|(k, _)| k).collect();
    assert!(rewritten.is_empty(), "the new leader wrote unchanged outputs again: {rewritten:?}");
    assert_eq!(before.len(), after.len(), "{before:?}\n{after:?}");

    // 5. Revoking (the approval deleted) closes the node's port within 5 s, through the new leader.
    Api::<jpki_access::api::AccessApproval>::namespaced(client.clone(), &forms)
        .delete(&approval.metadata.name.clone().unwrap(), &DeleteParams::default())
        .await
        .unwrap();
    let closed = eventually(Duration::from_secs(5), "the revoked source is refused at the node", || async { !clients.reaches(APPROVED, PORT) }).await;
    eprintln!("revocation enforced at the node within {:.1} s", closed.as_secs_f64());

    // 6. helm upgrade: one more protected port and one admission policy fewer. The agent rolls; the node stays
    //    closed throughout; the removed policy is gone.
    assert!(clients.reaches(REFUSED, ADDED_PORT), "the added port is open before the upgrade");
    let mut upgrade = vec!["upgrade", "jpki", path_str(&chart), "--namespace", &release.name, "--wait=false", "--set-file", &public_key];
    let upgraded_values: Vec<String> = values
        .iter()
        .map(|v| if v.starts_with("agent.protectedPorts=") { format!("agent.protectedPorts={{TCP/{PORT},TCP/{ADDED_PORT}}}") } else { v.clone() })
        .chain(["admission.refuseForeignNetworkPolicies=false".to_string()])
        .collect();
    for v in &upgraded_values {
        upgrade.extend(["--set", v.as_str()]);
    }
    helm(&upgrade);
    let old_agent = agent_pod.metadata.name.clone().unwrap();
    let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), &agents);
    let rolled_at = Instant::now();
    loop {
        assert!(!clients.reaches(REFUSED, PORT), "the node opened while the agent rolled");
        let ds = daemonsets.get("jpki-access-agent").await.unwrap();
        let status = ds.status.unwrap_or_default();
        let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), &agents).list(&ListParams::default()).await.unwrap().items;
        let rolled = status.observed_generation == ds.metadata.generation
            && status.updated_number_scheduled == Some(1)
            && status.number_ready == 1
            && pods.iter().all(|p| p.metadata.name.as_deref() != Some(old_agent.as_str()));
        if rolled && !clients.reaches(REFUSED, ADDED_PORT) {
            break;
        }
        assert!(rolled_at.elapsed() < Duration::from_secs(120), "the agent did not roll to the new port within 120 s:\n{}", diagnose(&agents));
    }
    eprintln!("upgrade: the new agent enforces the added port {:.1} s after helm upgrade", rolled_at.elapsed().as_secs_f64());
    assert!(!clients.reaches(APPROVED, ADDED_PORT), "the revoked source is refused on the added port too");
    let policy = kubectl(&["get", "validatingadmissionpolicy", "jpki-access-foreign-network-policies"]);
    assert!(!policy.status.success(), "the policy the upgrade turned off is still there");

    // 7. helm uninstall: the agent saw its DaemonSet deleted and removed its table and persisted set; no object of
    //    the release remains.
    helm(&["uninstall", "jpki", "--namespace", &release.name]);
    let removed = eventually(Duration::from_secs(60), "the agent's table is gone from the node", || async { !node_has_agent_table() }).await;
    eprintln!("uninstall: the node's table removed {:.1} s after helm uninstall", removed.as_secs_f64());
    assert!(clients.reaches(REFUSED, PORT), "after the uninstall the port is no longer filtered");
    assert!(!std::path::Path::new(&format!("{state_dir}/allowlist-production.json")).exists(), "the persisted set is left on the node");
    eventually(Duration::from_secs(60), "the agents' namespace is gone", || async { !kubectl(&["get", "namespace", &agents]).status.success() }).await;
    let cluster_scoped = kubectl_ok(&[
        "get",
        "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        "app.kubernetes.io/instance=jpki",
        "-o",
        "name",
    ]);
    assert_eq!(cluster_scoped.trim(), "", "cluster-scoped objects of the release remain");
    let namespaced = kubectl_ok(&[
        "get",
        "deployments,daemonsets,pods,services,serviceaccounts,configmaps,roles,rolebindings,networkpolicies",
        "-n",
        &release.name,
        "-l",
        "app.kubernetes.io/instance=jpki",
        "-o",
        "name",
    ]);
    assert_eq!(namespaced.trim(), "", "objects of the release remain in its namespace");
    let _ = std::fs::remove_dir_all(&state_dir);
}

/// Requests through a pod of the controller's service account (its token projected by the kubelet, bound to the
/// pod): what the chart grants works, the rest is refused by RBAC or by the chart's admission policy.
async fn controller_token_rights(client: &Client, release: &str, forms: &str) {
    create_pod(client, release, restricted_server_pod("rights", "jpki-access-controller")).await;
    let pod = wait_ready(client, release, "rights", Duration::from_secs(120)).await;
    let addr = SocketAddr::new(pod.status.unwrap().pod_ip.unwrap().parse().unwrap(), 8080);
    let allowed = [
        ("GET", "/apis/access.jpki.dev/v1alpha1/accessregistrations".to_string(), ""),
        ("GET", format!("/apis/coordination.k8s.io/v1/namespaces/{release}/leases/jpki-access-controller"), ""),
        ("GET", "/apis/access.jpki.dev/v1alpha1/namespaces/jpki-system/accessallowlists".to_string(), ""),
    ];
    for (method, path, body) in &allowed {
        let (code, answer) = api_from_pod(addr, method, path, body);
        assert_eq!(code, 200, "{method} {path} with the controller's token: {answer}");
    }
    let configmap = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"jpki-probe","labels":{"app.kubernetes.io/managed-by":"jpki-access"}}}"#;
    let refused = [
        ("GET", format!("/api/v1/namespaces/{release}/secrets"), "", "forbidden"),
        ("POST", format!("/api/v1/namespaces/{release}/pods"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#, "forbidden"),
        ("POST", format!("/apis/access.jpki.dev/v1alpha1/namespaces/{forms}/accessapprovals"), "{}", "forbidden"),
        // RBAC grants ConfigMaps everywhere (it cannot name the forms' namespaces); the admission policy refuses
        // a namespace not labelled access.jpki.dev/managed=true.
        ("POST", "/api/v1/namespaces/kube-system/configmaps".to_string(), configmap, "jpki-access-controller-scope"),
    ];
    for (method, path, body, why) in &refused {
        let (code, answer) = api_from_pod(addr, method, path, body);
        assert!(code == 403 || code == 422, "{method} {path} with the controller's token: {code} {answer}");
        assert!(answer.to_string().contains(why), "{method} {path}: refused, but not by {why}: {answer}");
    }
    Api::<Pod>::namespaced(client.clone(), release).delete("rights", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
}
