//! What libphonenumber's metadata says of a number as written: its country and type when it
//! is a valid number so, and its one spelling — the `phonenumber` crate's own parser strips a
//! "national prefix" even from valid numbers, sometimes twice, so numbers are read here from
//! the metadata's descriptors, in libphonenumber's order.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use phonenumber::metadata::{Descriptor, DATABASE};
use phonenumber::Type;

/// The metadata's patterns, compiled once each, anchored at the start (`^(?:…)`, as the
/// crate's own matching takes a match only where it starts the number), white space
/// ignored as the crate does. The crate keeps
/// its compiled patterns in one least-recently-used cache of 100 behind a mutex: reading a
/// number of a code several regions share (+1 has 25, each with a dozen descriptors) through
/// it compiled most patterns again at every read once a read touched more than 100 (a
/// quarter of a second a +1 555 number in a debug build: a test number pattern's sampling
/// took 10 s); and every read queued on that one mutex.
static COMPILED: LazyLock<RwLock<HashMap<String, regex::Regex>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Whether `source` (a pattern of the metadata) matches `text` from its start.
fn starts(source: &str, text: &str) -> bool {
    if let Some(re) = COMPILED
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(source)
    {
        return re.is_match(text);
    }
    // As the crate compiles them (white space in the metadata's patterns is layout). It
    // compiled every pattern at load: one that does not compile is no match.
    let Ok(re) = regex::RegexBuilder::new(&format!("^(?:{source})"))
        .ignore_whitespace(true)
        // ASCII digits only (a number here is E.164): `\d` is [0-9], automata stay small.
        .unicode(false)
        .build()
    else {
        return false;
    };
    let hit = re.is_match(text);
    COMPILED
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(source.to_string(), re);
    hit
}

/// Whether a descriptor describes a national number: one of its possible lengths (when it
/// names any), and its pattern (the crate's `Descriptor::is_match`, without its cache).
fn describes(d: &Descriptor, national: &str) -> bool {
    let lengths = d.possible_length();
    (lengths.is_empty() || u16::try_from(national.len()).is_ok_and(|n| lengths.contains(&n)))
        && starts(d.national_number().as_str(), national)
}

/// Whether a region's leading digits (for a code regions share) start the national number.
fn leads(m: &phonenumber::Metadata, national: &str) -> bool {
    m.leading_digits()
        .is_some_and(|p| starts(p.as_str(), national))
}

/// An E.164 number read as written — its country code, then the rest as that country's
/// national significant number — with its country (none for a non-geographic code) and
/// type, when libphonenumber's metadata holds it a valid number so; the type found in
/// libphonenumber's order (the general pattern, then premium-rate, toll-free, shared-cost,
/// VoIP, personal, pager, UAN, voicemail, then fixed-line and mobile). The `phonenumber`
/// crate's `parse` strips a national prefix from the rest even where the rest is a valid
/// number as it stands (`+81 0066 0077 889`, a Japanese toll-free number, became the Osaka
/// fixed line `+81 6 6007 7889`; `+7 812 123 4567` became invalid): a number valid as
/// written is that number.
pub fn as_written(e164: &str) -> Option<(Option<String>, Type)> {
    let (_, national, regions) = split(e164)?;
    let typed = |m: &phonenumber::Metadata| {
        let d = m.descriptors();
        if !describes(d.general(), national) {
            return None;
        }
        let matches = |x: Option<&Descriptor>| x.is_some_and(|x| describes(x, national));
        let special = [
            (d.premium_rate(), Type::PremiumRate),
            (d.toll_free(), Type::TollFree),
            (d.shared_cost(), Type::SharedCost),
            (d.voip(), Type::Voip),
            (d.personal_number(), Type::PersonalNumber),
            (d.pager(), Type::Pager),
            (d.uan(), Type::Uan),
            (d.voicemail(), Type::Voicemail),
        ];
        if let Some((_, t)) = special.into_iter().find(|(x, _)| matches(*x)) {
            return Some(t);
        }
        match (matches(d.fixed_line()), matches(d.mobile())) {
            (true, true) => Some(Type::FixedLineOrMobile),
            (true, false) => Some(Type::FixedLine),
            (false, true) => Some(Type::Mobile),
            (false, false) => None,
        }
    };
    // Where regions share the code (+1, +7, +44 …), the one whose leading digits the
    // number starts with, else the first it is a number of.
    let leading = regions.iter().find(|m| leads(m, national));
    let (meta, kind) = match leading {
        Some(m) => (*m, typed(m)?),
        None => regions.iter().find_map(|m| typed(m).map(|t| (*m, t)))?,
    };
    let country = (meta.id() != "001").then(|| meta.id().to_string());
    Some((country, kind))
}

/// A number's country code, the digits after it, and the regions of that code in
/// libphonenumber's metadata (country codes are prefix-free: one split fits).
fn split(e164: &str) -> Option<(&str, &str, Vec<&'static phonenumber::Metadata>)> {
    let digits = e164.strip_prefix('+')?;
    (1..=3.min(digits.len())).find_map(|n| {
        let (code, national) = digits.split_at(n);
        let regions = DATABASE.by_code(&code.parse::<u16>().ok()?)?;
        Some((code, national, regions))
    })
}

/// The country a number that is not valid as written belongs to, as libphonenumber tells
/// it: the one region of its code; for a code several regions share (+1, +7, +44 …), the
/// one whose leading digits it starts with, else none (an invalid number of a shared code
/// is of no region); none for a non-geographic code.
pub(crate) fn country_of_code(e164: &str) -> Option<String> {
    let (_, national, regions) = split(e164)?;
    let meta = match regions.as_slice() {
        [one] => *one,
        _ => *regions.iter().find(|m| leads(m, national))?,
    };
    (meta.id() != "001").then(|| meta.id().to_string())
}

/// A number written with its country's national prefix after the country code
/// (`+49 0151…`), read without it — once — when that is a number valid as written
/// (`+49 151…`): the one other spelling a number with one spelling has. Anything else
/// (`+49 0017…`, whose prefix would have to go twice; a number that is not one either
/// way) is none.
pub fn without_national_prefix(e164: &str) -> Option<String> {
    let (code, national, regions) = split(e164)?;
    let prefix = regions.iter().find_map(|m| m.national_prefix())?;
    let rest = national.strip_prefix(prefix)?;
    let number = format!("+{code}{rest}");
    as_written(&number).map(|_| number)
}

/// The other spelling a row stored before numbers had one spelling may hold for this number
/// (in its one spelling): with its country's national prefix kept after the country code
/// (`+49 0151…` for `+49 151…`), when its country has one.
pub fn with_national_prefix(e164: &str) -> Option<String> {
    as_written(e164)?;
    let (code, national, regions) = split(e164)?;
    let prefix = regions.iter().find_map(|m| m.national_prefix())?;
    let other = format!("+{code}{prefix}{national}");
    (without_national_prefix(&other).as_deref() == Some(e164)).then_some(other)
}

/// Whether an E.164 number is one libphonenumber holds valid (for test-recipient patterns
/// that must not catch real people, API.md §17.8).
pub fn is_valid_number(e164: &str) -> bool {
    as_written(e164).is_some() || phonenumber::parse(None, e164).is_ok_and(|n| n.is_valid())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A region's descriptors: the general one first, then each type it has.
    fn descriptors_of(m: &phonenumber::Metadata) -> Vec<&Descriptor> {
        let d = m.descriptors();
        [
            Some(d.general()),
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Every example number of libphonenumber's metadata (each type of each region) is a
    /// number as written, of a type its descriptors give: the metadata's patterns are read as
    /// the crate reads them (compiled here once each, not through its cache).
    #[test]
    fn every_example_number_of_the_metadata_is_a_number_as_written() {
        let mut checked = 0;
        for code in 1..=999u16 {
            for m in DATABASE.by_code(&code).unwrap_or_default() {
                // The typed ones (the general descriptor gives no example of a type).
                let typed = descriptors_of(m).into_iter().skip(1);
                for example in typed.filter_map(Descriptor::example) {
                    let n = format!("+{code}{example}");
                    assert!(as_written(&n).is_some(), "{} {n}", m.id());
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked} examples");
    }

    /// The patterns read here answer as the crate's own matching does (`Descriptor::is_match`,
    /// a leading-digits pattern found at the start), for every region's example numbers and
    /// near misses of them (a digit less, a digit more, a digit before).
    #[test]
    fn the_patterns_match_as_the_crates_matching_does() {
        let mut compared = 0;
        for code in 1..=999u16 {
            for m in DATABASE.by_code(&code).unwrap_or_default() {
                let all = descriptors_of(m);
                let mut numbers = Vec::new();
                for example in all.iter().filter_map(|x| x.example()) {
                    let shorter = &example[..example.len().saturating_sub(1)];
                    numbers.extend([
                        example.to_string(),
                        shorter.to_string(),
                        format!("{example}0"),
                        format!("1{example}"),
                    ]);
                }
                // Pattern by pattern (the crate's cache keeps 100 compiled).
                for x in &all {
                    for n in &numbers {
                        assert_eq!(describes(x, n), x.is_match(n), "{} {n}", m.id());
                        compared += 1;
                    }
                }
                for n in &numbers {
                    let theirs = m
                        .leading_digits()
                        .and_then(|p| p.find(n))
                        .is_some_and(|at| at.start() == 0);
                    assert_eq!(leads(m, n), theirs, "{} {n}", m.id());
                }
            }
        }
        assert!(compared > 10_000, "{compared} compared");
    }

    /// A number valid as written is that number; a number written with its national prefix
    /// after the country code is the number without it, the prefix taken once and only to
    /// leave a valid number (found by review and the SMS re-audit).
    #[test]
    fn a_number_is_read_as_written_and_its_national_prefix_goes_once() {
        // A number of a shared code is its region's: +1 613 is Canada's.
        assert_eq!(
            as_written("+16135550123").map(|(c, _)| c),
            Some(Some("CA".into()))
        );
        // Non-geographic: valid, of no country.
        assert_eq!(as_written("+80012345678").map(|(c, _)| c), Some(None));
        // The trunk 0 after the code: not a number as written, but the other spelling of
        // one (a row stored before numbers had one spelling may hold it).
        assert_eq!(as_written("+49015112345678"), None);
        assert_eq!(
            with_national_prefix("+4915112345678").as_deref(),
            Some("+49015112345678")
        );
        assert_eq!(
            with_national_prefix("+8100660077889").as_deref(),
            Some("+81000660077889")
        );
        assert_eq!(with_national_prefix("+15550100199"), None);
        // The prefix goes once, and only to leave a number valid as written (re-audit: the
        // parser took it twice, and `+49 0017…`, a US number after a German picker, was
        // texted to the German mobile `+49 170…`).
        assert_eq!(
            without_national_prefix("+49015112345678").as_deref(),
            Some("+4915112345678")
        );
        assert_eq!(without_national_prefix("+490017012345678"), None);
        assert_eq!(without_national_prefix("+490033612345678"), None);
        assert_eq!(
            as_written("+4915112345678"),
            Some((Some("DE".into()), Type::Mobile))
        );
    }
}
