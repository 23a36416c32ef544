//! The providers' settings rules, field by field (API.md §15.2).

use super::*;

fn parse(
    channel: Channel,
    kind: &str,
    given: &[(&str, Option<&str>)],
) -> Result<ProviderInput, Vec<FieldError>> {
    ProviderInput::parse(channel, kind, None, given)
}

fn fields(errs: Vec<FieldError>) -> Vec<String> {
    errs.into_iter().map(|e| e.field).collect()
}

#[test]
fn each_kind_takes_its_documented_settings_and_keeps_secrets_apart() {
    let p = parse(
        Channel::Email,
        "postmark",
        &[
            ("server_token", Some("pm-token")),
            ("from", Some("Acme <no-reply@acme.example>")),
            ("message_stream", Some("outbound")),
        ],
    )
    .unwrap();
    assert_eq!(p.kind, ProviderKind::Postmark);
    assert_eq!(p.use_as, TransportUse::Primary);
    assert_eq!(p.secrets.get("server_token").unwrap(), "pm-token");
    assert!(!p.settings.contains_key("server_token"));
    assert!(
        !format!("{p:?}").contains("pm-token"),
        "secrets stay out of Debug"
    );
    let m = parse(
        Channel::Email,
        "mailgun",
        &[
            ("api_key", Some("key-1")),
            ("domain", Some("MG.Acme.Example")),
            ("region", Some("eu")),
            ("from", Some("a@acme.example")),
        ],
    )
    .unwrap();
    assert_eq!(m.settings["region"], "eu");
    assert_eq!(m.settings["domain"], "mg.acme.example");
    let s = parse(
        Channel::Email,
        "ses",
        &[
            ("access_key_id", Some("AKIDEXAMPLE000000000")),
            (
                "secret_access_key",
                Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            ),
            ("region", Some("eu-west-1")),
            ("from", Some("a@acme.example")),
        ],
    )
    .unwrap();
    assert_eq!(s.settings["access_key_id"], "AKIDEXAMPLE000000000");
    assert!(s.secrets.contains_key("secret_access_key"));
}

#[test]
fn a_kind_of_the_other_channel_unknown_or_missing_settings_are_refused() {
    assert_eq!(
        fields(parse(Channel::Email, "twilio", &[]).unwrap_err()),
        ["kind"]
    );
    assert_eq!(
        fields(parse(Channel::Sms, "postmark", &[]).unwrap_err()),
        ["kind"]
    );
    assert_eq!(
        fields(
            parse(
                Channel::Email,
                "resend",
                &[("api_key", Some("re_1")), ("domain", Some("acme.example"))]
            )
            .unwrap_err()
        ),
        ["domain", "from"]
    );
    let e = ProviderInput::parse(
        Channel::Email,
        "resend",
        Some("sometimes"),
        &[("api_key", Some("re_1")), ("from", Some("a@acme.example"))],
    )
    .unwrap_err();
    assert_eq!(fields(e), ["use"]);
    for (name, bad) in [
        ("from", "not a mailbox"),
        ("api_key", "has space"),
        ("api_key", ""),
    ] {
        let given = [("api_key", Some("re_1")), ("from", Some("a@acme.example"))].map(|(n, v)| {
            if n == name {
                (n, Some(bad))
            } else {
                (n, v)
            }
        });
        assert_eq!(
            fields(parse(Channel::Email, "resend", &given).unwrap_err()),
            [name],
            "{name}={bad:?}"
        );
    }
}

#[test]
fn postmark_webhook_credentials_come_as_a_pair() {
    let base = [
        ("server_token", Some("pm-token")),
        ("from", Some("a@acme.example")),
    ];
    for (name, other) in [
        ("events_username", "events_password"),
        ("events_password", "events_username"),
    ] {
        let mut given = base.to_vec();
        given.push((name, Some("x1")));
        let e = parse(Channel::Email, "postmark", &given).unwrap_err();
        assert_eq!(fields(e), [other], "{name} alone");
    }
    let mut given = base.to_vec();
    given.extend([
        ("events_username", Some("hook")),
        ("events_password", Some("pw1")),
    ]);
    assert!(parse(Channel::Email, "postmark", &given).is_ok());
    assert!(parse(Channel::Email, "postmark", &base).is_ok());
}

#[test]
fn twilio_takes_exactly_one_sender_and_sids_are_checked() {
    let sid = "AC0123456789abcdef0123456789abcdef";
    let ok = parse(
        Channel::Sms,
        "twilio",
        &[
            ("account_sid", Some(sid)),
            ("auth_token", Some("tok")),
            ("from", Some("+15005550006")),
        ],
    );
    assert!(ok.is_ok());
    let both = parse(
        Channel::Sms,
        "twilio",
        &[
            ("account_sid", Some(sid)),
            ("auth_token", Some("tok")),
            ("from", Some("+15005550006")),
            (
                "messaging_service_sid",
                Some("MG0123456789abcdef0123456789abcdef"),
            ),
        ],
    );
    assert_eq!(fields(both.unwrap_err()), ["from"]);
    let alpha_from = parse(
        Channel::Sms,
        "twilio",
        &[
            ("account_sid", Some(sid)),
            ("auth_token", Some("tok")),
            ("from", Some("Acme")),
        ],
    );
    assert_eq!(fields(alpha_from.unwrap_err()), ["from"]);
    // A malformed number is told once, with Twilio's rule (not Vonage's letters, and not
    // "give exactly one": it was given).
    let short = parse(
        Channel::Sms,
        "twilio",
        &[
            ("account_sid", Some(sid)),
            ("auth_token", Some("tok")),
            ("from", Some("12345")),
        ],
    )
    .unwrap_err();
    assert_eq!(short.len(), 1, "{short:?}");
    assert_eq!(short[0].field, "from");
    assert!(short[0].message.contains("E.164"), "{short:?}");
    assert!(!short[0].message.contains("letters"), "{short:?}");
    let bad_sid = parse(
        Channel::Sms,
        "twilio",
        &[
            ("account_sid", Some("MG0123456789abcdef0123456789abcdef")),
            ("auth_token", Some("tok")),
            ("from", Some("+15005550006")),
        ],
    );
    assert_eq!(fields(bad_sid.unwrap_err()), ["account_sid"]);
    let vonage = parse(
        Channel::Sms,
        "vonage",
        &[
            ("api_key", Some("k")),
            ("api_secret", Some("s")),
            ("from", Some("Acme")),
        ],
    )
    .unwrap();
    assert_eq!(vonage.settings["from"], "Acme");
    assert_eq!(vonage.secrets.len(), 2);
    // The values of the providers' own documentation pass: Vonage's number without `+`,
    // Twilio's SID written with X's.
    let documented = parse(
        Channel::Sms,
        "vonage",
        &[
            ("api_key", Some("k")),
            ("api_secret", Some("s")),
            ("from", Some("447700900000")),
        ],
    );
    assert!(documented.is_ok(), "{documented:?}");
    let documented = parse(
        Channel::Sms,
        "twilio",
        &[
            ("account_sid", Some("ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")),
            ("auth_token", Some("tok")),
            ("from", Some("+15005550006")),
        ],
    );
    assert!(documented.is_ok(), "{documented:?}");
    for bad in ["AC", "AC/../x", "ac0123", &format!("AC{}", "0".repeat(63))] {
        assert!(checked(Check::Sid("AC"), bad).is_err(), "{bad}");
    }
    for bad in [
        "12345",
        "+447700900000x",
        "0447700900000",
        " Acme",
        "Acme ",
        "My  App",
        "My App Ltd.",
        "Twelve Chars",
    ] {
        assert!(checked(Check::SmsSender, bad).is_err(), "{bad}");
    }
    for good in ["Acme", "My App", "A1 B2 C3 D4"] {
        assert_eq!(
            checked(Check::SmsSender, good).as_deref(),
            Ok(good),
            "{good}"
        );
    }
    // Twilio's `from` keeps its `+` (its API wants E.164 as written).
    let bare = parse(
        Channel::Sms,
        "twilio",
        &[
            ("account_sid", Some("ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")),
            ("auth_token", Some("tok")),
            ("from", Some("15005550006")),
        ],
    );
    assert_eq!(fields(bare.unwrap_err()), ["from"]);
}

#[test]
fn aws_regions_and_access_keys_have_their_shapes() {
    for ok in ["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"] {
        assert!(checked(Check::AwsRegion, ok).is_ok(), "{ok}");
    }
    for bad in ["", "useast1", "us-east", "US-EAST-1", "us-east-1/x"] {
        assert!(checked(Check::AwsRegion, bad).is_err(), "{bad}");
    }
    assert!(checked(Check::AccessKeyId, "AKIAIOSFODNN7EXAMPLE").is_ok());
    // SigV4's own examples use a short one.
    assert!(checked(Check::AccessKeyId, "AKIDEXAMPLE").is_ok());
    assert!(checked(Check::AccessKeyId, "akiaiosfodnn7example").is_err());
    assert!(checked(Check::AccessKeyId, "").is_err());
}
