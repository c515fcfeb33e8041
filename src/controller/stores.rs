//! The `resolve` step: reflector caches of the four kinds and of the objects we own, read without any API call.
//!
//! Every watch uses `DeserializeGuard`, so an object stored before a schema change that no longer fits the types
//! is reported and skipped instead of ending the stream for everyone else.

use crate::api::{AccessApproval, AccessEnvironment, AccessRecord, AccessRegistration, SignatureVerifier};
use crate::planner::children::{ALLOWLIST_LABEL, DIGEST_ANNOTATION, ENVIRONMENT_LABEL, MANAGED_BY, baseline_name};
use crate::planner::hold::{Baseline, PublishedAllowlist};
use futures::{Stream, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::Notify;

/// Resource versions of the controller's own writes, so their echo on the watch does not start another pass: a
/// pass that wrote 10,000 statuses would otherwise be followed by a pass that only finds them right. Resource
/// versions are unique across the whole store (etcd revisions), so the version alone identifies a write. An echo
/// that arrives before the write's response is recorded still starts a pass (harmless); its entry is pruned.
#[derive(Default)]
pub struct OwnWrites(std::sync::Mutex<HashMap<String, std::time::Instant>>);

impl OwnWrites {
    pub fn record(&self, resource_version: Option<&str>) {
        if let (Some(rv), Ok(mut map)) = (resource_version, self.0.lock()) {
            map.insert(rv.to_string(), std::time::Instant::now());
        }
    }
    /// True (and forgotten) when this version is one of ours.
    fn take(&self, resource_version: Option<&str>) -> bool {
        match (resource_version, self.0.lock()) {
            (Some(rv), Ok(mut map)) => map.remove(rv).is_some(),
            _ => false,
        }
    }
    /// Forgets writes whose echo never came (it came first, or the watch restarted) after a minute.
    pub fn prune(&self) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, at| at.elapsed() < std::time::Duration::from_secs(60));
        }
    }
}

/// Watches that are re-listing: from the API server's "too old resource version" (410, as after the API server
/// was down) or the start of a list, until the list is complete. The reflector keeps the previous state until then,
/// so a pass in that window would plan from an old view and write objects it wrote before (measured after a
/// 2-minute outage in tests/faults.rs: 5 passes rewrote the same 18 objects). The controller waits instead.
#[derive(Default)]
pub struct Relisting(std::sync::Mutex<std::collections::BTreeSet<&'static str>>);

impl Relisting {
    fn mark(&self, watch: &'static str, relisting: bool) {
        if let Ok(mut set) = self.0.lock() {
            if relisting {
                set.insert(watch)
            } else {
                set.remove(watch)
            };
        }
    }
    /// The watches whose caches are being rebuilt now.
    pub fn now(&self) -> Vec<&'static str> {
        self.0.lock().map(|s| s.iter().copied().collect()).unwrap_or_default()
    }
}

/// Caches of everything the controller reads.
#[derive(Clone)]
pub struct Stores {
    pub own_writes: Arc<OwnWrites>,
    pub relisting: Arc<Relisting>,
    pub verifiers: Store<DeserializeGuard<SignatureVerifier>>,
    pub registrations: Store<DeserializeGuard<AccessRegistration>>,
    pub approvals: Store<DeserializeGuard<AccessApproval>>,
    pub environments: Store<DeserializeGuard<AccessEnvironment>>,
    /// The durable records (`AccessRecord`).
    pub records: Store<DeserializeGuard<AccessRecord>>,
    pub config_maps: Store<ConfigMap>,
    pub network_policies: Store<NetworkPolicy>,
    pub ingresses: Store<Ingress>,
    /// The firewall agents' reports (one ConfigMap per environment and node).
    pub agent_reports: Store<ConfigMap>,
}

/// An object the types cannot read, with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unreadable {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub error: String,
}

/// One consistent view of the caches, as the planner wants it: the cached objects themselves (shared, not copied).
#[derive(Default)]
pub struct Snapshot {
    pub verifiers: Vec<Arc<DeserializeGuard<SignatureVerifier>>>,
    pub registrations: Vec<Arc<DeserializeGuard<AccessRegistration>>>,
    pub approvals: Vec<Arc<DeserializeGuard<AccessApproval>>>,
    pub environments: Vec<Arc<DeserializeGuard<AccessEnvironment>>>,
    pub records: Vec<Arc<DeserializeGuard<AccessRecord>>>,
    pub unreadable: Vec<Unreadable>,
    pub published: BTreeMap<String, PublishedAllowlist>,
}

impl Snapshot {
    /// The readable objects, for the planner.
    pub fn objects(&self) -> crate::planner::Objects<'_> {
        fn readable<K>(all: &[Arc<DeserializeGuard<K>>]) -> Vec<&K> {
            all.iter().filter_map(|g| g.0.as_ref().ok()).collect()
        }
        crate::planner::Objects {
            verifiers: readable(&self.verifiers),
            registrations: readable(&self.registrations),
            approvals: readable(&self.approvals),
            environments: readable(&self.environments),
            records: readable(&self.records),
        }
    }
}

fn split<K: Resource<DynamicType = ()> + Clone>(
    kind: &'static str,
    store: &Store<DeserializeGuard<K>>,
    all: &mut Vec<Arc<DeserializeGuard<K>>>,
    bad: &mut Vec<Unreadable>,
) {
    *all = store.state();
    for guard in all.iter() {
        match &guard.0 {
            Ok(_) => {}
            Err(invalid) => bad.push(Unreadable {
                kind,
                namespace: invalid.metadata.namespace.clone(),
                name: invalid.metadata.name.clone().unwrap_or_default(),
                error: invalid.error.clone(),
            }),
        }
    }
}

impl Stores {
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        split("SignatureVerifier", &self.verifiers, &mut s.verifiers, &mut s.unreadable);
        split("AccessRegistration", &self.registrations, &mut s.registrations, &mut s.unreadable);
        split("AccessApproval", &self.approvals, &mut s.approvals, &mut s.unreadable);
        split("AccessEnvironment", &self.environments, &mut s.environments, &mut s.unreadable);
        split("AccessRecord", &self.records, &mut s.records, &mut s.unreadable);
        s.unreadable.sort();
        s.published = self.published_allowlists();
        s
    }

    /// The CIDRs of the shards an index names, when every shard is there with the digest the index gives.
    fn shard_cidrs(&self, index: &ConfigMap) -> Option<Vec<IpNet>> {
        let data = index.data.as_ref()?;
        let mut cidrs = Vec::new();
        for line in data.get("shards").map(String::as_str).unwrap_or_default().lines() {
            let mut fields = line.split_whitespace();
            let (Some(name), Some(digest)) = (fields.next(), fields.next()) else {
                continue;
            };
            // By key, not by a scan: the cache holds a URL notice per registration besides the shards.
            let shard = self.config_maps.get(&reflector::ObjectRef::new(name).within(index.metadata.namespace.as_deref().unwrap_or_default()))?;
            if annotation(&*shard, DIGEST_ANNOTATION) != Some(digest) {
                return None;
            }
            cidrs.extend(
                shard.data.as_ref().and_then(|d| d.get("cidrs")).map(String::as_str).unwrap_or_default().lines().filter_map(|l| l.parse::<IpNet>().ok()),
            );
        }
        Some(cidrs)
    }

    /// The allowlists as published now (index plus complete shards), per environment name, with the hold's
    /// baseline where one is stored.
    pub fn published_allowlists(&self) -> BTreeMap<String, PublishedAllowlist> {
        let mut out = BTreeMap::new();
        let all = self.config_maps.state();
        for index in all.iter().map(|c| &**c).filter(|c| label(*c, ALLOWLIST_LABEL) == Some("index")) {
            let Some(env) = label(index, ENVIRONMENT_LABEL) else {
                continue;
            };
            let Some(cidrs) = self.shard_cidrs(index) else {
                continue;
            };
            let data = index.data.clone().unwrap_or_default();
            let namespace = index.metadata.namespace.as_deref().unwrap_or_default();
            let baseline = self.config_maps.get(&reflector::ObjectRef::new(&baseline_name(env)).within(namespace)).and_then(|b| {
                let data = b.data.as_ref()?;
                Some(Baseline {
                    cidrs: self.shard_cidrs(&b)?,
                    since: data.get("since")?.parse().ok()?,
                    affected_registrations: data.get("affectedRegistrations").and_then(|n| n.parse().ok()).unwrap_or(0),
                    holding: data.get("holding").cloned(),
                })
            });
            out.insert(
                env.to_string(),
                PublishedAllowlist {
                    digest: data.get("digest").cloned().unwrap_or_default(),
                    cidrs,
                    live_registrations: data.get("liveRegistrations").and_then(|n| n.parse().ok()).unwrap_or(0),
                    baseline,
                },
            );
        }
        out
    }

    /// "in sync/total" of the agents that report for `environment` (None when no agent reports). Only reports in the
    /// environment's allowlist namespace count: that is where its agents may write (the chart's admission policy),
    /// so a report elsewhere is a stray, not an agent.
    pub fn agents_in_sync(&self, environment: &str, namespace: &str, digest: &str) -> Option<String> {
        let reports: Vec<_> = self
            .agent_reports
            .state()
            .into_iter()
            .filter(|r| label(&**r, crate::agent::REPORT_LABEL) == Some(environment) && r.metadata.namespace.as_deref() == Some(namespace))
            .collect();
        if reports.is_empty() {
            return None;
        }
        let in_sync = reports.iter().filter(|r| r.data.as_ref().and_then(|d| d.get("appliedDigest")).map(String::as_str) == Some(digest)).count();
        Some(format!("{in_sync}/{}", reports.len()))
    }

    /// True once every watch has delivered its initial list.
    pub async fn wait_synced(&self) {
        let _ = tokio::join!(
            self.verifiers.wait_until_ready(),
            self.registrations.wait_until_ready(),
            self.approvals.wait_until_ready(),
            self.environments.wait_until_ready(),
            self.records.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.network_policies.wait_until_ready(),
            self.ingresses.wait_until_ready(),
            self.agent_reports.wait_until_ready(),
        );
    }
}

fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().annotations.as_ref()?.get(key).map(String::as_str)
}

/// The watches' backoff: exponential from 0.8 s with jitter, like kube-runtime's default (client-go's), but capped at
/// `max` instead of 30 s. After an outage of the API server the default's cap leaves a cache up to 30 s behind once
/// the server is back, and a re-list after "too old resource version" costs a second backoff (tests/faults.rs).
/// The controller (two replicas, 8 watches) uses 2 s; the agents, one per edge node, 5 s.
pub fn watch_backoff(max: std::time::Duration) -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(800).min(max))
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// A reflector over `api`, poking `changed` on every event except the echo of our own writes; the returned future
/// drives it.
fn reflect<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    own: Arc<OwnWrites>,
    relisting: Arc<Relisting>,
) -> (Store<K>, impl Stream<Item = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    // managedFields are often the larger part of an object and the planner never reads them: drop them before
    // they reach the cache (kube.rs "watcher memory improvements").
    let expired = relisting.clone();
    let stream = reflector::reflector(writer, watcher(api, config).modify(|o| o.meta_mut().managed_fields = None))
        // "Too old resource version" (410, as when the API server comes back with a fresh watch cache): the watcher
        // re-lists on its next poll. Like client-go, re-list at once: only other errors go through the backoff.
        .filter(move |event| {
            let is_expired = matches!(event, Err(watcher::Error::WatchError(status)) if status.code == 410);
            if is_expired {
                tracing::info!(watch = name, "watch expired (too old resource version); re-listing");
                expired.mark(name, true);
            }
            std::future::ready(!is_expired)
        })
        .backoff(watch_backoff(std::time::Duration::from_secs(2)))
        .map(move |event| {
            match &event {
                // A failing watch changes nothing in the cache: no pass.
                Err(e) => {
                    tracing::warn!(watch = name, error = %e, "watch error; retrying with backoff");
                    return;
                }
                Ok(watcher::Event::Init) => relisting.mark(name, true),
                Ok(watcher::Event::InitDone) => relisting.mark(name, false),
                Ok(watcher::Event::Apply(obj)) if own.take(obj.meta().resource_version.as_deref()) => {
                    return;
                }
                Ok(_) => {}
            }
            changed.notify_one();
        });
    (reader, stream)
}

/// Starts the watches; returns the caches and one stream that drives them all.
pub fn start(client: &Client, changed: Arc<Notify>) -> (Stores, impl Stream<Item = ()> + Send + 'static) {
    let own_writes = Arc::new(OwnWrites::default());
    let relisting = Arc::new(Relisting::default());
    let shared = (changed, own_writes.clone(), relisting.clone());
    macro_rules! reflect {
        ($name:expr, $api:expr, $config:expr) => {
            reflect($name, $api, $config, shared.0.clone(), shared.1.clone(), shared.2.clone())
        };
    }
    // Small pages keep the relist peak low (kube.rs "watcher memory improvements").
    let ours = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)).page_size(500);
    let forms = watcher::Config::default().page_size(500);
    let (verifiers, s1) = reflect!("SignatureVerifier", Api::all(client.clone()), forms.clone());
    let (registrations, s2) = reflect!("AccessRegistration", Api::all(client.clone()), forms.clone());
    let (approvals, s3) = reflect!("AccessApproval", Api::all(client.clone()), forms.clone());
    let (environments, s4) = reflect!("AccessEnvironment", Api::all(client.clone()), forms.clone());
    let (records, s9) = reflect!("AccessRecord", Api::all(client.clone()), forms);
    let (config_maps, s5) = reflect!("ConfigMap", Api::all(client.clone()), ours.clone());
    let (network_policies, s6) = reflect!("NetworkPolicy", Api::all(client.clone()), ours.clone());
    let (ingresses, s7) = reflect!("Ingress", Api::all(client.clone()), ours);
    let reports = watcher::Config::default().labels(crate::agent::REPORT_LABEL);
    let (agent_reports, s8) = reflect!("agent report", Api::all(client.clone()), reports);
    let stream = futures::stream::select_all(vec![s1.boxed(), s2.boxed(), s3.boxed(), s4.boxed(), s5.boxed(), s6.boxed(), s7.boxed(), s8.boxed(), s9.boxed()]);
    (
        Stores { own_writes, relisting, verifiers, registrations, approvals, environments, records, config_maps, network_policies, ingresses, agent_reports },
        stream,
    )
}
