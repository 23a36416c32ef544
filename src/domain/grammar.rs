//! The form of values the API takes, stated once (API.md §18.5): each parser checks its
//! value against its grammar here, and the API description (`routes::openapi`) publishes
//! the same pattern and lengths. Rules that are not about form — a code's length being the
//! tenant's, an address's domain resolving — stay with their parsers.

use std::sync::OnceLock;

use regex::Regex;

/// A pattern (ECMA-262 and Rust `regex` alike: no look-around) and lengths in bytes.
pub struct Grammar {
    pub pattern: &'static str,
    pub min_length: usize,
    pub max_length: usize,
    compiled: OnceLock<Option<Regex>>,
}

impl Grammar {
    const fn new(pattern: &'static str, min_length: usize, max_length: usize) -> Grammar {
        Grammar {
            pattern,
            min_length,
            max_length,
            compiled: OnceLock::new(),
        }
    }

    /// Whether `s` has this form.
    pub fn matches(&self, s: &str) -> bool {
        (self.min_length..=self.max_length).contains(&s.len())
            && self
                .compiled
                .get_or_init(|| Regex::new(self.pattern).ok())
                .as_ref()
                .is_some_and(|re| re.is_match(s))
    }
}

/// A language tag: a language of 2–8 letters, then subtags of 1–8 letters or digits.
pub static LOCALE: Grammar = Grammar::new("^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$", 2, 35);

/// A code's purpose.
pub static PURPOSE: Grammar = Grammar::new("^[a-z0-9_.-]{1,64}$", 1, 64);

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0.
pub static PHONE: Grammar = Grammar::new("^\\+[1-9][0-9]{7,14}$", 9, 16);

/// A DNS name of two labels or more (letters, digits and inner `-`), an optional final dot.
pub static DNS_NAME: Grammar = Grammar::new(
    "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$",
    3,
    254,
);

/// A DKIM selector: labels of letters, digits and inner `-`, joined by dots.
pub static DKIM_SELECTOR: Grammar = Grammar::new(
    "^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$",
    1,
    63,
);

/// A PKCE S256 challenge: unpadded base64url of 32 bytes (its last character carries 4 bits).
pub static CODE_CHALLENGE: Grammar = Grammar::new("^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$", 43, 43);

/// A PKCE verifier (RFC 7636): 43–128 unreserved characters.
pub static CODE_VERIFIER: Grammar = Grammar::new("^[A-Za-z0-9._~-]{43,128}$", 43, 128);

/// A brand colour: `#RRGGBB`.
pub static BRAND_COLOR: Grammar = Grammar::new("^#[0-9A-Fa-f]{6}$", 7, 7);

/// An `Idempotency-Key` header: 1–255 visible ASCII characters.
pub static IDEMPOTENCY_KEY: Grammar = Grammar::new("^[!-~]{1,255}$", 1, 255);

/// A suppression-list cursor as the server gives it out: unpadded base64url.
pub static CURSOR: Grammar = Grammar::new("^[A-Za-z0-9_-]*$", 0, 1024);

/// Every grammar, for the description and its test.
pub fn all() -> [(&'static str, &'static Grammar); 10] {
    [
        ("locale", &LOCALE),
        ("purpose", &PURPOSE),
        ("phone", &PHONE),
        ("dns_name", &DNS_NAME),
        ("dkim_selector", &DKIM_SELECTOR),
        ("code_challenge", &CODE_CHALLENGE),
        ("code_verifier", &CODE_VERIFIER),
        ("brand_color", &BRAND_COLOR),
        ("idempotency_key", &IDEMPOTENCY_KEY),
        ("cursor", &CURSOR),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_takes_its_examples() {
        for (name, g) in all() {
            assert!(Regex::new(g.pattern).is_ok(), "{name}");
        }
        for (g, yes, no) in [
            (
                &LOCALE,
                &["en", "pt-BR", "zh-Hant-TW"][..],
                &["e", "1en", "en_US", "en-", "en-toolongsub"][..],
            ),
            (&PURPOSE, &["login", "a.b-c_1"], &["", "Login", "a b"]),
            (
                &PHONE,
                &["+4915112345678", "+12345678"],
                &[
                    "+0123456789",
                    "+1234567",
                    "4915112345678",
                    "+1234567890123456",
                ],
            ),
            (
                &DNS_NAME,
                &["acme.example", "mail.acme.example."],
                &["acme", "-a.example", "a..example", " acme.example"],
            ),
            (
                &DKIM_SELECTOR,
                &["otpmint1", "s1.2026"],
                &["", "-s", "s-", "a..b"],
            ),
            (
                &CODE_CHALLENGE,
                &["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"],
                &["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN", "short"],
            ),
            (
                &CODE_VERIFIER,
                &["dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"],
                &["short", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX!"],
            ),
            (
                &BRAND_COLOR,
                &["#FFD700", "#0a0b0c"],
                &["FFD700", "#FFD70", "#GGGGGG", "red"],
            ),
            (
                &IDEMPOTENCY_KEY,
                &["a", "order-42/retry:1"],
                &["", "has space", "tab\t", "é"],
            ),
            (&CURSOR, &["", "bm9wZQ", "a-b_c"], &["a=b", "a b", "a/b"]),
        ] {
            for y in yes {
                assert!(g.matches(y), "{} refuses {y}", g.pattern);
            }
            for n in no {
                assert!(!g.matches(n), "{} takes {n}", g.pattern);
            }
        }
    }
}
