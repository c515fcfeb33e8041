//! `jpki-access render`: the plan of forms on disk, through the real binary; its YAML accepted by the real API
//! server (`kubectl apply --dry-run=server`), its nftables ruleset by `nft -c`.
#![allow(clippy::unwrap_used, clippy::panic)]

#[cfg(feature = "cluster-tests")]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// examples/ as the API server would store them (each registration with a uid and a creation time, as `kubectl get
/// -o yaml` writes them), and the approvals of the two test registrations and of Sapporo's production one (as
/// `jpki-access approve` prints them for such files).
fn forms() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp").arg("-r").arg(root().join("examples")).arg(dir.path().join("examples")).status().unwrap();
    assert!(status.success());
    for (i, (file, at)) in [
        ("sapporo-city/registration-test.yaml", "2026-02-01T01:00:00Z"),
        ("sample-auth-platform/registration-test.yaml", "2026-02-01T01:00:00Z"),
        ("sapporo-city/registration-production.yaml", "2026-03-05T01:00:00Z"),
        ("sample-auth-platform/registration-production.yaml", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join("examples").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let stored = text.replacen(
            "metadata:\n",
            &format!("metadata:\n  uid: 5e5e5e5e-0000-4000-8000-00000000000{i}\n  creationTimestamp: \"2026-01-05T00:00:00Z\"\n"),
            1,
        );
        std::fs::write(&path, stored).unwrap();
        if at.is_empty() {
            continue;
        }
        let approval = jpki_access(&["approve", path.to_str().unwrap(), "--by", "approver@j-lis", "--at", at]);
        assert!(approval.status.success(), "{}", String::from_utf8_lossy(&approval.stderr));
        std::fs::write(path.with_file_name(format!("approval-{i}.yaml")), approval.stdout).unwrap();
    }
    dir
}

fn jpki_access(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jpki-access")).args(args).output().unwrap()
}

fn render(dir: &Path, env: &str, at: &str, format: &str) -> String {
    let out = jpki_access(&["render", dir.to_str().unwrap(), "--env", env, "--at", at, "--format", format]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn allowlist_follows_approvals_environments_and_the_clock() {
    let dir = forms();
    let at = "2026-05-01T00:00:00+09:00";
    assert_eq!(render(dir.path(), "production", at, "allowlist"), "192.0.2.0/28\n2001:db8:10::/56\n");
    // Sapporo's test access ended on 2026-03-31; the platform operator's is open-ended.
    assert_eq!(render(dir.path(), "test", at, "allowlist"), "198.51.100.0/28\n2001:db8:30::/56\n");
    assert_eq!(render(dir.path(), "test", "2026-03-31T23:59:59+09:00", "allowlist"), "192.0.2.64/28\n198.51.100.0/28\n2001:db8:30::/56\n");
    assert_eq!(render(dir.path(), "production", "2026-03-31T23:59:59+09:00", "allowlist"), "", "production starts on 1 April");
}

#[test]
fn rendering_is_byte_identical_for_the_same_input() {
    let dir = forms();
    let at = "2026-05-01T00:00:00+09:00";
    for format in ["yaml", "nft", "notice", "allowlist"] {
        assert_eq!(render(dir.path(), "production", at, format), render(dir.path(), "production", at, format), "{format}");
    }
}

#[test]
fn notices_and_phases_are_reported() {
    let dir = forms();
    let out = jpki_access(&["render", dir.path().to_str().unwrap(), "--env", "production", "--at", "2026-05-01T00:00:00+09:00", "--format", "notice"]);
    let notice = String::from_utf8(out.stdout).unwrap();
    assert!(notice.contains("URL通知書") && notice.contains("- 署名用電子証明書 (OCSPレスポンダ方式): https://ocsp.prod.jpki.example/"), "{notice}");
    assert!(notice.contains("- user-authentication certificates (Crl): https://crl.prod.jpki.example/crl"), "{notice}");
    let phases = String::from_utf8(out.stderr).unwrap();
    assert!(phases.contains("verifier-sapporo/sapporo-production-2026: Active"), "{phases}");
    // Not approved, but the verifier's verification test (A-10) is not on record either: the procedure gate is named
    // first, since no approval could make it live.
    assert!(phases.contains("verifier-sample-auth/sample-auth-production-2026: Invalid (VerificationTestPending)"), "{phases}");
    assert!(phases.contains("verifier-sapporo/sapporo-test-2026: Expired"), "{phases}");
}

#[test]
fn an_unknown_environment_is_a_clear_error() {
    let out = jpki_access(&["render", root().join("examples").to_str().unwrap(), "--env", "staging"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("no usable AccessEnvironment \"staging\"") && stderr.contains("production, test"), "{stderr}");
}

#[test]
fn the_nft_ruleset_passes_nft_check() {
    let nft = Path::new("/usr/sbin/nft");
    assert!(nft.exists(), "nft is needed (Debian package nftables; scripts/test installs it)");
    let dir = forms();
    let ruleset = dir.path().join("ruleset.nft");
    std::fs::write(&ruleset, render(dir.path(), "production", "2026-05-01T00:00:00+09:00", "nft")).unwrap();
    // -c checks without applying; in a fresh network namespace so nothing on the host is touched.
    let out = Command::new("unshare").args(["-n", "nft", "-c", "-f"]).arg(&ruleset).output().unwrap();
    assert!(out.status.success(), "nft -c refused the ruleset: {}", String::from_utf8_lossy(&out.stderr));
}

#[cfg(feature = "cluster-tests")]
#[tokio::test]
async fn the_api_server_accepts_the_rendered_objects() {
    use support::*;
    let client = client().await;
    install_crds(&client).await;
    // The namespaces of the example (and its forms, so the notices' owners exist).
    kubectl_ok(&["apply", "--server-side", "--field-manager", FIELD_MANAGER, "-R", "-f", path_str(&root().join("examples"))]);
    let dir = forms();
    let yaml = render(dir.path(), "production", "2026-05-01T00:00:00+09:00", "yaml");
    assert!(yaml.contains("kind: NetworkPolicy") && yaml.contains("kind: Ingress") && yaml.contains("name: sapporo-production-2026-url-notice"));
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = kubectl_ok(&["apply", "--dry-run=server", "--server-side", "--field-manager", "jpki-access", "-f", path_str(&file)]);
    for object in [
        "networkpolicy.networking.k8s.io/jpki-production-default-deny",
        "networkpolicy.networking.k8s.io/jpki-production-allow-0",
        "configmap/jpki-allowlist-production",
        "configmap/jpki-allowlist-production-0",
        "ingress.networking.k8s.io/jpki-production-ocsp",
        "configmap/sapporo-production-2026-url-notice",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
}
