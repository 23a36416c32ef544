//! Outcomes claimed once (API.md §17.2): a verified key's or hosted session's outcome,
//! answered the first time, with the PKCE verifier when a challenge was given.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Body, TenantAuth};
use super::dto::{problems, Problem, VerifiedOut};
use super::error::ApiError;
use super::respond::{json, no_store, parse_key};
use super::State;
use crate::domain::keys::CodeApi;

type ApiResult = Result<HttpResponse, ApiError>;

/// A claim's body: the PKCE verifier, when a challenge was given.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// The verifier whose base64url SHA-256 was the `code_challenge` (RFC 7636: 43–128
    /// unreserved characters). Any other string is a wrong verifier: 403 where a challenge
    /// was given (API.md §17.2), unused where none was.
    code_verifier: Option<String>,
}

/// A claimed outcome (API.md §17.2).
#[derive(Serialize, ToSchema)]
pub struct ClaimedOut {
    #[serde(flatten)]
    pub who: VerifiedOut,
    /// `code` or `link`
    pub verified_via: String,
}

/// A claim's verifier, from its optional body.
async fn verifier_of(body: Body) -> Result<Option<String>, ApiError> {
    let body: Option<ClaimBody> = body.optional_json().await?;
    Ok(body.and_then(|b| b.code_verifier))
}

/// A claimed outcome's answer (never cached).
fn claimed(c: crate::service::codes::claims::ClaimedOutcome) -> HttpResponse {
    json(no_store(HttpResponse::Ok()), &ClaimedOut::of(c))
}

impl ClaimedOut {
    pub fn of(c: crate::service::codes::claims::ClaimedOutcome) -> Self {
        ClaimedOut {
            who: VerifiedOut::new(c.recipient, c.channel, &c.purpose, c.verified_at),
            verified_via: c.verified_via.as_str().to_string(),
        }
    }
}

#[utoipa::path(post, path = "/v1/otp/{key}/claim", tag = "codes",
    description = "Who verified this key, answered once (API.md §17.2). With a `code_challenge` given at the mint's link, only with its `code_verifier`; a wrong or missing one answers 403 and spends nothing. `GET /v1/otp/{key}` stops showing the address once claimed.",
    params(("key" = String, Path, description = "Shareable key, `otp_…`")),
    request_body(content = Option<ClaimBody>, description = "Optional"),
    responses(
        (status = 200, description = "The outcome, the first time", body = ClaimedOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 403, description = "code_verifier_mismatch", body = Problem, content_type = "application/problem+json"),
        (status = 404, response = problems::OtpNotFound),
        (status = 409, description = "already_claimed or not_verified", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn claim_code(t: TenantAuth, st: State, key: web::Path<String>, body: Body) -> ApiResult {
    let ctx = super::request_context(&body.req, &st);
    let verifier = verifier_of(body).await?;
    let key = parse_key(&key, CodeApi::Native)?;
    let c = st
        .services
        .codes
        .claim_code(&t.0, &key, verifier.as_deref(), &ctx)
        .await?;
    Ok(claimed(c))
}

#[utoipa::path(post, path = "/v1/tenant/hosted-sessions/{id}/claim", tag = "hosted pages",
    description = "Who verified on this session's pages, answered once (API.md §17.2). With a `code_challenge` given when it was opened, only with its `code_verifier`; a wrong or missing one answers 403 and spends nothing. `GET` of the session stops showing the address once claimed.",
    params(("id" = String, Path, description = "`hs_…`")),
    request_body(content = Option<ClaimBody>, description = "Optional"),
    responses(
        (status = 200, description = "The outcome, the first time", body = ClaimedOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 403, description = "code_verifier_mismatch", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "session_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "already_claimed or not_verified", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn claim_session(
    t: TenantAuth,
    st: State,
    id: web::Path<String>,
    body: Body,
) -> ApiResult {
    let ctx = super::request_context(&body.req, &st);
    let verifier = verifier_of(body).await?;
    let c = st
        .services
        .codes
        .claim_session(&t.0, &id, verifier.as_deref(), &ctx)
        .await?;
    Ok(claimed(c))
}
