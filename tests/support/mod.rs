//! Test harness for the tests that need a real Kubernetes API server (feature `cluster-tests`).
//!
//! One control plane serves a whole test run: when `JPKI_TEST_KUBECONFIG` names a kubeconfig (`.ci/run` and
//! `scripts/test` start the control plane once and export it), the tests use it; otherwise the first test calls
//! `scripts/controlplane start`, which builds the Go binary if needed and is idempotent, so every test binary of
//! the run shares the same server. We deliberately do not pick up a plain `KUBECONFIG`: these tests create and
//! delete namespaces, and a developer's KUBECONFIG may point at a real cluster.
//!
//! Every test gets its own namespace (`TestNamespace`), deleted when the test ends.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

pub const FIELD_MANAGER: &str = "jpki-access-tests";

pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared control plane of this test run (started on first use).
pub fn control_plane() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| {
        let kubeconfig = match std::env::var_os("JPKI_TEST_KUBECONFIG") {
            Some(path) => PathBuf::from(path),
            None => {
                let script = repo_root().join("scripts/controlplane");
                let out = Command::new(&script).arg("start").output().unwrap_or_else(|e| {
                    panic!("cannot run {}: {e}", script.display())
                });
                assert!(
                    out.status.success(),
                    "scripts/controlplane start failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let stdout = String::from_utf8_lossy(&out.stdout);
                PathBuf::from(stdout.lines().last().expect("kubeconfig path on the last line").trim())
            }
        };
        assert!(kubeconfig.exists(), "kubeconfig {} does not exist", kubeconfig.display());
        let kubectl = std::env::var_os("JPKI_KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/testenv/kubectl"));
        assert!(
            kubectl.exists(),
            "kubectl {} not found: run scripts/controlplane build (or set JPKI_KUBECTL)",
            kubectl.display()
        );
        ControlPlane { kubeconfig, kubectl }
    })
}

/// A client of the admin user (or of another context of the same kubeconfig, e.g. "tester").
pub async fn client_for_context(context: Option<&str>) -> Client {
    let cp = control_plane();
    let kubeconfig = Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let options = KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
    Client::try_from(config).unwrap()
}

pub async fn client() -> Client {
    client_for_context(None).await
}

/// Runs the control plane's kubectl (v1.36.3) with the admin kubeconfig.
pub fn kubectl(args: &[&str]) -> Output {
    let cp = control_plane();
    Command::new(&cp.kubectl)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"))
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace of one test, deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("t-{prefix}-{}", unique_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("jpki-access-test".to_string(), prefix.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"]);
    }
}

/// A short random suffix for names (namespaces, cluster-scoped objects) so tests never collide.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n}", std::process::id() % 4096, nanos % 65536)
}

/// Installs (server-side apply) the operator's CRDs from the Rust types and waits until each is Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jpki_access::api::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd)).await.unwrap();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
            .unwrap();
    }
}

/// Polls `check` every 200 ms until it returns true or `limit` passes; returns the time it took.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not true within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
