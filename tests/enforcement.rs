//! Issue 18's acceptance, on the real control plane with real nftables and real TCP clients: tampering with the
//! published allowlist as an `edit` user and as a user who may write the allowlist objects never opens the edge
//! (acceptance 1); the agent boots on its persisted set or closed without the API server, and a failing `nft` leaves
//! the previous rules and makes it not ready (2); an agent cut off from the API server turns stale within the
//! environment's period and a missing one is counted (4); a foreign NetworkPolicy is reported without the chart's
//! admission policy (5; refused with it: tests/chart.rs).
#![cfg(feature = "cluster-tests")]
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::panic)]

mod support;

use jpki_access::api::AccessEnvironment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use std::time::{Duration, Instant};
use support::cutoff::CutOff;
use support::edge::{Agent, FormsCleanup, approve, report, setup, teardown, wait_for};
use support::netns::*;
use support::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sum of every sample of a metric family in a Prometheus text body.
fn metric_sum(body: &str, family: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' '])).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn controller_metrics(c: &ControllerProcess) -> String {
    http_get(c.port, "/metrics").unwrap_or_default()
}

/// Probes for `how_long`: the approved sources get in, the refused ones never do.
fn holds(topo: &Topology, when: &str, how_long: Duration) {
    let started = Instant::now();
    while started.elapsed() < how_long {
        topo.check(when, &expect_only(&[C4_OK, C6_OK]));
    }
}

fn kubectl_as(user: &str, args: &[&str]) -> (bool, String) {
    let mut full = vec!["--as", user];
    full.extend(args);
    let out = kubectl(&full);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn environment(client: &kube::Client) -> AccessEnvironment {
    Api::<AccessEnvironment>::all(client.clone()).get("production").await.unwrap()
}

fn condition(env: &AccessEnvironment, type_: &str) -> Option<(String, String, String)> {
    env.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Acceptance 1. As `mallory` (the built-in `edit` role in jpki-system, filled by the clusterrole-aggregation
/// controller) every write to the allowlist is forbidden, and what `edit` can write (a ConfigMap named like the old
/// allowlist, with 0.0.0.0/0) is not read by anyone. As `wanda` (a Role that may write the allowlist kinds) each
/// attempt is written, refused by the agent (signature, shard digest) and reported by the controller (metric,
/// Event, condition `AllowlistIntact`), which writes its own set back. Throughout, the refused sources stay out and
/// the approved ones in.
#[tokio::test]
async fn tampering_as_an_editor_or_an_allowlist_writer_never_opens_the_edge() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cp = control_plane();
    let client = client().await;
    let topo = Topology::new("t").with_listeners();
    topo.settle();
    let ns = format!("t-tamper-{}", unique_suffix());
    let _forms = FormsCleanup(ns.clone());
    let reg = setup(&client, &cp.kubeconfig, &ns, &[&format!("{C4_OK}/32"), &format!("{C6_OK}/128")]).await;
    approve(&client, &reg).await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let node = format!("node-{}", unique_suffix());
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &node, &[]);
    wait_for(&topo, "approved", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(20));

    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for args in [
                "delete rolebinding t-tamper-mallory t-tamper-wanda -n jpki-system --ignore-not-found",
                "delete role t-tamper-allowlist-writer -n jpki-system --ignore-not-found",
                "delete configmap jpki-allowlist-production -n jpki-system --ignore-not-found",
            ] {
                let _ = kubectl(&args.split(' ').collect::<Vec<_>>());
            }
        }
    }
    let _cleanup = Cleanup;
    kubectl_ok(&["create", "rolebinding", "t-tamper-mallory", "--clusterrole=edit", "--user=mallory", "-n", "jpki-system"]);
    kubectl_ok(&[
        "create",
        "role",
        "t-tamper-allowlist-writer",
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=accessallowlists.access.jpki.dev,accessallowlistshards.access.jpki.dev",
        "-n",
        "jpki-system",
    ]);
    kubectl_ok(&["create", "rolebinding", "t-tamper-wanda", "--role=t-tamper-allowlist-writer", "--user=wanda", "-n", "jpki-system"]);
    let index = "jpki-allowlist-production";
    let shard = kubectl_ok(&["get", "accessallowlist", index, "-n", "jpki-system", "-o", "jsonpath={.spec.shards[0].name}"]);
    assert!(!shard.is_empty());
    let cidrs = kubectl_ok(&["get", "accessallowlistshard", &shard, "-n", "jpki-system", "-o", "jsonpath={.spec.cidrs}"]);
    assert!(cidrs.contains(C4_OK), "{cidrs}");

    let empty_ports = json!({"spec": {"ports": []}}).to_string();
    let everyone = json!({"spec": {"cidrs": format!("0.0.0.0/0\n{cidrs}")}}).to_string();
    let other_set = json!({"spec": {"cidrs": format!("{C4_NO}/32\n{C6_NO}/128\n")}}).to_string();
    let other_port = json!({"spec": {"ports": [{"protocol": "TCP", "port": 8443}]}}).to_string();
    let attempts: [(&str, Vec<&str>); 5] = [
        ("(a) empty the ports", vec!["patch", "accessallowlist", index, "-n", "jpki-system", "--type=merge", "-p", &empty_ports]),
        ("(a') replace the ports", vec!["patch", "accessallowlist", index, "-n", "jpki-system", "--type=merge", "-p", &other_port]),
        ("(b) add 0.0.0.0/0", vec!["patch", "accessallowlistshard", &shard, "-n", "jpki-system", "--type=merge", "-p", &everyone]),
        (
            "(c) replace the shard with another valid-looking set",
            vec!["patch", "accessallowlistshard", &shard, "-n", "jpki-system", "--type=merge", "-p", &other_set],
        ),
        ("(d) delete the index", vec!["delete", "accessallowlist", index, "-n", "jpki-system"]),
    ];

    // The `edit` user: `edit` is not empty (ConfigMaps), and not one allowlist write passes.
    let (ok, err) = kubectl_as("mallory", &["auth", "can-i", "create", "configmaps", "-n", "jpki-system"]);
    assert!(ok, "the built-in edit role is aggregated on this control plane: {err}");
    for (what, args) in &attempts {
        let (ok, err) = kubectl_as("mallory", args);
        assert!(!ok && err.contains("forbidden"), "edit: {what} must be forbidden: {err}");
    }
    let forged = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": index, "namespace": "jpki-system",
        "labels": {"access.jpki.dev/environment": "production", "access.jpki.dev/allowlist": "index"}},
        "data": {"ports": "", "cidrs": "0.0.0.0/0\n::/0\n"}});
    let file = std::env::temp_dir().join(format!("jpki-tamper-{}.json", std::process::id()));
    std::fs::write(&file, forged.to_string()).unwrap();
    let (ok, err) = kubectl_as("mallory", &["create", "-f", path_str(&file)]);
    assert!(ok, "edit writes ConfigMaps: {err}");
    holds(&topo, "edit user's attempts", Duration::from_secs(6));

    // The allowlist writer: written, refused by the agent, reported and repaired by the controller.
    let family = "jpki_access_allowlist_tampering_total";
    for (what, args) in &attempts {
        let before = metric_sum(&controller_metrics(&controller), family);
        let (ok, err) = kubectl_as("wanda", args);
        if !ok {
            // The schema itself refuses an index to enforce without a port.
            assert!(err.contains("names at least one port"), "{what}: {err}");
            holds(&topo, what, Duration::from_secs(2));
            eprintln!("{what}: refused by the API server (CRD validation)");
            continue;
        }
        holds(&topo, what, Duration::from_secs(7));
        eventually(Duration::from_secs(15), &format!("{what}: reported"), || async { metric_sum(&controller_metrics(&controller), family) > before }).await;
        eventually(Duration::from_secs(15), &format!("{what}: the controller's set is back and verified by the agent"), || async {
            let env = environment(&client).await;
            let digest = env.status.as_ref().and_then(|s| s.allowlist_digest.clone());
            report(&client, &node).await.is_some_and(|r| Some(&r.applied_digest) == digest.as_ref() && r.ready)
        })
        .await;
        eprintln!("{what}: reported, repaired; approved in, refused out throughout");
    }
    holds(&topo, "after the attempts", Duration::from_secs(3));
    let env = environment(&client).await;
    let (status, reason, message) = condition(&env, "AllowlistIntact").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Restored"), "{message}");
    let events = kubectl_ok(&["get", "events.events.k8s.io", "-A", "-o", "jsonpath={range .items[*]}{.reason}={.regarding.name}{\"\\n\"}{end}"]);
    assert!(events.lines().any(|l| l == "AllowlistTampered=production"), "{events}");
    let agent_metrics = agent.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    eprintln!(
        "controller tampering count {}; agent refusals {}",
        metric_sum(&controller_metrics(&controller), family),
        metric_sum(&agent_metrics, "jpki_access_agent_refused_allowlists_total")
    );
    // Every set the agent applied was one the controller signed (a repair re-signs with a new serial; other tests'
    // registrations on the shared control plane may change the set meanwhile); the probes above show none opened.
    let log = agent.log();
    let applied: Vec<&str> = log.lines().filter(|l| l.contains(": applied digest=")).collect();
    assert!(!applied.is_empty() && applied.iter().all(|l| l.contains("source=Verified")), "only verified sets were applied:\n{log}");
    drop(agent);
    controller.stop();
    teardown(&client, &ns).await;
}

/// Acceptance 2 (a, b). With its own control plane: a node whose table is gone (a reboot) and whose API server is
/// stopped enforces the set its agent persisted (verified again); a node with nothing persisted drops the approved
/// and the refused sources alike until the API server is back and the first verified set arrives.
#[tokio::test]
async fn without_the_api_server_the_agent_boots_on_its_persisted_set_or_closed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let _ = control_plane(); // kubectl and the binary are built
    let mut cp = OwnControlPlane::start(tempfile::tempdir().unwrap());
    let client = support::client_for_kubeconfig(&cp.kubeconfig).await;
    let topo = Topology::new("b").with_listeners();
    topo.settle();
    let ns = "t-boot";
    let reg = setup(&client, &cp.kubeconfig, ns, &[&format!("{C4_OK}/32"), &format!("{C6_OK}/128")]).await;
    approve(&client, &reg).await;
    let mut controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election"], &cp.kubeconfig);
    controller.wait_ready().await;
    let node = format!("node-boot-{}", unique_suffix());
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &node, &[]);
    wait_for(&topo, "approved", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(20));
    drop(agent); // SIGTERM: the rules stay, the set stays persisted
    controller.stop();
    cp.stop();
    let reboot = |topo: &Topology| {
        let out = topo.nft(&["delete", "table", "inet", "jpki_access_production"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        topo.check("after a reboot nothing filters", &baseline_open());
    };

    // (a) The persisted set, the API server stopped.
    reboot(&topo);
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &node, &[]);
    let took = wait_for(&topo, "persisted set enforced without the API server", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(10));
    eprintln!("boot on the persisted set: enforced in {took:?}");
    eventually(Duration::from_secs(5), "reported as persisted", || async {
        agent.metric("jpki_access_agent_enforcing{state=\"persisted\"}") == 1.0 && agent.get("/readyz").is_some_and(|(c, _)| c == 200)
    })
    .await;
    holds(&topo, "API server still stopped", Duration::from_secs(4));
    drop(agent);

    // (b) Nothing persisted (a new node), the API server stopped: closed.
    reboot(&topo);
    let fresh = format!("node-fresh-{}", unique_suffix());
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &fresh, &[]);
    let took = wait_for(&topo, "closed without a set", &expect_only(&[]), Duration::from_secs(10));
    eprintln!("boot with nothing persisted: closed in {took:?}");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        topo.check("closed until a verified set arrives", &expect_only(&[]));
    }
    assert_eq!(agent.metric("jpki_access_agent_enforcing{state=\"closed\"}"), 1.0);
    let dir = std::mem::replace(&mut cp.dir, tempfile::tempdir().unwrap());
    let cp2 = OwnControlPlane::start(dir);
    let took = wait_for(&topo, "the first verified set", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(30));
    eprintln!("API server back: the verified set enforced after {took:?}");
    let client = support::client_for_kubeconfig(&cp2.kubeconfig).await;
    eventually(Duration::from_secs(10), "reported as verified", || async {
        report(&client, &fresh).await.is_some_and(|r| r.enforcing == jpki_access::wire::report::Enforcing::Verified && r.ready)
    })
    .await;
    drop(agent);
}

/// What a probe run sees with no filter at all: every source reaches the server.
fn baseline_open() -> Vec<Probe> {
    expect_only(&[C4_OK, C6_OK, C4_NO, C6_NO])
}

/// Acceptance 2 (c) and nftables missing: with `nft` replaced by a program that fails, the agent reports not ready
/// (/readyz, its report, a metric) and the rules in force stay; fixed, it catches up. An agent whose `nft` does not
/// exist at all is not ready and says so.
#[tokio::test]
async fn a_failing_or_missing_nft_keeps_the_previous_rules_and_reports_not_ready() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cp = control_plane();
    let client = client().await;
    let topo = Topology::new("n").with_listeners();
    topo.settle();
    let ns = format!("t-nft-{}", unique_suffix());
    let _forms = FormsCleanup(ns.clone());
    let reg = setup(&client, &cp.kubeconfig, &ns, &[&format!("{C4_OK}/32"), &format!("{C6_OK}/128")]).await;
    approve(&client, &reg).await;
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let wrapper = dir.path().join("nft");
    let real = tool("nft");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nif [ -e '{}' ]; then echo 'nft: replaced by a failing program' >&2; exit 1; fi\nexec {real} \"$@\"\n", broken.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let node = format!("node-{}", unique_suffix());
    // Every change through nft: element changes otherwise go through netlink and need no nft program at all (whether
    // a change is one depends on what else is approved in the shared environment).
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &node, &["--nft", path_str(&wrapper), "--max-delta-elements", "0"]);
    wait_for(&topo, "approved", &expect_only(&[C4_OK, C6_OK]), Duration::from_secs(20));

    std::fs::write(&broken, "").unwrap();
    let mut more = reg.clone();
    more.metadata = kube::api::ObjectMeta { name: Some("edge-2".into()), namespace: Some(ns.clone()), ..Default::default() };
    more.spec.source_cidrs = vec![format!("{C4_NO}/32").as_str().into(), format!("{C6_NO}/128").as_str().into()];
    more.status = None;
    let more = Api::<jpki_access::api::AccessRegistration>::namespaced(client.clone(), &ns).create(&Default::default(), &more).await.unwrap();
    approve(&client, &more).await;
    eventually(Duration::from_secs(15), "not ready, reported", || async {
        agent.get("/readyz").is_some_and(|(c, _)| c == 503)
            && agent.metric("jpki_access_agent_ready") == 0.0
            && report(&client, &node).await.is_some_and(|r| !r.ready && !r.error.is_empty())
    })
    .await;
    let failures = metric_sum(&agent.get("/metrics").map(|(_, b)| b).unwrap_or_default(), "jpki_access_agent_nft_failures_total");
    assert!(failures >= 1.0, "{failures}");
    holds(&topo, "nft fails: the previous rules stay", Duration::from_secs(6));
    std::fs::remove_file(&broken).unwrap();
    wait_for(&topo, "nft works again: the new set", &expect_only(&[C4_OK, C6_OK, C4_NO, C6_NO]), Duration::from_secs(15));
    eventually(Duration::from_secs(10), "ready again", || async { agent.get("/readyz").is_some_and(|(c, _)| c == 200) }).await;
    drop(agent);

    // No nftables at all: nothing can be enforced, and the agent says so instead of looking healthy.
    let missing = format!("node-nonft-{}", unique_suffix());
    let agent = Agent::start(&cp.kubeconfig, &topo.router, &missing, &["--nft", "/nonexistent/nft"]);
    eventually(Duration::from_secs(15), "nftables missing: not ready, reported", || async {
        agent.get("/readyz").is_some_and(|(c, _)| c == 503) && report(&client, &missing).await.is_some_and(|r| !r.ready && !r.error.is_empty())
    })
    .await;
    let body = agent.get("/readyz").map(|(_, b)| b).unwrap_or_default();
    eprintln!("nftables missing: /readyz 503: {body}");
    drop(agent);
    controller.stop();
    teardown(&client, &ns).await;
}

/// Acceptance 4 and 5 (option off). The production environment expects agents on two labelled nodes, stale after
/// 8 s: the agent of one runs in a network namespace of its own, the other node never runs one. The first is in
/// sync, then its route to the API server is removed: it turns stale within the period (plus one pass), the other
/// is missing throughout; both show in status, the `AgentsInSync` condition, the metric and Events. A foreign
/// allow-all NetworkPolicy in jpki-production (no admission policy here) is reported: status, condition, Event,
/// metric. On the way, the registration's `Enforced` condition holds `Ready` while an expected agent is missing, and
/// `kubectl wait --for=condition=Ready` returns once every expected agent enforces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_turns_stale_a_missing_one_is_counted_and_a_foreign_policy_is_reported() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cp = control_plane();
    let client = client().await;
    let ns = format!("t-stale-{}", unique_suffix());
    let _forms = FormsCleanup(ns.clone());
    let reg = setup(&client, &cp.kubeconfig, &ns, &[&format!("{C4_OK}/32")]).await;
    let suffix = unique_suffix();
    let (running, absent) = (format!("edge-run-{suffix}"), format!("edge-absent-{suffix}"));
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = kubectl(&["delete", "node", n, "--ignore-not-found", "--wait=false"]);
            }
            let _ = kubectl(&["delete", "networkpolicy", "t-allow-all", "-n", "jpki-production", "--ignore-not-found"]);
            let _ = kubectl(&[
                "patch",
                "accessenvironment",
                "production",
                "--type=merge",
                "-p",
                r#"{"spec":{"firewall":{"expectedNodes":null,"staleAfterSeconds":null}}}"#,
            ]);
        }
    }
    let _cleanup = Cleanup(vec![running.clone(), absent.clone()]);
    for n in [&running, &absent] {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"t-edge": &suffix}}});
        Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).create(&Default::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
    }
    let stale_after = 8;
    let patch = json!({"spec": {"firewall": {"expectedNodes": {"matchLabels": {"t-edge": &suffix}}, "staleAfterSeconds": stale_after}}});
    Api::<AccessEnvironment>::all(client.clone()).patch("production", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let mut controller = ControllerProcess::start(&["--no-leader-election"]);
    controller.wait_ready().await;

    let cut = CutOff::new("s", &control_plane().kubeconfig).await;
    let wrapper = ["ip", "netns", "exec", cut.ns.as_str()];
    let agent = Agent::start_with(&cut.kubeconfig, &wrapper, "unused", &running, &[]);
    let agents = |env: &AccessEnvironment| env.status.as_ref().and_then(|s| s.agents.clone()).unwrap_or_default();
    eventually(Duration::from_secs(20), "one agent in sync, one missing", || async {
        let env = environment(&client).await;
        let a = agents(&env);
        a.expected == Some(2) && a.missing == [absent.clone()] && a.stale.is_empty() && a.in_sync == 1
    })
    .await;
    let env = environment(&client).await;
    let (status, reason, message) = condition(&env, "AgentsInSync").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AgentsMissing"), "{message}");
    assert_eq!(env.status.as_ref().unwrap().agents_in_sync.as_deref(), Some("1/2"));
    let m = controller_metrics(&controller);
    assert!(m.contains("jpki_access_agents{environment=\"production\",state=\"missing\"} 1"), "{m}");

    // A registration of an environment that expects agents is Ready only when every expected agent enforces it.
    approve(&client, &reg).await;
    let regs = Api::<jpki_access::api::AccessRegistration>::namespaced(client.clone(), &ns);
    let cond_of = |r: &jpki_access::api::AccessRegistration, t: &str| {
        r.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == t)).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    eventually(Duration::from_secs(15), "Enforced False while an expected agent is missing", || async {
        let r = regs.get("edge").await.unwrap();
        cond_of(&r, "Enforced").is_some_and(|(s, reason, m)| s == "False" && reason == "AwaitingAgents" && m.contains(&absent))
            && cond_of(&r, "Ready").is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    kubectl_ok(&["delete", "node", &absent]);
    let out = kubectl(&["wait", "--for=condition=Ready", "accessregistration/edge", "-n", &ns, "--timeout=30s"]);
    assert!(out.status.success(), "kubectl wait returns once every expected agent enforces it: {}", String::from_utf8_lossy(&out.stderr));
    let r = regs.get("edge").await.unwrap();
    assert_eq!(cond_of(&r, "Enforced").map(|c| (c.0, c.1)), Some(("True".to_string(), "AgentsEnforce".to_string())));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": &absent, "labels": {"t-edge": &suffix}}});
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).create(&Default::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
    eventually(Duration::from_secs(15), "missing again", || async { agents(&environment(&client).await).missing == [absent.clone()] }).await;

    cut.cut();
    let cut_at = Instant::now();
    let took = eventually(Duration::from_secs(stale_after + 10), "the cut-off agent reported stale", || async {
        agents(&environment(&client).await).stale.contains(&running)
    })
    .await;
    eprintln!("link cut → reported stale in {:?} (staleAfterSeconds {stale_after})", cut_at.elapsed());
    assert!(took <= Duration::from_secs(stale_after + 4), "stale within the period plus a pass: {took:?}");
    let env = environment(&client).await;
    let a = agents(&env);
    assert!(a.stale_count >= 1 && a.missing_count == 1 && a.missing == [absent.clone()], "{a:?}");
    let (status, _, message) = condition(&env, "AgentsInSync").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains(&running) && message.contains(&absent), "{message}");
    let m = controller_metrics(&controller);
    assert!(metric_sum(&m, "jpki_access_agents{environment=\"production\",state=\"stale\"}") >= 1.0, "{m}");
    let events = kubectl_ok(&["get", "events.events.k8s.io", "-A", "-o", "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}"]);
    assert!(events.lines().any(|l| l.starts_with("AgentsStale: ") && l.contains(&running)), "{events}");
    assert!(events.lines().any(|l| l.starts_with("AgentsMissing: ") && l.contains(&absent)), "{events}");
    assert!(agent.running(), "the cut-off agent keeps running (and its rules)");
    cut.heal(); // its clean-up (the heartbeat Lease) goes through the link
    drop(agent);

    // A foreign allow-all policy next to ours, no admission policy: reported.
    let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "t-allow-all", "namespace": "jpki-production"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}});
    Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(client.clone(), "jpki-production")
        .create(&Default::default(), &serde_json::from_value(np).unwrap())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the foreign policy reported", || async {
        let env = environment(&client).await;
        env.status.as_ref().is_some_and(|s| s.foreign_network_policies.iter().any(|n| n.contains("t-allow-all")))
            && condition(&env, "ForeignNetworkPolicies").is_some_and(|(s, r, _)| s == "True" && r == "Found")
    })
    .await;
    let m = controller_metrics(&controller);
    assert!(m.contains("jpki_access_foreign_network_policies{environment=\"production\"} 1"), "{m}");
    eventually(Duration::from_secs(10), "an Event names it", || async {
        let events = kubectl_ok(&["get", "events.events.k8s.io", "-A", "-o", "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}"]);
        events.lines().any(|l| l.starts_with("ForeignNetworkPolicy: ") && l.contains("t-allow-all"))
    })
    .await;
    controller.stop();
    drop(cut);
    teardown(&client, &ns).await;
}
