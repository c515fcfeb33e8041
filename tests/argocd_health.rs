//! The Argo CD health checks of gitops/argocd: every fixture under gitops/argocd/fixtures/<Kind>/ is run
//! in Argo CD's Lua sandbox (gopher-lua as Argo CD configures it: tests/argocdlua) with the script
//! gitops/argocd/health/<Kind>.lua, and
//! must get the health its `# expect:` header names; argocd-cm-patch.yaml must embed exactly those scripts.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const KEY_PREFIX: &str = "resource.customizations.health.access.jpki.dev_";
const HEALTH: [&str; 6] = ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"];

fn argocd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gitops/argocd")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Sorted entries of a directory (names and paths).
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// The kinds that have a script: health/<Kind>.lua.
fn scripts() -> Vec<(String, String)> {
    entries(&argocd().join("health")).into_iter().filter_map(|(name, path)| name.strip_suffix(".lua").map(|kind| (kind.to_string(), read(&path)))).collect()
}

/// The kinds of the operator's CRDs, from crds/jpki-access.crds.yaml.
fn crd_kinds() -> BTreeSet<String> {
    let text = read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds/jpki-access.crds.yaml"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let crd: Value = serde::Deserialize::deserialize(doc).unwrap();
            crd["spec"]["names"]["kind"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Argo CD's Lua sandbox (tests/argocdlua, built by `scripts/controlplane build`): gopher-lua with only the
/// package, base and table libraries, as Argo CD runs health scripts unless an override sets `useOpenLibs`.
/// Fails (never skips) when it is missing: these checks are the only test of the scripts.
fn argocd_lua() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testenv/argocd-lua");
    assert!(bin.exists(), "{} missing: run scripts/controlplane build (it builds tests/argocdlua; scripts/test does)", bin.display());
    bin
}

/// Runs health scripts on objects the way Argo CD does (`obj` set, the table the script returns read as
/// {status, message}), all in one process; returns (status, message) or the Lua error for each.
fn health_all(cases: &[(&str, &Value)]) -> Vec<Result<(String, String), String>> {
    let mut input = String::new();
    for (script, obj) in cases {
        input.push_str(&serde_json::json!({"script": script, "obj": obj}).to_string());
        input.push('\n');
    }
    let mut child = Command::new(argocd_lua()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "argocd-lua failed: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), cases.len(), "argocd-lua answered {} of {} cases", answers.len(), cases.len());
    answers
        .into_iter()
        .map(|a| match a["error"].as_str() {
            Some(e) => Err(format!("Lua error in Argo CD's sandbox: {e}")),
            None => Ok((a["status"].as_str().unwrap_or_default().to_string(), a["message"].as_str().unwrap_or_default().to_string())),
        })
        .collect()
}

struct Fixture {
    kind: String,
    case: String,
    expect: String,
    contains: Option<String>,
    object: Value,
}

/// Every fixture, with the expectation from its header (`# expect: Healthy`, optional `# message contains: ...`).
fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for (kind, dir) in entries(&argocd().join("fixtures")) {
        for (name, path) in entries(&dir) {
            let Some(case) = name.strip_suffix(".yaml") else {
                continue;
            };
            let text = read(&path);
            let header = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix)).map(|v| v.trim().to_string());
            let expect = header("# expect:").unwrap_or_else(|| panic!("{}: no `# expect: <health>` header", path.display()));
            assert!(HEALTH.contains(&expect.as_str()), "{}: `{expect}` is not an Argo CD health status", path.display());
            // The fixture must be an object the operator's types accept (no unknown or mistyped field).
            let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            match jpki_access::manifest::read_value(yaml) {
                Ok(Some(form)) => assert_eq!(form.kind(), kind, "{}: kind of a fixture in fixtures/{kind}", path.display()),
                Ok(None) => panic!("{}: not an access.jpki.dev object", path.display()),
                Err((_, problems)) => {
                    panic!("{}: not a valid {kind}: {problems:?}", path.display())
                }
            }
            out.push(Fixture {
                kind: kind.clone(),
                case: case.to_string(),
                expect,
                contains: header("# message contains:"),
                object: serde_yaml::from_str(&text).unwrap(),
            });
        }
    }
    out
}

#[test]
fn every_fixture_gets_its_expected_health() {
    let scripts = scripts();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let fixtures = fixtures();
    let cases: Vec<(&str, &Value)> = fixtures
        .iter()
        .map(|f| {
            let Some((_, script)) = scripts.iter().find(|(k, _)| *k == f.kind) else {
                panic!("fixtures/{} has no script health/{}.lua", f.kind, f.kind);
            };
            (script.as_str(), &f.object)
        })
        .collect();
    for (f, result) in fixtures.iter().zip(health_all(&cases)) {
        let name = format!("{}/{}", f.kind, f.case);
        match result {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok((status, message)) => {
                report.push(format!("{name:<40} {status:<12} {message}"));
                if status != f.expect {
                    failures.push(format!("{name}: expected {}, got {status} ({message})", f.expect));
                }
                if (status == "Degraded" || status == "Progressing") && message.is_empty() {
                    failures.push(format!("{name}: {status} without a message"));
                }
                if let Some(part) = &f.contains
                    && !message.contains(part.as_str())
                {
                    failures.push(format!("{name}: message {message:?} does not contain {part:?}"));
                }
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "health checks disagree with their fixtures:\n{}", failures.join("\n"));
}

#[test]
fn every_kind_has_a_script_and_fixtures_of_each_outcome() {
    let kinds: BTreeSet<String> = scripts().into_iter().map(|(k, _)| k).collect();
    // AccessRecord and the signed allowlist (AccessAllowlist, AccessAllowlistShard) are written by the controller alone
    // and never kept in a GitOps repository: no health to compute.
    let forms: BTreeSet<String> =
        crd_kinds().into_iter().filter(|k| !["AccessRecord", "AccessAllowlist", "AccessAllowlistShard"].contains(&k.as_str())).collect();
    assert_eq!(kinds, forms, "gitops/argocd/health must hold one <Kind>.lua per CRD kind of a form");
    let all = fixtures();
    for kind in &kinds {
        let of = |expect: &str| all.iter().filter(|f| f.kind == *kind && f.expect == expect).count();
        assert!(of("Healthy") > 0 && of("Progressing") > 0, "fixtures/{kind} needs a Healthy and a Progressing case");
        assert!(
            all.iter().any(|f| f.kind == *kind && f.case == "stale-generation" && f.expect == "Progressing"),
            "fixtures/{kind} needs stale-generation.yaml (Progressing)"
        );
        if kind == "AccessRegistration" || kind == "AccessEnvironment" {
            assert!(of("Degraded") > 0, "fixtures/{kind} needs a Degraded case");
        }
    }
}

#[test]
fn scripts_share_one_core() {
    // Argo CD scripts cannot import each other: the common part is copied, and must stay the same everywhere.
    let core = |script: &str| {
        let start = script.find("-- BEGIN shared core").expect("no `-- BEGIN shared core` line");
        let end = script.find("-- END shared core").expect("no `-- END shared core` line");
        script[start..end].to_string()
    };
    let scripts = scripts();
    let (first_kind, first) = &scripts[0];
    for (kind, script) in &scripts[1..] {
        assert!(core(script) == core(first), "the shared core of health/{kind}.lua differs from health/{first_kind}.lua");
    }
}

#[test]
fn argocd_cm_patch_embeds_exactly_the_scripts() {
    let path = argocd().join("argocd-cm-patch.yaml");
    let patch: Value = serde_yaml::from_str(&read(&path)).unwrap();
    assert_eq!(patch["apiVersion"], "v1");
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    assert_eq!(patch["metadata"]["namespace"], "argocd");
    let data = patch["data"].as_object().expect("argocd-cm-patch.yaml has no data");
    let scripts = scripts();
    let expected: BTreeSet<String> = scripts.iter().map(|(k, _)| format!("{KEY_PREFIX}{k}")).collect();
    let found: BTreeSet<String> = data.keys().cloned().collect();
    let stale = "argocd-cm-patch.yaml is stale: run gitops/argocd/generate.sh and commit it";
    assert_eq!(found, expected, "{stale}");
    for (kind, script) in &scripts {
        assert!(data[&format!("{KEY_PREFIX}{kind}")] == script.as_str(), "{stale} (health/{kind}.lua differs)");
    }
}

#[test]
fn objects_reach_the_sandbox_intact() {
    let obj = serde_json::json!({"s": "a\"b\\c\nd\te\u{1}f 札幌", "n": [1, -2.5, true], "k\"ey": {}});
    let script = "return {status = 'Healthy', message = obj.s .. '|' .. obj.n[1] .. '|' .. obj.n[2] .. '|' .. tostring(obj.n[3]) .. '|' .. type(obj['k\"ey'])}";
    let answers = health_all(&[(script, &obj)]);
    let (status, message) = answers[0].clone().unwrap();
    assert_eq!(status, "Healthy");
    assert_eq!(message, "a\"b\\c\nd\te\u{1}f 札幌|1|-2.5|true|table");
}

/// What Argo CD's sandbox lacks, the runner lacks too: the string library (unless `useOpenLibs`), io and os.
#[test]
fn the_sandbox_has_no_string_io_or_os_library() {
    let obj = serde_json::json!({});
    for script in ["return {status = string.match('a', 'a') and 'Healthy'}", "io.write('x') return {status = 'Healthy'}", "return {status = os.getenv('HOME')}"]
    {
        assert!(health_all(&[(script, &obj)])[0].is_err(), "{script} ran in the sandbox");
    }
    assert_eq!(health_all(&[("return {status = 'Fine'}", &obj)])[0], Ok(("Unknown".into(), "Lua returned an invalid health status".into())));
}
