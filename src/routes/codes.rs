//! Code routes of `/v1`: mint (with `Idempotency-Key`), resend, verify, status, cancel, and
//! the tenant's audit. Each handler carries its OpenAPI description.

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{bearer, parse_json, Body, Ctx, TenantAuth};
use super::dto::*;
use super::error::ApiError;
use super::idempotent;
use super::respond::{json, no_store, parse_delivery, parse_key, parse_locale};
use super::State;
use crate::clock::rfc3339;
use crate::domain::claim::CodeChallenge;
use crate::domain::delivery::{DeliveryMode, DeliveryStatus};
use crate::domain::email::RecipientEmail;
use crate::domain::keys::CodeApi;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::{PhoneNumber, Recipient, PHONE_RULE};
use crate::service::codes::idempotency::Answer;
use crate::service::codes::links::LinkRequest;
use crate::service::codes::mint::{MintRequest, Minted};
use crate::service::codes::verify::{Caller, VerifyOutcome};
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// The recipient's address (or `phone`, not both).
    email: Option<String>,
    /// A phone number in E.164 form (`+4915112345678`): the code goes as a text message
    /// through the tenant's HTTP transport (API.md §12.3).
    phone: Option<String>,
    purpose: Option<String>,
    locale: Option<String>,
    /// `sync` or `async`; default: the tenant's `delivery`
    delivery: Option<String>,
    /// A magic link beside the code (API.md §14.2), returning to `return_url` (which must
    /// start with one of the tenant's `allowed_return_urls`).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    link: Option<LinkBody>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    return_url: String,
    /// PKCE (API.md §17.2): base64url SHA-256 of a 43–128 character verifier the initiating
    /// browser keeps; the outcome is then claimed once with it (`POST /v1/otp/{key}/claim`).
    code_challenge: Option<String>,
    /// `S256` (the only method)
    #[schema(pattern = "^S256$")]
    code_challenge_method: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    shareable_key: String,
    otp: String,
}

#[utoipa::path(post, path = "/v1/otp", tag = "codes",
    description = "Mint a code, email it through the tenant's SMTP server, return its handle once the server accepted the message. With an `Idempotency-Key` header (1–255 visible ASCII characters, kept 24 h per tenant), a repeat with the same body gets the first 201/202/502 answer again with `Idempotent-Replayed: true`, and nothing is sent or counted.",
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 visible ASCII characters")),
    request_body = MintBody,
    responses(
        (status = 201, description = "Sent (sync delivery): the relay accepted the message", body = MintOut),
        (status = 202, description = "Queued (async delivery): the code and its message are stored; a sender delivers it", body = MintOut),
        (status = 400, description = "invalid_request, invalid_email", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_key_in_use: the first request with this key is still running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unprocessable: the link's return_url is not one of the tenant's allowed ones, or the link goes with a phone; idempotency_key_mismatch: the key was used with another body; recipient_suppressed: the recipient is on the suppression list (nothing sent); channel_not_configured; sms_country_not_allowed, phone_number_not_allowed: the SMS fraud guard refused the number (nothing sent)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited or sms_velocity (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "delivery_failed with `reason` (and `detail_code` where a provider or token endpoint gave one); no code exists that could verify", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded or unavailable (Retry-After); nothing was stored or sent", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn mint(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let key = idempotent::key_of(&body.req)?;
    let ctx = super::request_context(&body.req, &st);
    let bytes = body.json_bytes().await?;
    let b: MintBody = parse_json(&bytes)?;
    // A request that does not parse is answered before a key is claimed (such answers are
    // not kept anyway).
    let m = mint_request(b)?;
    // The work owns the tenant and a handle on the state (no copies on the hot path): with a
    // key it runs on a task of its own.
    let (tenant_id, app) = (t.0.id.clone(), st.clone());
    let work = move |stage| async move {
        let m = MintRequest { stage, ..m };
        let minted = app.services.codes.mint(&t.0, m, &ctx).await?;
        Ok(mint_out(&minted))
    };
    idempotent::once(&st, &tenant_id, key, &bytes, staged_answer, work).await
}

/// A mint's answer as its code's recorded delivery reads, kept for its idempotency key when
/// a stop cut the request after the code was stored (API.md §9, §19.4): 202 `queued` for an
/// async mint; for a sync one 201 `sent` once accepted, `unknown` for the send the stop cut,
/// 202 `queued` for a message given back to the queue; a test mint's stays 201 `test`.
fn staged_answer(m: &Minted) -> Answer {
    let (_, out) = mint_out(m);
    let sync = m.delivery == DeliveryMode::Sync;
    Box::new(move |status| {
        let (code, delivery) = match status {
            _ if out.test => (StatusCode::CREATED, "test"),
            DeliveryStatus::Queued => (StatusCode::ACCEPTED, "queued"),
            _ if !sync => (StatusCode::ACCEPTED, "queued"),
            DeliveryStatus::Sent | DeliveryStatus::Bounced => (StatusCode::CREATED, "sent"),
            _ => (StatusCode::CREATED, "unknown"),
        };
        let out = MintOut {
            delivery: delivery.into(),
            ..out.clone()
        };
        (code.as_u16(), serde_json::to_vec(&out).unwrap_or_default())
    })
}

fn mint_request(b: MintBody) -> Result<MintRequest, ApiError> {
    let to = match (b.email, b.phone) {
        (Some(e), None) => Recipient::Email(RecipientEmail::parse(&e).map_err(ServiceError::from)?),
        (None, Some(p)) => Recipient::Phone(
            PhoneNumber::parse(&p).ok_or_else(|| ServiceError::field("phone", PHONE_RULE))?,
        ),
        (Some(_), Some(_)) => {
            return Err(
                ServiceError::field("phone", "give \"email\" or \"phone\", not both").into(),
            )
        }
        (None, None) => {
            return Err(ServiceError::field(
                "email",
                "is required (or \"phone\" for a text message)",
            )
            .into())
        }
    };
    Ok(MintRequest {
        to,
        purpose: Purpose::parse(b.purpose.as_deref()).map_err(ServiceError::from)?,
        flavor: CodeApi::Native,
        delivery: parse_delivery(b.delivery.as_deref())?,
        locale: parse_locale(b.locale.as_deref(), "locale")?,
        link: b
            .link
            .map(|l| {
                let code_challenge = CodeChallenge::parse_given(
                    l.code_challenge.as_deref(),
                    l.code_challenge_method.as_deref(),
                    "link.code_challenge",
                )
                .map_err(|e| ServiceError::Invalid(vec![e]))?;
                Ok::<_, ApiError>(LinkRequest {
                    return_url: l.return_url,
                    code_challenge,
                })
            })
            .transpose()?,
        stage: None,
    })
}

/// What a mint's or resend's `delivery` says: [`delivery_shown`]'s values.
pub const MINT_DELIVERIES: [&str; 4] = ["sent", "unknown", "queued", "test"];

/// The status and `delivery` of a mint's or resend's answer: 201 `sent` (or `unknown` when
/// the message may have arrived but no answer came: the code is valid, API.md §19.2), 202
/// `queued`, and 201 `test` for a test mint, which went to the test inbox (never `sent`,
/// API.md §18.8).
pub(crate) fn delivery_shown(
    mode: DeliveryMode,
    unknown: bool,
    test: bool,
) -> (StatusCode, &'static str) {
    match (mode, unknown) {
        _ if test => (StatusCode::CREATED, "test"),
        (DeliveryMode::Sync, false) => (StatusCode::CREATED, "sent"),
        (DeliveryMode::Sync, true) => (StatusCode::CREATED, "unknown"),
        (DeliveryMode::Async, _) => (StatusCode::ACCEPTED, "queued"),
    }
}

fn mint_out(m: &Minted) -> (StatusCode, MintOut) {
    let (status, delivery) = delivery_shown(m.delivery, m.outcome_unknown, m.test);
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
            test: m.test,
        },
    )
}

#[utoipa::path(post, path = "/v1/otp/{key}/resend", tag = "codes",
    description = "Email a new code under the same shareable key (API.md §13.3). The key's earlier codes keep verifying until its `expires_at` (unchanged), so a late first message still works; the key's attempts are shared by all its codes. At most `otp.max_resends` per key; the recipient's cooldown and quotas apply as to a mint.",
    params(("key" = String, Path, description = "Shareable key, `otp_…`")),
    request_body(content = Option<NoBody>, description = "None: nothing, null or {}"),
    responses(
        (status = 201, description = "Sent (the key's delivery is sync): the relay accepted the new message", body = ResendOut),
        (status = 202, description = "Queued (async): the new message is stored; a sender delivers it", body = ResendOut),
        (status = 400, description = "invalid_request: the route takes no body (none, null or {})", body = Problem, content_type = "application/problem+json"),
        (status = 404, response = problems::OtpNotFound),
        (status = 409, description = "conflict: the key's last message is still on its way", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "the key is no longer pending: otp_expired, otp_used, otp_superseded, otp_cancelled, otp_failed, attempts_exhausted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "recipient_suppressed: the recipient is on the tenant's suppression list (API.md §16.1); nothing is sent", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "resend_limit_reached, or rate_limited (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "delivery_failed with `reason` (and `detail_code` where one was given); the key's earlier codes still verify", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded or unavailable (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn resend(
    t: TenantAuth,
    st: State,
    ctx: Ctx,
    key: web::Path<String>,
    body: Body,
) -> ApiResult {
    body.none().await?;
    let key = parse_key(&key, CodeApi::Native)?;
    let r = st.services.codes.resend(&t.0, key, &ctx).await?;
    let (status, delivery) = delivery_shown(r.delivery, r.outcome_unknown, r.view.test);
    let v = &r.view;
    Ok(json(
        no_store(HttpResponse::build(status)),
        &ResendOut {
            code: MintOut {
                shareable_key: r.key.expose().to_string(),
                expires_at: rfc3339(v.expires_at),
                // The key's whole life, as its mint answered it: its expiry is its creation
                // plus the lifetime, cut to the whole second below, so rounding up gives the
                // lifetime back exactly.
                ttl_seconds: u32::try_from((v.expires_at - v.created_at + 999) / 1000).unwrap_or(0),
                code_length: v.code_length,
                max_attempts: v.max_attempts,
                delivery: delivery.into(),
                locale: r.locale.as_str().to_string(),
                test: v.test,
            },
            resends: v.resends,
        },
    ))
}

#[utoipa::path(post, path = "/v1/otp/verify", tag = "codes",
    description = "Check a code. At most max_attempts guesses are ever evaluated per key, at most one verify succeeds, and a code never verifies after expires_at.",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "Verified; the code is now used", body = VerifyOut),
        (status = 400, description = "invalid_request: otp is not ASCII digits of the code's length (no attempt used)", body = Problem, content_type = "application/problem+json"),
        (status = 404, response = problems::OtpNotFound),
        (status = 410, description = "otp_expired, otp_used, otp_superseded, otp_cancelled, otp_failed, attempts_exhausted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "otp_mismatch with attempts_remaining", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: the recipient's failure budget is spent", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded (too many verifies being hashed at once), or unavailable (the database did not answer in time); Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn verify(st: State, body: Body) -> ApiResult {
    // The secret key is checked in the store call that reserves the attempt (one trip to
    // the store instead of two); a request refused before that call is authenticated first,
    // so an unauthenticated request is a 401 whatever its body.
    let req = body.req.clone();
    // No key at all: 401 without waiting for the body — after one lookup, as every
    // route's missing header costs, so timing does not tell it apart.
    let Some(secret) = bearer(&req) else {
        st.services.tenants.authenticate("").await?;
        return Err(ServiceError::Unauthorized.into());
    };
    let b: VerifyBody = match body.json().await {
        Ok(b) => b,
        // A body that never came is 408 whoever sent it (API.md §6.21): it tells nothing of
        // any tenant.
        Err(e @ ApiError::RequestTimeout) => return Err(e),
        Err(e) => {
            let tenant = st.services.tenants.authenticate(&secret).await?;
            req.extensions_mut().insert(tenant.id);
            return Err(e);
        }
    };
    let ctx = super::request_context(&req, &st);
    let VerifyOutcome { tenant, result } = st
        .services
        .codes
        .verify(
            Caller::Secret(secret),
            &b.shareable_key,
            &b.otp,
            CodeApi::Native,
            &ctx,
        )
        .await;
    if let Some(id) = tenant {
        req.extensions_mut().insert(id);
    }
    let v = result?;
    Ok(json(
        HttpResponse::Ok(),
        &VerifyOut {
            verified: true,
            who: VerifiedOut::new(v.recipient, v.channel, &v.purpose, v.verified_at),
        },
    ))
}

#[utoipa::path(get, path = "/v1/otp/{key}", tag = "codes",
    description = "A code's state; kept for at least otp.retention_seconds after it ends, then 404.",
    params(("key" = String, Path, description = "Shareable key, `otp_…`")),
    responses(
        (status = 200, description = "The code's state", body = StatusOut),
        (status = 404, response = problems::OtpNotFound),
    ),
    security(("secret_key" = [])))]
pub async fn otp_status(t: TenantAuth, st: State, key: web::Path<String>) -> ApiResult {
    let key = parse_key(&key, CodeApi::Native)?;
    let v = st
        .services
        .codes
        .otp_status(&t.0.id, &key, CodeApi::Native)
        .await?;
    Ok(json(
        no_store(HttpResponse::Ok()),
        &StatusOut::new(&v, st.services.core.now()),
    ))
}

#[utoipa::path(delete, path = "/v1/otp/{key}", tag = "codes",
    description = "Cancel a pending code.",
    params(("key" = String, Path, description = "Shareable key")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 404, response = problems::OtpNotFound),
        (status = 410, description = "the code had already ended (its state's code)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn otp_cancel(t: TenantAuth, st: State, ctx: Ctx, key: web::Path<String>) -> ApiResult {
    let key = parse_key(&key, CodeApi::Native)?;
    st.services
        .codes
        .cancel(
            &t.0.id,
            Some(&t.0.webhook_events),
            &key,
            CodeApi::Native,
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
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Only the events after this one, newest first: the previous page's `next_before`
    /// (ids are this tenant's own numbers, in no order; a number that names no event is
    /// refused)
    #[param(value_type = Option<i64>, minimum = 0)]
    before: Option<String>,
}

#[utoipa::path(get, path = "/v1/tenant/audit", tag = "self-service",
    description = "The calling tenant's own events (mint, verify, cancel), newest first.",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events", body = AuditPageOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 422, response = problems::Unprocessable),
    ),
    security(("secret_key" = [])))]
pub async fn audit(t: TenantAuth, st: State, q: web::Query<AuditQuery>) -> ApiResult {
    // Parsed here, so that a refusal names its parameter in words.
    let limit = match q.limit.as_deref().map(str::parse::<u32>) {
        None => 50,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Err(ServiceError::field("limit", "must be between 1 and 200").into())
        }
    };
    let before = match q.before.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) if n >= 0 => Some(n),
        Some(_) => {
            return Err(
                ServiceError::field("before", crate::service::core::audit::BEFORE_RULE).into(),
            )
        }
    };
    let (events, more) = st.services.core.audit_page(&t.0.id, before, limit).await?;
    let next_before = more.then(|| events.last().map(|e| e.id)).flatten();
    Ok(json(
        HttpResponse::Ok(),
        &AuditPageOut {
            events: events.iter().map(AuditEventOut::from).collect(),
            next_before,
        },
    ))
}
