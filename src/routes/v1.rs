//! The native `/v1` API: parse → one service call → shape the response. Each handler carries
//! its OpenAPI description (routes/openapi.rs collects them).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{
    is_admin, json_body, json_bytes, optional_json_body, parse_json, AdminAuth, TenantAuth,
};
use super::dto::*;
use super::error::ApiError;
use super::AppState;
use crate::clock::rfc3339;
use crate::config::RegistrationMode;
use crate::domain::delivery::DeliveryMode;
use crate::domain::email::RecipientEmail;
use crate::domain::keys::{Flavor, SecretKey};
use crate::domain::locale::{Locale, LOCALE_RULE};
use crate::domain::policy::PolicyPatch;
use crate::mailer::TlsMode;
use crate::service::idempotency::{fingerprint, kept, valid_key, IdemStart};
use crate::service::otp::{MintRequest, Minted, Purpose};
use crate::service::tenants::{NewTenant, SmtpInput, SmtpPatch, TenantPatch};
use crate::service::ServiceError;
use crate::storage::TenantRow;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpBody {
    host: String,
    port: u16,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    from: String,
    tls: Option<String>,
    /// 1 to `smtp.max_connections_limit`; default `smtp.max_connections_per_tenant`
    max_connections: Option<u32>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    code_length: Option<u32>,
    ttl_seconds: Option<u32>,
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
    smtp: SmtpBody,
    policy: Option<PolicyBody>,
    /// `sync` (default) or `async`
    delivery: Option<String>,
    /// The locale messages fall back to (default `en`)
    default_locale: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpPatchBody {
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
    tls: Option<String>,
    max_connections: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantBody {
    name: Option<String>,
    smtp: Option<SmtpPatchBody>,
    policy: Option<PolicyBody>,
    enabled: Option<bool>,
    /// `sync` or `async`
    delivery: Option<String>,
    /// The locale messages fall back to, e.g. `de`
    default_locale: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    grace_seconds: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    email: String,
    purpose: Option<String>,
    locale: Option<String>,
    /// `sync` or `async`; default: the tenant's `delivery`
    delivery: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    shareable_key: String,
    otp: String,
}

fn parse_tls(s: Option<&str>) -> Result<Option<TlsMode>, ApiError> {
    match s {
        None => Ok(None),
        Some(t) => TlsMode::parse(t).map(Some).ok_or_else(|| {
            ServiceError::field("smtp.tls", "must be \"starttls\", \"implicit\" or \"none\"").into()
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

fn parse_delivery(s: Option<&str>) -> Result<Option<DeliveryMode>, ApiError> {
    match s {
        None => Ok(None),
        Some(d) => DeliveryMode::parse(d)
            .map(Some)
            .ok_or_else(|| ServiceError::field("delivery", "must be \"sync\" or \"async\"").into()),
    }
}

/// The tenant as JSON (also used by the CLI).
pub fn tenant_json(t: &TenantRow) -> Value {
    serde_json::to_value(TenantOut::from(t)).unwrap_or(Value::Null)
}

/// A JSON answer with the charset the contract names.
pub(super) fn json<T: Serialize>(mut b: actix_web::HttpResponseBuilder, v: &T) -> HttpResponse {
    b.content_type("application/json; charset=utf-8")
        .body(serde_json::to_string(v).unwrap_or_default())
}

fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    description = "Register a tenant. Needs the admin token unless `registration.mode = \"open\"`; `closed` answers 403.",
    request_body = CreateTenantBody,
    responses(
        (status = 201, description = "Created; the secret key is shown once", body = TenantCreatedOut),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "registration_closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "smtp_host_not_allowed, smtp_port_not_allowed, smtp_plaintext_not_allowed, smtp_host_unresolvable", body = Problem, content_type = "application/problem+json"),
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
    let tls = parse_tls(b.smtp.tls.as_deref())?;
    let delivery = parse_delivery(b.delivery.as_deref())?;
    let default_locale = parse_locale(b.default_locale.as_deref(), "default_locale")?;
    let (row, secret) = st
        .services
        .create_tenant(NewTenant {
            name: b.name,
            smtp: SmtpInput {
                host: b.smtp.host,
                port: b.smtp.port,
                username: b.smtp.username,
                password: SecretString::from(b.smtp.password),
                from: b.smtp.from,
                tls,
                max_connections: b.smtp.max_connections,
            },
            policy: b.policy.unwrap_or_default().into(),
            delivery,
            default_locale,
            origin: "native",
            secret: None,
        })
        .await?;
    tracing::info!(tenant_id = %row.id, "tenant created");
    Ok(json(
        no_store(HttpResponse::Created()),
        &TenantCreatedOut {
            tenant: TenantOut::from(&row),
            secret_key: secret.expose().to_string(),
        },
    ))
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "All tenants", body = TenantListOut),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = [])))]
pub async fn list_tenants(_: AdminAuth, st: web::Data<AppState>) -> ApiResult {
    let list = st.services.tenants().await?;
    Ok(json(
        HttpResponse::Ok(),
        &TenantListOut {
            tenants: list.iter().map(TenantOut::from).collect(),
        },
    ))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id, `tnt_…`")),
    responses(
        (status = 200, description = "The tenant", body = TenantOut),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "tenant_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = [])))]
pub async fn get_tenant(_: AdminAuth, st: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    Ok(json(
        HttpResponse::Ok(),
        &TenantOut::from(&st.services.tenant(&id).await?),
    ))
}

fn patch_from(b: PatchTenantBody) -> Result<TenantPatch, ApiError> {
    let smtp = match b.smtp {
        None => None,
        Some(s) => Some(SmtpPatch {
            tls: parse_tls(s.tls.as_deref())?,
            host: s.host,
            port: s.port,
            username: s.username,
            password: s.password.map(SecretString::from),
            from: s.from,
            max_connections: s.max_connections,
        }),
    };
    Ok(TenantPatch {
        name: b.name,
        enabled: b.enabled,
        smtp,
        policy: b.policy.map(Into::into),
        delivery: parse_delivery(b.delivery.as_deref())?,
        default_locale: parse_locale(b.default_locale.as_deref(), "default_locale")?,
    })
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants",
    description = "Change any of name, smtp (partial), policy (partial), enabled. A change of SMTP host, port or username must carry the password again.",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = PatchTenantBody,
    responses(
        (status = 200, description = "The changed tenant", body = TenantOut),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "tenant_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "smtp_* policy refusal", body = Problem, content_type = "application/problem+json"),
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
    let row = st
        .services
        .update_tenant(&id, patch_from(body)?, false)
        .await?;
    Ok(json(HttpResponse::Ok(), &TenantOut::from(&row)))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants",
    description = "Delete a tenant; its codes stop verifying.",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "tenant_not_found", body = Problem, content_type = "application/problem+json"),
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
    request_body(content = RotateBody, description = "Optional"),
    responses(
        (status = 200, description = "The new secret key, shown once", body = SecretOut),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "tenant_not_found", body = Problem, content_type = "application/problem+json"),
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
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn get_self(t: TenantAuth) -> ApiResult {
    Ok(json(HttpResponse::Ok(), &TenantOut::from(&t.0)))
}

#[utoipa::path(patch, path = "/v1/tenant", tag = "self-service",
    description = "Change name, smtp, delivery and default_locale (policy and enabled are the admin's: 400).",
    request_body = PatchTenantBody,
    responses(
        (status = 200, description = "The changed tenant", body = TenantOut),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "smtp_* policy refusal", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn patch_self(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    let body: PatchTenantBody = json_body(&req, payload).await?;
    let row = st
        .services
        .update_tenant(t.0.id.as_str(), patch_from(body)?, true)
        .await?;
    Ok(json(HttpResponse::Ok(), &TenantOut::from(&row)))
}

#[utoipa::path(post, path = "/v1/otp", tag = "codes",
    description = "Mint a code, email it through the tenant's SMTP server, return its handle once the server accepted the message. With an `Idempotency-Key` header (1–255 visible ASCII characters, kept 24 h per tenant), a repeat with the same body gets the first 201/202/502 answer again with `Idempotent-Replayed: true`, and nothing is sent or counted.",
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters")),
    request_body = MintBody,
    responses(
        (status = 201, description = "Sent (sync delivery): the relay accepted the message", body = MintOut),
        (status = 202, description = "Queued (async delivery): the code and its message are stored; a sender delivers it", body = MintOut),
        (status = 400, description = "invalid_request, invalid_email", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_key_in_use: the first request with this key is still running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_mismatch: the key was used with another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "delivery_failed with reason; no code exists that could verify", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded or unavailable (Retry-After); nothing was stored or sent", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn mint(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    let mut keys = req.headers().get_all(IDEMPOTENCY_KEY);
    let idem_key = match (keys.next(), keys.next()) {
        (None, _) => None,
        (Some(v), None) => match v.to_str() {
            Ok(k) if valid_key(k) => Some(k.to_string()),
            _ => return Err(bad_idempotency_key()),
        },
        (Some(_), Some(_)) => return Err(bad_idempotency_key()),
    };
    let bytes = json_bytes(&req, payload).await?;
    let b: MintBody = parse_json(&bytes)?;
    // A request that does not parse is answered before a key is claimed (such answers are
    // not kept anyway).
    let m = mint_request(b)?;
    let ctx = super::request_context(&req, &st);
    let Some(key) = idem_key else {
        let minted = st.services.mint(&t.0, m, &ctx).await?;
        let (status, out) = mint_out(&minted);
        return Ok(json(no_store(HttpResponse::build(status)), &out));
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let ticket = match st
        .services
        .idem_begin(&t.0.id, &key, fingerprint(&value))
        .await?
    {
        IdemStart::Replay { status, body } => return Ok(answer(status, body.into(), true)),
        IdemStart::Proceed(ticket) => ticket,
    };
    // The mint and the record of its answer run on a task of their own: a client that goes
    // away mid-mint cannot leave the key claimed with a message sent and no answer kept.
    let services = st.services.clone();
    let tenant = t.0.clone();
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let (status, body, err) = match services.mint(&tenant, m, &ctx).await {
                Ok(minted) => {
                    let (status, out) = mint_out(&minted);
                    let body = serde_json::to_vec(&out).unwrap_or_default();
                    (status.as_u16(), web::Bytes::from(body), None)
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    let resp = actix_web::ResponseError::error_response(&e);
                    let status = resp.status().as_u16();
                    let body = actix_web::body::MessageBody::try_into_bytes(resp.into_body())
                        .unwrap_or_default();
                    (status, body, Some(e))
                }
            };
            services.idem_end(ticket, status, &body).await;
            (status, body, err)
        },
        span,
    ));
    let (status, body, err) = task
        .await
        .map_err(|e| ServiceError::Internal(format!("mint task failed: {e}")))?;
    match err {
        // Not kept: the error as it is (with its own headers, e.g. Retry-After).
        Some(e) if !kept(status) => Err(e),
        _ => Ok(answer(status, body, false)),
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn bad_idempotency_key() -> ApiError {
    ServiceError::field(
        "Idempotency-Key",
        "must be one header of 1 to 255 visible ASCII characters",
    )
    .into()
}

/// A kept answer (first time or again).
fn answer(status: u16, body: web::Bytes, replayed: bool) -> HttpResponse {
    let status =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    let content_type = if status.is_success() {
        "application/json; charset=utf-8"
    } else {
        "application/problem+json"
    };
    let mut b = HttpResponse::build(status);
    b.content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if replayed {
        b.insert_header(("Idempotent-Replayed", "true"));
    }
    b.body(body)
}

fn mint_request(b: MintBody) -> Result<MintRequest, ApiError> {
    let email =
        RecipientEmail::parse(&b.email).map_err(|e| ServiceError::InvalidEmail(e.to_string()))?;
    Ok(MintRequest {
        email,
        purpose: Purpose::parse(b.purpose.as_deref())?,
        flavor: Flavor::Native,
        delivery: parse_delivery(b.delivery.as_deref())?,
        locale: parse_locale(b.locale.as_deref(), "locale")?,
    })
}

fn mint_out(m: &Minted) -> (actix_web::http::StatusCode, MintOut) {
    let (status, delivery) = match m.delivery {
        DeliveryMode::Sync => (actix_web::http::StatusCode::CREATED, "sent"),
        DeliveryMode::Async => (actix_web::http::StatusCode::ACCEPTED, "queued"),
    };
    (
        status,
        MintOut {
            shareable_key: m.key.expose().to_string(),
            expires_at: rfc3339(m.expires_at),
            ttl_seconds: m.policy.ttl_seconds,
            code_length: m.policy.code_length,
            max_attempts: m.policy.max_attempts,
            delivery: delivery.into(),
            locale: m.locale.as_str().to_string(),
        },
    )
}

#[utoipa::path(post, path = "/v1/otp/verify", tag = "codes",
    description = "Check a code. At most max_attempts guesses are ever evaluated per key, at most one verify succeeds, and a code never verifies after expires_at.",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "Verified; the code is now used", body = VerifyOut),
        (status = 400, description = "invalid_request: otp is not ASCII digits of the code's length (no attempt used)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "otp_not_found: unknown, malformed, another tenant's or purged key", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "otp_expired, otp_used, otp_superseded, otp_cancelled, otp_failed, attempts_exhausted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "otp_mismatch with attempts_remaining", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: the recipient's failure budget is spent", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn verify(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    let b: VerifyBody = json_body(&req, payload).await?;
    let ctx = super::request_context(&req, &st);
    let v = st
        .services
        .verify(
            &t.0.id,
            Some(&t.0.webhook_events),
            &b.shareable_key,
            &b.otp,
            Flavor::Native,
            &ctx,
        )
        .await?;
    Ok(json(
        HttpResponse::Ok(),
        &VerifyOut {
            verified: true,
            email: v.email,
            purpose: v.purpose,
            verified_at: rfc3339(v.verified_at),
        },
    ))
}

#[utoipa::path(get, path = "/v1/otp/{key}", tag = "codes",
    description = "A code's state; kept for at least otp.retention_seconds after it ends, then 404.",
    params(("key" = String, Path, description = "Shareable key, `otp_…`")),
    responses(
        (status = 200, description = "The code's state", body = StatusOut),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "otp_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn otp_status(
    t: TenantAuth,
    st: web::Data<AppState>,
    key: web::Path<String>,
) -> ApiResult {
    let v = st
        .services
        .otp_status(&t.0.id, &key, Flavor::Native)
        .await?;
    Ok(json(
        HttpResponse::Ok(),
        &StatusOut::new(&v, st.services.now()),
    ))
}

#[utoipa::path(delete, path = "/v1/otp/{key}", tag = "codes",
    description = "Cancel a pending code.",
    params(("key" = String, Path, description = "Shareable key")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "otp_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "the code had already ended (its state's code)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn otp_cancel(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    key: web::Path<String>,
) -> ApiResult {
    let ctx = super::request_context(&req, &st);
    st.services
        .cancel(
            &t.0.id,
            Some(&t.0.webhook_events),
            &key,
            Flavor::Native,
            &ctx,
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1–200, default 50
    limit: Option<u32>,
    /// Only events with a smaller id (the previous page's `next_before`)
    before: Option<i64>,
}

#[utoipa::path(get, path = "/v1/tenant/audit", tag = "self-service",
    description = "The calling tenant's own events (mint, verify, cancel), newest first.",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events", body = AuditPageOut),
        (status = 400, description = "invalid_request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn audit(t: TenantAuth, st: web::Data<AppState>, q: web::Query<AuditQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ServiceError::field("limit", "must be between 1 and 200").into());
    }
    let before = q.before;
    let tid = t.0.id.clone();
    st.services.audit.flush().await;
    let events = st
        .services
        .db(move |s| s.audit_page(&tid, before, limit))
        .await?;
    let next_before = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(json(
        HttpResponse::Ok(),
        &AuditPageOut {
            events: events.iter().map(AuditEventOut::from).collect(),
            next_before,
        },
    ))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = HealthOut)))]
pub async fn healthz() -> HttpResponse {
    json(
        HttpResponse::Ok(),
        &HealthOut {
            status: "ok".into(),
        },
    )
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = HealthOut),
        (status = 503, description = "The database does not answer", body = HealthOut),
    ))]
pub async fn readyz(st: web::Data<AppState>) -> HttpResponse {
    // Ready means writes succeed: a read can answer while the database is locked or full.
    let probe = st.services.db(|s| {
        s.ping()?;
        s.write_probe()
    });
    let result = match tokio::time::timeout(std::time::Duration::from_secs(3), probe).await {
        Ok(r) => r,
        Err(_) => Err(ServiceError::Unavailable(
            "no write completed within 3 s".into(),
        )),
    };
    match result {
        Ok(()) => json(
            HttpResponse::Ok(),
            &HealthOut {
                status: "ready".into(),
            },
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            json(
                HttpResponse::ServiceUnavailable(),
                &HealthOut {
                    status: "unavailable".into(),
                },
            )
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    description = "Prometheus text format. Needs metrics.token as a bearer token when one is set.",
    responses(
        (status = 200, description = "Metrics", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ),
    security(("metrics_token" = []), ()))]
pub async fn metrics(req: HttpRequest, st: web::Data<AppState>) -> ApiResult {
    let settings = st.services.settings.load();
    let token = secrecy::ExposeSecret::expose_secret(&settings.metrics.token);
    if !token.is_empty() {
        let ok = super::auth::bearer(&req)
            .is_some_and(|t| crate::crypto::secrets_equal(t.as_bytes(), token.as_bytes()));
        if !ok {
            return Err(ServiceError::Unauthorized.into());
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(
            st.services.hasher.queue_depth(),
            st.services.outbox_stats().await.ok(),
        )))
}

/// The OpenAPI 3.1 description of this API.
pub async fn openapi() -> HttpResponse {
    json(HttpResponse::Ok(), &super::openapi::document())
}
