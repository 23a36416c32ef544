//! The tenant routes of the native API (admin and self-service): parse → one service call →
//! shape the response. Each handler carries its OpenAPI description (routes/openapi/
//! collects them); the helpers every handler shares are in respond.rs, codes in codes.rs,
//! operations in ops.rs, templates and webhooks in their own files.

use actix_web::{web, HttpResponse};
use serde_json::Value;

use super::auth::{is_admin, AdminAuth, Body, TenantAuth};
use super::dto::*;
use super::error::ApiError;
use super::respond::{json, no_store, parse_delivery, parse_locale};
use super::tenant_bodies::*;
use super::State;
use crate::config::RegistrationMode;
use crate::domain::keys::SecretKey;
use crate::domain::tenant::Origin;
use crate::domain::tenant::Tenant;
use crate::service::tenants::accounts::NewTenant;
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

/// The tenant as JSON (also used by the CLI).
pub fn tenant_json(services: &crate::service::Services, t: &Tenant) -> Value {
    serde_json::to_value(TenantOut::of(services, t)).unwrap_or(Value::Null)
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    description = "Register a tenant. Needs the admin token unless `registration.mode = \"open\"`; `closed` answers 403.",
    request_body = CreateTenantBody,
    responses(
        (status = 201, description = "Created; the secret key is shown once", body = TenantCreatedOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 403, description = "registration_closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, response = problems::SmtpPolicyRefused),
        (status = 503, response = problems::RelayCheckBusy),
    ),
    security(("admin_token" = []), ()))]
pub async fn create_tenant(st: State, body: Body) -> ApiResult {
    let mode = st.services.core.settings.load().registration.mode;
    let admin = is_admin(&body.req, &st);
    // A create's relay check counts in its client's share (not a tenant's: none exists
    // yet), the client taken as the limits take it (an IPv6 one per /56).
    let client = super::client_addr(&body.req, &st).map_or_else(
        || "unknown".into(),
        |ip| crate::client_ip::limited_as(ip).to_string(),
    );
    match mode {
        RegistrationMode::Closed => return Err(ApiError::RegistrationClosed),
        RegistrationMode::Admin if !admin => return Err(ServiceError::Unauthorized.into()),
        _ => {}
    }
    let b: CreateTenantBody = body.json().await?;
    let smtp = b.smtp.map(|s| input_from(s, "smtp")).transpose()?;
    let smtp_fallback = b
        .smtp_fallback
        .map(|s| input_from(s, "smtp_fallback"))
        .transpose()?;
    let delivery = parse_delivery(b.delivery.as_deref())?;
    let default_locale = parse_locale(b.default_locale.as_deref(), "default_locale")?;
    let (row, secret) = st
        .services
        .tenants
        .create_tenant(NewTenant {
            name: b.name,
            smtp,
            policy: b.policy.unwrap_or_default().into(),
            delivery,
            default_locale,
            origin: Origin::Native,
            secret: None,
            test: b.test,
            smtp_fallback,
            // Under open registration a tenant that registers itself waits for the admin.
            pages_approved: mode != RegistrationMode::Open || admin,
            check_relay: b
                .check_relay
                .unwrap_or(false)
                .then(|| format!("create/{client}")),
        })
        .await?;
    tracing::info!(tenant_id = %row.id, "tenant created");
    Ok(json(
        no_store(HttpResponse::Created()),
        &TenantCreatedOut {
            tenant: TenantOut::of(&st.services, &row),
            secret_key: secret.expose().to_string(),
        },
    ))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "All tenants", body = TenantListOut),
    ),
    security(("admin_token" = [])))]
pub async fn list_tenants(_: AdminAuth, st: State) -> ApiResult {
    let list = st.services.core.tenants().await?;
    Ok(json(
        HttpResponse::Ok(),
        &TenantListOut {
            tenants: list
                .iter()
                .map(|t| TenantOut::of(&st.services, t))
                .collect(),
        },
    ))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id, `tnt_…`")),
    responses(
        (status = 200, description = "The tenant", body = TenantOut),
        (status = 404, response = problems::TenantNotFound),
    ),
    security(("admin_token" = [])))]
pub async fn get_tenant(_: AdminAuth, st: State, id: web::Path<String>) -> ApiResult {
    Ok(json(
        HttpResponse::Ok(),
        &TenantOut::of(&st.services, &st.services.core.tenant(&id).await?),
    ))
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants",
    description = "Change any of name, smtp (partial), policy (partial), enabled. A change of SMTP host, port or username must carry the password again.",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = PatchTenantBody,
    responses(
        (status = 200, description = "The changed tenant (with a new `secret_key`, shown once, when a test tenant was made live or a live one a test tenant)", body = TenantPatchedOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 404, response = problems::TenantNotFound),
        (status = 409, description = "conflict: the tenant changed under this request again and again; try again", body = Problem, content_type = "application/problem+json"),
        (status = 422, response = problems::SmtpPolicyRefused),
        (status = 503, response = problems::RelayCheckBusy),
    ),
    security(("admin_token" = [])))]
pub async fn patch_tenant(_: AdminAuth, st: State, id: web::Path<String>, body: Body) -> ApiResult {
    let body: PatchTenantBody = body.json().await?;
    let (row, secret) = st
        .services
        .tenants
        .update_tenant(&id, patch_from(body)?, false)
        .await?;
    Ok(json(
        no_store(HttpResponse::Ok()),
        &TenantPatchedOut {
            tenant: TenantOut::of(&st.services, &row),
            secret_key: secret.map(|s| s.expose().to_string()),
        },
    ))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants",
    description = "Delete a tenant; its codes stop verifying.",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = problems::TenantNotFound),
    ),
    security(("admin_token" = [])))]
pub async fn delete_tenant(_: AdminAuth, st: State, id: web::Path<String>) -> ApiResult {
    st.services.tenants.delete_tenant(&id).await?;
    tracing::info!(tenant_id = %id, "tenant deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/tenants/{id}/rotate-secret", tag = "tenants",
    description = "Issue a new secret key; the old one keeps working for `grace_seconds` (0–86400, default 0). Pending codes keep verifying.",
    params(("id" = String, Path, description = "Tenant id")),
    request_body(content = Option<RotateBody>, description = "Optional"),
    responses(
        (status = 200, description = "The new secret key, shown once", body = SecretOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 404, response = problems::TenantNotFound),
    ),
    security(("admin_token" = [])))]
pub async fn rotate_tenant_secret(
    _: AdminAuth,
    st: State,
    id: web::Path<String>,
    body: Body,
) -> ApiResult {
    let body: Option<RotateBody> = body.optional_json().await?;
    let grace = body.and_then(|b| b.grace_seconds).unwrap_or(0);
    let secret: SecretKey = st.services.tenants.rotate_secret(&id, grace).await?;
    tracing::info!(tenant_id = %id, grace_seconds = grace, "secret key rotated");
    Ok(json(
        no_store(HttpResponse::Ok()),
        &SecretOut {
            secret_key: secret.expose().to_string(),
        },
    ))
}

#[utoipa::path(get, path = "/v1/tenant", tag = "self-service",
    responses(
        (status = 200, description = "The calling tenant", body = TenantOut),
    ),
    security(("secret_key" = [])))]
pub async fn get_self(st: State, t: TenantAuth) -> ApiResult {
    Ok(json(HttpResponse::Ok(), &TenantOut::of(&st.services, &t.0)))
}

/// What `PATCH /v1/tenant` refuses and `PATCH /v1/tenants/{id}` takes: even `null`, these
/// keys are not in a tenant's own body (its description leaves them out).
pub const ADMIN_ONLY_FIELDS: &[&str] = &["policy", "enabled", "test", "pages_approved"];

#[utoipa::path(patch, path = "/v1/tenant", tag = "self-service",
    description = "Change the tenant's own settings: name, smtp, smtp_fallback, delivery, default_locale, allowed_return_urls, branding, suppression, sms (check_relay checks a changed relay first). policy, enabled, test and pages_approved are the admin's: 400.",
    request_body = PatchTenantBody,
    responses(
        (status = 200, description = "The changed tenant", body = TenantOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 409, description = "conflict: the tenant changed under this request again and again; try again", body = Problem, content_type = "application/problem+json"),
        (status = 422, response = problems::SmtpPolicyRefused),
        (status = 503, response = problems::RelayCheckBusy),
    ),
    security(("secret_key" = [])))]
pub async fn patch_self(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let bytes = body.json_bytes().await?;
    let body: PatchTenantBody = super::auth::parse_json(&bytes)?;
    let keys: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(field) = ADMIN_ONLY_FIELDS.iter().find(|f| keys.contains_key(**f)) {
        return Err(ServiceError::field(field, "only the admin can change this").into());
    }
    let (row, _) = st
        .services
        .tenants
        .update_tenant(t.0.id.as_str(), patch_from(body)?, true)
        .await?;
    Ok(json(HttpResponse::Ok(), &TenantOut::of(&st.services, &row)))
}
