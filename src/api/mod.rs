//! The custom resources (API group `access.jpki.dev`, version `v1alpha1`). Types only, no I/O: these Rust types
//! are the one source of the CRD schemas in `crds/` (`jpki-access crd`).

pub mod approval;
pub mod cidr_string;
pub mod common;
pub mod environment;
pub mod record;
pub mod reference;
pub mod registration;
pub mod verifier;

pub use approval::{AccessApproval, AccessApprovalSpec, Decision};
pub use cidr_string::CidrString;
pub use common::{Environment, JstDate, ProvisionMethod, ProvisionMethods};
pub use environment::{AccessEnvironment, AccessEnvironmentSpec};
pub use record::{AccessRecord, AccessRecordSpec};
pub use registration::{AccessRegistration, AccessRegistrationSpec, ConnectionMethod, RegistrationPhase};
pub use verifier::{OrganizationType, SignatureVerifier, SignatureVerifierSpec, VerifierRole};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD of the operator, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![SignatureVerifier::crd(), AccessRegistration::crd(), AccessApproval::crd(), AccessEnvironment::crd(), AccessRecord::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly as committed in `crds/`.
pub fn crds_yaml() -> Result<String, String> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&crate::manifest::to_yaml(&crd)?);
    }
    Ok(out)
}
