//! Access decisions that cannot be replayed, backdated or bypassed (issue 17, acceptance 1), on the real control
//! plane with the controller: each test is one of the issue's misbehaving inputs, and says what must happen instead.
//! Each test starts its own controller and runs alone (a lock), with its own namespaces and CIDRs (10.17x.0.0/16).
#![cfg(feature = "cluster-tests")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::registration::RegistrationPhase::{self, *};
use jpki_access::api::{AccessApproval, AccessRegistration, Decision};
use jpki_access::domain::approve::approval_for;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;
use support::scene::*;
use support::*;

static ONE_CONTROLLER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The API server stores creation times to the second: decisions a test orders are made a second apart.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn condition_reason(api: &Api<AccessRegistration>, name: &str, type_: &str) -> Option<String> {
    api.get(name).await.ok()?.status?.conditions.into_iter().find(|c| c.type_ == type_).map(|c| c.reason)
}

async fn approval_accepted(client: &Client, namespace: &str, name: &str) -> Option<(String, String)> {
    let a = Api::<AccessApproval>::namespaced(client.clone(), namespace).get(name).await.ok()?;
    a.status?.conditions.into_iter().find(|c| c.type_ == "Accepted").map(|c| (c.status, c.reason))
}

/// Stays in `phase` for `duration` (checked every 200 ms): what was decided does not come back.
async fn stays(scene: &Scene, name: &str, phase: RegistrationPhase, duration: Duration) {
    let until = std::time::Instant::now() + duration;
    while std::time::Instant::now() < until {
        assert_eq!(scene.phase(name).await, Some(phase), "{name} left {phase:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn today_plus(days: i64) -> String {
    let today = jpki_access::domain::date::jst_date_of(jiff::Timestamp::now());
    jpki_access::domain::date::add_days(today, days).to_string()
}

#[tokio::test]
async fn a_registration_filed_again_is_not_covered_by_the_decision_on_the_earlier_one() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "replay").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let reg = scene.registration(&v, "r", &["10.170.0.0/24"], "2026-04-01", None);
    scene.create(&reg).await;
    let approval = scene.approve(&reg, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("r", Active, Duration::from_secs(15)).await;
    assert_eq!(ours(published(&client, "production").await, "10.170."), ["10.170.0.0/24"]);

    // J-LIS deletes it to revoke; a GitOps pipeline applies the same YAML again: a new object (new uid).
    scene.registrations().delete("r", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(10), "r gone", || async { scene.registrations().get_opt("r").await.unwrap().is_none() }).await;
    scene.create(&reg).await;
    scene.wait_phase("r", PendingApproval, Duration::from_secs(15)).await;
    stays(&scene, "r", PendingApproval, Duration::from_secs(3)).await;
    assert!(ours(published(&client, "production").await, "10.170.").is_empty(), "the old approval grants nothing");
    let verdict = approval_accepted(&client, &scene.ns, &approval.name_any()).await;
    assert_eq!(verdict, Some(("False".into(), "RegistrationUidMismatch".into())), "the old approval says why it is ignored");
    controller.stop();
    scene.cleanup().await;
}

#[tokio::test]
async fn an_approval_dated_in_the_future_does_not_beat_a_later_rejection() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "future").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let reg = scene.registration(&v, "r", &["10.171.0.0/24"], "2026-04-01", None);
    scene.create(&reg).await;
    scene.decide(&reg, Decision::Approved, "2099-01-01T00:00:00Z").await;
    scene.wait_phase("r", Active, Duration::from_secs(15)).await;
    next_second().await;
    scene.decide(&reg, Decision::Rejected, "2026-03-06T01:00:00Z").await;
    scene.wait_phase("r", Rejected, Duration::from_secs(10)).await;
    stays(&scene, "r", Rejected, Duration::from_secs(3)).await;
    assert!(ours(published(&client, "production").await, "10.171.").is_empty());
    controller.stop();
    scene.cleanup().await;
}

#[tokio::test]
async fn a_backdated_approval_does_not_win_a_conflict() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "backdated").await;
    let first = scene.verifier("first").await;
    let other_ns = TestNamespace::new(&client, "backdated2").await;
    let second = scene.verifier_in("second", &other_ns.name).await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let a = scene.registration(&first, "a", &["10.172.0.0/24"], "2026-04-01", None);
    scene.create(&a).await;
    scene.decide(&a, Decision::Approved, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("a", Active, Duration::from_secs(15)).await;
    next_second().await;
    let mut b = scene.registration(&second, "b", &["10.172.0.0/25"], "2026-04-01", None);
    b.metadata.namespace = Some(other_ns.name.clone());
    Api::<AccessRegistration>::namespaced(client.clone(), &other_ns.name).create(&PostParams::default(), &b).await.unwrap();
    scene.decide(&b, Decision::Approved, "2020-01-01T00:00:00Z").await; // claims to be years older
    let others: Api<AccessRegistration> = Api::namespaced(client.clone(), &other_ns.name);
    eventually(Duration::from_secs(10), "b in Conflict", || async { others.get("b").await.unwrap().status.and_then(|s| s.phase) == Some(Conflict) }).await;
    assert_eq!(scene.phase("a").await, Some(Active));
    assert_eq!(ours(published(&client, "production").await, "10.172."), ["10.172.0.0/24"]);
    controller.stop();
    delete_namespace_and_wait(&client, &other_ns.name).await;
    scene.cleanup().await;
}

#[tokio::test]
async fn an_approval_made_before_its_registration_exists_is_not_live() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "early").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    // Made for a registration not yet filed: whatever uid it guesses, it was stored before the registration.
    let mut planned = scene.registration(&v, "r", &["10.173.0.0/24"], "2026-04-01", None);
    planned.metadata.uid = Some("00000000-0000-4000-8000-000000000173".into());
    let early = approval_for(&planned, Decision::Approved, "approver@j-lis", jiff::Timestamp::now(), None).unwrap();
    let early = Api::<AccessApproval>::namespaced(client.clone(), &scene.ns).create(&PostParams::default(), &early).await.unwrap();
    next_second().await;
    planned.metadata.uid = None;
    scene.create(&planned).await;
    scene.wait_phase("r", PendingApproval, Duration::from_secs(10)).await;
    stays(&scene, "r", PendingApproval, Duration::from_secs(3)).await;
    assert!(ours(published(&client, "production").await, "10.173.").is_empty());
    let verdict = approval_accepted(&client, &scene.ns, &early.name_any()).await.unwrap();
    assert_eq!(verdict.0, "False");
    controller.stop();
    scene.cleanup().await;
}

#[tokio::test]
async fn a_rejection_sends_a_registration_to_the_back_of_the_line() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "line").await;
    let first = scene.verifier("first").await;
    let other_ns = TestNamespace::new(&client, "line2").await;
    let second = scene.verifier_in("second", &other_ns.name).await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let a = scene.registration(&first, "a", &["10.174.0.0/24"], "2026-04-01", None);
    scene.create(&a).await;
    scene.decide(&a, Decision::Approved, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("a", Active, Duration::from_secs(15)).await;
    next_second().await;
    scene.decide(&a, Decision::Rejected, "2026-03-06T01:00:00Z").await;
    scene.wait_phase("a", Rejected, Duration::from_secs(10)).await;
    next_second().await;
    let mut b = scene.registration(&second, "b", &["10.174.0.0/24"], "2026-04-01", None);
    b.metadata.namespace = Some(other_ns.name.clone());
    let others: Api<AccessRegistration> = Api::namespaced(client.clone(), &other_ns.name);
    others.create(&PostParams::default(), &b).await.unwrap();
    scene.decide(&b, Decision::Approved, "2026-03-07T01:00:00Z").await;
    eventually(Duration::from_secs(10), "b Active", || async { others.get("b").await.unwrap().status.and_then(|s| s.phase) == Some(Active) }).await;
    next_second().await;
    // A is approved again, on the same content (a new decision: a new approval object).
    let mut again = approval_for(&scene.registrations().get("a").await.unwrap(), Decision::Approved, "approver@j-lis", jiff::Timestamp::now(), None).unwrap();
    again.metadata.name = Some("a-approved-again".into());
    Api::<AccessApproval>::namespaced(client.clone(), &scene.ns).create(&PostParams::default(), &again).await.unwrap();
    scene.wait_phase("a", Conflict, Duration::from_secs(10)).await;
    assert_eq!(others.get("b").await.unwrap().status.and_then(|s| s.phase), Some(Active), "b keeps what it was approved for");
    assert_eq!(ours(published(&client, "production").await, "10.174."), ["10.174.0.0/24"]);
    controller.stop();
    delete_namespace_and_wait(&client, &other_ns.name).await;
    scene.cleanup().await;
}

#[tokio::test]
async fn a_supersession_stays_final_when_the_successors_approval_goes() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "superseded").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let old = scene.registration(&v, "old", &["10.175.0.0/24"], "2026-04-01", None);
    scene.create(&old).await;
    scene.approve(&old, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("old", Active, Duration::from_secs(15)).await;
    let mut new = scene.registration(&v, "new", &["10.175.1.0/24"], &today_plus(-1), None);
    new.spec.supersedes = Some("old".into());
    scene.create(&new).await;
    let successor_approval = scene.approve(&new, "2026-06-01T01:00:00Z").await;
    scene.wait_phase("old", Superseded, Duration::from_secs(10)).await;
    scene.wait_phase("new", Active, Duration::from_secs(10)).await;

    Api::<AccessApproval>::namespaced(client.clone(), &scene.ns).delete(&successor_approval.name_any(), &DeleteParams::default()).await.unwrap();
    scene.wait_phase("new", PendingApproval, Duration::from_secs(10)).await;
    stays(&scene, "old", Superseded, Duration::from_secs(3)).await;
    // Also for a controller that starts afresh and a status that is lost.
    controller.stop();
    kubectl_ok(&["patch", "accessregistration", "old", "-n", &scene.ns, "--subresource=status", "--type=merge", "-p", r#"{"status":null}"#]);
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    scene.wait_phase("old", Superseded, Duration::from_secs(10)).await;
    assert!(ours(published(&client, "production").await, "10.175.").is_empty(), "the CIDRs the verifier gave up stay given up");
    controller.stop();
    scene.cleanup().await;
}

#[tokio::test]
async fn a_conflict_is_told_at_approval_when_the_access_windows_overlap() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "windows").await;
    let early = scene.verifier("early").await;
    let other_ns = TestNamespace::new(&client, "windows2").await;
    let later = scene.verifier_in("later", &other_ns.name).await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    // B is approved first, for access from a month ahead; A later, from yesterday and open-ended: they will overlap.
    let b_start = today_plus(30);
    let mut b = scene.registration(&later, "b", &["10.176.0.0/24"], &b_start, None);
    b.metadata.namespace = Some(other_ns.name.clone());
    let others: Api<AccessRegistration> = Api::namespaced(client.clone(), &other_ns.name);
    others.create(&PostParams::default(), &b).await.unwrap();
    scene.decide(&b, Decision::Approved, "2026-03-05T01:00:00Z").await;
    eventually(Duration::from_secs(10), "b Scheduled", || async { others.get("b").await.unwrap().status.and_then(|s| s.phase) == Some(Scheduled) }).await;
    next_second().await;
    let a = scene.registration(&early, "a", &["10.176.0.0/24"], &today_plus(-1), None);
    scene.create(&a).await;
    scene.approve(&a, "2026-03-06T01:00:00Z").await;
    scene.wait_phase("a", Conflict, Duration::from_secs(10)).await;
    let status = scene.registrations().get("a").await.unwrap().status.unwrap();
    let from = jpki_access::domain::date::start_of_day_jst(b_start.parse().unwrap()).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!((status.conflicts[0].name.as_str(), status.conflicts[0].from.as_deref()), ("b", Some(from.as_str())), "with whom and from when");
    assert!(ours(published(&client, "production").await, "10.176.").is_empty());
    controller.stop();
    delete_namespace_and_wait(&client, &other_ns.name).await;
    scene.cleanup().await;
}

/// `jpki-access validate --output json` over what the API server holds now (kubectl get -o yaml): the reasons of the
/// errors it gives for `kind/name`.
fn validate_reasons(objects: &[&str], object: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (i, what) in objects.iter().enumerate() {
        let mut args = vec!["get"];
        args.extend(what.split(' '));
        args.extend(["-o", "yaml"]);
        std::fs::write(dir.path().join(format!("{i}.yaml")), kubectl_ok(&args)).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jpki-access")).args(["validate", "--output", "json"]).arg(dir.path()).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["object"] == object && p["severity"] == "error")
        .map(|p| p["reason"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_controller_refuses_what_validate_refuses_for_the_same_reason() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "rules").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let regs = scene.registrations();
    // Signing None for a verifier that verifies signatures; a supersedes target that does not exist; production over
    // the LGPKI route without the LGWAN全国センター step.
    let mut none = scene.registration(&v, "none", &["10.177.0.0/24"], "2026-04-01", None);
    none.spec.provision_methods.as_mut().unwrap().signing = Some(jpki_access::api::ProvisionMethod::None);
    let mut orphan = scene.registration(&v, "orphan", &["10.177.1.0/24"], "2026-04-01", None);
    orphan.spec.supersedes = Some("never-filed".into());
    let mut lgpki = scene.registration(&v, "lgpki", &["10.177.2.0/24"], "2026-04-01", None);
    lgpki.spec.connection_method = jpki_access::api::ConnectionMethod::LgwanViaLgpki;
    for (reg, reason) in [(&none, "ProvisionMethodForRole"), (&orphan, "SupersedesNotFound"), (&lgpki, "LgwanCenterPending")] {
        scene.create(reg).await;
        scene.approve(reg, "2026-03-05T01:00:00Z").await;
        let name = reg.name_any();
        eventually(Duration::from_secs(10), &format!("{name} refused"), || async { condition_reason(&regs, &name, "Ready").await.as_deref() == Some(reason) })
            .await;
        assert_eq!(scene.phase(&name).await, Some(Invalid));
    }
    // One namespace claimed by a second verifier: its registrations are refused, the first verifier's are not.
    next_second().await;
    let intruder = scene.verifier_in("intruder", &scene.ns.clone()).await;
    let claimed = scene.registration(&intruder, "claimed", &["10.177.3.0/24"], "2026-04-01", None);
    scene.create(&claimed).await;
    scene.approve(&claimed, "2026-03-05T01:00:00Z").await;
    eventually(Duration::from_secs(10), "claimed refused", || async {
        condition_reason(&regs, "claimed", "Ready").await.as_deref() == Some("NamespaceClaimed")
    })
    .await;
    assert!(ours(published(&client, "production").await, "10.177.").is_empty(), "none of them is live");

    // validate, over what the API server holds, gives each the same reason.
    let objects = ["signatureverifiers", "accessenvironments", &format!("accessregistrations,accessapprovals -n {}", scene.ns)];
    for (name, reason) in
        [("none", "ProvisionMethodForRole"), ("orphan", "SupersedesNotFound"), ("lgpki", "LgwanCenterPending"), ("claimed", "NamespaceClaimed")]
    {
        let reasons = validate_reasons(&objects, &format!("AccessRegistration/{name}"));
        assert!(reasons.iter().any(|r| r == reason), "validate on {name}: {reasons:?}, the controller: {reason}");
    }
    controller.stop();
    scene.cleanup().await;
}

#[tokio::test]
async fn switching_the_provision_method_after_approval_keeps_the_approved_notice_until_approved_again() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "methods").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let reg = scene.registration(&v, "r", &["10.178.0.0/24"], "2026-04-01", None); // signing Ocsp, userAuthentication Crl
    scene.create(&reg).await;
    scene.approve(&reg, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("r", Active, Duration::from_secs(15)).await;
    let patch = json!({"spec": {"provisionMethods": {"signing": "Ocsp", "userAuthentication": "Ocsp"}}});
    scene.registrations().patch("r", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let regs = scene.registrations();
    eventually(Duration::from_secs(10), "the change pending", || async {
        regs.get("r").await.unwrap().status.and_then(|s| s.pending_difference).and_then(|p| p.provision_methods).is_some()
    })
    .await;
    assert_eq!(scene.phase("r").await, Some(Active), "the approved access stays");
    let notice = Api::<ConfigMap>::namespaced(client.clone(), &scene.ns).get("r-url-notice").await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&notice.data.unwrap()["notice.json"]).unwrap();
    assert_eq!(json["endpoints"][1]["provisionMethod"], "Crl", "the notice keeps the approved method: {json}");
    controller.stop();
    scene.cleanup().await;
}
