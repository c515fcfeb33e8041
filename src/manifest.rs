//! Reading forms from files: folders of multi-document YAML, the layout of a GitOps repository.
//!
//! Each document is parsed once into a YAML value (which refuses duplicate keys), then into the typed object
//! while recording the path of any field the type does not know (`serde_ignored`) and the path of any type error
//! (`serde_path_to_error`), so a person is told which field of which document of which file is wrong.

use crate::api::{AccessApproval, AccessEnvironment, AccessRegistration, SignatureVerifier};
use crate::domain::problem::Problem;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One form read from a file.
#[derive(Debug, Clone)]
pub enum Form {
    Verifier(SignatureVerifier),
    Registration(AccessRegistration),
    Approval(AccessApproval),
    Environment(AccessEnvironment),
}

impl Form {
    pub fn kind(&self) -> &'static str {
        match self {
            Form::Verifier(_) => "SignatureVerifier",
            Form::Registration(_) => "AccessRegistration",
            Form::Approval(_) => "AccessApproval",
            Form::Environment(_) => "AccessEnvironment",
        }
    }

    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Form::Verifier(o) => &o.metadata,
            Form::Registration(o) => &o.metadata,
            Form::Approval(o) => &o.metadata,
            Form::Environment(o) => &o.metadata,
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
    pub files: usize,
    /// Documents of other kinds (Namespaces, ConfigMaps, …), which are not ours to judge.
    pub other_documents: usize,
}

/// Reads files and folders (recursively, `*.yaml` and `*.yml`, in name order).
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
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(entry);
        }
    }
    Ok(())
}

/// Fields whose values are strings of digits. Unquoted, YAML 1.1 readers (kubectl, Argo CD, Flux) take them for
/// numbers (`011002` even as octal), while YAML 1.2 readers keep the string, so the same file would mean two
/// things. serde_yaml's value no longer shows the quoting, hence this look at the raw lines.
const DIGIT_STRING_FIELDS: [(&str, &str); 3] =
    [("lgCode", "spec.lgCode"), ("corporateNumber", "spec.corporateNumber"), ("phone", "spec.contacts[].phone")];

/// Whether a YAML 1.1 reader resolves this plain scalar to an integer: an optional sign, then digits (underscores
/// allowed). `011-000-0000` stays a string there (a dash inside is no number), which is how kubectl writes it back.
fn reads_as_yaml11_number(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    digits.starts_with(|c: char| c.is_ascii_digit()) && digits.chars().all(|c| c.is_ascii_digit() || c == '_')
}

fn unquoted_digit_strings(file: &Path, text: &str) -> Vec<ReadProblem> {
    let mut problems = Vec::new();
    let mut document = 1;
    let mut seen_content = false;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if seen_content {
                document += 1;
            }
            seen_content = false;
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        seen_content = true;
        for (field, path) in DIGIT_STRING_FIELDS {
            let value = trimmed.trim_start_matches("- ").strip_prefix(field).and_then(|rest| rest.strip_prefix(':')).map(str::trim);
            if let Some(value) = value
                && !value.is_empty()
                && reads_as_yaml11_number(value)
            {
                problems.push(ReadProblem {
                    origin: Origin { file: file.to_path_buf(), document },
                    object: None,
                    problem: Problem::error(path, format!(
                        "line {}: unquoted {value}: YAML 1.1 readers such as kubectl take it for a number (quote it: {field}: \"{value}\")",
                        number + 1
                    )),
                });
            }
        }
    }
    problems
}

/// Reads every document of one YAML text.
pub fn read_text(file: &Path, text: &str, result: &mut ReadResult) {
    result.problems.extend(unquoted_digit_strings(file, text));
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
        // `kubectl get -o yaml` of several objects writes one `v1 List`: read its items as documents.
        let items = match (value.get("apiVersion").and_then(|v| v.as_str()), value.get("kind").and_then(|v| v.as_str())) {
            (Some("v1"), Some("List")) => value.get("items").and_then(|i| i.as_sequence()).cloned().unwrap_or_default(),
            _ => vec![value],
        };
        for value in items {
            read_one(&origin, value, result);
        }
    }
}

fn read_one(origin: &Origin, value: serde_yaml::Value, result: &mut ReadResult) {
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
    let Some(version) = api_version.strip_prefix("access.jpki.dev/") else { return Ok(None) };
    if version != crate::api::common::VERSION {
        return Err((object, vec![Problem::error("apiVersion", format!(
            "access.jpki.dev serves version {}, not {version:?}", crate::api::common::VERSION
        ))]));
    }
    let form = match kind.as_str() {
        "SignatureVerifier" => typed(value).map(Form::Verifier),
        "AccessRegistration" => typed(value).map(Form::Registration),
        "AccessApproval" => typed(value).map(Form::Approval),
        "AccessEnvironment" => typed(value).map(Form::Environment),
        other => Err(vec![Problem::error("kind", format!(
            "access.jpki.dev has no kind {other:?}: SignatureVerifier, AccessRegistration, AccessApproval or AccessEnvironment"
        ))]),
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
            let hint = if message.contains("expected a string") && message.contains("integer") {
                " (quote it: YAML reads 011002 as the number 11002)"
            } else {
                ""
            };
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
    fn only_unquoted_values_yaml_11_reads_as_numbers_are_flagged() {
        for number in ["011002", "0112345678", "+81112345678", "1_000"] {
            assert!(reads_as_yaml11_number(number), "{number}");
        }
        // kubectl writes phone numbers with dashes back unquoted: they are strings in YAML 1.1 too.
        for string in ["011-000-0000", "0120-00-0000", "-", "", "01a"] {
            assert!(!reads_as_yaml11_number(string), "{string}");
        }
        let flagged = unquoted_digit_strings(Path::new("v.yaml"), "spec:\n  lgCode: 011002\n  contacts:\n  - phone: 011-000-0000\n  - phone: 0112345678\n");
        let lines: Vec<_> = flagged.iter().map(|p| p.problem.message.split(':').next().unwrap_or_default().to_string()).collect();
        assert_eq!(lines, ["line 2", "line 5"]);
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
