//! The native `/v1` API: parse → one service call → shape the response.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{is_admin, json_body, optional_json_body, AdminAuth, TenantAuth};
use super::error::ApiError;
use super::AppState;
use crate::clock::rfc3339;
use crate::config::RegistrationMode;
use crate::domain::challenge::ChallengeView;
use crate::domain::email::RecipientEmail;
use crate::domain::keys::{Flavor, SecretKey};
use crate::domain::policy::PolicyPatch;
use crate::mailer::TlsMode;
use crate::service::otp::Purpose;
use crate::service::tenants::{NewTenant, SmtpInput, SmtpPatch, TenantPatch};
use crate::service::ServiceError;
use crate::storage::TenantRow;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize)]
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
}

#[derive(Deserialize, Default)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    name: String,
    smtp: SmtpBody,
    policy: Option<PolicyBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpPatchBody {
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    from: Option<String>,
    tls: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantBody {
    name: Option<String>,
    smtp: Option<SmtpPatchBody>,
    policy: Option<PolicyBody>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    grace_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    email: String,
    purpose: Option<String>,
    locale: Option<String>,
}

#[derive(Deserialize)]
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

pub fn tenant_json(t: &TenantRow) -> Value {
    json!({
        "id": t.id.as_str(),
        "name": t.name,
        "enabled": t.enabled,
        "created_at": rfc3339(t.created_at),
        "smtp": {
            "host": t.smtp.host,
            "port": t.smtp.port,
            "username": t.smtp.username,
            "from": t.smtp.from,
            "tls": t.smtp.tls,
        },
        "policy": {
            "code_length": t.policy.code_length,
            "ttl_seconds": t.policy.ttl_seconds,
            "max_attempts": t.policy.max_attempts,
        },
    })
}

/// A JSON answer with the charset the contract names.
fn json(mut b: actix_web::HttpResponseBuilder, v: Value) -> HttpResponse {
    b.content_type("application/json; charset=utf-8")
        .body(v.to_string())
}

fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

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
            },
            policy: b.policy.unwrap_or_default().into(),
            origin: "native",
            secret: None,
        })
        .await?;
    tracing::info!(tenant_id = %row.id, "tenant created");
    let mut v = tenant_json(&row);
    v["secret_key"] = json!(secret.expose());
    Ok(json(no_store(HttpResponse::Created()), v))
}

pub async fn list_tenants(_: AdminAuth, st: web::Data<AppState>) -> ApiResult {
    let list = st.services.tenants().await?;
    Ok(json(
        HttpResponse::Ok(),
        json!({"tenants": list.iter().map(tenant_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get_tenant(_: AdminAuth, st: web::Data<AppState>, id: web::Path<String>) -> ApiResult {
    Ok(json(
        HttpResponse::Ok(),
        tenant_json(&st.services.tenant(&id).await?),
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
        }),
    };
    Ok(TenantPatch {
        name: b.name,
        enabled: b.enabled,
        smtp,
        policy: b.policy.map(Into::into),
    })
}

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
    Ok(json(HttpResponse::Ok(), tenant_json(&row)))
}

pub async fn delete_tenant(
    _: AdminAuth,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult {
    st.services.delete_tenant(&id).await?;
    tracing::info!(tenant_id = %id, "tenant deleted");
    Ok(HttpResponse::NoContent().finish())
}

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
        json!({"secret_key": secret.expose()}),
    ))
}

pub async fn get_self(t: TenantAuth) -> ApiResult {
    Ok(json(HttpResponse::Ok(), tenant_json(&t.0)))
}

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
    Ok(json(HttpResponse::Ok(), tenant_json(&row)))
}

pub async fn mint(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    let b: MintBody = json_body(&req, payload).await?;
    let email =
        RecipientEmail::parse(&b.email).map_err(|e| ServiceError::InvalidEmail(e.to_string()))?;
    let purpose = Purpose::parse(b.purpose.as_deref())?;
    if let Some(l) = &b.locale {
        if l.is_empty()
            || l.len() > 35
            || !l
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(ServiceError::field(
                "locale",
                "must be a language tag like \"en\" or \"pt-BR\"",
            )
            .into());
        }
    }
    let ctx = super::request_context(&req, &st);
    let m = st
        .services
        .mint(&t.0, email, purpose, Flavor::Native, &ctx)
        .await?;
    Ok(json(
        no_store(HttpResponse::Created()),
        json!({
            "shareable_key": m.key.expose(),
            "expires_at": rfc3339(m.expires_at),
            "ttl_seconds": m.policy.ttl_seconds,
            "code_length": m.policy.code_length,
            "max_attempts": m.policy.max_attempts,
        }),
    ))
}

pub async fn verify(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    let b: VerifyBody = json_body(&req, payload).await?;
    let v = st
        .services
        .verify(
            &t.0.id,
            &b.shareable_key,
            &b.otp,
            Flavor::Native,
            &super::request_context(&req, &st),
        )
        .await?;
    Ok(json(
        HttpResponse::Ok(),
        json!({
            "verified": true,
            "email": v.email,
            "purpose": v.purpose,
            "verified_at": rfc3339(v.verified_at),
        }),
    ))
}

fn status_json(v: &ChallengeView, now: i64) -> Value {
    json!({
        "status": v.status_at(now).as_str(),
        "purpose": v.purpose,
        "created_at": rfc3339(v.created_at),
        "expires_at": rfc3339(v.expires_at),
        "attempts_used": v.attempts,
        "attempts_remaining": v.attempts_remaining(),
        "verified_at": v.verified_at.map(rfc3339),
    })
}

pub async fn otp_status(
    t: TenantAuth,
    st: web::Data<AppState>,
    key: web::Path<String>,
) -> ApiResult {
    let v = st
        .services
        .otp_status(&t.0.id, &key, Flavor::Native)
        .await?;
    Ok(json(HttpResponse::Ok(), status_json(&v, st.services.now())))
}

pub async fn otp_cancel(
    t: TenantAuth,
    req: HttpRequest,
    st: web::Data<AppState>,
    key: web::Path<String>,
) -> ApiResult {
    let ctx = super::request_context(&req, &st);
    st.services
        .cancel(&t.0.id, &key, Flavor::Native, &ctx)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn healthz() -> HttpResponse {
    json(HttpResponse::Ok(), json!({"status": "ok"}))
}

pub async fn readyz(st: web::Data<AppState>) -> HttpResponse {
    match st.services.db(|s| s.ping()).await {
        Ok(()) => json(HttpResponse::Ok(), json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            json(
                HttpResponse::ServiceUnavailable(),
                json!({"status": "unavailable"}),
            )
        }
    }
}

/// Prometheus text format; needs `metrics.token` as a bearer token when one is set.
pub async fn metrics(req: HttpRequest, st: web::Data<AppState>) -> ApiResult {
    use secrecy::ExposeSecret;
    let settings = st.services.settings.load();
    let token = settings.metrics.token.expose_secret();
    if !token.is_empty() {
        let ok = super::auth::bearer(&req)
            .is_some_and(|t| crate::crypto::secrets_equal(t.as_bytes(), token.as_bytes()));
        if !ok {
            return Err(ServiceError::Unauthorized.into());
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(st.services.hasher.queue_depth())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

/// The tenant's own audit events, newest first; page with `before` = the last `id` seen.
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
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(json(
        HttpResponse::Ok(),
        json!({
            "events": events.iter().map(|e| json!({
                "id": e.id,
                "at": rfc3339(e.at),
                "event": e.event,
                "recipient": e.recipient,
                "outcome": e.outcome,
                "client_ip": e.client_ip,
                "request_id": e.request_id,
            })).collect::<Vec<_>>(),
            "next_before": next,
        }),
    ))
}
