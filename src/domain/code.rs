//! OtpCode: generation (CSPRNG, uniform digits) and parsing of user input (ASCII digits; a page reads a person's typing first).

use std::fmt;

use rand::{rngs::OsRng, Rng};
use secrecy::{ExposeSecret, SecretString};

/// A code. Its `Debug` never shows the digits.
pub struct OtpCode(SecretString);

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("must be a string of {0} ASCII digits")]
    Format(u32),
    #[error("must be a string of ASCII digits of the code's length")]
    Guess,
}

impl OtpCode {
    /// `length` uniform decimal digits from the OS CSPRNG.
    pub fn generate(length: u32) -> OtpCode {
        let mut rng = OsRng;
        let s: String = (0..length)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        OtpCode(SecretString::from(s))
    }

    /// User input: exactly `length` ASCII digits, nothing else.
    pub fn parse(input: &str, length: u32) -> Result<OtpCode, CodeError> {
        if input.len() != length as usize || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::Format(length));
        }
        Ok(OtpCode(SecretString::from(input.to_string())))
    }

    /// A guess before its code is known: 4 to 10 ASCII digits (every code length a policy
    /// allows); the store then compares its length with the code's.
    pub fn parse_guess(input: &str) -> Result<OtpCode, CodeError> {
        let (lo, hi) = crate::domain::policy::CODE_LENGTH;
        if input.len() < lo as usize
            || input.len() > hi as usize
            || !input.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CodeError::Guess);
        }
        Ok(OtpCode(SecretString::from(input.to_string())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// The blocks of ten decimal digits a person's keyboard may type instead of ASCII's: full
/// width (a Japanese or Chinese input method), Arabic-Indic, Persian, Devanagari, Bengali
/// and Thai.
const DIGIT_ZEROS: [u32; 6] = [0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50];

/// A character a person types between a code's groups, or that a keyboard puts in
/// unseen: hyphens and dashes, the minus sign, the full-width and small hyphens and the
/// prolonged sound mark a Japanese input method types for "-", and the direction marks an
/// Arabic or Persian keyboard, or a paste, adds.
fn separates(c: char) -> bool {
    const MARKS: [char; 8] = [
        '-', '\u{2212}', '\u{FF0D}', '\u{FE63}', '\u{30FC}', '\u{200E}', '\u{200F}', '\u{061C}',
    ];
    MARKS.contains(&c) || ('\u{2010}'..='\u{2015}').contains(&c)
}

/// What a person typed into a page's code field, as the guess it means (API.md §17.8): spaces
/// and hyphens between groups dropped, and digits of other scripts as their ASCII digits.
/// Anything else stays, to be refused by [`OtpCode::parse_guess`].
pub fn typed_by_a_person(input: &str) -> String {
    input
        .chars()
        .filter(|&c| !c.is_whitespace() && !separates(c))
        .map(|c| {
            let n = c as u32;
            DIGIT_ZEROS
                .iter()
                .find(|&&zero| (zero..zero + 10).contains(&n))
                .and_then(|zero| char::from_digit(n - zero, 10))
                .unwrap_or(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_typed_by_a_person_is_read_as_its_ascii_digits() {
        for (typed, meant) in [
            ("123 456", "123456"),
            (" 123-456 ", "123456"),
            ("１２３４５６", "123456"),
            ("１２３\u{3000}４５６", "123456"),
            ("١٢٣٤٥٦", "123456"),
            ("۱۲۳۴۵۶", "123456"),
            ("१२३४५६", "123456"),
            ("123\u{2013}456", "123456"),
            ("123\u{2212}456", "123456"),
            ("１２３－４５６", "123456"),
            ("１２３ー４５６", "123456"),
            ("\u{200F}١٢٣\u{200F}٤٥٦", "123456"),
            ("12345a", "12345a"),
            ("12.3456", "12.3456"),
            ("½23456", "½23456"),
        ] {
            assert_eq!(typed_by_a_person(typed), meant, "{typed}");
        }
    }

    #[test]
    fn a_guess_is_4_to_10_ascii_digits() {
        for ok in ["1234", "0000000000", "123456"] {
            assert_eq!(OtpCode::parse_guess(ok).unwrap().expose(), ok);
        }
        for bad in [
            "",
            "123",
            "12345678901",
            "12 34",
            "١٢٣٤٥٦",
            "12345a",
            "+12345",
        ] {
            assert_eq!(
                OtpCode::parse_guess(bad).unwrap_err(),
                CodeError::Guess,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generates_requested_length_of_digits() {
        for len in 4..=10 {
            let c = OtpCode::generate(len);
            assert_eq!(c.expose().len(), len as usize);
            assert!(c.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn digits_are_roughly_uniform() {
        let mut counts = [0u32; 10];
        for _ in 0..2000 {
            for b in OtpCode::generate(10).expose().bytes() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        // 20,000 digits: each expected 2,000; a wildly skewed generator fails this.
        assert!(
            counts.iter().all(|&c| (1700..2300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn parse_rejects_non_ascii_digits_and_wrong_length() {
        assert!(OtpCode::parse("123456", 6).is_ok());
        for bad in [
            "12345",
            "1234567",
            "12345a",
            "١٢٣٤٥٦",
            "12 456",
            "123\u{0}56",
            "+12345",
        ] {
            assert!(OtpCode::parse(bad, 6).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let c = OtpCode::parse("123456", 6).unwrap();
        assert!(!format!("{c:?}").contains("123456"));
    }
}
