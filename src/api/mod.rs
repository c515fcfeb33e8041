//! The custom resources (API group `access.jpki.dev`, version `v1alpha1`). Types only, no I/O: these Rust types
//! are the one source of the CRD schemas in `crds/` (`jpki-access crd`).

pub mod approval;
pub mod cidr_string;
pub mod common;
pub mod environment;
pub mod reference;
pub mod registration;
pub mod verifier;

pub use approval::{AccessApproval, AccessApprovalSpec, ApprovedContent, Decision};
pub use cidr_string::CidrString;
pub use common::{Environment, JstDate, ProvisionMethod, ProvisionMethods};
pub use environment::{AccessEnvironment, AccessEnvironmentSpec};
pub use registration::{AccessRegistration, AccessRegistrationSpec, ConnectionMethod, RegistrationPhase};
pub use verifier::{OrganizationType, SignatureVerifier, SignatureVerifierSpec, VerifierRole};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD of the operator, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![SignatureVerifier::crd(), AccessRegistration::crd(), AccessApproval::crd(), AccessEnvironment::crd()]
}

/// The CRDs as one multi-document YAML stream, exactly as committed in `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
