//! The test ground's real node (scripts/node, issue #21), for tests/node.rs and tests/node_chart.rs: the node of
//! this run (started once), pods from the test image, and HTTP to the pods' own addresses on the node's bridge.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// What scripts/node sets up: the node's name, its address on its own bridge, the pods' range, the test image.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const TEST_IMAGE: &str = "localhost/jpki-node/testimage:v1";
/// The delay before the test image's /ready answers 200, so Ready can only come from the probe.
pub const READY_AFTER_SECS: i64 = 3;

/// The node of this run (started on first use); its name.
pub fn node() -> &'static str {
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
pub async fn namespace_with_pod_security(client: &Client, prefix: &str, level: &str) -> TestNamespace {
    let ns = TestNamespace::new(client, prefix).await;
    let labels: Vec<String> = ["enforce", "warn", "audit"].iter().map(|mode| format!("pod-security.kubernetes.io/{mode}={level}")).collect();
    let mut args = vec!["label", "namespace", ns.name.as_str()];
    args.extend(labels.iter().map(String::as_str));
    kubectl_ok(&args);
    ns
}

/// The test image's server, as a pod that passes Pod Security `restricted`.
pub fn restricted_server_pod(name: &str, service_account: &str) -> Value {
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

pub async fn create_pod(client: &Client, ns: &str, manifest: Value) -> Pod {
    let pod: Pod = serde_json::from_value(manifest).unwrap();
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap()
}

pub fn condition_time(pod: &Pod, kind: &str) -> Option<jiff::Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == kind && c.status == "True")?;
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// Waits until the pod is Ready; panics with its status and events otherwise.
pub async fn wait_ready(client: &Client, ns: &str, name: &str, limit: Duration) -> Pod {
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
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
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
pub fn api_from_pod(addr: SocketAddr, method: &str, api_path: &str, body: &str) -> (u16, Value) {
    let (status, relay) = http(addr, method, &format!("/api?path={api_path}"), body);
    assert_eq!(status, 200, "the pod's relay to the API server failed ({api_path}): {relay}");
    let relay: Value = serde_json::from_str(&relay).unwrap();
    let answer = serde_json::from_str(relay["body"].as_str().unwrap()).unwrap_or(Value::Null);
    (relay["status"].as_u64().unwrap() as u16, answer)
}
