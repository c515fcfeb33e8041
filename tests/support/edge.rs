//! A firewall agent process (`jpki-access agent`) applying to a test topology's router namespace, for
//! tests/agent.rs and tests/faults.rs.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::netns::{Probe, Topology};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running agent; stopped with SIGTERM (rules stay) when dropped.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
    /// Its /healthz, /readyz and /metrics.
    pub port: u16,
    /// Its heartbeat Lease is deleted when the agent is dropped, so later tests do not count it as a stale agent.
    pub kubeconfig: PathBuf,
    pub node: String,
}

/// A state directory of its own for each agent of a test (the boot path reads it): the test's temporary dir.
pub fn state_dir(node: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jpki-agent-state-{}-{node}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Agent {
    /// An agent of the production environment (allowlist namespace jpki-system) applying in `router`, protecting
    /// TCP 443 locally and forwarded to the server's addresses; resync every 5 s, heartbeat every 2 s; its state in
    /// [`state_dir`]`(node)`; `extra` are added to its arguments (a later `--nft` replaces the default).
    pub fn start(kubeconfig: &Path, router: &str, node: &str, extra: &[&str]) -> Agent {
        Self::start_with(kubeconfig, &[], router, node, extra)
    }

    /// [`Agent::start`], the agent process itself run under `wrapper` (e.g. `ip netns exec NS`, to give it another
    /// network namespace than the test's); with a wrapper, nft runs in the agent's own namespace.
    pub fn start_with(kubeconfig: &Path, wrapper: &[&str], router: &str, node: &str, extra: &[&str]) -> Agent {
        let log = std::env::temp_dir().join(format!("jpki-agent-{}-{node}.log", std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bin = env!("CARGO_BIN_EXE_jpki-access");
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command.args(["agent", "--environment", "production", "--namespace", "jpki-system", "--node", node, "--resync-seconds", "5"]);
        if wrapper.is_empty() {
            command.args(["--netns", router]);
        }
        let state = state_dir(node);
        let child = command
            .args(["--heartbeat-seconds", "2", "--protected-port", "TCP/443", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--forward-destination", "203.0.113.2/32", "--forward-destination", "2001:db8:2::2/128"])
            .args(["--public-key-file", super::path_str(&super::public_key()), "--state-dir", super::path_str(&state)])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,jpki_access=info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Agent { child, log, port, kubeconfig: kubeconfig.to_path_buf(), node: node.to_string() }
    }

    /// GET on the agent's endpoint: (status code, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let answer = super::http_get(self.port, path)?;
        let code = answer.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
    }

    /// The value of one metric sample of the agent, 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        body.lines()
            .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the agent replaced the table.
    pub fn applies(&self) -> usize {
        self.log().lines().filter(|l| l.contains(": applied digest=")).count()
    }

    /// SIGKILL: no shutdown path at all (its Lease stays, as a killed agent's would).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// Whether the process is still running (a process that exited is a zombie until reaped; ask /proc, since
    /// `Child::try_wait` needs `&mut`).
    pub fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).unwrap_or("Z");
        state != "Z"
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let lease = jpki_access::wire::report::lease_name("production", &self.node);
        let _ = Command::new(&super::control_plane().kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "lease", &lease, "-n", "jpki-system", "--ignore-not-found", "--wait=false", "--request-timeout=10s"])
            .output();
    }
}

/// Polls the probes (short timeout) until all outcomes match; returns how long it took.
pub fn wait_for(topo: &Topology, what: &str, probes: &[Probe], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let outcomes = topo.run_probes(probes, Duration::from_millis(300));
        if probes.iter().zip(&outcomes).all(|(p, o)| p.expect == *o) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}: {outcomes:?}\n{}", topo.list(&["ruleset"]));
    }
}

/// The report of the production agent on `node`, from its heartbeat Lease in jpki-system.
pub async fn report(client: &kube::Client, node: &str) -> Option<jpki_access::wire::report::AgentReport> {
    let lease = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), "jpki-system")
        .get_opt(&jpki_access::wire::report::lease_name("production", node))
        .await
        .ok()??;
    jpki_access::wire::report::heartbeat(&lease).report.ok()
}

// The forms of an edge test: shared by tests/agent.rs and tests/enforcement.rs.
use super::{FIELD_MANAGER, control_plane, delete_namespace_and_wait, install_crds, path_str, repo_root};
use jpki_access::api::{AccessApproval, AccessRegistration, Decision, SignatureVerifier};
use jpki_access::domain::approve::approval_for;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    Client::try_from(Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
}

pub fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(&control_plane().kubectl).arg("--kubeconfig").arg(kubeconfig).args(args).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// CRDs, the example forms (the production environment filters TCP 443, allowlist in jpki-system), a verifier in
/// a namespace of its own and a registration for the client's allowed addresses.
pub async fn setup(client: &Client, kubeconfig: &Path, ns: &str, cidrs: &[&str]) -> AccessRegistration {
    install_crds(client).await;
    kubectl_with(kubeconfig, &["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-R", "-f", path_str(&repo_root().join("examples"))]);
    kubectl_with(kubeconfig, &["create", "namespace", ns]);
    let verifier = format!("{ns}-v");
    let v: SignatureVerifier = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier",
        "metadata": {"name": verifier}, "spec": {"displayName": "agent test", "organizationType": "Other", "corporateNumber": "7000012050002",
        "roles": ["SignatureVerifier"], "namespace": ns, "agreement": {"effectiveDate": "2026-01-01"},
        "procedure": {"verificationTestCompletedOn": "2026-01-01"}}}))
    .unwrap();
    Api::<SignatureVerifier>::all(client.clone()).create(&PostParams::default(), &v).await.unwrap();
    let reg: AccessRegistration = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
        "metadata": {"name": "edge", "namespace": ns}, "spec": {"verifierRef": verifier, "environment": "Production", "connectionMethod": "Internet",
        "sourceCidrs": cidrs, "accessStartDate": "2026-04-01", "provisionMethods": {"signing": "Ocsp", "userAuthentication": "None"},
        "officialSealAffixed": true}}))
    .unwrap();
    Api::<AccessRegistration>::namespaced(client.clone(), ns).create(&PostParams::default(), &reg).await.unwrap()
}

pub async fn approve(client: &Client, reg: &AccessRegistration) -> AccessApproval {
    let a = approval_for(reg, Decision::Approved, "approver@j-lis", jiff::Timestamp::now(), None).unwrap();
    Api::<AccessApproval>::namespaced(client.clone(), &reg.namespace().unwrap()).create(&PostParams::default(), &a).await.unwrap()
}

pub async fn teardown(client: &Client, ns: &str) {
    let _ = Api::<SignatureVerifier>::all(client.clone()).delete(&format!("{ns}-v"), &DeleteParams::default()).await;
    delete_namespace_and_wait(client, ns).await;
}

/// Deletes a test's verifier and its namespace when dropped, also when the test fails half-way (an approved
/// registration left behind would open the edge in the next test).
pub struct FormsCleanup(pub String);

impl Drop for FormsCleanup {
    fn drop(&mut self) {
        let _ = super::kubectl(&["delete", "signatureverifier", &format!("{}-v", self.0), "--ignore-not-found", "--wait=false"]);
        let _ = super::kubectl(&["delete", "namespace", &self.0, "--ignore-not-found", "--wait=false"]);
    }
}
