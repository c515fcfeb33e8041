//! The committed CRDs match the Rust types; their CEL rules hold offline (kube's CEL evaluator) and on the real
//! API server, including the immutability rules that only an update can show.
#![allow(clippy::unwrap_used, clippy::panic)]

#[cfg(feature = "cluster-tests")]
mod support;

use jpki_access::api::{AccessApproval, AccessEnvironment, AccessRegistration, SignatureVerifier};
use jpki_access::manifest::{Form, read_paths};
use kube::core::cel::{validate_cel, validate_cel_update};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_crds_match_the_rust_types() {
    let committed = std::fs::read_to_string(root().join("crds/jpki-access.crds.yaml")).unwrap();
    let generated = jpki_access::api::crds_yaml().unwrap();
    assert!(committed == generated, "crds/jpki-access.crds.yaml is stale: run `cargo run -- crd > crds/jpki-access.crds.yaml` and commit it");
}

#[test]
fn the_committed_field_reference_matches_the_types() {
    let committed = std::fs::read_to_string(root().join("docs/crd-reference.md")).unwrap_or_default();
    assert!(
        committed == jpki_access::api::reference::markdown(),
        "docs/crd-reference.md is stale: run `cargo run -- crd --reference > docs/crd-reference.md` and commit it"
    );
}

#[test]
fn every_list_and_string_of_the_specs_is_bounded() {
    // Unbounded strings and lists make the API server's CEL cost estimate explode; walk every schema.
    fn walk(path: &str, schema: &serde_json::Value, unbounded: &mut Vec<String>) {
        match schema["type"].as_str() {
            Some("string") if schema.get("maxLength").is_none() && schema.get("enum").is_none() && schema.get("format").is_none_or(|f| f != "date-time") => {
                unbounded.push(path.to_string())
            }
            Some("array") => {
                if schema.get("maxItems").is_none() {
                    unbounded.push(path.to_string());
                }
                walk(&format!("{path}[]"), &schema["items"], unbounded);
            }
            Some("object") => {
                if let Some(props) = schema["properties"].as_object() {
                    for (name, sub) in props {
                        walk(&format!("{path}.{name}"), sub, unbounded);
                    }
                }
                if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    if schema.get("maxProperties").is_none() {
                        unbounded.push(format!("{path}{{}}"));
                    }
                    walk(&format!("{path}{{}}"), additional, unbounded);
                }
            }
            _ => {}
        }
    }
    let mut unbounded = Vec::new();
    for crd in jpki_access::api::all_crds() {
        let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        let kind = &crd.spec.names.kind;
        walk(&format!("{kind}.spec"), &schema["properties"]["spec"], &mut unbounded);
    }
    // Label values of the selector are bounded through maxProperties on the map; their length by Kubernetes.
    unbounded.retain(|p| !p.ends_with("matchLabels{}"));
    assert!(unbounded.is_empty(), "unbounded: {unbounded:#?}");
}

/// `kubectl explain` shows a property's description: every property of every kind's spec and status must have one.
#[test]
fn every_property_has_a_description_for_kubectl_explain() {
    fn walk(path: &str, schema: &serde_json::Value, undescribed: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_object() {
            for (name, sub) in props {
                let here = format!("{path}.{name}");
                if sub.get("description").and_then(|d| d.as_str()).is_none_or(|d| d.trim().is_empty()) {
                    undescribed.push(here.clone());
                }
                walk(&here, sub, undescribed);
            }
        }
        for nested in ["items", "additionalProperties"] {
            if let Some(sub) = schema.get(nested).filter(|s| s.is_object()) {
                walk(&format!("{path}[]"), sub, undescribed);
            }
        }
    }
    let mut undescribed = Vec::new();
    for crd in jpki_access::api::all_crds() {
        let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        let kind = &crd.spec.names.kind;
        for part in ["spec", "status"] {
            if let Some(sub) = schema["properties"].get(part) {
                walk(&format!("{kind}.{part}"), sub, &mut undescribed);
            }
        }
    }
    assert!(undescribed.is_empty(), "{} properties without a description (kubectl explain shows nothing): {undescribed:#?}", undescribed.len());
}

fn examples() -> Vec<Form> {
    read_paths(&[root().join("examples")]).documents.into_iter().map(|d| d.form).collect()
}

#[test]
fn examples_pass_the_cel_rules_offline() {
    for form in examples() {
        let result = match &form {
            Form::Verifier(o) => validate_cel::<SignatureVerifier>(o),
            Form::Registration(o) => validate_cel::<AccessRegistration>(o),
            Form::Approval(o) => validate_cel::<AccessApproval>(o),
            Form::Environment(o) => validate_cel::<AccessEnvironment>(o),
            Form::Record(o) => validate_cel::<jpki_access::api::AccessRecord>(o),
        };
        assert!(result.is_ok(), "{}: {result:?}", form.kind());
    }
}

fn production_registration() -> AccessRegistration {
    examples()
        .into_iter()
        .find_map(|f| match f {
            Form::Registration(r) if r.metadata.name.as_deref() == Some("sapporo-production-2026") => Some(r),
            _ => None,
        })
        .unwrap()
}

#[test]
fn cel_refuses_changing_verifier_or_environment_but_allows_other_edits() {
    let old = production_registration();
    let mut edited = old.clone();
    edited.spec.source_cidrs.push("198.51.100.0/24".into());
    assert!(validate_cel_update(&edited, &old).is_ok(), "ordinary edits are allowed");

    let mut moved = old.clone();
    moved.spec.verifier_ref = "hakodate-city".into();
    let err = format!("{:?}", validate_cel_update(&moved, &old).unwrap_err());
    assert!(err.contains("verifierRef is immutable"), "{err}");

    let mut switched = old.clone();
    switched.spec.environment = jpki_access::api::Environment::Test;
    let err = format!("{:?}", validate_cel_update(&switched, &old).unwrap_err());
    assert!(err.contains("environment is immutable"), "{err}");
}

#[test]
fn cel_checks_cidrs_and_check_digits_offline() {
    let mut reg = production_registration();
    for (bad, message) in [("192.0.2.1/28", "canonical form"), ("10.0.0.0/4", "too broad"), ("fe80::/64", "global unicast"), ("not-a-cidr", "must be a CIDR")] {
        reg.spec.source_cidrs = vec![bad.into()];
        let err = format!("{:?}", validate_cel(&reg).unwrap_err());
        assert!(err.contains(message), "{bad}: {err}");
    }
    let mut verifier = examples().into_iter().find_map(|f| if let Form::Verifier(v) = f { Some(v) } else { None }).unwrap();
    verifier.spec.lg_code = Some("011003".into());
    let err = format!("{:?}", validate_cel(&verifier).unwrap_err());
    assert!(err.contains("check digit"), "{err}");
}

#[cfg(feature = "cluster-tests")]
#[tokio::test]
async fn crds_install_cleanly_and_the_server_enforces_immutability() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use serde_json::json;
    use support::*;

    let client = client().await;
    install_crds(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in jpki_access::api::all_crds() {
        let stored = crds.get(crd.metadata.name.as_deref().unwrap()).await.unwrap();
        let conditions = stored.status.unwrap().conditions.unwrap();
        let status = |t: &str| conditions.iter().find(|c| c.type_ == t).map(|c| c.status.clone());
        assert_eq!(status("Established").as_deref(), Some("True"));
        assert_eq!(status("NamesAccepted").as_deref(), Some("True"));
        assert_eq!(status("NonStructuralSchema"), None, "schema must be structural");
    }

    let ns = TestNamespace::new(&client, "immutable").await;
    let regs: Api<AccessRegistration> = Api::namespaced(client.clone(), &ns.name);
    let mut reg = production_registration();
    reg.metadata.namespace = Some(ns.name.clone());
    let created = regs.create(&PostParams::default(), &reg).await.unwrap();
    let name = created.metadata.name.clone().unwrap();
    let refuse = |patch: serde_json::Value, expected: &'static str| {
        let regs = regs.clone();
        let name = name.clone();
        async move {
            let err = regs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    };
    refuse(json!({"spec": {"verifierRef": "hakodate-city"}}), "verifierRef is immutable").await;
    refuse(json!({"spec": {"environment": "Test"}}), "environment is immutable").await;
    regs.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"sourceCidrs": ["192.0.2.0/28"]}}))).await.unwrap();

    let approvals: Api<AccessApproval> = Api::namespaced(client.clone(), &ns.name);
    let mut approval = jpki_access::domain::approve::approval_for(
        &created,
        jpki_access::api::Decision::Approved,
        "approver@j-lis",
        "2026-03-05T01:00:00Z".parse().unwrap(),
        None,
    )
    .unwrap();
    approval.metadata.namespace = Some(ns.name.clone());
    let approval = approvals.create(&PostParams::default(), &approval).await.unwrap();
    let err = approvals
        .patch(
            approval.metadata.name.as_deref().unwrap(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessApproval", "spec": {"comment": "書き換え"}})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec is immutable"), "{err}");
}

/// `kubectl get` shows health at a glance (issue #23): Ready and Held on environments, so a held environment does
/// not look normal, and Reason and Due on registrations. Read from the real API server's table output.
#[cfg(feature = "cluster-tests")]
#[tokio::test]
async fn kubectl_get_shows_ready_and_held_environments_and_the_reason_and_due_date_of_registrations() {
    use support::*;
    let client = client().await;
    install_crds(&client).await;
    let name = format!("columns-{}", unique_suffix());
    let env = serde_json::json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessEnvironment", "metadata": {"name": name},
        "spec": {"environment": "Test", "serviceNamespace": "s", "podSelector": {"matchLabels": {"a": "b"}},
                 "endpoints": [{"name": "o", "provisionMethod": "Ocsp", "service": {"name": "o", "port": 1}, "host": "o.example"}]}});
    let file = std::env::temp_dir().join(format!("{name}.json"));
    std::fs::write(&file, env.to_string()).unwrap();
    kubectl_ok(&["create", "-f", path_str(&file)]);
    let status = serde_json::json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "MassRevocationHeld", "message": "held", "lastTransitionTime": "2026-12-07T00:00:00Z"},
        {"type": "Held", "status": "True", "reason": "MassRevocationHeld", "message": "held", "lastTransitionTime": "2026-12-07T00:00:00Z"}]}});
    kubectl_ok(&["patch", "accessenvironment", &name, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
    let table = kubectl_ok(&["get", "aenv", &name]);
    let _ = kubectl(&["delete", "accessenvironment", &name, "--wait=false"]);
    let _ = std::fs::remove_file(&file);
    // Columns are aligned and may be empty: read each value under its title.
    let mut lines = table.lines();
    let (header, row) = (lines.next().unwrap(), lines.next().unwrap());
    let column = |title: &str| header.find(title).and_then(|at| row.get(at..)).and_then(|rest| rest.split_whitespace().next());
    assert_eq!((column("READY"), column("HELD")), (Some("False"), Some("True")), "{table}");

    // The registrations' columns, as the API server builds its tables from them.
    let columns = kubectl_ok(&["get", "crd", "accessregistrations.access.jpki.dev", "-o", "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}"]);
    let columns: Vec<&str> = columns.split_whitespace().collect();
    assert!(columns.contains(&"Reason") && columns.contains(&"Due"), "{columns:?}");
}
