//! Validation of one object at a time: every rule that needs only the object itself (and, for CIDRs, the
//! environment's policy). Each check returns the problems it found and, when there is no error, a validated value
//! with parsed types (networks, dates) that the planner works on. Rules that relate objects are in `cross`.

use super::cidr::{CidrPolicy, Overlap, check_policy, overlaps_within, parse_cidr};
use super::corporate_number::validate_corporate_number;
use super::date::parse_jst_date;
use super::lg_code::validate_lg_code;
use super::problem::{Problem, has_errors};
use crate::api::approval::{AccessApprovalSpec, Decision};
use crate::api::environment::AccessEnvironmentSpec;
use crate::api::registration::AccessRegistrationSpec;
use crate::api::verifier::{OrganizationType, SignatureVerifierSpec};
use crate::api::{CidrString, Environment, JstDate, ProvisionMethod, ProvisionMethods};
use ipnet::IpNet;
use jiff::civil::Date;
use std::collections::HashSet;

/// The outcome of checking one object: problems, and the validated value when none of them is an error.
#[derive(Debug, Clone)]
pub struct Checked<T> {
    pub value: Option<T>,
    pub problems: Vec<Problem>,
}

impl<T> Checked<T> {
    fn finish(problems: Vec<Problem>, build: impl FnOnce() -> Option<T>) -> Self {
        let value = if has_errors(&problems) { None } else { build() };
        Checked { value, problems }
    }
}

/// Parses a date field, recording a problem under `field` when it is not a real `YYYY-MM-DD` date.
fn date_field(field: &str, date: &JstDate, problems: &mut Vec<Problem>) -> Option<Date> {
    match parse_jst_date(date.as_str()) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(Problem::error(field, e.to_string()));
            None
        }
    }
}

fn optional_date(field: &str, date: Option<&JstDate>, problems: &mut Vec<Problem>) -> Option<Date> {
    date.and_then(|d| date_field(field, d, problems))
}

/// Parses a list of CIDRs: each must be valid and within `policy`; duplicates and overlaps inside the list are
/// warnings (the list still means the same set of addresses).
pub fn check_cidr_list(field: &str, cidrs: &[CidrString], policy: &CidrPolicy, problems: &mut Vec<Problem>) -> Vec<IpNet> {
    if cidrs.is_empty() {
        problems.push(Problem::error(field, "name at least one source network (CIDR)"));
    }
    let mut nets = Vec::with_capacity(cidrs.len());
    let mut positions = Vec::with_capacity(cidrs.len());
    for (i, text) in cidrs.iter().enumerate() {
        let item = format!("{field}[{i}]");
        match parse_cidr(text.as_str()).and_then(|net| check_policy(&net, policy).map(|()| net)) {
            Ok(net) => {
                nets.push(net);
                positions.push(i);
            }
            Err(e) => problems.push(Problem::error(item, e.to_string())),
        }
    }
    for (a, b, kind) in overlaps_within(&nets) {
        let (i, j) = (positions[a], positions[b]);
        let message = match kind {
            Overlap::Duplicate => format!("{} is listed twice (also at [{i}])", nets[b]),
            Overlap::Contains => format!("{} lies inside {} at [{i}]; list the wider one only", nets[b], nets[a]),
            Overlap::ContainedBy => format!("{} contains {} at [{i}]; list the wider one only", nets[b], nets[a]),
        };
        problems.push(Problem::warning(format!("{field}[{j}]"), message));
    }
    nets
}

/// A registration whose own fields are valid.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRegistration {
    pub environment: Environment,
    pub cidrs: Vec<IpNet>,
    pub start: Date,
    pub end: Option<Date>,
    pub received_on: Option<Date>,
    pub provision_methods: ProvisionMethods,
    pub official_seal: bool,
}

/// Checks a registration on its own. `policy` is the environment's CIDR policy when known (the controller and
/// `validate` with the environment in the files), else the absolute floor.
pub fn check_registration(spec: &AccessRegistrationSpec, policy: &CidrPolicy) -> Checked<ValidRegistration> {
    let mut problems = Vec::new();
    if spec.verifier_ref.trim().is_empty() {
        problems.push(Problem::error("spec.verifierRef", "name the SignatureVerifier filing this form"));
    }
    let cidrs = check_cidr_list("spec.sourceCidrs", &spec.source_cidrs, policy, &mut problems);
    let start = date_field("spec.accessStartDate", &spec.access_start_date, &mut problems);
    let end = optional_date("spec.accessEndDate", spec.access_end_date.as_ref(), &mut problems);
    let received_on = optional_date("spec.receivedOn", spec.received_on.as_ref(), &mut problems);
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        problems.push(Problem::error("spec.accessEndDate", format!("{e} is before accessStartDate {s}: the last day of access cannot precede the first")));
    }
    let provision_methods = spec.provision_methods.clone().unwrap_or_default();
    let official_seal = spec.official_seal_affixed.unwrap_or(false);
    if spec.environment == Environment::Production {
        if spec.provision_methods.is_none() {
            problems.push(Problem::error(
                "spec.provisionMethods",
                "a Production registration needs the provision methods chosen on A-11-1: signing and userAuthentication (Crl, Ocsp or None)",
            ));
        }
        if !official_seal {
            problems.push(Problem::error(
                "spec.officialSealAffixed",
                "a Production registration (A-11-2) must bear the official seal (役職印): set officialSealAffixed: true",
            ));
        }
        for (field, method) in
            [("spec.provisionMethods.signing", provision_methods.signing), ("spec.provisionMethods.userAuthentication", provision_methods.user_authentication)]
        {
            if method.is_none() && spec.provision_methods.is_some() {
                problems.push(Problem::error(
                    field,
                    "a Production registration needs the provision method chosen on A-11-1 (Crl, Ocsp, or None when this certificate type is not verified)",
                ));
            }
        }
        if provision_methods.signing == Some(ProvisionMethod::None) && provision_methods.user_authentication == Some(ProvisionMethod::None) {
            problems.push(Problem::error(
                "spec.provisionMethods",
                "at least one certificate type needs Crl or Ocsp; with None for both there is nothing to provide",
            ));
        }
    }
    if let Some(s) = spec.supersedes.as_deref()
        && s.trim().is_empty()
    {
        problems.push(Problem::error("spec.supersedes", "name the registration this one replaces, or omit the field"));
    }
    Checked::finish(problems, || {
        Some(ValidRegistration { environment: spec.environment, cidrs, start: start?, end, received_on, provision_methods, official_seal })
    })
}

/// A verifier whose own fields are valid.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidVerifier {
    pub agreement_effective: Option<Date>,
    pub pledge_received: Option<Date>,
    pub test_application_received: Option<Date>,
    pub lgwan_center_notified: Option<Date>,
    pub verification_test_completed: Option<Date>,
}

pub fn check_verifier(spec: &SignatureVerifierSpec) -> Checked<ValidVerifier> {
    let mut problems = Vec::new();
    match (spec.organization_type, spec.lg_code.as_deref(), spec.corporate_number.as_deref()) {
        (OrganizationType::LocalGovernment, None, _) => {
            problems.push(Problem::error("spec.lgCode", "a LocalGovernment is identified by its 全国地方公共団体コード (6 digits): set lgCode"))
        }
        (OrganizationType::PlatformOperator | OrganizationType::Other, _, None) => {
            problems.push(Problem::error("spec.corporateNumber", "a company or other body is identified by its 法人番号 (13 digits): set corporateNumber"))
        }
        _ => {}
    }
    if let Some(code) = spec.lg_code.as_deref() {
        if spec.organization_type != OrganizationType::LocalGovernment {
            problems.push(Problem::error("spec.lgCode", "only a LocalGovernment has a 全国地方公共団体コード; remove lgCode"));
        } else if let Err(e) = validate_lg_code(code) {
            problems.push(Problem::error("spec.lgCode", e.to_string()));
        }
    }
    if let Some(number) = spec.corporate_number.as_deref()
        && let Err(e) = validate_corporate_number(number)
    {
        problems.push(Problem::error("spec.corporateNumber", e.to_string()));
    }
    if !is_dns_label(&spec.namespace) {
        problems.push(Problem::error(
            "spec.namespace",
            format!("{:?} is not a namespace name: lowercase letters, digits and '-', at most 63, starting and ending alphanumeric", spec.namespace),
        ));
    }
    for (i, contact) in spec.contacts.iter().enumerate() {
        if let Some(email) = contact.email.as_deref()
            && !is_plausible_email(email)
        {
            problems.push(Problem::error(format!("spec.contacts[{i}].email"), format!("{email:?} is not an e-mail address")));
        }
    }
    if spec.roles.is_empty() {
        problems.push(Problem::error("spec.roles", "name at least one role: SignatureVerifier or UserAuthenticationVerifier"));
    }
    let mut seen = HashSet::new();
    for (i, role) in spec.roles.iter().enumerate() {
        if !seen.insert(role) {
            problems.push(Problem::warning(format!("spec.roles[{i}]"), format!("{role:?} is listed twice")));
        }
    }
    let agreement_effective = spec.agreement.as_ref().and_then(|a| date_field("spec.agreement.effectiveDate", &a.effective_date, &mut problems));
    if let Some(contractor) = &spec.system_contractor
        && !contractor.third_party_disclosure_notified
    {
        problems.push(Problem::warning(
            "spec.systemContractor.thirdPartyDisclosureNotified",
            "the technical specification may be disclosed to the contractor only after 複製申請書兼第三者開示通知書 (A-03-2)",
        ));
    }
    let p = spec.procedure.clone().unwrap_or_default();
    let field = |name: &str| format!("spec.procedure.{name}");
    let mut date = |name: &str, d: &Option<JstDate>| optional_date(&field(name), d.as_ref(), &mut problems);
    let _ = date("startRequestedOn", &p.start_requested_on);
    let pledge_received = date("confidentialityPledgeReceivedOn", &p.confidentiality_pledge_received_on);
    let test_application_received = date("testEnvironmentApplicationReceivedOn", &p.test_environment_application_received_on);
    let _ = date("techSpecProvidedOn", &p.tech_spec_provided_on);
    let _ = date("testCardsLentOn", &p.test_cards_lent_on);
    let lgwan_center_notified = date("lgwanCenterNotifiedOn", &p.lgwan_center_notified_on);
    let verification_test_completed = date("verificationTestCompletedOn", &p.verification_test_completed_on);
    let _ = date("testCardsReturnedOn", &p.test_cards_returned_on);
    Checked::finish(problems, || {
        Some(ValidVerifier { agreement_effective, pledge_received, test_application_received, lgwan_center_notified, verification_test_completed })
    })
}

/// An approval whose own fields are valid. `approved` is the approved content, parsed (absent for a rejection).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidApproval {
    pub decision: Decision,
    /// What the approver wrote; decisions are ordered by the server's creation time instead.
    pub approved_at: jiff::Timestamp,
    pub approved: Option<ApprovedTerms>,
}

/// The parts of an approved copy of a registration's spec that decide access.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovedTerms {
    pub environment: Environment,
    pub cidrs: Vec<IpNet>,
    pub start: Date,
    pub end: Option<Date>,
    pub supersedes: Option<String>,
    pub provision_methods: ProvisionMethods,
}

pub fn check_approval(spec: &AccessApprovalSpec) -> Checked<ValidApproval> {
    let mut problems = Vec::new();
    if !is_digest(&spec.spec_digest) {
        problems.push(Problem::error("spec.specDigest", "must be sha256: followed by 64 lowercase hex digits (see `kubectl jpki approve`)"));
    }
    if spec.registration_uid.trim().is_empty() {
        problems.push(Problem::error("spec.registrationUid", "name the uid of the registration decided on (kubectl jpki approve fills it in)"));
    }
    let approved_at = match spec.approved_at.parse::<jiff::Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(Problem::error("spec.approvedAt", format!("must be an RFC 3339 time such as 2026-03-05T10:00:00+09:00: {e}")));
            None
        }
    };
    if spec.approved_by.trim().is_empty() {
        problems.push(Problem::error("spec.approvedBy", "name the user who decided"));
    }
    let approved = match (&spec.approved, spec.decision) {
        (None, Decision::Approved) => {
            problems.push(Problem::error("spec.approved", "an Approved decision must carry a copy of the registration's spec as approved"));
            None
        }
        (None, Decision::Rejected) => None,
        (Some(copy), _) => {
            // The copy was valid when approved; judge it by the absolute floor, not today's policy.
            let checked = check_registration(copy, &CidrPolicy::ABSOLUTE_FLOOR);
            for p in checked.problems.into_iter().filter(Problem::is_error) {
                problems.push(Problem::error(p.field.replacen("spec.", "spec.approved.", 1), p.message));
            }
            checked.value.map(|v| ApprovedTerms {
                environment: v.environment,
                cidrs: v.cidrs,
                start: v.start,
                end: v.end,
                supersedes: copy.supersedes.clone(),
                provision_methods: v.provision_methods,
            })
        }
    };
    Checked::finish(problems, || Some(ValidApproval { decision: spec.decision, approved_at: approved_at?, approved }))
}

/// A Kubernetes namespace name (RFC 1123 label).
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// One `@` with something on both sides and no spaces: the same as the CRD's pattern, no more.
fn is_plausible_email(text: &str) -> bool {
    matches!(text.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !text.chars().any(char::is_whitespace)
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// An environment whose own fields are valid.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEnvironment {
    pub cidr_policy: CidrPolicy,
}

pub fn check_environment(spec: &AccessEnvironmentSpec) -> Checked<ValidEnvironment> {
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    for (i, endpoint) in spec.endpoints.iter().enumerate() {
        if !names.insert(endpoint.name.as_str()) {
            problems.push(Problem::error(format!("spec.endpoints[{i}].name"), format!("endpoint name {:?} is used twice", endpoint.name)));
        }
        if endpoint.provision_method == ProvisionMethod::None {
            problems.push(Problem::error(format!("spec.endpoints[{i}].provisionMethod"), "an endpoint serves Crl or Ocsp"));
        }
    }
    let policy = &spec.policy;
    let v4 = u8::try_from(policy.min_prefix_length_v4).ok().filter(|p| (8..=32).contains(p));
    let v6 = u8::try_from(policy.min_prefix_length_v6).ok().filter(|p| (16..=128).contains(p));
    if v4.is_none() {
        problems.push(Problem::error("spec.policy.minPrefixLengthV4", "must be between 8 and 32"));
    }
    if v6.is_none() {
        problems.push(Problem::error("spec.policy.minPrefixLengthV6", "must be between 16 and 128"));
    }
    if !(1..=10_000).contains(&policy.max_cidrs_per_object) {
        problems.push(Problem::error("spec.policy.maxCidrsPerObject", "must be between 1 and 10000"));
    }
    if let Some(exposure) = &spec.exposure
        && exposure.ingress_class_name.is_some()
        && exposure.gateway.is_some()
    {
        problems.push(Problem::error("spec.exposure", "name either ingressClassName or gateway, not both"));
    }
    Checked::finish(problems, || Some(ValidEnvironment { cidr_policy: CidrPolicy { min_prefix_length_v4: v4?, min_prefix_length_v6: v6? } }))
}
