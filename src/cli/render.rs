//! `jpki-access render PATH... --env NAME`: the plan for forms on disk, offline.

use super::RenderFormat;
use crate::manifest::{Form, read_paths};
use crate::planner::{Objects, Plan, notice, plan};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Reads forms and plans them at `at`; read errors are returned as messages (nothing is planned from a file that
/// could not be read).
pub fn plan_paths(paths: &[PathBuf], at: jiff::Timestamp) -> Result<Plan, Vec<String>> {
    let read = read_paths(paths);
    let refused: Vec<_> = read.problems.iter().chain(read.schema_problems.iter().filter(|p| p.problem.is_error())).collect();
    if !refused.is_empty() {
        return Err(refused.iter().map(|p| format!("{}: {}: {}", p.origin, p.problem.field, p.problem.message)).collect());
    }
    let (mut verifiers, mut registrations, mut approvals, mut environments, mut records) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for doc in read.documents {
        match doc.form {
            Form::Verifier(o) => verifiers.push(o),
            Form::Registration(o) => registrations.push(o),
            Form::Approval(o) => approvals.push(o),
            Form::Environment(o) => environments.push(o),
            Form::Record(o) => records.push(o),
        }
    }
    Ok(plan(&Objects::of(&verifiers, &registrations, &approvals, &environments).with_records(&records).input(), at))
}

/// The rendered text for one environment.
pub fn render(plan: &Plan, env: &str, format: RenderFormat) -> Result<String, String> {
    let Some(e) = plan.environments.get(env) else {
        let known: Vec<&str> = plan.environments.keys().map(String::as_str).collect();
        let ignored = plan.ignored_environments.get(env).map(|(reason, why)| format!(" (ignored, {reason}: {why})")).unwrap_or_default();
        return Err(format!("no usable AccessEnvironment {env:?}{ignored}; the forms define: {}", known.join(", ")));
    };
    let registrations = plan.registrations.values().filter(|r| r.resolved.evaluation.environment == e.environment);
    let mut out = String::new();
    match format {
        RenderFormat::Yaml => {
            let notices = registrations.filter_map(|r| r.notice.as_ref());
            for child in e.children.iter().chain(notices) {
                let yaml = crate::manifest::to_yaml(&child.to_json())?;
                out.push_str("---\n");
                out.push_str(&yaml);
            }
        }
        RenderFormat::Allowlist => {
            for c in &e.cidrs {
                let _ = writeln!(out, "{c}");
            }
        }
        RenderFormat::Nft => out.push_str(&e.nft),
        RenderFormat::Notice => {
            for n in registrations.filter_map(|r| r.notice_data.as_ref()) {
                let _ = write!(out, "{}\n{}\n", notice::text_ja(n), notice::text_en(n));
            }
        }
    }
    Ok(out)
}

pub fn run(paths: &[PathBuf], env: &str, at: jiff::Timestamp, format: RenderFormat) -> i32 {
    let plan = match plan_paths(paths, at) {
        Ok(plan) => plan,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            eprintln!("jpki-access render: the forms could not be read; run `jpki-access validate` on them");
            return 1;
        }
    };
    match render(&plan, env, format) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("jpki-access render: {e}");
            return 1;
        }
    }
    for (key, r) in &plan.registrations {
        eprintln!(
            "{key}: {:?} ({}){}",
            r.resolved.phase,
            r.resolved.reason,
            if r.resolved.message.is_empty() { String::new() } else { format!(": {}", r.resolved.message) }
        );
    }
    0
}
