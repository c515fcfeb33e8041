//! `jpki-access approve FILE --by USER`: prints the approval of a registration read from a file written by `kubectl
//! get -o yaml` (a decision binds to the stored object's uid, which only such a file carries). Against a cluster,
//! `kubectl jpki approve NAME -n NAMESPACE` reads the live object itself.

use crate::api::approval::Decision;
use crate::domain::approve::approval_for;
use crate::manifest::{Form, read_paths};
use kube::ResourceExt;
use std::path::Path;

pub fn run(path: &Path, registration: Option<&str>, by: &str, reject: bool, comment: Option<String>, at: Option<jiff::Timestamp>) -> i32 {
    let read = read_paths(&[path.to_path_buf()]);
    if let Some(p) = read.problems.first() {
        eprintln!(
            "jpki-access approve: {}: {}: {} (run `jpki-access validate {}` for every problem)",
            p.origin,
            p.problem.field,
            p.problem.message,
            path.display()
        );
        return 1;
    }
    let candidates: Vec<_> = read
        .documents
        .iter()
        .filter_map(|d| match &d.form {
            Form::Registration(r) if registration.is_none_or(|name| r.name_any() == name) => Some(r),
            _ => None,
        })
        .collect();
    let reg = match candidates.as_slice() {
        [one] => *one,
        [] => {
            eprintln!("jpki-access approve: no AccessRegistration{} in {}", registration.map(|n| format!(" named {n:?}")).unwrap_or_default(), path.display());
            return 1;
        }
        many => {
            let names: Vec<String> = many.iter().map(|r| r.name_any()).collect();
            eprintln!("jpki-access approve: {} holds several registrations ({}); choose one with --registration NAME", path.display(), names.join(", "));
            return 1;
        }
    };
    let decision = if reject { Decision::Rejected } else { Decision::Approved };
    let at = at.unwrap_or_else(jiff::Timestamp::now);
    match approval_for(reg, decision, by, at, comment).map(|a| serde_json::to_value(&a).map_err(|e| e.to_string()).and_then(|v| crate::manifest::to_yaml(&v))) {
        Ok(Ok(yaml)) => {
            print!("{yaml}");
            0
        }
        Ok(Err(e)) => {
            eprintln!("jpki-access approve: cannot write YAML: {e}");
            1
        }
        Err(e) => {
            eprintln!("jpki-access approve: {e}");
            1
        }
    }
}
