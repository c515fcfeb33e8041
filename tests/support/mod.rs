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
                let out = Command::new(&script).arg("start").output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                assert!(out.status.success(), "scripts/controlplane start failed:\n{}", String::from_utf8_lossy(&out.stderr));
                let stdout = String::from_utf8_lossy(&out.stdout);
                PathBuf::from(stdout.lines().last().expect("kubeconfig path on the last line").trim())
            }
        };
        assert!(kubeconfig.exists(), "kubeconfig {} does not exist", kubeconfig.display());
        let kubectl = std::env::var_os("JPKI_KUBECTL").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/testenv/kubectl"));
        assert!(kubectl.exists(), "kubectl {} not found: run scripts/controlplane build (or set JPKI_KUBECTL)", kubectl.display());
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

/// A client of the admin user of any kubeconfig (a test's own control plane).
pub async fn client_for_kubeconfig(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

pub async fn client() -> Client {
    client_for_context(None).await
}

/// Runs the control plane's kubectl (v1.36.3) with the admin kubeconfig.
pub fn kubectl(args: &[&str]) -> Output {
    let cp = control_plane();
    Command::new(&cp.kubectl).arg("--kubeconfig").arg(&cp.kubeconfig).args(args).output().unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"))
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(out.status.success(), "kubectl {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
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
        tokio::time::timeout(Duration::from_secs(30), established).await.unwrap_or_else(|_| panic!("CRD {name} not Established within 30s")).unwrap();
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

/// The test-only key that signs the allowlists of the controllers the tests start (tests/fixtures/signing).
pub fn signing_key() -> PathBuf {
    repo_root().join("tests/fixtures/signing/test-allowlist.key")
}

/// The public key the tests' agents verify with.
pub fn public_key() -> PathBuf {
    repo_root().join("tests/fixtures/signing/test-allowlist.pub")
}

/// A `jpki-access controller` process of a test, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ControllerProcess {
    pub child: std::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

impl ControllerProcess {
    /// Starts the controller against the test control plane; `args` are added to `controller --listen ...`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_kubeconfig(args, &control_plane().kubeconfig)
    }

    pub fn start_with_kubeconfig(args: &[&str], kubeconfig: &Path) -> Self {
        Self::start_with_env(args, kubeconfig, &[])
    }

    /// With extra environment variables (tests/faults_more.rs moves its wall clock with libfaketime's).
    pub fn start_with_env(args: &[&str], kubeconfig: &Path, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("jpki-controller-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jpki-access"))
            .arg("controller")
            .args(["--listen", &format!("127.0.0.1:{port}"), "--debounce-ms", "100"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("JPKI_SIGNING_KEY_FILE", signing_key())
            .env("RUST_LOG", "warn,jpki_access=debug")
            .envs(env.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        ControllerProcess { child, port, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for /readyz (caches synced).
    pub async fn wait_ready(&mut self) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("controller exited ({status}) before it was ready:\n{}", self.log_text());
            }
            if http_get(self.port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200")) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "controller not ready in 30s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of one metric sample (first line starting with `sample`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let body = http_get(self.port, "/metrics").unwrap_or_default();
        body.lines()
            .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
    }

    /// SIGTERM and wait (at most 15 s) for a clean exit; returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        self.signal("TERM");
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (no client library needed for three endpoints).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Deletes a namespace and waits until it is gone (the namespace controller empties it first).
pub async fn delete_namespace_and_wait(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &kube::api::DeleteParams::default()).await;
    eventually(Duration::from_secs(90), "namespace deleted", || async { api.get_opt(name).await.unwrap().is_none() }).await;
}
#[cfg(target_os = "linux")]
pub mod cutoff;
#[cfg(target_os = "linux")]
pub mod edge;
#[cfg(all(target_os = "linux", feature = "fault-tests"))]
pub mod fault_rig;
#[cfg(all(target_os = "linux", feature = "fault-tests"))]
pub mod faultproxy;
pub mod helm;
#[cfg(target_os = "linux")]
pub mod netns;
pub mod node;
pub mod scene;

/// A control plane of one test alone (its own etcd in `dir`), for tests that stop it or need it empty.
pub struct OwnControlPlane {
    pub dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    pub kubeconfig: PathBuf,
}

impl OwnControlPlane {
    pub fn start(dir: tempfile::TempDir) -> OwnControlPlane {
        Self::start_with(dir, &[])
    }

    /// With extra arguments to kube-testenv (after `--`, flags of kube-apiserver, e.g. `--event-ttl=20s`).
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> OwnControlPlane {
        let bin = repo_root().join("target/testenv/kube-testenv");
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut child = Command::new(&bin).args(["--dir", path_str(dir.path())]).args(extra).stdout(std::process::Stdio::piped()).stderr(log).spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert!(!line.trim().is_empty(), "kube-testenv did not start: {}", std::fs::read_to_string(dir.path().join("log")).unwrap_or_default());
        OwnControlPlane { kubeconfig: PathBuf::from(line.trim()), child: Some(child), dir }
    }
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
