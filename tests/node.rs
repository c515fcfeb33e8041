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
use kube::api::{Api, PostParams};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use support::node::*;
use support::*;

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
