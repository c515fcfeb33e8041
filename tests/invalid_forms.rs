//! One table of bad forms (tests/fixtures/invalid), refused offline by `validate` and, for every case the CRD
//! schema can express, by the real API server; and the examples, accepted by both.
#![allow(clippy::unwrap_used, clippy::panic)]

#[cfg(feature = "cluster-tests")]
mod support;

use jpki_access::cli::validate::validate_paths;
use jpki_access::domain::problem::Severity;
use std::path::PathBuf;

struct Case {
    path: PathBuf,
    slug: String,
    field: String,
    message: String,
    server_refuses: bool,
    text: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The instant the cases are judged at (the procedure's dated gates depend on it).
fn now() -> jiff::Timestamp {
    "2026-12-01T00:00:00Z".parse().unwrap()
}

fn cases() -> Vec<Case> {
    let dir = root().join("tests/fixtures/invalid");
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json")).collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            // JSON has no comments: a JSON case's header lines are in `<file>.header` beside it.
            let header_text = if path.extension().is_some_and(|e| e == "json") {
                std::fs::read_to_string(path.with_extension("json.header")).unwrap()
            } else {
                text.trim_start_matches('\u{feff}').to_string()
            };
            let header = |key: &str| {
                header_text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                    .unwrap_or_else(|| panic!("{}: header {key} missing", path.display()))
                    .trim()
                    .to_string()
            };
            let server = header("server");
            assert!(server == "refused" || server == "offline-only", "{}: server: {server}", path.display());
            Case { slug: header("case"), field: header("field"), message: header("message"), server_refuses: server == "refused", text, path }
        })
        .collect()
}

#[test]
fn the_table_is_large_and_covers_every_kind() {
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    for kind in ["SignatureVerifier", "AccessRegistration", "AccessApproval", "AccessEnvironment"] {
        assert!(cases.iter().any(|c| c.text.contains(&format!("kind: {kind}"))), "no case for {kind}");
    }
    let server = cases.iter().filter(|c| c.server_refuses).count();
    assert!(server >= 40, "only {server} cases are checked against the API server");
}

#[test]
fn examples_are_valid_without_warnings() {
    let report = validate_paths(&[root().join("examples")], now());
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.objects, 8, "verifiers, registrations and environments: approvals are made on the stored objects");
}

#[test]
fn validate_refuses_every_bad_form_naming_the_field() {
    let mut failures = Vec::new();
    for case in cases() {
        let report = validate_paths(&[root().join("examples"), case.path.clone()], now());
        let file = case.path.display().to_string();
        let hit =
            report.problems.iter().find(|p| p.file == file && p.severity == Severity::Error && p.field == case.field && p.message.contains(&case.message));
        if hit.is_none() {
            let mine: Vec<String> = report.problems.iter().filter(|p| p.file == file).map(|p| p.to_string()).collect();
            failures.push(format!("{}: expected an error on {:?} containing {:?}; got {mine:#?}", case.slug, case.field, case.message));
        }
    }
    assert!(failures.is_empty(), "{} cases not refused as expected:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_validate_command_prints_file_document_object_field_and_exits_1() {
    let case = root().join("tests/fixtures/invalid/16-cidr-host-bits-set.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jpki-access")).arg("validate").arg(&case).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected_prefix = format!("{}:1: AccessRegistration/case-16: spec.sourceCidrs[0]: error: ", case.display());
    let line = stdout.lines().find(|l| l.starts_with(&expected_prefix)).unwrap_or_else(|| panic!("no line starting {expected_prefix:?} in:\n{stdout}"));
    assert!(line.contains("did you mean 192.0.2.16/28"), "{line}");

    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_jpki-access")).args(["validate", "--output", "json"]).arg(root().join("examples")).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["objects"].as_u64(), report["errors"].as_u64()), (Some(8), Some(0)));
}

/// Sends one case to the real API server as raw YAML with strict field validation; `Err` carries the refusal.
#[cfg(feature = "cluster-tests")]
async fn server_create(client: &kube::Client, namespace: &str, text: &str) -> Result<String, String> {
    let kind = ["AccessRegistration", "AccessApproval", "SignatureVerifier", "AccessEnvironment"]
        .into_iter()
        .find(|k| text.contains(&format!("kind: {k}")) || text.contains(&format!("\"kind\": \"{k}\"")))
        .unwrap();
    let plural = format!("{}s", kind.to_lowercase());
    let url = match kind {
        "AccessRegistration" | "AccessApproval" => {
            format!("/apis/access.jpki.dev/v1alpha1/namespaces/{namespace}/{plural}?fieldValidation=Strict")
        }
        _ => format!("/apis/access.jpki.dev/v1alpha1/{plural}?fieldValidation=Strict"),
    };
    let body = text
        .replace("namespace: verifier-sapporo", &format!("namespace: {namespace}"))
        .replace("\"namespace\": \"verifier-sapporo\"", &format!("\"namespace\": \"{namespace}\""));
    let request = http::Request::post(&url).header("Content-Type", "application/yaml").body(body.into_bytes()).unwrap();
    match client.request_text(request).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => Err(status.message),
        Err(other) => panic!("request failed: {other}"),
    }
}

#[cfg(feature = "cluster-tests")]
#[tokio::test]
async fn the_api_server_refuses_every_case_the_schema_can_express() {
    use support::*;
    let client = client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "invalid").await;
    let mut failures = Vec::new();
    for case in cases().into_iter().filter(|c| c.server_refuses) {
        match server_create(&client, &ns.name, &case.text).await {
            Err(message) => {
                eprintln!("{}: refused: {message}", case.slug);
                // A case without a field (broken YAML) is refused as a whole; the others name their field.
                if !case.field.is_empty() && !message.contains(&case.field) {
                    let expected = &case.field;
                    failures.push(format!("{}: refused, but the message does not name {expected:?}: {message}", case.slug));
                }
            }
            Ok(created) => {
                let _ = kubectl(&["delete", "-n", &ns.name, "-f", case.path.to_str().unwrap(), "--ignore-not-found"]);
                failures.push(format!("{}: accepted by the API server: {created}", case.slug));
            }
        }
    }
    assert!(failures.is_empty(), "{} cases not refused as expected:\n{}", failures.len(), failures.join("\n"));
}

#[cfg(feature = "cluster-tests")]
#[tokio::test]
async fn the_api_server_accepts_the_examples_and_kubectl_shows_the_printer_columns() {
    use support::*;
    let client = client().await;
    install_crds(&client).await;
    let examples = root().join("examples");
    kubectl_ok(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-R", "-f", path_str(&examples)]);
    let table = kubectl_ok(&["get", "accessregistrations", "-n", "verifier-sapporo"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "VERIFIER", "ENVIRONMENT", "PHASE", "CIDRS", "START", "APPROVED", "REASON", "DUE", "AGE"]);
    // No approvals among the examples any more (a decision names the stored object's uid).
    let row = table.lines().find(|l| l.starts_with("sapporo-production-2026")).unwrap();
    assert!(row.contains("sapporo-city") && row.contains("Production") && row.contains("2026-04-01"), "{row}");
    for (resource, expected) in [("signatureverifiers", "札幌市"), ("accessenvironments", "jpki-production")] {
        let mut args = vec!["get"];
        args.extend(resource.split(' '));
        let out = kubectl_ok(&args);
        assert!(out.contains(expected), "kubectl get {resource}:\n{out}");
    }
    // Short names work too.
    assert!(kubectl_ok(&["get", "areg", "-A"]).contains("sample-auth-production-2026"));
}
