//! The OpenAPI 3.1 document, generated from the handlers' annotations and the DTO types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

mod constrain;
mod headers;

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

/// The operations of a path (the methods the API uses).
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    let methods = [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ];
    methods.into_iter().flatten()
}

/// Responses every operation of a kind can give, declared here once instead of on each
/// handler (API.md §18.5): every route passes the per-address flood guard (429) and reads
/// the database (503 `unavailable` when it does not answer in time, API.md §6.24), every
/// operation with a security requirement answers 401 to a missing or wrong bearer token
/// (its extractor, `routes/auth.rs`), every operation that takes a body answers 408 when it
/// does not arrive within `server.request_timeout_seconds`, and every operation that takes
/// a JSON body answers 413 past the body limit and 415 for any other media type
/// (`routes/auth.rs`'s body readers).
struct Common;

impl Modify for Common {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, RefOr};
        for (path, item) in api.paths.paths.iter_mut() {
            // Provider events take the body as each provider sends it (SNS: text/plain).
            let events = path.starts_with("/v1/events/");
            for op in operations(item) {
                let mut add = vec![("429", "RateLimited"), ("503", "Unavailable")];
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add.push(("401", "Unauthorized"));
                }
                let json = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if op.request_body.is_some() {
                    add.push(("408", "RequestTimeout"));
                }
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

/// The paths whose operations the tenant and the admin share (`auth::Owner`).
const TWINNED: [&str; 2] = ["/v1/tenant/templates", "/v1/tenant/providers"];

/// The admin's twin of every operation the tenant and the admin share, documented from
/// the tenant's (one handler serves both): the same path under `auth::ADMIN_TWIN`, with the
/// tenant id as its first path parameter, the admin token, `tenant_not_found` among its
/// 404s and its own operation id.
struct AdminTwins;

impl Modify for AdminTwins {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let twins: Vec<_> = api
            .paths
            .paths
            .iter()
            .filter(|(path, _)| TWINNED.iter().any(|t| path.starts_with(t)))
            .map(|(path, item)| {
                let rest = path.trim_start_matches("/v1/tenant");
                (format!("{}{rest}", super::auth::ADMIN_TWIN), twin(item))
            })
            .collect();
        api.paths.paths.extend(twins);
    }
}

fn twin(item: &utoipa::openapi::PathItem) -> utoipa::openapi::PathItem {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{Object, Ref, RefOr, Required, Type};
    let mut item = item.clone();
    for op in operations(&mut item) {
        op.operation_id = op.operation_id.take().map(|id| format!("{id}_for_tenant"));
        let id = ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("Tenant id"))
            .schema(Some(Object::with_type(Type::String)))
            .build();
        op.parameters.get_or_insert_with(Vec::new).insert(0, id);
        op.security = Some(vec![SecurityRequirement::new(
            "admin_token",
            Vec::<String>::new(),
        )]);
        let not_found = op
            .responses
            .responses
            .entry("404".to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name("TenantNotFound")));
        if let RefOr::T(r) = not_found {
            r.description = format!("tenant_not_found or {}", r.description);
        }
    }
    item
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
        tenants::rotate_tenant_secret, tenants::get_self, tenants::patch_self, codes::audit, codes::mint,
        codes::verify, codes::otp_status, codes::otp_cancel, ops::healthz, ops::readyz,
        ops::metrics,
        templates::list_templates, templates::put_template, templates::delete_template,
        templates::preview_template,
        webhooks::put_webhook, webhooks::get_webhook, webhooks::delete_webhook, webhooks::rotate_webhook_secret, webhooks::test_webhook,
        webhooks::webhook_deliveries, codes::resend, test_mode::put_test_recipients, test_mode::get_test_recipients,
        test_mode::test_inbox, stats::own_stats, stats::tenant_stats, stats::all_stats,
        transport::put_http_transport, transport::get_http_transport, transport::delete_http_transport, transport::rotate_http_transport_secret,
        hosted::open, hosted::outcome, branding::put_logo, branding::delete_logo,
        providers::put_provider, providers::get_provider, providers::delete_provider,
        providers::test_provider,
        suppressions::list, suppressions::add, suppressions::remove, provider_events::receive, dkim::create_dkim, dkim::get_dkim, dkim::delete_dkim, dkim::domain_check, claims::claim_code, claims::claim_session
    ),
    components(
        schemas(Problem, ProblemCode, FieldErrorOut),
        responses(
            problems::Unauthorized, problems::InvalidRequest, problems::TenantNotFound,
            problems::WebhookNotFound, problems::TransportNotFound, problems::OtpNotFound, problems::TemplateInvalid,
            problems::SmtpPolicyRefused, problems::PayloadTooLarge, problems::UnsupportedMediaType,
            problems::RequestTimeout,
            problems::RateLimited, problems::Unprocessable, problems::Unavailable,
            problems::RelayCheckBusy
        )
    ),
    modifiers(&AdminTwins, &Security, &Common),
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

    /// OpenAPI requires operation ids to be unique; every secured operation declares 401,
    /// and every admin twin takes the admin token and the tenant id.
    #[test]
    fn operation_ids_are_unique_and_twins_are_the_admins() {
        let doc = super::document();
        let mut ids = std::collections::BTreeSet::new();
        let mut twins = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                assert!(
                    ids.insert(id.to_string()),
                    "{method} {path}: {id} is used twice"
                );
                if op["security"].is_array() {
                    assert!(
                        op["responses"]["401"].is_object(),
                        "{method} {path}: no 401"
                    );
                }
                if id.ends_with("_for_tenant") {
                    twins += 1;
                    assert!(path.starts_with("/v1/tenants/{id}/"), "{path}");
                    assert_eq!(op["security"][0]["admin_token"], serde_json::json!([]));
                    assert_eq!(op["parameters"][0]["name"], "id");
                    assert!(
                        op["responses"]["404"].is_object(),
                        "{method} {path}: no 404"
                    );
                }
            }
        }
        assert_eq!(twins, 8, "the admin twins of templates and providers");
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
    fn every_closed_set_of_an_answer_names_a_property_of_the_description() {
        use utoipa::OpenApi;
        let mut doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
        for (schema, property, values) in super::constrain::answer_values() {
            assert!(!values.is_empty(), "{schema}.{property}");
            assert!(
                super::constrain::answer_property(&mut doc, schema, property).is_some(),
                "{schema}.{property} is not in the description"
            );
        }
        // Each value the code can answer is in its set.
        let doc = super::document();
        let within = |schema: &str, property: &str, value: &str| {
            let mut doc = doc.clone();
            let set = super::constrain::answer_property(&mut doc, schema, property)
                .map(|p| p["enum"].clone())
                .unwrap_or_default();
            assert!(
                set.as_array().is_some_and(|s| s.iter().any(|v| v == value)),
                "{schema}.{property}: {value} not in {set}"
            );
        };
        use crate::domain::delivery::DeliveryMode;
        for mode in DeliveryMode::ALL {
            for (unknown, test) in [(false, false), (true, false), (false, true), (true, true)] {
                let (_, shown) = crate::routes::codes::delivery_shown(mode, unknown, test);
                within("MintOut", "delivery", shown);
            }
        }
        within("OAuth2Out", "provider", "google");
        within("ClaimedOut", "verified_via", "link");
    }

    #[test]
    fn the_headers_clients_act_on_are_declared() {
        let doc = super::document();
        for response in ["RateLimited", "Unavailable", "RelayCheckBusy"] {
            assert!(doc
                .pointer(&format!(
                    "/components/responses/{response}/headers/Retry-After"
                ))
                .is_some());
        }
        assert!(doc
            .pointer("/components/responses/Unauthorized/headers/WWW-Authenticate")
            .is_some());
        let mint = &doc["paths"]["/v1/otp"]["post"]["responses"];
        for status in ["201", "202", "502"] {
            assert!(mint[status]["headers"]["Idempotent-Replayed"].is_object());
        }
        assert!(mint["409"]["headers"]["Retry-After"].is_object());
        // Every 429 and 503 of the API, shared or a route's own, may say when to try
        // again; the readiness probe's 503 does not.
        assert!(doc["paths"]["/readyz"]["get"]["responses"]["503"]["headers"].is_null());
        for (path, item) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for (method, op) in item.as_object().unwrap() {
                for status in ["429", "503"] {
                    let r = &op["responses"][status];
                    assert!(
                        r.is_null()
                            || r["$ref"].is_string()
                            || r["headers"]["Retry-After"].is_object(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_operation_with_a_json_body_declares_408_413_and_415() {
        let doc = super::document();
        let mut n = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                // A body that stalls is cut at server.request_timeout_seconds.
                if op["requestBody"].is_object() {
                    assert!(
                        op["responses"]["408"].is_object(),
                        "{method} {path} does not declare 408"
                    );
                }
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
