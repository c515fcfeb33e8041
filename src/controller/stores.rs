//! The `resolve` step: reflector caches of the four kinds and of the objects we own, read without any API call.
//!
//! Every watch uses `DeserializeGuard`, so an object stored before a schema change that no longer fits the types
//! is reported and skipped instead of ending the stream for everyone else.

use crate::api::allowlist::{AccessAllowlist, AccessAllowlistShard, AllowlistPurpose};
use crate::api::{AccessApproval, AccessEnvironment, AccessRecord, AccessRegistration, SignatureVerifier};
use crate::planner::children::{MANAGED_BY, allowlist_namespace};
use crate::planner::hold::{Baseline, PublishedAllowlist};
use crate::wire::allowlist::{Expected, assemble, baseline_name, index_name};
use crate::wire::signing::PublicKey;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
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
    /// ConfigMaps we manage (the URL notices).
    pub config_maps: Store<ConfigMap>,
    /// Every NetworkPolicy: ours, and foreign ones that may add to ours in the services' namespaces.
    pub network_policies: Store<NetworkPolicy>,
    pub ingresses: Store<Ingress>,
    /// Every published allowlist index and shard (forged ones included: they are found and replaced).
    pub allowlists: Store<AccessAllowlist>,
    pub shards: Store<AccessAllowlistShard>,
    /// The firewall agents' heartbeats and reports (a Lease per environment and node).
    pub agent_leases: Store<Lease>,
    /// The nodes, labels only (the expected agents of an environment are the nodes its firewall names).
    pub nodes: Store<Node>,
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
    /// One consistent view; the published sets are those that verify with `public`.
    pub fn snapshot(&self, public: &PublicKey) -> Snapshot {
        let mut s = Snapshot::default();
        split("SignatureVerifier", &self.verifiers, &mut s.verifiers, &mut s.unreadable);
        split("AccessRegistration", &self.registrations, &mut s.registrations, &mut s.unreadable);
        split("AccessApproval", &self.approvals, &mut s.approvals, &mut s.unreadable);
        split("AccessEnvironment", &self.environments, &mut s.environments, &mut s.unreadable);
        split("AccessRecord", &self.records, &mut s.records, &mut s.unreadable);
        s.unreadable.sort();
        let environments: Vec<&AccessEnvironment> = s.environments.iter().filter_map(|g| g.0.as_ref().ok()).collect();
        s.published = self.published_allowlists(&environments, public);
        s
    }

    /// A published set of `environment` in `namespace`, when it verifies completely.
    fn verified(&self, namespace: &str, environment: &str, purpose: AllowlistPurpose, public: &PublicKey) -> Option<crate::wire::allowlist::VerifiedSet> {
        let name = match purpose {
            AllowlistPurpose::Enforce => index_name(environment),
            AllowlistPurpose::HoldBaseline => baseline_name(environment),
        };
        let index = self.allowlists.get(&reflector::ObjectRef::new(&name).within(namespace))?;
        // By key, not by a scan of every shard.
        let shards: HashMap<String, Arc<AccessAllowlistShard>> =
            index.spec.shards.iter().filter_map(|r| Some((r.name.clone(), self.shards.get(&reflector::ObjectRef::new(&r.name).within(namespace))?))).collect();
        assemble(Expected { namespace, environment, purpose }, Some(&index), |n| shards.get(n).map(|s| &**s), public).ok()
    }

    /// The allowlists as published now (a verified index and its shards), per environment name, with the hold's
    /// baseline where a verified one is stored. A set that does not verify counts as not published.
    pub fn published_allowlists(&self, environments: &[&AccessEnvironment], public: &PublicKey) -> BTreeMap<String, PublishedAllowlist> {
        let mut out = BTreeMap::new();
        for env in environments {
            let name = env.metadata.name.clone().unwrap_or_default();
            let namespace = allowlist_namespace(env);
            let Some(set) = self.verified(namespace, &name, AllowlistPurpose::Enforce, public) else {
                continue;
            };
            let baseline = self.verified(namespace, &name, AllowlistPurpose::HoldBaseline, public).and_then(|b| {
                let hold = b.hold?;
                Some(Baseline {
                    cidrs: b.cidrs,
                    since: hold.since.parse().ok()?,
                    affected_registrations: usize::try_from(b.registrations).unwrap_or(0),
                    holding: hold.holding,
                })
            });
            out.insert(
                name,
                PublishedAllowlist { digest: set.digest, cidrs: set.cidrs, live_registrations: usize::try_from(set.registrations).unwrap_or(0), baseline },
            );
        }
        out
    }

    /// The heartbeats of `environment`'s agents: only Leases in its allowlist namespace count, since that is where
    /// its agents may write (the chart's admission policy), so a Lease elsewhere is a stray, not an agent.
    pub fn heartbeats(&self, environment: &str, namespace: &str) -> Vec<crate::wire::report::Heartbeat> {
        self.agent_leases
            .state()
            .iter()
            .filter(|l| label(&***l, crate::wire::report::REPORT_LABEL) == Some(environment) && l.metadata.namespace.as_deref() == Some(namespace))
            .map(|l| crate::wire::report::heartbeat(l))
            .collect()
    }

    /// The nodes whose labels include all of `selector`, by name.
    pub fn nodes_matching(&self, selector: &BTreeMap<String, String>) -> std::collections::BTreeSet<String> {
        self.nodes
            .state()
            .iter()
            .filter(|n| selector.iter().all(|(k, v)| n.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v)))
            .filter_map(|n| n.metadata.name.clone())
            .collect()
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
            self.allowlists.wait_until_ready(),
            self.shards.wait_until_ready(),
            self.agent_leases.wait_until_ready(),
            self.nodes.wait_until_ready(),
        );
    }
}

fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
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
    significant: Option<fn(&K) -> String>,
) -> (Store<K>, impl Stream<Item = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    // managedFields are often the larger part of an object and the planner never reads them: drop them before
    // they reach the cache (kube.rs "watcher memory improvements").
    let expired = relisting.clone();
    // With `significant`, an update that leaves its fingerprint unchanged starts no pass (an agent's heartbeat
    // renews its Lease every few seconds; only a changed report matters, and staleness is timed by the controller).
    let mut fingerprints: HashMap<String, String> = HashMap::new();
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
        .backoff(crate::watch::backoff(std::time::Duration::from_secs(2)))
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
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) if significant.is_some() => {
                    let key = format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or_default(), obj.meta().name.as_deref().unwrap_or_default());
                    let print = significant.map(|f| f(obj)).unwrap_or_default();
                    if fingerprints.get(&key) == Some(&print) {
                        return;
                    }
                    fingerprints.insert(key, print);
                }
                Ok(watcher::Event::Delete(obj)) if significant.is_some() => {
                    let key = format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or_default(), obj.meta().name.as_deref().unwrap_or_default());
                    fingerprints.remove(&key);
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
            reflect($name, $api, $config, shared.0.clone(), shared.1.clone(), shared.2.clone(), None)
        };
        ($name:expr, $api:expr, $config:expr, $significant:expr) => {
            reflect($name, $api, $config, shared.0.clone(), shared.1.clone(), shared.2.clone(), Some($significant))
        };
    }
    // Small pages keep the relist peak low (kube.rs "watcher memory improvements").
    let ours = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)).page_size(500);
    let forms = watcher::Config::default().page_size(500);
    let (verifiers, s1) = reflect!("SignatureVerifier", Api::all(client.clone()), forms.clone());
    let (registrations, s2) = reflect!("AccessRegistration", Api::all(client.clone()), forms.clone());
    let (approvals, s3) = reflect!("AccessApproval", Api::all(client.clone()), forms.clone());
    let (environments, s4) = reflect!("AccessEnvironment", Api::all(client.clone()), forms.clone());
    let (records, s9) = reflect!("AccessRecord", Api::all(client.clone()), forms.clone());
    let (config_maps, s5) = reflect!("ConfigMap", Api::all(client.clone()), ours.clone());
    let (network_policies, s6) = reflect!("NetworkPolicy", Api::all(client.clone()), forms.clone());
    let (ingresses, s7) = reflect!("Ingress", Api::all(client.clone()), ours);
    let (allowlists, s10) = reflect!("AccessAllowlist", Api::all(client.clone()), forms.clone());
    let (shards, s11) = reflect!("AccessAllowlistShard", Api::all(client.clone()), forms.clone());
    let reports = watcher::Config::default().labels(crate::wire::report::REPORT_LABEL);
    let (agent_leases, s8) = reflect!("agent heartbeat", Api::all(client.clone()), reports, |l: &Lease| {
        let report = l.metadata.annotations.as_ref().and_then(|a| a.get(crate::wire::report::REPORT_ANNOTATION));
        format!("{report:?}")
    });
    // Only a node's labels matter (which environments expect an agent on it), not its status updates.
    let (nodes, s12) = reflect!("Node", Api::all(client.clone()), forms, |n: &Node| format!("{:?}", n.metadata.labels));
    let stream = futures::stream::select_all(vec![
        s1.boxed(),
        s2.boxed(),
        s3.boxed(),
        s4.boxed(),
        s5.boxed(),
        s6.boxed(),
        s7.boxed(),
        s8.boxed(),
        s9.boxed(),
        s10.boxed(),
        s11.boxed(),
        s12.boxed(),
    ]);
    (
        Stores {
            own_writes,
            relisting,
            verifiers,
            registrations,
            approvals,
            environments,
            records,
            config_maps,
            network_policies,
            ingresses,
            allowlists,
            shards,
            agent_leases,
            nodes,
        },
        stream,
    )
}
