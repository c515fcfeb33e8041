//! The controller on the real control plane (issue #6). Each test starts its own controller process and runs
//! alone (a lock), since a controller acts on the whole cluster; each uses its own verifiers, namespace and CIDRs
//! (10.<n>.0.0/16 per test) and removes them before it ends.
#![cfg(feature = "cluster-tests")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::registration::RegistrationPhase;
use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, Decision, SignatureVerifier};
use jpki_access::domain::approve::approval_for;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::scene::*;
use support::*;

static ONE_CONTROLLER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn policy_blocks(client: &Client) -> Vec<String> {
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), "jpki-production");
    let mut out = Vec::new();
    for np in nps.list(&ListParams::default().labels("app.kubernetes.io/managed-by=jpki-access")).await.unwrap() {
        for rule in np.spec.unwrap().ingress.unwrap_or_default() {
            out.extend(rule.from.unwrap_or_default().into_iter().filter_map(|p| p.ip_block.map(|b| b.cidr)));
        }
    }
    out
}

#[tokio::test]
async fn an_approved_registration_becomes_active_with_exact_outputs_and_kubectl_wait_returns() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let scene = Scene::new(&client, "active").await;
    // The example's production registration, approved as `jpki-access approve` does it.
    let regs: Api<AccessRegistration> = Api::namespaced(client.clone(), "verifier-sapporo");
    let reg = regs.get("sapporo-production-2026").await.unwrap();
    let approvals: Api<AccessApproval> = Api::namespaced(client.clone(), "verifier-sapporo");
    if approvals.list(&ListParams::default().labels("access.jpki.dev/registration=sapporo-production-2026")).await.unwrap().items.is_empty() {
        let a = approval_for(&reg, Decision::Approved, "approver@j-lis", "2026-03-05T01:00:00Z".parse().unwrap(), None).unwrap();
        approvals.create(&PostParams::default(), &a).await.unwrap();
    }
    // A control plane reused from an earlier run has it Active already: start from no status, so the transition
    // (and its Event) happens in this run.
    kubectl_ok(&[
        "patch",
        "accessregistration",
        "sapporo-production-2026",
        "-n",
        "verifier-sapporo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":null}"#,
    ]);
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let out = kubectl(&["wait", "--for=condition=Active", "-n", "verifier-sapporo", "accessregistration/sapporo-production-2026", "--timeout=30s"]);
    assert!(out.status.success(), "kubectl wait: {}{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), controller.log_text());

    let production = ["192.0.2.0/28", "2001:db8:10::/56"];
    assert_eq!(ours(published(&client, "production").await, ""), production, "the allowlist holds exactly its CIDRs");
    assert_eq!(ours(policy_blocks(&client).await, ""), production, "so do the NetworkPolicies");
    let notice = Api::<ConfigMap>::namespaced(client.clone(), "verifier-sapporo").get("sapporo-production-2026-url-notice").await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&notice.data.unwrap()["notice.json"]).unwrap();
    assert_eq!(
        json["endpoints"],
        json!([
            {"certificateType": "signing", "provisionMethod": "Ocsp", "url": "https://ocsp.prod.jpki.example/"},
            {"certificateType": "userAuthentication", "provisionMethod": "Crl", "url": "https://crl.prod.jpki.example/crl"}
        ])
    );
    let status = regs.get("sapporo-production-2026").await.unwrap().status.unwrap();
    assert_eq!(status.observed_generation, reg.metadata.generation);
    assert!(status.conditions.iter().all(|c| c.observed_generation == reg.metadata.generation));
    assert_eq!(status.url_notice.as_deref(), Some("sapporo-production-2026-url-notice"));
    // The Event follows the status write that reported the transition.
    eventually(Duration::from_secs(10), "the Activated event", || async {
        kubectl_ok(&[
            "get",
            "events",
            "-n",
            "verifier-sapporo",
            "--field-selector",
            "involvedObject.name=sapporo-production-2026",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .contains("Activated")
    })
    .await;
    let env = Api::<AccessEnvironment>::all(client.clone()).get("production").await.unwrap().status.unwrap();
    assert_eq!(env.cidr_count, Some(2));
    assert!(controller.stop(), "graceful shutdown");
    scene.cleanup().await;
}

#[tokio::test]
async fn deleting_the_approval_or_the_registration_revokes_within_5s_and_gc_removes_an_environments_children() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "revoke").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let a = scene.create(&scene.registration(&v, "a", &["10.11.1.0/24"], "2026-04-01", None)).await;
    let b = scene.create(&scene.registration(&v, "b", &["10.11.2.0/24"], "2026-04-01", None)).await;
    let approval_a = scene.approve(&a, "2026-03-05T01:00:00Z").await;
    scene.approve(&b, "2026-03-05T01:00:00Z").await;
    eventually(Duration::from_secs(10), "both live", || async { ours(published(&client, "production").await, "10.11.").len() == 2 }).await;

    Api::<AccessApproval>::namespaced(client.clone(), &scene.ns).delete(&approval_a.name_any(), &DeleteParams::default()).await.unwrap();
    let took = eventually(Duration::from_secs(5), "approval deletion revokes", || async {
        ours(published(&client, "production").await, "10.11.") == ["10.11.2.0/24"] && ours(policy_blocks(&client).await, "10.11.") == ["10.11.2.0/24"]
    })
    .await;
    eprintln!("approval deleted → CIDRs removed in {took:?}");
    scene.registrations().delete("b", &DeleteParams::default()).await.unwrap();
    let took = eventually(Duration::from_secs(5), "registration deletion revokes", || async {
        ours(published(&client, "production").await, "10.11.").is_empty() && ours(policy_blocks(&client).await, "10.11.").is_empty()
    })
    .await;
    eprintln!("registration deleted → CIDRs removed in {took:?}");
    assert_eq!(scene.phase("a").await, Some(RegistrationPhase::PendingApproval));

    // An environment named before "test" takes over the Test environment; deleting it lets the garbage collector
    // remove its children (they carry its controller ownerReference).
    let envs: Api<AccessEnvironment> = Api::all(client.clone());
    let mut takeover = envs.get("test").await.unwrap();
    takeover.metadata = kube::api::ObjectMeta { name: Some("a-gc-probe".into()), ..Default::default() };
    takeover.status = None;
    envs.create(&PostParams::default(), &takeover).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "jpki-system");
    eventually(Duration::from_secs(10), "children of the new environment", || async { cms.get_opt("jpki-allowlist-a-gc-probe").await.unwrap().is_some() })
        .await;
    controller.stop();
    envs.delete("a-gc-probe", &DeleteParams::default()).await.unwrap();
    let took = eventually(Duration::from_secs(60), "garbage collected", || async {
        cms.list(&ListParams::default().labels("access.jpki.dev/environment=a-gc-probe")).await.unwrap().items.is_empty()
            && Api::<NetworkPolicy>::namespaced(client.clone(), "jpki-test").get_opt("jpki-a-gc-probe-default-deny").await.unwrap().is_none()
    })
    .await;
    eprintln!("environment deleted → children garbage-collected in {took:?}");
    scene.cleanup().await;
}

#[tokio::test]
async fn widening_waits_for_approval_and_narrowing_takes_effect_at_once() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "widen").await;
    let v = scene.verifier("v").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let reg = scene.create(&scene.registration(&v, "r", &["10.12.0.0/24"], "2026-04-01", None)).await;
    scene.approve(&reg, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("r", RegistrationPhase::Active, Duration::from_secs(10)).await;

    let pp = PatchParams::default();
    scene.registrations().patch("r", &pp, &Patch::Merge(json!({"spec": {"sourceCidrs": ["10.12.0.0/24", "10.12.9.0/24"]}}))).await.unwrap();
    eventually(Duration::from_secs(10), "pending difference shown", || async {
        let s = scene.registrations().get("r").await.unwrap().status.unwrap();
        s.observed_generation == Some(2) && s.pending_difference.is_some_and(|p| p.added_cidrs == vec!["10.12.9.0/24".into()])
    })
    .await;
    assert_eq!(ours(published(&client, "production").await, "10.12."), ["10.12.0.0/24"], "the old CIDRs stay, the new one waits");
    assert_eq!(scene.phase("r").await, Some(RegistrationPhase::Active));

    scene.registrations().patch("r", &pp, &Patch::Merge(json!({"spec": {"sourceCidrs": ["10.12.0.128/25"]}}))).await.unwrap();
    eventually(Duration::from_secs(5), "narrowed at once", || async {
        ours(published(&client, "production").await, "10.12.") == ["10.12.0.128/25"] && ours(policy_blocks(&client).await, "10.12.") == ["10.12.0.128/25"]
    })
    .await;
    controller.stop();
    scene.cleanup().await;
}

#[tokio::test]
async fn overlapping_registrations_of_two_verifiers_one_is_conflict_naming_the_other() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "conflict").await;
    let first = scene.verifier("first").await;
    // The second verifier files in its own namespace.
    let other_ns = TestNamespace::new(&client, "conflict2").await;
    let second = format!("{}-second", scene.ns);
    let v: SignatureVerifier = serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier",
        "metadata": {"name": second}, "spec": {"displayName": "second", "organizationType": "LocalGovernment", "lgCode": "011002",
        "roles": ["SignatureVerifier"], "namespace": other_ns.name, "agreement": {"effectiveDate": "2026-01-01"},
        "procedure": {"verificationTestCompletedOn": "2026-01-01"}}}))
    .unwrap();
    Api::<SignatureVerifier>::all(client.clone()).create(&PostParams::default(), &v).await.unwrap();
    scene.verifiers.push(second.clone());

    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let a = scene.create(&scene.registration(&first, "a", &["10.13.0.0/24"], "2026-04-01", None)).await;
    scene.approve(&a, "2026-03-05T01:00:00Z").await;
    let mut b = scene.registration(&second, "b", &["10.13.0.128/25"], "2026-04-01", None);
    b.metadata.namespace = Some(other_ns.name.clone());
    b.spec.provision_methods.as_mut().unwrap().user_authentication = Some(jpki_access::api::ProvisionMethod::None);
    let other_regs: Api<AccessRegistration> = Api::namespaced(client.clone(), &other_ns.name);
    let b = other_regs.create(&PostParams::default(), &b).await.unwrap();
    let approval = approval_for(&b, Decision::Approved, "approver@j-lis", "2026-03-06T01:00:00Z".parse().unwrap(), None).unwrap();
    Api::<AccessApproval>::namespaced(client.clone(), &other_ns.name).create(&PostParams::default(), &approval).await.unwrap();

    eventually(Duration::from_secs(10), "b in conflict", || async {
        other_regs.get("b").await.unwrap().status.and_then(|s| s.phase) == Some(RegistrationPhase::Conflict)
    })
    .await;
    assert_eq!(scene.phase("a").await, Some(RegistrationPhase::Active));
    let conflicts = other_regs.get("b").await.unwrap().status.unwrap().conflicts;
    assert_eq!(conflicts.len(), 1);
    assert_eq!((conflicts[0].namespace.as_str(), conflicts[0].name.as_str()), (scene.ns.as_str(), "a"));
    assert_eq!(ours(published(&client, "production").await, "10.13."), ["10.13.0.0/24"]);
    controller.stop();
    delete_namespace_and_wait(&client, &other_ns.name).await;
    scene.cleanup().await;
}

/// Seconds to add to the wall clock so that the controller's "now" is `before` seconds before the next midnight
/// in Japan; returns that offset and the JST date that starts at that midnight.
fn offset_to_next_jst_midnight(before: i64) -> (i64, String) {
    let now = jiff::Timestamp::now();
    let today = jpki_access::domain::date::jst_date_of(now);
    let target = jpki_access::domain::date::add_days(today, 30); // well inside any test's window
    let midnight = jpki_access::domain::date::start_of_day_jst(target);
    ((midnight.as_second() - before) - now.as_second(), target.to_string())
}

#[tokio::test]
async fn a_future_start_is_scheduled_then_active_at_that_instant_and_an_end_date_removes_access() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "clock").await;
    let v = scene.verifier("v").await;
    let (offset, tomorrow) = offset_to_next_jst_midnight(8);
    let today = jpki_access::domain::date::add_days(tomorrow.parse().unwrap(), -1).to_string();
    let starting = scene.create(&scene.registration(&v, "starting", &["10.14.1.0/24"], &tomorrow, None)).await;
    let ending = scene.create(&scene.registration(&v, "ending", &["10.14.2.0/24"], "2026-04-01", Some(&today))).await;
    scene.approve(&starting, "2026-03-05T01:00:00Z").await;
    scene.approve(&ending, "2026-03-05T01:00:00Z").await;
    let offset_arg = offset.to_string();
    let mut controller = ControllerProcess::start(&["--no-leader-election", "--clock-offset-seconds", &offset_arg]);
    controller.wait_ready().await;
    scene.wait_phase("starting", RegistrationPhase::Scheduled, Duration::from_secs(5)).await;
    assert_eq!(scene.phase("ending").await, Some(RegistrationPhase::Active));
    assert_eq!(ours(published(&client, "production").await, "10.14."), ["10.14.2.0/24"]);
    let next = scene.registrations().get("starting").await.unwrap().status.unwrap().next_transition.unwrap();
    assert_eq!(next, jpki_access::domain::date::start_of_day_jst(tomorrow.parse().unwrap()).strftime("%Y-%m-%dT%H:%M:%SZ").to_string());

    // No edit: the clock crosses midnight JST in about 8 s.
    let started = Instant::now();
    scene.wait_phase("starting", RegistrationPhase::Active, Duration::from_secs(20)).await;
    eprintln!("became Active {:?} after the test started waiting (midnight was ~8 s ahead)", started.elapsed());
    scene.wait_phase("ending", RegistrationPhase::Expired, Duration::from_secs(5)).await;
    assert_eq!(ours(published(&client, "production").await, "10.14."), ["10.14.1.0/24"]);
    controller.stop();
    scene.cleanup().await;
}

/// resourceVersions of everything the controller writes, and of the registrations (whose status it writes).
async fn versions(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=jpki-access");
    for cm in Api::<ConfigMap>::all(client.clone()).list(&lp).await.unwrap() {
        out.insert(format!("cm/{}/{}", cm.namespace().unwrap(), cm.name_any()), cm.resource_version().unwrap());
    }
    for np in Api::<NetworkPolicy>::all(client.clone()).list(&lp).await.unwrap() {
        out.insert(format!("np/{}/{}", np.namespace().unwrap(), np.name_any()), np.resource_version().unwrap());
    }
    for r in Api::<AccessRegistration>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap() {
        out.insert(format!("reg/{}", r.name_any()), r.resource_version().unwrap());
    }
    for e in Api::<AccessEnvironment>::all(client.clone()).list(&ListParams::default()).await.unwrap() {
        out.insert(format!("env/{}", e.name_any()), e.resource_version().unwrap());
    }
    out
}

#[tokio::test]
async fn idle_with_1000_registrations_full_resyncs_write_nothing_and_one_change_writes_little() {
    use futures::{StreamExt, TryStreamExt};
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "idle").await;
    let v = scene.verifier("v").await;
    let regs: Vec<AccessRegistration> =
        (0..1000).map(|i| scene.registration(&v, &format!("r{i}"), &[&format!("10.{}.{}.0/24", 100 + i / 256, i % 256)], "2026-04-01", None)).collect();
    let api = scene.registrations();
    let pp = PostParams::default();
    let created = futures::stream::iter(regs.iter().map(|r| api.create(&pp, r))).buffer_unordered(16).try_collect::<Vec<_>>().await.unwrap();
    let approvals: Api<AccessApproval> = Api::namespaced(client.clone(), &scene.ns);
    futures::stream::iter(created.iter().map(|r| {
        let a = approval_for(r, Decision::Approved, "approver@j-lis", "2026-03-05T01:00:00Z".parse().unwrap(), None).unwrap();
        let approvals = approvals.clone();
        async move { approvals.create(&PostParams::default(), &a).await }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();

    let started = Instant::now();
    // A full pass every 2 s: each one plans everything and must find everything right.
    let mut controller = ControllerProcess::start(&["--no-leader-election", "--resync-seconds", "2"]);
    controller.wait_ready().await;
    eventually(Duration::from_secs(120), "1000 registrations Active", || async {
        scene
            .registrations()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RegistrationPhase::Active))
            .count()
            == 1000
    })
    .await;
    eprintln!("1000 registrations Active {:?} after controller start", started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await; // let the last writes settle
    let before = versions(&client, &scene.ns).await;
    let writes_before =
        controller.metric("jpki_access_writes_total{operation=\"apply\"}") + controller.metric("jpki_access_writes_total{operation=\"status\"}");
    let passes_before = controller.metric("jpki_access_reconciles_total{result=\"ok\"}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = versions(&client, &scene.ns).await;
    let writes_after = controller.metric("jpki_access_writes_total{operation=\"apply\"}") + controller.metric("jpki_access_writes_total{operation=\"status\"}");
    let passes = controller.metric("jpki_access_reconciles_total{result=\"ok\"}") - passes_before;
    assert!(passes >= 3.0, "full resyncs ran while idle: {passes}");
    assert_eq!(before, after, "{passes} full resyncs with no change: nothing may be written");
    assert_eq!(writes_before, writes_after);

    scene.registrations().patch("r500", &PatchParams::default(), &Patch::Merge(json!({"spec": {"sourceCidrs": ["10.101.244.0/25"]}}))).await.unwrap();
    eventually(Duration::from_secs(10), "change applied", || async {
        scene.registrations().get("r500").await.unwrap().status.is_some_and(|s| s.observed_generation == Some(2))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let changed: Vec<String> = versions(&client, &scene.ns).await.into_iter().filter(|(k, v)| before.get(k) != Some(v)).map(|(k, _)| k).collect();
    // A narrowing is a removal: the hold's baseline (index and shard) records it, so removals add up across passes.
    let baseline: Vec<&String> = changed.iter().filter(|k| k.contains("/jpki-hold-baseline-")).collect();
    let outputs: Vec<&String> = changed.iter().filter(|k| !k.starts_with("reg/") && !k.contains("/jpki-hold-baseline-")).collect();
    let statuses: Vec<&String> = changed.iter().filter(|k| k.starts_with("reg/")).collect();
    eprintln!("one change wrote: {changed:?}");
    assert_eq!(statuses, [&"reg/r500".to_string()], "only the changed registration (spec edit and its status)");
    assert!(outputs.len() <= 3 + 1, "at most 3 objects plus the environment's status: {outputs:?}");
    assert!(baseline.len() <= 2, "the hold's baseline: its index and one shard: {baseline:?}");
    controller.stop();
    scene.cleanup().await;
}

/// The kstatus library's verdict (as Flux computes health), through target/testenv/kstatus.
fn kstatus(namespace: &str, name: &str) -> String {
    let tool = repo_root().join("target/testenv/kstatus");
    assert!(tool.exists(), "{} missing: run scripts/controlplane build", tool.display());
    let out = std::process::Command::new(tool)
        .args(["--kubeconfig", path_str(&control_plane().kubeconfig), "accessregistrations.access.jpki.dev", name, "-n", namespace])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn kubectl_wait_does_not_return_on_a_stale_condition() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "stale").await;
    let v = scene.verifier("v").await;
    let reg = scene.create(&scene.registration(&v, "r", &["10.15.0.0/24"], "2026-04-01", None)).await;
    scene.approve(&reg, "2026-03-05T01:00:00Z").await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    scene.wait_phase("r", RegistrationPhase::Active, Duration::from_secs(10)).await;
    let target = "accessregistration/r".to_string();
    assert!(kubectl(&["wait", "--for=condition=Ready", "-n", &scene.ns, &target, "--timeout=5s"]).status.success());
    assert_eq!(kstatus(&scene.ns, "r"), "Current", "an active registration");
    let orphan = scene.create(&scene.registration("no-such-verifier", "orphan", &["10.15.9.0/24"], "2026-04-01", None)).await;
    scene.wait_phase(&orphan.name_any(), RegistrationPhase::Invalid, Duration::from_secs(10)).await;
    assert_eq!(kstatus(&scene.ns, "orphan"), "Failed", "an invalid registration");

    controller.stop();
    scene.registrations().patch("r", &PatchParams::default(), &Patch::Merge(json!({"spec": {"sourceCidrs": ["10.15.0.0/25"]}}))).await.unwrap();
    assert_eq!(kstatus(&scene.ns, "r"), "InProgress", "a registration just changed");
    let out = kubectl(&["wait", "--for=condition=Ready", "-n", &scene.ns, &target, "--timeout=3s"]);
    assert!(!out.status.success(), "Ready=True of generation 1 must not satisfy a wait on generation 2");

    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let out = kubectl(&["wait", "--for=condition=Ready", "-n", &scene.ns, &target, "--timeout=20s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(kstatus(&scene.ns, "r"), "Current");
    controller.stop();
    scene.cleanup().await;
}

#[tokio::test]
async fn only_the_lease_holder_writes_and_a_killed_leader_is_replaced_within_the_lease_duration() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "leader").await;
    let v = scene.verifier("v").await;
    let lease = format!("lease-{}", scene.ns);
    let args = ["--lease-namespace", scene.ns.as_str(), "--lease-name", lease.as_str()];
    let mut a = ControllerProcess::start(&[&args[..], &["--identity", "replica-a"]].concat());
    let mut b = ControllerProcess::start(&[&args[..], &["--identity", "replica-b"]].concat());
    a.wait_ready().await;
    b.wait_ready().await;
    eventually(Duration::from_secs(20), "one leader", || async { a.metric("jpki_access_leader") + b.metric("jpki_access_leader") == 1.0 }).await;
    let (mut leader, mut follower) = if a.metric("jpki_access_leader") == 1.0 { (a, b) } else { (b, a) };
    let holder = kubectl_ok(&["get", "lease", &lease, "-n", &scene.ns, "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(holder == "replica-a" || holder == "replica-b", "holder {holder}");

    let r1 = scene.create(&scene.registration(&v, "r1", &["10.16.1.0/24"], "2026-04-01", None)).await;
    scene.approve(&r1, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("r1", RegistrationPhase::Active, Duration::from_secs(10)).await;
    let follower_writes =
        |c: &ControllerProcess| c.metric("jpki_access_writes_total{operation=\"apply\"}") + c.metric("jpki_access_writes_total{operation=\"status\"}");
    assert_eq!(follower_writes(&follower), 0.0, "the follower must not write");
    assert!(follower_writes(&leader) > 0.0);

    leader.signal("KILL");
    let killed = Instant::now();
    let _ = leader.child.wait();
    eventually(Duration::from_secs(30), "the follower takes over", || async { follower.metric("jpki_access_leader") == 1.0 }).await;
    let takeover = killed.elapsed();
    eprintln!("leader SIGKILLed → follower leads after {takeover:?}");
    assert!(takeover <= Duration::from_secs(15 + 5 + 2), "lease duration 15 s + retry: took {takeover:?}");
    let r2 = scene.create(&scene.registration(&v, "r2", &["10.16.2.0/24"], "2026-04-01", None)).await;
    scene.approve(&r2, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("r2", RegistrationPhase::Active, Duration::from_secs(10)).await;
    assert_eq!(ours(published(&client, "production").await, "10.16."), ["10.16.1.0/24", "10.16.2.0/24"]);
    assert!(follower.stop(), "graceful stop releases the Lease");
    let holder = kubectl_ok(&["get", "lease", &lease, "-n", &scene.ns, "-o", "jsonpath={.spec.holderIdentity}"]);
    assert!(holder.is_empty(), "released on shutdown, holder still {holder:?}");

    // The outputs equal a single-replica run's: a fresh single replica finds nothing to write.
    let mut single = ControllerProcess::start(&["--no-leader-election"]);
    single.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(single.metric("jpki_access_writes_total{operation=\"apply\"}"), 0.0, "{}", single.log_text());
    assert_eq!(single.metric("jpki_access_writes_total{operation=\"status\"}"), 0.0, "{}", single.log_text());
    single.stop();
    scene.cleanup().await;
}

/// A kubeconfig for a ServiceAccount token of the test control plane.
fn service_account_kubeconfig(namespace: &str, account: &str, dir: &std::path::Path) -> std::path::PathBuf {
    kubectl_ok(&["create", "serviceaccount", account, "-n", namespace]);
    let token = kubectl_ok(&["create", "token", account, "-n", namespace, "--duration", "1h"]);
    let admin: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&control_plane().kubeconfig).unwrap()).unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}], "current-context": "c"});
    let path = dir.join(format!("{account}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

fn can_i(kubeconfig: &std::path::Path, args: &[&str]) -> bool {
    let out = std::process::Command::new(&control_plane().kubectl).arg("--kubeconfig").arg(kubeconfig).args(["auth", "can-i"]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn the_controller_works_with_its_role_alone_and_a_viewer_cannot_approve() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "rbac").await;
    let v = scene.verifier("v").await;
    let rbac = repo_root().join("tests/fixtures/rbac");
    kubectl_ok(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-f", path_str(&rbac)]);
    let dir = tempfile::tempdir().unwrap();
    let controller_config = service_account_kubeconfig(&scene.ns, "controller", dir.path());
    let viewer_config = service_account_kubeconfig(&scene.ns, "viewer", dir.path());
    kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &format!("{}-controller", scene.ns),
        "--clusterrole=jpki-access-controller",
        &format!("--serviceaccount={}:controller", scene.ns),
    ]);
    kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &format!("{}-viewer", scene.ns),
        "--clusterrole=jpki-access-viewer",
        &format!("--serviceaccount={}:viewer", scene.ns),
    ]);

    eventually(Duration::from_secs(10), "bindings in force", || async { can_i(&controller_config, &["list", "accessregistrations.access.jpki.dev", "-A"]) })
        .await;
    for (allowed, verb_resource) in [
        (true, vec!["patch", "accessregistrations.access.jpki.dev", "--subresource=status", "-n", "x"]),
        (true, vec!["patch", "configmaps", "-n", "x"]),
        (true, vec!["delete", "networkpolicies.networking.k8s.io", "-n", "x"]),
        (true, vec!["create", "events.events.k8s.io", "-n", "x"]),
        (true, vec!["patch", "events.events.k8s.io", "-n", "x"]),
        (true, vec!["update", "leases.coordination.k8s.io", "-n", "x"]),
        (false, vec!["get", "secrets", "-n", "x"]),
        (false, vec!["create", "pods", "-n", "x"]),
        (false, vec!["create", "accessapprovals.access.jpki.dev", "-n", "x"]),
        (false, vec!["patch", "accessregistrations.access.jpki.dev", "-n", "x"]),
        (false, vec!["*", "*"]),
    ] {
        assert_eq!(can_i(&controller_config, &verb_resource), allowed, "controller can-i {verb_resource:?}");
    }
    assert!(can_i(&viewer_config, &["list", "accessregistrations.access.jpki.dev", "-A"]));
    assert!(!can_i(&viewer_config, &["create", "accessapprovals.access.jpki.dev", "-n", &scene.ns]));
    let reg = scene.create(&scene.registration(&v, "r", &["10.17.0.0/24"], "2026-04-01", None)).await;
    let approval = approval_for(&reg, Decision::Approved, "viewer", "2026-03-05T01:00:00Z".parse().unwrap(), None).unwrap();
    let out = std::process::Command::new(&control_plane().kubectl)
        .arg("--kubeconfig")
        .arg(&viewer_config)
        .args(["create", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(serde_json::to_string(&approval).unwrap().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "a viewer created an approval: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The controller, running as its ServiceAccount, does its whole job.
    scene.approve(&reg, "2026-03-05T01:00:00Z").await;
    let lease_ns = scene.ns.clone();
    let mut controller = ControllerProcess::start_with_kubeconfig(&["--lease-namespace", &lease_ns, "--lease-name", "rbac-test"], &controller_config);
    controller.wait_ready().await;
    scene.wait_phase("r", RegistrationPhase::Active, Duration::from_secs(20)).await;
    assert_eq!(ours(published(&client, "production").await, "10.17."), ["10.17.0.0/24"]);
    assert!(!controller.log_text().contains("forbidden"), "{}", controller.log_text());
    controller.stop();
    for b in ["controller", "viewer"] {
        let _ = kubectl(&["delete", "clusterrolebinding", &format!("{}-{b}", scene.ns)]);
    }
    scene.cleanup().await;
}

#[tokio::test]
async fn a_stored_object_that_no_longer_fits_the_types_is_reported_and_the_others_keep_reconciling() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "unreadable").await;
    let v = scene.verifier("v").await;
    // Store an object the types cannot read, as if written before a schema change: loosen the CRD for a moment.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut loose = <AccessRegistration as kube::CustomResourceExt>::crd();
    let schema = loose.spec.versions[0].schema.as_mut().unwrap().open_api_v3_schema.as_mut().unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    *spec = serde_json::from_value(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})).unwrap();
    schema.x_kubernetes_validations = None;
    crds.patch("accessregistrations.access.jpki.dev", &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&loose)).await.unwrap();
    let bad = json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
        "metadata": {"name": "from-the-old-days", "namespace": scene.ns}, "spec": {"verifierRef": 42, "sourceCidrs": "192.0.2.0/24"}});
    let created = eventually(Duration::from_secs(10), "loose schema in force", || async {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &scene.ns, &kube::api::ApiResource::erase::<AccessRegistration>(&()));
        api.create(&PostParams::default(), &serde_json::from_value(bad.clone()).unwrap()).await.is_ok()
    })
    .await;
    eprintln!("stored the unreadable object after {created:?}");
    install_crds(&client).await; // the real schema again

    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let good = scene.create(&scene.registration(&v, "good", &["10.18.0.0/24"], "2026-04-01", None)).await;
    scene.approve(&good, "2026-03-05T01:00:00Z").await;
    scene.wait_phase("good", RegistrationPhase::Active, Duration::from_secs(10)).await;
    assert_eq!(ours(published(&client, "production").await, "10.18."), ["10.18.0.0/24"]);
    eventually(Duration::from_secs(10), "reported as an event and a metric", || async {
        let events =
            kubectl_ok(&["get", "events", "-n", &scene.ns, "--field-selector", "involvedObject.name=from-the-old-days", "-o", "jsonpath={.items[*].reason}"]);
        events.contains("Unreadable") && controller.metric("jpki_access_unreadable_objects{kind=\"AccessRegistration\"}") == 1.0
    })
    .await;
    assert!(controller.log_text().contains("does not fit the types"), "{}", controller.log_text());
    controller.stop();
    scene.cleanup().await;
}

/// `kubectl jpki ...` through the real kubectl, which finds the plugin `kubectl-jpki` on PATH.
fn kubectl_jpki(bin_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    std::process::Command::new(&control_plane().kubectl)
        .arg("jpki")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_kubectl_plugin_approves_shows_status_and_prints_the_notice() {
    let _one = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let client = client().await;
    let mut scene = Scene::new(&client, "plugin").await;
    let v = scene.verifier("v").await;
    scene.create(&scene.registration(&v, "r", &["10.20.0.0/24"], "2026-04-01", None)).await;
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_jpki-access"), bin.path().join("kubectl-jpki")).unwrap();

    let out = kubectl_jpki(bin.path(), &["approve", "r", "-n", &scene.ns, "--comment", "書類確認済み"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let approvals = Api::<AccessApproval>::namespaced(client.clone(), &scene.ns).list(&ListParams::default()).await.unwrap().items;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].spec.approved_by, "admin", "the approval records the requesting user");
    let again = kubectl_jpki(bin.path(), &["approve", "r", "-n", &scene.ns]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds a decision"));
    let pending = String::from_utf8(kubectl_jpki(bin.path(), &["explain", "r", "-n", &scene.ns]).stdout).unwrap();
    assert!(pending.contains("✓ 3. approved by"), "the approval is seen before the controller runs: {pending}");
    let missing = kubectl_jpki(bin.path(), &["approve", "nope", "-n", &scene.ns]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("kubectl get accessregistrations -A"), "errors say what to do next");

    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    scene.wait_phase("r", RegistrationPhase::Active, Duration::from_secs(10)).await;
    let status = String::from_utf8(kubectl_jpki(bin.path(), &["status"]).stdout).unwrap();
    let row = status.lines().find(|l| l.contains(&format!("{}/r ", scene.ns))).unwrap_or_else(|| panic!("{status}"));
    assert!(row.contains("Active") && row.contains("2026-04-01"), "{row}");
    assert!(status.lines().any(|l| l.starts_with("production (Production):")), "{status}");
    let explain = String::from_utf8(kubectl_jpki(bin.path(), &["explain", "r", "-n", &scene.ns]).stdout).unwrap();
    assert!(explain.contains(": Active (Active)") && explain.contains("✓ 3. approved by") && explain.contains("✓ 8. no conflict"), "{explain}");
    let notice = String::from_utf8(kubectl_jpki(bin.path(), &["notice", "r", "-n", &scene.ns]).stdout).unwrap();
    assert!(notice.starts_with("URL通知書") && notice.contains("https://ocsp.prod.jpki.example/"), "{notice}");
    controller.stop();
    scene.cleanup().await;
}
