//! Outcomes bound to the browser that started them (API.md §17.2): a PKCE code challenge
//! (S256 only) given when a hosted session or a magic link starts, and the verifier that
//! claims the outcome once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::policy::FieldError;

/// What a malformed challenge is told.
pub const CHALLENGE_RULE: &str =
    "must be the base64url SHA-256 of a code verifier (43 characters of A-Z a-z 0-9 - _; method S256)";

/// A code challenge: base64url (unpadded) of the SHA-256 of a verifier, 43 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// A challenge as given (`field` names it in a 400), with its method if one was named.
    pub fn parse(s: &str, method: Option<&str>, field: &str) -> Result<CodeChallenge, FieldError> {
        if method.is_some_and(|m| m != "S256") {
            return Err(FieldError::new(
                format!("{field}_method"),
                "must be \"S256\" (the only method)",
            ));
        }
        let decoded = URL_SAFE_NO_PAD.decode(s).ok();
        if !super::grammar::CODE_CHALLENGE.matches(s) || decoded.is_none_or(|d| d.len() != 32) {
            return Err(FieldError::new(field, CHALLENGE_RULE));
        }
        Ok(CodeChallenge(s.to_string()))
    }

    /// The challenge of a request, if it gives one: a method without a challenge is refused
    /// (the caller meant to bind the outcome and would not be).
    pub fn parse_given(
        challenge: Option<&str>,
        method: Option<&str>,
        field: &str,
    ) -> Result<Option<CodeChallenge>, FieldError> {
        match (challenge, method) {
            (Some(c), m) => CodeChallenge::parse(c, m, field).map(Some),
            (None, Some(_)) => Err(FieldError::new(
                field,
                format!("is required with {field}_method"),
            )),
            (None, None) => Ok(None),
        }
    }

    /// A challenge read back from the store (checked when it was written).
    pub fn from_stored(s: String) -> CodeChallenge {
        CodeChallenge(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `verifier` (43–128 unreserved characters, RFC 7636) is the one this
    /// challenge was made from; compared in constant time.
    pub fn matches(&self, verifier: &str) -> bool {
        let well_formed = super::grammar::CODE_VERIFIER.matches(verifier);
        let made = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let same: bool = made.as_bytes().ct_eq(self.0.as_bytes()).into();
        well_formed && same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_matches_and_nothing_else_does() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let c = CodeChallenge::parse(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            None,
            "code_challenge",
        )
        .unwrap();
        assert!(c.matches(verifier));
        assert!(!c.matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"));
        assert!(!c.matches(""));
        assert!(!c.matches(&"a".repeat(129)));
        assert!(CodeChallenge::parse(c.as_str(), Some("S256"), "x").is_ok());
        assert_eq!(
            CodeChallenge::parse(c.as_str(), Some("plain"), "x")
                .unwrap_err()
                .field,
            "x_method"
        );
        for bad in [
            "",
            "short",
            &"A".repeat(44),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
        ] {
            assert!(CodeChallenge::parse(bad, None, "x").is_err(), "{bad}");
        }
    }
}
