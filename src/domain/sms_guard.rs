//! The SMS fraud guard's rules (API.md §17.1): a tenant's SMS settings, the facts of a
//! number it needs (its country, its type, its range: read by `numbering`), and which
//! numbers a mint may text at all. Pure: the velocity counts are the store's.

use std::str::FromStr;

use phonenumber::metadata::DATABASE;
use phonenumber::Type;

use super::named::named_enum;
use super::numbering::{as_written, country_of_code};
use super::policy::FieldError;

/// How long a number that verified a code stays trusted unless the tenant says otherwise.
pub const TRUSTED_DAYS_DEFAULT: u32 = 90;
/// The most a tenant may choose (ten years).
pub const TRUSTED_DAYS_MAX: u32 = 3650;
/// The most entries `sms.allowed_countries` takes (there are 249 ISO 3166-1 codes; the API
/// description says `maxItems: 250`).
pub const COUNTRIES_MAX: usize = 250;
/// How many digits a number's range leaves off: the range is the number without them.
pub const RANGE_TAIL: usize = 3;

/// A tenant's SMS settings (`"sms"` on the tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsSettings {
    /// ISO 3166-1 alpha-2 codes, upper case, sorted, no repeats; empty: SMS to no country.
    pub allowed_countries: Vec<String>,
    /// Numbers that verified a code of the tenant within this many days skip the velocity
    /// limits (0: none does).
    pub trusted_days: u32,
    /// Fixed-line numbers pass too (a landline that reads texts aloud).
    pub allow_fixed_line: bool,
}

impl Default for SmsSettings {
    fn default() -> Self {
        SmsSettings {
            allowed_countries: Vec::new(),
            trusted_days: TRUSTED_DAYS_DEFAULT,
            allow_fixed_line: false,
        }
    }
}

/// A change of the SMS settings: fields given replace, others stay.
#[derive(Debug, Clone, Default)]
pub struct SmsPatch {
    pub allowed_countries: Option<Vec<String>>,
    pub trusted_days: Option<u32>,
    pub allow_fixed_line: Option<bool>,
}

impl SmsPatch {
    /// The settings after the change, or what is wrong with it (every field named).
    pub fn apply(&self, current: &SmsSettings) -> Result<SmsSettings, Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut next = current.clone();
        if let Some(list) = self
            .allowed_countries
            .as_ref()
            .filter(|l| l.len() > COUNTRIES_MAX)
        {
            errs.push(FieldError::new(
                "sms.allowed_countries",
                format!(
                    "must hold at most {COUNTRIES_MAX} country codes, not {}",
                    list.len()
                ),
            ));
        } else if let Some(list) = &self.allowed_countries {
            let mut codes = Vec::with_capacity(list.len());
            for c in list {
                match country_code(c) {
                    Some(code) => codes.push(code),
                    None => errs.push(FieldError::new(
                        "sms.allowed_countries",
                        format!(
                            "{:?} is not a country code: use ISO 3166-1 alpha-2 codes such as \"DE\" or \"US\"",
                            c.chars().take(16).collect::<String>()
                        ),
                    )),
                }
            }
            codes.sort();
            codes.dedup();
            next.allowed_countries = codes;
        }
        if let Some(days) = self.trusted_days {
            if days > TRUSTED_DAYS_MAX {
                errs.push(FieldError::new(
                    "sms.trusted_days",
                    format!("must be between 0 and {TRUSTED_DAYS_MAX}"),
                ));
            }
            next.trusted_days = days;
        }
        if let Some(f) = self.allow_fixed_line {
            next.allow_fixed_line = f;
        }
        if errs.is_empty() {
            Ok(next)
        } else {
            Err(errs)
        }
    }
}

/// A country code as stored (upper case), if libphonenumber knows the country.
pub fn country_code(s: &str) -> Option<String> {
    let up = s.trim().to_ascii_uppercase();
    let known = up.len() == 2
        && up.bytes().all(|b| b.is_ascii_uppercase())
        && phonenumber::country::Id::from_str(&up).is_ok()
        && DATABASE.by_id(&up).is_some();
    known.then_some(up)
}

/// The allowed countries as stored: comma-separated.
pub fn countries_to_stored(list: &[String]) -> String {
    list.join(",")
}

/// The allowed countries from their stored form.
pub fn countries_from_stored(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a number is, by libphonenumber's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberFacts {
    /// Its country (`DE`), if the metadata places it in one.
    pub country: Option<String>,
    /// Whether it is a valid number of that country.
    pub valid: bool,
    pub kind: NumberKind,
    /// The number without its last [`RANGE_TAIL`] digits (`+4915112345`).
    pub range: String,
}

/// A number's type, as the guard sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberKind {
    /// Mobile, fixed-line-or-mobile, toll-free: always texted.
    Texts,
    /// Fixed-line: texted only with `allow_fixed_line`.
    FixedLine,
    /// Premium-rate, shared-cost, UAN, voicemail, pager, VoIP, personal, unknown and the
    /// rest: never texted.
    Refused,
}

impl NumberFacts {
    /// The facts of an E.164 number (`+` and digits).
    pub fn of(e164: &str) -> NumberFacts {
        let digits = e164.trim_start_matches('+');
        let range = format!(
            "+{}",
            &digits[..digits
                .len()
                .saturating_sub(RANGE_TAIL)
                .max(1)
                .min(digits.len())]
        );
        if let Some((country, kind)) = as_written(e164) {
            return NumberFacts {
                country,
                valid: true,
                kind: kind_of(kind),
                range,
            };
        }
        // Not a number as written (a number with one spelling is in it by now): invalid, of
        // the country its code names (so that an unlisted country is refused as such).
        NumberFacts {
            country: country_of_code(e164),
            valid: false,
            kind: NumberKind::Refused,
            range,
        }
    }
}

fn kind_of(t: Type) -> NumberKind {
    match t {
        Type::Mobile | Type::FixedLineOrMobile | Type::TollFree => NumberKind::Texts,
        Type::FixedLine => NumberKind::FixedLine,
        _ => NumberKind::Refused,
    }
}

/// Why the guard refuses a number before any velocity count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// Its country is not in the tenant's list (or it has none).
    CountryNotAllowed,
    /// Invalid for its country, or of a type that is not texted.
    NumberNotAllowed(NumberRefused),
}

named_enum! {
    /// Which rule refused a number (the problem's `number_type`): the one a tenant can
    /// change (`fixed_line`) told apart from the ones it cannot.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum NumberRefused {
        /// Not a valid number of its country (or of none).
        Invalid = "invalid",
        /// A fixed line: texted only with `sms.allow_fixed_line`.
        FixedLine = "fixed_line",
        /// Premium-rate, shared-cost, UAN, voicemail, pager, VoIP, personal or unknown.
        NotTexted = "not_texted",
    }
}

impl Screened {
    /// The reason as stats, the audit and `otp.blocked` name it.
    pub fn reason(self) -> &'static str {
        match self {
            Screened::CountryNotAllowed => "country_not_allowed",
            Screened::NumberNotAllowed(_) => "number_not_allowed",
        }
    }
}

/// The reason a velocity refusal is named by.
pub const VELOCITY_REASON: &str = "velocity";

/// Whether the tenant's settings let a mint text this number (the country first: a number
/// of a country not listed is refused as such, whatever its type).
pub fn screen(settings: &SmsSettings, facts: &NumberFacts) -> Result<(), Screened> {
    match &facts.country {
        Some(c) if !settings.allowed_countries.iter().any(|a| a == c) => {
            return Err(Screened::CountryNotAllowed)
        }
        Some(_) => {}
        None => return Err(Screened::NumberNotAllowed(NumberRefused::Invalid)),
    }
    if !facts.valid {
        return Err(Screened::NumberNotAllowed(NumberRefused::Invalid));
    }
    match facts.kind {
        NumberKind::Texts => Ok(()),
        NumberKind::FixedLine if settings.allow_fixed_line => Ok(()),
        NumberKind::FixedLine => Err(Screened::NumberNotAllowed(NumberRefused::FixedLine)),
        NumberKind::Refused => Err(Screened::NumberNotAllowed(NumberRefused::NotTexted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowing(countries: &[&str]) -> SmsSettings {
        SmsSettings {
            allowed_countries: countries.iter().map(|c| c.to_string()).collect(),
            ..SmsSettings::default()
        }
    }

    #[test]
    fn a_german_mobile_number_is_texted_only_where_germany_is_allowed() {
        let f = NumberFacts::of("+4915112345678");
        assert_eq!(f.country.as_deref(), Some("DE"));
        assert!(f.valid);
        assert_eq!(f.kind, NumberKind::Texts);
        assert_eq!(f.range, "+4915112345");
        assert_eq!(screen(&allowing(&["DE"]), &f), Ok(()));
        assert_eq!(
            screen(&allowing(&["US", "FR"]), &f),
            Err(Screened::CountryNotAllowed)
        );
        assert_eq!(
            screen(&SmsSettings::default(), &f),
            Err(Screened::CountryNotAllowed)
        );
    }

    #[test]
    fn premium_rate_and_invalid_numbers_are_refused_in_an_allowed_country() {
        let de = allowing(&["DE", "GB", "US"]);
        // German premium rate (0900) and UK premium rate (09).
        for n in ["+499001234567", "+449098790000"] {
            let f = NumberFacts::of(n);
            assert!(f.valid, "{n} is a valid number");
            assert_eq!(f.kind, NumberKind::Refused, "{n}");
            assert_eq!(
                screen(&de, &f),
                Err(Screened::NumberNotAllowed(NumberRefused::NotTexted)),
                "{n}"
            );
        }
        // A German mobile prefix with too few digits; the unassigned area code 555; a UK
        // number of Ofcom's drama range.
        for n in ["+491511", "+15551234567", "+447700900123"] {
            let f = NumberFacts::of(n);
            assert!(!f.valid, "{n} is not valid");
            assert_eq!(
                screen(&de, &f),
                Err(Screened::NumberNotAllowed(NumberRefused::Invalid)),
                "{n}"
            );
        }
    }

    /// libphonenumber's own example number of each type, in every country whose metadata
    /// has one: the types §17.1 refuses are refused, those it texts pass.
    #[test]
    fn every_type_the_contract_refuses_is_refused_by_libphonenumbers_own_examples() {
        use phonenumber::metadata::{Descriptor, Descriptors};
        type Of = fn(&Descriptors) -> Option<&Descriptor>;
        let refused: [(&str, Of); 7] = [
            ("premium rate", Descriptors::premium_rate),
            ("shared cost", Descriptors::shared_cost),
            ("UAN", Descriptors::uan),
            ("voicemail", Descriptors::voicemail),
            ("pager", Descriptors::pager),
            ("personal number", Descriptors::personal_number),
            ("VoIP", Descriptors::voip),
        ];
        let texted: [(&str, Of); 2] = [
            ("mobile", Descriptors::mobile),
            ("toll free", Descriptors::toll_free),
        ];
        let countries = [
            "GB", "FR", "DE", "IT", "ES", "NL", "BE", "AT", "CH", "US", "IN", "BR", "AU", "JP",
        ];
        let mut checked = std::collections::BTreeMap::<&str, usize>::new();
        for id in countries {
            let meta = DATABASE.by_id(id).unwrap();
            let settings = allowing(&[id]);
            let example = |of: Of| {
                of(meta.descriptors())
                    .and_then(|d| d.example())
                    .map(|e| format!("+{}{e}", meta.country_code()))
            };
            for (what, of) in refused {
                let Some(n) = example(of) else { continue };
                let facts = NumberFacts::of(&n);
                assert!(facts.valid, "{what} {n}");
                assert_eq!(facts.kind, NumberKind::Refused, "{what} {n}");
                assert_eq!(
                    screen(&settings, &facts),
                    Err(Screened::NumberNotAllowed(NumberRefused::NotTexted)),
                    "{what} {n}"
                );
                *checked.entry(what).or_default() += 1;
            }
            for (what, of) in texted {
                let Some(n) = example(of) else { continue };
                assert_eq!(
                    screen(&settings, &NumberFacts::of(&n)),
                    Ok(()),
                    "{what} {n}"
                );
                *checked.entry(what).or_default() += 1;
            }
        }
        // Each type was met in some country's examples.
        for (what, _) in refused.iter().chain(texted.iter()) {
            assert!(
                checked.get(what).copied().unwrap_or(0) > 0,
                "no example of {what}: {checked:?}"
            );
        }
    }

    /// A number valid as written is that number, though the `phonenumber` crate's parser
    /// would strip a "national prefix" from it (found by review): a Japanese toll-free
    /// number is not read as an Osaka fixed line, nor a St Petersburg fixed line (its area
    /// code starts with 8, Russia's trunk prefix) as invalid.
    #[test]
    fn a_number_valid_as_written_is_that_number() {
        let f = NumberFacts::of("+8100660077889");
        assert_eq!(
            (f.country.as_deref(), f.valid, f.kind),
            (Some("JP"), true, NumberKind::Texts)
        );
        let f = NumberFacts::of("+78121234567");
        assert_eq!(
            (f.country.as_deref(), f.valid, f.kind),
            (Some("RU"), true, NumberKind::FixedLine)
        );
        // Not a number as written: invalid, of the country its code names.
        let f = NumberFacts::of("+490017012345678");
        assert_eq!((f.country.as_deref(), f.valid), (Some("DE"), false));
    }

    #[test]
    fn fixed_line_numbers_pass_only_when_the_tenant_allows_them() {
        // Berlin.
        let f = NumberFacts::of("+493012345678");
        assert_eq!(f.kind, NumberKind::FixedLine);
        let mut s = allowing(&["DE"]);
        assert_eq!(
            screen(&s, &f),
            Err(Screened::NumberNotAllowed(NumberRefused::FixedLine))
        );
        s.allow_fixed_line = true;
        assert_eq!(screen(&s, &f), Ok(()));
    }

    #[test]
    fn country_codes_are_checked_and_normalised() {
        let p = SmsPatch {
            allowed_countries: Some(vec!["de".into(), "US".into(), "DE".into()]),
            trusted_days: Some(30),
            allow_fixed_line: None,
        };
        let s = p.apply(&SmsSettings::default()).unwrap();
        assert_eq!(s.allowed_countries, vec!["DE", "US"]);
        assert_eq!(s.trusted_days, 30);
        // Over the length the API description states: refused, not deduplicated to one.
        let e = SmsPatch {
            allowed_countries: Some(vec!["DE".into(); COUNTRIES_MAX + 1]),
            ..SmsPatch::default()
        }
        .apply(&SmsSettings::default())
        .unwrap_err();
        assert_eq!(e[0].field, "sms.allowed_countries");
        let full = SmsPatch {
            allowed_countries: Some(vec!["DE".into(); COUNTRIES_MAX]),
            ..SmsPatch::default()
        };
        assert_eq!(
            full.apply(&SmsSettings::default())
                .unwrap()
                .allowed_countries,
            ["DE"]
        );
        for bad in ["XX", "DEU", "", "d3"] {
            let p = SmsPatch {
                allowed_countries: Some(vec![bad.into()]),
                ..SmsPatch::default()
            };
            let e = p.apply(&SmsSettings::default()).unwrap_err();
            assert_eq!(e[0].field, "sms.allowed_countries", "{bad}");
        }
        let e = SmsPatch {
            trusted_days: Some(TRUSTED_DAYS_MAX + 1),
            ..SmsPatch::default()
        }
        .apply(&SmsSettings::default())
        .unwrap_err();
        assert_eq!(e[0].field, "sms.trusted_days");
        assert_eq!(
            countries_from_stored(&countries_to_stored(&s.allowed_countries)),
            s.allowed_countries
        );
        assert!(countries_from_stored("").is_empty());
    }
}
