//! `jpki-access fleet`: writes the synthetic national fleet (`crate::fleet`) as YAML folders, or creates it in a
//! cluster with bounded concurrency and progress on stderr.

use crate::fleet::{FleetSettings, VerifierBundle};
use futures::StreamExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

/// Field manager of the fleet's objects (not the controller's).
pub const FIELD_MANAGER: &str = "jpki-access-fleet";

/// Writes one file per verifier (`<out>/<prefix>/<verifier>.yaml`, its namespace and forms), plus
/// `<out>/environments.yaml` (the two AccessEnvironments of `examples/`).
pub fn write_folder(bundles: &[VerifierBundle], out: &Path) -> Result<usize, String> {
    let mut files = 0;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(out.join("environments.yaml"), ENVIRONMENTS).map_err(|e| format!("{}: {e}", out.display()))?;
    for b in bundles {
        // Folders of at most a few thousand files, by kind of body and code prefix.
        let folder = out.join(&b.name[..b.name.len().min(5)]);
        std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        let mut text = String::new();
        for object in b.objects().map_err(|e| e.to_string())? {
            text.push_str("---\n");
            text.push_str(&crate::manifest::to_yaml(&object)?);
        }
        let file = folder.join(format!("{}.yaml", b.name));
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        files += 1;
    }
    Ok(files + 1)
}

/// The two environments every fleet is planned against (the same as `examples/environments.yaml`).
pub const ENVIRONMENTS: &str = include_str!("../../examples/environments.yaml");

/// The environments' objects and the namespaces they name.
pub fn environment_objects() -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for ns in ["jpki-test", "jpki-production", "jpki-system"] {
        out.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    for doc in serde_yaml::Deserializer::from_str(ENVIRONMENTS) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Server-side applies one object of any kind; returns it as stored.
pub async fn apply_object(client: &Client, object: &Value) -> Result<DynamicObject, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await.map_err(|e| format!("{kind}/{name}: {e}"))
}

/// Records the approval of a stored registration (approved by `approver@j-lis`, `approvedAt` as given).
pub async fn approve_stored(client: &Client, stored: DynamicObject, approved_at: jiff::Timestamp) -> Result<(), String> {
    let reg: crate::api::AccessRegistration = serde_json::to_value(&stored).and_then(serde_json::from_value).map_err(|e| e.to_string())?;
    let approval =
        crate::domain::approve::approval_for(&reg, crate::api::Decision::Approved, "approver@j-lis", approved_at, None).map_err(|e| e.to_string())?;
    let api: Api<crate::api::AccessApproval> = Api::namespaced(client.clone(), approval.metadata.namespace.as_deref().unwrap_or_default());
    match api.create(&kube::api::PostParams::default(), &approval).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()), // approved by an earlier run
        Err(e) => Err(format!("AccessApproval {}: {e}", approval.metadata.name.unwrap_or_default())),
    }
}

/// Creates the bundles in the cluster: namespaces first, then verifiers and registrations, then an approval of each
/// registration as stored (bound to its uid), `concurrency` requests in flight. The approvals of registrations that
/// claim another verifier's CIDR come last, a second later (the API server's creation time orders decisions, to
/// the second), so the other keeps it. Progress goes to stderr every 10 %.
pub async fn apply_bundles(client: &Client, bundles: &[VerifierBundle], concurrency: usize, approved_at: jiff::Timestamp) -> Result<usize, String> {
    let started = Instant::now();
    let mut layers: [Vec<(Value, bool)>; 3] = Default::default();
    for b in bundles {
        layers[0].push((b.namespace.clone(), false));
        layers[1].push((b.verifier.clone(), false));
        for r in &b.registrations {
            layers[2].push((serde_json::to_value(r).map_err(|e| e.to_string())?, b.approve_last));
        }
    }
    let total: usize = layers.iter().map(Vec::len).sum::<usize>() + layers[2].len();
    let mut done = 0usize;
    let mut next_report = total / 10;
    let mut report = |done: usize| {
        if done >= next_report {
            eprintln!("fleet: {done}/{total} objects ({:.0} s)", started.elapsed().as_secs_f64());
            next_report += (total / 10).max(1);
        }
    };
    let mut stored: Vec<(DynamicObject, bool)> = Vec::new();
    for layer in &layers {
        let mut results =
            futures::stream::iter(layer.iter().map(|(o, last)| async move { (apply_object(client, o).await, *last) })).buffer_unordered(concurrency.max(1));
        while let Some((result, last)) = results.next().await {
            let object = result?;
            if object.types.as_ref().is_some_and(|t| t.kind == "AccessRegistration") {
                stored.push((object, last));
            }
            done += 1;
            report(done);
        }
    }
    let (last, first): (Vec<_>, Vec<_>) = stored.into_iter().partition(|(_, last)| *last);
    for (i, batch) in [first, last].into_iter().enumerate() {
        if i == 1 && !batch.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let mut results = futures::stream::iter(batch.into_iter().map(|(o, _)| approve_stored(client, o, approved_at))).buffer_unordered(concurrency.max(1));
        while let Some(result) = results.next().await {
            result?;
            done += 1;
            report(done);
        }
    }
    Ok(total)
}

/// `jpki-access fleet`.
pub fn run(settings: FleetSettings, out: Option<&Path>, apply: bool, concurrency: usize) -> i32 {
    let bundles = match crate::fleet::generate(&settings) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: generating the fleet: {e}");
            return 1;
        }
    };
    let registrations: usize = bundles.iter().map(|b| b.registrations.len()).sum();
    eprintln!("fleet: {} verifiers, {registrations} registrations (scale {}); approvals are made when applied", bundles.len(), settings.scale);
    if let Some(out) = out {
        match write_folder(&bundles, out) {
            Ok(files) => eprintln!("fleet: wrote {files} files under {}", out.display()),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    if apply {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let result = runtime.block_on(async {
            let client = Client::try_default().await.map_err(|e| format!("cannot reach the API server: {e}"))?;
            for object in environment_objects()? {
                apply_object(&client, &object).await?;
            }
            apply_bundles(&client, &bundles, concurrency, settings.approved_at).await
        });
        match result {
            Ok(n) => eprintln!("fleet: applied {n} objects"),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    0
}
