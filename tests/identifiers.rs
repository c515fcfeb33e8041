//! Check-digit identifiers against real data: every 全国地方公共団体コード of Japan (the fixture CSV plus the 47
//! prefectures), every single-digit typo of them, and 法人番号 check digits.
//!
//! The expected results are computed by a reference written differently from the library (the remainder table
//! spelled out), so the tests do not merely repeat the code under test.
#![allow(clippy::unwrap_used, clippy::panic)]

use jpki_access::domain::{
    corporate_number::{self, CorporateNumberError, validate_corporate_number},
    lg_code::{self, LgCodeError, validate_lg_code},
};
use std::{collections::HashSet, path::Path};

const CSV_ROWS: usize = 1_916;
const HEADER: &str = "都道府県,郡,市区町村,コード,政令指定都市";

/// One row of the fixture.
struct Municipality {
    prefecture: String,
    name: String,
    code: String,
}

fn municipalities() -> Vec<Municipality> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/local_government.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text.strip_prefix('\u{feff}').expect("the file starts with a UTF-8 byte-order mark");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER));
    // The file has no quoted fields (no name contains a comma), so splitting on commas is exact.
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 5, "{line}");
            Municipality { prefecture: fields[0].into(), name: fields[2].into(), code: fields[3].into() }
        })
        .collect()
}

/// Reference check digit: 総務省's wording, "the last digit of 11 minus the remainder", with the two special
/// remainders written out.
fn reference_lg_check(first_five: &[u8]) -> u8 {
    let sum: u32 = first_five.iter().zip([6u32, 5, 4, 3, 2]).map(|(d, w)| u32::from(*d) * w).sum();
    match sum % 11 {
        0 => 1,
        1 => 0,
        r => (11 - r) as u8,
    }
}

fn digits(code: &str) -> Vec<u8> {
    code.bytes().map(|b| b - b'0').collect()
}

fn prefecture_codes() -> Vec<String> {
    (1..=47u8)
        .map(|p| {
            let five = format!("{p:02}000");
            let d = digits(&five);
            let check = lg_code::check_digit([d[0], d[1], d[2], d[3], d[4]]);
            assert_eq!(check, reference_lg_check(&d), "{five}");
            format!("{five}{check}")
        })
        .collect()
}

fn all_lg_codes() -> Vec<String> {
    let mut codes: Vec<String> = municipalities().into_iter().map(|m| m.code).collect();
    codes.extend(prefecture_codes());
    codes
}

#[test]
fn every_local_government_code_is_valid() {
    let rows = municipalities();
    assert_eq!(rows.len(), CSV_ROWS);
    let unique: HashSet<&str> = rows.iter().map(|m| m.code.as_str()).collect();
    assert_eq!(unique.len(), CSV_ROWS, "codes are unique");

    // Published codes, among them both special remainders (埼玉県 r=0 → 1; 栃木県 and 相模原市 r=1 → 0).
    let prefectures = prefecture_codes();
    for (number, code) in [(1, "010006"), (9, "090000"), (11, "110001"), (13, "130001"), (47, "470007")] {
        assert_eq!(prefectures[number - 1], code);
    }
    for (prefecture, name, code) in
        [("北海道", "札幌市", "011002"), ("東京都", "千代田区", "131016"), ("神奈川県", "相模原市", "141500"), ("大阪府", "堺市", "271403")]
    {
        assert!(rows.iter().any(|m| m.prefecture == prefecture && m.name == name && m.code == code), "{prefecture} {name} {code} is in the fixture");
    }

    for code in rows.iter().map(|m| m.code.as_str()).chain(prefectures.iter().map(String::as_str)) {
        assert_eq!(validate_lg_code(code), Ok(()), "{code}");
    }
}

#[test]
fn single_digit_changes_are_caught_unless_they_make_another_valid_code() {
    let codes = all_lg_codes();
    assert_eq!(codes.len(), CSV_ROWS + 47);
    let (mut mutations, mut still_valid) = (0usize, 0usize);
    for code in &codes {
        let original = digits(code);
        for position in 0..6 {
            for digit in 0..=9u8 {
                if digit == original[position] {
                    continue;
                }
                let mut mutated = original.clone();
                mutated[position] = digit;
                let text: String = mutated.iter().map(|d| char::from(b'0' + d)).collect();
                let expected = reference_lg_check(&mutated[..5]);
                mutations += 1;
                if position == 5 {
                    // Changing the check digit itself is always caught.
                    assert_eq!(validate_lg_code(&text), Err(LgCodeError::WrongCheckDigit { expected: original[5], found: digit }), "{code} → {text}");
                } else if expected == mutated[5] {
                    // Possible only through remainders 0 and 10, which share check digit 1.
                    still_valid += 1;
                    assert_eq!(mutated[5], 1, "{code} → {text}");
                    assert_eq!(validate_lg_code(&text), Ok(()), "{code} → {text}");
                } else {
                    assert_eq!(validate_lg_code(&text), Err(LgCodeError::WrongCheckDigit { expected, found: mutated[5] }), "{code} → {text}");
                }
            }
        }
    }
    assert_eq!(mutations, codes.len() * 6 * 9);
    let fraction = still_valid as f64 / mutations as f64;
    assert!((0.01..=0.025).contains(&fraction), "{still_valid} of {mutations} mutations are valid codes ({:.2}%)", fraction * 100.0);
}

#[test]
fn lg_code_messages_name_the_expected_digit() {
    let err = validate_lg_code("011003").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("check digit is 3 but should be 2"), "{msg}");
    assert_eq!(validate_lg_code("０１１００２"), Err(LgCodeError::NotDigits));
    assert_eq!(validate_lg_code("11002"), Err(LgCodeError::WrongLength { found: 5 }));
}

/// Reference 法人番号 check digit, written from the ordinance's formula with n counted from the right.
fn reference_corporate_check(base: &[u8; 12]) -> u8 {
    let sum: u32 = (1..=12).map(|n| u32::from(base[12 - n]) * if n % 2 == 1 { 1 } else { 2 }).sum();
    (9 - sum % 9) as u8
}

/// A fixed spread of bases: edge cases plus a deterministic pseudo-random sequence (a 64-bit LCG), so that
/// failures reproduce without a seed.
fn bases() -> Vec<[u8; 12]> {
    let mut out = vec![[0; 12], [9; 12], [0, 0, 0, 0, 1, 2, 0, 5, 0, 0, 0, 2]];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..2_000 {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let mut base = [0u8; 12];
        let mut x = state >> 16;
        for d in &mut base {
            *d = (x % 10) as u8;
            x /= 10;
        }
        out.push(base);
    }
    out
}

#[test]
fn corporate_numbers() {
    // 国税庁 (published); the other two have their check digits worked out by hand:
    // 180301018771 → 1+14+7+16+1+0+1+0+3+0+8+2 = 53, 53 mod 9 = 8, 9 − 8 = 1;
    // 000000000000 → sum 0, 9 − 0 = 9 (a check digit is never 0).
    for valid in ["7000012050002", "1180301018771", "9000000000000"] {
        assert_eq!(validate_corporate_number(valid), Ok(()), "{valid}");
    }

    for base in bases() {
        let expected = corporate_number::check_digit(base);
        assert_eq!(expected, reference_corporate_check(&base), "{base:?}");
        assert!((1..=9).contains(&expected));
        let base_text: String = base.iter().map(|d| char::from(b'0' + d)).collect();
        assert_eq!(validate_corporate_number(&format!("{expected}{base_text}")), Ok(()));
        for first in (0..=9u8).filter(|d| *d != expected) {
            let number = format!("{first}{base_text}");
            let err = validate_corporate_number(&number).unwrap_err();
            assert_eq!(err, CorporateNumberError::WrongCheckDigit { expected, found: first }, "{number}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("is {first} but should be {expected}")), "{msg}");
            assert!(msg.contains("法人番号"), "{msg}");
        }
    }
}
