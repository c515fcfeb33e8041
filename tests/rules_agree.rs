//! `validate` and the controller's planner give the same verdict on every fixture (issue 17, acceptance 2): each
//! case of tests/fixtures/invalid, read with examples/ as its context, is judged by `jpki-access validate` (its JSON
//! report, through the binary) and by the planner over the same objects; for each object of the case, both refuse
//! it or neither does, and the planner's reason is among the reasons `validate` gives for it. The examples
//! themselves, with approvals made on them as the API server would store them, are accepted by both.
#![allow(clippy::unwrap_used, clippy::panic)]

use jpki_access::manifest::{Form, read_paths};
use jpki_access::planner::{Objects, Plan, plan};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const NOW: &str = "2026-12-01T00:00:00Z";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `validate --output json` through the binary: error reasons per `Kind/name` of `file`.
fn validate(paths: &[&Path], file: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jpki-access")).args(["validate", "--output", "json", "--at", NOW]).args(paths).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut by_object: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in report["problems"].as_array().unwrap() {
        if p["file"].as_str() == Some(file.to_str().unwrap()) && p["severity"] == "error" {
            let object = p["object"].as_str().unwrap_or("<document>").to_string();
            by_object.entry(object).or_default().insert(p["reason"].as_str().unwrap().to_string());
        }
    }
    by_object
}

/// The planner's verdict on `kind/name` (namespace from the case): `None` when it accepts the object.
fn planner_verdict(plan: &Plan, kind: &str, namespace: Option<&str>, name: &str) -> Option<String> {
    match kind {
        "AccessRegistration" => {
            let key = jpki_access::planner::liveness::RegKey { namespace: namespace.unwrap_or_default().into(), name: name.into() };
            let r = &plan.registrations[&key].resolved;
            use jpki_access::api::RegistrationPhase::*;
            matches!(r.phase, Invalid | Conflict | Rejected).then(|| r.reason.as_str().to_string())
        }
        "AccessApproval" => {
            let v = &plan.approvals[&(namespace.unwrap_or_default().to_string(), name.to_string())];
            (!v.accepted).then(|| v.reason.as_str().to_string())
        }
        "SignatureVerifier" => plan.refused_verifiers.get(name).map(|(r, _)| r.as_str().to_string()),
        "AccessEnvironment" => plan.ignored_environments.get(name).map(|(r, _)| r.as_str().to_string()),
        other => panic!("unexpected kind {other}"),
    }
}

/// Each object read: its file, kind, namespace and name.
type ObjectsRead = Vec<(PathBuf, String, Option<String>, String)>;

fn plan_of(paths: &[&Path]) -> (Plan, ObjectsRead) {
    let read = read_paths(&paths.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>());
    let (mut v, mut r, mut a, mut e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut objects = Vec::new();
    // What the API server would refuse to store never reaches a controller.
    let refused_by_server: BTreeSet<(PathBuf, usize)> =
        read.schema_problems.iter().filter(|p| p.problem.is_error()).map(|p| (p.origin.file.clone(), p.origin.document)).collect();
    for doc in read.documents.into_iter().filter(|d| !refused_by_server.contains(&(d.origin.file.clone(), d.origin.document))) {
        let meta = doc.form.meta();
        objects.push((doc.origin.file.clone(), doc.form.kind().to_string(), meta.namespace.clone(), meta.name.clone().unwrap_or_default()));
        match doc.form {
            Form::Verifier(o) => v.push(o),
            Form::Registration(o) => r.push(o),
            Form::Approval(o) => a.push(o),
            Form::Environment(o) => e.push(o),
            Form::Record(_) => {}
        }
    }
    (plan(&Objects::of(&v, &r, &a, &e).input(), NOW.parse().unwrap()), objects)
}

#[test]
fn validate_and_the_planner_agree_on_every_fixture() {
    let examples = root().join("examples");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    cases.sort();
    let mut disagreements = Vec::new();
    let mut compared = 0;
    for case in &cases {
        let paths = [examples.as_path(), case.as_path()];
        let validated = validate(&paths, case);
        let (plan, objects) = plan_of(&paths);
        let in_case: Vec<_> = objects.iter().filter(|(file, ..)| file == case).collect();
        if in_case.is_empty() {
            // Nothing readable: the API server would refuse it too, and no planner ever sees it.
            if validated.is_empty() {
                disagreements.push(format!("{}: unreadable, but validate refuses nothing", case.display()));
            }
            continue;
        }
        for (_, kind, namespace, name) in in_case {
            compared += 1;
            let offline = validated.get(&format!("{kind}/{name}")).cloned().unwrap_or_default();
            let planner = planner_verdict(&plan, kind, namespace.as_deref(), name);
            let agree = match &planner {
                None => offline.is_empty(),
                Some(reason) => offline.contains(reason),
            };
            if !agree {
                disagreements.push(format!("{}: {kind}/{name}: planner {planner:?}, validate {offline:?}", case.display()));
            }
        }
    }
    assert!(compared >= 60, "only {compared} objects compared");
    assert!(disagreements.is_empty(), "{} disagreements:\n{}", disagreements.len(), disagreements.join("\n"));
}
