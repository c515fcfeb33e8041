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

use jpki_access::api::common::JstDate;
use jpki_access::api::{AccessApproval, AccessEnvironment};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use support::cutoff::CutOff;
use support::edge::{Agent, wait_for};
use support::fault_rig::*;
use support::faultproxy::{Counts, FaultProxy};
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

/// The API server answers a share of requests 500 or 429, and the rest late: the controller and the agent reach it
/// only through the fault proxy (tests/testenv/faultproxy.go). During the fault a registration is revoked: the
/// revocation is enforced within the bound below, nothing is ever admitted that should not be, and the clients'
/// retries stay bounded (no storm: the request rate under faults is compared with the same clients' quiet rate).
#[tokio::test]
async fn an_api_server_answering_500_429_and_late_never_over_permits_and_is_not_stormed_by_retries() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::new("e").await;
    let proxy = FaultProxy::start(&rig.cp);
    let mut controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election"], &proxy.kubeconfig);
    controller.wait_ready().await;
    let _agent = Agent::start(&proxy.kubeconfig, &rig.topo.router, "node-e", &[]);
    rig.approve_edge_and_revocable().await;

    let quiet_for = Duration::from_secs(10);
    let before = proxy.counts();
    tokio::time::sleep(quiet_for).await;
    let quiet = proxy.counts() - before;

    // 40 % of requests fail. A write that fails waits 1 s, then 2 s, then 4 s before its next try (the controller's
    // backoff for refusals, src/controller/apply.rs), so the bound allows three failures in a row of the writes the
    // revocation needs (0.4³ = 6 % each) on top of issue #7's 5 s.
    let bound = PROPAGATION + Duration::from_secs(1 + 2 + 4);
    let scenario = rig.scenario(bound, bound);
    let checker = rig.checker(&scenario, Duration::from_millis(250));
    let faulty_for = Duration::from_secs(25);
    proxy.set(0.3, 0.1, Duration::from_millis(200));
    let faults_from = Instant::now();
    let before = proxy.counts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.revoke(&scenario, Revoke::Registration).await;
    let enforced = wait_for(&rig.topo, "the revocation through the faults", &revoked_probes(), bound);
    tokio::time::sleep(faulty_for.saturating_sub(faults_from.elapsed())).await;
    let faulty = proxy.counts() - before;
    proxy.set(0.0, 0.0, Duration::ZERO);
    tokio::time::sleep(bound).await;
    let report = checker.finish();
    let rate = |c: Counts, d: Duration| c.requests as f64 / d.as_secs_f64();
    eprintln!(
        "quiet: {quiet:?} in {quiet_for:?} ({:.1}/s); faults: {faulty:?} in {faulty_for:?} ({:.1}/s); the revocation at the edge {enforced:?} after it was written",
        rate(quiet, quiet_for),
        rate(faulty, faulty_for)
    );
    report.assert_holds("API server answering 500, 429 and late");
    assert!(faulty.injected_500 > 0 && faulty.injected_429 > 0, "the faults were injected: {faulty:?}");
    // Retries are bounded: under 40 % errors the clients ask at most 3 times as often as when all is well (a retry
    // without backoff would be hundreds a second).
    assert!(rate(faulty, faulty_for) <= 3.0 * rate(quiet, quiet_for) + 2.0, "a retry storm: quiet {quiet:?}, under faults {faulty:?}");
    rig.topo.check("after the faults", &revoked_probes());
    controller.stop();
}

/// libfaketime (Debian's package): preloaded into the controller, its wall clock follows a file the test rewrites
/// while it runs; its monotonic clock (timers) stays true, as when NTP steps a clock or a VM resumes.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Sources of the clock test: one registration starting tomorrow, one ending today (JST).
const STARTS4: &str = "198.51.100.40";
const ENDS4: &str = "198.51.100.50";

/// The controller's wall clock jumps two days forward, across a registration's start date and another's end date,
/// then back. Forward: the first is admitted and the second refused (its end date passed: a revocation) within the
/// bound of the jump. Back: the start is taken back (the date has not come by that clock: fail closed) and the end
/// stays (an expiry, once recorded, is final).
#[tokio::test]
async fn the_controllers_clock_jumping_forward_and_back_across_a_start_and_an_end_date() {
    let _one = ONE_AT_A_TIME.lock().await;
    assert!(std::path::Path::new(FAKETIME).exists(), "{FAKETIME} is missing: apt-get install libfaketime (scripts/test does)");
    let rig = Rig::new("j").await;
    for source in [STARTS4, ENDS4] {
        rig.topo.add_source(source);
    }
    rig.topo.settle();
    let clock = rig.cp.dir.path().join("controller-clock");
    std::fs::write(&clock, "+0\n").unwrap();
    let env =
        [("LD_PRELOAD", FAKETIME), ("FAKETIME_TIMESTAMP_FILE", support::path_str(&clock)), ("FAKETIME_NO_CACHE", "1"), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
    let mut controller = ControllerProcess::start_with_env(&["--no-leader-election"], &rig.cp.kubeconfig, &env);
    controller.wait_ready().await;
    let _agent = rig.agent("node-j", &[]);
    rig.approve_edge_and_revocable().await;
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9))).date();
    let mut starts = rig.registration("starts", &[format!("{STARTS4}/32")]);
    starts.spec.access_start_date = JstDate(today.tomorrow().unwrap().to_string());
    let mut ends = rig.registration("ends", &[format!("{ENDS4}/32")]);
    ends.spec.access_end_date = Some(JstDate(today.to_string()));
    register_and_approve(&rig.client, &starts).await.unwrap();
    register_and_approve(&rig.client, &ends).await.unwrap();
    let mut probes = expect_only(&[C4_OK, C6_OK]);
    probes.extend([probe(ENDS4, R4, 443, true), probe(STARTS4, R4, 443, false)]);
    wait_for(&rig.topo, "today: the ending registration admitted, the starting one not yet", &probes, PROPAGATION);

    // The controller notices a jump of its wall clock within a second (src/controller/mod.rs), then a pass.
    let bound = PROPAGATION + Duration::from_secs(1);
    let scenario = rig.scenario(bound, bound);
    scenario.watch(ENDS4, jpki_oracle::Expect::Admit);
    scenario.watch(STARTS4, jpki_oracle::Expect::Refuse);
    let checker = rig.checker(&scenario, Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(1)).await;

    scenario.admit(&[STARTS4]);
    scenario.refuse(&[ENDS4]);
    std::fs::write(&clock, "+2d\n").unwrap();
    let mut probes = expect_only(&[C4_OK, C6_OK]);
    probes.extend([probe(ENDS4, R4, 443, false), probe(STARTS4, R4, 443, true)]);
    let forward = wait_for(&rig.topo, "two days later: started and ended", &probes, bound);
    tokio::time::sleep(Duration::from_secs(3)).await;

    scenario.refuse(&[STARTS4]);
    std::fs::write(&clock, "+0\n").unwrap();
    let mut probes = expect_only(&[C4_OK, C6_OK]);
    probes.extend([probe(ENDS4, R4, 443, false), probe(STARTS4, R4, 443, false)]);
    let back = wait_for(&rig.topo, "back to today: not started again, still ended", &probes, bound);
    tokio::time::sleep(bound).await;
    let report = checker.finish();
    eprintln!("clock +2 days: enforced at the edge in {forward:?}; back: in {back:?}");
    report.assert_holds("controller clock jumps");
    controller.stop();
}

/// etcd restored from a snapshot taken before a revocation: the revoked approval is back in the API server, and with
/// it the old NetworkPolicies and the old signed allowlist. The test follows the procedure Kubernetes documents for a
/// restore (the API server started on the restored data, then the components that cached the newer state restarted)
/// in the order SECURITY.md asks for: the agent first, which keeps enforcing its newer set (it refuses the older
/// serial) and reports it, then the controller. The revocation must not come back at the edge: the controller finds
/// the stored set older than the one agents enforce, holds the environment (writes nothing for it) and says so; a
/// person re-applies the revocation and accepts, and the hold ends. What the restored NetworkPolicies and allowlist
/// admit meanwhile is measured and printed (SECURITY.md states it as a limit), not asserted.
#[tokio::test]
async fn etcd_restored_from_a_snapshot_taken_before_a_revocation_does_not_bring_the_revocation_back_at_the_edge() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut rig, mut controller, agent) = Rig::with_edge("r", "node-r").await;
    let serving = |rig: &Rig| {
        let registrations = rig.registrations();
        async move { registrations.list(&Default::default()).await.is_ok() }
    };
    // The snapshot: a copy of etcd's data with the control plane stopped.
    let etcd = rig.cp.dir.path().join("etcd");
    let snapshot = rig.cp.dir.path().join("etcd-snapshot");
    rig.cp.stop();
    assert!(Command::new("cp").arg("-a").arg(&etcd).arg(&snapshot).status().unwrap().success());
    let dir = std::mem::replace(&mut rig.cp.dir, tempfile::tempdir().unwrap());
    rig.cp = OwnControlPlane::start(dir);
    eventually(Duration::from_secs(60), "the API server back after the snapshot", || serving(&rig)).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // the controller's and the agent's watches are back

    let scenario = rig.scenario(PROPAGATION, PROPAGATION);
    let checker = rig.checker(&scenario, Duration::from_millis(250));
    rig.revoke(&scenario, Revoke::Approval).await;
    wait_for(&rig.topo, "the revocation at the edge", &revoked_probes(), PROPAGATION);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // From now on the pair must never be admitted again at the edge: no grace at all.
    scenario.watch(REVOKED4, jpki_oracle::Expect::Refuse);
    scenario.watch(REVOKED6, jpki_oracle::Expect::Refuse);

    // The restore, then the agent restarted, then the controller.
    rig.cp.stop();
    controller.stop();
    agent.kill();
    std::fs::remove_dir_all(&etcd).unwrap();
    std::fs::rename(&snapshot, &etcd).unwrap();
    let dir = std::mem::replace(&mut rig.cp.dir, tempfile::tempdir().unwrap());
    rig.cp = OwnControlPlane::start(dir);
    let restored = Instant::now();
    eventually(Duration::from_secs(60), "the API server back after the restore", || serving(&rig)).await;
    let approvals: Api<AccessApproval> = Api::namespaced(rig.client.clone(), &rig.ns);
    let back = approvals.list(&Default::default()).await.unwrap().items.iter().any(|a| a.spec.registration_ref == "revocable");
    assert!(back, "the restore brought the revoked approval back (the precondition of this test)");
    let _agent = rig.agent("node-r", &[]);
    tokio::time::sleep(Duration::from_secs(12)).await; // a heartbeat period (10 s): the agent reports its newer serial
    let mut controller = rig.controller(&["--no-leader-election"]);
    controller.wait_ready().await;
    let held_message = || async {
        let env = Api::<AccessEnvironment>::all(rig.client.clone()).get("production").await.ok()?;
        let c = env.status?.conditions.into_iter().find(|c| c.type_ == "AllowlistIntact")?;
        (c.status == "False" && c.message.contains("accept-rollback=")).then_some(c.message)
    };
    eventually(Duration::from_secs(30), "the environment held after the rollback", || async { held_message().await.is_some() }).await;
    let held = restored.elapsed();
    // Another approval changes the set: it must not carry the restored decision to the edge with a newer serial.
    rig.register_and_approve("after-restore", &["192.0.2.77/32".to_string()]).await.unwrap();
    tokio::time::sleep(PROPAGATION).await;
    rig.topo.check("held after the restore", &revoked_probes());

    // A person re-applies the revocation the restore undid, then accepts the store as it is.
    rig.revoke(&scenario, Revoke::Approval).await;
    let message = held_message().await.expect("still held");
    let serial = message.rsplit("accept-rollback=").next().unwrap().trim().to_string();
    let patch = json!({"metadata": {"annotations": {"access.jpki.dev/accept-rollback": serial}}});
    Api::<AccessEnvironment>::all(rig.client.clone()).patch("production", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let accepted = Instant::now();
    eventually(Duration::from_secs(15), "the hold ended", || async { held_message().await.is_none() }).await;
    tokio::time::sleep(PROPAGATION).await;
    let report = checker.finish();
    eprintln!("restored: held {held:?} after the restore began, accepted {:?} after it; the oracle:\n{}", accepted - restored, report.summary());
    assert!(report.samples >= 5 && report.revocations >= 1);
    for (layer, l) in &report.layers {
        if layer.starts_with("nft") || layer.starts_with("connect") {
            assert!(l.over.violations.is_empty(), "the edge ({layer}) admitted the revoked pair again:\n{}", report.summary());
        }
    }
    rig.topo.check("after the acceptance", &revoked_probes());
    controller.stop();
}
