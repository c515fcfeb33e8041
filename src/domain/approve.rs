//! Building the 承認書 for a registration: an `AccessApproval` that records the decision, the registration's uid,
//! the digest of its spec as it stands, and (when approved) a full copy of that spec. Used by `kubectl jpki
//! approve` and `jpki-access approve`, always on the registration as the API server stored it.

use super::digest::digest_of;
use crate::api::approval::{AccessApprovalSpec, Decision};
use crate::api::{AccessApproval, AccessRegistration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

/// Why no approval can be built.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error(
        "AccessRegistration {0} has no metadata.uid: a decision is bound to the stored object, so decide on the live one (kubectl jpki approve NAME -n NAMESPACE, or a file from kubectl get -o yaml)"
    )]
    NotStored(String),
    #[error("cannot compute the digest: {0}")]
    Digest(#[from] serde_json::Error),
}

impl ApproveError {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ApproveError::NotStored(_) => "not-stored",
            ApproveError::Digest(_) => "digest",
        }
    }
}

/// Digest of a registration's spec: what an approval's `specDigest` refers to, and the digest of its `approved`.
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
) -> Result<AccessApproval, ApproveError> {
    let uid = reg.metadata.uid.clone().filter(|u| !u.is_empty()).ok_or_else(|| ApproveError::NotStored(reg.name_any()))?;
    let digest = registration_digest(reg)?;
    let suffix = match decision {
        Decision::Approved => "approved",
        Decision::Rejected => "rejected",
    };
    // Named after the registration and the object and content decided on, so deciding twice on the same content of
    // the same object collides (the API server refuses the duplicate), while a decision on new content, or on the
    // same content filed again as a new object, gets a new name.
    let hex = super::digest::digest_bytes(format!("{uid}\n{digest}").as_bytes());
    let hex = hex.trim_start_matches("sha256:");
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
            registration_uid: uid,
            decision,
            spec_digest: digest,
            approved: (decision == Decision::Approved).then(|| reg.spec.clone()),
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
