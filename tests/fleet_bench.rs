//! Fleet benchmarks (issue 9), out of the default test path: `scripts/bench-fleet` runs them with
//! `--features cluster-tests,fleet-bench` in release mode. Each scale gets a control plane of its own (a fresh etcd),
//! so every cold start is cold and every count exact. Results go to `target/bench/fleet.json` and a table on
//! stderr; BENCHMARKS.md quotes them.
//!
//! Per scale: a bare paginated LIST plus deserialise of the forms (the baseline), the controller's cold start to
//! every registration's status current (passes, writes, peak RSS), no-op passes (must write nothing), one edit
//! (what it writes), and propagation of approvals to the NetworkPolicy and the allowlist and, with a firewall agent
//! in a network namespace, to its nftables, against a bare write-then-watch round trip on the same server.
#![cfg(all(feature = "cluster-tests", feature = "fleet-bench"))]
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stderr)]

mod support;

use futures::StreamExt;
use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, Decision, SignatureVerifier};
use jpki_access::fleet::{COMPANIES_2026, FleetSettings, generate};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ObjectList, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// Approvals timed at addresses spread over the fleet's range (besides those timed at its end).
const SPREAD_APPROVALS: usize = 20;

/// Registrations of the real population (1×): two per verifier.
const REGISTRATIONS_1X: f64 = 2.0 * (1_788 + COMPANIES_2026) as f64;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A bare paginated LIST (500 per page, as the controller's watches) of one kind, deserialised; returns bytes read.
async fn list_kind<K>(client: &Client) -> (usize, usize)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let url = K::url_path(&(), None);
    let (mut bytes, mut items, mut token) = (0, 0, None::<String>);
    loop {
        let mut query = format!("{url}?limit=500");
        if let Some(t) = &token {
            query.push_str(&format!("&continue={t}"));
        }
        let request = http::Request::get(query).body(Vec::new()).unwrap();
        let text = client.request_text(request).await.unwrap();
        bytes += text.len();
        let page: ObjectList<K> = serde_json::from_str(&text).unwrap();
        items += page.items.len();
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return (bytes, items);
        }
    }
}

/// The baseline: LIST + deserialise of every form the controller reads. Best of 3.
async fn baseline_list(client: &Client) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let sizes = [
            list_kind::<SignatureVerifier>(client).await,
            list_kind::<AccessRegistration>(client).await,
            list_kind::<AccessApproval>(client).await,
            list_kind::<AccessEnvironment>(client).await,
        ];
        best = best.min(started.elapsed().as_secs_f64());
        bytes = sizes.iter().map(|s| s.0).sum();
    }
    (best, bytes)
}

/// The second baseline, for the first start: how fast this server takes bare writes. Creates `n` small ConfigMaps
/// (at most 10,000) in a scratch namespace, 16 in flight as the controller writes, then deletes them in one call.
/// Returns the writes per second. A first start must write a URL notice and a status per registration, so its
/// floor is `2 × registrations / rate`: what a controller that did nothing but those writes would take.
async fn bare_write_rate(client: &Client, n: usize) -> (usize, f64) {
    let n = n.min(10_000);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-write-floor"}});
    namespaces.patch("bench-write-floor", &PatchParams::apply("bench"), &Patch::Apply(&ns)).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-write-floor");
    let started = Instant::now();
    futures::stream::iter((0..n).map(|i| {
        let cms = cms.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("floor-{i:05}"), "labels": {"bench": "floor"}},
                "data": {"url": "https://ocsp.example/ocsp"}}))
            .unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    cms.delete_collection(&kube::api::DeleteParams::default(), &kube::api::ListParams::default().labels("bench=floor")).await.unwrap();
    (n, rate)
}

/// Tasks that watch one scale's control plane: aborted when the scale ends, before its control plane is stopped.
#[derive(Default)]
struct WatchTasks(Vec<tokio::task::AbortHandle>);

impl Drop for WatchTasks {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Watches `api` and remembers when each text first appeared in an object (`probe` extracts the text).
#[derive(Clone, Default)]
struct Sightings(Arc<Mutex<SightingState>>);

/// Texts looked for, when each was first seen, and the latest text of each object by name.
type SightingState = (Vec<String>, HashMap<String, Instant>, HashMap<String, String>);

impl Sightings {
    fn expect(&self, needle: &str) {
        self.0.lock().unwrap().0.push(needle.to_string());
    }
    fn seen(&self, needle: &str) -> Option<Instant> {
        self.0.lock().unwrap().1.get(needle).copied()
    }
    fn value(&self, key: &str) -> Option<String> {
        self.0.lock().unwrap().2.get(key).cloned()
    }
    /// The watch runs until the returned task is aborted (see [`WatchTasks`]), with backoff on errors: without it,
    /// a watch of a control plane already stopped retried at once, forever, and took a core from the next scale.
    fn spawn<K>(&self, api: Api<K>, config: watcher::Config, probe: fn(&K) -> (String, String)) -> tokio::task::AbortHandle
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        let me = self.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let objects = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                let at = Instant::now();
                let mut state = me.0.lock().unwrap();
                for o in objects {
                    let (key, text) = probe(&o);
                    let found: Vec<String> = state.0.iter().filter(|n| text.contains(n.as_str())).cloned().collect();
                    for n in found {
                        state.1.entry(n).or_insert(at);
                    }
                    state.2.insert(key, text);
                }
            }
        })
        .abort_handle()
    }
}

async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) * 1024
}

fn writes(c: &ControllerProcess) -> (f64, f64, f64) {
    (
        c.metric("jpki_access_writes_total{operation=\"apply\"}") + c.metric("jpki_access_writes_total{operation=\"delete\"}"),
        c.metric("jpki_access_writes_total{operation=\"status\"}"),
        c.metric("jpki_access_reconciles_total{result=\"ok\"}") + c.metric("jpki_access_reconciles_total{result=\"error\"}"),
    )
}

/// The planner's work so far: (registrations evaluated anew, registrations planned anew), from its counters.
fn planned(c: &ControllerProcess) -> (f64, f64) {
    (
        c.metric("jpki_access_planned_objects_total{work=\"evaluation\",result=\"computed\"}"),
        c.metric("jpki_access_planned_objects_total{work=\"plan\",result=\"computed\"}"),
    )
}

/// One scale, on a control plane of its own.
async fn run_scale(label: &str, scale: f64, approvals_to_time: usize, with_agent: bool) -> Value {
    let cp = OwnControlPlane::start(tempfile::tempdir().unwrap());
    let client = client_for_kubeconfig(&cp.kubeconfig).await;
    let mut tasks = WatchTasks::default();
    install_crds(&client).await;
    let fleet = generate(&FleetSettings { scale, companies: COMPANIES_2026, approved_at: "2026-03-15T00:00:00Z".parse().unwrap() }).unwrap();
    let registrations: usize = fleet.iter().map(|b| b.registrations.len()).sum();
    eprintln!("[{label}] creating {} verifiers, {registrations} registrations and approvals", fleet.len());
    let started = Instant::now();
    for o in jpki_access::cli::fleet::environment_objects().unwrap() {
        jpki_access::cli::fleet::apply_object(&client, &o).await.unwrap();
    }
    let objects = jpki_access::cli::fleet::apply_bundles(&client, &fleet, 32, "2026-03-15T00:00:00Z".parse().unwrap()).await.unwrap();
    let setup_seconds = started.elapsed().as_secs_f64();
    // Pending test registrations of the first verifier, approved one by one below; /28s a /24 apart never aggregate.
    let first = &fleet[0];
    let ns = first.registrations[0].namespace().unwrap();
    let regs: Api<AccessRegistration> = Api::namespaced(client.clone(), &ns);
    let mut pending = Vec::new();
    for i in 0..approvals_to_time {
        let mut r = first.registrations[0].clone();
        r.metadata.name = Some(format!("propagation-{i:03}"));
        r.spec.source_cidrs = serde_json::from_value(json!([format!("10.255.{i}.0/28")])).unwrap();
        pending.push(regs.create(&PostParams::default(), &r).await.unwrap());
    }
    // And 20 whose CIDRs fall between the fleet's, spread over its whole address range (each verifier's /26 leaves its
    // last /28 free): where real approvals land. An added CIDR low in the range is where fixed-size shards moved
    // every later CIDR to another shard.
    let mut spread = Vec::new();
    for i in 0..SPREAD_APPROVALS {
        let verifier = i * fleet.len() / SPREAD_APPROVALS;
        // A /29 in the free /28 (+48): alone in its /28, so it is published as filed, never merged with a neighbour.
        let cidr = format!("{}/29", std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + verifier as u32 * 64 + 56));
        let mut r = first.registrations[0].clone();
        r.metadata.name = Some(format!("spread-{i:03}"));
        r.spec.source_cidrs = serde_json::from_value(json!([cidr.clone()])).unwrap();
        spread.push((regs.create(&PostParams::default(), &r).await.unwrap(), cidr));
    }
    let total_registrations = registrations + approvals_to_time + SPREAD_APPROVALS;
    eprintln!("[{label}] {objects} objects created in {setup_seconds:.0} s");

    let (list_seconds, list_bytes) = baseline_list(&client).await;
    let (floor_sample, write_rate) = bare_write_rate(&client, 2 * total_registrations).await;
    let write_floor_seconds = 2.0 * total_registrations as f64 / write_rate;
    eprintln!("[{label}] bare writes: {write_rate:.0}/s over {floor_sample}; floor of a first start {write_floor_seconds:.1} s");

    // Cold start: a watch counts registrations whose status is current.
    // The watch keeps the count itself: counting 60,000 entries on every poll took a core from the controller.
    let current = Arc::new(Mutex::new(HashMap::<String, bool>::new()));
    let current_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let current = current.clone();
        let current_count = current_count.clone();
        let api: Api<AccessRegistration> = Api::all(client.clone());
        tasks.0.push(
            tokio::spawn(async move {
                let mut stream = watcher(api, watcher::Config::default().page_size(500)).boxed();
                while let Some(Ok(event)) = stream.next().await {
                    if let watcher::Event::Apply(r) | watcher::Event::InitApply(r) = event {
                        let ok = r.status.as_ref().is_some_and(|s| s.observed_generation == r.metadata.generation && s.phase.is_some());
                        let was = current.lock().unwrap().insert(format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()), ok);
                        match (was, ok) {
                            (Some(false) | None, true) => current_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                            (Some(true), false) => current_count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst),
                            _ => 0,
                        };
                    }
                }
            })
            .abort_handle(),
        );
    }
    assert!(wait_until(Duration::from_secs(600), || current.lock().unwrap().len() == total_registrations).await, "watch saw every registration");
    let started = Instant::now();
    let controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election", "--resync-seconds", "3600"], &cp.kubeconfig);
    let converged = wait_until(Duration::from_secs(1800), || current_count.load(std::sync::atomic::Ordering::SeqCst) == total_registrations).await;
    assert!(converged, "[{label}] not every status current:\n{}", controller.log_text().lines().rev().take(20).collect::<Vec<_>>().join("\n"));
    let cold_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (applied_cold, statuses_cold, passes_cold) = writes(&controller);
    let rss = peak_rss_bytes(controller.child.id());
    // Reconciles per object: passes plan every registration, but reuse what has not changed (planner::memo).
    let (evaluated_cold, planned_cold) = planned(&controller);
    let (evaluations_per_registration, plans_per_registration) = (evaluated_cold / total_registrations as f64, planned_cold / total_registrations as f64);
    // Every write of the first start (objects, statuses and the Events of each transition) at the bare write rate:
    // the floor of a controller that did nothing but those writes.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone()).list(&kube::api::ListParams::default()).await.unwrap().items.len();
    let all_writes_floor_seconds = (applied_cold + statuses_cold + events as f64) / write_rate;
    eprintln!(
        "[{label}] cold start {cold_seconds:.1} s (LIST {list_seconds:.2} s; every write at the bare rate {all_writes_floor_seconds:.1} s), {passes_cold} passes, {applied_cold} applies, {statuses_cold} statuses, {events} events, peak RSS {} MiB, per registration {evaluations_per_registration:.2} evaluations and {plans_per_registration:.2} plans computed",
        rss >> 20
    );

    // No-op passes: a watch event on an object of ours that changes nothing starts a full pass.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "jpki-system");
    let before = writes(&controller);
    for i in 0..3 {
        let poke = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench-poke", "labels": {"access.jpki.dev/agent-report": "none"}}, "data": {"i": i.to_string()}});
        cms.patch("bench-poke", &PatchParams::apply("bench"), &Patch::Apply(&poke)).await.unwrap();
        let target = before.2 + f64::from(i + 1);
        assert!(wait_until(Duration::from_secs(300), || writes(&controller).2 >= target).await, "no-op pass {i}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = writes(&controller);
    let noop = json!({"passes": after.2 - before.2, "applies": after.0 - before.0, "statuses": after.1 - before.1});
    eprintln!("[{label}] no-op passes: {noop}");

    // One edit: an Active registration narrows its CIDRs.
    let edited = &fleet[fleet.len() / 2].registrations[1];
    let before = writes(&controller);
    let narrowed: Vec<String> = edited.spec.source_cidrs.iter().take(1).map(|c| c.to_string()).collect();
    Api::<AccessRegistration>::namespaced(client.clone(), &edited.namespace().unwrap())
        .patch(&edited.name_any(), &PatchParams::default(), &Patch::Merge(json!({"spec": {"sourceCidrs": narrowed}})))
        .await
        .unwrap();
    let key = format!("{}/{}", edited.namespace().unwrap(), edited.name_any());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(wait_until(Duration::from_secs(120), || current.lock().unwrap().get(&key) == Some(&true)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = writes(&controller);
    let one_edit = json!({"passes": after.2 - before.2, "objects": after.0 - before.0, "statuses": after.1 - before.1});
    eprintln!("[{label}] one edit among {total_registrations}: {one_edit}");

    // A restart with every status current (an upgrade, a failover): time to the end of a first pass that writes nothing.
    let mut controller = controller;
    controller.stop();
    let started = Instant::now();
    let controller = ControllerProcess::start_with_kubeconfig(&["--no-leader-election", "--resync-seconds", "3600"], &cp.kubeconfig);
    assert!(wait_until(Duration::from_secs(600), || writes(&controller).2 >= 1.0).await, "first pass after restart");
    let restart_seconds = started.elapsed().as_secs_f64();
    let (restart_applies, restart_statuses, _) = writes(&controller);
    let restart_rss = peak_rss_bytes(controller.child.id());
    eprintln!(
        "[{label}] restart: first pass done {restart_seconds:.2} s, {restart_applies} applies, {restart_statuses} statuses, peak RSS {} MiB",
        restart_rss >> 20
    );

    // Propagation: approval → allowlist shard and NetworkPolicy hold the CIDR (→ the agent applied that digest).
    let allowlist = Sightings::default();
    tasks.0.push(allowlist.spawn(
        Api::<ConfigMap>::namespaced(client.clone(), "jpki-system"),
        watcher::Config::default().labels("access.jpki.dev/environment=test"),
        |cm| {
            let data = cm.data.clone().unwrap_or_default();
            (cm.name_any(), format!("{}\n{}", data.get("cidrs").cloned().unwrap_or_default(), data.get("digest").cloned().unwrap_or_default()))
        },
    ));
    let policies = Sightings::default();
    tasks.0.push(policies.spawn(Api::<NetworkPolicy>::namespaced(client.clone(), "jpki-test"), watcher::Config::default(), |np| {
        (np.name_any(), serde_json::to_string(&np.spec).unwrap_or_default())
    }));
    let agent_reports = Sightings::default();
    tasks.0.push(agent_reports.spawn(
        Api::<ConfigMap>::namespaced(client.clone(), "jpki-system"),
        watcher::Config::default().labels("access.jpki.dev/agent-report=test"),
        |cm| (cm.name_any(), cm.data.clone().unwrap_or_default().get("appliedDigest").cloned().unwrap_or_default()),
    ));
    let agent = with_agent.then(|| BenchAgent::start(&cp.kubeconfig, label));
    if agent.is_some() {
        let _ = wait_until(Duration::from_secs(60), || agent_reports.value(&format!("jpki-agent-test-bench-{label}")).is_some_and(|d| !d.is_empty())).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let approvals: Api<AccessApproval> = Api::namespaced(client.clone(), &ns);
    let (mut to_outputs, mut to_agent) = (Vec::new(), Vec::new());
    for (i, reg) in pending.iter().enumerate() {
        let cidr = format!("10.255.{i}.0/28");
        allowlist.expect(&cidr);
        policies.expect(&cidr);
        let approval =
            jpki_access::domain::approve::approval_for(reg, Decision::Approved, "approver@j-lis", "2026-03-15T00:00:00Z".parse().unwrap(), None).unwrap();
        let index_before = allowlist.value("jpki-allowlist-test");
        let t0 = Instant::now();
        approvals.create(&PostParams::default(), &approval).await.unwrap();
        // Updated: the shard and the NetworkPolicy hold the CIDR and the index announces the new digest (written last).
        assert!(wait_until(Duration::from_secs(60), || allowlist.seen(&cidr).is_some() && policies.seen(&cidr).is_some()).await, "approval {i} propagated");
        assert!(wait_until(Duration::from_secs(60), || allowlist.value("jpki-allowlist-test") != index_before).await, "index of approval {i}");
        let t1 = Instant::now().max(allowlist.seen(&cidr).unwrap()).max(policies.seen(&cidr).unwrap());
        to_outputs.push((t1 - t0).as_secs_f64() * 1000.0);
        if agent.is_some() {
            let digest = allowlist.value("jpki-allowlist-test").unwrap_or_default().lines().last().unwrap_or_default().to_string();
            let report = format!("jpki-agent-test-bench-{label}");
            if wait_until(Duration::from_secs(30), || agent_reports.value(&report).as_deref() == Some(digest.as_str())).await {
                to_agent.push((Instant::now() - t0).as_secs_f64() * 1000.0);
            }
        }
    }
    drop(agent);

    // Approvals spread over the address range: time to outputs, and what each wrote.
    let before = writes(&controller);
    let mut to_outputs_spread = Vec::new();
    for (reg, cidr) in &spread {
        allowlist.expect(cidr);
        policies.expect(cidr);
        let approval =
            jpki_access::domain::approve::approval_for(reg, Decision::Approved, "approver@j-lis", "2026-03-15T00:00:00Z".parse().unwrap(), None).unwrap();
        let index_before = allowlist.value("jpki-allowlist-test");
        let t0 = Instant::now();
        approvals.create(&PostParams::default(), &approval).await.unwrap();
        assert!(
            wait_until(Duration::from_secs(60), || allowlist.seen(cidr).is_some() && policies.seen(cidr).is_some()).await,
            "spread approval {cidr} propagated"
        );
        assert!(wait_until(Duration::from_secs(60), || allowlist.value("jpki-allowlist-test") != index_before).await, "index of {cidr}");
        let t1 = Instant::now().max(allowlist.seen(cidr).unwrap()).max(policies.seen(cidr).unwrap());
        to_outputs_spread.push((t1 - t0).as_secs_f64() * 1000.0);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = writes(&controller);
    let spread_writes = json!({"objects_per_approval": (after.0 - before.0) / SPREAD_APPROVALS as f64, "statuses_per_approval": (after.1 - before.1) / SPREAD_APPROVALS as f64});
    eprintln!("[{label}] spread approvals: {spread_writes}");

    // The same server's bare write-then-watch round trip.
    let probe = Sightings::default();
    tasks.0.push(probe.spawn(Api::<ConfigMap>::namespaced(client.clone(), "default"), watcher::Config::default().labels("bench=roundtrip"), |cm| {
        (cm.name_any(), cm.name_any())
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let defaults: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut round_trips = Vec::new();
    for i in 0..100 {
        let name = format!("roundtrip-{i:03}");
        probe.expect(&name);
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"bench": "roundtrip"}}})).unwrap();
        let t0 = Instant::now();
        defaults.create(&PostParams::default(), &cm).await.unwrap();
        assert!(wait_until(Duration::from_secs(10), || probe.seen(&name).is_some()).await);
        round_trips.push((probe.seen(&name).unwrap() - t0).as_secs_f64() * 1000.0);
    }
    for v in [&mut to_outputs, &mut to_outputs_spread, &mut to_agent, &mut round_trips] {
        v.sort_by(f64::total_cmp);
    }
    let summary = |v: &Vec<f64>| json!({"n": v.len(), "p50_ms": percentile(v, 50.0), "p99_ms": percentile(v, 99.0), "max_ms": v.last()});
    let result = json!({
        "label": label, "scale": scale, "verifiers": fleet.len(), "registrations": total_registrations,
        "objects_created": objects + approvals_to_time, "setup_seconds": setup_seconds,
        "baseline_list_seconds": list_seconds, "baseline_list_bytes": list_bytes,
        "cold_start_seconds": cold_seconds, "cold_start_over_list": cold_seconds / list_seconds,
        "bare_writes_per_second": write_rate, "bare_write_sample": floor_sample,
        "write_floor_seconds": write_floor_seconds, "cold_start_over_write_floor": cold_seconds / write_floor_seconds,
        "cold_start_passes": passes_cold, "cold_start_applies": applied_cold, "cold_start_statuses": statuses_cold,
        "cold_start_events": events, "all_writes_floor_seconds": all_writes_floor_seconds, "cold_start_over_all_writes_floor": cold_seconds / all_writes_floor_seconds,
        "cold_start_evaluations_per_registration": evaluations_per_registration, "cold_start_plans_per_registration": plans_per_registration,
        "peak_rss_bytes": rss, "peak_rss_over_list_bytes": rss as f64 / list_bytes as f64,
        "restart_seconds": restart_seconds, "restart_over_list": restart_seconds / list_seconds,
        "restart_writes": restart_applies + restart_statuses, "restart_peak_rss_bytes": restart_rss,
        "noop_passes": noop, "one_edit": one_edit,
        "propagation_to_outputs": summary(&to_outputs), "propagation_to_agent": summary(&to_agent),
        "propagation_spread_to_outputs": summary(&to_outputs_spread), "spread_approval_writes": spread_writes,
        "write_then_watch": summary(&round_trips),
        "p99_over_round_trip_p99": percentile(&to_outputs, 99.0) / percentile(&round_trips, 99.0),
    });
    eprintln!("[{label}] {}", serde_json::to_string_pretty(&result).unwrap());
    drop(controller);
    result
}

/// A firewall agent of the test environment in a network namespace of its own.
struct BenchAgent {
    child: std::process::Child,
    netns: String,
}

impl BenchAgent {
    fn start(kubeconfig: &std::path::Path, label: &str) -> BenchAgent {
        let netns = format!("jpki-bench-{}", std::process::id());
        let _ = std::process::Command::new("ip").args(["netns", "add", &netns]).status();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("jpki-bench-agent-{label}.log"))).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_jpki-access"))
            .args(["agent", "--environment", "test", "--namespace", "jpki-system", "--node", &format!("bench-{label}"), "--netns", &netns])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        BenchAgent { child, netns }
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

/// Least-squares slope of log(y) over log(x): the exponent of y ∝ x^k.
fn exponent(points: &[(f64, f64)]) -> f64 {
    let logs: Vec<(f64, f64)> = points.iter().map(|(x, y)| (x.ln(), y.ln())).collect();
    let n = logs.len() as f64;
    let (mx, my) = (logs.iter().map(|p| p.0).sum::<f64>() / n, logs.iter().map(|p| p.1).sum::<f64>() / n);
    let num: f64 = logs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = logs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    num / den
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_benchmarks() {
    // JPKI_BENCH_SCALES: labels of the scales to run, e.g. "1x,10k" for a quick look.
    let wanted = std::env::var("JPKI_BENCH_SCALES").unwrap_or_else(|_| "1x,10k,3x,10x".into());
    let all = [("1x", 1.0, 20, false), ("10k", 10_000.0 / REGISTRATIONS_1X, 100, true), ("3x", 3.0, 20, false), ("10x", 10.0, 20, false)];
    let mut results = Vec::new();
    for (label, scale, approvals, agent) in all {
        if wanted.split(',').any(|w| w.trim() == label) {
            results.push(run_scale(label, scale, approvals, agent).await);
        }
    }
    let growth = |field: &str, sub: Option<&str>| -> Option<f64> {
        let points: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r["label"] != "10k")
            .map(|r| (r["registrations"].as_f64().unwrap(), sub.map_or(&r[field], |s| &r[field][s]).as_f64().unwrap()))
            .collect();
        (points.len() >= 2).then(|| exponent(&points))
    };
    let report = json!({
        "date": jiff::Timestamp::now().to_string(),
        "machine": std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "scales": results,
        "growth_exponent_cold_start": growth("cold_start_seconds", None),
        "growth_exponent_propagation_p50": growth("propagation_to_outputs", Some("p50_ms")),
    });
    let out = repo_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("fleet.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!(
        "\n| scale | registrations | LIST s | cold start s | ×LIST | write floor s | ×floor | passes | evaluations/plans per registration | RSS MiB | ×LIST bytes | no-op writes | edit writes | prop p50/p99 ms | spread p50/p99 ms, objects each | agent p50/p99 ms | round trip p50/p99 ms |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in report["scales"].as_array().unwrap() {
        eprintln!(
            "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {:.2}/{:.2} | {} | {:.1} | {} | {}+{} | {:.0}/{:.0} | {:.0}/{:.0}, {} | {}/{} | {:.1}/{:.1} |",
            r["label"],
            r["registrations"],
            r["baseline_list_seconds"].as_f64().unwrap(),
            r["cold_start_seconds"].as_f64().unwrap(),
            r["cold_start_over_list"].as_f64().unwrap(),
            r["write_floor_seconds"].as_f64().unwrap(),
            r["cold_start_over_write_floor"].as_f64().unwrap(),
            r["cold_start_passes"],
            r["cold_start_evaluations_per_registration"].as_f64().unwrap(),
            r["cold_start_plans_per_registration"].as_f64().unwrap(),
            r["peak_rss_bytes"].as_u64().unwrap() >> 20,
            r["peak_rss_over_list_bytes"].as_f64().unwrap(),
            r["noop_passes"]["applies"].as_f64().unwrap() + r["noop_passes"]["statuses"].as_f64().unwrap(),
            r["one_edit"]["objects"],
            r["one_edit"]["statuses"],
            r["propagation_to_outputs"]["p50_ms"].as_f64().unwrap(),
            r["propagation_to_outputs"]["p99_ms"].as_f64().unwrap(),
            r["propagation_spread_to_outputs"]["p50_ms"].as_f64().unwrap(),
            r["propagation_spread_to_outputs"]["p99_ms"].as_f64().unwrap(),
            r["spread_approval_writes"]["objects_per_approval"],
            r["propagation_to_agent"]["p50_ms"],
            r["propagation_to_agent"]["p99_ms"],
            r["write_then_watch"]["p50_ms"].as_f64().unwrap(),
            r["write_then_watch"]["p99_ms"].as_f64().unwrap(),
        );
    }
    eprintln!("growth exponents: cold start {:?}, propagation p50 {:?}", report["growth_exponent_cold_start"], report["growth_exponent_propagation_p50"]);
    eprintln!("written to {}", out.join("fleet.json").display());
}
