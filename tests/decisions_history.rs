//! The mass-revocation hold that cannot be sliced, and the audit history that outlives Events (issue 17,
//! acceptance 1 point 8 and acceptance 5), each on a control plane of its own with the controller: the hold changes
//! the production environment's policy, and the history test shortens the API server's Event retention.
#![cfg(feature = "cluster-tests")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::registration::RegistrationPhase;
use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, Decision, SignatureVerifier};
use jpki_access::domain::approve::approval_for;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::*;

const NS: &str = "history";
const VERIFIER: &str = "history-verifier";

/// A control plane of this test alone, with extra kube-apiserver flags, and the examples' environments.
async fn own_control_plane(extra: &[&str]) -> (OwnControlPlane, Client) {
    let _ = control_plane(); // kubectl and the binaries are built
    let cp = OwnControlPlane::start_with(tempfile::tempdir().unwrap(), extra);
    let client = client_for_kubeconfig(&cp.kubeconfig).await;
    install_crds(&client).await;
    kubectl_on(&cp.kubeconfig, &["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-R", "-f", path_str(&repo_root().join("examples"))]);
    kubectl_on(&cp.kubeconfig, &["create", "namespace", NS]);
    let v: SignatureVerifier = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier",
        "metadata": {"name": VERIFIER}, "spec": {"displayName": "history", "organizationType": "Other", "corporateNumber": "7000012050002",
        "roles": ["SignatureVerifier", "UserAuthenticationVerifier"], "namespace": NS, "agreement": {"effectiveDate": "2026-01-01"},
        "procedure": {"verificationTestCompletedOn": "2026-01-01"}}}))
    .unwrap();
    Api::<SignatureVerifier>::all(client.clone()).create(&PostParams::default(), &v).await.unwrap();
    (cp, client)
}

fn kubectl_on(kubeconfig: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(&control_plane().kubectl).arg("--kubeconfig").arg(kubeconfig).args(args).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn registration(name: &str, cidr: &str) -> AccessRegistration {
    serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"verifierRef": VERIFIER, "environment": "Production", "connectionMethod": "Internet", "sourceCidrs": [cidr],
                 "accessStartDate": "2026-04-01", "provisionMethods": {"signing": "Ocsp", "userAuthentication": "Crl"}, "officialSealAffixed": true}}))
    .unwrap()
}

async fn file_and_decide(client: &Client, reg: &AccessRegistration, decision: Decision) -> AccessApproval {
    let regs: Api<AccessRegistration> = Api::namespaced(client.clone(), NS);
    let stored = match regs.get_opt(&reg.name_any()).await.unwrap() {
        Some(r) => r,
        None => regs.create(&PostParams::default(), reg).await.unwrap(),
    };
    let approval = approval_for(&stored, decision, "approver@j-lis", jiff::Timestamp::now(), None).unwrap();
    Api::<AccessApproval>::namespaced(client.clone(), NS).create(&PostParams::default(), &approval).await.unwrap()
}

async fn phases(client: &Client) -> std::collections::BTreeMap<String, RegistrationPhase> {
    let regs: Api<AccessRegistration> = Api::namespaced(client.clone(), NS);
    regs.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|r| Some((r.name_any(), r.status?.phase?))).collect()
}

async fn held(client: &Client) -> Option<String> {
    let env = Api::<AccessEnvironment>::all(client.clone()).get("production").await.ok()?;
    let c = env.status?.conditions.into_iter().find(|c| c.type_ == "Held")?;
    (c.status == "True").then_some(c.message)
}

/// Waits (10 s at most) until the production environment is held; returns the `Held` message.
async fn wait_held(client: &Client) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Some(message) = held(client).await {
            return message;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not held within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn set_hold_policy(client: &Client, percent: i32, min_cidrs: i32) {
    let patch = json!({"spec": {"policy": {"massRevocationHold": {"percent": percent, "minCidrs": min_cidrs}}}});
    Api::<AccessEnvironment>::all(client.clone()).patch("production", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Removes the approvals of `names` (revocations), one request each.
async fn revoke(client: &Client, approvals: &[AccessApproval]) {
    let api: Api<AccessApproval> = Api::namespaced(client.clone(), NS);
    for a in approvals {
        api.delete(&a.name_any(), &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn removals_sliced_or_offset_by_additions_are_held_until_a_person_releases_them() {
    let (cp, client) = own_control_plane(&[]).await;
    set_hold_policy(&client, 10, 5).await;
    let mut controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election"], &cp.kubeconfig);
    controller.wait_ready().await;
    let mut approvals = Vec::new();
    for i in 0..20 {
        approvals.push(file_and_decide(&client, &registration(&format!("r{i}"), &format!("10.180.{i}.0/24")), Decision::Approved).await);
    }
    eventually(Duration::from_secs(30), "20 Active", || async { phases(&client).await.values().filter(|p| **p == RegistrationPhase::Active).count() == 20 })
        .await;

    // 4 removals (under minCidrs 5): immediate. 4 more later, from the same baseline: 8 ≥ 5 and 40 % ≥ 10 %: held.
    revoke(&client, &approvals[0..4]).await;
    eventually(Duration::from_secs(10), "4 revoked", || async {
        phases(&client).await.values().filter(|p| **p == RegistrationPhase::PendingApproval).count() == 4
    })
    .await;
    assert!(held(&client).await.is_none(), "a few revocations stay immediate");
    revoke(&client, &approvals[4..8]).await;
    wait_held(&client).await;
    eventually(Duration::from_secs(10), "4 Held", || async { phases(&client).await.values().filter(|p| **p == RegistrationPhase::Held).count() == 4 }).await;
    // The digest to release is the one held once all 4 revocations are seen: the controller may see them over two
    // passes, holding a set with 2 of them first (and a release of that digest would not match what is held now).
    let message = held(&client).await.expect("still held");
    // While held, their CIDRs are still published, and their statuses say so.
    let published: Vec<ipnet::IpNet> = support::scene::published(&client, "production").await.iter().map(|c| c.parse().unwrap()).collect();
    for i in 4..8 {
        let held: ipnet::IpNet = format!("10.180.{i}.0/24").parse().unwrap();
        assert!(published.iter().any(|p| p.contains(&held)), "{held} still published while held: {published:?}");
    }
    for i in 0..4 {
        let revoked: ipnet::IpNet = format!("10.180.{i}.0/24").parse().unwrap();
        assert!(!published.iter().any(|p| p.contains(&revoked)), "{revoked} was revoked before the hold");
    }

    // Released by a person: the annotation names the held digest.
    let digest = message.split("release-hold=").nth(1).unwrap().trim().to_string();
    let patch = json!({"metadata": {"annotations": {"access.jpki.dev/release-hold": digest, "access.jpki.dev/released-by": "hold-releaser@j-lis"}}});
    Api::<AccessEnvironment>::all(client.clone()).patch("production", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually(Duration::from_secs(10), "released", || async { held(&client).await.is_none() }).await;
    eventually(Duration::from_secs(10), "8 revoked", || async {
        phases(&client).await.values().filter(|p| **p == RegistrationPhase::PendingApproval).count() == 8
    })
    .await;

    // 6 removals and 6 additions at once: the additions do not offset the removals (6 ≥ 5, 50 % of 12 ≥ 10 %).
    for i in 20..26 {
        approvals.push(file_and_decide(&client, &registration(&format!("r{i}"), &format!("10.180.{i}.0/24")), Decision::Approved).await);
    }
    revoke(&client, &approvals[8..14]).await;
    eventually(Duration::from_secs(15), "held again", || async { held(&client).await.is_some() }).await;
    controller.stop();
}

#[tokio::test]
async fn the_history_shows_decisions_a_revocation_and_a_release_with_actor_and_time_after_a_restart_and_after_events_expired() {
    // Events are kept 20 s here instead of an hour.
    let (cp, client) = own_control_plane(&["--", "--event-ttl=20s"]).await;
    set_hold_policy(&client, 10, 2).await;
    let mut controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election"], &cp.kubeconfig);
    controller.wait_ready().await;
    let granted = file_and_decide(&client, &registration("granted", "10.181.0.0/24"), Decision::Approved).await;
    file_and_decide(&client, &registration("refused", "10.181.1.0/24"), Decision::Rejected).await;
    let revoked = file_and_decide(&client, &registration("revoked", "10.181.2.0/24"), Decision::Approved).await;
    let second = file_and_decide(&client, &registration("second", "10.181.3.0/24"), Decision::Approved).await;
    eventually(Duration::from_secs(20), "three Active", || async { phases(&client).await.values().filter(|p| **p == RegistrationPhase::Active).count() == 3 })
        .await;
    // A revocation (the approval deleted), then a mass removal held and released.
    revoke(&client, &[revoked.clone(), second.clone()]).await;
    let message = wait_held(&client).await;
    let digest = message.split("release-hold=").nth(1).unwrap().trim().to_string();
    let patch = json!({"metadata": {"annotations": {"access.jpki.dev/release-hold": digest, "access.jpki.dev/released-by": "hold-releaser@j-lis"}}});
    Api::<AccessEnvironment>::all(client.clone()).patch("production", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually(Duration::from_secs(10), "released", || async { held(&client).await.is_none() }).await;
    // The registration itself deleted too.
    Api::<AccessRegistration>::namespaced(client.clone(), NS).delete("revoked", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A restart, and every Event expired.
    controller.stop();
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    assert!(!events.list(&ListParams::default()).await.unwrap().items.is_empty(), "the transitions made Events");
    eventually(Duration::from_secs(90), "Events expired", || async { events.list(&ListParams::default()).await.unwrap().items.is_empty() }).await;
    let mut controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election"], &cp.kubeconfig);
    controller.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_jpki-access"), bin_dir.path().join("kubectl-jpki")).unwrap();
    let history = |args: &[&str]| -> String {
        let out = std::process::Command::new(&control_plane().kubectl)
            .arg("jpki")
            .arg("history")
            .args(args)
            .env("PATH", format!("{}:{}", bin_dir.path().display(), std::env::var("PATH").unwrap_or_default()))
            .env("KUBECONFIG", &cp.kubeconfig)
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl jpki history {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let of_revoked = history(&["revoked", "-n", NS]);
    eprintln!("kubectl jpki history revoked -n {NS}:\n{of_revoked}");
    let line = |text: &str, what: &str| text.lines().find(|l| l.contains(what)).map(str::to_string).unwrap_or_else(|| panic!("no {what} in:\n{text}"));
    assert!(line(&of_revoked, "Approved").contains("by approver@j-lis"));
    assert!(line(&of_revoked, "Withdrawn").contains(&revoked.name_any()));
    assert!(line(&of_revoked, "Deleted").contains("history/revoked"));
    assert!(line(&of_revoked, "HoldReleased").contains("by hold-releaser@j-lis"));
    let of_verifier = history(&[VERIFIER]);
    eprintln!("kubectl jpki history {VERIFIER}:\n{of_verifier}");
    assert!(line(&of_verifier, "Rejected").contains("history/refused"));
    assert!(line(&of_verifier, "Approved").contains(&granted.name_any()) || of_verifier.contains(&granted.name_any()));
    // Every line starts with its time (RFC 3339, UTC).
    for l in of_verifier.lines() {
        assert!(l.get(..20).is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()), "{l}");
    }
    controller.stop();
}
