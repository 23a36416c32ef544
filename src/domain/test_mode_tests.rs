//! Tests of test mode's patterns: parsing, stored forms, scopes, matching.

#![allow(clippy::unwrap_used)]
use super::*;

/// A pattern stored before keys were case-folded (only lower-cased) reads back folded,
/// as a new one is stored; a number's as it was.
#[test]
fn a_pattern_stored_before_folding_reads_back_folded() {
    let stored = |s: &str| RecipientPattern::from_stored(s.into()).as_str().to_string();
    assert_eq!(stored("straße@acme.example"), "strasse@acme.example");
    assert_eq!(stored("straße+*@acme.example"), "strasse+*@acme.example");
    assert_eq!(
        stored("strasse@acme.example"),
        RecipientPattern::parse("STRASSE@acme.example")
            .unwrap()
            .as_str()
    );
    assert_eq!(stored("+1555*"), "+1555*");
    // A number stored before numbers had one spelling reads back in it.
    assert_eq!(stored("+49015112345678"), "+4915112345678");
    assert_eq!(stored("+15550100001"), "+15550100001");
}

/// An email wildcard out of the sender's present domain is passed over, and the next
/// entry that covers the recipient is found; number patterns do not depend on it.
#[test]
fn a_wildcard_out_of_the_senders_domain_is_passed_over_for_the_next_entry() {
    let entry = |p: &str| TestRecipient {
        pattern: RecipientPattern::parse(p).unwrap(),
        fixed: None,
        expires_at: 100,
        disabled_at: None,
    };
    let list = [entry("*@acme.com"), entry("qa+*@acme.com"), entry("+1555*")];
    let hit = |to: &str, from: &str| find(&list, to, 50, Some(from)).map(|t| t.pattern.clone());
    assert_eq!(
        hit("qa+1@acme.com", "acme.com"),
        Some(list[0].pattern.clone())
    );
    assert_eq!(
        hit("qa+1@acme.com", "other.com"),
        Some(list[1].pattern.clone())
    );
    assert_eq!(hit("ada@acme.com", "other.com"), None);
    assert_eq!(hit("+15550100", "other.com"), Some(list[2].pattern.clone()));
}

#[test]
fn patterns_parse_to_their_canonical_form_and_bad_ones_are_refused() {
    assert_eq!(
        RecipientPattern::parse("Review@ACME.example").unwrap(),
        RecipientPattern::Exact("review@acme.example".into())
    );
    assert_eq!(
        RecipientPattern::parse("*@Test.Acme.Example").unwrap(),
        RecipientPattern::Wildcard("*@test.acme.example".into())
    );
    assert!(RecipientPattern::parse("+15551234567").unwrap().is_exact());
    assert_eq!(
        RecipientPattern::parse("+49015112345678").unwrap(),
        RecipientPattern::Exact("+4915112345678".into())
    );
    assert!(!RecipientPattern::parse("+1555*").unwrap().is_exact());
    for bad in [
        "",
        "*",
        "***",
        "not an address",
        "+12",
        "+1555x*",
        "a b@c.example",
        "*nodomain",
        // White space around it is refused, as in every recipient field (it was trimmed).
        "a@acme.example\r\n",
        "\ta@acme.example",
        "a@acme.example ",
        "+15550100001\n",
    ] {
        assert!(RecipientPattern::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_stored_number_pattern_that_could_catch_real_numbers_is_not_allowed_to_match() {
    // As an earlier version stored it, before the rule (API.md §17.8).
    let real = RecipientPattern::from_stored("+4915*".to_string());
    assert!(!real.number_range_allowed());
    assert!(real.check_scope(None).is_err());
    let fictional = RecipientPattern::from_stored("+1555010*".to_string());
    assert!(fictional.number_range_allowed());
    for other in [
        "review@acme.example",
        "*@test.acme.example",
        "+4915112345678",
    ] {
        assert!(RecipientPattern::from_stored(other.to_string()).number_range_allowed());
    }
}

#[test]
fn wildcards_are_held_to_the_tenants_own_reserved_or_fictional_recipients() {
    let scope =
        |s: &str| RecipientPattern::parse(s).and_then(|p| p.check_scope(Some("acme.example")));
    for ok in [
        "*@acme.example",
        "*@test.acme.example",
        "*@qa.test",
        "*@example.com",
        "*@anything.invalid",
        "qa+*@gmail.com",
        "+1555*",
        "+1555555*",
        "review@gmail.com",
        "+4915112345678",
    ] {
        assert!(scope(ok).is_ok(), "{ok}");
    }
    for bad in [
        "*@gmail.com",
        "qa-*@gmail.com",
        "*@acme.example.evil",
        "*+*@gmail.com",
        "+4915*",
        "+1415*",
        "+4477*",
        "+1555*0",
        "+155512345678901*",
        "+155*",
        "+1555**",
    ] {
        assert_eq!(scope(bad).unwrap_err().field, "match", "{bad}");
    }
    assert!(RecipientPattern::parse("+49*")
        .unwrap_err()
        .message
        .contains("number pattern"));
    // A sender on a shared mailbox provider, on a public suffix or on a bare top-level
    // name owns no domain.
    for (from, pattern) in [
        ("gmail.com", "*@gmail.com"),
        ("outlook.de", "*@outlook.de"),
        ("com", "*@acme.com"),
        ("co.uk", "*@bbc.co.uk"),
        ("co.uk", "*@co.uk"),
        ("github.io", "*@victim.github.io"),
        ("com.au", "*@abc.com.au"),
    ] {
        let p = RecipientPattern::parse(pattern).unwrap();
        assert!(p.check_scope(Some(from)).is_err(), "{from}: {pattern}");
    }
    // A name registered under a public suffix is its owner's.
    for (from, pattern) in [
        ("acme.co.uk", "*@acme.co.uk"),
        ("acme.github.io", "*@qa.acme.github.io"),
    ] {
        let p = RecipientPattern::parse(pattern).unwrap();
        assert!(p.check_scope(Some(from)).is_ok(), "{from}: {pattern}");
    }
    let p = RecipientPattern::parse("qa+*@gmail.com").unwrap();
    assert!(p.check_scope(Some("gmail.com")).is_ok());
    // Its own domain only as its sender's; without a sender, only reserved names and
    // sub-addresses.
    let p = RecipientPattern::parse("*@acme.com").unwrap();
    assert!(p.check_scope(Some("acme.com")).is_ok());
    assert!(p.check_scope(Some("other.com")).is_err());
    assert!(p.check_scope(None).is_err());
}

#[test]
fn patterns_match_whole_recipients() {
    let p = |s: &str| RecipientPattern::parse(s).unwrap();
    assert!(p("*@test.acme.example").matches("bob@test.acme.example"));
    assert!(!p("*@test.acme.example").matches("bob@test.acme.example.evil"));
    assert!(!p("*@test.acme.example").matches("bob@acme.example"));
    assert!(p("qa-*@acme.example").matches("qa-7@acme.example"));
    assert!(p("+1555*").matches("+15551234567"));
    assert!(!p("+1555*").matches("+15561234567"));
    assert!(p("review@acme.example").matches("review@acme.example"));
    assert!(!p("review@acme.example").matches("review2@acme.example"));
    assert!(glob(b"a*b*c", b"axxbyyc"));
    assert!(!glob(b"a*b*c", b"axxbyy"));
}

#[test]
fn an_exact_entry_wins_and_expired_ones_are_inert() {
    let list = vec![
        TestRecipient {
            pattern: RecipientPattern::parse("*@acme.example").unwrap(),
            fixed: None,
            expires_at: 100,
            disabled_at: None,
        },
        TestRecipient {
            pattern: RecipientPattern::parse("review@acme.example").unwrap(),
            fixed: Some(FixedCode {
                hash: "h".into(),
                length: 6,
            }),
            expires_at: 100,
            disabled_at: None,
        },
    ];
    let hit = find(&list, "review@acme.example", 50, Some("acme.example")).unwrap();
    assert_eq!(hit.fixed.as_ref().map(|f| f.hash.as_str()), Some("h"));
    assert!(find(&list, "other@acme.example", 50, Some("acme.example"))
        .unwrap()
        .fixed
        .is_none());
    assert!(
        find(&list, "review@acme.example", 100, Some("acme.example")).is_none(),
        "expired"
    );
}
