//! The OpenAPI 3.1 document, generated from the handlers' annotations and the DTO types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

mod constrain;

use super::dto::*;
use super::{
    branding, claims, codes, dkim, hosted, ops, provider_events, providers, stats, suppressions,
    templates, tenants, test_mode, transport, webhooks,
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
        tenants::create_tenant, tenants::list_tenants, tenants::get_tenant, tenants::patch_tenant, tenants::delete_tenant,
        tenants::rotate_secret, tenants::get_self, tenants::patch_self, codes::audit, codes::mint,
        codes::verify, codes::otp_status, codes::otp_cancel, ops::healthz, ops::readyz,
        ops::metrics,
        templates::list_own, templates::put_own, templates::delete_own, templates::preview_own,
        templates::list_for, templates::put_for, templates::delete_for, templates::preview_for,
        webhooks::put, webhooks::get, webhooks::delete, webhooks::rotate_secret, webhooks::test,
        webhooks::deliveries, codes::resend, test_mode::put_test_recipients, test_mode::get_test_recipients,
        test_mode::test_inbox, stats::own_stats, stats::tenant_stats, stats::all_stats,
        transport::put, transport::get, transport::delete, transport::rotate_secret,
        hosted::open, hosted::outcome, branding::put_logo, branding::delete_logo,
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
    constrain::constrain(&mut doc);
    doc
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
        for (schema, property, _) in super::constrain::property_rules() {
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
