//! Who a code goes to: an email address or, for a text message, a phone number in E.164
//! form (API.md §12.3). Quotas, cooldowns, supersede, statistics and the audit treat both
//! alike, by their canonical form.

use std::fmt;

use super::email::RecipientEmail;
use super::policy::FieldError;

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0 — in its
/// canonical form, the one every count, list and provider sees.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", mask_phone(&self.0))
    }
}

/// What a phone number must look like.
pub const PHONE_RULE: &str =
    "must be a phone number in E.164 form: + and 8 to 15 digits, like +4915112345678";

impl PhoneNumber {
    /// A number in E.164 form, in its one spelling: as written when libphonenumber's
    /// metadata holds it valid so, else without its country's national prefix after the
    /// country code when that leaves a valid number (`+49015112345678` is `+4915112345678`),
    /// so its quotas, cooldown, supersede group, suppression entry, trust and velocity range
    /// are one, and the provider is given E.164. Any other number (a fictional test number,
    /// one the SMS guard refuses) is kept as given: never made into another valid number.
    pub fn parse(s: &str) -> Option<PhoneNumber> {
        if !Self::has_e164_form(s) {
            return None;
        }
        if super::numbering::as_written(s).is_some() {
            return Some(PhoneNumber(s.to_string()));
        }
        let one = super::numbering::without_national_prefix(s).filter(|c| Self::has_e164_form(c));
        Some(PhoneNumber(one.unwrap_or_else(|| s.to_string())))
    }

    /// Whether `s` has the form of an E.164 number (`+` and 8 to 15 digits, the first not
    /// 0), as given: no parsing.
    pub fn has_e164_form(s: &str) -> bool {
        super::grammar::PHONE.matches(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number for logs and the audit: the country code's first two digits and the last
/// three around seven stars, whatever the length (`+49*******678`, API.md §12.4; like an
/// address's `a***@`, the mask does not tell how long the number is).
pub fn mask_phone(s: &str) -> String {
    let digits = s.trim_start_matches('+');
    let n = digits.chars().count();
    if n < 6 {
        return "+***".into();
    }
    let head: String = digits.chars().take(2).collect();
    let tail: String = digits.chars().skip(n - 3).collect();
    format!("+{head}*******{tail}")
}

/// Declares [`Channel`] from one table: a channel is one line (its variant, its name, and
/// whether it reaches a phone), and [`Channel::ALL`] is made from the same lines, so it
/// cannot miss one.
macro_rules! channels {
    ($($variant:ident => $name:literal, phone: $phone:literal;)+) => {
        /// What a message is: an email, or a text message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Channel {
            $($variant,)+
        }

        impl Channel {
            /// Every channel, in the table's order.
            pub const ALL: [Channel; [$($name),+].len()] = [$(Channel::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Channel::$variant => $name,)+
                }
            }

            /// Whether it reaches a phone number: its message is one short text (a
            /// template's `sms` part), not an email, and the SMS fraud guard screens its
            /// recipients.
            pub fn is_phone(self) -> bool {
                match self {
                    $(Channel::$variant => $phone,)+
                }
            }
        }
    };
}

channels! {
    Email => "email", phone: false;
    Sms => "sms", phone: true;
}

impl Channel {
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// An email address or a phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Email(RecipientEmail),
    Phone(PhoneNumber),
}

impl Recipient {
    /// A recipient given as one text (the suppression list's): an E.164 number (`+` and
    /// digits) or an address — `+tag@…` is an address, anything else that starts with `+`
    /// a malformed number. `field` names it in the error.
    pub fn parse_either(given: &str, field: &str) -> Result<Recipient, FieldError> {
        // A number written another way: `0049…`, `+49 151…`, `tel:+49…`.
        let number_like = given.starts_with("tel:")
            || (given.chars().any(|c| c.is_ascii_digit())
                && given
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.')));
        if let Some(number) = PhoneNumber::parse(given) {
            Ok(Recipient::Phone(number))
        } else if (given.starts_with('+') || number_like) && !given.contains('@') {
            // A number written another way (`0049…`, `+49 151…`): the number's rule, not
            // the address's.
            Err(FieldError::new(field, PHONE_RULE))
        } else {
            RecipientEmail::parse(given)
                .map(Recipient::Email)
                .map_err(|e| {
                    let m = format!("is not an email address or an E.164 number: {e}");
                    FieldError::new(field, m)
                })
        }
    }

    /// As the client gave it (a number: in its one spelling).
    pub fn as_given(&self) -> &str {
        match self {
            Recipient::Email(e) => e.as_given(),
            Recipient::Phone(p) => p.as_str(),
        }
    }
    /// The key quotas and test recipients match by.
    pub fn canonical(&self) -> &str {
        match self {
            Recipient::Email(e) => e.canonical(),
            Recipient::Phone(p) => p.as_str(),
        }
    }
    /// The keys a stored entry of it may have: its key, then the key it had before keys were
    /// case-folded ([`RecipientEmail::legacy_key`]), or before numbers had one spelling
    /// ([`super::numbering::with_national_prefix`]), where that differs.
    pub fn keys(&self) -> impl Iterator<Item = String> {
        let legacy = match self {
            Recipient::Email(e) => e.legacy_key(),
            Recipient::Phone(p) => super::numbering::with_national_prefix(p.as_str()),
        };
        std::iter::once(self.canonical().to_string()).chain(legacy)
    }
    /// Where the message goes.
    pub fn delivery_address(&self) -> String {
        match self {
            Recipient::Email(e) => e.delivery_address(),
            Recipient::Phone(p) => p.as_str().to_string(),
        }
    }
    pub fn channel(&self) -> Channel {
        match self {
            Recipient::Email(_) => Channel::Email,
            Recipient::Phone(_) => Channel::Sms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipient_goes_by_a_channel_that_reaches_its_kind_of_address() {
        for ch in Channel::ALL {
            assert_eq!(Channel::parse(ch.as_str()), Some(ch));
        }
        let phone = Recipient::Phone(PhoneNumber::parse("+4915112345678").unwrap());
        let email = Recipient::Email(RecipientEmail::parse("a@b.example").unwrap());
        assert!(phone.channel().is_phone());
        assert!(!email.channel().is_phone());
    }

    #[test]
    fn one_text_is_read_as_a_number_or_an_address_and_a_bad_one_names_its_field() {
        let r = |s: &str| Recipient::parse_either(s, "recipient");
        assert!(matches!(r("+4915112345678"), Ok(Recipient::Phone(_))));
        assert_eq!(r("Ada@Example.COM").unwrap().canonical(), "ada@example.com");
        assert!(matches!(r("+tag@b.example"), Ok(Recipient::Email(_))));
        let bad_number = r("+49 151").unwrap_err();
        assert_eq!(
            (bad_number.field.as_str(), bad_number.message.as_str()),
            ("recipient", PHONE_RULE)
        );
        for number in [
            "004915112345803",
            "0151 1234-5678",
            "(030) 1234567",
            "tel:+4915112345678",
        ] {
            let e = r(number).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                ("recipient", PHONE_RULE),
                "{number}"
            );
        }
        let neither = r("nobody").unwrap_err();
        assert_eq!(neither.field, "recipient");
        assert!(neither
            .message
            .starts_with("is not an email address or an E.164 number"));
    }

    #[test]
    fn phone_numbers_are_e164() {
        for good in [
            "+4915112345678",
            "+14155550123",
            "+12345678",
            "+123456789012345",
        ] {
            assert!(PhoneNumber::parse(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "+",
            "4915112345678",
            "+1234567",
            "+1234567890123456",
            "+0123456789",
            "+49 151 12345678",
            "+49-15112345678",
            "+49151123456７8",
            "++4915112345678",
        ] {
            assert!(PhoneNumber::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_valid_number_has_one_spelling_and_others_are_kept_as_given() {
        for (given, canonical) in [
            // The national trunk prefix kept after the country code.
            ("+49015112345678", "+4915112345678"),
            ("+4915112345678", "+4915112345678"),
            ("+330612345678", "+33612345678"),
            ("+4407400123456", "+447400123456"),
            ("+4306641234567", "+436641234567"),
            // Italy's leading zero is part of the number.
            ("+390612345678", "+390612345678"),
            // Valid as written, though the parser would strip a "national prefix": kept
            // (a Japanese and a Belarusian toll-free number, a Korean one).
            ("+8100660077889", "+8100660077889"),
            ("+37580339153945", "+37580339153945"),
            ("+8200308739261", "+8200308739261"),
            // The prefix twice (a US number after a German picker): not made a German
            // mobile.
            ("+490017012345678", "+490017012345678"),
            ("+36060612345678", "+36060612345678"),
            // Not valid (fictional, too short for its country): as given.
            ("+15550100", "+15550100"),
            ("+491511234", "+491511234"),
        ] {
            let n = PhoneNumber::parse(given).unwrap();
            assert_eq!(n.as_str(), canonical, "{given}");
            assert_eq!(PhoneNumber::parse(canonical).unwrap().as_str(), canonical);
        }
        assert_eq!(
            Recipient::parse_either("+49015112345678", "recipient")
                .unwrap()
                .canonical(),
            "+4915112345678"
        );
    }

    #[test]
    fn numbers_are_masked_but_for_the_country_and_the_last_three_digits() {
        assert_eq!(mask_phone("+4915112345678"), "+49*******678");
        assert_eq!(mask_phone("+491511234678"), "+49*******678");
        assert_eq!(mask_phone("+12345678"), "+12*******678");
        assert_eq!(
            format!("{:?}", PhoneNumber::parse("+14155550123").unwrap()),
            "PhoneNumber(+14*******123)"
        );
    }
}
