//! Language tags (API.md §8): `en`, `pt-BR`, `zh-Hant-TW`; 2–35 characters of letters,
//! digits and `-`, no subtag empty. Tags compare without regard to case, so they are kept in one canonical
//! spelling: the language lower case, a four-letter script title case, a two-letter region
//! upper case, anything else lower case (as BCP 47 recommends).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale(String);

/// Why a tag was refused.
pub const LOCALE_RULE: &str =
    "must be a language tag such as en or pt-BR: 2 to 35 letters, digits and '-' (no empty subtag)";

impl Locale {
    pub fn parse(s: &str) -> Option<Locale> {
        if !super::grammar::LOCALE.matches(s) {
            return None;
        }
        let mut out = Vec::new();
        for (i, sub) in s.split('-').enumerate() {
            if sub.is_empty() {
                return None;
            }
            let canonical = if i == 0 {
                sub.to_ascii_lowercase()
            } else if sub.len() == 4 && sub.bytes().all(|b| b.is_ascii_alphabetic()) {
                let lower = sub.to_ascii_lowercase();
                let mut c = lower.chars();
                match c.next() {
                    Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                    None => lower,
                }
            } else if sub.len() == 2 && sub.bytes().all(|b| b.is_ascii_alphabetic()) {
                sub.to_ascii_uppercase()
            } else {
                sub.to_ascii_lowercase()
            };
            out.push(canonical);
        }
        Some(Locale(out.join("-")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The language alone (`pt-BR` → `pt`).
    pub fn language(&self) -> Locale {
        Locale(self.0.split('-').next().unwrap_or(&self.0).to_string())
    }

    pub fn english() -> Locale {
        Locale("en".into())
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_canonical_and_checked() {
        let p = |s: &str| Locale::parse(s).map(|l| l.as_str().to_string());
        assert_eq!(p("en").as_deref(), Some("en"));
        assert_eq!(p("pt-br").as_deref(), Some("pt-BR"));
        assert_eq!(p("ZH-hant-tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(p("es-419").as_deref(), Some("es-419"));
        assert_eq!(Locale::parse("pt-BR").unwrap().language().as_str(), "pt");
        // Whatever the contract's "2–35 letters, digits and -" allows, with no empty subtag.
        let longest = "A".repeat(35);
        assert_eq!(p(&longest), Some("a".repeat(35)));
        assert_eq!(p("x-Private").as_deref(), Some("x-private"));
        assert_eq!(p("a1").as_deref(), Some("a1"));
        assert_eq!(p("de-abcdefghi").as_deref(), Some("de-abcdefghi"));
        for bad in [
            "",
            "e",
            "en_US",
            "en-",
            "-en",
            "en--us",
            "en-US/x",
            "a".repeat(36).as_str(),
            "fr ",
            "dé",
        ] {
            assert!(Locale::parse(bad).is_none(), "{bad:?} accepted");
        }
    }
}
