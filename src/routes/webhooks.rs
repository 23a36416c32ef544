//! Webhook routes (API.md §9) for the tenant itself, with its secret key.

use actix_web::http::header;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Body, TenantAuth};
use super::dto::{problems, NoBody, Problem};
use super::error::ApiError;
use super::respond::json;
use super::State;
use crate::clock::rfc3339;
use crate::domain::webhook::WebhookAttempt;
use crate::service::events::webhooks::{WebhookInput, WebhookShown};

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// `https://…` (`http://` only with `webhooks.allow_plaintext`); the host passes the
    /// address policy now and at every send.
    url: String,
    /// Any of `otp.sent`, `otp.delivery_failed`, `otp.verified`, `otp.attempts_exhausted`,
    /// `otp.cancelled`, `otp.blocked`, `otp.bounced`, `otp.complained`,
    /// `test_recipient.disabled`.
    events: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_…`: shown when the webhook is created and on rotation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Set (RFC 3339) when the endpoint answered 410 Gone: no events are sent until the
    /// webhook is stored again with `PUT`.
    pub disabled_at: Option<String>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
}

impl From<WebhookShown> for WebhookOut {
    fn from(w: WebhookShown) -> Self {
        WebhookOut {
            url: w.row.url,
            events: w
                .row
                .events
                .iter()
                .map(|e| e.as_str().to_string())
                .collect(),
            secret: w.secret,
            created_at: rfc3339(w.row.created_at),
            updated_at: rfc3339(w.row.updated_at),
            disabled_at: w.row.disabled.as_ref().map(|d| rfc3339(d.at)),
            disabled_reason: w.row.disabled.map(|d| d.reason),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TestEventOut {
    /// The `webhook-id` the event is delivered with.
    pub event_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAttemptOut {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The endpoint's status code, when it answered.
    pub status_code: Option<u16>,
    /// Why there was no answer: `timeout`, `connect`, `unresolvable`, `tls`,
    /// `host_not_allowed`, `request`, `malformed`, `no_endpoint`, `unreadable`, `interrupted`
    /// (the process stopped with the request under way).
    pub error: Option<String>,
    pub at: String,
}

impl From<&WebhookAttempt> for WebhookAttemptOut {
    fn from(d: &WebhookAttempt) -> Self {
        WebhookAttemptOut {
            event_id: d.event_id.clone(),
            kind: d.kind.as_str().to_string(),
            attempt: d.attempt,
            status_code: d.status_code,
            error: d.error.clone(),
            at: rfc3339(d.at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveriesOut {
    /// The last 100 attempts, newest first.
    pub deliveries: Vec<WebhookAttemptOut>,
}

fn shown(w: WebhookShown) -> HttpResponse {
    let mut b = HttpResponse::Ok();
    if w.secret.is_some() {
        b.insert_header((header::CACHE_CONTROL, "no-store"));
    }
    json(b, &WebhookOut::from(w))
}

#[utoipa::path(put, path = "/v1/tenant/webhook", tag = "webhooks",
    description = "Create or replace the tenant's webhook. A new webhook's secret is in this answer only; a replacement keeps the secret.",
    request_body = WebhookBody,
    responses(
        (status = 200, description = "The webhook (with `secret` when it was created)", body = WebhookOut),
        (status = 400, description = "invalid_request (malformed URL, unknown event type)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "webhook_host_not_allowed, webhook_plaintext_not_allowed, webhook_host_unresolvable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn put_webhook(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let b: WebhookBody = body.json().await?;
    let w = st
        .services
        .events
        .put_webhook(
            &t.0,
            WebhookInput {
                url: b.url,
                events: b.events,
            },
        )
        .await?;
    Ok(shown(w))
}

#[utoipa::path(get, path = "/v1/tenant/webhook", tag = "webhooks",
    responses(
        (status = 200, description = "The webhook, without its secret", body = WebhookOut),
        (status = 404, response = problems::WebhookNotFound),
    ),
    security(("secret_key" = [])))]
pub async fn get_webhook(t: TenantAuth, st: State) -> ApiResult {
    let row = st.services.events.webhook(&t.0.id).await?;
    Ok(shown(WebhookShown { row, secret: None }))
}

#[utoipa::path(delete, path = "/v1/tenant/webhook", tag = "webhooks",
    description = "Remove the webhook; its undelivered events are dropped.",
    responses(
        (status = 204, description = "Removed"),
        (status = 404, response = problems::WebhookNotFound),
    ),
    security(("secret_key" = [])))]
pub async fn delete_webhook(t: TenantAuth, st: State) -> ApiResult {
    st.services.events.delete_webhook(&t.0.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/tenant/webhook/rotate-secret", tag = "webhooks",
    description = "A new signing secret, shown once; the old one stops at once.",
    request_body(content = Option<NoBody>, description = "None: nothing, null or {}"),
    responses(
        (status = 200, description = "The webhook with its new secret", body = WebhookOut),
        (status = 400, description = "invalid_request: the route takes no body (none, null or {})", body = Problem, content_type = "application/problem+json"),
        (status = 404, response = problems::WebhookNotFound),
    ),
    security(("secret_key" = [])))]
pub async fn rotate_webhook_secret(t: TenantAuth, st: State, body: Body) -> ApiResult {
    body.none().await?;
    Ok(shown(
        st.services.events.rotate_webhook_secret(&t.0.id).await?,
    ))
}

#[utoipa::path(post, path = "/v1/tenant/webhook/test", tag = "webhooks",
    description = "Queue a `webhook.test` event; its attempts show in the deliveries.",
    request_body(content = Option<NoBody>, description = "None: nothing, null or {}"),
    responses(
        (status = 202, description = "Queued", body = TestEventOut),
        (status = 400, description = "invalid_request: the route takes no body (none, null or {})", body = Problem, content_type = "application/problem+json"),
        (status = 404, response = problems::WebhookNotFound),
        (status = 409, description = "conflict: the webhook is disabled since its endpoint answered 410 (PUT it again)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn test_webhook(t: TenantAuth, st: State, body: Body) -> ApiResult {
    body.none().await?;
    let event_id = st.services.events.test_webhook(&t.0.id).await?;
    Ok(json(HttpResponse::Accepted(), &TestEventOut { event_id }))
}

#[utoipa::path(get, path = "/v1/tenant/webhook/deliveries", tag = "webhooks",
    responses(
        (status = 200, description = "The last 100 attempts, newest first", body = DeliveriesOut),
    ),
    security(("secret_key" = [])))]
pub async fn webhook_deliveries(t: TenantAuth, st: State) -> ApiResult {
    let rows = st.services.events.webhook_deliveries(&t.0.id).await?;
    Ok(json(
        HttpResponse::Ok(),
        &DeliveriesOut {
            deliveries: rows.iter().map(WebhookAttemptOut::from).collect(),
        },
    ))
}
