//! The planner: a pure function from every verifier, registration, approval and environment, the allowlists
//! published now, and a clock, to everything that must exist and every status to report. No Kubernetes client:
//! each rule of DESIGN §3 is a plain unit test (tests in `tests.rs`).
//!
//! Steps: `liveness` (each registration on its own) → `resolve` (time, supersession, conflicts) → per
//! environment: aggregation, `hold`, `children` (NetworkPolicies, allowlist, routes), `nft` → per registration:
//! `status` and the URL `notice`.

pub mod children;
pub mod hold;
pub mod liveness;
pub mod memo;
pub mod nft;
pub mod notice;
pub mod resolve;
pub mod status;
#[cfg(test)]
mod tests;

use crate::api::environment::AccessEnvironmentStatus;
use crate::api::registration::AccessRegistrationStatus;
use crate::api::{AccessApproval, AccessEnvironment, AccessRegistration, Environment, SignatureVerifier};
use crate::domain::forms::check_environment;
use children::Child;
use hold::{Hold, PublishedAllowlist, RELEASE_ANNOTATION, apply_hold, sorted_aggregate};
use ipnet::IpNet;
use jiff::Timestamp;
use liveness::{Context, EnvironmentRules, RegKey};
use resolve::Resolved;
use std::collections::{BTreeMap, HashMap};

/// Everything the planner reads. References, so the controller plans straight from its caches: copying every
/// object into a snapshot first was a sixth of a pass and a second copy of the fleet in memory (BENCHMARKS.md).
/// [`Objects`] builds them from owned lists.
#[derive(Default, Clone, Copy)]
pub struct PlanInput<'a> {
    pub verifiers: &'a [&'a SignatureVerifier],
    pub registrations: &'a [&'a AccessRegistration],
    pub approvals: &'a [&'a AccessApproval],
    pub environments: &'a [&'a AccessEnvironment],
    /// The allowlist published now, per AccessEnvironment name (for the mass-revocation hold).
    pub published: Option<&'a BTreeMap<String, PublishedAllowlist>>,
}

/// References to owned lists of objects, for [`PlanInput`] (the CLI, tests and benchmarks own their objects).
pub struct Objects<'a> {
    pub verifiers: Vec<&'a SignatureVerifier>,
    pub registrations: Vec<&'a AccessRegistration>,
    pub approvals: Vec<&'a AccessApproval>,
    pub environments: Vec<&'a AccessEnvironment>,
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
        }
    }

    /// The planner's input, without a published allowlist.
    pub fn input(&self) -> PlanInput<'_> {
        PlanInput { verifiers: &self.verifiers, registrations: &self.registrations, approvals: &self.approvals, environments: &self.environments, published: None }
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
    pub ignored_environments: BTreeMap<String, String>,
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
    registrations: &'a [&'a AccessRegistration],
    now: Timestamp,
}

/// The first half of [`plan`]: liveness, resolution and every environment's outputs.
pub fn plan_environments<'a>(input: &PlanInput<'a>, now: Timestamp) -> EnvironmentsFirst<'a> {
    plan_environments_with(input, now, None)
}

/// [`plan_environments`] reusing, through `memo`, each object's own evaluation from earlier passes where its inputs
/// are unchanged (the controller's way: see [`memo`]). The result is the same with or without a memo.
pub fn plan_environments_with<'a>(input: &PlanInput<'a>, now: Timestamp, memo: Option<&mut memo::Memo>) -> EnvironmentsFirst<'a> {
    let mut result = Plan::default();

    // The environment objects in force: the first valid one (by name) per environment.
    let mut sorted_envs: Vec<&AccessEnvironment> = input.environments.to_vec();
    sorted_envs.sort_by_key(|e| e.metadata.name.clone());
    let mut env_objects: HashMap<Environment, &AccessEnvironment> = HashMap::new();
    let mut rules = HashMap::new();
    for env in sorted_envs {
        let name = env.metadata.name.clone().unwrap_or_default();
        let checked = check_environment(&env.spec);
        match (checked.value, env_objects.get(&env.spec.environment)) {
            (None, _) => {
                let why = checked.problems.iter().find(|p| p.is_error()).map(|p| format!("{}: {}", p.field, p.message));
                result.ignored_environments.insert(name, why.unwrap_or_default());
            }
            (Some(_), Some(first)) => {
                result.ignored_environments.insert(name, format!(
                    "AccessEnvironment {} already serves {}", first.metadata.name.clone().unwrap_or_default(), env.spec.environment
                ));
            }
            (Some(valid), None) => {
                env_objects.insert(env.spec.environment, env);
                rules.insert(env.spec.environment, EnvironmentRules {
                    name,
                    cidr_policy: valid.cidr_policy,
                    require_verification_test: env.spec.policy.require_verification_test,
                });
            }
        }
    }

    let evaluations: Vec<_> = match memo {
        Some(memo) => {
            memo.begin();
            let ctx = Context::with_checked(input.verifiers, input.approvals, rules, |v| memo.check_verifier(v));
            let evaluations = input.registrations.iter().map(|r| memo.evaluate(r, &ctx, now)).collect();
            memo.end();
            evaluations
        }
        None => {
            let ctx = Context::new(input.verifiers, input.approvals, rules);
            input.registrations.iter().map(|r| std::sync::Arc::new(liveness::evaluate(r, &ctx, now))).collect()
        }
    };
    let resolved = resolve::resolve(evaluations, now);

    for (environment, env) in &env_objects {
        let name = env.metadata.name.clone().unwrap_or_default();
        let live: Vec<&Resolved> = resolved.values().filter(|r| r.is_live() && r.evaluation.environment == *environment).collect();
        let cidrs: Vec<IpNet> = live.iter().flat_map(|r| r.window.iter().flat_map(|w| w.cidrs.iter().copied())).collect();
        let release = env.metadata.annotations.as_ref().and_then(|a| a.get(RELEASE_ANNOTATION)).map(String::as_str);
        let previous = input.published.and_then(|p| p.get(&name));
        let (published, hold) =
            apply_hold(env.spec.policy.mass_revocation_hold.as_ref(), previous, sorted_aggregate(&cidrs), live.len(), release);
        // While a removal is held, the index keeps the previous live count: the next pass must see the same
        // removal again (and hold it again) until a person releases it.
        let recorded_live = match (&hold, previous) {
            (Some(_), Some(p)) => p.live_registrations.max(live.len()),
            _ => live.len(),
        };
        let (mut children, digest) = children::allowlist(env, &published, recorded_live);
        let mut all = children::network_policies(env, &published);
        all.append(&mut children);
        all.extend(children::routes(env));
        let v4: Vec<ipnet::Ipv4Net> = published.iter().filter_map(|c| if let IpNet::V4(n) = c { Some(*n) } else { None }).collect();
        let v6: Vec<ipnet::Ipv6Net> = published.iter().filter_map(|c| if let IpNet::V6(n) = c { Some(*n) } else { None }).collect();
        let ports = env.spec.firewall.as_ref().map(|f| f.ports.clone()).unwrap_or_default();
        let nft = nft::render_ruleset(&name, &v4, &v6, &ports);
        let status = environment_status(env, &published, &digest, live.len(), hold.as_ref(), now);
        result.environments.insert(name.clone(), EnvironmentPlan {
            name,
            environment: *environment,
            cidrs: published,
            digest,
            live_registrations: live.len(),
            hold,
            children: all,
            nft,
            status,
        });
    }

    EnvironmentsFirst { plan: result, resolved, env_objects, registrations: input.registrations, now }
}

impl EnvironmentsFirst<'_> {
    /// The second half of [`plan`]: each registration's status and URL notice.
    pub fn finish(self) -> Plan {
        self.finish_with(None)
    }

    /// [`EnvironmentsFirst::finish`] reusing, through `memo`, each registration's plan from earlier passes where its
    /// verdict, its environment and its stored conditions are unchanged. The result is the same with or without.
    pub fn finish_with(self, mut memo: Option<&mut memo::Memo>) -> Plan {
        let EnvironmentsFirst { plan: mut result, resolved, env_objects, registrations, now } = self;
        let by_key: HashMap<(&str, &str), &AccessRegistration> = registrations
            .iter()
            .map(|r| ((r.metadata.namespace.as_deref().unwrap_or_default(), r.metadata.name.as_deref().unwrap_or_default()), *r))
            .collect();
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

fn environment_status(
    env: &AccessEnvironment,
    cidrs: &[IpNet],
    digest: &str,
    live: usize,
    hold: Option<&Hold>,
    now: Timestamp,
) -> AccessEnvironmentStatus {
    let generation = env.metadata.generation;
    let previous = env.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let cond = |t: &str, s: bool, reason: &str, message: &str| status::condition(t, s, reason, message, generation, previous, now);
    let (held_reason, held_message) = match hold {
        Some(h) => ("MassRevocationHeld", format!(
            "a change would remove {} of {} CIDRs ({} registrations); the previous set stays published. To confirm, annotate this AccessEnvironment with {RELEASE_ANNOTATION}={}",
            h.removed_cidrs, h.previous_cidrs, h.removed_registrations, h.held_digest
        )),
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
    }
}
