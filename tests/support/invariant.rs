//! The invariant checker of the fault tests (issue #10): while a test runs, it samples, a few times a second, what
//! the data plane admits and what the planner says is live for the objects in the API server at that instant, and
//! at the end counts over-permits and under-permits.
//!
//! Layers of the data plane, each compared on its own:
//! - `networkPolicy`: the ipBlocks of the environment's NetworkPolicies;
//! - `allowlist`: the published allowlist (signed index and shards, accepted only when verified, as the agent does);
//! - `nft`: the set elements of the agent's table in the router namespace, read with `nft -j list table`; a missing
//!   table admits every source.
//!
//! Definitions (times are the instants of the reads):
//! - **over-permit**: a data-plane sample admits an address that was live in *no* API sample of the last
//!   `bound` (nor in the next one, which may already show a change the data plane saw first). An address never
//!   approved is an over-permit at once; a revoked one only when it is still admitted `bound` after its revocation.
//! - **under-permit**: a CIDR of a live registration that a layer does not admit; its duration runs from the first
//!   API sample that shows it live (or the last sample that admitted it) to the first sample that admits it, minus
//!   declared outages of the API server (nothing can propagate then). Durations above `bound` are violations.
//!
//! The API server's truth is computed with the project's own pure planner (`jpki_access::planner::plan`) on the
//! listed objects, read as `DynamicObject` and converted one by one, so that an object that no longer fits the types
//! is skipped (as the controller skips it) instead of failing the whole read.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use ipnet::IpNet;
use jpki_access::agent::drift::parse_listing;
use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, SignatureVerifier};
use jpki_access::domain::cidr::{Family, interval};
use jpki_access::planner::{Objects, plan};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, Resource};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Range = (Family, u128, u128);
/// Declared outages of the API server: (start, end if it ended).
type Outages = Vec<(Instant, Option<Instant>)>;

pub const LAYERS: [&str; 3] = ["networkPolicy", "allowlist", "nft"];

/// One read of everything. `None` where the read failed (the API server is down, say).
#[derive(Debug, Clone)]
struct Sample {
    api_at: Instant,
    /// CIDRs of the live registrations of the environment.
    live: Option<Vec<IpNet>>,
    data_at: Instant,
    admitted: [Option<Vec<Range>>; 3],
}

/// What the checker found, per layer.
#[derive(Debug, Clone, Default)]
pub struct LayerReport {
    pub samples: usize,
    pub over_permit_samples: usize,
    /// The first and last instant an over-permit was seen, relative to the checker's start.
    pub over_permit_span: Option<(Duration, Duration)>,
    pub over_permit_examples: Vec<String>,
    pub max_under_permit: Duration,
    /// Under-permit episodes longer than the bound: (CIDR, duration).
    pub late: Vec<(String, Duration)>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub samples: usize,
    pub api_samples: usize,
    pub layers: BTreeMap<&'static str, LayerReport>,
}

impl Report {
    pub fn over_permits(&self) -> usize {
        self.layers.values().map(|l| l.over_permit_samples).sum()
    }
    pub fn max_under_permit(&self) -> Duration {
        self.layers.values().map(|l| l.max_under_permit).max().unwrap_or_default()
    }
    pub fn late(&self) -> usize {
        self.layers.values().map(|l| l.late.len()).sum()
    }
    /// One line per layer, for the test's output and the issue note.
    pub fn summary(&self) -> String {
        let mut out = format!("{} samples ({} with the API server readable)", self.samples, self.api_samples);
        for (name, l) in &self.layers {
            out.push_str(&format!(
                "\n  {name:13} samples {:4}  over-permits {}  max under-permit {:.1} s  late {}{}",
                l.samples,
                l.over_permit_samples,
                l.max_under_permit.as_secs_f64(),
                l.late.len(),
                if l.over_permit_examples.is_empty() { String::new() } else { format!("  e.g. {}", l.over_permit_examples.join("; ")) }
            ));
        }
        out
    }
    /// Asserts 0 over-permits on every layer and no under-permit longer than the bound.
    pub fn assert_holds(&self, test: &str) {
        eprintln!("invariant checker, {test}: {}", self.summary());
        assert!(self.samples >= 5, "{test}: the checker took only {} samples", self.samples);
        assert_eq!(self.over_permits(), 0, "{test}: over-permits:\n{}", self.summary());
        assert_eq!(self.late(), 0, "{test}: under-permits longer than the bound:\n{:#?}", self.layers);
    }
}

/// A running checker; `finish` stops it and evaluates the samples.
pub struct Checker {
    started: Instant,
    bound: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    outages: Arc<Mutex<Outages>>,
    thread: std::thread::JoinHandle<()>,
}

impl Checker {
    /// Starts sampling the production environment every `every`: the objects through the API server of
    /// `kubeconfig`, the NetworkPolicies of jpki-production, the allowlist in jpki-system, and the nft table in the
    /// namespace `router`. It samples on a thread and runtime of its own, with a client of its own: a test's runtime
    /// is blocked while the test probes with real connects, and the checker must keep sampling then.
    pub fn start(kubeconfig: &std::path::Path, router: &str, bound: Duration, every: Duration) -> Checker {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop2, samples2, router, kubeconfig) = (stop.clone(), samples.clone(), router.to_string(), kubeconfig.to_path_buf());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let client = super::client_for_kubeconfig(&kubeconfig).await;
                while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    let next = Instant::now() + every;
                    let sample = tokio::time::timeout(every * 8, take_sample(&client, &router)).await;
                    if let Ok(sample) = sample {
                        samples2.lock().unwrap().push(sample);
                    }
                    tokio::time::sleep_until(next.into()).await;
                }
            });
        });
        Checker { started: Instant::now(), bound, stop, samples, outages: Default::default(), thread }
    }

    /// The API server is stopped from now on (by the test): under-permit clocks pause.
    pub fn outage_begins(&self) {
        self.outages.lock().unwrap().push((Instant::now(), None));
    }

    pub fn outage_ends(&self) {
        if let Some(last) = self.outages.lock().unwrap().last_mut() {
            last.1 = Some(Instant::now());
        }
    }

    pub async fn finish(self) -> Report {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap();
        let samples = self.samples.lock().unwrap().clone();
        let outages = self.outages.lock().unwrap().clone();
        evaluate(&samples, &outages, self.bound, self.started)
    }
}

async fn take_sample(client: &Client, router: &str) -> Sample {
    let api_at = Instant::now();
    let live = live_cidrs(client).await;
    let data_at = Instant::now();
    let policies = network_policy_ranges(client).await;
    let allowlist = allowlist_ranges(client).await;
    let nft = nft_ranges(router).await;
    Sample { api_at, live, data_at, admitted: [policies, allowlist, nft] }
}

/// Lists one kind as DynamicObjects and keeps those that fit the types.
async fn list_typed<K>(client: &Client) -> Option<Vec<K>>
where
    K: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<K>(&()));
    let list = api.list(&ListParams::default()).await.ok()?;
    Some(list.items.into_iter().filter_map(|o| serde_json::to_value(o).ok().and_then(|v| serde_json::from_value(v).ok())).collect())
}

async fn live_cidrs(client: &Client) -> Option<Vec<IpNet>> {
    let verifiers: Vec<SignatureVerifier> = list_typed(client).await?;
    let registrations: Vec<AccessRegistration> = list_typed(client).await?;
    let approvals: Vec<AccessApproval> = list_typed(client).await?;
    let environments: Vec<AccessEnvironment> = list_typed(client).await?;
    let plan = plan(&Objects::of(&verifiers, &registrations, &approvals, &environments).input(), jiff::Timestamp::now());
    Some(
        plan.registrations
            .values()
            .filter(|r| r.resolved.is_live() && r.resolved.evaluation.environment == jpki_access::api::Environment::Production)
            .flat_map(|r| r.resolved.window.iter().flat_map(|w| w.cidrs.iter().copied()))
            .collect(),
    )
}

async fn network_policy_ranges(client: &Client) -> Option<Vec<Range>> {
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), "jpki-production");
    let list = api.list(&ListParams::default().labels("app.kubernetes.io/managed-by=jpki-access")).await.ok()?;
    let mut nets = Vec::new();
    for np in list.items {
        for rule in np.spec.and_then(|s| s.ingress).unwrap_or_default() {
            for block in rule.from.unwrap_or_default().into_iter().filter_map(|p| p.ip_block) {
                assert!(block.except.is_none(), "the checker does not read ipBlock.except, the controller never writes it");
                nets.push(block.cidr.parse::<IpNet>().unwrap());
            }
        }
    }
    Some(merge(nets.iter().map(interval).collect()))
}

async fn allowlist_ranges(client: &Client) -> Option<Vec<Range>> {
    use jpki_access::api::allowlist::{AccessAllowlist, AccessAllowlistShard, AllowlistPurpose};
    use jpki_access::wire::allowlist::{Expected, assemble};
    let index = Api::<AccessAllowlist>::namespaced(client.clone(), "jpki-system").get_opt("jpki-allowlist-production").await.ok()?;
    let shards = Api::<AccessAllowlistShard>::namespaced(client.clone(), "jpki-system")
        .list(&ListParams::default().labels("access.jpki.dev/allowlist=shard"))
        .await
        .ok()?;
    let key = jpki_access::wire::signing::PublicKey::from_file(&super::public_key()).unwrap();
    // Not complete (being rewritten) counts as "not read": the agent keeps what it had then, and so does the
    // checker's view of this layer.
    let expected = Expected { namespace: "jpki-system", environment: "production", purpose: AllowlistPurpose::Enforce };
    let set = assemble(expected, index.as_ref(), |n| shards.items.iter().find(|s| s.metadata.name.as_deref() == Some(n)), &key).ok()?;
    Some(merge(set.cidrs.iter().map(interval).collect()))
}

async fn nft_ranges(router: &str) -> Option<Vec<Range>> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", router, "nft", "-j", "list", "table", "inet", "jpki_access_production"])
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        // No table: nothing is filtered, every source admitted.
        return Some(vec![(Family::V4, 0, u128::from(u32::MAX)), (Family::V6, 0, u128::MAX)]);
    }
    Some(parse_listing(&String::from_utf8_lossy(&out.stdout)).unwrap().allowed)
}

fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::new();
    for (f, lo, hi) in ranges {
        match out.last_mut() {
            Some((lf, _, lhi)) if *lf == f && lo <= lhi.saturating_add(1) => *lhi = (*lhi).max(hi),
            _ => out.push((f, lo, hi)),
        }
    }
    out
}

/// Whether `r` lies inside one range of `merged` (merged ranges are maximal, so one is enough).
fn covered(r: &Range, merged: &[Range]) -> bool {
    let at = merged.partition_point(|m| (m.0, m.1) <= (r.0, r.1));
    at > 0 && merged[at - 1].0 == r.0 && merged[at - 1].2 >= r.2
}

fn paused(from: Instant, to: Instant, outages: &Outages) -> Duration {
    outages
        .iter()
        .map(|(a, b)| {
            let (a, b) = ((*a).max(from), b.unwrap_or(to).min(to));
            b.saturating_duration_since(a)
        })
        .sum()
}

fn evaluate(samples: &[Sample], outages: &Outages, bound: Duration, started: Instant) -> Report {
    let mut report = Report { samples: samples.len(), api_samples: samples.iter().filter(|s| s.live.is_some()).count(), ..Default::default() };
    let api: Vec<(Instant, Vec<IpNet>)> = samples.iter().filter_map(|s| Some((s.api_at, s.live.clone()?))).collect();
    for (layer, name) in LAYERS.iter().enumerate() {
        let mut lr = LayerReport::default();
        // Over-permits.
        for (i, s) in samples.iter().enumerate() {
            let Some(admitted) = &s.admitted[layer] else {
                continue;
            };
            lr.samples += 1;
            let next_api = samples[i + 1..].iter().find(|n| n.live.is_some()).map(|n| n.api_at).unwrap_or(s.data_at);
            let mut window: Vec<IpNet> =
                api.iter().filter(|(at, _)| *at + bound >= s.data_at && *at <= next_api).flat_map(|(_, l)| l.iter().copied()).collect();
            if window.is_empty() {
                // No readable API sample near (an outage): the last one before stands, since nothing changes then.
                window = api.iter().rev().find(|(at, _)| *at <= s.data_at).map(|(_, l)| l.clone()).unwrap_or_default();
            }
            let permitted = merge(window.iter().map(interval).collect());
            let over: Vec<&Range> = admitted.iter().filter(|r| !covered(r, &permitted)).collect();
            if !over.is_empty() {
                lr.over_permit_samples += 1;
                let at = s.data_at - started;
                lr.over_permit_span = Some(lr.over_permit_span.map_or((at, at), |(a, _)| (a, at)));
                if lr.over_permit_examples.len() < 3 {
                    lr.over_permit_examples.push(format!("{:?} at {:.1} s", show(over[0]), at.as_secs_f64()));
                }
            }
        }
        // Under-permits, per CIDR of a live registration.
        let mut live_since: BTreeMap<IpNet, Instant> = BTreeMap::new();
        let mut waiting: BTreeMap<IpNet, Instant> = BTreeMap::new();
        let mut last_admitted: BTreeMap<IpNet, Instant> = BTreeMap::new();
        for s in samples {
            let Some(live) = &s.live else { continue };
            live_since.retain(|c, _| live.contains(c));
            waiting.retain(|c, _| live.contains(c));
            for c in live {
                live_since.entry(*c).or_insert(s.api_at);
            }
            let Some(admitted) = &s.admitted[layer] else {
                continue;
            };
            for c in live {
                if covered(&interval(c), admitted) {
                    last_admitted.insert(*c, s.data_at);
                    if let Some(since) = waiting.remove(c) {
                        let took = s.data_at.saturating_duration_since(since) - paused(since, s.data_at, outages);
                        lr.max_under_permit = lr.max_under_permit.max(took);
                        if took > bound {
                            lr.late.push((c.to_string(), took));
                        }
                    }
                } else {
                    let since = last_admitted.get(c).map_or(live_since[c], |at| (*at).max(live_since[c]));
                    waiting.entry(*c).or_insert(since);
                }
            }
        }
        if let Some(end) = samples.last().map(|s| s.data_at) {
            for (c, since) in waiting {
                let took = end.saturating_duration_since(since) - paused(since, end, outages);
                lr.max_under_permit = lr.max_under_permit.max(took);
                if took > bound {
                    lr.late.push((format!("{c} (never admitted)"), took));
                }
            }
        }
        report.layers.insert(name, lr);
    }
    report
}

fn show(r: &Range) -> String {
    match r.0 {
        Family::V4 => format!("{}-{}", std::net::Ipv4Addr::from(r.1 as u32), std::net::Ipv4Addr::from(r.2 as u32)),
        Family::V6 => format!("{}-{}", std::net::Ipv6Addr::from(r.1), std::net::Ipv6Addr::from(r.2)),
    }
}
