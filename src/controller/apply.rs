//! The `apply` and `status` steps: write what the plan wants and differs from what is there, by server-side
//! apply with one field manager; never write what is already right. New allow rules and complete allowlist shards
//! are written before the index that announces them and before anything stale is removed.

use super::published::Signer;
use super::stores::{OwnWrites, Stores};
use crate::api::allowlist::{AccessAllowlist, AccessAllowlistShard};
use crate::api::{AccessEnvironment, AccessRegistration};
use crate::planner::children::{Child, ENVIRONMENT_LABEL, MANAGED_BY};
use crate::planner::{EnvironmentPlan, Plan};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub const FIELD_MANAGER: &str = "jpki-access";

/// True when every field of `desired` is in `existing` with the same value (lists compared element by element).
/// Fields the server adds (defaults, managedFields, resourceVersion) do not count as differences.
pub fn json_includes(existing: &Value, desired: &Value) -> bool {
    match (existing, desired) {
        (Value::Object(e), Value::Object(d)) => d.iter().all(|(k, dv)| e.get(k).is_some_and(|ev| json_includes(ev, dv)) || dv.is_null()),
        (Value::Array(e), Value::Array(d)) => e.len() == d.len() && e.iter().zip(d).all(|(ev, dv)| json_includes(ev, dv)),
        (e, d) => e == d,
    }
}

/// Per-object exponential backoff after a failed write, so one bad object neither stops the others nor loops hot.
#[derive(Default)]
pub struct Backoff {
    failures: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    pub fn ready(&self, id: &str) -> bool {
        self.failures.get(id).is_none_or(|(_, at)| *at <= Instant::now())
    }
    pub fn failed(&mut self, id: &str, error: &kube::Error) {
        let entry = self.failures.entry(id.to_string()).or_insert((0, Instant::now()));
        entry.0 += 1;
        entry.1 = Instant::now() + retry_delay(Failure::of(error), entry.0);
    }
    pub fn succeeded(&mut self, id: &str) {
        self.failures.remove(id);
    }
    /// When the next retry is due (only retries still ahead: a past one was retried by the pass that just ran).
    pub fn next_retry(&self) -> Option<Instant> {
        let now = Instant::now();
        self.failures.values().map(|(_, at)| *at).filter(|at| *at > now).min()
    }
    /// Forgets failures that a pass started at `pass_start` did not see again (the object was written, is right
    /// by now, or is gone), so they neither wake the loop nor linger.
    pub fn prune(&mut self, pass_start: Instant) {
        self.failures.retain(|_, (_, at)| *at > pass_start);
    }
    pub fn pending(&self) -> usize {
        self.failures.len()
    }
}

/// What one pass wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Writes {
    pub applied: usize,
    pub deleted: usize,
    pub statuses: usize,
    /// Facts added to the durable records.
    pub records: usize,
    pub failed: usize,
}

fn id(child: &Child) -> String {
    let (api_version, kind, namespace, name) = child.identity();
    format!("{api_version}/{kind}/{namespace}/{name}")
}

/// [`id`] of a cached object, without copying it into a [`Child`] (a shard holds thousands of CIDRs).
fn id_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let m = obj.meta();
    format!("{}/{}/{}/{}", K::api_version(&()), K::kind(&()), m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default())
}

/// Whether the cached object already holds everything `child` wants. ConfigMaps (a URL notice per registration,
/// the allowlist shards) are compared as typed values: turning thousands of them into JSON on every pass was most
/// of an idle pass's time. Other kinds go through [`json_includes`].
fn already_there(stores: &Stores, signer: &Signer, child: &Child) -> bool {
    use kube::runtime::reflector::ObjectRef;
    let (_, _, namespace, name) = child.identity();
    match child {
        Child::ConfigMap(desired) => stores.config_maps.get(&ObjectRef::new(&name).within(&namespace)).is_some_and(|e| config_map_includes(&e, desired)),
        // Only a valid signature of exactly the planned content counts: a forged or altered index is written again.
        Child::Allowlist(desired) => stores
            .allowlists
            .get(&ObjectRef::new(&name).within(&namespace))
            .is_some_and(|e| signer.stored_matches(&e, desired) && meta_includes(&e.metadata, &desired.metadata)),
        Child::AllowlistShard(desired) => stores
            .shards
            .get(&ObjectRef::new(&name).within(&namespace))
            .is_some_and(|e| e.spec == desired.spec && meta_includes(&e.metadata, &desired.metadata)),
        _ => existing(stores, child).is_some_and(|e| json_includes(&e, &child.to_json())),
    }
}

/// Desired labels and annotations among the existing ones, and the same owners.
fn meta_includes(existing: &kube::api::ObjectMeta, desired: &kube::api::ObjectMeta) -> bool {
    fn subset(d: &Option<std::collections::BTreeMap<String, String>>, e: &Option<std::collections::BTreeMap<String, String>>) -> bool {
        d.iter().flatten().all(|(k, v)| e.as_ref().and_then(|e| e.get(k)) == Some(v))
    }
    subset(&desired.labels, &existing.labels)
        && subset(&desired.annotations, &existing.annotations)
        && (desired.owner_references.is_none() || existing.owner_references == desired.owner_references)
}

/// [`json_includes`] for ConfigMaps: desired data, labels and annotations among the existing ones (a key someone
/// else added is no difference: our apply could not remove it), and the same owners. We never write binaryData.
pub fn config_map_includes(existing: &ConfigMap, desired: &ConfigMap) -> bool {
    fn subset(d: &Option<std::collections::BTreeMap<String, String>>, e: &Option<std::collections::BTreeMap<String, String>>) -> bool {
        d.iter().flatten().all(|(k, v)| e.as_ref().and_then(|e| e.get(k)) == Some(v))
    }
    let (e, d) = (&existing.metadata, &desired.metadata);
    subset(&desired.data, &existing.data)
        && desired.binary_data.is_none()
        && subset(&d.labels, &e.labels)
        && subset(&d.annotations, &e.annotations)
        && (d.owner_references.is_none() || e.owner_references == d.owner_references)
}

fn existing(stores: &Stores, child: &Child) -> Option<Value> {
    let (_, kind, namespace, name) = child.identity();
    use kube::runtime::reflector::ObjectRef;
    match kind.as_str() {
        "ConfigMap" => stores.config_maps.get(&ObjectRef::new(&name).within(&namespace)).and_then(|o| serde_json::to_value(&*o).ok()),
        "NetworkPolicy" => stores.network_policies.get(&ObjectRef::new(&name).within(&namespace)).and_then(|o| serde_json::to_value(&*o).ok()),
        "Ingress" => stores.ingresses.get(&ObjectRef::new(&name).within(&namespace)).and_then(|o| serde_json::to_value(&*o).ok()),
        _ => None,
    }
}

/// Why a write failed, for how long to wait before the next try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The API server refused the object itself (invalid, forbidden): retrying soon cannot help.
    Permanent,
    /// The API server answered with another error (a conflict, 429, 500): back off, up to 5 minutes.
    Refused,
    /// No answer at all (connection refused, timeout): the object is not at fault, and when the server is back every
    /// write should go through at once, so the wait stays short (5 s at most). With the 5-minute cap, a 2-minute
    /// outage left the writes that failed in it waiting minutes after the return (tests/faults.rs).
    Unreachable,
}

impl Failure {
    fn of(e: &kube::Error) -> Failure {
        match e {
            kube::Error::Api(s) if s.code == 422 || s.code == 400 || s.code == 403 => Failure::Permanent,
            kube::Error::Api(_) => Failure::Refused,
            _ => Failure::Unreachable,
        }
    }
}

/// The wait after the `attempt`-th failure in a row (from 1).
fn retry_delay(failure: Failure, attempt: u32) -> Duration {
    let exponential = Duration::from_millis(500u64 << attempt.min(9));
    match failure {
        Failure::Permanent => Duration::from_secs(300),
        Failure::Refused => exponential.min(Duration::from_secs(300)),
        Failure::Unreachable => exponential.min(Duration::from_secs(5)),
    }
}

/// Server-side applies one child; records the written version so its watch echo does not start a pass. An
/// allowlist index is given here already signed.
/// Applies `child`; returns the resourceVersion the write got.
async fn apply_child(client: &Client, own: &OwnWrites, child: &Child) -> Result<Option<String>, kube::Error> {
    let (_, _, namespace, name) = child.identity();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let body = child.to_json();
    let written = match child {
        Child::Allowlist(_) => Api::<AccessAllowlist>::namespaced(client.clone(), &namespace).patch(&name, &pp, &Patch::Apply(&body)).await?.metadata,
        Child::AllowlistShard(_) => Api::<AccessAllowlistShard>::namespaced(client.clone(), &namespace).patch(&name, &pp, &Patch::Apply(&body)).await?.metadata,
        Child::ConfigMap(_) => Api::<ConfigMap>::namespaced(client.clone(), &namespace).patch(&name, &pp, &Patch::Apply(&body)).await?.metadata,
        Child::NetworkPolicy(_) => Api::<NetworkPolicy>::namespaced(client.clone(), &namespace).patch(&name, &pp, &Patch::Apply(&body)).await?.metadata,
        Child::Ingress(_) => Api::<Ingress>::namespaced(client.clone(), &namespace).patch(&name, &pp, &Patch::Apply(&body)).await?.metadata,
        Child::HttpRoute(_) => {
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"));
            Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &ar).patch(&name, &pp, &Patch::Apply(&body)).await?.metadata
        }
    };
    own.record(written.resource_version.as_deref());
    Ok(written.resource_version)
}

/// Order of writes within an environment: allow policies and allowlist shards (together: neither names the
/// other), then the index that announces the shards, then the default deny and the routes. So a reader never sees an
/// index naming a shard not yet written, and a fresh environment never denies before it allows. Writes of the same
/// rank go out together: one at a time, an approval's shard and policy cost two round trips of large objects.
fn write_order(child: &Child) -> u8 {
    let (_, kind, _, name) = child.identity();
    match kind.as_str() {
        "NetworkPolicy" if name.ends_with("-default-deny") => 2,
        "NetworkPolicy" => 0,
        _ => match child {
            Child::AllowlistShard(_) | Child::ConfigMap(_) => 0,
            Child::Allowlist(_) => 1,
            _ => 3,
        },
    }
}

/// HTTPRoutes have no cache (their CRD may be absent); remember what was applied so an unchanged one is not resent.
/// The second map is what this replica last wrote of each allowlist index and shard (see [`OwnCopy`]).
#[derive(Default)]
pub struct RouteMemory(HashMap<String, Value>, HashMap<String, OwnCopy>);

/// What this replica last wrote of an allowlist object: the planned content, the resourceVersions its writes of that
/// content got, and when. Right after a write the cache still shows the previous version (or nothing, after a
/// create): comparing with it, the next pass wrote the index again with a new serial, and again, until the cache
/// caught up (tests/agent.rs saw an agent apply one set 6 times). A cached version that is one of our own writes of
/// the same planned content is not written again; a version we never wrote (someone else's) still is.
pub struct OwnCopy {
    planned: Value,
    versions: Vec<String>,
    at: std::time::Instant,
}

/// How long after our write a missing object is taken for a cache that has not seen the create yet.
const CREATE_LAG: std::time::Duration = std::time::Duration::from_secs(2);

impl RouteMemory {
    fn lagging_own_write(&self, stores: &Stores, child: &Child, key: &str) -> bool {
        use kube::runtime::reflector::ObjectRef;
        let (_, _, namespace, name) = child.identity();
        let cached = match child {
            Child::Allowlist(_) => stores.allowlists.get(&ObjectRef::new(&name).within(&namespace)).map(|o| o.metadata.resource_version.clone()),
            Child::AllowlistShard(_) => stores.shards.get(&ObjectRef::new(&name).within(&namespace)).map(|o| o.metadata.resource_version.clone()),
            _ => return false,
        };
        self.is_own_write(key, &child.to_json(), cached)
    }

    /// Whether the cache's view of an object (`None`: not there; `Some(None)`: no version) is one of our own writes
    /// of this planned content.
    fn is_own_write(&self, key: &str, planned: &Value, cached: Option<Option<String>>) -> bool {
        let Some(copy) = self.1.get(key) else { return false };
        if &copy.planned != planned {
            return false;
        }
        match cached {
            Some(Some(version)) => copy.versions.contains(&version),
            Some(None) => false,
            None => copy.at.elapsed() < CREATE_LAG,
        }
    }

    fn wrote(&mut self, key: String, planned: Value, version: Option<String>) {
        let copy = self.1.entry(key).or_insert_with(|| OwnCopy { planned: planned.clone(), versions: Vec::new(), at: std::time::Instant::now() });
        if copy.planned != planned {
            copy.versions.clear();
            copy.planned = planned;
        }
        copy.versions.extend(version);
        if copy.versions.len() > 8 {
            copy.versions.remove(0);
        }
        copy.at = std::time::Instant::now();
    }
}

/// What goes out for a planned child, and what [`RouteMemory`] remembers of it (allowlist objects only). The index
/// is signed as it goes out, with a serial above the stored one.
fn outgoing<'a>(child: &'a Child, stored_serial: Option<i64>, signer: &mut Signer) -> (std::borrow::Cow<'a, Child>, Option<Value>) {
    let out = match child {
        Child::Allowlist(planned) => std::borrow::Cow::Owned(Child::Allowlist(signer.sign(planned, stored_serial))),
        _ => std::borrow::Cow::Borrowed(child),
    };
    // The planned content, before signing: the next pass compares its own (unsigned) plan with it. Remembering
    // the signed index never matched (serial and signature differ), so every pass while the cache lagged wrote
    // the index again with a new serial.
    let remembered = matches!(child, Child::Allowlist(_) | Child::AllowlistShard(_)).then(|| child.to_json());
    (out, remembered)
}

/// Writes one environment's children; returns whether every write succeeded.
pub async fn apply_environment(
    client: &Client,
    stores: &Stores,
    plan: &EnvironmentPlan,
    backoff: &mut Backoff,
    routes: &mut RouteMemory,
    signer: &mut Signer,
    writes: &mut Writes,
) -> bool {
    let mut children: Vec<&Child> = plan.children.iter().collect();
    children.sort_by_key(|c| write_order(c));
    let mut ok = true;
    for rank in children.chunk_by(|a, b| write_order(a) == write_order(b)) {
        let mut due = Vec::new();
        for child in rank {
            let key = id(child);
            let unchanged = match child {
                Child::HttpRoute(_) => routes.0.get(&key) == Some(&child.to_json()),
                Child::Allowlist(_) | Child::AllowlistShard(_) => already_there(stores, signer, child) || routes.lagging_own_write(stores, child, &key),
                _ => already_there(stores, signer, child),
            };
            if unchanged {
                continue;
            }
            if !backoff.ready(&key) {
                ok = false;
                continue;
            }
            let stored_serial = match child {
                Child::Allowlist(_) => {
                    let (_, _, namespace, name) = child.identity();
                    stores.allowlists.get(&kube::runtime::reflector::ObjectRef::new(&name).within(&namespace)).map(|s| s.spec.serial)
                }
                _ => None,
            };
            let (child, planned) = outgoing(child, stored_serial, signer);
            due.push((child, key, planned));
        }
        let mut results = futures::stream::iter(
            due.into_iter().map(|(child, key, planned)| async move { (child.clone(), key, planned, apply_child(client, &stores.own_writes, &child).await) }),
        )
        .buffer_unordered(WRITE_CONCURRENCY);
        while let Some((child, key, planned, result)) = results.next().await {
            match result {
                Ok(version) => {
                    backoff.succeeded(&key);
                    writes.applied += 1;
                    if let Child::HttpRoute(_) = &*child {
                        routes.0.insert(key.clone(), child.to_json());
                    }
                    if let Some(planned) = planned {
                        routes.wrote(key, planned, version);
                    }
                }
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "apply failed");
                    backoff.failed(&key, &e);
                    writes.failed += 1;
                    ok = false;
                }
            }
        }
    }
    ok
}

/// Requests in flight when many independent objects are written (URL notices, statuses): a cold start writes one
/// of each per registration, and one at a time would leave both cores of the API server idle between round trips.
pub const WRITE_CONCURRENCY: usize = 16;

/// Writes the URL notices (children of registrations), several at a time: they are independent of each other.
pub async fn apply_notices(client: &Client, stores: &Stores, signer: &Signer, plan: &Plan, backoff: &mut Backoff, writes: &mut Writes) {
    // Compared first, named only when different: naming every notice on every pass was a few allocations each.
    let due: Vec<(&Child, String)> = plan
        .registrations
        .values()
        .filter_map(|r| r.notice.as_ref())
        .filter(|child| !already_there(stores, signer, child))
        .map(|child| (child, id(child)))
        .filter(|(_, key)| backoff.ready(key))
        .collect();
    let mut results = futures::stream::iter(due.into_iter().map(|(child, key)| async move { (key, apply_child(client, &stores.own_writes, child).await) }))
        .buffer_unordered(WRITE_CONCURRENCY);
    while let Some((key, result)) = results.next().await {
        match result {
            Ok(_) => {
                backoff.succeeded(&key);
                writes.applied += 1;
            }
            Err(e) => {
                tracing::warn!(object = %key, error = %e, "apply failed");
                backoff.failed(&key, &e);
                writes.failed += 1;
            }
        }
    }
}

/// Deletes objects we manage that no plan wants any more (after everything new is in place). Environments whose
/// writes failed keep their old objects until the new ones are written.
pub async fn delete_stale(client: &Client, stores: &Stores, plan: &Plan, held_back: &BTreeSet<String>, writes: &mut Writes) {
    let wanted: BTreeSet<String> = plan.environments.values().flat_map(|e| e.children.iter().map(id)).collect();
    // URL notices by reference (one per registration: naming each as a string was most of this step).
    let notices: std::collections::HashSet<(&str, &str)> = plan
        .registrations
        .values()
        .filter_map(|r| match &r.notice {
            Some(Child::ConfigMap(c)) => Some((c.metadata.namespace.as_deref().unwrap_or_default(), c.metadata.name.as_deref().unwrap_or_default())),
            _ => None,
        })
        .collect();
    // Only objects of an environment in the plan, whose writes succeeded, may be deleted. An environment that left
    // the plan (invalid, unreadable, or shadowed by another object for the same environment) keeps its objects:
    // deleting its default-deny policy would open the services (fail closed, never fail open). A deleted
    // AccessEnvironment's objects go with it through their ownerReferences.
    // Only objects labelled as ours: the NetworkPolicy cache holds everyone's (foreign ones are reported, not
    // removed).
    let keep = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(MANAGED_BY.0).is_none_or(|m| m != MANAGED_BY.1)
            || labels.get(ENVIRONMENT_LABEL).is_none_or(|e| held_back.contains(e) || !plan.environments.contains_key(e))
    };
    let dp = DeleteParams::default();
    for cm in stores.config_maps.state() {
        if notices.contains(&(cm.metadata.namespace.as_deref().unwrap_or_default(), cm.metadata.name.as_deref().unwrap_or_default())) {
            continue;
        }
        let key = id_of(&*cm);
        if !wanted.contains(&key) && !keep(cm.labels()) {
            let api = Api::<ConfigMap>::namespaced(client.clone(), &cm.namespace().unwrap_or_default());
            count_delete(api.delete(&cm.name_any(), &dp).await.map(drop), &key, writes);
        }
    }
    for np in stores.network_policies.state() {
        let key = id_of(&*np);
        if !wanted.contains(&key) && !keep(np.labels()) {
            let api = Api::<NetworkPolicy>::namespaced(client.clone(), &np.namespace().unwrap_or_default());
            count_delete(api.delete(&np.name_any(), &dp).await.map(drop), &key, writes);
        }
    }
    for index in stores.allowlists.state() {
        let key = id_of(&*index);
        if !wanted.contains(&key) && !keep(index.labels()) {
            let api = Api::<AccessAllowlist>::namespaced(client.clone(), &index.namespace().unwrap_or_default());
            count_delete(api.delete(&index.name_any(), &dp).await.map(drop), &key, writes);
        }
    }
    for shard in stores.shards.state() {
        let key = id_of(&*shard);
        if !wanted.contains(&key) && !keep(shard.labels()) {
            let api = Api::<AccessAllowlistShard>::namespaced(client.clone(), &shard.namespace().unwrap_or_default());
            count_delete(api.delete(&shard.name_any(), &dp).await.map(drop), &key, writes);
        }
    }
    for ing in stores.ingresses.state() {
        let key = id_of(&*ing);
        if !wanted.contains(&key) && !keep(ing.labels()) {
            let api = Api::<Ingress>::namespaced(client.clone(), &ing.namespace().unwrap_or_default());
            count_delete(api.delete(&ing.name_any(), &dp).await.map(drop), &key, writes);
        }
    }
}

fn count_delete(result: Result<(), kube::Error>, key: &str, writes: &mut Writes) {
    match result {
        Ok(()) => writes.deleted += 1,
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            tracing::warn!(object = %key, error = %e, "delete failed");
            writes.failed += 1;
        }
    }
}

/// The backoff key of an object's status.
pub fn status_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}/status", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Writes a status through `/status` (the caller has found it different from the stored one); records the written
/// version so its watch echo does not start a pass.
pub async fn patch_status<K>(api: Api<K>, own: &OwnWrites, obj: &K, status: &impl serde::Serialize) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    match api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await {
        Ok(written) => {
            own.record(written.meta().resource_version.as_deref());
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()), // deleted meanwhile
        Err(e) => Err(e),
    }
}

/// Books the result of a status write; true when it was written.
pub fn count_status(key: &str, result: Result<(), kube::Error>, backoff: &mut Backoff, writes: &mut Writes) -> bool {
    match result {
        Ok(()) => {
            backoff.succeeded(key);
            writes.statuses += 1;
            true
        }
        Err(e) => {
            tracing::warn!(object = %key, error = %e, "status write failed");
            backoff.failed(key, &e);
            writes.failed += 1;
            false
        }
    }
}

/// Writes one status unless its key is backing off; true when it was written.
pub async fn write_status<K>(api: Api<K>, own: &OwnWrites, obj: &K, status: &impl serde::Serialize, backoff: &mut Backoff, writes: &mut Writes) -> bool
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let key = status_key(obj);
    if !backoff.ready(&key) {
        return false;
    }
    let result = patch_status(api, own, obj, status).await;
    count_status(&key, result, backoff, writes)
}

/// Status of a registration, unchanged?
pub fn registration_status_unchanged(reg: &AccessRegistration, desired: &crate::api::registration::AccessRegistrationStatus) -> bool {
    reg.status.as_ref() == Some(desired)
}

pub fn environment_status_unchanged(env: &AccessEnvironment, desired: &crate::api::environment::AccessEnvironmentStatus) -> bool {
    env.status.as_ref() == Some(desired)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{Failure, json_includes, retry_delay};
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn an_unreachable_server_is_retried_within_5s_however_long_it_was_down() {
        assert_eq!(retry_delay(Failure::Unreachable, 1), Duration::from_secs(1));
        assert_eq!(retry_delay(Failure::Unreachable, 40), Duration::from_secs(5));
        assert_eq!(retry_delay(Failure::Refused, 40), Duration::from_secs(256));
        assert_eq!(retry_delay(Failure::Refused, 3), Duration::from_secs(4));
        assert_eq!(retry_delay(Failure::Permanent, 1), Duration::from_secs(300));
    }

    #[test]
    fn a_cached_object_has_the_same_id_as_the_child_that_wrote_it() {
        use crate::planner::children::Child;
        let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({"metadata": {"name": "n", "namespace": "ns"}})).unwrap();
        let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}})).unwrap();
        assert_eq!(super::id_of(&cm), "v1/ConfigMap/ns/n");
        assert_eq!(super::id_of(&cm), super::id(&Child::ConfigMap(cm)));
        assert_eq!(super::id_of(&np), super::id(&Child::NetworkPolicy(np)));
    }

    #[test]
    fn config_maps_compare_like_json_inclusion() {
        use super::config_map_includes;
        use k8s_openapi::api::core::v1::ConfigMap;
        let desired: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "n", "labels": {"a": "1"}, "annotations": {"d": "x"}},
            "data": {"cidrs": "192.0.2.0/28\n"}}))
        .unwrap();
        let mut existing = desired.clone();
        existing.metadata.labels.as_mut().unwrap().insert("added-by-someone".into(), "y".into());
        existing.metadata.resource_version = Some("7".into());
        existing.data.as_mut().unwrap().insert("added-by-someone".into(), "z".into());
        assert!(config_map_includes(&existing, &desired), "extra labels, data keys and server fields are no difference");
        assert!(super::json_includes(&serde_json::to_value(&existing).unwrap(), &serde_json::to_value(&desired).unwrap()));
        for change in [json!({"data": {"cidrs": "192.0.2.0/27\n"}}), json!({"metadata": {"labels": {"a": "2"}}}), json!({"metadata": {"annotations": null}})] {
            let mut e = serde_json::to_value(&existing).unwrap();
            json_patch_merge(&mut e, &change);
            let e: ConfigMap = serde_json::from_value(e).unwrap();
            assert!(!config_map_includes(&e, &desired), "{change}");
            assert_eq!(
                config_map_includes(&e, &desired),
                super::json_includes(&serde_json::to_value(&e).unwrap(), &serde_json::to_value(&desired).unwrap()),
                "agrees with JSON inclusion: {change}"
            );
        }
    }

    fn json_patch_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if v.is_object() && t.get(k).is_some_and(|x| x.is_object()) {
                    json_patch_merge(t.get_mut(k).unwrap_or(&mut serde_json::Value::Null), v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }

    #[test]
    fn server_defaults_are_not_differences_but_changed_values_are() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 443}]}});
        let existing = json!({"metadata": {"name": "a", "labels": {"x": "1"}, "resourceVersion": "9", "managedFields": []},
                               "spec": {"ports": [{"port": 443, "protocol": "TCP"}], "policyTypes": ["Ingress"]}});
        assert!(json_includes(&existing, &desired));
        let changed = json!({"metadata": {"name": "a", "labels": {"x": "2"}}, "spec": {"ports": [{"port": 443}]}});
        assert!(!json_includes(&existing, &changed));
        let longer = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 443}, {"port": 80}]}});
        assert!(!json_includes(&existing, &longer), "a list of another length differs");
    }

    /// The cache lags behind our write of the signed index: the next pass must take the cached version for our own
    /// write of the same plan, not sign and write the index again (CI saw an agent apply one set 6 times, each
    /// with a new serial, 100 ms apart).
    #[test]
    fn a_lagging_cache_showing_our_own_signed_index_is_not_written_again() {
        use super::{RouteMemory, outgoing};
        use crate::controller::published::Signer;
        use crate::planner::children::Child;
        let (private, _) = crate::wire::signing::generate().unwrap();
        let mut signer = Signer::new(std::sync::Arc::new(crate::wire::signing::SigningKey::from_pem(&private, "test").unwrap()));
        let env: crate::api::AccessEnvironment = serde_json::from_value(json!({
            "apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": "production"},
            "spec": {"environment": "Production", "serviceNamespace": "s", "podSelector": {"matchLabels": {"a": "b"}},
                     "endpoints": [{"name": "o", "provisionMethod": "Ocsp", "service": {"name": "o", "port": 1}, "host": "o.example"}],
                     "firewall": {"allowlistNamespace": "jpki-system", "ports": [{"protocol": "TCP", "port": 443}]}}
        }))
        .unwrap();
        let (children, _) = crate::planner::children::allowlist(&env, &["192.0.2.0/28".parse().unwrap()], 1);
        let planned = children.into_iter().find(|c| matches!(c, Child::Allowlist(_))).unwrap();
        let mut memory = RouteMemory::default();
        let (sent, remembered) = outgoing(&planned, Some(5), &mut signer);
        assert_ne!(sent.to_json(), planned.to_json(), "the index goes out signed");
        memory.wrote("index".into(), remembered.unwrap(), Some("41".into()));
        // The next pass plans the same (unsigned) index; the cache shows the version our write got, or nothing yet.
        assert!(memory.is_own_write("index", &planned.to_json(), Some(Some("41".into()))));
        assert!(memory.is_own_write("index", &planned.to_json(), None));
        // Someone else's version is not ours: written again.
        assert!(!memory.is_own_write("index", &planned.to_json(), Some(Some("42".into()))));
    }
}
