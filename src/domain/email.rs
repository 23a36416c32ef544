//! RecipientEmail: one RFC 5321 address, parsed strictly, with its canonical form for quotas.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must be one email address like ada@example.com")]
    Malformed,
    #[error("must be at most 254 characters")]
    TooLong,
    #[error("the domain must be a DNS name with a dot (like example.com): not a bare name like localhost, nor an IP literal")]
    BadDomain,
    #[error("a quoted local part (\"…\"@) or a backslash is not accepted")]
    Quoted,
    #[error("the domain holds characters that do not stand for themselves (invisible, or a full-width or compatibility form)")]
    HiddenInDomain,
    #[error("the part before @ holds a compatibility form (a ligature like ﬁ, a full-width letter, ſ, the Kelvin sign) or a decomposed accent: give the plain, composed letters")]
    HiddenInLocal,
    #[error("an encoded word (=?charset?…?=) is not an address: give the address itself")]
    EncodedWord,
}

/// A recipient as given (for delivery and for the verify answer) plus its canonical key.
#[derive(Clone, PartialEq, Eq)]
pub struct RecipientEmail {
    given: String,
    local: String,
    ascii_domain: String,
    canonical: String,
}

impl fmt::Debug for RecipientEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientEmail({})", self.masked())
    }
}

impl RecipientEmail {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        if input.len() > 254 {
            return Err(EmailError::TooLong);
        }
        if input.is_empty()
            || input
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';'))
        {
            return Err(EmailError::Malformed);
        }
        let (local, domain) = input.rsplit_once('@').ok_or(EmailError::Malformed)?;
        if local.is_empty() || local.len() > 64 || domain.is_empty() {
            return Err(EmailError::Malformed);
        }
        if domain.starts_with('[') || domain.parse::<std::net::IpAddr>().is_ok() {
            return Err(EmailError::BadDomain);
        }
        // One mailbox, one spelling: a quoted local part has many (`"bob"`, `"b\ob"` all
        // deliver to bob), and quotas, cooldowns and the suppression list count by spelling.
        if local.contains(['"', '\\']) {
            return Err(EmailError::Quoted);
        }
        // Nor a spelling that stands for another: a compatibility form (`ﬃ`, `ſ`, the
        // Kelvin sign, a full-width letter) is another mailbox to the relay, yet folds into
        // a plain one in the key quotas and the suppression list count by — a bounce on
        // `oﬃce@` would suppress `office@`. Refused as in the domain; a decomposed accent
        // likewise (its composed form is the one to give, RFC 6532 §3.1).
        if !icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().is_normalized(local) {
            return Err(EmailError::HiddenInLocal);
        }
        // An RFC 2047 encoded word must not stand in an address (§5): mail software that
        // decodes it delivers to another mailbox than the one counted here.
        if local.contains("=?") && local.contains("?=") {
            return Err(EmailError::EncodedWord);
        }
        let ascii_domain = idna::domain_to_ascii_strict(domain)
            .map_err(|_| EmailError::BadDomain)?
            .to_ascii_lowercase();
        // IDNA drops invisible characters and maps compatibility forms: `ex\u{200b}ample.com`
        // and `exａmple.com` are delivered to example.com. Such a spelling is refused, so the
        // address echoed as verified is the one mailed.
        // Label by label, the given one is its A-label or its U-label (either case).
        let (unicode, _) = idna::domain_to_unicode(&ascii_domain);
        let given = domain.to_lowercase();
        let (given, unicode): (Vec<&str>, Vec<&str>) =
            (given.split('.').collect(), unicode.split('.').collect());
        let faithful = given.len() == unicode.len()
            && given
                .iter()
                .zip(unicode.iter().zip(ascii_domain.split('.')))
                .all(|(g, (u, a))| g == u || g == &a);
        if !faithful {
            return Err(EmailError::HiddenInDomain);
        }
        let labels: Vec<&str> = ascii_domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| l.is_empty())
            || labels
                .last()
                .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(EmailError::BadDomain);
        }
        // lettre's own parser is the authority on the local part's syntax.
        let for_lettre = format!("{local}@{ascii_domain}");
        lettre::Address::new(local, &ascii_domain).map_err(|_| EmailError::Malformed)?;
        if for_lettre.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let canonical = format!("{}@{}", fold_case(local), ascii_domain);
        Ok(RecipientEmail {
            given: input.to_string(),
            local: local.to_string(),
            ascii_domain,
            canonical,
        })
    }

    /// The address exactly as the client gave it.
    pub fn as_given(&self) -> &str {
        &self.given
    }

    /// Case-folded, IDNA A-label domain: the key quotas count by.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The key this address had before keys were case-folded (its local part lower-cased),
    /// where that differs (`ß`, a final `ς`, a ligature, …): entries stored then are still
    /// found and removed by it.
    pub fn legacy_key(&self) -> Option<String> {
        let legacy = format!("{}@{}", self.local.to_lowercase(), self.ascii_domain);
        (legacy != self.canonical).then_some(legacy)
    }

    /// The address to deliver to: local part as given, domain in ASCII form.
    pub fn delivery_address(&self) -> String {
        format!("{}@{}", self.local, self.ascii_domain)
    }

    /// For logs: `a***@example.com`.
    pub fn masked(&self) -> String {
        mask(&self.delivery_address())
    }
}

/// Mask any address-like string for logs (a phone number as `+49*******678`).
pub fn mask(addr: &str) -> String {
    if super::recipient::PhoneNumber::has_e164_form(addr) {
        return super::recipient::mask_phone(addr);
    }
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// An address's local part as quotas, cooldowns and the suppression list count it: Unicode
/// full case folding (API.md §6.16), so `STRASSE` and `straße`, or `σίσυφοσ` and `σίσυφος`,
/// are one recipient (lower-casing alone keeps `ß` and the final `ς`). ASCII folds to its
/// lower case, as before.
pub fn fold_case(local: &str) -> String {
    icu_casemap::CaseMapper::new()
        .fold_string(local)
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_canonicalises() {
        let e = RecipientEmail::parse("Ada@EXAMPLE.com").unwrap();
        assert_eq!(e.as_given(), "Ada@EXAMPLE.com");
        assert_eq!(e.canonical(), "ada@example.com");
        assert_eq!(e.delivery_address(), "Ada@example.com");
        assert_eq!(e.masked(), "A***@example.com");
    }

    /// API.md §6.16: case-folded, not lower-cased (found by the differential audit: a
    /// suppressed `STRASSE@…` let a mint to `straße@…` through, and `σίσυφοσ` had a cooldown
    /// of its own beside `σίσυφος`).
    #[test]
    fn the_local_part_is_case_folded_not_lower_cased() {
        let key = |a: &str| RecipientEmail::parse(a).unwrap().canonical().to_string();
        assert_eq!(key("STRASSE@example.com"), key("straße@example.com"));
        assert_eq!(key("straße@example.com"), "strasse@example.com");
        assert_eq!(key("ΣΊΣΥΦΟΣ@example.com"), key("σίσυφος@example.com"));
        assert_eq!(key("σίσυφοσ@example.com"), key("σίσυφος@example.com"));
        // Delivery keeps the local part as given.
        let e = RecipientEmail::parse("Straße@example.com").unwrap();
        assert_eq!(e.delivery_address(), "Straße@example.com");
        // ASCII as before.
        assert_eq!(
            key("Ada.Lovelace+X@Example.COM"),
            "ada.lovelace+x@example.com"
        );
        // The key an entry stored before folding has, where it differs.
        let legacy = |a: &str| RecipientEmail::parse(a).unwrap().legacy_key();
        assert_eq!(
            legacy("Straße@example.com").as_deref(),
            Some("straße@example.com")
        );
        assert_eq!(legacy("Ada@example.com"), None);
    }

    /// A local part that folds into another mailbox's key without being that mailbox —
    /// a ligature, the long s, the Kelvin sign, a full-width letter — is refused (found by
    /// the recipient audit: a bounce on `oﬃce@` suppressed `office@`); so is a decomposed
    /// accent, and an RFC 2047 encoded word, which mail software decodes into another
    /// address. Composed letters of any script pass.
    #[test]
    fn a_local_part_that_stands_for_another_mailbox_is_refused() {
        let refused = [
            ("o\u{fb03}ce@example.com", EmailError::HiddenInLocal),
            ("\u{17f}am@example.com", EmailError::HiddenInLocal),
            ("\u{212a}im@example.com", EmailError::HiddenInLocal),
            ("\u{ff41}da@example.com", EmailError::HiddenInLocal),
            ("jose\u{301}@example.com", EmailError::HiddenInLocal),
            ("=?utf-8?b?QWRh?=@example.com", EmailError::EncodedWord),
            ("x=?us-ascii?q?ada?=y@example.com", EmailError::EncodedWord),
        ];
        for (spelled, why) in refused {
            assert_eq!(RecipientEmail::parse(spelled), Err(why), "{spelled}");
        }
        for plain in [
            "jos\u{e9}@example.com",
            "stra\u{df}e@example.com",
            "\u{3c3}\u{3af}\u{3c3}\u{3c5}\u{3c6}\u{3bf}\u{3c2}@example.com",
            "\u{7528}\u{6237}@example.com",
            "a=b?c@example.com",
        ] {
            assert!(RecipientEmail::parse(plain).is_ok(), "{plain}");
        }
    }

    #[test]
    fn idna_domains_share_a_canonical_key() {
        let a = RecipientEmail::parse("ada@bücher.example").unwrap();
        let b = RecipientEmail::parse("ADA@xn--bcher-kva.example").unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }

    #[test]
    fn one_mailbox_has_one_spelling() {
        for bad in [
            "\"bob\"@example.com",
            "\"b\\ob\"@example.com",
            "b\\ob@example.com",
            "\"c\\\\d\"@example.com",
        ] {
            assert_eq!(
                RecipientEmail::parse(bad).err(),
                Some(EmailError::Quoted),
                "{bad}"
            );
        }
        for bad in [
            "victim@ex\u{200b}ample.com",
            "victim@ex\u{ad}ample.com",
            "victim@ex\u{ff41}mple.com",
        ] {
            assert_eq!(
                RecipientEmail::parse(bad).err(),
                Some(EmailError::HiddenInDomain),
                "{bad}"
            );
        }
        for good in [
            "ada@bücher.example",
            "ada@BÜCHER.example",
            "ada@straße.example",
            "ada@xn--bcher-kva.example",
            "Ada@Example.COM",
        ] {
            assert!(RecipientEmail::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn rejects_hostile_forms() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example.com\r\nBcc: x@y.com",
            "ada@example.com,bob@example.com",
            "Ada <ada@example.com>",
            "ada@[127.0.0.1]",
            "ada@127.0.0.1",
            "ada@localhost",
            "ada@exa mple.com",
            "ada\0@example.com",
            "a..b@example.com",
            "ada@example..com",
        ] {
            assert!(RecipientEmail::parse(bad).is_err(), "accepted {bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(RecipientEmail::parse(&long).is_err());
    }
}
