//! A synthetic but realistic national fleet of forms, for scale tests and benchmarks (`jpki-access fleet`).
//!
//! At 1× it is the real population: every local government (47 prefectures and the 1,741 municipalities of the
//! reference code list, 1,788 bodies) and 1,307 companies (J-LIS's count for 2026). Larger scales add synthetic
//! bodies with valid, unused codes. Each verifier has its own namespace, a SignatureVerifier with the procedure
//! milestones production needs, a test registration (A-08-1) and a production one (A-11-2), each approved when the
//! fleet is created in a cluster (a decision binds to the stored object's uid, so it is made after the
//! registration exists). Sources are a realistic mix: every verifier an IPv4 block (production's two /28s are
//! adjacent, so they aggregate to a /27), a third of them an IPv6 /56 as well, and one company in 500 files a test
//! CIDR another verifier already holds (a conflict: approved after everyone else, so the other keeps it).
//! Everything is a pure function of the settings, so two runs are identical.

use crate::api::AccessRegistration;
use crate::domain::{corporate_number, lg_code};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The reference list of local-government codes (総務省 全国地方公共団体コード), one body per line:
/// prefecture, district, municipality, code, designated-city flag (0 ordinary, 1 designated city, 2 ward of one).
/// Source and licence: tests/fixtures/data/README.md.
const LOCAL_GOVERNMENT_CSV: &str = include_str!("../tests/fixtures/data/local_government.csv");

/// Companies in the real population (J-LIS, 2026).
pub const COMPANIES_2026: usize = 1_307;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct FleetSettings {
    /// Multiple of the real population (1.0 = 1,788 local governments and `companies` companies).
    pub scale: f64,
    /// Companies at 1×.
    pub companies: usize,
    /// What the approvals say in `approvedAt` (the start dates lie before it, so everything is live). The order
    /// of decisions is the API server's, when they are created.
    pub approved_at: jiff::Timestamp,
}

/// One verifier's objects: its namespace, the SignatureVerifier and registrations (each approved once created).
#[derive(Debug, Clone)]
pub struct VerifierBundle {
    pub name: String,
    pub namespace: Value,
    pub verifier: Value,
    pub registrations: Vec<AccessRegistration>,
    /// Its test registration claims a CIDR another verifier holds: approve it after all others.
    pub approve_last: bool,
}

impl VerifierBundle {
    /// Every object, in the order they can be created.
    pub fn objects(&self) -> Result<Vec<Value>, serde_json::Error> {
        let mut out = vec![self.namespace.clone(), self.verifier.clone()];
        for r in &self.registrations {
            out.push(serde_json::to_value(r)?);
        }
        Ok(out)
    }
}

/// The 1,788 local governments of the reference list: (code, display name). Wards of designated cities are not
/// bodies of their own and are left out.
pub fn local_governments() -> Vec<(String, String)> {
    let mut bodies = Vec::new();
    let mut prefectures = BTreeSet::new();
    for line in LOCAL_GOVERNMENT_CSV.lines().skip(1) {
        let fields: Vec<&str> = line.trim_start_matches('\u{feff}').split(',').collect();
        let [prefecture, _district, municipality, code, designated] = fields[..] else {
            continue;
        };
        if designated.trim() == "2" || code.len() != 6 {
            continue;
        }
        if prefectures.insert(code[..2].to_string()) {
            bodies.push((code_with_check_digit(&format!("{}000", &code[..2])), prefecture.to_string()));
        }
        bodies.push((code.to_string(), format!("{prefecture}{municipality}")));
    }
    bodies
}

fn digits<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (slot, c) in out.iter_mut().zip(text.bytes()) {
        *slot = c.wrapping_sub(b'0');
    }
    out
}

fn code_with_check_digit(first_five: &str) -> String {
    format!("{first_five}{}", lg_code::check_digit(digits::<5>(first_five)))
}

fn corporate_number_for(index: usize) -> String {
    // Bases 9-000000-… are not handed out to real bodies in this fleet's range; the check digit leads (法人番号).
    let base = format!("9{:011}", 100_000_000 + index);
    format!("{}{base}", corporate_number::check_digit(digits::<12>(&base)))
}

/// Local governments beyond the real ones: unused codes, prefecture by prefecture.
fn synthetic_local_governments(count: usize, real: &[(String, String)]) -> Vec<(String, String)> {
    let used: BTreeSet<&str> = real.iter().map(|(c, _)| &c[..5]).collect();
    let mut out = Vec::with_capacity(count);
    'outer: for body in 1..1000u32 {
        for prefecture in 1..=47u32 {
            if out.len() == count {
                break 'outer;
            }
            let five = format!("{prefecture:02}{body:03}");
            if !used.contains(five.as_str()) {
                out.push((code_with_check_digit(&five), format!("合成団体{five}")));
            }
        }
    }
    out
}

/// The IPv4 /26 of verifier `index` inside 10.0.0.0/10 (65,536 verifiers fit; 10.255.0.0/16 stays free for tests).
fn ipv4_block(index: usize) -> [String; 3] {
    let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + (index as u32) * 64;
    let addr = |offset: u32| std::net::Ipv4Addr::from(base + offset).to_string();
    [format!("{}/28", addr(0)), format!("{}/28", addr(16)), format!("{}/28", addr(32))]
}

/// The IPv6 /56 of verifier `index` inside 2001:db8::/32.
fn ipv6_block(index: usize) -> String {
    let segments = [0x2001, 0x0db8, (index >> 8) as u16, ((index & 0xff) << 8) as u16, 0, 0, 0, 0];
    // Ipv6Addr's Display is the canonical spelling the validator insists on.
    format!("{}/56", std::net::Ipv6Addr::from(segments))
}

/// Generates the fleet.
pub fn generate(settings: &FleetSettings) -> Result<Vec<VerifierBundle>, serde_json::Error> {
    let real = local_governments();
    let lg_count = (settings.scale * real.len() as f64).round() as usize;
    let company_count = (settings.scale * settings.companies as f64).round() as usize;
    let mut lgs: Vec<(String, String)> = real.iter().take(lg_count).cloned().collect();
    if lg_count > real.len() {
        lgs.extend(synthetic_local_governments(lg_count - real.len(), &real));
    }
    let mut bundles = Vec::with_capacity(lgs.len() + company_count);
    // Address blocks are numbered by body, local governments even and companies odd, so a smaller fleet is an exact
    // subset of a larger one.
    for (ordinal, (code, display)) in lgs.iter().enumerate() {
        let index = 2 * ordinal;
        bundles.push(bundle(
            index,
            &format!("lg-{code}"),
            json!({"displayName": display, "organizationType": "LocalGovernment",
            "lgCode": code, "roles": ["SignatureVerifier", "UserAuthenticationVerifier"]}),
            "Lgwan",
            settings,
        )?);
    }
    for company in 0..company_count {
        let index = 2 * company + 1;
        let number = corporate_number_for(company);
        bundles.push(bundle(
            index,
            &format!("co-{number}"),
            json!({"displayName": format!("合成株式会社{company}"),
            "organizationType": "PlatformOperator", "corporateNumber": number, "roles": ["SignatureVerifier"]}),
            "Internet",
            settings,
        )?);
    }
    Ok(bundles)
}

fn bundle(index: usize, name: &str, identity: Value, connection: &str, settings: &FleetSettings) -> Result<VerifierBundle, serde_json::Error> {
    let namespace = format!("v-{name}");
    let mut spec = identity;
    spec["namespace"] = json!(namespace);
    spec["agreement"] = json!({"effectiveDate": "2026-04-01"});
    spec["contacts"] = json!([{"role": "Primary", "name": "担当者", "phone": "03-0000-0000", "email": format!("{name}@example.jp")}]);
    spec["procedure"] = json!({"startRequestedOn": "2026-01-05", "confidentialityPledgeReceivedOn": "2026-01-15",
        "testEnvironmentApplicationReceivedOn": "2026-01-15",
        "verificationTestCompletedOn": "2026-02-20"});
    let verifier = json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "SignatureVerifier", "metadata": {"name": name}, "spec": spec});
    let [prod_a, prod_b, test] = ipv4_block(index);
    // One company in 500 files a test CIDR that a local government already holds.
    let conflicting = connection == "Internet" && index % 1000 == 999;
    let test_cidr = if conflicting { ipv4_block(index - 1)[2].clone() } else { test };
    let mut production_cidrs = vec![prod_a, prod_b];
    if index.is_multiple_of(3) {
        production_cidrs.push(ipv6_block(index));
    }
    let registration = |environment: &str, cidrs: Vec<String>| -> Result<AccessRegistration, serde_json::Error> {
        let mut spec = json!({"verifierRef": name, "environment": environment, "reason": "Initial", "connectionMethod": connection,
            "sourceCidrs": cidrs, "accessStartDate": "2026-04-01", "receivedOn": "2026-03-01"});
        if environment == "Production" {
            let user_authentication = if connection == "Lgwan" { "Crl" } else { "None" };
            spec["provisionMethods"] = json!({"signing": "Ocsp", "userAuthentication": user_authentication});
            spec["officialSealAffixed"] = json!(true);
        }
        serde_json::from_value(json!({"apiVersion": "access.jpki.dev/v1alpha1", "kind": "AccessRegistration",
            "metadata": {"name": format!("{name}-{}", environment.to_lowercase()), "namespace": namespace}, "spec": spec}))
    };
    let registrations = vec![registration("Test", vec![test_cidr])?, registration("Production", production_cidrs)?];
    let _ = settings;
    Ok(VerifierBundle {
        name: name.to_string(),
        namespace: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        verifier,
        registrations,
        approve_last: conflicting,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(scale: f64) -> FleetSettings {
        FleetSettings { scale, companies: COMPANIES_2026, approved_at: "2026-03-15T00:00:00Z".parse().unwrap() }
    }

    #[test]
    fn the_real_population_is_1788_local_governments_with_valid_unique_codes() {
        let lgs = local_governments();
        assert_eq!(lgs.len(), 1_788);
        assert_eq!(lgs.iter().filter(|(c, _)| c.ends_with(&format!("000{}", &c[5..]))).count(), 47, "47 prefectures");
        let codes: BTreeSet<_> = lgs.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(codes.len(), 1_788);
        for (code, _) in &lgs {
            assert!(lg_code::validate_lg_code(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn scales_are_exact_valid_deterministic_and_mostly_disjoint() {
        let one = generate(&settings(1.0)).unwrap();
        assert_eq!(one.len(), 1_788 + 1_307);
        let three = generate(&settings(3.0)).unwrap();
        assert_eq!(three.len(), 3 * (1_788 + 1_307));
        let mut names = BTreeSet::new();
        let mut test_cidrs = BTreeSet::new();
        let mut repeated = 0;
        for b in &three {
            assert!(names.insert(b.name.clone()), "{} twice", b.name);
            if let Some(code) = b.verifier["spec"]["lgCode"].as_str() {
                assert!(lg_code::validate_lg_code(code).is_ok(), "{code}");
            } else {
                assert!(corporate_number::validate_corporate_number(b.verifier["spec"]["corporateNumber"].as_str().unwrap()).is_ok());
            }
            if !test_cidrs.insert(b.registrations[0].spec.source_cidrs[0].to_string()) {
                repeated += 1;
            }
            assert_eq!(b.registrations.len(), 2);
        }
        assert!(repeated > 0 && repeated * 400 < three.len(), "a few conflicts: {repeated}");
        // The smaller fleet is a subset of the larger one, object for object.
        let by_name: std::collections::BTreeMap<_, _> = three.iter().map(|b| (b.name.clone(), b)).collect();
        for b in &one {
            assert_eq!(format!("{:?}", b.objects().unwrap()), format!("{:?}", by_name[&b.name].objects().unwrap()));
        }
        let again = generate(&settings(1.0)).unwrap();
        assert_eq!(format!("{:?}", one[100].objects().unwrap()), format!("{:?}", again[100].objects().unwrap()));
    }

    #[test]
    fn the_generated_forms_pass_offline_validation() {
        let fleet = generate(&settings(0.05)).unwrap();
        let mut text = String::new();
        for b in &fleet {
            for o in b.objects().unwrap() {
                text.push_str("---\n");
                text.push_str(&crate::manifest::to_yaml(&o).unwrap());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fleet.yaml"), text).unwrap();
        let report = crate::cli::validate::validate_paths(&[dir.path().to_path_buf()], "2026-12-01T00:00:00Z".parse().unwrap());
        assert_eq!(report.objects, fleet.len() * 3);
        let conflicts = report.problems.iter().filter(|p| p.message.contains("overlap")).count();
        assert!(report.problems.len() == conflicts, "{:?}", report.problems.iter().find(|p| !p.message.contains("overlap")));
    }
}
