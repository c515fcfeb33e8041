//! `jpki-access validate PATH...`: the offline gate a GitOps repository runs in its own CI.

use super::OutputFormat;
use crate::domain::cross::{FormSet, ObjectKey, validate_set};
use crate::domain::problem::{Problem, Severity};
use crate::domain::rules::Reason;
use crate::manifest::{Form, Origin, ReadResult, read_paths};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// One line of the report.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// 1-based position of the YAML document in its file (0: the file itself).
    pub document: usize,
    /// `Kind/name`, when the document could be read that far.
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub field: String,
    pub severity: Severity,
    /// The rule's typed reason, as the controller puts it in a condition (see `crate::domain::rules::Reason`).
    pub reason: Reason,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: ", self.file, self.document)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: {}", self.message)
    }
}

#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub files: usize,
    pub objects: usize,
    pub other_documents: usize,
    pub errors: usize,
    pub warnings: usize,
    pub problems: Vec<Finding>,
}

/// Reads and validates everything under `paths` at `now` (the procedure's gates depend on the date).
pub fn validate_paths(paths: &[PathBuf], now: jiff::Timestamp) -> Report {
    validate_read(read_paths(paths), now)
}

/// Validates what was read (by [`read_paths`] or [`crate::manifest::read_text`]): the read problems, duplicate
/// definitions, every single-object and cross-object rule of the rule engine, and the planner's verdict on
/// conflicts between approved registrations. The fuzz targets call this on text without files.
pub fn validate_read(read: ReadResult, now: jiff::Timestamp) -> Report {
    let mut report = Report { files: read.files, objects: read.documents.len(), other_documents: read.other_documents, ..Default::default() };
    for p in &read.problems {
        report.problems.push(finding(&p.origin, p.object.clone(), None, &p.problem));
    }

    // The first definition of an object wins; a second one with the same kind, namespace and name is an error.
    let mut origins: HashMap<ObjectKey, Origin> = HashMap::new();
    let mut set = FormSet::default();
    for doc in &read.documents {
        let meta = doc.form.meta();
        let key = ObjectKey { kind: doc.form.kind(), namespace: meta.namespace.clone(), name: meta.name.clone().unwrap_or_default() };
        if key.name.is_empty() {
            report.problems.push(finding(
                &doc.origin,
                Some(format!("{}/<unnamed>", key.kind)),
                None,
                &Problem::error("metadata.name", "every form needs a name"),
            ));
            continue;
        }
        if let Some(first) = origins.get(&key) {
            report.problems.push(finding(
                &doc.origin,
                Some(format!("{}/{}", key.kind, key.name)),
                key.namespace.clone(),
                &Problem::error("metadata.name", format!("defined twice: first at {first}")),
            ));
            continue;
        }
        origins.insert(key, doc.origin.clone());
        match &doc.form {
            Form::Verifier(o) => set.verifiers.push(o),
            Form::Registration(o) => set.registrations.push(o),
            Form::Approval(o) => set.approvals.push(o),
            Form::Environment(o) => set.environments.push(o),
            Form::Record(_) => {} // history, not a form: nothing to judge
        }
    }
    let mut findings = validate_set(&set, now);
    // Conflicts between approved registrations are the planner's to decide (in time, by place in line): ask it.
    let objects = crate::planner::Objects {
        verifiers: set.verifiers.clone(),
        registrations: set.registrations.clone(),
        approvals: set.approvals.clone(),
        environments: set.environments.clone(),
        records: Vec::new(),
    };
    // Only approved registrations can be in conflict: without an approval among the files, there is nothing to ask.
    let plan = if set.approvals.is_empty() { crate::planner::Plan::default() } else { crate::planner::plan(&objects.input(), now) };
    for reg in &set.registrations {
        let Some(planned) = plan.registrations.get(&crate::planner::liveness::RegKey::of(reg)) else {
            continue;
        };
        if planned.resolved.phase == crate::api::RegistrationPhase::Conflict {
            findings.entry(ObjectKey::of(*reg)).or_default().push(Problem::refusal(Reason::Conflict, "spec.sourceCidrs", planned.resolved.message.clone()));
        }
    }
    for (key, problems) in findings {
        let Some(origin) = origins.get(&key) else {
            continue;
        };
        for problem in &problems {
            report.problems.push(finding(origin, Some(format!("{}/{}", key.kind, key.name)), key.namespace.clone(), problem));
        }
    }
    // What the API server would refuse, unless a rule of ours already says it (with a better message) of that field.
    for p in &read.schema_problems {
        let said = report.problems.iter().any(|f| {
            f.file == p.origin.file.display().to_string()
                && f.document == p.origin.document
                && f.object == p.object
                && f.field == p.problem.field
                && f.severity == Severity::Error
        });
        if !said {
            report.problems.push(finding(&p.origin, p.object.clone(), None, &p.problem));
        }
    }
    report.problems.sort_by(|a, b| (&a.file, a.document, &a.field).cmp(&(&b.file, b.document, &b.field)));
    report.errors = report.problems.iter().filter(|p| p.severity == Severity::Error).count();
    report.warnings = report.problems.len() - report.errors;
    report
}

fn finding(origin: &Origin, object: Option<String>, namespace: Option<String>, problem: &Problem) -> Finding {
    Finding {
        file: origin.file.display().to_string(),
        document: origin.document,
        object,
        namespace,
        field: problem.field.clone(),
        severity: problem.severity,
        reason: problem.reason,
        message: problem.message.clone(),
    }
}

pub fn run(paths: &[PathBuf], output: OutputFormat, strict: bool, at: Option<jiff::Timestamp>) -> i32 {
    let report = validate_paths(paths, at.unwrap_or_else(jiff::Timestamp::now));
    match output {
        OutputFormat::Text => {
            for p in &report.problems {
                println!("{p}");
            }
        }
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("jpki-access validate: cannot write JSON: {e}");
                return 1;
            }
        },
    }
    eprintln!(
        "validated {} forms in {} files ({} other documents skipped): {} errors, {} warnings",
        report.objects, report.files, report.other_documents, report.errors, report.warnings
    );
    if report.errors > 0 || (strict && report.warnings > 0) { 1 } else { 0 }
}
