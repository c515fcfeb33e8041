//! More fault tests (issue #19), on the rig and oracle of tests/faults.rs: a leader frozen past its lease, an agent
//! cut off from the API server while a revocation happens, an agent restarted while the API server is down. Each
//! states its scenario, revokes during its fault, and is judged by the oracle (tests/oracle) from real connects,
//! the node's whole ruleset, every NetworkPolicy and the signed allowlist.
//!
//! Gated by the feature `fault-tests`, like tests/faults.rs.
#![cfg(feature = "fault-tests")]
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::AccessEnvironment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::time::{Duration, Instant};
use support::cutoff::CutOff;
use support::edge::{Agent, wait_for};
use support::fault_rig::*;
use support::netns::*;
use support::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Probes that the revocable pair is refused and the edge's sources still admitted.
fn revoked_probes() -> Vec<Probe> {
    let mut probes = expect_only(&[C4_OK, C6_OK]);
    probes.extend([probe(REVOKED4, R4, 443, false), probe(REVOKED4, S4, 443, false), probe(REVOKED6, R6, 443, false)]);
    probes
}

fn writes(c: &ControllerProcess) -> f64 {
    ["apply", "status", "failed"].iter().map(|op| c.metric(&format!("jpki_access_writes_total{{operation=\"{op}\"}}"))).sum()
}

/// The leader is frozen (SIGSTOP) for longer than its Lease; the standby takes over and a revocation is enforced;
/// then the old leader resumes (SIGCONT). Fencing: it must not write anything once it has lost the Lease, and the
/// revoked pair must never be admitted again (after the revocation reached the edge, not a single sample).
#[tokio::test]
async fn a_frozen_leader_that_lost_its_lease_writes_nothing_when_it_resumes_and_the_revocation_stands() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::new("f").await;
    let lease = ["--lease-namespace", "faults", "--lease-name", "faults"];
    let mut replicas =
        [rig.controller(&[&lease[..], &["--identity", "replica-a"]].concat()), rig.controller(&[&lease[..], &["--identity", "replica-b"]].concat())];
    for r in &mut replicas {
        r.wait_ready().await;
    }
    eventually(Duration::from_secs(30), "one leader", || async { replicas.iter().map(|r| r.metric("jpki_access_leader")).sum::<f64>() == 1.0 }).await;
    let [a, b] = replicas;
    let (mut leader, mut standby) = if a.metric("jpki_access_leader") == 1.0 { (a, b) } else { (b, a) };
    let _agent = rig.agent("node-f", &[]);
    rig.approve_edge_and_revocable().await;
    let scenario = rig.scenario(PROPAGATION, PROPAGATION);
    let checker = rig.checker(&scenario, Duration::from_millis(250));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let written_before = writes(&leader);
    leader.signal("STOP");
    let frozen = Instant::now();
    scenario.outage_begins(); // no replica leads until the takeover
    eventually(TAKEOVER + Duration::from_secs(10), "the standby takes over", || async { standby.metric("jpki_access_leader") == 1.0 }).await;
    scenario.outage_ends();
    let takeover = frozen.elapsed();
    rig.revoke(&scenario, Revoke::Approval).await;
    let enforced = wait_for(&rig.topo, "the revocation at the edge", &revoked_probes(), PROPAGATION);
    tokio::time::sleep(Duration::from_secs(1)).await; // the checker's API layers catch up
    // From now on the pair must never be admitted again: no grace at all.
    scenario.watch(REVOKED4, jpki_oracle::Expect::Refuse);
    scenario.watch(REVOKED6, jpki_oracle::Expect::Refuse);
    tokio::time::sleep(Duration::from_secs(2)).await;
    leader.signal("CONT");
    let resumed = Instant::now();
    eventually(Duration::from_secs(20), "the old leader knows it lost the Lease", || async { leader.metric("jpki_access_leader") == 0.0 }).await;
    let stepped_down = resumed.elapsed();
    tokio::time::sleep(Duration::from_secs(8)).await; // long enough for a pass and a resync of the old leader
    let report = checker.finish();
    let written_after = writes(&leader);
    eprintln!(
        "frozen {:?}; takeover {takeover:?} after the freeze; revocation at the edge in {enforced:?}; the old leader stepped down {stepped_down:?} after SIGCONT, writes {written_before} before and {written_after} after",
        resumed - frozen
    );
    report.assert_holds("frozen leader");
    assert_eq!(written_after, written_before, "the old leader wrote after losing its Lease (no fencing):\n{}", leader.log_text());
    rig.topo.check("after the old leader resumed", &revoked_probes());
    assert!(standby.stop());
    assert!(leader.stop());
}

/// The agent runs in the router's namespace and reaches the API server only through a route the test removes. While
/// it is cut off, a registration is revoked: the agent is reported stale within the environment's period, keeps
/// enforcing what it had (the revocation cannot reach it), and enforces the revocation within the bound of the
/// route's return.
#[tokio::test]
async fn an_agent_cut_off_from_the_api_server_is_reported_stale_and_enforces_the_revocation_when_the_path_heals() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::new("p").await;
    let stale_after = 8;
    let patch = json!({"spec": {"firewall": {"staleAfterSeconds": stale_after}}});
    Api::<AccessEnvironment>::all(rig.client.clone()).patch("production", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let mut controller = rig.controller(&["--no-leader-election"]);
    controller.wait_ready().await;
    let cut = CutOff::into(&rig.topo.router, "p", &rig.cp.kubeconfig).await;
    let wrapper = ["ip", "netns", "exec", rig.topo.router.as_str()];
    let _agent = Agent::start_with(&cut.kubeconfig, &wrapper, &rig.topo.router, "node-p", &[]);
    rig.approve_edge_and_revocable().await;
    // After the route's return the agent's watch reconnects within its backoff cap (5 s) before it can apply.
    let bound = PROPAGATION + Duration::from_secs(5);
    let scenario = rig.scenario(bound, bound);
    let checker = rig.checker(&scenario, Duration::from_millis(250));
    let environment = || async {
        let env = Api::<AccessEnvironment>::all(rig.client.clone()).get("production").await.unwrap();
        env.status.and_then(|s| s.agents).unwrap_or_default()
    };
    eventually(Duration::from_secs(15), "the agent in sync", || async { environment().await.in_sync == 1 }).await;

    cut.cut();
    let cut_at = Instant::now();
    scenario.outage_begins();
    rig.revoke(&scenario, Revoke::Registration).await;
    let stale = eventually(Duration::from_secs(stale_after + 10), "the cut-off agent reported stale", || async {
        environment().await.stale.iter().any(|n| n == "node-p")
    })
    .await;
    rig.topo.check("cut off: the agent keeps what it had", &expect_only(&[C4_OK, C6_OK]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut.heal();
    let healed = Instant::now();
    scenario.outage_ends();
    let enforced = wait_for(&rig.topo, "the revocation after the path healed", &revoked_probes(), bound);
    // Its heartbeat comes back when its connection's retransmissions get through (TCP backs off while cut).
    let in_sync_again = eventually(Duration::from_secs(40), "the agent in sync again", || async { environment().await.in_sync == 1 }).await;
    tokio::time::sleep(bound.saturating_sub(healed.elapsed())).await;
    let report = checker.finish();
    eprintln!(
        "cut off {:?}; reported stale {stale:?} after the cut (staleAfterSeconds {stale_after}); revocation at the edge {enforced:?} after the path healed, in sync again {in_sync_again:?} after it",
        healed - cut_at
    );
    report.assert_holds("agent cut off");
    assert!(stale <= Duration::from_secs(stale_after + 4), "stale within the period plus a pass: {stale:?}");
    controller.stop();
}

/// The agent is stopped, a registration revoked, the API server and etcd stopped, and the agent started again: it
/// boots from its state directory (the last verified set), never opens the edge, and enforces the revocation within
/// the bound of the API server's return.
#[tokio::test]
async fn an_agent_restarted_while_the_api_server_is_down_boots_from_its_last_set_and_enforces_the_revocation_on_return() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut rig, mut controller, agent) = Rig::with_edge("d", "node-d").await;
    let bound = PROPAGATION + Duration::from_secs(5);
    let scenario = rig.scenario(bound, bound);
    let checker = rig.checker(&scenario, Duration::from_millis(250));

    agent.kill();
    scenario.outage_begins(); // no agent, then no API server: nothing can reach the edge
    rig.revoke(&scenario, Revoke::Approval).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.cp.stop();
    let down = Instant::now();
    let agent = rig.agent("node-d", &[]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    rig.topo.check("the agent booted with the API server down", &expect_only(&[C4_OK, C6_OK]));
    assert!(agent.running(), "the agent must keep running while the API server is down:\n{}", agent.log());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let dir = std::mem::replace(&mut rig.cp.dir, tempfile::tempdir().unwrap());
    rig.cp = OwnControlPlane::start(dir);
    eventually(Duration::from_secs(60), "the API server serves AccessRegistrations again", || async {
        rig.registrations().list(&Default::default()).await.is_ok()
    })
    .await;
    let back = Instant::now();
    scenario.outage_ends();
    let enforced = wait_for(&rig.topo, "the revocation after the return", &revoked_probes(), bound);
    tokio::time::sleep(bound.saturating_sub(back.elapsed())).await;
    let report = checker.finish();
    eprintln!("API server down {:?}; the revocation at the edge {enforced:?} after its return", back - down);
    report.assert_holds("agent restarted, API server down");
    assert!(agent.log().contains("boot: enforcing the last verified set persisted on this node"), "{}", agent.log());
    controller.stop();
}
