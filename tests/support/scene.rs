//! A scene of the controller tests (tests/controller.rs, tests/decisions.rs): a namespace of its own, verifiers
//! filing in it, registrations and approvals made as the API server stores them, all removed at the end.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::*;
use jpki_access::api::registration::RegistrationPhase;
use jpki_access::api::{AccessApproval, AccessRegistration, Decision, SignatureVerifier};
use jpki_access::domain::approve::approval_for;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;

/// A test's own verifiers and namespace, removed (and waited for) at the end.
pub struct Scene {
    pub client: Client,
    pub ns: String,
    pub verifiers: Vec<String>,
}

impl Scene {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        install_crds(client).await;
        kubectl_ok(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-R", "-f", path_str(&repo_root().join("examples"))]);
        let ns = TestNamespace::new(client, prefix).await;
        let name = ns.name.clone();
        std::mem::forget(ns); // cleaned up synchronously by `cleanup`
        Scene { client: client.clone(), ns: name, verifiers: Vec::new() }
    }

    /// A verifier filing in this scene's namespace (or another namespace, for the conflict test).
    pub async fn verifier(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.ns);
        let v: SignatureVerifier = serde_json::from_value(json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier", "metadata": {"name": full},
            "spec": {"displayName": name, "organizationType": "LocalGovernment", "lgCode": "011002",
                     "roles": ["SignatureVerifier", "UserAuthenticationVerifier"], "namespace": self.ns,
                     "agreement": {"effectiveDate": "2026-01-01"},
                     "procedure": {"confidentialityPledgeReceivedOn": "2026-01-01", "testEnvironmentApplicationReceivedOn": "2026-01-01",
                                   "verificationTestCompletedOn": "2026-01-01"}}
        }))
        .unwrap();
        Api::<SignatureVerifier>::all(self.client.clone()).create(&PostParams::default(), &v).await.unwrap();
        self.verifiers.push(full.clone());
        full
    }

    pub fn registration(&self, verifier: &str, name: &str, cidrs: &[&str], start: &str, end: Option<&str>) -> AccessRegistration {
        let mut spec = json!({"verifierRef": verifier, "environment": "Production", "connectionMethod": "Lgwan", "receivedOn": "2026-03-01",
            "sourceCidrs": cidrs, "accessStartDate": start, "provisionMethods": {"signing": "Ocsp", "userAuthentication": "Crl"},
            "officialSealAffixed": true});
        if let Some(end) = end {
            spec["accessEndDate"] = json!(end);
        }
        serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
            "metadata": {"name": name, "namespace": self.ns}, "spec": spec}))
        .unwrap()
    }

    pub fn registrations(&self) -> Api<AccessRegistration> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create(&self, reg: &AccessRegistration) -> AccessRegistration {
        self.registrations().create(&PostParams::default(), reg).await.unwrap()
    }

    pub async fn approve(&self, reg: &AccessRegistration, at: &str) -> AccessApproval {
        self.decide(reg, Decision::Approved, at).await
    }

    /// Records a decision on the registration as stored now (its uid and content), saying `approved_at`; the API
    /// server gives it its creation time.
    pub async fn decide(&self, reg: &AccessRegistration, decision: Decision, approved_at: &str) -> AccessApproval {
        let namespace = reg.namespace().unwrap_or_else(|| self.ns.clone());
        let regs: Api<AccessRegistration> = Api::namespaced(self.client.clone(), &namespace);
        let current = regs.get(&reg.name_any()).await.unwrap();
        let approval = approval_for(&current, decision, "approver@j-lis", approved_at.parse().unwrap(), None).unwrap();
        Api::<AccessApproval>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &approval).await.unwrap()
    }

    /// A verifier filing in `namespace` (not the scene's): a second verifier for conflicts.
    pub async fn verifier_in(&mut self, name: &str, namespace: &str) -> String {
        let full = format!("{}-{name}", self.ns);
        let v: SignatureVerifier = serde_json::from_value(json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier", "metadata": {"name": full},
            "spec": {"displayName": name, "organizationType": "LocalGovernment", "lgCode": "011002",
                     "roles": ["SignatureVerifier", "UserAuthenticationVerifier"], "namespace": namespace,
                     "agreement": {"effectiveDate": "2026-01-01"},
                     "procedure": {"verificationTestCompletedOn": "2026-01-01"}}
        }))
        .unwrap();
        Api::<SignatureVerifier>::all(self.client.clone()).create(&PostParams::default(), &v).await.unwrap();
        self.verifiers.push(full.clone());
        full
    }

    pub async fn phase(&self, name: &str) -> Option<RegistrationPhase> {
        self.registrations().get(name).await.ok()?.status?.phase
    }

    pub async fn wait_phase(&self, name: &str, phase: RegistrationPhase, limit: Duration) -> Duration {
        eventually(limit, &format!("{name} reaches {phase:?}"), || async { self.phase(name).await == Some(phase) }).await
    }

    pub async fn cleanup(self) {
        for v in &self.verifiers {
            let _ = Api::<SignatureVerifier>::all(self.client.clone()).delete(v, &DeleteParams::default()).await;
        }
        delete_namespace_and_wait(&self.client, &self.ns).await;
        forget_hold_baselines(&self.client).await;
    }
}

/// The tests share one control plane and the examples' `production` environment, whose policy holds a mass
/// removal: every test's clean-up removes its CIDRs, and against a baseline that grows with everything published
/// since a person's last release, those removals add up until a later test's allowlist is held. A person would
/// release each clean-up; the test's shortcut is to forget the baselines once its objects are gone (the next pass
/// takes what is live as the baseline). Tests of the hold itself set up their own.
pub async fn forget_hold_baselines(client: &Client) {
    use jpki_access::api::{AccessAllowlist, AccessAllowlistShard};
    let indexes: Api<AccessAllowlist> = Api::namespaced(client.clone(), "jpki-system");
    for i in indexes.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        if i.name_any().starts_with("jpki-hold-baseline-") {
            let _ = indexes.delete(&i.name_any(), &DeleteParams::default()).await;
        }
    }
    let shards: Api<AccessAllowlistShard> = Api::namespaced(client.clone(), "jpki-system");
    for s in shards.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        if s.name_any().starts_with("jpki-hold-baseline-") {
            let _ = shards.delete(&s.name_any(), &DeleteParams::default()).await;
        }
    }
}

/// An environment's allowlist as published: CIDRs of the shards named by the signed index, verified as the agents
/// verify it (with the tests' public key).
pub async fn published(client: &Client, env: &str) -> Vec<String> {
    use jpki_access::api::{AccessAllowlist, AccessAllowlistShard, AllowlistPurpose};
    let key = jpki_access::wire::signing::PublicKey::from_file(&super::public_key()).unwrap();
    let expected = jpki_access::wire::allowlist::Expected { namespace: "jpki-system", environment: env, purpose: AllowlistPurpose::Enforce };
    // The index and the shards are read by two requests: a set the controller is writing at that moment may be
    // half-written (a shard newer than its index). Read again, as the agents wait for it; a forgery fails the test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let index = Api::<AccessAllowlist>::namespaced(client.clone(), "jpki-system").get_opt(&format!("jpki-allowlist-{env}")).await.unwrap();
        if index.is_none() {
            return Vec::new();
        }
        let shards = Api::<AccessAllowlistShard>::namespaced(client.clone(), "jpki-system").list(&Default::default()).await.unwrap().items;
        match jpki_access::wire::allowlist::assemble(expected, index.as_ref(), |n| shards.iter().find(|s| s.metadata.name.as_deref() == Some(n)), &key) {
            Ok(set) => return set.cidrs.iter().map(ToString::to_string).collect(),
            Err(refusal) if refusal.may_be_in_flight() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(refusal) => panic!("the published allowlist of {env} does not verify: {refusal}"),
        }
    }
}

/// The CIDRs of `cidrs` that start with `prefix` (a test's own address block).
pub fn ours(cidrs: Vec<String>, prefix: &str) -> Vec<String> {
    cidrs.into_iter().filter(|c| c.starts_with(prefix)).collect()
}
