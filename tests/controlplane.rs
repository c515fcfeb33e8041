//! Acceptance tests of the test control plane itself (issue #3): version, CRDs and status, garbage collection,
//! RBAC, Leases, and clear start-up failures. They run against the real kube-apiserver of tests/testenv.
#![cfg(feature = "cluster-tests")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::AccessEnvironment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test]
async fn version_is_the_pinned_release_and_kubectl_works() {
    let client = client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.3", "unstamped or wrong kube-apiserver version");
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "36"));

    let namespaces = kubectl_ok(&["get", "ns", "-o", "name"]);
    for ns in ["namespace/default", "namespace/kube-system", "namespace/kube-public"] {
        assert!(namespaces.lines().any(|l| l == ns), "{ns} missing from kubectl get ns:\n{namespaces}");
    }
    let client_version = kubectl_ok(&["version", "--client", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&client_version).unwrap();
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.36.3");
}

#[tokio::test]
async fn crd_is_established_and_status_goes_through_the_subresource() {
    let client = client().await;
    install_crds(&client).await;

    let api: Api<AccessEnvironment> = Api::all(client.clone());
    let name = format!("t-env-{}", unique_suffix());
    let manifest = json!({
        "apiVersion": "access.jpki.dev/v1alpha1",
        "kind": "AccessEnvironment",
        "metadata": {"name": name},
        "spec": {
            "environment": "Test",
            "serviceNamespace": "jpki-test",
            "podSelector": {"matchLabels": {"app": "ocsp"}},
            "endpoints": [{"name": "ocsp", "provisionMethod": "Ocsp",
                           "service": {"name": "ocsp-responder", "port": 8080}, "host": "ocsp.test.jpki.example"}],
            // A status sent with the main resource must be ignored: status is a subresource.
        },
        "status": {"cidrCount": 99}
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let created = api.patch(&name, &pp, &Patch::Apply(&manifest)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "status must not be written through the main resource");

    let status = json!({
        "apiVersion": "access.jpki.dev/v1alpha1",
        "kind": "AccessEnvironment",
        "status": {"observedGeneration": 1, "cidrCount": 3, "allowlistDigest": format!("sha256:{}", "0".repeat(64))}
    });
    let patched = api.patch_status(&name, &pp, &Patch::Apply(&status)).await.unwrap();
    let st = patched.status.unwrap();
    assert_eq!((st.cidr_count, st.observed_generation), (Some(3), Some(1)));
    assert_eq!(patched.metadata.generation, Some(1), "a status write must not bump the generation");

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

fn config_map(name: &str, owner: Option<&ConfigMap>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.metadata.name.clone().unwrap(),
                    uid: o.metadata.uid.clone().unwrap(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn garbage_collector_removes_owned_objects_and_namespaces_terminate() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let owner = cms.create(&PostParams::default(), &config_map("owner", None)).await.unwrap();
    cms.create(&PostParams::default(), &config_map("child", Some(&owner))).await.unwrap();

    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    let took = eventually(Duration::from_secs(60), "owned ConfigMap collected", || async { cms.get_opt("child").await.unwrap().is_none() }).await;
    eprintln!("garbage collection took {took:?}");

    // A namespace with content is finalised by the namespace controller and disappears.
    let doomed = format!("t-doomed-{}", unique_suffix());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &Namespace { metadata: ObjectMeta { name: Some(doomed.clone()), ..Default::default() }, ..Default::default() })
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &doomed).create(&PostParams::default(), &config_map("content", None)).await.unwrap();
    namespaces.delete(&doomed, &DeleteParams::default()).await.unwrap();
    let took = eventually(Duration::from_secs(60), "deleted namespace gone", || async { namespaces.get_opt(&doomed).await.unwrap().is_none() }).await;
    eprintln!("namespace deletion took {took:?}");
}

fn is_forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 403)
}

#[tokio::test]
async fn rbac_refuses_what_the_role_does_not_grant() {
    let admin = client().await;
    let tester = client_for_context(Some("tester")).await;
    let ns = TestNamespace::new(&admin, "rbac").await;

    let tester_cms: Api<ConfigMap> = Api::namespaced(tester.clone(), &ns.name);
    let err = tester_cms.list(&ListParams::default()).await.unwrap_err();
    assert!(is_forbidden(&err), "the non-admin token must be refused before any grant: {err:?}");

    let role = Role {
        metadata: ObjectMeta { name: Some("configmap-reader".into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns.name).create(&PostParams::default(), &role).await.unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("tester-reads-configmaps".into()), ..Default::default() },
        role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "Role".into(), name: "configmap-reader".into() },
        subjects: Some(vec![Subject { api_group: Some("rbac.authorization.k8s.io".into()), kind: "User".into(), name: "jpki-tester".into(), namespace: None }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns.name).create(&PostParams::default(), &binding).await.unwrap();

    eventually(Duration::from_secs(10), "granted list allowed", || async { tester_cms.list(&ListParams::default()).await.is_ok() }).await;
    let err = tester_cms.create(&PostParams::default(), &config_map("not-allowed", None)).await.unwrap_err();
    assert!(is_forbidden(&err), "create is not granted: {err:?}");
    let err = Api::<ConfigMap>::namespaced(tester, "default").list(&ListParams::default()).await.unwrap_err();
    assert!(is_forbidden(&err), "the grant is limited to its namespace: {err:?}");
}

#[tokio::test]
async fn lease_can_be_acquired_and_renewed_with_optimistic_concurrency() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "lease").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let now = || MicroTime(jiff::Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta { name: Some("jpki-access-controller".into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some("replica-a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();

    let mut renewed = created.clone();
    let first_renew = now();
    renewed.spec.as_mut().unwrap().renew_time = Some(first_renew.clone());
    let renewed = leases.replace("jpki-access-controller", &PostParams::default(), &renewed).await.unwrap();
    assert_ne!(renewed.metadata.resource_version, created.metadata.resource_version);
    assert_eq!(renewed.spec.as_ref().unwrap().renew_time.as_ref().unwrap().0.as_second(), first_renew.0.as_second());

    // A second candidate writing from a stale read loses: the basis of leader election.
    let mut stale = created;
    stale.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    let err = leases.replace("jpki-access-controller", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "stale write must conflict: {err:?}");
    let current = leases.get("jpki-access-controller").await.unwrap();
    assert_eq!(current.spec.unwrap().holder_identity.as_deref(), Some("replica-a"));
}

#[test]
fn startup_fails_fast_and_says_why() {
    let script = repo_root().join("scripts/controlplane");
    let state = tempfile::tempdir().unwrap();

    // A binary path that does not exist.
    let started = Instant::now();
    let out =
        Command::new(&script).arg("start").env("JPKI_TESTENV_BIN", "/nonexistent/kube-testenv").env("JPKI_CONTROLPLANE_DIR", state.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/kube-testenv does not exist"), "unclear error: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A file that is not an executable.
    let broken = state.path().join("kube-testenv");
    std::fs::write(&broken, "not a binary").unwrap();
    let out = Command::new(&script).arg("start").env("JPKI_TESTENV_BIN", &broken).env("JPKI_CONTROLPLANE_DIR", state.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not executable"));

    // A port clash: the apiserver port is taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let bin = repo_root().join("target/testenv/kube-testenv");
    let started = Instant::now();
    let out = Command::new(&script)
        .args(["start", "--", "--port", &port])
        .env("JPKI_TESTENV_BIN", &bin)
        .env("JPKI_CONTROLPLANE_DIR", state.path().join("clash"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start must fail on a port clash");
    assert!(stderr.contains(&format!("port 127.0.0.1:{port} (kube-apiserver --secure-port) is not free")), "unclear error: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}
