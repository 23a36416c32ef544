//! What a code is for, as the minting backend names it.

use super::policy::FieldError;

/// A purpose: 1 to 64 characters of `[a-z0-9_.-]`; `"default"` when none is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose(String);

impl Purpose {
    pub fn parse(s: Option<&str>) -> Result<Purpose, FieldError> {
        let s = s.unwrap_or("default");
        if !super::grammar::PURPOSE.matches(s) {
            return Err(FieldError::new(
                "purpose",
                "must be 1 to 64 characters of a-z 0-9 _ . -",
            ));
        }
        Ok(Purpose(s.to_string()))
    }
    /// A purpose read back from the store, where it was put after [`Purpose::parse`] (or
    /// by an import that kept OtpMint's value).
    pub fn from_stored(s: String) -> Purpose {
        Purpose(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_short_lower_case_words() {
        assert_eq!(Purpose::parse(None).unwrap().as_str(), "default");
        for ok in ["login", "password-reset", "sign_up.v2", "x"] {
            assert_eq!(Purpose::parse(Some(ok)).unwrap().as_str(), ok);
        }
        for bad in ["", "Login", "sign up", "ä", "a/b"] {
            assert_eq!(
                Purpose::parse(Some(bad)).unwrap_err().field,
                "purpose",
                "{bad:?}"
            );
        }
        assert!(Purpose::parse(Some(&"a".repeat(64))).is_ok());
        assert!(Purpose::parse(Some(&"a".repeat(65))).is_err());
    }
}
