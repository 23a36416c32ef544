//! Bounce and complaint events from a tenant's email provider (API.md §16.2):
//! `POST /v1/events/{provider}/{tenant_id}`, verified the way that provider signs.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Body;
use super::dto::Problem;
use super::error::ApiError;
use super::respond::json;
use super::State;
use crate::domain::provider_event::BODY_MAX;

#[derive(Serialize, ToSchema)]
pub struct EventsOut {
    /// Events in the request.
    pub received: usize,
    /// Hard bounces and complaints applied now (duplicates and soft bounces change nothing).
    pub applied: usize,
}

#[utoipa::path(post, path = "/v1/events/{provider}/{tenant_id}", tag = "deliverability",
    description = "Bounce and complaint events from the tenant's email provider, verified the way that provider signs them: Resend (Standard Webhooks with `events_secret`), SendGrid (ECDSA with `events_public_key`), Mailgun (HMAC with `events_secret`), Postmark (HTTP Basic with `events_username`/`events_password`), SES through SNS (the message signature; the certificate only from SNS hosts; a subscription confirmation followed once). A hard bounce or complaint suppresses the recipient, marks its code's delivery `bounced`, counts in the statistics and raises `otp.bounced`/`otp.complained`. At most 1 MiB.",
    params(
        ("provider" = String, Path, description = "postmark, resend, sendgrid, mailgun or ses"),
        ("tenant_id" = String, Path, description = "The tenant's id"),
    ),
    request_body(content = String, description = "The provider's event body as it sends it", content_type = "application/json"),
    responses(
        (status = 200, description = "Accepted (a soft bounce or a duplicate included)", body = EventsOut),
        (status = 400, description = "invalid_request: verified, but not a body of this provider", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "event_unverified: the signature or credentials did not verify; nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "tenant_not_found: no such tenant; or provider_not_found: the path names no provider events are received from", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large: over 1 MiB", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn receive(
    st: State,
    path: web::Path<(String, String)>,
    body: Body,
) -> Result<HttpResponse, ApiError> {
    let (provider, tenant) = path.into_inner();
    let ctx = super::request_context(&body.req, &st);
    let headers = body.req.headers().clone();
    let body = body.bytes_up_to(BODY_MAX).await?;
    let header = move |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let done = st
        .services
        .events
        .receive_provider_events(&provider, &tenant, &header, &body, &ctx)
        .await?;
    Ok(json(
        HttpResponse::Ok(),
        &EventsOut {
            received: done.received,
            applied: done.applied,
        },
    ))
}
