//! The firewall agent with the controller, on a real control plane and real nftables (issue #7): an approval lets
//! a client through within 5 s, its deletion shuts it out within 5 s, the environment shows the agent in sync; an
//! API server outage changes nothing and causes no re-apply; a broken ruleset leaves the previous rules in force.
#![cfg(feature = "cluster-tests")]
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use std::time::{Duration, Instant};
use support::edge::{Agent, approve, client_for, report, setup, teardown, wait_for};
use support::netns::*;
use support::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn an_approval_opens_the_edge_within_5s_and_its_deletion_closes_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cp = control_plane();
    let client = client().await;
    let topo = Topology::new("g").with_listeners();
    topo.settle();
    let ns = format!("t-agent-{}", unique_suffix());
    let reg = setup(&client, &cp.kubeconfig, &ns, &[&format!("{C4_OK}/32"), &format!("{C6_OK}/128")]).await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let node = format!("node-{}", unique_suffix());
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &node, &[]);
    wait_for(&topo, "nobody approved: 443 closed to both", &expect_only(&[]), Duration::from_secs(20));

    let approval = approve(&client, &reg).await;
    let took = wait_for(&topo, "approved source let in", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(5));
    eprintln!("approval → client admitted in {took:?}");
    eventually(Duration::from_secs(10), "environment shows the agent in sync", || async {
        let env = Api::<AccessEnvironment>::all(client.clone()).get("production").await.unwrap();
        let digest = env.status.as_ref().and_then(|s| s.allowlist_digest.clone());
        let agents = env.status.and_then(|s| s.agents_in_sync).unwrap_or_default();
        let ours = report(&client, &node).await.unwrap_or_default();
        agents.starts_with(|c: char| c.is_ascii_digit()) && Some(&ours.applied_digest) == digest.as_ref() && ours.error.is_empty() && ours.ready
    })
    .await;
    // The tag of what was applied, as people read it: the comment of the one element of the `applied` set.
    let table = topo.list(&["set", "inet", "jpki_access_production", "applied"]);
    assert!(table.contains("comment \"jpki-access digest sha256:"), "{table}");

    Api::<AccessApproval>::namespaced(client.clone(), &ns).delete(&approval.name_any(), &DeleteParams::default()).await.unwrap();
    let took = wait_for(&topo, "approval deleted: shut out", &expect_only(&[]), Duration::from_secs(5));
    eprintln!("approval deleted → client shut out in {took:?}");
    drop(agent);
    controller.stop();
    teardown(&client, &ns).await;
}

#[tokio::test]
async fn a_broken_ruleset_leaves_the_previous_rules_and_is_reported() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cp = control_plane();
    let client = client().await;
    let topo = Topology::new("h").with_listeners();
    topo.settle();
    let ns = format!("t-agentb-{}", unique_suffix());
    let reg = setup(&client, &cp.kubeconfig, &ns, &[&format!("{C4_OK}/32"), &format!("{C6_OK}/128")]).await;
    approve(&client, &reg).await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let node = format!("node-{}", unique_suffix());
    let hook = tempfile::tempdir().unwrap();
    let break_file = hook.path().join("break");
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &node, &["--break-file", path_str(&break_file)]);
    wait_for(&topo, "approved", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(15));
    let good = report(&client, &node).await.unwrap().applied_digest;

    std::fs::write(&break_file, "").unwrap();
    // A second registration of the same verifier adds the refused addresses: the agent's apply now fails.
    let mut more: AccessRegistration = reg.clone();
    more.metadata = kube::api::ObjectMeta { name: Some("edge-2".into()), namespace: Some(ns.clone()), ..Default::default() };
    more.spec.source_cidrs = vec![format!("{C4_NO}/32").as_str().into(), format!("{C6_NO}/128").as_str().into()];
    more.status = None;
    let more = Api::<AccessRegistration>::namespaced(client.clone(), &ns).create(&PostParams::default(), &more).await.unwrap();
    approve(&client, &more).await;
    eventually(Duration::from_secs(15), "the failure is reported", || async {
        let published = Api::<AccessEnvironment>::all(client.clone()).get("production").await.unwrap().status.and_then(|s| s.allowlist_digest);
        report(&client, &node).await.is_some_and(|r| !r.error.is_empty() && !r.ready && r.applied_digest == good && published.is_some_and(|p| p != good))
    })
    .await;
    assert_eq!(agent.get("/readyz").map(|(code, _)| code), Some(503), "not ready while its applies fail");
    topo.check("the previous rules stay in force", &expect_only(&[C4_OK, C6_OK]));
    assert!(agent.log().contains("apply failed; the previous rules stay in force"), "{}", agent.log());

    std::fs::remove_file(&break_file).unwrap();
    // The agent retries on its resync (5 s here) and catches up.
    wait_for(&topo, "repaired", &expect_only(&[C4_OK, C6_OK, C4_NO, C6_NO]), Duration::from_secs(15));
    drop(agent);
    controller.stop();
    teardown(&client, &ns).await;
}

/// A control plane of this test only, so that stopping it disturbs no other test.
#[tokio::test]
async fn an_api_server_outage_changes_nothing_and_causes_no_reapply() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _ = control_plane(); // kubectl and the binary are built
    let mut cp = OwnControlPlane::start(tempfile::tempdir().unwrap());
    let client = client_for(&cp.kubeconfig).await;
    let topo = Topology::new("i").with_listeners();
    topo.settle();
    let ns = "t-outage";
    let reg = setup(&client, &cp.kubeconfig, ns, &[&format!("{C4_OK}/32"), &format!("{C6_OK}/128")]).await;
    approve(&client, &reg).await;
    let mut controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election"], &cp.kubeconfig);
    controller.wait_ready().await;
    let agent = Agent::start(&cp.kubeconfig, &topo.router, "node-outage", &[]);
    wait_for(&topo, "approved", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(15));
    controller.stop();
    assert_eq!(agent.applies(), 1, "{}", agent.log());

    cp.stop();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(12) {
        topo.check("API server down: rules unchanged", &expect_only(&[C4_OK, C6_OK]));
    }
    assert!(agent.running(), "the agent must keep running while the API server is down");

    let dir = std::mem::replace(&mut cp.dir, tempfile::tempdir().unwrap());
    let cp2 = OwnControlPlane::start(dir);
    assert_eq!(cp2.kubeconfig, cp.kubeconfig);
    tokio::time::sleep(Duration::from_secs(12)).await; // the agent's watch reconnects and its resync (5 s) runs
    topo.check("API server back", &expect_only(&[C4_OK, C6_OK]));
    assert_eq!(agent.applies(), 1, "an unchanged allowlist must not be re-applied:\n{}", agent.log());
    drop(agent);
}
