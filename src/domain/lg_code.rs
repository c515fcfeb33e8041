//! 全国地方公共団体コード (nationwide local-government code): the 5-digit JIS X 0402 code of a prefecture or
//! municipality followed by one check digit (検査数字).
//!
//! The check digit, as 総務省 defines it: multiply the first five digits by 6, 5, 4, 3, 2, sum the products, take
//! the remainder of that sum divided by 11, and keep the last digit of `11 − remainder`. So remainder 0 gives 1
//! (11 → 1) and remainder 1 gives 0 (10 → 0); the check digit is always a single digit.
//!
//! Examples: 北海道 010006, 札幌市 011002, 東京都 130001, 千代田区 131016, 埼玉県 110001.

/// Number of characters of a 全国地方公共団体コード.
pub const LG_CODE_LEN: usize = 6;

/// Weights applied to the first five digits, from the left.
const WEIGHTS: [u32; 5] = [6, 5, 4, 3, 2];

/// Why a string is not a valid 全国地方公共団体コード.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LgCodeError {
    /// The string does not have exactly six characters (counted as characters, not bytes).
    #[error(
        "must be exactly 6 digits (全国地方公共団体コード, e.g. 131016 for 千代田区), got {found} character{}",
        plural(*found)
    )]
    WrongLength {
        /// How many characters were given.
        found: usize,
    },
    /// Six characters, but not all of them are the ASCII digits 0-9 (full-width digits are refused too).
    #[error("must contain only the digits 0-9 (全国地方公共団体コード; write full-width digits as 0-9)")]
    NotDigits,
    /// The sixth digit does not match the check digit computed from the first five.
    #[error(
        "check digit is {found} but should be {expected} (全国地方公共団体コード: the first five digits weighted \
         6,5,4,3,2, sum mod 11, last digit of 11 minus the remainder); check the code against the official list"
    )]
    WrongCheckDigit {
        /// The check digit computed from the first five digits.
        expected: u8,
        /// The sixth digit as given.
        found: u8,
    },
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Computes the check digit (検査数字) of the five digits of a JIS X 0402 code.
///
/// Each element is expected to be a digit value 0-9. Larger values do not panic; they simply take part in the
/// weighted sum, so the result is still a digit 0-9.
pub fn check_digit(first_five: [u8; 5]) -> u8 {
    let sum: u32 = first_five.iter().zip(WEIGHTS).map(|(&d, w)| u32::from(d) * w).sum();
    let remainder = sum % 11;
    // (11 - r) is 1..=11; "the last digit" of it is mod 10, which turns 10 into 0 and 11 into 1.
    let check = (11 - remainder) % 10;
    // `check` < 10, so the conversion cannot fail; the fallback only keeps the code free of unwrap.
    u8::try_from(check).unwrap_or(0)
}

/// Validates a 6-digit 全国地方公共団体コード as a person would type it: exactly six ASCII digits whose last digit
/// is the check digit of the first five.
///
/// The string is not trimmed: surrounding whitespace counts as characters and is refused by the length check.
pub fn validate_lg_code(code: &str) -> Result<(), LgCodeError> {
    let found = code.chars().count();
    if found != LG_CODE_LEN {
        return Err(LgCodeError::WrongLength { found });
    }
    // Only after counting characters do we look at bytes: with six characters that are all ASCII digits, the
    // string is exactly six bytes, so indexing by byte below is safe.
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LgCodeError::NotDigits);
    }
    let mut digits = [0u8; LG_CODE_LEN];
    for (slot, b) in digits.iter_mut().zip(code.bytes()) {
        *slot = b - b'0';
    }
    let [d1, d2, d3, d4, d5, found] = digits;
    let expected = check_digit([d1, d2, d3, d4, d5]);
    if expected == found { Ok(()) } else { Err(LgCodeError::WrongCheckDigit { expected, found }) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// Published codes; the comments give the remainder so that both special cases (r=0, r=1) are covered.
    const KNOWN: [(&str, &str); 9] = [
        ("北海道", "010006"),
        ("札幌市", "011002"),
        ("東京都", "130001"),
        ("千代田区", "131016"),
        ("埼玉県", "110001"),   // r = 0 → 1
        ("栃木県", "090000"),   // r = 1 → 0
        ("相模原市", "141500"), // r = 1 → 0
        ("堺市", "271403"),
        ("沖縄県", "470007"),
    ];

    #[test]
    fn known_codes_are_valid() {
        for (name, code) in KNOWN {
            assert_eq!(validate_lg_code(code), Ok(()), "{name} {code}");
        }
    }

    #[test]
    fn check_digit_special_remainders() {
        // 埼玉県 11000: 6*1 + 5*1 = 11, r = 0 → 1.
        assert_eq!(check_digit([1, 1, 0, 0, 0]), 1);
        // 栃木県 09000: 5*9 = 45, r = 1 → 0.
        assert_eq!(check_digit([0, 9, 0, 0, 0]), 0);
        // All zeros: r = 0 → 1.
        assert_eq!(check_digit([0, 0, 0, 0, 0]), 1);
        // Out-of-range inputs do not panic and still give a digit.
        assert!(check_digit([255; 5]) <= 9);
    }

    #[test]
    fn wrong_length_counts_characters() {
        assert_eq!(validate_lg_code(""), Err(LgCodeError::WrongLength { found: 0 }));
        assert_eq!(validate_lg_code("01100"), Err(LgCodeError::WrongLength { found: 5 }));
        assert_eq!(validate_lg_code("0110020"), Err(LgCodeError::WrongLength { found: 7 }));
        assert_eq!(validate_lg_code(" 011002"), Err(LgCodeError::WrongLength { found: 7 }));
        // Six full-width characters are 18 bytes; the length is still 6, so the digit check refuses them.
        assert_eq!(validate_lg_code("０１１００２"), Err(LgCodeError::NotDigits));
        assert_eq!(validate_lg_code("札幌市"), Err(LgCodeError::WrongLength { found: 3 }));
    }

    #[test]
    fn non_digits_are_refused() {
        for code in ["01100a", "-11002", "+11002", "01 002", "0110０2", "١٢٣٤٥٦"] {
            let err = validate_lg_code(code);
            assert!(matches!(err, Err(LgCodeError::NotDigits) | Err(LgCodeError::WrongLength { .. })), "{code}: {err:?}");
        }
        assert_eq!(validate_lg_code("01100a"), Err(LgCodeError::NotDigits));
    }

    #[test]
    fn wrong_check_digit_names_the_expected_digit() {
        let err = validate_lg_code("011003").unwrap_err();
        assert_eq!(err, LgCodeError::WrongCheckDigit { expected: 2, found: 3 });
        let msg = err.to_string();
        assert!(msg.contains("check digit is 3 but should be 2"), "{msg}");
        assert!(msg.contains("全国地方公共団体コード"), "{msg}");
    }

    #[test]
    fn messages_help_a_person() {
        assert_eq!(
            LgCodeError::WrongLength { found: 5 }.to_string(),
            "must be exactly 6 digits (全国地方公共団体コード, e.g. 131016 for 千代田区), got 5 characters"
        );
        assert!(LgCodeError::WrongLength { found: 1 }.to_string().ends_with("got 1 character"));
        assert!(LgCodeError::NotDigits.to_string().starts_with("must contain only the digits 0-9"));
    }
}
