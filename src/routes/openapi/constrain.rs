//! The constraints the server enforces, written into the generated description (API.md
//! §18.5): the form of values from `domain::grammar`, enumerations and ranges from the types
//! that parse them, and the shapes no single property states.

/// The rules the server enforces on a field, in JSON Schema (API.md §18.5): the form of a
/// value from `domain::grammar`, which its parser checks too; what no pattern states
/// (an email address, a date) by its format. Schemathesis holds the server to them
/// (`.ci/schemathesis`).
mod rule {
    use serde_json::{json, Value};

    use crate::domain::grammar::{self, Grammar};

    pub fn of(g: &Grammar) -> Value {
        json!({"pattern": g.pattern, "minLength": g.min_length, "maxLength": g.max_length})
    }
    pub fn locale() -> Value {
        of(&grammar::LOCALE)
    }
    pub fn purpose() -> Value {
        of(&grammar::PURPOSE)
    }
    pub fn phone() -> Value {
        of(&grammar::PHONE)
    }
    pub fn dns_name() -> Value {
        of(&grammar::DNS_NAME)
    }
    pub fn dkim_selector() -> Value {
        of(&grammar::DKIM_SELECTOR)
    }
    pub fn code_challenge() -> Value {
        of(&grammar::CODE_CHALLENGE)
    }
    /// A whole number in `(min, max)`.
    pub fn range((min, max): (u32, u32)) -> Value {
        json!({"minimum": min, "maximum": max})
    }
    /// `domain::email::RecipientEmail::parse`.
    pub fn email() -> Value {
        json!({"format": "email", "maxLength": 254})
    }
    /// An email address or an E.164 number.
    pub fn recipient() -> Value {
        json!({"anyOf": [email(), phone()]})
    }
    /// `recipient` as a path segment: the address declared without `%`. The server takes a
    /// `%` there (the segment is percent-decoded once), but a client that unquotes a value
    /// before it quotes it (Schemathesis does) would turn `%ff` into U+FFFD, which no
    /// address holds. The server still removes an address with a `%` sent as `%25`.
    pub fn recipient_segment() -> Value {
        let mut address = email();
        address["pattern"] = json!("^[^%]*$");
        json!({"anyOf": [address, phone()]})
    }
    /// `webhook::check_url`: the form of an endpoint (whether `http://` and its host's
    /// address are allowed is checked when it is registered: a refusal there is 422).
    pub fn endpoint() -> Value {
        of(&grammar::ENDPOINT_URL)
    }
    /// `clock::parse_time`: an RFC 3339 time, or a date.
    pub fn when() -> Value {
        json!({"anyOf": [{"format": "date-time"}, {"format": "date"}]})
    }
    /// Exactly one of `values` (letters, digits, `_` and `.`, the dot escaped).
    pub fn one_of(values: &[&str]) -> Value {
        let escaped: Vec<String> = values.iter().map(|v| v.replace('.', "\\.")).collect();
        json!({"pattern": format!("^({})$", escaped.join("|"))})
    }
}

/// Every constraint of `rule` where the server enforces it: (schema, property) of request
/// bodies and (path, parameter) of parameters.
pub(super) fn constrain(doc: &mut serde_json::Value) {
    use serde_json::Value;
    for (schema, property, patch) in property_rules() {
        if let Some(Value::Object(target)) = doc.pointer_mut(&format!(
            "/components/schemas/{schema}/properties/{property}"
        )) {
            if let Value::Object(patch) = patch {
                target.extend(patch);
            }
        }
    }
    for (schema, property, values) in answer_values() {
        if let Some(Value::Object(target)) = answer_property(doc, schema, property) {
            let mut values: Vec<Value> = values.into_iter().map(Value::from).collect();
            // A property that may be null takes null too.
            if target
                .get("type")
                .and_then(Value::as_array)
                .is_some_and(|t| t.iter().any(|x| x == "null"))
            {
                values.push(Value::Null);
            }
            target.insert("enum".into(), Value::Array(values));
        }
    }
    // A webhook's events: the types it may subscribe to.
    if let Some(Value::Object(items)) =
        doc.pointer_mut("/components/schemas/WebhookOut/properties/events/items")
    {
        let types = crate::domain::event::EventType::SUBSCRIBABLE.map(|t| t.as_str());
        items.insert("enum".into(), serde_json::json!(types));
    }
    constrain_parameters(doc);
    constrain_shapes(doc);
    super::headers::declare_headers(doc);
}

/// An answer's property: in the schema's `properties`, or in one of its `allOf` parts.
pub(super) fn answer_property<'a>(
    doc: &'a mut serde_json::Value,
    schema: &str,
    property: &str,
) -> Option<&'a mut serde_json::Value> {
    let schema = doc.pointer_mut(&format!("/components/schemas/{schema}"))?;
    if schema.pointer(&format!("/properties/{property}")).is_some() {
        return schema.pointer_mut(&format!("/properties/{property}"));
    }
    schema
        .get_mut("allOf")?
        .as_array_mut()?
        .iter_mut()
        .find_map(|part| part.get_mut("properties")?.get_mut(property))
}

/// The closed sets of values answers take (API.md §18.5: every response's schema), from
/// the types that make them: (schema, property, values). Schemathesis holds every answer
/// to them; the client libraries' literal types are checked against them.
pub(super) fn answer_values() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    use crate::domain::challenge::{Status, VerifiedVia};
    use crate::domain::delivery::{DeliveryMode, DeliveryStatus};
    use crate::domain::dkim::DkimAlgorithm;
    use crate::domain::event::EventType;
    use crate::domain::oauth2::OAuth2Provider;
    use crate::domain::provider::ProviderKind;
    use crate::domain::recipient::Channel;
    use crate::domain::stats::Dim;
    use crate::domain::suppression::SuppressionReason;
    use crate::domain::tenant::{TlsMode, TransportUse};
    use crate::service::admin::stats::Granularity;
    let verified_via = || VerifiedVia::ALL.map(VerifiedVia::as_str).to_vec();
    let modes = || DeliveryMode::ALL.map(DeliveryMode::as_str).to_vec();
    let uses = || TransportUse::ALL.map(TransportUse::as_str).to_vec();
    vec![
        (
            "StatusOut",
            "status",
            Status::ALL.map(Status::as_str).to_vec(),
        ),
        ("StatusOut", "verified_via", verified_via()),
        ("ClaimedOut", "verified_via", verified_via()),
        ("DeliveryOut", "mode", modes()),
        (
            "DeliveryOut",
            "status",
            DeliveryStatus::ALL
                .map(DeliveryStatus::as_str)
                .into_iter()
                .chain([crate::routes::dto::TEST_SENT])
                .collect(),
        ),
        (
            "MintOut",
            "delivery",
            crate::routes::codes::MINT_DELIVERIES.to_vec(),
        ),
        (
            "HostedStatusOut",
            "status",
            crate::service::codes::hosted::SESSION_STATUSES.to_vec(),
        ),
        ("TenantOut", "delivery", modes()),
        ("TenantOut", "suppression", vec!["on", "off"]),
        ("SmtpOut", "tls", TlsMode::ALL.map(TlsMode::as_str).to_vec()),
        ("HttpTransportOut", "use", uses()),
        ("ProviderOut", "use", uses()),
        (
            "ProviderOut",
            "kind",
            ProviderKind::ALL.map(|k| k.as_str()).to_vec(),
        ),
        (
            "ProviderOut",
            "channel",
            Channel::ALL.map(Channel::as_str).to_vec(),
        ),
        (
            "SuppressionOut",
            "reason",
            SuppressionReason::ALL.map(|r| r.as_str()).to_vec(),
        ),
        (
            "DkimRecordOut",
            "algorithm",
            DkimAlgorithm::ALL.map(|a| a.as_str()).to_vec(),
        ),
        (
            "OAuth2Out",
            "provider",
            OAuth2Provider::ALL.map(|p| p.as_str()).to_vec(),
        ),
        (
            "WebhookAttemptOut",
            "type",
            EventType::ALL.map(|t| t.as_str()).to_vec(),
        ),
        (
            "StatsOut",
            "granularity",
            Granularity::ALL.map(Granularity::as_str).to_vec(),
        ),
        (
            "StatsOut",
            "group_by",
            Dim::GROUPS.map(Dim::as_str).to_vec(),
        ),
    ]
}

/// The rules of request bodies' properties: (schema, property, rule).
pub(super) fn property_rules() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    use crate::domain::delivery::DeliveryMode;
    use crate::domain::grammar;
    use crate::domain::policy;
    use crate::domain::tenant::{TlsMode, TransportUse};
    let delivery = || rule::one_of(&DeliveryMode::ALL.map(DeliveryMode::as_str));
    let tls = || rule::one_of(&TlsMode::ALL.map(TlsMode::as_str));
    // `service::tenants::relay_accounts`: no control character in a user name, no line break
    // or NUL in a password.
    let username = || {
        serde_json::json!({
            "maxLength": crate::service::tenants::relay_accounts::USERNAME_MAX,
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
        })
    };
    let password = || {
        serde_json::json!({
            "maxLength": crate::service::tenants::relay_accounts::PASSWORD_MAX,
            "pattern": "^[^\\r\\n\\u0000]*$",
        })
    };
    vec![
        ("MintBody", "email", rule::email()),
        ("MintBody", "phone", rule::phone()),
        ("MintBody", "purpose", rule::purpose()),
        ("MintBody", "locale", rule::locale()),
        ("MintBody", "delivery", delivery()),
        ("HostedBody", "email", rule::email()),
        ("HostedBody", "purpose", rule::purpose()),
        ("HostedBody", "locale", rule::locale()),
        ("PreviewBody", "purpose", rule::purpose()),
        ("PreviewBody", "locale", rule::locale()),
        ("CreateTenantBody", "default_locale", rule::locale()),
        ("CreateTenantBody", "delivery", delivery()),
        ("PatchTenantBody", "default_locale", rule::locale()),
        ("PatchTenantBody", "delivery", delivery()),
        ("SuppressionBody", "recipient", rule::recipient()),
        (
            "HttpTransportBody",
            "use",
            rule::one_of(&TransportUse::ALL.map(TransportUse::as_str)),
        ),
        ("HttpTransportBody", "url", rule::endpoint()),
        ("WebhookBody", "url", rule::endpoint()),
        (
            "WebhookBody",
            "events",
            serde_json::json!({"minItems": 1, "items": {
                "type": "string",
                "pattern": rule::one_of(
                    &crate::domain::event::EventType::SUBSCRIBABLE.map(|t| t.as_str()),
                )["pattern"],
            }}),
        ),
        ("DkimBody", "domain", rule::dns_name()),
        ("DkimBody", "selector", rule::dkim_selector()),
        ("LinkBody", "code_challenge", rule::code_challenge()),
        ("HostedBody", "code_challenge", rule::code_challenge()),
        (
            "ProviderBody",
            "kind",
            rule::one_of(&crate::domain::provider::ProviderKind::ALL.map(|k| k.as_str())),
        ),
        (
            "ProviderBody",
            "use",
            rule::one_of(&TransportUse::ALL.map(TransportUse::as_str)),
        ),
        (
            "OAuth2Body",
            "provider",
            rule::one_of(&crate::domain::oauth2::OAuth2Provider::ALL.map(|p| p.as_str())),
        ),
        (
            "SmtpBody",
            "max_connections",
            serde_json::json!({"minimum": 1}),
        ),
        (
            "SmtpPatchBody",
            "max_connections",
            serde_json::json!({"minimum": 1}),
        ),
        (
            "TestRecipientsBody",
            "recipients",
            serde_json::json!({"maxItems": crate::domain::test_mode::MAX_RECIPIENTS}),
        ),
        ("ProviderTestBody", "to", rule::recipient()),
        ("TestRecipientBody", "expires_at", rule::when()),
        (
            "VerifyBody",
            "otp",
            serde_json::json!({"pattern": format!(
                "^[0-9]{{{},{}}}$",
                crate::domain::policy::CODE_LENGTH.0,
                crate::domain::policy::CODE_LENGTH.1
            )}),
        ),
        ("SmtpBody", "port", rule::range((1, u32::from(u16::MAX)))),
        (
            "SmtpPatchBody",
            "port",
            rule::range((1, u32::from(u16::MAX))),
        ),
        ("SmtpBody", "host", rule::of(&grammar::SMTP_HOST)),
        ("SmtpPatchBody", "host", rule::of(&grammar::SMTP_HOST)),
        ("SmtpBody", "tls", tls()),
        ("SmtpPatchBody", "tls", tls()),
        ("SmtpBody", "username", username()),
        ("SmtpPatchBody", "username", username()),
        ("SmtpBody", "password", password()),
        ("SmtpPatchBody", "password", password()),
        ("OAuth2Body", "token_url", rule::endpoint()),
        (
            "TemplateBody",
            "subject",
            rule::of(&grammar::TEMPLATE_SUBJECT),
        ),
        ("TemplateBody", "text", rule::of(&grammar::TEMPLATE_BODY)),
        ("TemplateBody", "html", rule::of(&grammar::TEMPLATE_BODY)),
        ("TemplateBody", "sms", rule::of(&grammar::TEMPLATE_BODY)),
        (
            "TestRecipientBody",
            "match",
            rule::of(&grammar::RECIPIENT_PATTERN),
        ),
        (
            "PolicyBody",
            "code_length",
            rule::range(policy::CODE_LENGTH),
        ),
        (
            "PolicyBody",
            "ttl_seconds",
            rule::range(policy::TTL_SECONDS),
        ),
        (
            "PolicyBody",
            "max_attempts",
            rule::range(policy::MAX_ATTEMPTS),
        ),
        (
            "SmsBody",
            "trusted_days",
            rule::range((0, crate::domain::sms_guard::TRUSTED_DAYS_MAX)),
        ),
        ("BrandingBody", "color", rule::of(&grammar::BRAND_COLOR)),
        ("CreateTenantBody", "name", rule::of(&grammar::TENANT_NAME)),
        ("PatchTenantBody", "name", rule::of(&grammar::TENANT_NAME)),
        (
            "PatchTenantBody",
            "allowed_return_urls",
            serde_json::json!({"maxItems": crate::domain::links::ALLOWED_RETURN_URLS_MAX}),
        ),
    ]
}

/// The rules of parameters, by (a part of the path, the parameter).
fn constrain_parameters(doc: &mut serde_json::Value) {
    use crate::domain::grammar;
    use crate::domain::recipient::Channel;
    use crate::domain::stats::Dim;
    use crate::service::admin::stats::Granularity;
    use serde_json::Value;
    // (a part of the path, the parameter, its rule)
    let when = rule::when;
    let parameters: Vec<(&str, &str, Value)> = vec![
        ("", "locale", rule::locale()),
        ("", "recipient", rule::recipient_segment()),
        ("/stats", "from", when()),
        ("/stats", "to", when()),
        (
            "/stats",
            "granularity",
            rule::one_of(&Granularity::ALL.map(Granularity::as_str)),
        ),
        (
            "/stats",
            "group_by",
            rule::one_of(&Dim::GROUPS.map(Dim::as_str)),
        ),
        (
            "",
            "channel",
            rule::one_of(&Channel::ALL.map(Channel::as_str)),
        ),
        ("/suppressions", "cursor", rule::of(&grammar::CURSOR)),
        // One address, or a number of 8 to 15 digits after `+` (or the space a query makes
        // of an unencoded `+`), as `domain::test_mode::RecipientPattern` takes it.
        (
            "/test-inbox",
            "to",
            serde_json::json!({"anyOf": [rule::email(), {"pattern": "^[+ ][0-9]{8,15}$"}]}),
        ),
        ("", "Idempotency-Key", rule::of(&grammar::IDEMPOTENCY_KEY)),
    ];
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let Some(Value::Array(params)) = op.get_mut("parameters") else {
                    continue;
                };
                for param in params {
                    let name = param["name"].as_str().unwrap_or("").to_string();
                    let Some((_, _, patch)) = parameters
                        .iter()
                        .find(|(within, n, _)| *n == name && path.contains(within))
                    else {
                        continue;
                    };
                    if let (Some(Value::Object(schema)), Value::Object(patch)) =
                        (param.get_mut("schema"), patch.clone())
                    {
                        schema.extend(patch);
                    }
                }
            }
        }
    }
}

/// Shapes no single property states: one recipient, a PKCE method only with its challenge,
/// a tenant's own PATCH body.
fn constrain_shapes(doc: &mut serde_json::Value) {
    use serde_json::Value;
    // One recipient: `email` or `phone`, not both.
    if let Some(Value::Object(mint)) = doc.pointer_mut("/components/schemas/MintBody") {
        mint.insert(
            "oneOf".into(),
            serde_json::json!([
                {"required": ["email"], "properties": {"email": {"type": "string"}, "phone": {"type": "null"}}},
                {"required": ["phone"], "properties": {"phone": {"type": "string"}, "email": {"type": "null"}}}
            ]),
        );
    }
    // A PKCE method only with its challenge (`CodeChallenge::parse_given`): no method, or
    // a challenge that is a string.
    for name in ["HostedBody", "LinkBody"] {
        if let Some(Value::Object(body)) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            body.insert(
                "anyOf".into(),
                serde_json::json!([
                    {"properties": {"code_challenge_method": {"type": "null"}}},
                    {"required": ["code_challenge"], "properties": {"code_challenge": {"type": "string"}}}
                ]),
            );
        }
    }
    // A tenant changing itself: the fields only the admin may change are not in its body.
    if let Some(admin) = doc.pointer("/components/schemas/PatchTenantBody").cloned() {
        let mut own = admin;
        if let Some(Value::Object(props)) = own.get_mut("properties") {
            for field in crate::routes::tenants::ADMIN_ONLY_FIELDS {
                props.remove(*field);
            }
        }
        if let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") {
            schemas.insert("PatchSelfBody".into(), own);
        }
        if let Some(Value::Object(body)) = doc
            .pointer_mut("/paths/~1v1~1tenant/patch/requestBody/content/application~1json/schema")
        {
            body.insert("$ref".into(), "#/components/schemas/PatchSelfBody".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::grammar::{RECIPIENT_PATTERN, TEMPLATE_BODY, TEMPLATE_SUBJECT};

    /// The template grammars the description declares refuse what the lint refuses of these
    /// samples, and take what it takes (API.md §18.5: Schemathesis holds the server to them);
    /// the test recipient's takes every pattern its parser takes.
    #[test]
    fn the_template_and_test_recipient_rules_agree_with_their_parsers() {
        use crate::messages::{lint, Fields};
        let fields = |subject: &str, text: &str| Fields {
            subject: subject.into(),
            text: text.into(),
            html: None,
            sms: None,
        };
        for s in [
            "Code",
            " x ",
            "Ünïcødé ✓",
            "",
            "  ",
            "\u{3000}",
            "a\nb",
            "a\tb",
            "a\u{2028}b",
            "a\u{85}",
            "a\u{7f}",
            "a\u{202e}b",
            "a\u{200b}b",
            "\u{feff}Code",
            "Code \u{2764}\u{fe0f}",
        ] {
            let ok = lint(&fields(s, "{{ code }}"), 6).is_ok();
            assert_eq!(TEMPLATE_SUBJECT.matches(s), ok, "{s:?}");
        }
        for t in [
            "{{ code }}",
            "Line\n{{ code }}\r\n\tend",
            " \u{a0}{{ code }}",
            "\u{1}{{ code }}",
            "{{ code }}\u{1b}",
            "{{ code }}\u{9f}",
        ] {
            let ok = lint(&fields("Code", t), 6).is_ok();
            assert_eq!(TEMPLATE_BODY.matches(t), ok, "{t:?}");
        }
        for blank in ["", " ", "\n\t ", "\u{2003}"] {
            assert!(!TEMPLATE_BODY.matches(blank), "{blank:?}");
            assert!(lint(&fields("Code", blank), 6).is_err(), "{blank:?}");
        }
        for m in [
            "ada@example.com",
            "*@test.acme.example",
            "+15551234567",
            "",
            " ada@example.com",
            "ada@example.com\n",
            "a\u{a0}b@example.com",
        ] {
            let parsed = crate::domain::test_mode::RecipientPattern::parse(m).is_ok();
            // The pattern states the form only: what it takes may still be refused (400).
            assert!(RECIPIENT_PATTERN.matches(m) || !parsed, "{m:?}");
            if m.is_empty() || m.contains(char::is_whitespace) {
                assert!(!RECIPIENT_PATTERN.matches(m) && !parsed, "{m:?}");
            }
        }
    }
}
