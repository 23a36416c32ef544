//! The native `/v1` API's tenant routes (admin and self-service) and the helpers every `/v1`
//! handler shares: parse → one service call → shape the response. Each handler carries its
//! OpenAPI description (routes/openapi.rs collects them); codes are in codes.rs, operations
//! in ops.rs, templates and webhooks in their own files.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{is_admin, json_body, optional_json_body, AdminAuth, TenantAuth};
use super::dto::*;
use super::error::ApiError;
use super::AppState;
use crate::config::RegistrationMode;
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::SecretKey;
use crate::domain::locale::{Locale, LOCALE_RULE};
use crate::domain::oauth2::OAuth2Input;
use crate::domain::policy::PolicyPatch;
use crate::domain::tenant::Tenant;
use crate::domain::tenant::{Origin, TlsMode};
use crate::service::tenants::{NewTenant, SmtpInput, SmtpPatch, TenantPatch};
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpBody {
    host: String,
    #[serde(deserialize_with = "super::strict::whole")]
    port: u16,
    #[serde(default)]
    username: String,
    /// The relay's password (unless `oauth2`).
    password: Option<String>,
    from: String,
    tls: Option<String>,
    /// 1 to `smtp.max_connections_limit`; default `smtp.max_connections_per_tenant`
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    max_connections: Option<u32>,
    /// Log in with OAuth2 (SASL XOAUTH2) instead of a password (API.md §15.1).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    oauth2: Option<OAuth2Body>,
}

/// A relay's OAuth2 settings (API.md §15.1). `provider` fills `token_url` and `scope`;
/// without it `token_url` is required. With `refresh_token` the refresh-token grant is
/// used, else client credentials. Secrets are sealed and never shown.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Body {
    /// `microsoft` or `google`
    provider: Option<String>,
    /// `https://…` (the outbound address policy applies)
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    refresh_token: Option<String>,
    /// Microsoft Entra tenant id or domain (required with `provider: "microsoft"`)
    entra_tenant: Option<String>,
}

impl From<OAuth2Body> for OAuth2Input {
    fn from(b: OAuth2Body) -> Self {
        OAuth2Input {
            provider: b.provider,
            token_url: b.token_url,
            client_id: b.client_id,
            client_secret: b.client_secret,
            scope: b.scope,
            refresh_token: b.refresh_token,
            entra_tenant: b.entra_tenant,
        }
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    code_length: Option<u32>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    ttl_seconds: Option<u32>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    max_attempts: Option<u32>,
}

impl From<PolicyBody> for PolicyPatch {
    fn from(p: PolicyBody) -> Self {
        PolicyPatch {
            code_length: p.code_length,
            ttl_seconds: p.ttl_seconds,
            max_attempts: p.max_attempts,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    name: String,
    /// The relay; a tenant may have none and send through a provider or its HTTP transport
    /// (API.md §15.3), or be a test tenant.
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    smtp: Option<SmtpBody>,
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    policy: Option<PolicyBody>,
    /// `sync` (default) or `async`
    delivery: Option<String>,
    /// The locale messages fall back to (default `en`)
    default_locale: Option<String>,
    /// A test tenant (API.md §13.2): it sends nothing to any relay, every mint goes to its
    /// test inbox, and its secret key starts `sk_test_`.
    #[serde(default)]
    test: bool,
    /// A second relay, tried at once when `smtp` fails transiently (API.md §12.1).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    smtp_fallback: Option<SmtpBody>,
    /// Connect, TLS and AUTH to the relay (no mail) before saving; a failure is 422
    /// `relay_check_failed` with the delivery `reason`, and nothing is saved.
    check_relay: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpPatchBody {
    host: Option<String>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
    tls: Option<String>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    max_connections: Option<u32>,
    /// OAuth2 settings to set or change (API.md §15.1).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    oauth2: Option<OAuth2Body>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    smtp: Option<SmtpPatchBody>,
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    policy: Option<PolicyBody>,
    enabled: Option<bool>,
    /// `sync` or `async`
    delivery: Option<String>,
    /// The locale messages fall back to, e.g. `de`
    default_locale: Option<String>,
    /// Admin only: make the tenant a test tenant, or take it out of test mode (its relay
    /// must then pass the host policy).
    test: Option<bool>,
    /// The fallback relay: fields to change (all but `tls` and `max_connections` when the
    /// tenant has none yet), or `null` to remove it.
    #[serde(default, deserialize_with = "super::strict::present_object")]
    #[schema(value_type = Option<SmtpPatchBody>)]
    smtp_fallback: Option<Option<SmtpPatchBody>>,
    /// The prefixes a magic link's `return_url` must start with (API.md §14; replaces the
    /// list; ≤ 20): `https://…`, or `http://localhost…` for development.
    allowed_return_urls: Option<Vec<String>>,
    /// The hosted pages' look (API.md §14.1): `{"color": "#RRGGBB"}` (`null`: the default).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    branding: Option<BrandingBody>,
    /// `on` (default: a mint to a suppressed recipient answers 422 `recipient_suppressed`)
    /// or `off` (the list only records; API.md §16.1).
    #[schema(pattern = "^(on|off)$")]
    suppression: Option<String>,
    /// Admin only: under `registration.mode = "open"` a self-registered tenant's hosted
    /// pages and links stay off (422 `pages_not_approved`) until this is true (API.md §17.6).
    pages_approved: Option<bool>,
    /// The SMS fraud guard (API.md §17.1): the fields given replace the stored ones.
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    sms: Option<SmsBody>,
    /// Connect, TLS and AUTH to the relay as changed (no mail) before saving; a failure is
    /// 422 `relay_check_failed` with the delivery `reason`, and nothing is saved.
    check_relay: Option<bool>,
}

/// A tenant's SMS fraud guard settings (API.md §17.1).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsBody {
    /// The countries whose numbers the tenant texts, as ISO 3166-1 alpha-2 codes
    /// (`["DE", "FR"]`; replaces the list). Empty by default: SMS is opt-in per country.
    #[schema(max_items = 250)]
    allowed_countries: Option<Vec<String>>,
    /// Numbers that verified a code of the tenant within this many days skip the velocity
    /// limits (0: none does). Default 90.
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    trusted_days: Option<u32>,
    /// Text fixed-line numbers too. Default false.
    allow_fixed_line: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandingBody {
    #[serde(default, deserialize_with = "super::strict::present")]
    #[schema(value_type = Option<String>)]
    color: Option<Option<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old key keeps working, 0–86400 seconds (default 0).
    #[schema(minimum = 0, maximum = 86400)]
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    grace_seconds: Option<u64>,
}

fn parse_tls(s: Option<&str>, relay: &str) -> Result<Option<TlsMode>, ApiError> {
    match s {
        None => Ok(None),
        Some(t) => TlsMode::parse(t).map(Some).ok_or_else(|| {
            ServiceError::field(
                &format!("{relay}.tls"),
                "must be \"starttls\", \"implicit\" or \"none\"",
            )
            .into()
        }),
    }
}

/// An optional language tag, refused with 400 naming `field`.
pub(super) fn parse_locale(s: Option<&str>, field: &str) -> Result<Option<Locale>, ApiError> {
    match s {
        None => Ok(None),
        Some(l) => Locale::parse(l)
            .map(Some)
            .ok_or_else(|| ServiceError::field(field, LOCALE_RULE).into()),
    }
}

pub(super) fn parse_delivery(s: Option<&str>) -> Result<Option<DeliveryMode>, ApiError> {
    match s {
        None => Ok(None),
        Some(d) => DeliveryMode::parse(d)
            .map(Some)
            .ok_or_else(|| ServiceError::field("delivery", "must be \"sync\" or \"async\"").into()),
    }
}

/// The tenant as JSON (also used by the CLI).
pub fn tenant_json(services: &crate::service::Services, t: &Tenant) -> Value {
    serde_json::to_value(TenantOut::of(services, t)).unwrap_or(Value::Null)
}

/// A JSON answer with the charset the contract names.
pub(super) fn json<T: Serialize>(mut b: actix_web::HttpResponseBuilder, v: &T) -> HttpResponse {
    b.content_type("application/json; charset=utf-8")
        .body(serde_json::to_string(v).unwrap_or_default())
}

pub(super) fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    description = "Register a tenant. Needs the admin token unless `registration.mode = \"open\"`; `closed` answers 403.",
    request_body = CreateTenantBody,
    responses(
        (status = 201, description = "Created; the secret key is shown once", body = TenantCreatedOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 401, response = problems::Unauthorized),
        (status = 403, description = "registration_closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, response = problems::SmtpPolicyRefused),
    ),
    security(("admin_token" = []), ()))]
pub async fn create_tenant(
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    let mode = st.services.settings.load().registration.mode;
    match mode {
        RegistrationMode::Closed => return Err(ApiError::RegistrationClosed),
        RegistrationMode::Admin if !is_admin(&req, &st) => {
            return Err(ServiceError::Unauthorized.into())
        }
        _ => {}
    }
    let b: CreateTenantBody = json_body(&req, payload).await?;
    let smtp = b.smtp.map(|s| input_from(s, "smtp")).transpose()?;
    let smtp_fallback = b
        .smtp_fallback
        .map(|s| input_from(s, "smtp_fallback"))
        .transpose()?;
    let delivery = parse_delivery(b.delivery.as_deref())?;
    let default_locale = parse_locale(b.default_locale.as_deref(), "default_locale")?;
    let (row, secret) = st
        .services
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
            pages_approved: mode != RegistrationMode::Open || is_admin(&req, &st),
            check_relay: b.check_relay.unwrap_or(false),
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
        (status = 401, response = problems::Unauthorized),
    ),
    security(("admin_token" = [])))]
pub async fn list_tenants(_: AdminAuth, st: web::Data<AppState>) -> ApiResult {
    let list = st.services.tenants().await?;
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
        (status = 401, response = problems::Unauthorized),
        (status = 404, response = problems::TenantNotFound),
    ),
    security(("admin_token" = [])))]
pub async fn get_tenant(_: AdminAuth, st: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    Ok(json(
        HttpResponse::Ok(),
        &TenantOut::of(&st.services, &st.services.tenant(&id).await?),
    ))
}

fn input_from(s: SmtpBody, relay: &str) -> Result<SmtpInput, ApiError> {
    Ok(SmtpInput {
        tls: parse_tls(s.tls.as_deref(), relay)?,
        host: s.host,
        port: s.port,
        username: s.username,
        // A relay without a login takes an empty password, as before OAuth2.
        password: match (&s.oauth2, s.password) {
            (None, p) => Some(SecretString::from(p.unwrap_or_default())),
            (Some(_), p) => p.map(SecretString::from),
        },
        from: s.from,
        max_connections: s.max_connections,
        oauth2: s.oauth2.map(Into::into),
    })
}

fn smtp_patch_from(s: SmtpPatchBody, relay: &str) -> Result<SmtpPatch, ApiError> {
    Ok(SmtpPatch {
        tls: parse_tls(s.tls.as_deref(), relay)?,
        host: s.host,
        port: s.port,
        username: s.username,
        password: s.password.map(SecretString::from),
        from: s.from,
        max_connections: s.max_connections,
        oauth2: s.oauth2.map(Into::into),
    })
}

fn patch_from(b: PatchTenantBody) -> Result<TenantPatch, ApiError> {
    let smtp = b.smtp.map(|s| smtp_patch_from(s, "smtp")).transpose()?;
    let smtp_fallback = match b.smtp_fallback {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => Some(Some(smtp_patch_from(s, "smtp_fallback")?)),
    };
    Ok(TenantPatch {
        name: b.name,
        enabled: b.enabled,
        smtp,
        policy: b.policy.map(Into::into),
        delivery: parse_delivery(b.delivery.as_deref())?,
        default_locale: parse_locale(b.default_locale.as_deref(), "default_locale")?,
        test: b.test,
        smtp_fallback,
        allowed_return_urls: b.allowed_return_urls,
        brand_color: b.branding.and_then(|x| x.color),
        pages_approved: b.pages_approved,
        check_relay: b.check_relay.unwrap_or(false),
        sms: b.sms.map(|s| crate::domain::sms_guard::SmsPatch {
            allowed_countries: s.allowed_countries,
            trusted_days: s.trusted_days,
            allow_fixed_line: s.allow_fixed_line,
        }),
        suppression: match b.suppression.as_deref() {
            None => None,
            Some("on") => Some(true),
            Some("off") => Some(false),
            Some(_) => {
                return Err(ServiceError::field("suppression", "must be \"on\" or \"off\"").into())
            }
        },
    })
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants",
    description = "Change any of name, smtp (partial), policy (partial), enabled. A change of SMTP host, port or username must carry the password again.",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = PatchTenantBody,
    responses(
        (status = 200, description = "The changed tenant (with a new `secret_key` when a test tenant was made live)", body = TenantPatchedOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 401, response = problems::Unauthorized),
        (status = 404, response = problems::TenantNotFound),
        (status = 422, response = problems::SmtpPolicyRefused),
    ),
    security(("admin_token" = [])))]
pub async fn patch_tenant(
    _: AdminAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let body: PatchTenantBody = json_body(&req, payload).await?;
    let (row, secret) = st
        .services
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
        (status = 401, response = problems::Unauthorized),
        (status = 404, response = problems::TenantNotFound),
    ),
    security(("admin_token" = [])))]
pub async fn delete_tenant(
    _: AdminAuth,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    st.services.delete_tenant(&id).await?;
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
        (status = 401, response = problems::Unauthorized),
        (status = 404, response = problems::TenantNotFound),
    ),
    security(("admin_token" = [])))]
pub async fn rotate_secret(
    _: AdminAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let body: Option<RotateBody> = optional_json_body(&req, payload).await?;
    let grace = body.and_then(|b| b.grace_seconds).unwrap_or(0);
    let secret: SecretKey = st.services.rotate_secret(&id, grace).await?;
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
        (status = 401, response = problems::Unauthorized),
    ),
    security(("secret_key" = [])))]
pub async fn get_self(st: web::Data<AppState>, t: TenantAuth) -> ApiResult {
    Ok(json(HttpResponse::Ok(), &TenantOut::of(&st.services, &t.0)))
}

/// What `PATCH /v1/tenant` refuses and `PATCH /v1/tenants/{id}` takes: even `null`, these
/// keys are not in a tenant's own body (its description leaves them out).
pub const ADMIN_ONLY_FIELDS: &[&str] = &["policy", "enabled", "test", "pages_approved"];

#[utoipa::path(patch, path = "/v1/tenant", tag = "self-service",
    description = "Change name, smtp, delivery and default_locale (policy and enabled are the admin's: 400).",
    request_body = PatchTenantBody,
    responses(
        (status = 200, description = "The changed tenant", body = TenantOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 401, response = problems::Unauthorized),
        (status = 422, response = problems::SmtpPolicyRefused),
    ),
    security(("secret_key" = [])))]
pub async fn patch_self(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    let bytes = super::auth::json_bytes(&req, payload).await?;
    let body: PatchTenantBody = super::auth::parse_json(&bytes)?;
    let keys: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(field) = ADMIN_ONLY_FIELDS.iter().find(|f| keys.contains_key(**f)) {
        return Err(ServiceError::field(field, "only the admin can change this").into());
    }
    let (row, _) = st
        .services
        .update_tenant(t.0.id.as_str(), patch_from(body)?, true)
        .await?;
    Ok(json(HttpResponse::Ok(), &TenantOut::of(&st.services, &row)))
}
