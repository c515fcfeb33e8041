//! What a pass may reuse from the passes before it: the validity of each SignatureVerifier and each registration's
//! [`Evaluation`] (validation, approval, narrowing, gates), the per-object half of the plan. The rules that relate
//! registrations to each other (supersession, conflicts, aggregation) still run over everything on every pass.
//!
//! This is a cache of pure functions, not state of the plan: an entry is reused only while every input it was
//! computed from is the same stored version and the clock is inside the interval where the result cannot change by
//! itself, so a plan with a memo equals the plan without one (`tests/planner_properties.rs` checks it over random
//! histories). At the national scale, validating and evaluating every registration was most of a pass
//! (BENCHMARKS.md), and a pass is what an approval waits for.
//!
//! A version is the object's `uid` with its `metadata.generation`: for custom resources the API server raises the
//! generation on every change outside `metadata` and `status`, and the planner reads only spec, name, namespace and
//! generation of these kinds. The controller's own status writes thus keep entries valid. Objects without a uid or
//! generation (offline forms in `validate` and `render`) are never memoised.

use super::RegistrationPlan;
use super::liveness::{self, Evaluation};
use super::resolve::Resolved;
use crate::api::{AccessEnvironment, AccessRegistration, SignatureVerifier};
use crate::domain::forms::{ValidVerifier, check_verifier};
use crate::domain::rules::Context;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashMap;
use std::sync::Arc;

/// Which stored version of an object: its uid and generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String, i64);

impl Version {
    fn of(meta: &ObjectMeta) -> Option<Version> {
        Some(Version(meta.uid.clone()?, meta.generation?))
    }
    /// Whether `meta` is this version (no copy: this runs for every input of every registration on every pass).
    fn is(&self, meta: &ObjectMeta) -> bool {
        meta.uid.as_deref() == Some(self.0.as_str()) && meta.generation == Some(self.1)
    }
}

/// What a registration's evaluation read of other objects besides its verifier and approvals: the verifier that
/// owns the namespace, the registration it supersedes, and its record (durable facts).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CrossFacts {
    namespace_taken_by: Option<String>,
    supersedes: Option<Version>,
    superseded_by_record: Option<String>,
    record: Option<Version>,
}

impl CrossFacts {
    /// `None` when an object read has no version (nothing is memoised then).
    fn of(reg: &AccessRegistration, ctx: &Context<'_>) -> Option<Self> {
        let namespace = reg.metadata.namespace.as_deref().unwrap_or_default();
        let supersedes = match reg.spec.supersedes.as_deref().and_then(|t| ctx.registrations.get(&(namespace, t))) {
            Some(old) => Some(Version::of(&old.metadata)?),
            None => None,
        };
        let record = match reg.metadata.uid.as_deref().and_then(|u| ctx.records.of(u)) {
            Some(r) => Some(Version::of(&r.metadata)?),
            None => None,
        };
        Some(CrossFacts {
            namespace_taken_by: ctx.verifiers.get(reg.spec.verifier_ref.as_str()).and_then(|v| v.namespace_taken_by).map(str::to_string),
            supersedes,
            superseded_by_record: reg.spec.supersedes.as_deref().and_then(|t| ctx.records.superseded_by(namespace, t)).map(str::to_string),
            record,
        })
    }

    /// Whether these facts are still what `ctx` holds for `reg`, without copying anything.
    fn hold(&self, reg: &AccessRegistration, ctx: &Context<'_>) -> bool {
        let namespace = reg.metadata.namespace.as_deref().unwrap_or_default();
        let same = |version: &Option<Version>, meta: Option<&ObjectMeta>| match (version, meta) {
            (Some(v), Some(m)) => v.is(m),
            (None, None) => true,
            _ => false,
        };
        let old = reg.spec.supersedes.as_deref().and_then(|t| ctx.registrations.get(&(namespace, t)));
        let record = reg.metadata.uid.as_deref().and_then(|u| ctx.records.of(u));
        ctx.verifiers.get(reg.spec.verifier_ref.as_str()).and_then(|v| v.namespace_taken_by) == self.namespace_taken_by.as_deref()
            && same(&self.supersedes, old.map(|o| &o.metadata))
            && reg.spec.supersedes.as_deref().and_then(|t| ctx.records.superseded_by(namespace, t)) == self.superseded_by_record.as_deref()
            && same(&self.record, record.map(|r| &r.metadata))
    }
}

/// A registration's evaluation and everything it read, by version (the environment's rules by value).
#[derive(Debug)]
struct Entry {
    generation: i64,
    verifier: Option<Version>,
    approvals: Vec<Version>,
    cross: CrossFacts,
    rules: Option<liveness::EnvironmentRules>,
    /// The evaluation holds for `from <= now < until` (`until`: the first milestone date still ahead).
    from: Timestamp,
    until: Option<Timestamp>,
    evaluation: Arc<Evaluation>,
    /// The pass that last used it; entries no pass used are dropped (their object is gone).
    pass: u64,
}

impl Entry {
    /// Whether this entry was computed from exactly what `reg` reads in `ctx` now.
    fn holds_for(&self, reg: &AccessRegistration, ctx: &Context<'_>, now: Timestamp) -> bool {
        let verifier_same = match (ctx.verifiers.get(reg.spec.verifier_ref.as_str()), &self.verifier) {
            (Some(v), Some(version)) => version.is(&v.object.metadata),
            (None, None) => true,
            _ => false,
        };
        let approvals = ctx.approvals_of(reg);
        reg.metadata.generation == Some(self.generation)
            && self.from <= now
            && self.until.is_none_or(|until| now < until)
            && verifier_same
            && approvals.len() == self.approvals.len()
            && approvals.iter().all(|a| self.approvals.iter().any(|v| v.is(&a.metadata)))
            && ctx.environments.get(&reg.spec.environment) == self.rules.as_ref()
            && self.cross.hold(reg, ctx)
    }
}

/// A registration's plan (status and URL notice) and the environment object it was planned for; the verdict it
/// was planned from is in the plan.
#[derive(Debug)]
struct PlanEntry {
    environment: Option<Version>,
    /// The plan holds from here until its `next_transition`.
    from: Timestamp,
    plan: Arc<RegistrationPlan>,
    pass: u64,
}

/// Whether two verdicts are the same; every field is named, so a field added to [`Resolved`] cannot be forgotten.
fn same_verdict(a: &Resolved, b: &Resolved) -> bool {
    let Resolved { evaluation, phase, reason, message, decided, window, conflicts, steps_down_at, superseded_by, next_transition } = a;
    (Arc::ptr_eq(evaluation, &b.evaluation) || **evaluation == *b.evaluation)
        && *phase == b.phase
        && *reason == b.reason
        && *message == b.message
        && *decided == b.decided
        && *window == b.window
        && *conflicts == b.conflicts
        && *steps_down_at == b.steps_down_at
        && *superseded_by == b.superseded_by
        && *next_transition == b.next_transition
}

/// How much of the last pass was reused, for the pass log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoStats {
    pub evaluations_reused: usize,
    pub evaluations_computed: usize,
    pub plans_reused: usize,
    pub plans_computed: usize,
}

/// The cache; the controller keeps one for as long as it runs.
#[derive(Debug, Default)]
pub struct Memo {
    verifiers: HashMap<String, (Version, Option<ValidVerifier>, u64)>,
    /// By the registration's uid.
    evaluations: HashMap<String, Entry>,
    /// By the registration's uid.
    plans: HashMap<String, PlanEntry>,
    pass: u64,
    stats: MemoStats,
}

impl Memo {
    /// What the last pass reused and computed.
    pub fn stats(&self) -> MemoStats {
        self.stats
    }

    /// Starts a pass: counts from zero again.
    pub(super) fn begin(&mut self) {
        self.pass += 1;
        self.stats = MemoStats::default();
    }

    /// Ends the evaluations of a pass: forgets what it did not use (deleted objects), so the cache holds at most the
    /// fleet once.
    pub(super) fn end(&mut self) {
        let pass = self.pass;
        self.verifiers.retain(|_, (_, _, used)| *used == pass);
        self.evaluations.retain(|_, e| e.pass == pass);
    }

    /// Ends the registration plans of a pass, likewise.
    pub(super) fn end_plans(&mut self) {
        let pass = self.pass;
        self.plans.retain(|_, e| e.pass == pass);
    }

    /// The plan of `reg` from an earlier pass, when it was planned from the same verdict (which holds its evaluation,
    /// generation and every instant it changes at), for the same environment object, and its stored conditions are
    /// the ones planned then: then no condition changes, so none takes `now` as its transition time, and the status
    /// and notice are the same as planning them again. Until the first instant the plan changes by itself.
    pub(super) fn registration_plan(
        &mut self,
        reg: &AccessRegistration,
        env: Option<&AccessEnvironment>,
        resolved: &Resolved,
        now: Timestamp,
    ) -> Option<Arc<RegistrationPlan>> {
        let entry = self.plans.get_mut(reg.metadata.uid.as_deref()?)?;
        let env_same = match (env, &entry.environment) {
            (Some(env), Some(version)) => version.is(&env.metadata),
            (None, None) => true,
            _ => false,
        };
        let conditions = reg.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let holds = env_same
            && entry.from <= now
            && entry.plan.next_transition.is_none_or(|until| now < until)
            && conditions == entry.plan.status.conditions.as_slice()
            && same_verdict(&entry.plan.resolved, resolved);
        if !holds {
            return None;
        }
        entry.pass = self.pass;
        self.stats.plans_reused += 1;
        Some(entry.plan.clone())
    }

    /// Keeps a plan just made for the next passes (when its objects have versions).
    pub(super) fn remember_plan(&mut self, reg: &AccessRegistration, env: Option<&AccessEnvironment>, plan: &Arc<RegistrationPlan>, now: Timestamp) {
        self.stats.plans_computed += 1;
        let Some(uid) = reg.metadata.uid.as_deref() else {
            return;
        };
        let environment = match env {
            Some(env) => match Version::of(&env.metadata) {
                Some(v) => Some(v),
                None => return,
            },
            None => None,
        };
        self.plans.insert(uid.to_string(), PlanEntry { environment, from: now, plan: plan.clone(), pass: self.pass });
    }

    /// [`check_verifier`] of one verifier, reused while its version is the same.
    pub(super) fn check_verifier(&mut self, verifier: &SignatureVerifier) -> Option<ValidVerifier> {
        let name = verifier.metadata.name.as_deref().unwrap_or_default();
        if let Some((version, valid, used)) = self.verifiers.get_mut(name)
            && version.is(&verifier.metadata)
        {
            *used = self.pass;
            return valid.clone();
        }
        let valid = check_verifier(&verifier.spec).value;
        if let Some(version) = Version::of(&verifier.metadata) {
            self.verifiers.insert(name.to_string(), (version, valid.clone(), self.pass));
        }
        valid
    }

    /// [`liveness::evaluate`], reused while its inputs are the same versions and `now` is inside the interval it
    /// holds for.
    pub(super) fn evaluate(&mut self, reg: &AccessRegistration, ctx: &Context<'_>, now: Timestamp) -> Arc<Evaluation> {
        let Some(uid) = reg.metadata.uid.as_deref() else {
            self.stats.evaluations_computed += 1;
            return Arc::new(liveness::evaluate(reg, ctx, now));
        };
        if let Some(entry) = self.evaluations.get_mut(uid)
            && entry.holds_for(reg, ctx, now)
        {
            entry.pass = self.pass;
            self.stats.evaluations_reused += 1;
            return entry.evaluation.clone();
        }
        self.stats.evaluations_computed += 1;
        let evaluation = Arc::new(liveness::evaluate(reg, ctx, now));
        if let Some(entry) = entry(reg, ctx, now, &evaluation, self.pass) {
            self.evaluations.insert(uid.to_string(), entry);
        }
        evaluation
    }
}

/// A new entry for `evaluation`; `None` when an input has no version (nothing is memoised then).
fn entry(reg: &AccessRegistration, ctx: &Context<'_>, now: Timestamp, evaluation: &Arc<Evaluation>, pass: u64) -> Option<Entry> {
    let verifier = match ctx.verifiers.get(reg.spec.verifier_ref.as_str()) {
        Some(v) => Some(Version::of(&v.object.metadata)?),
        None => None,
    };
    let approvals = ctx.approvals_of(reg).iter().map(|a| Version::of(&a.metadata)).collect::<Option<Vec<_>>>()?;
    Some(Entry {
        generation: reg.metadata.generation?,
        verifier,
        approvals,
        cross: CrossFacts::of(reg, ctx)?,
        rules: ctx.environments.get(&reg.spec.environment).cloned(),
        from: now,
        until: evaluation.wake_ups.iter().copied().filter(|t| *t > now).min(),
        evaluation: evaluation.clone(),
        pass,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{Memo, MemoStats};
    use crate::api::Environment;
    use crate::planner::tests::{World, approve, registration, t, verifier};
    use crate::planner::{Objects, Plan, PlanInput, plan, plan_environments_with};
    use kube::Resource;

    /// Gives `obj` the uid and generation the API server would.
    fn stored<K: Resource>(mut obj: K, generation: i64) -> K {
        let name = obj.meta().name.clone().unwrap();
        obj.meta_mut().uid = Some(format!("uid-{name}"));
        obj.meta_mut().generation = Some(generation);
        obj
    }

    /// A pass with the memo, checked against the plan from scratch; returns it and what was reused.
    fn pass(w: &World, memo: &mut Memo, now: &str) -> (Plan, MemoStats) {
        let objects = Objects::of(&w.verifiers, &w.registrations, &w.approvals, &w.environments);
        let input = PlanInput { published: Some(&w.published), ..objects.input() };
        let memoised = plan_environments_with(&input, t(now), Some(&mut *memo)).finish_with(Some(&mut *memo));
        assert_eq!(format!("{memoised:?}"), format!("{:?}", plan(&input, t(now))), "the memo changed the plan");
        (memoised, memo.stats())
    }

    /// As the controller's status writes do: each registration's stored status becomes the planned one.
    fn write_statuses(w: &mut World, plan: &Plan) {
        for reg in &mut w.registrations {
            reg.status = Some(plan.registrations[&crate::planner::liveness::RegKey::of(reg)].status.clone());
        }
    }

    fn world() -> World {
        let mut w = World::new();
        w.verifiers = w.verifiers.into_iter().map(|v| stored(v, 1)).collect();
        for (name, cidr) in [("a", "192.0.2.0/28"), ("b", "198.51.100.0/28"), ("c", "203.0.113.0/28")] {
            let reg = stored(registration("sapporo", name, Environment::Production, &[cidr], "2026-04-01", None), 1);
            w.approvals.push(stored(approve(&reg, "2026-03-05T01:00:00Z"), 1));
            w.registrations.push(reg);
        }
        w
    }

    #[test]
    fn an_unchanged_pass_reuses_everything_and_an_edit_recomputes_only_its_registration() {
        let mut w = world();
        let mut memo = Memo::default();
        let (first, stats) = pass(&w, &mut memo, "2026-05-01T00:00:00Z");
        assert_eq!(stats, MemoStats { evaluations_reused: 0, evaluations_computed: 3, plans_reused: 0, plans_computed: 3 });
        // Until the planned statuses are stored, the plans are made again (a condition would take `now`).
        let (second, stats) = pass(&w, &mut memo, "2026-05-01T00:01:00Z");
        assert_eq!(stats, MemoStats { evaluations_reused: 3, evaluations_computed: 0, plans_reused: 0, plans_computed: 3 });
        // Statuses of an older pass are not the ones the memo planned last: planned again, to the same effect.
        write_statuses(&mut w, &first);
        let (_, stats) = pass(&w, &mut memo, "2026-05-01T00:01:30Z");
        assert_eq!((stats.plans_reused, stats.plans_computed), (0, 3));
        write_statuses(&mut w, &second);
        let (_, stats) = pass(&w, &mut memo, "2026-05-01T00:01:40Z");
        assert_eq!((stats.plans_reused, stats.plans_computed), (0, 3), "the pass before planned from the first statuses");
        let (third, _) = pass(&w, &mut memo, "2026-05-01T00:01:50Z");
        write_statuses(&mut w, &third);
        let (_, stats) = pass(&w, &mut memo, "2026-05-01T00:02:00Z");
        assert_eq!(stats, MemoStats { evaluations_reused: 3, evaluations_computed: 0, plans_reused: 3, plans_computed: 0 });

        // A narrowing edit (a new generation): that registration alone is evaluated and planned again.
        w.registrations[1].spec.source_cidrs = vec!["198.51.100.0/29".into()];
        w.registrations[1].metadata.generation = Some(2);
        let (edited, stats) = pass(&w, &mut memo, "2026-05-01T00:03:00Z");
        assert_eq!(stats, MemoStats { evaluations_reused: 2, evaluations_computed: 1, plans_reused: 2, plans_computed: 1 });
        assert_eq!(
            edited.environments["production"].cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["192.0.2.0/28", "198.51.100.0/29", "203.0.113.0/28"]
        );

        // The environment's endpoints move (a new generation): every URL notice is planned again, with the new host.
        w.environments[0].spec.endpoints[0].host = "ocsp.moved.example".into();
        w.environments[0].metadata.generation = Some(2);
        let (moved, stats) = pass(&w, &mut memo, "2026-05-01T00:03:30Z");
        assert_eq!((stats.evaluations_reused, stats.plans_computed), (3, 3), "{stats:?}");
        let notice = moved.registrations.values().next().unwrap().notice.as_ref().unwrap().to_json();
        assert!(notice.to_string().contains("https://ocsp.moved.example/"), "{notice}");
        write_statuses(&mut w, &moved);

        // A deleted approval: its registration is evaluated again and stops being live.
        w.approvals.remove(2);
        let (revoked, stats) = pass(&w, &mut memo, "2026-05-01T00:04:00Z");
        assert_eq!((stats.evaluations_reused, stats.evaluations_computed), (2, 1));
        assert_eq!(revoked.environments["production"].cidrs.len(), 2);

        // A narrower policy (nothing broader than a /29): every registration is judged again, and the /28s fail it.
        w.environments[0].spec.policy.min_prefix_length_v4 = 29;
        w.environments[0].metadata.generation = Some(3);
        let (stricter, stats) = pass(&w, &mut memo, "2026-05-01T00:05:00Z");
        assert_eq!(stats.evaluations_computed, 3);
        assert_eq!(stricter.environments["production"].cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(), ["198.51.100.0/29"]);
    }

    #[test]
    fn a_milestone_date_that_comes_ends_the_evaluation_it_held_back() {
        let mut w = world();
        w.registrations.clear();
        w.approvals.clear();
        // The test environment needs the pledge on record; it is dated 2026-05-10.
        let mut sapporo = verifier("sapporo");
        sapporo.spec.procedure.as_mut().unwrap().confidentiality_pledge_received_on = Some("2026-05-10".into());
        w.verifiers[0] = stored(sapporo, 2);
        let reg = stored(registration("sapporo", "t", Environment::Test, &["192.0.2.0/28"], "2026-04-01", None), 1);
        w.approvals.push(stored(approve(&reg, "2026-03-05T01:00:00Z"), 1));
        w.registrations.push(reg);
        let mut memo = Memo::default();
        let (before, _) = pass(&w, &mut memo, "2026-05-09T14:59:59Z");
        assert_eq!(before.registrations.values().next().unwrap().resolved.reason, "ProcedureIncomplete");
        let (_, stats) = pass(&w, &mut memo, "2026-05-09T14:59:59.5Z");
        assert_eq!(stats.evaluations_reused, 1);
        // 00:00 JST on the 10th: the same objects, and the registration goes live.
        let (after, stats) = pass(&w, &mut memo, "2026-05-09T15:00:00Z");
        assert_eq!(stats.evaluations_computed, 1);
        assert!(after.registrations.values().next().unwrap().resolved.is_live());
    }

    #[test]
    fn objects_without_a_version_are_never_memoised() {
        let mut w = World::new(); // verifiers without uid
        let reg = registration("sapporo", "prod", Environment::Production, &["192.0.2.0/28"], "2026-04-01", None);
        w.approvals.push(approve(&reg, "2026-03-05T01:00:00Z")); // approvals without uid
        w.registrations.push(reg);
        let mut memo = Memo::default();
        for _ in 0..2 {
            let (_, stats) = pass(&w, &mut memo, "2026-05-01T00:00:00Z");
            assert_eq!(stats.evaluations_computed, 1);
        }
    }
}
