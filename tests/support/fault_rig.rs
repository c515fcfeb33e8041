//! The rig of the fault tests (tests/faults.rs, tests/faults_more.rs): a control plane of one test, the example
//! environments, a namespace with one verifier, the edge topology, and the oracle's checker set up on them.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::edge::{Agent, wait_for};
use super::netns::*;
use super::*;
use jpki_access::api::registration::RegistrationPhase;
use jpki_access::api::{AccessApproval, AccessRegistration, Decision, SignatureVerifier};
use jpki_access::domain::approve::approval_for;
use jpki_oracle::{Checker, Expect, Scenario};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// How a test revokes the revocable pair.
#[derive(Clone, Copy)]
pub enum Revoke {
    Approval,
    Registration,
}

/// Issue #7's bound: an approval reaches the edge within 5 s.
pub const PROPAGATION: Duration = Duration::from_secs(5);
/// The controller's Lease (src/controller/mod.rs): 15 s, retried every 5 s by the standby.
pub const TAKEOVER: Duration = Duration::from_secs(15 + 5);

/// A source pair each test revokes during its fault (registration `revocable`, filed by [`Rig::with_edge`]).
pub const REVOKED4: &str = "198.51.100.30";
pub const REVOKED6: &str = "2001:db8:1::30";

/// A control plane of one test, the example environments, a namespace with one verifier, and the edge topology.
pub struct Rig {
    pub cp: OwnControlPlane,
    pub client: Client,
    pub topo: Arc<Topology>,
    pub ns: String,
    pub verifier: String,
}

impl Rig {
    pub async fn new(tag: &str) -> Rig {
        let _ = control_plane(); // kubectl and the binary are built
        let cp = OwnControlPlane::start(tempfile::tempdir().unwrap());
        let client = client_for_kubeconfig(&cp.kubeconfig).await;
        install_crds(&client).await;
        let topo = Topology::new(tag).with_listeners();
        topo.add_source(REVOKED4);
        topo.add_source(REVOKED6);
        topo.settle();
        let rig = Rig { cp, client, topo: Arc::new(topo), ns: "faults".into(), verifier: "faults-verifier".into() };
        rig.kubectl(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-R", "-f", path_str(&repo_root().join("examples"))]);
        rig.kubectl(&["create", "namespace", &rig.ns]);
        let v: SignatureVerifier = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier",
            "metadata": {"name": rig.verifier}, "spec": {"displayName": "fault tests", "organizationType": "Other", "corporateNumber": "7000012050002",
            "roles": ["SignatureVerifier"], "namespace": rig.ns, "agreement": {"effectiveDate": "2026-01-01"},
            "procedure": {"verificationTestCompletedOn": "2026-01-01"}}}))
        .unwrap();
        Api::<SignatureVerifier>::all(rig.client.clone()).create(&PostParams::default(), &v).await.unwrap();
        rig
    }

    /// The usual scene: a rig, one controller (no leader election), an agent on `node`, and the client's allowed
    /// addresses and the revocable pair approved and admitted at the edge.
    pub async fn with_edge(tag: &str, node: &str) -> (Rig, ControllerProcess, Agent) {
        let rig = Rig::new(tag).await;
        let mut controller = rig.controller(&["--no-leader-election"]);
        controller.wait_ready().await;
        let agent = rig.agent(node, &[]);
        rig.approve_edge_and_revocable().await;
        (rig, controller, agent)
    }

    /// Files and approves `edge` (C4_OK, C6_OK) and `revocable` (REVOKED4, REVOKED6), and waits until the edge
    /// admits them.
    pub async fn approve_edge_and_revocable(&self) {
        self.register_and_approve("edge", &edge_cidrs()).await.unwrap();
        self.register_and_approve("revocable", &[format!("{REVOKED4}/32"), format!("{REVOKED6}/128")]).await.unwrap();
        let mut probes = expect_only(&[C4_OK, C6_OK]);
        probes.extend([probe(REVOKED4, R4, 443, true), probe(REVOKED4, S4, 443, true), probe(REVOKED6, R6, 443, true)]);
        wait_for(&self.topo, "approved", &probes, Duration::from_secs(15));
    }

    /// The scenario after [`Rig::approve_edge_and_revocable`], in the test's own words: the edge's sources and the
    /// revocable pair admitted, the client's other sources refused.
    pub fn scenario(&self, admit_within: Duration, refuse_within: Duration) -> Scenario {
        let scenario = Scenario::new(admit_within, refuse_within);
        for source in [C4_OK, C6_OK, REVOKED4, REVOKED6] {
            scenario.watch(source, Expect::Admit);
        }
        for source in [C4_NO, C6_NO] {
            scenario.watch(source, Expect::Refuse);
        }
        scenario
    }

    /// Revokes the revocable pair by deleting its approval (`Approval`) or its registration: declared in the
    /// scenario just before the write.
    pub async fn revoke(&self, scenario: &Scenario, how: Revoke) {
        scenario.refuse(&[REVOKED4, REVOKED6]);
        match how {
            Revoke::Approval => {
                let approvals: Api<AccessApproval> = Api::namespaced(self.client.clone(), &self.ns);
                let bound = approvals.list(&ListParams::default()).await.unwrap();
                let approval = bound.items.iter().find(|a| a.spec.registration_ref == "revocable").expect("the approval of revocable");
                approvals.delete(&approval.name_any(), &Default::default()).await.unwrap();
            }
            Revoke::Registration => {
                self.registrations().delete("revocable", &Default::default()).await.unwrap();
            }
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(&control_plane().kubectl).arg("--kubeconfig").arg(&self.cp.kubeconfig).args(args).output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn registrations(&self) -> Api<AccessRegistration> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn registration(&self, name: &str, cidrs: &[String]) -> AccessRegistration {
        serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
            "metadata": {"name": name, "namespace": self.ns}, "spec": {"verifierRef": self.verifier, "environment": "Production",
            "connectionMethod": "Internet", "sourceCidrs": cidrs, "accessStartDate": "2026-04-01",
            "provisionMethods": {"signing": "Ocsp", "userAuthentication": "None"}, "officialSealAffixed": true}}))
        .unwrap()
    }

    /// Files a registration and approves it as filed.
    pub async fn register_and_approve(&self, name: &str, cidrs: &[String]) -> Result<(), kube::Error> {
        register_and_approve(&self.client, &self.registration(name, cidrs)).await
    }

    pub fn controller(&self, args: &[&str]) -> ControllerProcess {
        ControllerProcess::start_with_kubeconfig(args, &self.cp.kubeconfig)
    }

    pub fn agent(&self, node: &str, extra: &[&str]) -> Agent {
        Agent::start(&self.cp.kubeconfig, &self.topo.router, node, extra)
    }

    /// The oracle's checker on this rig's edge, judging against `scenario`.
    pub fn checker(&self, scenario: &Scenario, every: Duration) -> Checker {
        let pem = std::fs::read_to_string(public_key()).unwrap();
        let setup = jpki_oracle::Setup {
            kubeconfig: self.cp.kubeconfig.clone(),
            client_netns: self.topo.client.clone(),
            router_netns: self.topo.router.clone(),
            local: [R4.parse().unwrap(), R6.parse().unwrap()],
            forwarded: [S4.parse().unwrap(), S6.parse().unwrap()],
            port: 443,
            // examples/environments.yaml: the production environment's services and pods.
            service_namespace: "jpki-production".into(),
            service_pod: jpki_oracle::netpol::Target {
                labels: [("app.kubernetes.io/part-of".to_string(), "revocation-services".to_string())].into(),
                port: 8080,
                port_name: None,
            },
            allowlist_namespace: "jpki-system".into(),
            environment: "production".into(),
            public_key: jpki_oracle::allowlist::public_key_from_pem(&pem).unwrap(),
            every,
            connect_timeout: Duration::from_millis(300),
        };
        Checker::start(setup, scenario.clone())
    }

    /// Registrations of the rig's namespace that are Active, of all that fit the types (read one by one, so that an
    /// object stored before a schema change does not fail the whole list).
    pub async fn active(&self) -> (usize, usize) {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(self.client.clone(), &self.ns, &kube::api::ApiResource::erase::<AccessRegistration>(&()));
        let Ok(list) = api.list(&ListParams::default()).await else {
            return (0, usize::MAX);
        };
        let readable: Vec<AccessRegistration> = list.items.into_iter().filter_map(|o| serde_json::from_value(serde_json::to_value(o).ok()?).ok()).collect();
        // The revocable pair is revoked by every test: it is not expected to stay Active.
        let readable: Vec<AccessRegistration> = readable.into_iter().filter(|r| r.name_any() != "revocable").collect();
        let active = readable.iter().filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RegistrationPhase::Active)).count();
        (active, readable.len())
    }

    pub async fn wait_all_active(&self, limit: Duration) -> Duration {
        eventually(limit, "every registration Active", || async {
            let (active, all) = self.active().await;
            active == all
        })
        .await
    }
}

pub async fn register_and_approve(client: &Client, reg: &AccessRegistration) -> Result<(), kube::Error> {
    let ns = reg.namespace().unwrap();
    let created = Api::<AccessRegistration>::namespaced(client.clone(), &ns).create(&PostParams::default(), reg).await?;
    let approval = approval_for(&created, Decision::Approved, "approver@j-lis", jiff::Timestamp::now(), None).unwrap();
    Api::<AccessApproval>::namespaced(client.clone(), &ns).create(&PostParams::default(), &approval).await?;
    Ok(())
}

/// The client's allowed addresses, as registration CIDRs.
pub fn edge_cidrs() -> Vec<String> {
    vec![format!("{C4_OK}/32"), format!("{C6_OK}/128")]
}

/// The n-th /24 of a burst, from 10.<first>.0.0 on.
pub fn burst_cidr(first: u32, n: u32) -> String {
    format!("10.{}.{}.0/24", first + n / 256, n % 256)
}

/// Whether the router's whole ruleset, judged by the oracle's own reader, lets `source` reach the router on 443
/// while still refusing C4_NO (so that no table at all, which admits everything, does not count).
pub fn edge_admits(topo: &Topology, source: &str) -> bool {
    use jpki_oracle::nft::{Packet, Path, Ruleset, Verdict};
    let out = topo.nft(&["-j", "list", "ruleset"]);
    let Ok(rules) = Ruleset::parse(&String::from_utf8_lossy(&out.stdout)) else {
        return false;
    };
    let verdict = |from: &str| rules.verdict(&Packet { source: from.parse().unwrap(), destination: R4.parse().unwrap(), port: 443, path: Path::Local });
    verdict(source) == Ok(Verdict::Admitted) && verdict(C4_NO) == Ok(Verdict::Refused)
}

pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name) && l.contains(filter)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}
