//! `validate` on 5,000 generated registrations costs less than twice merely parsing the same YAML, both measured
//! in this run (issue #4, acceptance 5). The figures are printed; run with `--nocapture` to see them.
#![allow(clippy::unwrap_used, clippy::panic)]

use serde::Deserialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const VERIFIERS: usize = 500;
const REGISTRATIONS_PER_VERIFIER: usize = 10;

/// Writes one file per verifier: the verifier and its registrations (half test, half production), plus the two
/// environments. Every registration has its own IPv4 /24 and IPv6 /48, so there is no overlap to report.
fn generate(dir: &Path) {
    let codes: Vec<String> = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/local_government.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().to_string())
        .take(VERIFIERS)
        .collect();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/environments.yaml"), dir.join("environments.yaml")).unwrap();
    for (v, code) in codes.iter().enumerate() {
        let mut text = format!(
            "apiVersion: access.jpki.dev/v1alpha1\nkind: SignatureVerifier\nmetadata: {{name: lg-{code}}}\nspec:\n  displayName: 団体{code}\n  organizationType: LocalGovernment\n  lgCode: \"{code}\"\n  roles: [SignatureVerifier, UserAuthenticationVerifier]\n  namespace: verifier-{code}\n  agreement: {{effectiveDate: \"2026-04-01\"}}\n  procedure: {{confidentialityPledgeReceivedOn: \"2026-01-20\", testEnvironmentApplicationReceivedOn: \"2026-01-20\", verificationTestCompletedOn: \"2026-02-20\"}}\n"
        );
        for r in 0..REGISTRATIONS_PER_VERIFIER {
            let k = v * REGISTRATIONS_PER_VERIFIER + r;
            let environment = if r % 2 == 0 { "Test" } else { "Production" };
            let production =
                if environment == "Production" { "  provisionMethods: {signing: Ocsp, userAuthentication: Crl}\n  officialSealAffixed: true\n" } else { "" };
            write!(
                text,
                "---\napiVersion: access.jpki.dev/v1alpha1\nkind: AccessRegistration\nmetadata: {{name: reg-{r}, namespace: verifier-{code}}}\nspec:\n  verifierRef: lg-{code}\n  environment: {environment}\n  receivedOn: \"2026-03-01\"\n  connectionMethod: Lgwan\n  sourceCidrs: [\"10.{}.{}.0/24\", \"2001:db8:{:x}::/48\"]\n  accessStartDate: \"2026-04-01\"\n{production}",
                k / 256,
                k % 256,
                k + 1
            )
            .unwrap();
        }
        std::fs::write(dir.join(format!("verifier-{code}.yaml")), text).unwrap();
    }
}

/// The baseline: read every file and parse every document into a YAML value, nothing else.
fn parse_only(dir: &Path) -> usize {
    let mut documents = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            documents += usize::from(!value.is_null());
        }
    }
    documents
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let out = f();
    (started.elapsed(), out)
}

#[test]
fn validating_5000_registrations_costs_under_twice_parsing_them() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    // Interleaved runs, best of each: a burst of load on this 2-core machine then hits both sides alike.
    let (mut parse, mut validate) = (Duration::MAX, Duration::MAX);
    let (mut documents, mut report) = (0, None);
    for _ in 0..5 {
        let (t, d) = timed(|| parse_only(dir.path()));
        (parse, documents) = (parse.min(t), d);
        let (t, r) = timed(|| jpki_access::cli::validate::validate_paths(&[dir.path().to_path_buf()], "2026-12-01T00:00:00Z".parse().unwrap()));
        (validate, report) = (validate.min(t), Some(r));
    }
    let report = report.unwrap();
    assert_eq!(documents, VERIFIERS * (1 + REGISTRATIONS_PER_VERIFIER) + 2);
    assert_eq!(report.objects, documents);
    assert_eq!((report.errors, report.warnings), (0, 0), "{:#?}", &report.problems[..report.problems.len().min(5)]);
    let ratio = validate.as_secs_f64() / parse.as_secs_f64();
    eprintln!(
        "validate of {} registrations: parse only {parse:?}, validate {validate:?}, ratio {ratio:.2} (best of 5 interleaved runs each)",
        VERIFIERS * REGISTRATIONS_PER_VERIFIER
    );
    assert!(ratio < 2.0, "validate took {ratio:.2}× the parse time");
}
