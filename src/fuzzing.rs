//! Bodies of the fuzz targets (`fuzz/`, run by `scripts/fuzz`) and of the corpus replay test
//! (`tests/fuzz_corpus.rs`), so that `cargo test` re-checks every saved input with the very code the fuzzer ran.
//!
//! Each function takes arbitrary bytes, feeds them to the parsers a person's typing reaches (CIDRs, check-digit
//! identifiers, YAML forms and the whole `validate` command), and asserts properties that hold for every input.
//! A violated property panics, which is how a fuzzer recognises a bug; the functions never panic on a correct
//! library. They are public only for the fuzz crate and the replay test and change no behaviour.
//!
//! FUZZING.md lists the properties, the commands and the measured runs.
#![allow(clippy::panic, reason = "a fuzz target reports a broken property by panicking")]

use crate::cli::validate::validate_read;
use crate::domain::cidr::{CidrError, CidrPolicy, Overlap, check_policy, containment_forest, overlaps_within, parse_cidr};
use crate::domain::corporate_number::{self, CorporateNumberError, validate_corporate_number};
use crate::domain::lg_code::{self, LgCodeError, validate_lg_code};
use crate::domain::problem::Severity;
use crate::manifest::{Form, ReadResult, read_text, read_value};
use ipnet::IpNet;
use std::path::Path;

/// A fuzz target's body: any bytes in, a panic only when a property is broken.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus folder (`fuzz/corpus/<name>`).
pub const TARGETS: [(&str, Target); 5] =
    [("cidr", cidr), ("identifiers", identifiers), ("forms", forms), ("yaml", yaml), ("rules", crate::fuzzing_rules::rules)];

/// Text from bytes: invalid UTF-8 is replaced rather than skipped, so every input reaches the parser.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

// ---------------------------------------------------------------------------------------------------------------
// cidr

/// Ranges no accepted network may touch, written independently of the table in `domain::cidr`.
const NEVER_A_SOURCE: [&str; 10] =
    ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "fe80::/10", "ff00::/8", "::ffff:0:0/96"];

/// Whether a result is past the syntax checks: accepted, or refused only for which addresses it covers.
fn is_well_formed(result: &Result<IpNet, CidrError>) -> bool {
    matches!(result, Ok(_) | Err(CidrError::AllAddresses { .. } | CidrError::ForbiddenRange { .. } | CidrError::BroaderThanFloor { .. }))
}

fn variant(e: &CidrError) -> std::mem::Discriminant<CidrError> {
    std::mem::discriminant(e)
}

/// Each line of the input is one CIDR as a person typed it.
///
/// - `parse_cidr` never panics, and every refusal has a message;
/// - an accepted text is the network's canonical spelling, re-parses to the same network, is no broader than the
///   absolute floor and touches none of [`NEVER_A_SOURCE`];
/// - every spelling the error suggests ("write X") makes progress: the canonical spellings offered for host bits,
///   IPv6 case and zeros, missing prefixes and IPv4-mapped networks are well-formed, and the suggestions for
///   leading zeros are not refused for the same reason again;
/// - the overlaps among the accepted lines are exactly those a quadratic comparison finds, and each line's parent in
///   their containment forest is the nearest other line covering it, by a quadratic check.
pub fn cidr(data: &[u8]) {
    let text = text(data);
    let mut nets = Vec::new();
    for line in text.split('\n') {
        let result = parse_cidr(line);
        match &result {
            Ok(net) => {
                assert_eq!(net.to_string(), line, "accepted text is not canonical");
                assert_eq!(parse_cidr(&net.to_string()).as_ref(), Ok(net), "canonical text does not re-parse");
                assert_eq!(net.trunc(), *net, "accepted network has host bits");
                let floor = CidrPolicy::ABSOLUTE_FLOOR;
                assert!(check_policy(net, &floor).is_ok(), "{net} is broader than the absolute floor");
                for range in NEVER_A_SOURCE {
                    let range: IpNet = range.parse().unwrap_or_else(|e| panic!("{range}: {e}"));
                    assert!(!range.contains(net) && !net.contains(&range), "{net} overlaps {range}");
                }
                let _ = check_policy(net, &CidrPolicy::default());
                nets.push(*net);
            }
            Err(e) => {
                assert!(!e.to_string().is_empty(), "empty message for {line:?}");
                let well_formed = |suggestion: &str| {
                    let again = parse_cidr(suggestion);
                    assert!(is_well_formed(&again), "{line:?}: suggestion {suggestion:?} is refused: {again:?}");
                };
                match e {
                    CidrError::HostBitsSet { canonical, address, .. } => {
                        well_formed(canonical);
                        let single = if address.contains(':') { 128 } else { 32 };
                        well_formed(&format!("{address}/{single}"));
                    }
                    CidrError::NonCanonicalIpv6 { canonical, .. } => well_formed(canonical),
                    CidrError::MissingPrefixLength { suggestion, .. } => well_formed(suggestion),
                    CidrError::Ipv4Mapped { suggestion: Some(suggestion), .. } => well_formed(suggestion),
                    CidrError::LeadingZeroOctet { suggestion, .. } | CidrError::LeadingZeroPrefixLength { suggestion, .. } => {
                        let again = parse_cidr(suggestion);
                        if let Err(again) = &again {
                            assert_ne!(variant(again), variant(e), "{line:?}: suggestion {suggestion:?} is refused alike");
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(overlaps_within(&nets), naive_overlaps(&nets), "overlaps of {nets:?}");
    let forest = containment_forest(&nets);
    for i in 0..nets.len() {
        assert_eq!(forest.parent(i), naive_parent(&nets, i), "parent of {i} in {nets:?}");
    }
}

/// The containment forest's parent by its definition: among the other networks covering `nets[i]` (containing it,
/// or the same network at a smaller index), the narrowest, then the one with the largest index.
fn naive_parent(nets: &[IpNet], i: usize) -> Option<usize> {
    (0..nets.len()).filter(|&j| j != i && nets[j].contains(&nets[i]) && (nets[j] != nets[i] || j < i)).max_by_key(|&j| (nets[j].prefix_len(), j))
}

fn naive_overlaps(nets: &[IpNet]) -> Vec<(usize, usize, Overlap)> {
    let mut out = Vec::new();
    for i in 0..nets.len() {
        for j in i + 1..nets.len() {
            let (a, b) = (nets[i], nets[j]);
            if a == b {
                out.push((i, j, Overlap::Duplicate));
            } else if a.contains(&b) {
                out.push((i, j, Overlap::Contains));
            } else if b.contains(&a) {
                out.push((i, j, Overlap::ContainedBy));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// identifiers

/// Reference 全国地方公共団体コード check: the check digit is the last digit of the c in 1..=11 that makes the
/// weighted sum plus c a multiple of 11 (the same rule as 11 − remainder, stated the other way round).
fn reference_lg_code(code: &str) -> bool {
    let digits: Vec<u32> = code.chars().filter_map(|c| c.to_digit(10)).collect();
    if code.len() != 6 || !code.is_ascii() || digits.len() != 6 {
        return false;
    }
    let sum: u32 = digits[..5].iter().zip((2..=6).rev()).map(|(d, w)| d * w).sum();
    let c = (1..=11).find(|c| (sum + c).is_multiple_of(11)).unwrap_or(0);
    c % 10 == digits[5]
}

/// Reference 法人番号 check: weights 2,1,2,1,… from the left of the 12-digit base (1 for the rightmost), and the
/// check digit is the c in 1..=9 that makes the weighted sum plus c a multiple of 9.
fn reference_corporate_number(number: &str) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    if number.len() != 13 || !number.is_ascii() || digits.len() != 13 {
        return false;
    }
    let sum: u32 = digits[1..].iter().enumerate().map(|(j, d)| if j % 2 == 0 { 2 * d } else { *d }).sum();
    (1..=9).any(|c| (sum + c).is_multiple_of(9) && c == digits[0])
}

/// The input as an identifier typed by a person, and its bytes as digit values.
///
/// - validation never panics, and a code validates exactly when it is six (thirteen) ASCII digits whose check
///   digit is right, by the module's own `check_digit` and by an independent reference;
/// - each refusal is the right one: the length in characters, non-digits, or the expected and found digits;
/// - `check_digit` gives a digit (1-9 for 法人番号) for any values, even out of range.
pub fn identifiers(data: &[u8]) {
    let text = text(data);
    for candidate in [text.as_ref(), text.trim()] {
        check_lg_code(candidate);
        check_corporate_number(candidate);
    }
    let mut five = [0u8; 5];
    let mut twelve = [0u8; 12];
    for (slot, b) in five.iter_mut().zip(data) {
        *slot = *b;
    }
    for (slot, b) in twelve.iter_mut().zip(data.iter().rev()) {
        *slot = *b;
    }
    assert!(lg_code::check_digit(five) <= 9, "{five:?}");
    assert!((1..=9).contains(&corporate_number::check_digit(twelve)), "{twelve:?}");
}

fn ascii_digits(s: &str) -> Option<Vec<u8>> {
    s.bytes().map(|b| b.is_ascii_digit().then(|| b - b'0')).collect()
}

fn check_lg_code(code: &str) {
    let result = validate_lg_code(code);
    assert_eq!(result.is_ok(), reference_lg_code(code), "{code:?}: {result:?} disagrees with the reference");
    let chars = code.chars().count();
    match (result, ascii_digits(code)) {
        (Err(LgCodeError::WrongLength { found }), _) => {
            assert_eq!(found, chars, "{code:?}");
            assert_ne!(chars, lg_code::LG_CODE_LEN, "{code:?}");
        }
        (_, _) if chars != lg_code::LG_CODE_LEN => {
            panic!("{code:?}: {chars} characters not refused for length")
        }
        (Err(LgCodeError::NotDigits), digits) => assert!(digits.is_none(), "{code:?}"),
        (Ok(()), Some(d)) => assert_eq!(lg_code::check_digit([d[0], d[1], d[2], d[3], d[4]]), d[5], "{code:?}"),
        (Err(LgCodeError::WrongCheckDigit { expected, found }), Some(d)) => {
            assert_eq!(expected, lg_code::check_digit([d[0], d[1], d[2], d[3], d[4]]), "{code:?}");
            assert_eq!(found, d[5], "{code:?}");
            assert_ne!(expected, found, "{code:?}");
            assert!(!LgCodeError::WrongCheckDigit { expected, found }.to_string().is_empty());
        }
        (result, digits) => panic!("{code:?}: {result:?} with digits {digits:?}"),
    }
}

fn check_corporate_number(number: &str) {
    let result = validate_corporate_number(number);
    assert_eq!(result.is_ok(), reference_corporate_number(number), "{number:?}: {result:?} disagrees with the reference");
    let chars = number.chars().count();
    let base = |d: &[u8]| -> [u8; 12] {
        let mut base = [0u8; 12];
        base.copy_from_slice(&d[1..]);
        base
    };
    match (result, ascii_digits(number)) {
        (Err(CorporateNumberError::WrongLength { found }), _) => {
            assert_eq!(found, chars, "{number:?}");
            assert_ne!(chars, corporate_number::CORPORATE_NUMBER_LEN, "{number:?}");
        }
        (_, _) if chars != corporate_number::CORPORATE_NUMBER_LEN => {
            panic!("{number:?}: {chars} characters not refused for length")
        }
        (Err(CorporateNumberError::NotDigits), digits) => assert!(digits.is_none(), "{number:?}"),
        (Ok(()), Some(d)) => {
            assert_eq!(corporate_number::check_digit(base(&d)), d[0], "{number:?}")
        }
        (Err(CorporateNumberError::WrongCheckDigit { expected, found }), Some(d)) => {
            assert_eq!(expected, corporate_number::check_digit(base(&d)), "{number:?}");
            assert_eq!(found, d[0], "{number:?}");
            assert_ne!(expected, found, "{number:?}");
        }
        (result, digits) => panic!("{number:?}: {result:?} with digits {digits:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// forms

/// Messages of problems about a whole document, which therefore name no field.
const WHOLE_DOCUMENT: [&str; 3] = ["not valid YAML", "not a Kubernetes object", "cannot read"];

/// The input as one YAML file given to `jpki-access validate`: read it, then run every rule the command runs.
///
/// - nothing panics;
/// - every finding has a message, and names the field it is about unless it is about the whole document
///   (a syntax error, or no apiVersion and kind);
/// - the counts of the report agree with its findings.
pub fn forms(data: &[u8]) {
    let text = text(data);
    let mut read = ReadResult::default();
    read_text(Path::new("fuzz.yaml"), &text, &mut read);
    let documents = read.documents.len();
    let report = validate_read(read, jiff::Timestamp::from_second(1_780_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH));
    assert_eq!(report.objects, documents);
    for finding in &report.problems {
        assert!(!finding.message.is_empty(), "finding without a message: {finding:?}");
        if finding.field.is_empty() {
            assert!(WHOLE_DOCUMENT.iter().any(|m| finding.message.starts_with(m)), "finding names no field: {finding:?}");
        }
    }
    let errors = report.problems.iter().filter(|p| p.severity == Severity::Error).count();
    assert_eq!((report.errors, report.warnings), (errors, report.problems.len() - errors));
}

// ---------------------------------------------------------------------------------------------------------------
// yaml

/// The input as YAML text given to the manifest reader: multi-document files, duplicate keys, `v1 List`s, anchors.
///
/// - nothing panics;
/// - documents and problems point at a document that exists: positions start at 1 and do not pass the number of
///   documents a YAML parser finds (the line check for unquoted digits counts `---` lines and is bounded by them);
///   at most one syntax error is reported, and nothing after it;
/// - every form read is a fixed point: written back as YAML and read again, it is the same form.
pub fn yaml(data: &[u8]) {
    let text = text(data);
    let mut read = ReadResult::default();
    read_text(Path::new("fuzz.yaml"), &text, &mut read);
    // The quick look before the event scan never skips a text the scan finds something in.
    let found = crate::yaml_styles::scan_events(&text);
    assert!(found.is_empty() || crate::yaml_styles::may_hold_ambiguous_scalars(&text), "the quick look missed {found:?}");

    // The documents as the YAML parser sees them, up to the first syntax error.
    let mut parsed = 0;
    let mut syntax_error_at = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        parsed += 1;
        if <serde_yaml::Value as serde::Deserialize>::deserialize(doc).is_err() {
            syntax_error_at = Some(parsed);
            break;
        }
    }
    let separators = text.lines().filter(|l| l.trim() == "---" || l.trim().starts_with("--- ")).count();
    for document in &read.documents {
        assert!((1..=parsed).contains(&document.origin.document), "{:?} of {parsed}", document.origin);
        assert!(syntax_error_at.is_none_or(|at| document.origin.document < at), "{:?} after {syntax_error_at:?}", document.origin);
    }
    let mut syntax_errors = 0;
    for problem in &read.problems {
        assert!(!problem.problem.message.is_empty(), "{problem:?}");
        let message = &problem.problem.message;
        // A syntax error quotes the input, which may contain any words: tell the kinds apart by how they start.
        if message.starts_with("not valid YAML") {
            syntax_errors += 1;
            assert_eq!(Some(problem.origin.document), syntax_error_at, "{problem:?}");
        } else if message.starts_with("line ") && message.contains("YAML 1.1 readers") {
            assert!((1..=separators + 1).contains(&problem.origin.document), "{problem:?}");
            continue;
        }
        assert!((1..=parsed).contains(&problem.origin.document), "{problem:?} of {parsed}");
    }
    assert_eq!(syntax_errors, usize::from(syntax_error_at.is_some()), "{:?}", read.problems);

    for document in &read.documents {
        let again = match &document.form {
            Form::Verifier(o) => serde_yaml::to_value(o),
            Form::Registration(o) => serde_yaml::to_value(o),
            Form::Approval(o) => serde_yaml::to_value(o),
            Form::Environment(o) => serde_yaml::to_value(o),
            Form::Record(o) => serde_yaml::to_value(o),
        };
        let again = again.unwrap_or_else(|e| panic!("{:?} cannot be written: {e}", document.origin));
        let again = match read_value(again) {
            Ok(Some(form)) => form,
            other => panic!("{:?} does not read back: {other:?}", document.origin),
        };
        // The CRD types compare by their JSON (the derived root types have no PartialEq).
        let json = |form: &Form| {
            match form {
                Form::Verifier(o) => serde_json::to_value(o),
                Form::Registration(o) => serde_json::to_value(o),
                Form::Approval(o) => serde_json::to_value(o),
                Form::Environment(o) => serde_json::to_value(o),
                Form::Record(o) => serde_json::to_value(o),
            }
            .ok()
        };
        let same = again.kind() == document.form.kind() && json(&again) == json(&document.form);
        assert!(same, "{:?} reads back differently: {:?} then {again:?}", document.origin, document.form);
    }
}
