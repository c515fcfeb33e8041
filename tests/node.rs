//! The test ground's real node (scripts/node, issue #21): kubelet v1.36.3 and containerd v2.4.2 joined to the test
//! control plane. Pods from an image imported without a registry become Ready through their probes, their projected
//! service-account tokens work against the API server and are refused what RBAC does not grant, a hostNetwork pod
//! runs on the node's address, and Pod Security admission refuses a privileged pod in a `restricted` namespace.
//!
//! The node is started once per run: `scripts/test` starts it and exports `JPKI_TEST_NODE`; without it the first test
//! here runs `scripts/node start` (idempotent; needs root). The tests judge from outside: through the API server
//! and over HTTP to the pods' own addresses on the node's bridge.
#![cfg(feature = "cluster-tests")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use support::*;

/// What scripts/node sets up: the node's name, its address on its own bridge, the pods' range, the test image.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const TEST_IMAGE: &str = "localhost/jpki-node/testimage:v1";
/// The delay before the test image's /ready answers 200, so Ready can only come from the probe.
const READY_AFTER_SECS: i64 = 3;

/// The node of this run (started on first use); its name.
fn node() -> &'static str {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| {
        if let Some(name) = std::env::var_os("JPKI_TEST_NODE") {
            return name.to_string_lossy().into_owned();
        }
        // The control plane's state directory is where its kubeconfig is; scripts/node reads the CA and port there.
        let cp_dir: PathBuf = control_plane().kubeconfig.parent().unwrap().to_path_buf();
        let script = repo_root().join("scripts/node");
        let out = Command::new(&script)
            .arg("start")
            .env("JPKI_CONTROLPLANE_DIR", &cp_dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "scripts/node start failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().expect("node name on the last line").trim().to_string()
    })
}

/// A namespace whose Pod Security level is enforced (and warned and audited) as `level`.
async fn namespace_with_pod_security(client: &Client, prefix: &str, level: &str) -> TestNamespace {
    let ns = TestNamespace::new(client, prefix).await;
    let labels: Vec<String> = ["enforce", "warn", "audit"].iter().map(|mode| format!("pod-security.kubernetes.io/{mode}={level}")).collect();
    let mut args = vec!["label", "namespace", ns.name.as_str()];
    args.extend(labels.iter().map(String::as_str));
    kubectl_ok(&args);
    ns
}

/// The test image's server, as a pod that passes Pod Security `restricted`.
fn restricted_server_pod(name: &str, service_account: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "serviceAccountName": service_account,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "server", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "args": ["--listen", ":8080", "--ready-after", format!("{READY_AFTER_SECS}s")],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    })
}

async fn create_pod(client: &Client, ns: &str, manifest: Value) -> Pod {
    let pod: Pod = serde_json::from_value(manifest).unwrap();
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap()
}

fn condition_time(pod: &Pod, kind: &str) -> Option<jiff::Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == kind && c.status == "True")?;
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// Waits until the pod is Ready; panics with its status and events otherwise.
async fn wait_ready(client: &Client, ns: &str, name: &str, limit: Duration) -> Pod {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let started = std::time::Instant::now();
    loop {
        let pod = api.get(name).await.unwrap();
        if condition_time(&pod, "Ready").is_some() {
            return pod;
        }
        if started.elapsed() > limit {
            let events = kubectl(&["get", "events", "-n", ns, "--field-selector", &format!("involvedObject.name={name}")]);
            panic!(
                "pod {ns}/{name} not Ready within {limit:?}; status: {}\nevents:\n{}",
                serde_json::to_string_pretty(&pod.status).unwrap(),
                String::from_utf8_lossy(&events.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One HTTP/1.0 request to `addr` (a pod's or the node's address; nothing here leaves the machine); returns the
/// status code and body. HTTP/1.0, so the answer is never chunked and ends when the server closes.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no HTTP status from {addr}: {response}"));
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Asks the test image in the pod at `addr` to make a request to the API server with its own projected token;
/// returns the API server's status code and body.
fn api_from_pod(addr: SocketAddr, method: &str, api_path: &str, body: &str) -> (u16, Value) {
    let (status, relay) = http(addr, method, &format!("/api?path={api_path}"), body);
    assert_eq!(status, 200, "the pod's relay to the API server failed ({api_path}): {relay}");
    let relay: Value = serde_json::from_str(&relay).unwrap();
    let answer = serde_json::from_str(relay["body"].as_str().unwrap()).unwrap_or(Value::Null);
    (relay["status"].as_u64().unwrap() as u16, answer)
}

#[tokio::test]
async fn node_joined_with_the_pinned_kubelet_and_runtime() {
    let client = client().await;
    let name = node();
    let node = Api::<Node>::all(client).get(name).await.unwrap();
    let status = node.status.unwrap();
    let info = status.node_info.unwrap();
    assert_eq!(info.kubelet_version, "v1.36.3");
    assert_eq!(info.container_runtime_version, "containerd://2.4.2");
    let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True", "node {name} not Ready: {ready:?}");
    let addresses = status.addresses.unwrap();
    assert!(addresses.iter().any(|a| a.type_ == "InternalIP" && a.address == NODE_IP.to_string()), "{addresses:?}");
    assert!(node.spec.unwrap().taints.unwrap_or_default().is_empty(), "the node must be schedulable");
}

#[tokio::test]
async fn pod_from_imported_image_becomes_ready_through_its_probe_and_its_token_reaches_the_api_server() {
    let client = client().await;
    let node_name = node();
    let ns = namespace_with_pod_security(&client, "node-pod", "restricted").await;
    // The pod's service account may read ConfigMaps in its namespace, and nothing else.
    kubectl_ok(&["create", "serviceaccount", "prober", "-n", &ns.name]);
    kubectl_ok(&["create", "role", "read-configmaps", "--verb=get,list", "--resource=configmaps", "-n", &ns.name]);
    kubectl_ok(&["create", "rolebinding", "prober", "--role=read-configmaps", &format!("--serviceaccount={}:prober", ns.name), "-n", &ns.name]);

    // No nodeName: kube-scheduler binds it; the kubelet runs it from the image imported into containerd.
    create_pod(&client, &ns.name, restricted_server_pod("prober", "prober")).await;
    let pod = wait_ready(&client, &ns.name, "prober", Duration::from_secs(120)).await;

    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(node_name));
    let status = pod.status.as_ref().unwrap();
    let container = &status.container_statuses.as_ref().unwrap()[0];
    assert!(container.ready && container.image.contains("jpki-node/testimage"), "{container:?}");
    // Ready came from the readiness probe: not before /ready started answering 200, READY_AFTER_SECS after start.
    let started_at = container.state.as_ref().unwrap().running.as_ref().unwrap().started_at.as_ref().unwrap().0;
    let ready_at = condition_time(&pod, "Ready").unwrap();
    let waited = ready_at.duration_since(started_at).as_secs();
    assert!(waited >= READY_AFTER_SECS - 1, "Ready {waited}s after the container started, before its probe could pass");

    let pod_ip: Ipv4Addr = status.pod_ip.as_deref().unwrap().parse().unwrap();
    assert_eq!(pod_ip.octets()[..3], NODE_IP.octets()[..3], "pod IP {pod_ip} outside the node's pod range");
    assert_eq!(status.host_ip.as_deref(), Some(NODE_IP.to_string().as_str()));
    let addr = SocketAddr::from((pod_ip, 8080));

    // The token is the projected one the ServiceAccount admission plugin mounts, bound to this pod and node.
    let projected = spec.volumes.as_ref().unwrap().iter().find(|v| v.name.starts_with("kube-api-access-")).expect("projected token volume");
    let sources = projected.projected.as_ref().unwrap().sources.as_ref().unwrap();
    assert!(sources.iter().any(|s| s.service_account_token.is_some()), "{sources:?}");

    let (code, review) = api_from_pod(
        addr,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
    );
    assert_eq!(code, 201, "{review}");
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], format!("system:serviceaccount:{}:prober", ns.name));
    assert_eq!(user["extra"]["authentication.kubernetes.io/pod-name"][0], "prober", "token not bound to the pod: {user}");
    assert_eq!(user["extra"]["authentication.kubernetes.io/node-name"][0], node_name, "token not bound to the node: {user}");

    // What its Role grants works...
    let (code, list) = api_from_pod(addr, "GET", &format!("/api/v1/namespaces/{}/configmaps", ns.name), "");
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert!(names.contains(&"kube-root-ca.crt"), "{names:?}");
    // ...and what it does not grant is refused by the API server.
    for refused in [
        format!("/api/v1/namespaces/{}/secrets", ns.name),
        "/api/v1/namespaces/kube-system/configmaps".to_string(),
        format!("/api/v1/namespaces/{}/pods", ns.name),
        "/api/v1/nodes".to_string(),
    ] {
        let (code, answer) = api_from_pod(addr, "GET", &refused, "");
        assert_eq!(code, 403, "GET {refused} with the pod's token: {answer}");
        assert_eq!(answer["reason"], "Forbidden");
    }
    let (code, answer) = api_from_pod(addr, "POST", &format!("/api/v1/namespaces/{}/configmaps", ns.name), r#"{"metadata":{"name":"x"}}"#);
    assert_eq!(code, 403, "creating a ConfigMap with a read-only token: {answer}");
}

#[tokio::test]
async fn host_network_pod_runs_on_the_node_address() {
    let client = client().await;
    node();
    // hostNetwork is refused by the baseline and restricted levels; a namespace of the privileged level admits it.
    let ns = namespace_with_pod_security(&client, "node-hostnet", "privileged").await;
    // A port free on the node's address now, for the pod to listen on in the node's network namespace.
    let port = std::net::TcpListener::bind((NODE_IP, 0)).unwrap().local_addr().unwrap().port();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet"},
        "spec": {
            "hostNetwork": true,
            "containers": [{
                "name": "server", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "args": ["--listen", format!("{NODE_IP}:{port}"), "--ready-after", "1s"],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 1}
            }]
        }
    });
    create_pod(&client, &ns.name, pod).await;
    let pod = wait_ready(&client, &ns.name, "hostnet", Duration::from_secs(120)).await;
    let status = pod.status.unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some(NODE_IP.to_string().as_str()), "a hostNetwork pod has the node's address");

    let addr = SocketAddr::from((NODE_IP, port));
    assert_eq!(http(addr, "GET", "/healthz", ""), (200, "ok\n".to_string()));
    // From the node's own network namespace the API server's Service address works too.
    let (code, version) = api_from_pod(addr, "GET", "/version", "");
    assert_eq!((code, version["gitVersion"].as_str()), (200, Some("v1.36.3")));
}

#[tokio::test]
async fn pod_security_restricted_refuses_a_privileged_pod() {
    let client = client().await;
    node();
    let ns = namespace_with_pod_security(&client, "node-psa", "restricted").await;
    let mut privileged = restricted_server_pod("privileged", "default");
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let pod: Pod = serde_json::from_value(privileged).unwrap();
    let err = Api::<Pod>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &pod).await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("violates PodSecurity \"restricted:latest\""), "{}", status.message);
            assert!(status.message.contains("privileged"), "{}", status.message);
        }
        other => panic!("expected a 403 from Pod Security admission, got {other:?}"),
    }
    // The same pod without privilege is admitted: the refusal was Pod Security's, not a broken namespace.
    create_pod(&client, &ns.name, restricted_server_pod("compliant", "default")).await;
}
