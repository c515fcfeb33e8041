//! The planner: a pure function from every verifier, registration, approval and environment, the allowlists
//! published now, and a clock, to everything that must exist and every status to report. No Kubernetes client:
//! each rule of DESIGN §3 is a plain unit test (tests in `tests.rs`).
//!
//! Steps: `liveness` (each registration on its own, by the rule engine of `crate::domain::rules`) → `resolve` (time,
//! supersession, conflicts) → per environment: aggregation, `hold`, `children` (NetworkPolicies, allowlist, routes),
//! `nft` → per registration: `status` and the URL `notice` → `records`: the facts to record durably.

pub mod children;
pub mod edge;
pub mod hold;
pub mod liveness;
pub mod memo;
pub mod nft;
pub mod notice;
pub mod records;
pub mod resolve;
pub mod status;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_decisions;

use crate::api::environment::AccessEnvironmentStatus;
use crate::api::registration::AccessRegistrationStatus;
use crate::api::registration::RegistrationPhase;
use crate::api::{AccessApproval, AccessEnvironment, AccessRecord, AccessRegistration, Environment, SignatureVerifier};
use crate::domain::rules::decisions::ApprovalVerdict;
use crate::domain::rules::{Context, Reason};
use children::Child;
use hold::{Baseline, Hold, HoldInput, LiveSet, PublishedAllowlist, RELEASE_ANNOTATION, sorted_aggregate};
use ipnet::IpNet;
use jiff::Timestamp;
use liveness::RegKey;
use resolve::Resolved;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Everything the planner reads. References, so the controller plans straight from its caches: copying every
/// object into a snapshot first was a sixth of a pass and a second copy of the fleet in memory (BENCHMARKS.md).
/// [`Objects`] builds them from owned lists.
#[derive(Default, Clone, Copy)]
pub struct PlanInput<'a> {
    pub verifiers: &'a [&'a SignatureVerifier],
    pub registrations: &'a [&'a AccessRegistration],
    pub approvals: &'a [&'a AccessApproval],
    pub environments: &'a [&'a AccessEnvironment],
    /// The controller's durable records (`AccessRecord`): facts no later change may undo.
    pub records: &'a [&'a AccessRecord],
    /// The allowlist published now, per AccessEnvironment name (for the mass-revocation hold).
    pub published: Option<&'a BTreeMap<String, PublishedAllowlist>>,
    /// What each registration had published before this pass, per AccessEnvironment name (the controller's memory of
    /// its last pass), for the mass-revocation hold. Environments missing here take it from the statuses.
    pub previously_live: Option<&'a BTreeMap<String, LiveSet>>,
    /// The most each environment may publish, by AccessEnvironment name: after the API server's storage went back
    /// in time (restored from a backup), the controller caps it at what it last published, so decisions the restore
    /// brought back do not reach the edge before a person confirms them (`crate::controller::edge`).
    pub caps: Option<&'a BTreeMap<String, Vec<IpNet>>>,
}

/// References to owned lists of objects, for [`PlanInput`] (the CLI, tests and benchmarks own their objects).
pub struct Objects<'a> {
    pub verifiers: Vec<&'a SignatureVerifier>,
    pub registrations: Vec<&'a AccessRegistration>,
    pub approvals: Vec<&'a AccessApproval>,
    pub environments: Vec<&'a AccessEnvironment>,
    pub records: Vec<&'a AccessRecord>,
}

impl<'a> Objects<'a> {
    pub fn of(
        verifiers: &'a [SignatureVerifier],
        registrations: &'a [AccessRegistration],
        approvals: &'a [AccessApproval],
        environments: &'a [AccessEnvironment],
    ) -> Self {
        Objects {
            verifiers: verifiers.iter().collect(),
            registrations: registrations.iter().collect(),
            approvals: approvals.iter().collect(),
            environments: environments.iter().collect(),
            records: Vec::new(),
        }
    }

    /// The same, with records.
    pub fn with_records(mut self, records: &'a [AccessRecord]) -> Self {
        self.records = records.iter().collect();
        self
    }

    /// The planner's input, without a published allowlist.
    pub fn input(&self) -> PlanInput<'_> {
        PlanInput {
            verifiers: &self.verifiers,
            registrations: &self.registrations,
            approvals: &self.approvals,
            environments: &self.environments,
            records: &self.records,
            published: None,
            previously_live: None,
            caps: None,
        }
    }
}

/// The plan of one registration.
#[derive(Debug, Clone)]
pub struct RegistrationPlan {
    pub resolved: Resolved,
    pub status: AccessRegistrationStatus,
    /// The URL notice, for Active and Scheduled registrations, and its ConfigMap.
    pub notice: Option<Child>,
    pub notice_data: Option<notice::Notice>,
    pub next_transition: Option<Timestamp>,
}

/// The plan of one AccessEnvironment.
#[derive(Debug, Clone)]
pub struct EnvironmentPlan {
    pub name: String,
    pub environment: Environment,
    /// The published set: aggregated live CIDRs (or, while a removal is held, the previous set plus additions).
    pub cidrs: Vec<IpNet>,
    pub digest: String,
    pub live_registrations: usize,
    pub hold: Option<Hold>,
    /// The hold's baseline to store (with a mass-revocation policy).
    pub baseline: Option<Baseline>,
    /// A person's release that took effect in this pass: the released digest.
    pub released: Option<String>,
    /// What each registration has published after this pass: the next pass's `previously_live`.
    pub published_live: LiveSet,
    /// How many registrations the allowlist index records as published (see `hold::HoldOutcome::recorded_live`).
    pub recorded_live: usize,
    /// Registrations kept published by the hold although no longer live.
    pub held: BTreeSet<String>,
    /// NetworkPolicies, allowlist index and shards, routes: in a stable order.
    pub children: Vec<Child>,
    /// The nftables ruleset of the firewall agents.
    pub nft: String,
    pub status: AccessEnvironmentStatus,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Shared with the memo of earlier passes (see [`memo`]): most registrations' plans do not change between passes.
    pub registrations: BTreeMap<RegKey, std::sync::Arc<RegistrationPlan>>,
    pub environments: BTreeMap<String, EnvironmentPlan>,
    /// AccessEnvironments that are not used: invalid, or a second one for the same environment.
    pub ignored_environments: BTreeMap<String, (Reason, String)>,
    /// The verdict on every approval, by namespace and name.
    pub approvals: BTreeMap<(String, String), ApprovalVerdict>,
    /// Why a SignatureVerifier is refused, by name (absent: it is valid and owns its namespace).
    pub refused_verifiers: BTreeMap<String, (Reason, String)>,
    /// Facts to add to the durable records.
    pub records: Vec<records::RecordWrite>,
}

impl Plan {
    /// Earliest instant after which the plan changes without any edit (a start, an end, a supersession).
    pub fn next_transition(&self) -> Option<Timestamp> {
        self.registrations.values().filter_map(|r| r.next_transition).min()
    }
}

/// Computes the plan at `now`.
pub fn plan(input: &PlanInput<'_>, now: Timestamp) -> Plan {
    plan_environments(input, now).finish()
}

/// A plan whose environments are complete and whose registrations are not yet planned: what the data plane needs
/// comes first, so the controller can write an approval's allowlist and policies before it plans every
/// registration's notice and status (a sixth of a pass at the national scale).
pub struct EnvironmentsFirst<'a> {
    /// The plan with its environments; `registrations` is empty until [`EnvironmentsFirst::finish`].
    pub plan: Plan,
    resolved: BTreeMap<RegKey, Resolved>,
    env_objects: HashMap<Environment, &'a AccessEnvironment>,
    input: PlanInput<'a>,
    now: Timestamp,
}

/// The first half of [`plan`]: liveness, resolution and every environment's outputs.
pub fn plan_environments<'a>(input: &PlanInput<'a>, now: Timestamp) -> EnvironmentsFirst<'a> {
    plan_environments_with(input, now, None)
}

/// What each registration of `environment` had published before this pass, from its stored status (after a
/// restart): Active ones their effective CIDRs, Held ones the CIDRs the hold keeps.
pub fn live_from_statuses(registrations: &[&AccessRegistration], environment: Environment) -> LiveSet {
    registrations
        .iter()
        .filter(|r| r.spec.environment == environment)
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            if !matches!(status.phase, Some(RegistrationPhase::Active | RegistrationPhase::Held)) {
                return None;
            }
            let cidrs = status.effective_cidrs.iter().filter_map(|c| c.as_str().parse().ok()).collect();
            Some((live_key(r), cidrs))
        })
        .collect()
}

/// How a registration is known in a [`LiveSet`]: its uid, or offline its namespace and name.
pub fn live_key(reg: &AccessRegistration) -> String {
    reg.metadata.uid.clone().unwrap_or_else(|| RegKey::of(reg).to_string())
}

/// [`plan_environments`] reusing, through `memo`, each object's own evaluation from earlier passes where its inputs
/// are unchanged (the controller's way: see [`memo`]). The result is the same with or without a memo.
pub fn plan_environments_with<'a>(input: &PlanInput<'a>, now: Timestamp, memo: Option<&mut memo::Memo>) -> EnvironmentsFirst<'a> {
    let mut result = Plan::default();
    let in_force = crate::domain::rules::environments_in_force(input.environments);
    for name in in_force.problems.keys() {
        if let Some(p) = in_force.refusal(name) {
            result.ignored_environments.insert(name.clone(), (p.reason, format!("{}: {}", p.field, p.message)));
        }
    }
    let (env_objects, rules) = (in_force.objects, in_force.rules);
    let objects =
        crate::domain::rules::Objects { verifiers: input.verifiers, registrations: input.registrations, approvals: input.approvals, records: input.records };
    let refused_verifiers = |ctx: &Context<'_>| -> BTreeMap<String, (Reason, String)> {
        ctx.verifiers
            .iter()
            .filter_map(|(name, v)| {
                let why = match (&v.valid, v.namespace_taken_by) {
                    (None, _) => (Reason::ValidationFailed, "the form is invalid (jpki-access validate names the fields)".to_string()),
                    (Some(_), Some(owner)) => (Reason::NamespaceClaimed, format!("namespace {:?} belongs to verifier {owner}", v.object.spec.namespace)),
                    (Some(_), None) => return None,
                };
                Some((name.to_string(), why))
            })
            .collect()
    };
    let evaluations: Vec<_> = match memo {
        Some(memo) => {
            memo.begin();
            let ctx = Context::new(objects, rules, true, |v| memo.check_verifier(v));
            result.refused_verifiers = refused_verifiers(&ctx);
            let evaluations = input.registrations.iter().map(|r| memo.evaluate(r, &ctx, now)).collect();
            memo.end();
            evaluations
        }
        None => {
            let ctx = Context::new(objects, rules, true, |v| crate::domain::forms::check_verifier(&v.spec).value);
            result.refused_verifiers = refused_verifiers(&ctx);
            input.registrations.iter().map(|r| std::sync::Arc::new(liveness::evaluate(r, &ctx, now))).collect()
        }
    };
    let resolved = resolve::resolve(evaluations, now);

    let uids: HashMap<RegKey, String> = input.registrations.iter().map(|r| (RegKey::of(r), live_key(r))).collect();
    for (environment, env) in &env_objects {
        let name = env.metadata.name.clone().unwrap_or_default();
        let live: Vec<(&RegKey, &Resolved)> = resolved.iter().filter(|(_, r)| r.is_live() && r.evaluation.environment == *environment).collect();
        let live_set: LiveSet = live.iter().map(|(k, r)| (uids[*k].clone(), r.window.as_ref().map(|w| w.cidrs.clone()).unwrap_or_default())).collect();
        let cidrs: Vec<IpNet> = live_set.values().flatten().copied().collect();
        let from_statuses;
        let previous = match input.previously_live.and_then(|p| p.get(&name)) {
            Some(p) => p,
            None => {
                from_statuses = live_from_statuses(input.registrations, *environment);
                &from_statuses
            }
        };
        let release = env.metadata.annotations.as_ref().and_then(|a| a.get(RELEASE_ANNOTATION)).map(String::as_str);
        let mut outcome = hold::decide(HoldInput {
            policy: env.spec.policy.mass_revocation_hold.as_ref(),
            published: input.published.and_then(|p| p.get(&name)),
            previously_live: previous,
            live: &live_set,
            next: sorted_aggregate(&cidrs),
            release,
            now,
        });
        if let Some(cap) = input.caps.and_then(|c| c.get(&name)) {
            outcome.publish = hold::intersect(&outcome.publish, cap);
        }
        let (mut children, digest) = children::allowlist(env, &outcome.publish, outcome.recorded_live);
        let mut all = children::network_policies(env, &outcome.publish);
        all.append(&mut children);
        if let Some(baseline) = &outcome.baseline {
            all.extend(children::hold_baseline(env, baseline));
        }
        all.extend(children::routes(env));
        let v4: Vec<ipnet::Ipv4Net> = outcome.publish.iter().filter_map(|c| if let IpNet::V4(n) = c { Some(*n) } else { None }).collect();
        let v6: Vec<ipnet::Ipv6Net> = outcome.publish.iter().filter_map(|c| if let IpNet::V6(n) = c { Some(*n) } else { None }).collect();
        let ports = children::firewall_ports(env.spec.firewall.as_ref());
        let forward: Vec<IpNet> =
            env.spec.firewall.iter().flat_map(|f| f.forward_destinations.iter()).filter_map(|d| d.as_str().parse::<IpNet>().ok()).map(|n| n.trunc()).collect();
        let forward = sorted_aggregate(&forward);
        let f4: Vec<ipnet::Ipv4Net> = forward.iter().filter_map(|c| if let IpNet::V4(n) = c { Some(*n) } else { None }).collect();
        let f6: Vec<ipnet::Ipv6Net> = forward.iter().filter_map(|c| if let IpNet::V6(n) = c { Some(*n) } else { None }).collect();
        let rules = nft::Rules { allow_v4: &v4, allow_v6: &v6, ports: &ports, forward_v4: &f4, forward_v6: &f6, tag: None };
        let nft = nft::render(&name, &rules);
        let status = environment_status(env, &outcome.publish, &digest, live.len(), outcome.hold.as_ref(), now);
        result.environments.insert(
            name.clone(),
            EnvironmentPlan {
                name,
                environment: *environment,
                cidrs: outcome.publish,
                digest,
                live_registrations: live.len(),
                hold: outcome.hold,
                baseline: outcome.baseline,
                released: outcome.released,
                published_live: outcome.published_live,
                recorded_live: outcome.recorded_live,
                held: outcome.held,
                children: all,
                nft,
                status,
            },
        );
    }

    EnvironmentsFirst { plan: result, resolved, env_objects, input: *input, now }
}

impl EnvironmentsFirst<'_> {
    /// The second half of [`plan`]: each registration's status and URL notice, each approval's verdict, and the
    /// facts to record.
    pub fn finish(self) -> Plan {
        self.finish_with(None)
    }

    /// [`EnvironmentsFirst::finish`] reusing, through `memo`, each registration's plan from earlier passes where its
    /// verdict, its environment and its stored conditions are unchanged. The result is the same with or without.
    pub fn finish_with(self, mut memo: Option<&mut memo::Memo>) -> Plan {
        let EnvironmentsFirst { plan: mut result, mut resolved, env_objects, input, now } = self;
        let by_key: HashMap<(&str, &str), &AccessRegistration> = input
            .registrations
            .iter()
            .map(|r| ((r.metadata.namespace.as_deref().unwrap_or_default(), r.metadata.name.as_deref().unwrap_or_default()), *r))
            .collect();
        // Registrations the hold keeps published say so, with the CIDRs it keeps.
        for e in result.environments.values() {
            for (key, r) in resolved.iter_mut().filter(|(_, r)| r.evaluation.environment == e.environment && !r.is_live()) {
                let reg = by_key[&(key.namespace.as_str(), key.name.as_str())];
                let uid = live_key(reg);
                if e.held.contains(&uid) {
                    r.phase = RegistrationPhase::Held;
                    r.reason = Reason::Held;
                    r.message = format!(
                        "no longer live, but its CIDRs stay published while AccessEnvironment {}'s mass removal is held; a person releases it ({RELEASE_ANNOTATION})",
                        e.name
                    );
                    let kept = e.published_live.get(&uid).cloned().unwrap_or_default();
                    let window = r.window.get_or_insert_with(|| liveness::Window {
                        cidrs: Vec::new(),
                        places: Vec::new(),
                        start: now,
                        end: None,
                        provision_methods: Default::default(),
                    });
                    window.cidrs = kept;
                }
            }
        }
        for (key, r) in &resolved {
            for v in &r.evaluation.approvals {
                result.approvals.insert((key.namespace.clone(), v.name.clone()), v.clone());
            }
        }
        for a in input.approvals {
            let id = (a.metadata.namespace.clone().unwrap_or_default(), a.metadata.name.clone().unwrap_or_default());
            result.approvals.entry(id).or_insert_with(|| crate::domain::rules::decisions::not_found(a));
        }
        result.records = records::plan_records(&input, &resolved, &result.environments, now);
        for (key, r) in resolved {
            let reg = by_key[&(key.namespace.as_str(), key.name.as_str())];
            let env = env_objects.get(&r.evaluation.environment).copied();
            if let Some(reused) = memo.as_deref_mut().and_then(|m| m.registration_plan(reg, env, &r, now)) {
                result.registrations.insert(key, reused);
                continue;
            }
            let notice_data = env.and_then(|env| notice::notice(&r, env));
            let notice = notice_data.as_ref().zip(env).map(|(n, env)| notice::notice_config_map(n, reg, env.metadata.name.as_deref().unwrap_or_default()));
            let notice_name = notice.as_ref().map(|_| notice::notice_name(&key.name));
            let previous = reg.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
            let (status, next_transition) = status::registration_status(&r, notice_name, previous, now);
            let planned = std::sync::Arc::new(RegistrationPlan { resolved: r, status, notice, notice_data, next_transition });
            if let Some(m) = memo.as_deref_mut() {
                m.remember_plan(reg, env, &planned, now);
            }
            result.registrations.insert(key, planned);
        }
        if let Some(m) = memo {
            m.end_plans();
        }
        result
    }
}

fn environment_status(env: &AccessEnvironment, cidrs: &[IpNet], digest: &str, live: usize, hold: Option<&Hold>, now: Timestamp) -> AccessEnvironmentStatus {
    let generation = env.metadata.generation;
    let previous = env.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let cond = |t: &str, s: bool, reason: &str, message: &str| status::condition(t, s, reason, message, generation, previous, now);
    let (held_reason, held_message) = match hold {
        Some(h) => (
            "MassRevocationHeld",
            format!(
                "removals since the baseline would take away {} of its {} CIDRs ({} registrations affected); the previous set stays published. To confirm, annotate this AccessEnvironment with {RELEASE_ANNOTATION}={}",
                h.removed_cidrs, h.baseline_cidrs, h.affected_registrations, h.held_digest
            ),
        ),
        None => ("NotHeld", String::new()),
    };
    AccessEnvironmentStatus {
        observed_generation: generation,
        conditions: vec![
            cond("Ready", hold.is_none(), if hold.is_some() { held_reason } else { "Planned" }, &format!("{live} live registrations, {} CIDRs", cidrs.len())),
            cond("Reconciling", false, "Reconciled", ""),
            cond("Stalled", hold.is_some(), held_reason, &held_message),
            cond("Held", hold.is_some(), held_reason, &held_message),
        ],
        live_registrations: Some(live as i64),
        cidr_count: Some(cidrs.len() as i64),
        allowlist_digest: Some(digest.to_string()),
        agents_in_sync: None,
        agents: None,
        foreign_network_policies: Vec::new(),
    }
}
