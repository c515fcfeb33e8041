//! 法人番号 (corporate number): 13 digits assigned by 国税庁. The FIRST digit is the check digit over the other 12
//! (法人番号の指定等に関する省令 第2条):
//!
//! `check = 9 − (Σ_{n=1..12} P_n × Q_n) mod 9`, where `P_n` is the n-th digit of the 12-digit base counted from the
//! right and `Q_n` is 1 for odd n and 2 for even n.
//!
//! Example: 国税庁 itself is 7000012050002 (base 000012050002: weighted sum 11, 11 mod 9 = 2, 9 − 2 = 7).
//! Because the formula is `9 − (… mod 9)`, the check digit is always 1-9, never 0.

/// Number of characters of a 法人番号.
pub const CORPORATE_NUMBER_LEN: usize = 13;

/// Why a string is not a valid 法人番号.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorporateNumberError {
    /// The string does not have exactly 13 characters (counted as characters, not bytes).
    #[error(
        "must be exactly 13 digits (法人番号, e.g. 7000012050002), got {found} character{}",
        if *found == 1 { "" } else { "s" }
    )]
    WrongLength {
        /// How many characters were given.
        found: usize,
    },
    /// 13 characters, but not all of them are the ASCII digits 0-9 (full-width digits are refused too).
    #[error("must contain only the digits 0-9 (法人番号; write full-width digits as 0-9, without hyphens)")]
    NotDigits,
    /// The first digit does not match the check digit computed from the other twelve.
    #[error(
        "check digit (the first digit) is {found} but should be {expected} (法人番号: 9 minus the sum of the other \
         12 digits weighted 1,2,1,2,… from the right, mod 9); check the number at the 国税庁 法人番号公表サイト"
    )]
    WrongCheckDigit {
        /// The check digit computed from the 12-digit base.
        expected: u8,
        /// The first digit as given.
        found: u8,
    },
}

/// Computes the check digit of a 12-digit 法人番号 base (the number without its first digit), as digit values in
/// reading order (left to right).
///
/// The result is always 1-9. Elements are expected to be 0-9; larger values do not panic.
pub fn check_digit(base: [u8; 12]) -> u8 {
    // n counts from the right starting at 1: odd n weighs 1, even n weighs 2.
    let sum: u32 = base
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let weight = if i % 2 == 0 { 1 } else { 2 };
            u32::from(d) * weight
        })
        .sum();
    let check = 9 - sum % 9;
    // `check` is 1..=9, so the conversion cannot fail; the fallback only keeps the code free of unwrap.
    u8::try_from(check).unwrap_or(0)
}

/// Validates a 13-digit 法人番号 as a person would type it: exactly 13 ASCII digits (no hyphens or spaces) whose
/// first digit is the check digit of the other twelve.
pub fn validate_corporate_number(number: &str) -> Result<(), CorporateNumberError> {
    let found = number.chars().count();
    if found != CORPORATE_NUMBER_LEN {
        return Err(CorporateNumberError::WrongLength { found });
    }
    // With 13 characters that are all ASCII digits, the string is exactly 13 bytes.
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CorporateNumberError::NotDigits);
    }
    let mut digits = [0u8; CORPORATE_NUMBER_LEN];
    for (slot, b) in digits.iter_mut().zip(number.bytes()) {
        *slot = b - b'0';
    }
    let [found, base @ ..] = digits;
    let expected = check_digit(base);
    if expected == found { Ok(()) } else { Err(CorporateNumberError::WrongCheckDigit { expected, found }) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn national_tax_agency_is_valid() {
        assert_eq!(check_digit([0, 0, 0, 0, 1, 2, 0, 5, 0, 0, 0, 2]), 7);
        assert_eq!(validate_corporate_number("7000012050002"), Ok(()));
    }

    #[test]
    fn weights_count_from_the_right() {
        // Only the rightmost digit (n=1, weight 1): 9 - 1 = 8.
        assert_eq!(check_digit([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 8);
        // Only the second from the right (n=2, weight 2): 9 - 2 = 7.
        assert_eq!(check_digit([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), 7);
        // Only the leftmost digit of the base (n=12, weight 2): 9 - 2 = 7.
        assert_eq!(check_digit([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 7);
        // A sum divisible by 9 gives 9, never 0.
        assert_eq!(check_digit([0; 12]), 9);
        assert_eq!(check_digit([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]), 9);
        assert!(check_digit([255; 12]) >= 1);
    }

    #[test]
    fn refusals() {
        assert_eq!(validate_corporate_number(""), Err(CorporateNumberError::WrongLength { found: 0 }));
        assert_eq!(validate_corporate_number("700001205000"), Err(CorporateNumberError::WrongLength { found: 12 }));
        assert_eq!(validate_corporate_number("7-000012-050002"), Err(CorporateNumberError::WrongLength { found: 15 }));
        assert_eq!(validate_corporate_number("７００００１２０５０００２"), Err(CorporateNumberError::NotDigits));
        assert_eq!(validate_corporate_number("700001205000x"), Err(CorporateNumberError::NotDigits));
        let err = validate_corporate_number("1000012050002").unwrap_err();
        assert_eq!(err, CorporateNumberError::WrongCheckDigit { expected: 7, found: 1 });
        let msg = err.to_string();
        assert!(msg.contains("is 1 but should be 7"), "{msg}");
        assert!(msg.contains("法人番号"), "{msg}");
    }

    #[test]
    fn messages() {
        assert_eq!(CorporateNumberError::WrongLength { found: 12 }.to_string(), "must be exactly 13 digits (法人番号, e.g. 7000012050002), got 12 characters");
        assert!(CorporateNumberError::NotDigits.to_string().contains("法人番号"));
    }
}
