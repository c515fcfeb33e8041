//! Building the 承認書 for a registration: an `AccessApproval` that records the decision, the digest of the
//! registration's spec as it stands, and (when approved) a copy of the content approved. Used by
//! `jpki-access approve` and, later, `kubectl jpki approve`.

use super::digest::digest_of;
use crate::api::approval::{AccessApprovalSpec, ApprovedContent, Decision};
use crate::api::{AccessApproval, AccessRegistration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

/// Digest of a registration's spec: what an approval's `specDigest` refers to.
pub fn registration_digest(reg: &AccessRegistration) -> Result<String, serde_json::Error> {
    digest_of(&reg.spec)
}

/// The approval (or rejection) of `reg` as it is now, decided by `by` at `at`.
pub fn approval_for(
    reg: &AccessRegistration,
    decision: Decision,
    by: &str,
    at: jiff::Timestamp,
    comment: Option<String>,
) -> Result<AccessApproval, serde_json::Error> {
    let digest = registration_digest(reg)?;
    let approved = (decision == Decision::Approved).then(|| ApprovedContent {
        environment: reg.spec.environment,
        source_cidrs: reg.spec.source_cidrs.clone(),
        access_start_date: reg.spec.access_start_date.clone(),
        access_end_date: reg.spec.access_end_date.clone(),
        provision_methods: reg.spec.provision_methods.clone(),
    });
    let suffix = match decision {
        Decision::Approved => "approved",
        Decision::Rejected => "rejected",
    };
    // Named after the registration and the content decided on, so deciding twice on the same content collides
    // (the API server refuses the duplicate) while a decision on new content gets a new name.
    let hex = digest.trim_start_matches("sha256:");
    let name = format!("{}-{suffix}-{}", truncate_name(&reg.name_any(), 253 - 10 - suffix.len()), &hex[..8]);
    Ok(AccessApproval {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: reg.namespace(),
            labels: Some([("access.jpki.dev/registration".to_string(), truncate_name(&reg.name_any(), 63))].into()),
            ..Default::default()
        },
        spec: AccessApprovalSpec {
            registration_ref: reg.name_any(),
            decision,
            spec_digest: digest,
            approved,
            approved_by: by.to_string(),
            approved_at: at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            comment,
        },
        status: None,
    })
}

fn truncate_name(name: &str, max: usize) -> String {
    name.chars().take(max).collect::<String>().trim_end_matches('-').to_string()
}
