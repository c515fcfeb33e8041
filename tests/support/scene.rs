//! A scene of the controller tests (tests/controller.rs, tests/decisions.rs): a namespace of its own, verifiers
//! filing in it, registrations and approvals made as the API server stores them, all removed at the end.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use super::*;
use jpki_access::api::registration::RegistrationPhase;
use jpki_access::api::{AccessApproval, AccessRegistration, Decision, SignatureVerifier};
use jpki_access::domain::approve::approval_for;
use k8s_openapi::api::core::v1::ConfigMap;
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
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "jpki-system");
    for cm in cms.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        if cm.name_any().starts_with("jpki-hold-baseline-") {
            let _ = cms.delete(&cm.name_any(), &DeleteParams::default()).await;
        }
    }
}

/// The production allowlist as published: CIDRs of the shards named by the index.
pub async fn published(client: &Client, env: &str) -> Vec<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "jpki-system");
    let Some(index) = cms.get_opt(&format!("jpki-allowlist-{env}")).await.unwrap() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in index.data.unwrap_or_default().get("shards").cloned().unwrap_or_default().lines() {
        let shard = line.split_whitespace().next().unwrap();
        let cm = cms.get(shard).await.unwrap();
        out.extend(cm.data.unwrap().get("cidrs").unwrap().lines().map(str::to_string));
    }
    out
}

/// The CIDRs of `cidrs` that start with `prefix` (a test's own address block).
pub fn ours(cidrs: Vec<String>, prefix: &str) -> Vec<String> {
    cidrs.into_iter().filter(|c| c.starts_with(prefix)).collect()
}
