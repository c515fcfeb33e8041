//! Reading forms from files: folders of multi-document YAML, the layout of a GitOps repository.
//!
//! Each document is parsed once into a YAML value (which refuses duplicate keys), then into the typed object
//! while recording the path of any field the type does not know (`serde_ignored`) and the path of any type error
//! (`serde_path_to_error`), so a person is told which field of which document of which file is wrong.

use crate::api::{AccessApproval, AccessEnvironment, AccessRecord, AccessRegistration, SignatureVerifier};
use crate::domain::problem::Problem;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// YAML for people and for kubectl: every string that a YAML 1.1 reader would take for something else (a date, a
/// boolean, a number) is quoted, so the file means the same to kubectl, Argo CD, Flux and `validate`.
pub fn to_yaml<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// One form read from a file.
#[derive(Debug, Clone)]
pub enum Form {
    Verifier(SignatureVerifier),
    Registration(AccessRegistration),
    Approval(AccessApproval),
    Environment(AccessEnvironment),
    /// A durable record (`kubectl get accessrecords -o yaml`): history, read by `render`; nobody files one.
    Record(AccessRecord),
}

impl Form {
    pub fn kind(&self) -> &'static str {
        match self {
            Form::Verifier(_) => "SignatureVerifier",
            Form::Registration(_) => "AccessRegistration",
            Form::Approval(_) => "AccessApproval",
            Form::Environment(_) => "AccessEnvironment",
            Form::Record(_) => "AccessRecord",
        }
    }

    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Form::Verifier(o) => &o.metadata,
            Form::Registration(o) => &o.metadata,
            Form::Approval(o) => &o.metadata,
            Form::Environment(o) => &o.metadata,
            Form::Record(o) => &o.metadata,
        }
    }
}

/// Where a document came from: the file and its 1-based position in the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.document)
    }
}

#[derive(Debug, Clone)]
pub struct Document {
    pub origin: Origin,
    pub form: Form,
}

/// A problem met while reading, before any rule could look at the object.
#[derive(Debug, Clone)]
pub struct ReadProblem {
    pub origin: Origin,
    /// `Kind/name` when known.
    pub object: Option<String>,
    pub problem: Problem,
}

/// Everything read from the given paths.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub documents: Vec<Document>,
    pub problems: Vec<ReadProblem>,
    /// What the API server would refuse before storing an object (its schema's limits, metadata rules), apart from
    /// `problems` so `validate` can leave out what a rule of its own already says better about the same field. A
    /// document with such a problem is still read (and judged), but no cluster would ever hold it.
    pub schema_problems: Vec<ReadProblem>,
    pub files: usize,
    /// Documents of other kinds (Namespaces, ConfigMaps, …), which are not ours to judge.
    pub other_documents: usize,
}

/// Reads files and folders (recursively, `*.yaml`, `*.yml` and `*.json`, in name order: what Argo CD and Flux apply).
pub fn read_paths(paths: &[PathBuf]) -> ReadResult {
    let mut result = ReadResult::default();
    let mut files = Vec::new();
    for path in paths {
        if let Err(e) = collect_files(path, &mut files) {
            result.problems.push(ReadProblem {
                origin: Origin { file: path.clone(), document: 0 },
                object: None,
                problem: Problem::error("", format!("cannot read: {e}")),
            });
        }
    }
    for file in files {
        result.files += 1;
        match std::fs::read_to_string(&file) {
            Ok(text) => read_text(&file, &text, &mut result),
            Err(e) => result.problems.push(ReadProblem {
                origin: Origin { file, document: 0 },
                object: None,
                problem: Problem::error("", format!("cannot read: {e}")),
            }),
        }
    }
    result
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') {
            continue; // .git and editor files
        }
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
            out.push(entry);
        }
    }
    Ok(())
}

/// Reads every document of one YAML (or JSON) text.
pub fn read_text(file: &Path, text: &str, result: &mut ReadResult) {
    // A byte order mark may open a YAML stream (YAML 1.2 §5.2); editors on Windows write one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (document, problem) in crate::yaml_styles::ambiguous_scalars(text) {
        result.problems.push(ReadProblem { origin: Origin { file: file.to_path_buf(), document }, object: None, problem });
    }
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin { file: file.to_path_buf(), document: i + 1 };
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(value) => value,
            Err(e) => {
                result.problems.push(ReadProblem { origin, object: None, problem: Problem::error("", format!("not valid YAML: {e}")) });
                return; // the parser cannot find the next document after a syntax error
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        read_items(&origin, value, result, 0);
    }
}

/// `kubectl get -o yaml` of several objects writes one `v1 List`: its items are read as documents, Lists inside
/// Lists too (a form is never skipped for where it stands).
fn read_items(origin: &Origin, value: serde_yaml::Value, result: &mut ReadResult, depth: usize) {
    let is_list = value.get("apiVersion").and_then(|v| v.as_str()) == Some("v1") && value.get("kind").and_then(|v| v.as_str()) == Some("List");
    if !is_list {
        read_one(origin, value, result);
        return;
    }
    if depth >= 8 {
        result.problems.push(ReadProblem { origin: origin.clone(), object: None, problem: Problem::error("items", "Lists nested more than 8 deep") });
        return;
    }
    match value.get("items") {
        Some(serde_yaml::Value::Sequence(items)) => {
            for item in items.clone() {
                read_items(origin, item, result, depth + 1);
            }
        }
        None | Some(serde_yaml::Value::Null) => {}
        Some(_) => {
            result.problems.push(ReadProblem { origin: origin.clone(), object: None, problem: Problem::error("items", "a List's items must be a list") })
        }
    }
}

fn read_one(origin: &Origin, value: serde_yaml::Value, result: &mut ReadResult) {
    // What the API server would refuse before storing the object: its schema's limits and the metadata rules.
    let checked = value
        .get("kind")
        .and_then(serde_yaml::Value::as_str)
        .filter(|_| value.get("apiVersion").and_then(serde_yaml::Value::as_str).is_some_and(|v| v.starts_with("access.jpki.dev/")))
        .map(|kind| crate::schema_check::check(kind, &value))
        .unwrap_or_default();
    if !checked.is_empty() {
        let object = value
            .get("kind")
            .and_then(|k| k.as_str())
            .map(|k| format!("{k}/{}", value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or("<unnamed>")));
        for problem in checked {
            result.schema_problems.push(ReadProblem { origin: origin.clone(), object: object.clone(), problem });
        }
    }
    match read_value(value) {
        Ok(Some(form)) => result.documents.push(Document { origin: origin.clone(), form }),
        Ok(None) => result.other_documents += 1,
        Err((object, problems)) => {
            for problem in problems {
                result.problems.push(ReadProblem { origin: origin.clone(), object: object.clone(), problem });
            }
        }
    }
}

type ReadError = (Option<String>, Vec<Problem>);

/// Turns one YAML value into a form; `Ok(None)` for documents of other API groups.
pub fn read_value(value: serde_yaml::Value) -> Result<Option<Form>, ReadError> {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err((None, vec![Problem::error("", "not a Kubernetes object: apiVersion and kind are required")]));
    };
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or("<unnamed>");
    let object = Some(format!("{kind}/{name}"));
    let Some(version) = api_version.strip_prefix("access.jpki.dev/") else {
        return Ok(None);
    };
    if version != crate::api::common::VERSION {
        return Err((object, vec![Problem::error("apiVersion", format!("access.jpki.dev serves version {}, not {version:?}", crate::api::common::VERSION))]));
    }
    let form = match kind.as_str() {
        "SignatureVerifier" => typed(value).map(Form::Verifier),
        "AccessRegistration" => typed(value).map(Form::Registration),
        "AccessApproval" => typed(value).map(Form::Approval),
        "AccessEnvironment" => typed(value).map(Form::Environment),
        "AccessRecord" => typed(value).map(Form::Record),
        other => Err(vec![Problem::error(
            "kind",
            format!("access.jpki.dev has no kind {other:?}: SignatureVerifier, AccessRegistration, AccessApproval, AccessEnvironment or AccessRecord"),
        )]),
    };
    form.map(Some).map_err(|problems| (object, problems))
}

/// Deserialises a typed object, refusing unknown fields and naming the path of a type error.
fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, Vec<Problem>> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(json_path(&path));
    let ignored = serde_ignored::Deserializer::new(value, &mut record);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(ignored);
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        // The derived types do not hold apiVersion and kind; read_value has checked both already.
        .filter(|path| path != "apiVersion" && path != "kind")
        .map(|path| Problem::error(path, "unknown field (check its spelling and indentation; the API server would prune or refuse it)"))
        .collect();
    match parsed {
        Ok(obj) if problems.is_empty() => Ok(obj),
        Ok(_) => Err(problems),
        Err(e) => {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let hint =
                if message.contains("expected a string") && message.contains("integer") { " (quote it: YAML reads 011002 as the number 11002)" } else { "" };
            let path = if path == "." { String::new() } else { path };
            // A missing field is named itself, not by its parent (which is nothing at the top of the object).
            let field = match message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
                Some(missing) if path.is_empty() => missing.to_string(),
                Some(missing) => format!("{path}.{missing}"),
                None => path,
            };
            problems.push(Problem::error(field, format!("{message}{hint}")));
            Err(problems)
        }
    }
}

/// `spec.sourceCidrs[0]` rather than serde_ignored's `spec.sourceCidrs.0`.
fn json_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", json_path(parent)),
        Path::Map { parent, key } => {
            let parent = json_path(parent);
            if parent.is_empty() { key.clone() } else { format!("{parent}.{key}") }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => json_path(parent),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(text: &str) -> ReadResult {
        let mut result = ReadResult::default();
        read_text(Path::new("forms.yaml"), text, &mut result);
        result
    }

    const REGISTRATION: &str = "apiVersion: access.jpki.dev/v1alpha1
kind: AccessRegistration
metadata: {name: r, namespace: ns}
spec:
  verifierRef: v
  environment: Test
  connectionMethod: Lgwan
  sourceCidrs: [192.0.2.0/28]
  accessStartDate: \"2026-04-01\"
";

    #[test]
    fn reads_forms_and_counts_other_documents() {
        let text = format!("---\n{REGISTRATION}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns}}\n---\n");
        let r = read(&text);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.documents.len(), 1);
        assert_eq!(r.documents[0].origin.document, 1);
        assert_eq!(r.other_documents, 1);
    }

    #[test]
    fn a_byte_order_mark_and_nested_lists_are_read() {
        let r = read(&format!("\u{feff}{REGISTRATION}"));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.documents.len(), 1);
        let items: String = REGISTRATION.lines().map(|l| format!("      {l}\n")).collect();
        let text = format!("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items:\n    -{}", &items[5..]);
        let r = read(&text);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.documents.len(), 1, "a form in a List in a List");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let r = read(&REGISTRATION.replace("  environment: Test\n", "  environment: Test\n  environment: Production\n"));
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].problem.message.contains("duplicate"), "{:?}", r.problems);
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let r = read(&REGISTRATION.replace("  environment: Test\n", "  environment: Test\n  sourceCidr: [x]\n"));
        let fields: Vec<_> = r.problems.iter().map(|p| p.problem.field.as_str()).collect();
        assert_eq!(fields, ["spec.sourceCidr"]);
        let r = read(&REGISTRATION.replace("metadata: {name: r, namespace: ns}", "metadata: {name: r, namespace: ns, lables: {}}"));
        assert_eq!(r.problems[0].problem.field, "metadata.lables");
    }

    #[test]
    fn type_errors_name_the_field_and_hint_at_quoting() {
        let r = read(&REGISTRATION.replace("[192.0.2.0/28]", "[192.0.2.0/28, 42]"));
        assert_eq!(r.problems[0].problem.field, "spec.sourceCidrs[1]");
        let r = read(&REGISTRATION.replace("\"2026-04-01\"", "20260401"));
        assert_eq!(r.problems[0].problem.field, "spec.accessStartDate");
        assert!(r.problems[0].problem.message.contains("quote it"));
        assert_eq!(r.problems[0].object.as_deref(), Some("AccessRegistration/r"));
    }

    /// Found by the `forms` fuzz target: a form without `spec` gave a problem naming no field.
    #[test]
    fn missing_fields_are_named_with_their_path() {
        let r = read("apiVersion: access.jpki.dev/v1alpha1\nkind: AccessApproval\nmetadata: {name: a, namespace: ns}\n");
        let fields: Vec<_> = r.problems.iter().map(|p| p.problem.field.as_str()).collect();
        assert_eq!(fields, ["spec"], "{:?}", r.problems);
        let r = read("apiVersion: access.jpki.dev/v1alpha1\nkind: AccessApproval\n");
        assert_eq!(r.problems[0].problem.field, "metadata", "{:?}", r.problems);
        let r = read(&REGISTRATION.replace("  verifierRef: v\n", ""));
        assert_eq!(r.problems[0].problem.field, "spec.verifierRef", "{:?}", r.problems);
        assert!(r.problems[0].problem.message.contains("missing field `verifierRef`"), "{:?}", r.problems);
    }

    #[test]
    fn wrong_version_and_kind_of_our_group_are_refused() {
        let r = read(&REGISTRATION.replace("v1alpha1", "v1"));
        assert_eq!(r.problems[0].problem.field, "apiVersion");
        let r = read(&REGISTRATION.replace("kind: AccessRegistration", "kind: AccessRegistratoin"));
        assert_eq!(r.problems[0].problem.field, "kind");
    }

    #[test]
    fn a_kubectl_list_is_read_item_by_item() {
        let items: String = REGISTRATION.lines().map(|l| format!("  {l}\n")).collect();
        let text = format!("apiVersion: v1\nkind: List\nitems:\n-{}", &items[1..]);
        let r = read(&text);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.documents.len(), 1);
    }

    #[test]
    fn syntax_errors_give_the_location() {
        let r = read("apiVersion: v1\nkind: [unclosed\n");
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].problem.message.contains("line"), "{:?}", r.problems[0]);
    }
}
