//! OtpCode: generation (CSPRNG, uniform digits) and parsing of user input (ASCII digits only).

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

#[cfg(test)]
mod tests {
    use super::*;

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
