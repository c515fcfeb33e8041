//! The published allowlist, on the controller's side: signing what the planner planned as it is written, and
//! noticing when what is stored is not what the controller wrote (a forged or altered index or shard, an old set
//! put back, an index deleted). What it finds is reported (a Warning Event `AllowlistTampered` on the
//! AccessEnvironment, the metric `jpki_access_allowlist_tampering_total`, the condition `AllowlistIntact`), and the
//! same pass writes the planned set again, signed with a newer serial.
//!
//! Detection reads the caches first; only when they show a set that does not verify does it read the objects from
//! the API server itself, at the start of a pass when none of the controller's own writes is in flight, so a cache
//! that lags behind the controller's last writes is never taken for tampering.

use super::stores::Stores;
use crate::api::allowlist::{AccessAllowlist, AccessAllowlistShard, AllowlistPurpose};
use crate::planner::children::{ALLOWLIST_LABEL, ENVIRONMENT_LABEL};
use crate::wire::allowlist::{Expected, Refusal, assemble, sign};
use crate::wire::signing::{PublicKey, SigningKey};
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The controller's key and the serials it has used.
pub struct Signer {
    key: Arc<SigningKey>,
    public: PublicKey,
    /// No serial at or below this is issued: the highest serial seen on a stored index or reported by an agent.
    floor: i64,
}

impl Signer {
    pub fn new(key: Arc<SigningKey>) -> Self {
        let public = key.public_key();
        Signer { key, public, floor: 0 }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Raises the floor (agents' applied serials, stored serials).
    pub fn saw_serial(&mut self, serial: i64) {
        self.floor = self.floor.max(serial);
    }

    /// The planned (unsigned) index, with a serial above everything seen and the current time in milliseconds, and
    /// its signature.
    pub fn sign(&mut self, planned: &AccessAllowlist, stored_serial: Option<i64>) -> AccessAllowlist {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let serial = now_ms.max(stored_serial.unwrap_or(0).saturating_add(1)).max(self.floor.saturating_add(1));
        self.floor = serial;
        let mut signed = planned.clone();
        signed.spec.serial = serial;
        sign(signed.metadata.namespace.as_deref().unwrap_or_default(), &mut signed.spec, &self.key);
        signed
    }

    /// Whether `stored` is a valid signature of exactly what is planned (serial aside).
    pub fn stored_matches(&self, stored: &AccessAllowlist, planned: &AccessAllowlist) -> bool {
        let namespace = stored.metadata.namespace.as_deref().unwrap_or_default();
        let mut comparable = stored.spec.clone();
        comparable.serial = planned.spec.serial;
        comparable.signature = planned.spec.signature.clone();
        comparable == planned.spec && crate::wire::allowlist::verify_signature(namespace, &stored.spec, &self.public).is_ok()
    }
}

/// The reason of a [`Tampering`] that finds an older signed set than one already published.
pub const REPLAYED: &str = "replayed";

/// Something found stored that the controller did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampering {
    pub environment: String,
    /// `Refusal::category`, or `deleted`.
    pub reason: &'static str,
    pub message: String,
    /// For `replayed`: the newer serial published before (what a person names to accept a restored store).
    pub newer_serial: Option<i64>,
}

/// What the controller has seen verified, to tell a deletion or a replay from a first publication.
#[derive(Default)]
pub struct Guard {
    /// Indexes seen verified at least once (namespace, name).
    seen: BTreeSet<(String, String)>,
    /// The highest verified serial seen per index.
    serials: HashMap<(String, String), i64>,
}

/// Where an environment's published sets are: (namespace, environment, purposes the plan writes).
pub struct Published<'a> {
    pub namespace: &'a str,
    pub environment: &'a str,
    pub purposes: Vec<AllowlistPurpose>,
    /// The environment's status names a published digest: a set was published before this process started, so a
    /// missing index is a deletion, not a first publication.
    pub published_before: bool,
    /// The highest serial an agent of the environment reports enforcing: a stored index below it is an old set put
    /// back, even when this process never saw the newer one.
    pub enforced_serial: i64,
}

impl Guard {
    /// Checks every environment's published sets; `suspect` names environments whose previous writes failed (their
    /// sets may be half-written by the controller itself, so only what cannot be that is reported).
    pub async fn check(&mut self, client: &Client, stores: &Stores, public: &PublicKey, all: &[Published<'_>], suspect: &BTreeSet<String>) -> Vec<Tampering> {
        let mut found = Vec::new();
        for p in all {
            for purpose in &p.purposes {
                if let Some(t) = self.check_one(client, stores, public, p, *purpose, suspect.contains(p.environment)).await {
                    found.push(t);
                }
            }
        }
        found
    }

    /// The highest serial seen verified on any index (the signer's floor after a restart).
    pub fn max_serial(&self) -> i64 {
        self.serials.values().copied().max().unwrap_or(0)
    }

    async fn check_one(
        &mut self,
        client: &Client,
        stores: &Stores,
        public: &PublicKey,
        p: &Published<'_>,
        purpose: AllowlistPurpose,
        suspect: bool,
    ) -> Option<Tampering> {
        let name = match purpose {
            AllowlistPurpose::Enforce => crate::wire::allowlist::index_name(p.environment),
            AllowlistPurpose::HoldBaseline => crate::wire::allowlist::baseline_name(p.environment),
        };
        let key = (p.namespace.to_string(), name.clone());
        let expected = Expected { namespace: p.namespace, environment: p.environment, purpose };
        let cached = stores.allowlists.get(&ObjectRef::new(&name).within(p.namespace));
        let cached_shards: HashMap<String, Arc<AccessAllowlistShard>> = cached
            .iter()
            .flat_map(|i| i.spec.shards.iter())
            .filter_map(|r| Some((r.name.clone(), stores.shards.get(&ObjectRef::new(&r.name).within(p.namespace))?)))
            .collect();
        let cached_result = assemble(expected, cached.as_deref(), |n| cached_shards.get(n).map(|s| &**s), public);
        let seen_serial = self.serials.get(&key).copied().unwrap_or(0).max(if purpose == AllowlistPurpose::Enforce { p.enforced_serial } else { 0 });
        let seen_before = self.seen.contains(&key) || (purpose == AllowlistPurpose::Enforce && p.published_before);
        match &cached_result {
            Ok(set) if set.serial >= seen_serial => {
                self.seen.insert(key.clone());
                self.serials.insert(key, set.serial);
                return None;
            }
            Err(Refusal::NoIndex(_)) if !seen_before => return None,
            _ => {}
        }
        // The cache disagrees: ask the API server itself.
        let live = read_live(client, p.namespace, p.environment, &name).await;
        let (index, shards) = match live {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(index = %name, error = %e, "cannot read the published set to check it; will check again");
                return None;
            }
        };
        let by_name: BTreeMap<&str, &AccessAllowlistShard> = shards.iter().filter_map(|s| Some((s.metadata.name.as_deref()?, s))).collect();
        let result = assemble(expected, index.as_ref(), |n| by_name.get(n).copied(), public);
        let tampering = |reason: &'static str, message: String| Some(Tampering { environment: p.environment.to_string(), reason, message, newer_serial: None });
        match result {
            Ok(set) if set.serial >= seen_serial => {
                self.seen.insert(key.clone());
                self.serials.insert(key, set.serial);
                None
            }
            Ok(set) => Some(Tampering {
                environment: p.environment.to_string(),
                reason: REPLAYED,
                message: format!(
                    "{}/{name} holds serial {}, older than serial {seen_serial} already published: an old signed set was put back, or the API \
                     server's storage was restored from a backup (decisions made since may be undone)",
                    p.namespace, set.serial
                ),
                newer_serial: Some(seen_serial),
            }),
            Err(Refusal::NoIndex(_)) if seen_before => tampering("deleted", format!("{}/{name} was deleted by someone other than the controller", p.namespace)),
            Err(Refusal::NoIndex(_)) => None,
            Err(r) if suspect && r.may_be_in_flight() => None,
            Err(r) => tampering(r.category(), format!("{}/{name}: {r}", p.namespace)),
        }
    }
}

/// The index and the environment's shards, read from the API server (not the cache).
async fn read_live(
    client: &Client,
    namespace: &str,
    environment: &str,
    name: &str,
) -> Result<(Option<AccessAllowlist>, Vec<AccessAllowlistShard>), kube::Error> {
    let index = Api::<AccessAllowlist>::namespaced(client.clone(), namespace).get_opt(name).await?;
    let shards = Api::<AccessAllowlistShard>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{ENVIRONMENT_LABEL}={environment},{ALLOWLIST_LABEL}")))
        .await?
        .items;
    Ok((index, shards))
}
