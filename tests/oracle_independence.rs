//! Issue #19, acceptance 1: the fault tests' checker must not judge the code with the code. It lives in its own
//! crate (tests/oracle), and that crate may not depend on jpki-access, nor name its modules in its source: a bug the
//! planner, the agent's allowlist reader or its nft parser has cannot be shared with the oracle.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

#[test]
fn the_oracle_crate_does_not_depend_on_the_code_it_judges() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let dependencies = manifest.split("[dependencies]").nth(1).expect("tests/oracle/Cargo.toml has [dependencies]");
    let names: Vec<&str> = dependencies.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k.trim())).filter(|k| !k.starts_with('[')).collect();
    assert!(names.contains(&"ring") && names.contains(&"kube"), "read the dependency table wrongly: {names:?}");
    for forbidden in ["jpki-access", "jpki_access"] {
        assert!(!manifest.contains(&format!("{forbidden} =")) && !manifest.contains(&format!("{forbidden}=")), "tests/oracle depends on {forbidden}");
    }
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            assert!(!code.contains("jpki_access"), "{}:{}: the oracle names jpki_access: {line}", path.display(), n + 1);
        }
    }
}

#[test]
fn the_fault_tests_judge_with_the_oracle_only() {
    let faults = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults.rs")).unwrap();
    for forbidden in ["planner::plan", "agent::drift", "wire::allowlist", "support::invariant"] {
        assert!(!faults.contains(forbidden), "tests/faults.rs judges with the code under test: it uses {forbidden}");
    }
    assert!(faults.contains("jpki_oracle::"), "tests/faults.rs does not use the oracle");
}
