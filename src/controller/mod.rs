//! `jpki-access controller`: resolve (caches) → validate and plan (pure, `crate::planner`) → apply → status.
//!
//! The planner is a function of every object at once (conflicts span verifiers; an allowlist aggregates a whole
//! environment), so the controller runs level-triggered passes over everything: any watch event, a due retry, the
//! next instant the plan says something changes (a start, an end, a supersession), or a periodic resync starts
//! a pass, debounced. A pass writes only what differs from the caches, so an idle system writes nothing.
//! Only the holder of the Lease writes; followers keep warm caches for a fast takeover.

pub mod apply;
pub mod edge;
pub mod events;
pub mod fencing;
pub mod http;
pub mod metrics;
pub mod published;
pub mod records;
pub mod rollback;
pub mod stores;
pub mod written;

use crate::planner::memo::Memo;
use crate::planner::{PlanInput, plan_environments_with};
use apply::{Backoff, RouteMemory, Writes};
use futures::StreamExt;
use kube::Client;
use kube::ResourceExt;
use metrics::{EnvironmentLabel, KindLabel, Metrics, PhaseLabel, PlannedLabel, ResultLabel, StepLabel, WriteLabel};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Settings of `jpki-access controller`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub leader_election: bool,
    pub listen: std::net::SocketAddr,
    /// Added to the wall clock (tests move time with it; 0 in production).
    pub clock_offset: jiff::SignedDuration,
    pub resync: Duration,
    pub debounce: Duration,
    /// Signs the published allowlists.
    pub signing_key: Arc<crate::wire::signing::SigningKey>,
}

/// The injected clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub offset: jiff::SignedDuration,
}

impl Clock {
    pub fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now().checked_add(self.offset).unwrap_or(jiff::Timestamp::MAX)
    }
}

/// State shared with the HTTP endpoints.
#[derive(Default)]
pub struct Shared {
    pub metrics: Metrics,
    pub synced: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the API server: {0}")]
    Client(#[source] kube::Error),
    #[error("the CRDs of access.jpki.dev are not installed ({0}); install them with `jpki-access crd | kubectl apply --server-side -f -`")]
    MissingCrds(#[source] kube::Error),
    #[error("leader election: {0}")]
    Lease(String),
    #[error("HTTP endpoint on {0}: {1}")]
    Listen(std::net::SocketAddr, #[source] std::io::Error),
}

/// Runs the controller until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let client = Client::try_default().await.map_err(Error::Client)?;
    check_crds(&client).await?;
    let shared = Arc::new(Shared::default());
    let listener = tokio::net::TcpListener::bind(settings.listen).await.map_err(|e| Error::Listen(settings.listen, e))?;
    tokio::spawn(http::serve(listener, shared.clone()));

    let changed = Arc::new(Notify::new());
    let (stores, watches) = stores::start(&client, changed.clone());
    tokio::spawn(watches.for_each(|()| async {}));
    stores.wait_synced().await;
    shared.synced.store(true, Ordering::SeqCst);
    tracing::info!("caches synced");

    // Without leader election this replica always leads; the sender must outlive the loop (a closed channel
    // would wake it at once, forever).
    let (_always_leader, always_leader_rx) = tokio::sync::watch::channel(true);
    let (leader_rx, lease_task) = if settings.leader_election {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.lease_namespace)
            .with_identity(&settings.identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await
            .map_err(|e| Error::Lease(e.to_string()))?;
        let (rx, task) = manager.watch().await;
        (rx, Some(task))
    } else {
        (always_leader_rx, None)
    };

    let mut reconciler = Reconciler {
        client: client.clone(),
        stores,
        clock: Clock { offset: settings.clock_offset },
        shared: shared.clone(),
        recorder: events::recorder(&client, &settings.identity),
        backoff: Backoff::default(),
        routes: RouteMemory::default(),
        reported_unreadable: BTreeSet::new(),
        memo: Memo::default(),
        written: written::Written::default(),
        edge: edge::Edge::new(published::Signer::new(settings.signing_key.clone())),
        next_transition: None,
        clock_seen: None,
        rollbacks: rollback::Rollbacks::default(),
    };
    let mut fence = settings.leader_election.then(|| fencing::Fence::new(&client, &settings.lease_namespace, &settings.lease_name, &settings.identity));
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    let mut wake_at = Instant::now();
    let mut was_leader = false;
    let mut was_relisting = false;
    let mut last_pass_start = Instant::now();
    loop {
        let leader = *leader_rx.borrow();
        if leader != was_leader {
            tracing::info!(leader, "leadership changed");
            shared.metrics.is_leader.set(i64::from(leader));
            was_leader = leader;
            // Another replica may have written meanwhile: what this one wrote before is no longer the truth.
            reconciler.written.forget();
        }
        let sleep = tokio::time::sleep_until(wake_at.into());
        let mut leader_rx_changed = leader_rx.clone();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
            _ = sleep => {}
            Ok(()) = leader_rx_changed.changed() => {}
            // Timers follow the monotonic clock, transitions the wall clock: when the wall clock jumps (NTP steps
            // it, a VM resumes from suspend), a start or end date can pass long before the timer set for it fires.
            // Looking at the wall clock every second costs nothing; a pass starts only when a transition is due.
            _ = tokio::time::sleep(CLOCK_CHECK) => {
                if !reconciler.transition_due() {
                    continue;
                }
                tracing::info!("the wall clock jumped, or reached the next transition before its timer did: a pass");
            }
        }
        // Debounce: passes start at least `debounce` apart, so a burst of watch events becomes few passes, while a
        // lone change after a quiet spell, or one that came during a pass longer than the debounce, is planned at
        // once (a fixed wait added the whole debounce, 100-200 ms, to every approval's propagation; BENCHMARKS.md).
        let since_last_start = last_pass_start.elapsed();
        if since_last_start < settings.debounce {
            tokio::time::sleep(settings.debounce - since_last_start).await;
        }
        if !*leader_rx.borrow() {
            wake_at = Instant::now() + settings.resync;
            continue;
        }
        if let Some(fence) = fence.as_mut()
            && !fence.may_write().await
        {
            tracing::warn!("the Lease is not ours (or has expired) although the lease manager has not said so yet: no pass");
            reconciler.written.forget();
            wake_at = Instant::now() + fencing::CONFIRM_EVERY;
            continue;
        }
        let relisting = reconciler.stores.relisting.now();
        if !relisting.is_empty() {
            // The end of the re-list wakes the loop again (a watch event).
            tracing::info!(?relisting, "caches are being re-listed; the pass waits for them");
            wake_at = Instant::now() + settings.resync;
            was_relisting = true;
            continue;
        }
        if std::mem::take(&mut was_relisting) {
            // The view is whole again, as after an outage of the API server: retry every write that failed
            // meanwhile now, not when its backoff says.
            reconciler.backoff = Backoff::default();
        }
        last_pass_start = Instant::now();
        let next = reconciler.pass().await;
        wake_at = next.unwrap_or(Instant::now() + settings.resync).min(Instant::now() + settings.resync);
    }
    tracing::info!("shutting down: in-flight work is done; releasing the Lease");
    drop(leader_rx);
    if let Some(task) = lease_task {
        // Dropping the receiver makes the lease task release the Lease and finish.
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(manager))) => {
                let _ = manager.release().await;
            }
            other => tracing::warn!(?other, "lease task did not finish cleanly"),
        }
    }
    Ok(())
}

async fn check_crds(client: &Client) -> Result<(), Error> {
    let api: kube::Api<crate::api::AccessEnvironment> = kube::Api::all(client.clone());
    api.list(&kube::api::ListParams::default().limit(1)).await.map(drop).map_err(Error::MissingCrds)
}

/// How long each step of a pass took, in order: logged with every pass that writes, and a histogram per step.
struct Steps(Vec<(&'static str, Duration)>, Instant);

impl Steps {
    fn new() -> Self {
        Steps(Vec::new(), Instant::now())
    }
    /// Ends the step called `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.0.push((name, now - self.1));
        self.1 = now;
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, took)) in self.0.iter().enumerate() {
            write!(f, "{}{name}={:.1}ms", if i == 0 { "" } else { " " }, took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

pub struct Reconciler {
    pub client: Client,
    pub stores: stores::Stores,
    pub clock: Clock,
    pub shared: Arc<Shared>,
    pub recorder: kube::runtime::events::Recorder,
    pub backoff: Backoff,
    pub routes: RouteMemory,
    pub reported_unreadable: BTreeSet<stores::Unreadable>,
    /// Each object's own evaluation and each registration's plan from earlier passes, reused while unchanged: the
    /// planner's work per pass then follows what changed, not the size of the fleet (see `planner::memo`).
    pub memo: Memo,
    /// What this replica last wrote of each environment's allowlist and hold baseline (the hold counts removals
    /// from it; after a start or a change of leader it comes from the caches and statuses).
    pub written: written::Written,
    /// The signing key, the tamper guard and the sets agents may still enforce.
    pub edge: edge::Edge,
    /// The wall-clock instant of the next start, end or supersession, as the last pass planned it.
    pub next_transition: Option<jiff::Timestamp>,
    /// Both clocks at the last look at the wall clock, to notice a jump.
    pub clock_seen: Option<(Instant, jiff::Timestamp)>,
    /// Environments held after the API server's storage went back in time (`rollback`).
    pub rollbacks: rollback::Rollbacks,
}

/// How often the controller looks at the wall clock for a transition its timer has not reached (a clock jump).
const CLOCK_CHECK: Duration = Duration::from_secs(1);
/// A difference between the wall clock's and the monotonic clock's progress taken for a jump (NTP slews, it does not
/// step, under 128 ms).
const CLOCK_JUMP: jiff::SignedDuration = jiff::SignedDuration::from_secs(2);

impl Reconciler {
    /// Whether the wall clock has reached the next transition the last pass planned, or jumped (either way) since
    /// the last look: set back, a start already passed may lie ahead again, which no planned transition says.
    fn transition_due(&mut self) -> bool {
        let (monotonic, wall) = (Instant::now(), self.clock.now());
        let jumped = self.clock_seen.is_some_and(|(m, w)| {
            let expected = w.checked_add(monotonic - m).unwrap_or(w);
            wall.duration_since(expected).abs() > CLOCK_JUMP
        });
        self.clock_seen = Some((monotonic, wall));
        jumped || self.next_transition.is_some_and(|t| wall >= t)
    }

    /// One pass over everything; returns when the next pass is due by itself (a transition or a retry).
    pub async fn pass(&mut self) -> Option<Instant> {
        let started = Instant::now();
        let mut steps = Steps::new();
        let snapshot = self.stores.snapshot(self.edge.signer.public_key());
        steps.mark("snapshot");
        self.report_unreadable(&snapshot).await;
        let now = self.clock.now();
        let objects = snapshot.objects();
        // The data plane first: an approval's allowlist and policies are written before every registration's
        // notice and status is planned.
        for released in self.rollbacks.accept(&objects.environments) {
            tracing::warn!(environment = %released, "a person accepted the API server's storage as it is after a rollback: published in full again");
        }
        let published = self.written.published(&snapshot.published);
        let previously_live = self.written.previously_live().clone();
        let caps = self.rollbacks.caps();
        let input = PlanInput { published: Some(&published), previously_live: Some(&previously_live), caps: Some(&caps), ..objects.input() };
        let first = plan_environments_with(&input, now, Some(&mut self.memo));
        steps.mark("plan");
        // What is stored and was not written by us is reported, then replaced by the writes below.
        let mut newly_held = false;
        for t in self.edge.check(&self.client, &self.stores, &first.plan.environments, &objects.environments).await {
            tracing::error!(environment = %t.environment, reason = t.reason, tampering = %t.message, "the published allowlist is not the one the controller wrote; writing it again");
            self.shared.metrics.tampering.get_or_create(&metrics::TamperLabel { environment: t.environment.clone(), reason: t.reason }).inc();
            if let Some(env) = objects.environments.iter().find(|e| e.name_any() == t.environment) {
                events::tampered(&self.recorder, env, &t.message).await;
            }
            if self.rollbacks.found(&t, self.written.published_cidrs(&t.environment)) {
                tracing::error!(environment = %t.environment, "the published set went back in time: held at what was published before until a person accepts");
                newly_held = true;
            }
        }
        // A hold shows in the environment's AllowlistIntact condition for as long as it lasts.
        for (name, held) in self.rollbacks.held() {
            let found = self.edge.tampered.entry(name.clone()).or_default();
            found.retain(|t| t.newer_serial.is_none());
            found.push(published::Tampering {
                environment: name.clone(),
                reason: rollback::HELD,
                message: held.message.clone(),
                newer_serial: Some(held.newer_serial),
            });
        }
        if newly_held {
            // Planned before the hold: plan again with its cap before anything is written.
            return Some(Instant::now());
        }
        // Agents report the serial they enforce: never sign below it (a clock set back must not make them refuse).
        for env in &objects.environments {
            for hb in self.stores.heartbeats(&env.name_any(), crate::planner::children::allowlist_namespace(env)) {
                if let Ok(r) = &hb.report {
                    self.edge.signer.saw_serial(r.applied_serial);
                }
            }
        }
        let mut writes = Writes::default();
        let mut failed_environments = BTreeSet::new();
        for (name, env_plan) in &first.plan.environments {
            if self.rollbacks.frozen(name) {
                failed_environments.insert(name.clone());
                continue;
            }
            if apply::apply_environment(&self.client, &self.stores, env_plan, &mut self.backoff, &mut self.routes, &mut self.edge.signer, &mut writes).await {
                self.written.wrote(name, env_plan);
            } else {
                failed_environments.insert(name.clone());
            }
        }
        self.written.retain(|name| first.plan.environments.contains_key(name));
        steps.mark("environments");
        let plan = first.finish_with(Some(&mut self.memo));
        steps.mark("plan registrations");
        // Facts first (a supersession or expiry is final once recorded), then the approvals' verdicts.
        let unreadable: BTreeSet<String> = snapshot
            .unreadable
            .iter()
            .filter(|u| u.kind == "AccessRegistration")
            .map(|u| format!("{}/{}", u.namespace.as_deref().unwrap_or_default(), u.name))
            .collect();
        records::write_records(&self.client, &self.stores, &plan, &unreadable, &mut self.backoff, &mut writes).await;
        records::write_approval_statuses(&self.client, &self.stores, &objects.approvals, &plan, now, &mut self.backoff, &mut writes).await;
        steps.mark("records");
        apply::apply_notices(&self.client, &self.stores, &self.edge.signer, &plan, &mut self.backoff, &mut writes).await;
        steps.mark("notices");
        apply::delete_stale(&self.client, &self.stores, &plan, &failed_environments, &mut writes).await;
        steps.mark("stale");

        // The edge: agents from their heartbeats, foreign policies; registrations wait for the expected agents.
        let mut observed: std::collections::BTreeMap<String, edge::Observed> = std::collections::BTreeMap::new();
        for &env in &objects.environments {
            if let Some(ep) = plan.environments.get(&env.name_any()) {
                observed.insert(ep.name.clone(), edge::observe(&self.stores, env, ep, now));
            }
        }
        let reported: BTreeSet<String> = observed.values().flat_map(|o| o.agents.enforced.values().flatten().cloned()).collect();
        self.edge.remember_sets(&plan.environments, &reported);
        self.edge.failed_last_pass = failed_environments.clone();
        let next_stale = observed.values().filter_map(|o| o.agents.next_stale).min();
        // Status tells the truth about the data plane: while an environment's writes fail, its registrations keep
        // the status they had (not Active before the rules are in place).
        let env_names: std::collections::HashMap<_, _> = plan.environments.values().map(|e| (e.environment, e.name.clone())).collect();
        let due: Vec<_> = objects
            .registrations
            .iter()
            .copied()
            .filter_map(|reg| {
                let mut status = plan.registrations.get(&crate::planner::liveness::RegKey::of(reg))?.status.clone();
                if let Some(o) = env_names.get(&reg.spec.environment).and_then(|n| observed.get(n)) {
                    let previous = reg.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
                    crate::planner::edge::gate_registration(&mut status, &o.agents, &self.edge.sets, previous, now);
                }
                Some((reg, status))
            })
            .filter(|(reg, _)| !env_names.get(&reg.spec.environment).is_some_and(|n| failed_environments.contains(n)))
            .filter(|(reg, status)| !apply::registration_status_unchanged(reg, status))
            .map(|(reg, status)| (apply::status_key(reg), reg, status))
            .filter(|(key, _, _)| self.backoff.ready(key))
            .collect();
        // Independent writes, several in flight; each status is followed by its transition's Event.
        let (client, own, recorder) = (&self.client, &self.stores.own_writes, &self.recorder);
        let mut results = futures::stream::iter(due.into_iter().map(|(key, reg, status)| async move {
            let api = kube::Api::<crate::api::AccessRegistration>::namespaced(client.clone(), &reg.namespace().unwrap_or_default());
            let result = apply::patch_status(api, own, reg, &status).await;
            if result.is_ok() {
                events::registration_transition(recorder, reg, &status).await;
            }
            (key, result)
        }))
        .buffer_unordered(apply::WRITE_CONCURRENCY);
        while let Some((key, result)) = results.next().await {
            apply::count_status(&key, result, &mut self.backoff, &mut writes);
        }
        drop(results);
        for &env in &objects.environments {
            let Some(ep) = plan.environments.get(&env.name_any()) else {
                continue;
            };
            let mut status = ep.status.clone();
            if let Some(o) = observed.get(&ep.name) {
                edge::decorate(&mut status, env, o, self.edge.tampered.get(&ep.name), !failed_environments.contains(&ep.name), now);
                self.record_edge(&ep.name, o);
            }
            if apply::environment_status_unchanged(env, &status) {
                continue;
            }
            if apply::write_status(kube::Api::all(self.client.clone()), &self.stores.own_writes, env, &status, &mut self.backoff, &mut writes).await {
                events::environment_transition(&self.recorder, env, &status).await;
            }
        }
        steps.mark("statuses");
        self.record(&plan, &writes, &steps, started);
        self.next_transition = plan.next_transition();
        let next_transition = plan.next_transition().map(|t| {
            let wait = now.duration_until(t).unsigned_abs();
            // Never later than the plan says; a few milliseconds after, so the instant has passed.
            Instant::now() + wait.min(Duration::from_secs(86_400 * 365)) + Duration::from_millis(5)
        });
        self.backoff.prune(started);
        self.stores.own_writes.prune();
        // A heartbeat turns stale with no event: look again then (a second after, so it has passed).
        let stale_at = next_stale.map(|t| Instant::now() + now.duration_until(t).unsigned_abs().min(Duration::from_secs(3600)) + Duration::from_secs(1));
        [next_transition, self.backoff.next_retry(), stale_at].into_iter().flatten().min()
    }

    /// The edge's metrics of one environment.
    fn record_edge(&self, environment: &str, o: &edge::Observed) {
        let m = &self.shared.metrics;
        let s = &o.agents.status;
        for (state, n) in [
            ("expected", s.expected.unwrap_or(0)),
            ("reporting", s.reporting),
            ("in_sync", s.in_sync),
            ("stale", s.stale_count),
            ("missing", s.missing_count),
            ("behind", s.behind_count),
        ] {
            m.agents.get_or_create(&metrics::AgentStateLabel { environment: environment.to_string(), state }).set(n);
        }
        m.foreign_policies.get_or_create(&EnvironmentLabel { environment: environment.to_string() }).set(o.foreign.len() as i64);
    }

    fn record(&self, plan: &crate::planner::Plan, writes: &Writes, steps: &Steps, started: Instant) {
        let m = &self.shared.metrics;
        let result = if writes.failed > 0 { "error" } else { "ok" };
        m.reconciles.get_or_create(&ResultLabel { result }).inc();
        m.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        for (operation, n) in
            [("apply", writes.applied), ("delete", writes.deleted), ("status", writes.statuses), ("record", writes.records), ("failed", writes.failed)]
        {
            m.writes.get_or_create(&WriteLabel { operation }).inc_by(n as u64);
        }
        // Counted here first, then set: a label per registration was an allocation and a locked lookup each.
        let mut phases: std::collections::BTreeMap<(crate::api::Environment, crate::api::registration::RegistrationPhase), i64> =
            std::collections::BTreeMap::new();
        let mut overdue: std::collections::BTreeMap<crate::api::Environment, i64> = std::collections::BTreeMap::new();
        for r in plan.registrations.values() {
            let environment = r.resolved.evaluation.environment;
            *phases.entry((environment, r.resolved.phase)).or_default() += 1;
            if r.status.setup_overdue == Some(true) {
                *overdue.entry(environment).or_default() += 1;
            }
        }
        m.registrations.clear();
        m.overdue_setups.clear();
        for ((environment, phase), n) in phases {
            m.registrations.get_or_create(&PhaseLabel { environment: environment.to_string(), phase: format!("{phase:?}") }).set(n);
        }
        for (environment, n) in overdue {
            m.overdue_setups.get_or_create(&EnvironmentLabel { environment: environment.to_string() }).set(n);
        }
        for e in plan.environments.values() {
            m.cidrs.get_or_create(&EnvironmentLabel { environment: e.name.clone() }).set(e.cidrs.len() as i64);
        }
        for (step, took) in &steps.0 {
            m.step_seconds.get_or_create(&StepLabel { step }).observe(took.as_secs_f64());
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let memo = self.memo.stats();
        for (work, result, n) in [
            ("evaluation", "computed", memo.evaluations_computed),
            ("evaluation", "reused", memo.evaluations_reused),
            ("plan", "computed", memo.plans_computed),
            ("plan", "reused", memo.plans_reused),
        ] {
            m.planned.get_or_create(&PlannedLabel { work, result }).inc_by(n as u64);
        }
        let reused = format!(
            "evaluations {}/{} plans {}/{}",
            memo.evaluations_reused,
            memo.evaluations_reused + memo.evaluations_computed,
            memo.plans_reused,
            memo.plans_reused + memo.plans_computed
        );
        if writes != &Writes::default() {
            tracing::info!(applied = writes.applied, deleted = writes.deleted, statuses = writes.statuses, records = writes.records, failed = writes.failed,
                elapsed_ms, steps = %steps, reused, "pass wrote");
        } else {
            tracing::debug!(elapsed_ms, steps = %steps, reused, "pass wrote nothing");
        }
    }

    /// An object the types cannot read contributes nothing (fail closed); say so once per object and error.
    async fn report_unreadable(&mut self, snapshot: &stores::Snapshot) {
        let m = &self.shared.metrics;
        m.unreadable_objects.clear();
        for u in &snapshot.unreadable {
            m.unreadable_objects.get_or_create(&KindLabel { kind: u.kind }).inc();
            if self.reported_unreadable.insert(u.clone()) {
                tracing::error!(kind = u.kind, namespace = ?u.namespace, name = %u.name, error = %u.error,
                    "stored object does not fit the types; it contributes nothing until fixed");
                events::unreadable(&self.recorder, u).await;
            }
        }
        let current: BTreeSet<_> = snapshot.unreadable.iter().cloned().collect();
        self.reported_unreadable.retain(|u| current.contains(u));
    }
}
