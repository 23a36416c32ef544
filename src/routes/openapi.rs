//! The OpenAPI 3.1 document, generated from the handlers' annotations and the DTO types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::dto::*;
use super::{
    claims, codes, devx, dkim, hosted, ops, provider_events, providers, suppressions, templates,
    transport, v1, webhooks,
};

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let bearer = |d: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(d.to_string()))
                    .build(),
            )
        };
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme("secret_key", bearer("A tenant's secret key (sk_…)"));
        c.add_security_scheme("admin_token", bearer("The admin token (admin.token)"));
        c.add_security_scheme("metrics_token", bearer("The metrics token (metrics.token)"));
    }
}

/// Responses every operation of a kind can give, declared here once instead of on each
/// handler (API.md §18.5): every route passes the per-address flood guard (429), and every
/// operation that takes a JSON body answers 413 past the body limit and 415 for any other
/// media type (the extractor of every such route, `routes/auth.rs`).
struct Common;

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, RefOr};
        for (path, item) in api.paths.paths.iter_mut() {
            // Provider events take the body as each provider sends it (SNS: text/plain).
            let events = path.starts_with("/v1/events/");
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                let mut add = vec![("429", "RateLimited")];
                let json = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json && !events {
                    add.extend([("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType")]);
                }
                for (status, name) in add {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "otpmint",
        description = "Multi-tenant, self-hosted email one-time-password server. Errors are RFC 9457 problem documents; clients branch on `code`.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        v1::create_tenant, v1::list_tenants, v1::get_tenant, v1::patch_tenant, v1::delete_tenant,
        v1::rotate_secret, v1::get_self, v1::patch_self, codes::audit, codes::mint,
        codes::verify, codes::otp_status, codes::otp_cancel, ops::healthz, ops::readyz,
        ops::metrics,
        templates::list_own, templates::put_own, templates::delete_own, templates::preview_own,
        templates::list_for, templates::put_for, templates::delete_for, templates::preview_for,
        webhooks::put, webhooks::get, webhooks::delete, webhooks::rotate_secret, webhooks::test,
        webhooks::deliveries, codes::resend, devx::put_test_recipients, devx::get_test_recipients,
        devx::test_inbox, devx::own_stats, devx::tenant_stats, devx::all_stats,
        transport::put, transport::get, transport::delete, transport::rotate_secret,
        hosted::open, hosted::outcome, hosted::put_logo, hosted::delete_logo,
        providers::put_own, providers::get_own, providers::delete_own, providers::test_own,
        providers::put_for, providers::get_for, providers::delete_for, providers::test_for,
        suppressions::list, suppressions::add, suppressions::remove, provider_events::receive, dkim::create, dkim::get, dkim::delete, dkim::domain_check, claims::claim_code, claims::claim_session
    ),
    components(
        schemas(Problem, ProblemCode, FieldErrorOut),
        responses(
            problems::Unauthorized, problems::InvalidRequest, problems::TenantNotFound,
            problems::WebhookNotFound, problems::TransportNotFound, problems::OtpNotFound, problems::TemplateInvalid,
            problems::SmtpPolicyRefused, problems::PayloadTooLarge, problems::UnsupportedMediaType,
            problems::RateLimited, problems::Unprocessable
        )
    ),
    modifiers(&Security, &Common),
    tags(
        (name = "tenants", description = "Tenant administration (admin token)"),
        (name = "self-service", description = "A tenant managing itself with its secret key"),
        (name = "codes", description = "Minting and verifying codes (secret key)"),
        (name = "webhooks", description = "Signed event notifications (secret key)"),
        (name = "hosted pages", description = "Sign-in pages otpmint serves for the tenant (secret key)"),
        (name = "transports", description = "Delivery through the tenant's own HTTPS endpoint (secret key)"),
        (name = "providers", description = "Email and SMS providers per channel (secret key, or admin token under /v1/tenants/{id})"),
        (name = "templates", description = "Messages per locale (secret key, or admin token under /v1/tenants/{id})"),
        (name = "deliverability", description = "The suppression list (secret key)"),
        (name = "test mode", description = "Test recipients and the test inbox (secret key)"),
        (name = "statistics", description = "Counts by period (secret key; admin token for one or all tenants)"),
        (name = "operations", description = "Health and metrics")
    )
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json`.
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    constrain(&mut doc);
    doc
}

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
    pub fn code_verifier() -> Value {
        of(&grammar::CODE_VERIFIER)
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
    /// `webhook::check_url`: an https:// URL with a host (its address is checked when it is
    /// registered: a refusal there is 422).
    pub fn endpoint() -> Value {
        json!({
            // A name whose last label starts with a letter (a numeric one reads as IPv4).
            "pattern": "^https://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*(\\?([A-Za-z0-9._~!$&'()*+,;=:@%-]|[/?])*)?$",
            "maxLength": 2048
        })
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
fn constrain(doc: &mut serde_json::Value) {
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
    constrain_parameters(doc);
    constrain_shapes(doc);
}

/// The rules of request bodies' properties: (schema, property, rule).
fn property_rules() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    use crate::domain::delivery::DeliveryMode;
    use crate::domain::grammar;
    use crate::domain::policy;
    use crate::domain::tenant::TenantName;
    use crate::domain::tenant::{TlsMode, TransportUse};
    let delivery = || rule::one_of(&DeliveryMode::ALL.map(DeliveryMode::as_str));
    let tls = || rule::one_of(&TlsMode::ALL.map(TlsMode::as_str));
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
        ("ClaimBody", "code_verifier", rule::code_verifier()),
        (
            "ProviderBody",
            "kind",
            rule::one_of(&crate::domain::provider::ProviderKind::ALL.map(|k| k.as_str())),
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
        ("SmtpBody", "tls", tls()),
        ("SmtpPatchBody", "tls", tls()),
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
        (
            "CreateTenantBody",
            "name",
            serde_json::json!({"minLength": 1, "maxLength": TenantName::MAX_CHARS}),
        ),
        (
            "PatchTenantBody",
            "name",
            serde_json::json!({"minLength": 1, "maxLength": TenantName::MAX_CHARS}),
        ),
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
    use crate::service::stats::Granularity;
    use serde_json::Value;
    // (a part of the path, the parameter, its rule)
    let when = rule::when;
    let parameters: Vec<(&str, &str, Value)> = vec![
        ("", "locale", rule::locale()),
        ("", "recipient", rule::recipient()),
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

/// Shapes no single property states: one recipient, a tenant's own PATCH body.
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
    // A tenant changing itself: the fields only the admin may change are not in its body.
    if let Some(admin) = doc.pointer("/components/schemas/PatchTenantBody").cloned() {
        let mut own = admin;
        if let Some(Value::Object(props)) = own.get_mut("properties") {
            for field in super::v1::ADMIN_ONLY_FIELDS {
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
    /// docs/openapi.json must be what the code generates. To update it after a change:
    /// `OTPMINT_WRITE_OPENAPI=1 cargo test openapi`.
    #[test]
    fn committed_openapi_matches_the_generated_one() {
        let generated = serde_json::to_string_pretty(&super::document()).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        if std::env::var_os("OTPMINT_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run `OTPMINT_WRITE_OPENAPI=1 cargo test openapi`"
        );
    }

    #[test]
    fn every_property_rule_names_a_property_of_the_description() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
        for (schema, property, _) in super::property_rules() {
            assert!(
                doc.pointer(&format!(
                    "/components/schemas/{schema}/properties/{property}"
                ))
                .is_some(),
                "{schema}.{property} is not in the description"
            );
        }
    }

    #[test]
    fn every_operation_with_a_json_body_declares_413_and_415() {
        let doc = super::document();
        let mut n = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if op["requestBody"]["content"]["application/json"].is_object()
                    && !path.starts_with("/v1/events/")
                {
                    n += 1;
                    for status in ["413", "415"] {
                        assert!(
                            op["responses"][status].is_object(),
                            "{method} {path} does not declare {status}"
                        );
                    }
                }
            }
        }
        assert!(n > 20, "{n} operations with a JSON body");
    }

    #[test]
    fn every_v1_route_and_problem_code_is_described() {
        let doc = super::document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for p in [
            "/v1/tenants",
            "/v1/tenants/{id}",
            "/v1/tenants/{id}/rotate-secret",
            "/v1/tenant",
            "/v1/tenant/audit",
            "/v1/otp",
            "/v1/otp/verify",
            "/v1/otp/{key}",
            "/v1/tenant/templates",
            "/v1/tenant/templates/{locale}",
            "/v1/tenant/templates/preview",
            "/v1/tenants/{id}/templates",
            "/v1/tenants/{id}/templates/{locale}",
            "/v1/tenants/{id}/templates/preview",
            "/v1/tenant/webhook",
            "/v1/tenant/webhook/rotate-secret",
            "/v1/tenant/webhook/test",
            "/v1/tenant/webhook/deliveries",
            "/v1/otp/{key}/resend",
            "/v1/tenant/test-recipients",
            "/v1/tenant/test-inbox",
            "/v1/tenant/stats",
            "/v1/tenants/{id}/stats",
            "/v1/stats",
            "/v1/tenant/providers/{channel}",
            "/v1/tenant/providers/{channel}/test",
            "/v1/tenants/{id}/providers/{channel}",
            "/v1/tenants/{id}/providers/{channel}/test",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][p].is_object(), "{p} missing");
        }
        let codes = doc["components"]["schemas"]["ProblemCode"]["enum"]
            .as_array()
            .unwrap();
        for c in [
            "otp_mismatch",
            "attempts_exhausted",
            "delivery_failed",
            "overloaded",
            "rate_limited",
            "smtp_host_not_allowed",
            "template_invalid",
            "idempotency_key_mismatch",
            "idempotency_key_in_use",
            "webhook_host_not_allowed",
            "template_limit_reached",
            "resend_limit_reached",
            "transport_conflict",
            "provider_not_found",
        ] {
            assert!(codes.iter().any(|x| x == c), "{c} missing");
        }
    }
}
