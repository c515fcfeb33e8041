//! `jpki-access agent`: enforces one environment's published allowlist with nftables on an edge node, and reports.
//!
//! - **Only a verified set.** The agent reads the signed `AccessAllowlist` index and its shards of its environment
//!   (`crate::wire::allowlist`) and accepts a set only when the signature holds with the public key of its own
//!   configuration, every shard matches the digest the index announces, every CIDR passes the forms' own rules
//!   (never `/0`, never a special-purpose range) and at least one port is named. A set with a serial older than the
//!   one in force (a replay) is refused too. A refused set changes nothing: the last good set stays in force, and
//!   the refusal is reported (report, metric, log).
//! - **Fail closed at boot.** Before it talks to the API server, the agent enforces the last verified set it
//!   persisted on the node (`state`, verified again), or, with none, drops the protected ports of its configuration
//!   for every source until a verified set arrives. A node that reboots while the API server is unreachable never
//!   comes up open.
//! - **Changes go as deltas, atomically.** When only set elements change (the ports and destinations stay), the
//!   networks that differ go to the kernel as one nfnetlink batch (`netlink`, `delta`): the kernel applies it all or
//!   nothing, and refuses it whole if the table is not what the agent believes (an element to delete is missing, one
//!   to add is there), and the agent then replaces the table. Anything else (first apply, new ports, a large change,
//!   a refused batch) is a **full atomic replace**: the whole ruleset in one `nft -f` transaction, so there is no
//!   moment without rules, and a failed apply leaves the previous rules in force (`nft` calls time out; see `nft`).
//!   No set is ever dumped on the change path (with nft 1.0.x an `add element`, and even `list chain`, dump every
//!   element of the table's sets first; see BENCHMARKS.md).
//! - What was applied is known without a dump: a tag (digest, serial, ports, destinations) is the one element of the
//!   table's `applied` set (its key a hash of the tag, the tag its comment), replaced in the same batch as the
//!   elements, and asked for with a netlink point query.
//! - **Ports and destinations** are those of the signed set plus those of the agent's configuration: the
//!   configuration's are always filtered, even before any set arrives.
//! - **Heartbeat and report**: a Lease per node and environment, renewed every heartbeat period, carrying the typed
//!   report (`crate::wire::report`); `/readyz` is ready only while a set is in force and nft works.
//! - Drift: on every resync the agent asks for its tag (a point query) and lists its table in a task of its own,
//!   off the change path, and compares it with what it applied (`drift`); a change made by hand is replaced and
//!   reported.

pub mod delta;
pub mod drift;
pub mod http;
pub mod netlink;
pub mod nft;
pub mod state;
pub mod uninstall;

use crate::api::allowlist::{AccessAllowlist, AccessAllowlistShard, AllowlistPurpose};
use crate::api::environment::{FirewallPort, Protocol};
use crate::planner::children::{ALLOWLIST_LABEL, ENVIRONMENT_LABEL};
use crate::planner::nft::{Rules, SET_APPLIED, render, render_removal, table_name, tag_key};
use crate::wire::allowlist::{Expected, Refusal, VerifiedSet, assemble, index_name};
use crate::wire::report::{AgentReport, Enforcing, RefusedSet, lease_body, lease_name};
use crate::wire::signing::PublicKey;
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use state::StoredSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a set that may be in the middle of being written (a shard newer than its index) is waited for before
/// it counts as refused.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: String,
    pub namespace: String,
    pub node: String,
    /// Apply inside this network namespace (`ip netns exec`), for tests; production agents use the host's.
    pub netns: Option<String>,
    pub nft: PathBuf,
    pub nft_timeout: Duration,
    /// Above this many changed elements the table is replaced whole (`--max-delta-elements`).
    pub max_delta_elements: usize,
    pub remove_on_exit: bool,
    /// The agent's own DaemonSet (namespace, name): when it was deleted, stopping removes the table and the
    /// persisted set (see [`uninstall`]).
    pub owner_daemonset: Option<(String, String)>,
    pub resync: Duration,
    /// How often the Lease is renewed.
    pub heartbeat: Duration,
    /// Test hook: while this file exists, the rendered ruleset gets a line nft refuses.
    pub break_file: Option<PathBuf>,
    /// The key that verifies the controller's signatures (from the agent's configuration).
    pub public_key: PublicKey,
    /// Where the last verified set is kept across restarts.
    pub state_dir: PathBuf,
    /// Ports always filtered, before any set arrives and whatever the set names.
    pub protected_ports: Vec<FirewallPort>,
    /// Forward destinations always judged, added to the set's.
    pub forward_destinations: Vec<IpNet>,
    /// Address of /healthz, /readyz and /metrics.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the API server: {0}")]
    Client(#[source] kube::Error),
    #[error("HTTP endpoint on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Client(_) => "client",
            Error::Listen(..) => "listen",
        }
    }
}

/// What the agent wants the kernel to enforce.
#[derive(Debug, Clone)]
enum Target {
    /// No verified set: the protected ports dropped for every source.
    Closed,
    Set {
        set: VerifiedSet,
        source: Enforcing,
        stored: Box<StoredSet>,
    },
}

/// What `target` puts in force, before it is applied.
#[derive(Debug, Clone)]
struct Planned {
    tag: String,
    /// The ports and destinations as text (see [`InForce::shape`]).
    shape: String,
    cidrs: Vec<IpNet>,
    forward: Vec<IpNet>,
    ports: Vec<FirewallPort>,
}

/// What the kernel enforces, as the agent applied it.
#[derive(Debug, Clone)]
struct InForce {
    tag: String,
    /// The ports and destinations as text: a change that keeps them changes set elements only.
    shape: String,
    cidrs: Vec<IpNet>,
    forward: Vec<IpNet>,
    enforcing: Enforcing,
    serial: i64,
}

struct Agent {
    settings: Settings,
    nft: nft::Nft,
    shared: Arc<http::Shared>,
    report: AgentReport,
    in_force: Option<InForce>,
    /// The kernel's tag as last read (None: no table of ours, or unreadable).
    kernel_tag: Option<String>,
    /// The shape of the table as applied (without elements), for the drift check, and the ports and destinations
    /// it was taken for: a change of elements alone keeps it, so it is listed again only when they change.
    fingerprint: Option<(String, String)>,
    netlink: netlink::Netlink,
    /// A refusal that may be a set in the middle of being written, and since when.
    in_flight: Option<(String, Instant)>,
}

fn ports_text(ports: &[FirewallPort]) -> String {
    ports.iter().map(|p| format!("{}/{}", if p.protocol == Protocol::Udp { "UDP" } else { "TCP" }, p.port)).collect::<Vec<_>>().join(",")
}

fn now_text() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Agent {
    fn table(&self) -> String {
        table_name(&self.settings.environment)
    }

    /// What `target` puts in force: ports and destinations of the set plus the configuration's, and the tag.
    fn plan(&self, target: &Target) -> Planned {
        let mut ports = self.settings.protected_ports.clone();
        let mut forward = self.settings.forward_destinations.clone();
        let cidrs = match target {
            Target::Closed => Vec::new(),
            Target::Set { set, .. } => {
                ports.extend(set.ports.iter().cloned());
                forward.extend(set.forward_destinations.iter().copied());
                set.cidrs.clone()
            }
        };
        ports.sort_by_key(|p| (p.protocol == Protocol::Udp, p.port));
        ports.dedup();
        let forward = crate::planner::hold::sorted_aggregate(&forward);
        let fwd_text = forward.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let shape = format!("ports {} forward {fwd_text}", ports_text(&ports));
        // nft limits a comment to 128 characters: the whole state (set digest, serial, ports, destinations) goes in
        // as a digest of its description, with the set's digest and serial shortened for people.
        let state = |what: String| crate::domain::digest::digest_bytes(what.as_bytes())["sha256:".len()..][..16].to_string();
        let tag = match target {
            Target::Closed => format!("jpki-access closed state {}", state(format!("closed {shape}"))),
            Target::Set { set, .. } => format!(
                "jpki-access digest {} serial {} state {}",
                &set.digest[..set.digest.len().min(23)],
                set.serial,
                state(format!("{} {} {shape}", set.digest, set.serial))
            ),
        };
        Planned { tag, shape, cidrs, forward, ports }
    }

    /// The whole ruleset of `planned`, for a full atomic replace.
    fn ruleset(&self, planned: &Planned) -> String {
        let split4 = |nets: &[IpNet]| nets.iter().filter_map(|c| if let IpNet::V4(n) = c { Some(*n) } else { None }).collect::<Vec<_>>();
        let split6 = |nets: &[IpNet]| nets.iter().filter_map(|c| if let IpNet::V6(n) = c { Some(*n) } else { None }).collect::<Vec<_>>();
        let (v4, v6, f4, f6) = (split4(&planned.cidrs), split6(&planned.cidrs), split4(&planned.forward), split6(&planned.forward));
        let rules = Rules { allow_v4: &v4, allow_v6: &v6, ports: &planned.ports, forward_v4: &f4, forward_v6: &f6, tag: Some(&planned.tag) };
        let mut ruleset = render(&self.settings.environment, &rules);
        if self.settings.break_file.as_ref().is_some_and(|f| f.exists()) {
            ruleset.push_str("this line is broken on purpose (test hook)\n");
        }
        ruleset
    }

    /// The element changes from what is in force to `planned`, when they are all that changes and are few enough
    /// for one netlink batch; None when the table must be replaced whole.
    fn delta(&self, planned: &Planned) -> Option<Vec<netlink::Change>> {
        let in_force = self.in_force.as_ref()?;
        // The test hook breaks the ruleset of a full replace, so a change must take that path while it is set.
        let broken = self.settings.break_file.as_ref().is_some_and(|f| f.exists());
        if broken || in_force.shape != planned.shape || self.kernel_tag.as_deref() != Some(in_force.tag.as_str()) {
            return None;
        }
        delta::changes(&in_force.cidrs, &planned.cidrs, (&in_force.tag, &planned.tag), self.settings.max_delta_elements)
    }

    /// Whether the kernel holds the table tagged `tag` (a point query for the tag's element, nothing dumped).
    async fn kernel_holds(&self, tag: &str) -> Result<bool, netlink::NetlinkError> {
        let element = netlink::Element { key: tag_key(tag).octets().to_vec(), end: false, comment: None };
        self.netlink.holds(&self.table(), SET_APPLIED, &element).await
    }

    fn nft_failed(&mut self, what: &str, e: &nft::NftError) {
        self.fail(what, e.category(), e);
    }

    fn fail(&mut self, what: &str, category: &'static str, e: &dyn std::fmt::Display) {
        self.shared.metrics.nft_failures.get_or_create(&http::ReasonLabel { reason: category }).inc();
        self.report.error = format!("{what}: {e}");
        self.report.ready = false;
        self.shared.set_ready(Some(format!("{what}: {e}")));
    }

    /// Puts `target` in force unless the kernel already holds it; false when nft failed (the previous rules stay).
    /// A change of set elements alone goes as one netlink batch of the elements that differ; anything else, or a
    /// batch the kernel refuses, is a full atomic replace.
    async fn enforce(&mut self, target: &Target) -> bool {
        let planned = self.plan(target);
        let (enforcing, digest, serial) = match target {
            Target::Closed => (Enforcing::Closed, String::new(), 0),
            Target::Set { set, source, .. } => (*source, set.digest.clone(), set.serial),
        };
        let tag = planned.tag.clone();
        if self.kernel_tag.as_deref() != Some(tag.as_str()) || self.in_force.is_none() {
            if self.kernel_tag.as_deref() == Some(tag.as_str()) {
                tracing::info!(tag = %tag, "the kernel already enforces this; nothing to apply");
            } else {
                let changes = self.delta(&planned);
                let elements = changes.as_ref().map_or(0, |d| d.iter().map(|c| c.elements.len()).sum::<usize>());
                let by_delta = match changes {
                    Some(changes) => match self.netlink.apply(&self.table(), &changes).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "the element changes were refused; replacing the whole table instead");
                            self.shared.metrics.nft_failures.get_or_create(&http::ReasonLabel { reason: e.category() }).inc();
                            false
                        }
                    },
                    None => false,
                };
                if !by_delta {
                    let ruleset = self.ruleset(&planned);
                    if let Err(e) = self.nft.apply(&ruleset).await {
                        tracing::error!(error = %e, "apply failed; the previous rules stay in force");
                        self.nft_failed("apply", &e);
                        return false;
                    }
                }
                self.shared.metrics.applies.inc();
                let how = if by_delta { "changed elements" } else { "replaced the table" };
                match target {
                    Target::Closed => {
                        tracing::info!(ports = %tag, how, "applied closed: the protected ports are dropped for every source until a verified set arrives")
                    }
                    Target::Set { set, source, .. } => {
                        tracing::info!(digest = %set.digest, serial = set.serial, cidrs = set.cidrs.len(), source = ?source, how, elements, "applied")
                    }
                }
                self.kernel_tag = Some(tag.clone());
                // The shape as applied, from a terse listing (no elements; with nft 1.0.x still a set dump, so only
                // when the ports or destinations changed: a change of elements keeps the shape).
                if self.fingerprint.as_ref().is_none_or(|(shape, _)| *shape != planned.shape) {
                    self.fingerprint = self
                        .nft
                        .list(&self.table(), true)
                        .await
                        .ok()
                        .and_then(|json| drift::parse_listing(&json).ok())
                        .map(|l| (planned.shape.clone(), l.fingerprint));
                }
            }
        }
        let m = &self.shared.metrics;
        m.enforcing.clear();
        m.enforcing.get_or_create(&http::StateLabel { state: enforcing_label(enforcing) }).set(1);
        m.enforced_serial.set(serial);
        let changed = self.in_force.as_ref().is_none_or(|f| f.tag != tag || f.enforcing != enforcing);
        m.enforced_cidrs.set(planned.cidrs.len() as i64);
        self.in_force = Some(InForce { tag, shape: planned.shape, cidrs: planned.cidrs, forward: planned.forward, enforcing, serial });
        self.report.enforcing = enforcing;
        self.report.applied_digest = digest;
        self.report.applied_serial = serial;
        self.report.error = String::new();
        self.report.ready = true;
        self.shared.set_ready(None);
        if let Target::Set { stored, source: Enforcing::Verified, .. } = target
            && changed
            && let Err(e) = state::save(&self.settings.state_dir, &self.settings.environment, stored)
        {
            // The set is in force; only the boot path loses it. Said loudly, not fatal.
            tracing::error!(error = %e, "cannot persist the verified set; after a reboot without the API server this node would start closed");
            self.report.error = format!("persist: {e}");
        }
        true
    }

    /// A published set was refused: keep what is in force, say why (once per distinct refusal).
    fn refuse(&mut self, refusal: &Refusal) {
        let message = refusal.to_string();
        if self.report.refused.as_ref().is_some_and(|r| r.message == message) {
            return;
        }
        tracing::warn!(reason = refusal.category(), refusal = %message, "published allowlist refused; the set in force stays");
        self.shared.metrics.refused.get_or_create(&http::ReasonLabel { reason: refusal.category() }).inc();
        self.report.refused = Some(RefusedSet { reason: refusal.category().to_string(), message, at: now_text() });
    }

    /// Judges what the API server publishes now and enforces it if it is a good, newer set.
    async fn evaluate(&mut self, index: Option<&AccessAllowlist>, shards: &HashMap<String, Arc<AccessAllowlistShard>>) {
        let expected = Expected { namespace: &self.settings.namespace, environment: &self.settings.environment, purpose: AllowlistPurpose::Enforce };
        let result = assemble(expected, index, |name| shards.get(name).map(|s| &**s), &self.settings.public_key).and_then(|set| {
            let enforced = self.in_force.as_ref().map_or(0, |f| f.serial);
            if set.serial < enforced { Err(Refusal::Older { index: index_name(&self.settings.environment), found: set.serial, enforced }) } else { Ok(set) }
        });
        match (result, index) {
            (Ok(set), Some(index)) => {
                self.in_flight = None;
                let stored =
                    StoredSet { index: index.clone(), shards: index.spec.shards.iter().filter_map(|r| shards.get(&r.name).map(|s| (**s).clone())).collect() };
                let target = Target::Set { set, source: Enforcing::Verified, stored: Box::new(stored) };
                if self.enforce(&target).await {
                    self.report.refused = None;
                }
            }
            (Ok(_), None) => {}
            (Err(refusal), _) => self.judge_refusal(&refusal),
        }
    }

    fn judge_refusal(&mut self, refusal: &Refusal) {
        match refusal {
            refusal if refusal.may_be_in_flight() => {
                let since = match &self.in_flight {
                    Some((message, since)) if *message == refusal.to_string() => *since,
                    _ => {
                        self.in_flight = Some((refusal.to_string(), Instant::now()));
                        Instant::now()
                    }
                };
                if since.elapsed() >= IN_FLIGHT_GRACE {
                    self.refuse(refusal);
                } else {
                    tracing::info!(reason = %refusal, "allowlist not complete yet; keeping the current rules");
                }
            }
            refusal => {
                self.in_flight = None;
                self.refuse(refusal);
            }
        }
    }

    /// The resync's drift check, first part: asks the kernel for the tag of what is in force (a point query), and
    /// starts listing the whole table in a task of its own, so that the listing (a set dump with nft 1.0.x, seconds
    /// at a million CIDRs) never holds up an apply. [`Agent::finish_drift_check`] judges the listing.
    async fn start_drift_check(&mut self, done: &tokio::sync::mpsc::Sender<(String, Result<String, String>)>) {
        let Some(in_force) = self.in_force.clone() else {
            return;
        };
        match self.kernel_holds(&in_force.tag).await {
            Ok(true) => self.kernel_tag = Some(in_force.tag.clone()),
            Ok(false) => {
                tracing::warn!(tag = %in_force.tag, "the kernel's table is not the one applied (flushed or replaced?); applying again");
                self.drifted("table replaced or removed (the tag of the set applied is gone)".into());
                return;
            }
            Err(e) => {
                self.fail("read the applied tag", e.category(), &e);
                return;
            }
        }
        let (nft, table, done) = (self.nft.clone(), self.table(), done.clone());
        tokio::spawn(async move {
            let listing = nft.list(&table, false).await.map_err(|e| e.to_string());
            let _ = done.send((in_force.tag, listing)).await;
        });
    }

    /// The resync's drift check, second part: compares the listing started for `tag` with what is in force, unless
    /// something else was applied since (the listing may then show either).
    fn finish_drift_check(&mut self, tag: &str, listing: Result<String, String>) {
        let Some(in_force) = self.in_force.clone().filter(|f| f.tag == tag) else {
            return;
        };
        match listing.and_then(|json| drift::parse_listing(&json)) {
            Ok(listed) => {
                let found = drift::compare(&listed, &in_force.cidrs, &in_force.forward, self.fingerprint.as_ref().map(|(_, f)| f.as_str()));
                if found.is_none() {
                    self.fingerprint.get_or_insert((in_force.shape, listed.fingerprint));
                } else {
                    tracing::warn!(drift = %found, "the kernel's table differs from the set applied (changed by hand?); replacing it");
                    self.drifted(found.to_string());
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the table to check it for drift; will retry on the next resync"),
        }
    }

    fn drifted(&mut self, what: String) {
        self.shared.metrics.drift.inc();
        self.report.drift = format!("{}: {what}; replaced", now_text());
        self.kernel_tag = None;
        self.in_force = None;
    }
}

fn enforcing_label(e: Enforcing) -> &'static str {
    match e {
        Enforcing::Nothing => "nothing",
        Enforcing::Closed => "closed",
        Enforcing::Persisted => "persisted",
        Enforcing::Verified => "verified",
    }
}

/// The boot path: the persisted set (verified again) or closed, applied before the API server is contacted.
async fn boot(agent: &mut Agent) -> Target {
    let s = &agent.settings;
    let expected = Expected { namespace: &s.namespace, environment: &s.environment, purpose: AllowlistPurpose::Enforce };
    let target = match state::load(&s.state_dir, &s.environment) {
        Ok(Some(stored)) => {
            let shards: HashMap<&str, &AccessAllowlistShard> = stored.shards.iter().filter_map(|sh| Some((sh.metadata.name.as_deref()?, sh))).collect();
            match assemble(expected, Some(&stored.index), |n| shards.get(n).copied(), &s.public_key) {
                Ok(set) => {
                    tracing::info!(digest = %set.digest, serial = set.serial, "boot: enforcing the last verified set persisted on this node");
                    Target::Set { set, source: Enforcing::Persisted, stored: Box::new(stored) }
                }
                Err(refusal) => {
                    tracing::error!(refusal = %refusal, file = %state::path(&s.state_dir, &s.environment).display(), "boot: the persisted set does not verify; starting closed");
                    agent.refuse(&refusal);
                    Target::Closed
                }
            }
        }
        Ok(None) => {
            tracing::info!("boot: no persisted set; the protected ports are dropped for every source until a verified set arrives");
            Target::Closed
        }
        Err(e) => {
            tracing::error!(error = %e, "boot: cannot read the persisted set; starting closed");
            Target::Closed
        }
    };
    // Whether the kernel holds it already (an agent restarted on a running node): then nothing is applied.
    let tag = agent.plan(&target).tag;
    match agent.kernel_holds(&tag).await {
        Ok(held) => agent.kernel_tag = held.then_some(tag),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the kernel's table; nftables missing or failing?");
            agent.fail("read the applied tag", e.category(), &e);
        }
    }
    agent.enforce(&target).await;
    target
}

/// A reflector over `api` with `config`; pokes `changed` on every event and sets `synced` once the first list is
/// in; the stream is spawned.
fn watch<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>, synced: Arc<AtomicBool>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let ready = store.clone();
    let poke = changed.clone();
    tokio::spawn(async move {
        if ready.wait_until_ready().await.is_ok() {
            synced.store(true, Ordering::SeqCst);
            poke.notify_one();
        }
    });
    let stream = reflector::reflector(writer, watcher(api, config)).backoff(crate::watch::backoff(Duration::from_secs(5))).for_each(move |event| {
        if let Err(e) = &event {
            tracing::warn!(error = %e, "watch error (rules stay as they are); retrying");
        }
        changed.notify_one();
        async {}
    });
    tokio::spawn(stream);
    store
}

pub async fn run(settings: Settings) -> Result<(), Error> {
    let shared = Arc::new(http::Shared::default());
    shared.set_ready(Some("starting".into()));
    if let Some(listen) = settings.listen {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| Error::Listen(listen, e))?;
        tokio::spawn(http::serve(listener, shared.clone()));
    }
    let nft = nft::Nft { program: settings.nft.clone(), netns: settings.netns.clone(), timeout: settings.nft_timeout };
    let report = AgentReport { environment: settings.environment.clone(), node: settings.node.clone(), ..Default::default() };
    let netlink = netlink::Netlink { netns: settings.netns.clone(), timeout: settings.nft_timeout };
    let mut agent = Agent { settings: settings.clone(), nft, netlink, shared, report, in_force: None, kernel_tag: None, fingerprint: None, in_flight: None };
    let (drift_done, mut drift_listed) = tokio::sync::mpsc::channel(1);
    tracing::info!(environment = %settings.environment, node = %settings.node, key = %settings.public_key.fingerprint(), "agent started");
    boot(&mut agent).await;

    let client = Client::try_default().await.map_err(Error::Client)?;
    let changed = Arc::new(Notify::new());
    let env = &settings.environment;
    let (index_synced, shards_synced) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let index_store: Store<AccessAllowlist> = watch(
        Api::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", index_name(env))),
        changed.clone(),
        index_synced.clone(),
    );
    let shard_store: Store<AccessAllowlistShard> = watch(
        Api::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default().labels(&format!("{ENVIRONMENT_LABEL}={env},{ALLOWLIST_LABEL}=shard")),
        changed.clone(),
        shards_synced.clone(),
    );
    let owner = settings.owner_daemonset.as_ref().map(|(namespace, name)| uninstall::OwnerWatch::start(client.clone(), namespace, name));
    let leases: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let manager = format!("jpki-access-agent/{}", settings.node);
    let lease_seconds = i32::try_from(settings.heartbeat.as_secs().saturating_mul(3).max(1)).unwrap_or(i32::MAX);

    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + settings.resync, settings.resync);
    let mut last_written: Option<AgentReport> = None;
    let mut last_renewal = Instant::now().checked_sub(settings.heartbeat * 2).unwrap_or_else(Instant::now);
    loop {
        let (mut judge, mut beat) = (true, false);
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
            _ = heartbeat.tick() => (judge, beat) = (agent.in_force.is_none(), true),
            _ = resync.tick() => agent.start_drift_check(&drift_done).await,
            Some((tag, listing)) = drift_listed.recv() => {
                agent.finish_drift_check(&tag, listing);
                judge = agent.in_force.is_none(); // drifted: apply again now

            }
            // A set waiting to be complete is judged again when its grace ends.
            _ = tokio::time::sleep(IN_FLIGHT_GRACE), if agent.in_flight.is_some() => {}
        }
        if !judge {
            // A heartbeat alone: renew the Lease below.
        } else if index_synced.load(Ordering::SeqCst) && shards_synced.load(Ordering::SeqCst) {
            let index = index_store.get(&ObjectRef::new(&index_name(env)).within(&settings.namespace));
            let shards: HashMap<String, Arc<AccessAllowlistShard>> =
                shard_store.state().into_iter().filter_map(|s| Some((s.metadata.name.clone()?, s))).collect();
            agent.evaluate(index.as_deref(), &shards).await;
        } else if agent.in_force.is_none() {
            // Still nothing in force (nft failed at boot): try the boot target again.
            boot(&mut agent).await;
        }
        let due = beat || last_renewal.elapsed() >= settings.heartbeat;
        if due || last_written.as_ref() != Some(&agent.report) {
            let body = lease_body(&settings.namespace, &agent.report, jiff::Timestamp::now(), lease_seconds);
            match leases.patch(&lease_name(env, &settings.node), &PatchParams::apply(&manager).force(), &Patch::Apply(&body)).await {
                Ok(_) => {
                    last_written = Some(agent.report.clone());
                    last_renewal = Instant::now();
                }
                Err(e) => {
                    agent.shared.metrics.heartbeat_failures.inc();
                    tracing::warn!(error = %e, "heartbeat not written; will retry");
                }
            }
        }
    }
    let uninstalled = owner.as_ref().filter(|o| o.on_stop() == uninstall::OnStop::Remove);
    if let Some(owner) = uninstalled {
        tracing::info!(daemonset = %format!("{}/{}", owner.namespace, owner.name), "the agent's DaemonSet was deleted (uninstall): removing the table and the persisted set");
        if let Err(e) = state::forget(&settings.state_dir, &settings.environment) {
            tracing::error!(error = %e, "cannot delete the persisted set");
        }
    }
    if settings.remove_on_exit || uninstalled.is_some() {
        if settings.remove_on_exit {
            tracing::info!("removing the table (--remove-on-exit)");
        }
        if let Err(e) = agent.nft.apply(&render_removal(&settings.environment)).await {
            tracing::error!(error = %e, "removal failed");
        }
    } else {
        tracing::info!("stopping; the rules stay in force");
    }
    Ok(())
}
