//! The tenant's HTTP transport (API.md §12.2), managed with its secret key.

use actix_web::http::header;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Body, TenantAuth};
use super::dto::{problems, NoBody, Problem};
use super::error::ApiError;
use super::respond::json;
use super::State;
use crate::service::tenants::http_transport::HttpShown;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTransportBody {
    /// `https://…` (`http://` only with `webhooks.allow_plaintext`); the host passes the
    /// address policy now and at every request.
    url: String,
    /// `primary` (default: instead of SMTP) or `fallback` (after the relays).
    #[serde(rename = "use")]
    use_as: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HttpTransportOut {
    pub url: String,
    /// `primary` or `fallback`.
    #[serde(rename = "use")]
    pub use_as: String,
    /// `whsec_…`: shown when the transport is created and on rotation only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn shown(h: HttpShown) -> HttpResponse {
    let mut b = HttpResponse::Ok();
    if h.secret.is_some() {
        b.insert_header((header::CACHE_CONTROL, "no-store"));
    }
    json(
        b,
        &HttpTransportOut {
            url: h.url,
            use_as: h.use_as.as_str().to_string(),
            secret: h.secret,
        },
    )
}

#[utoipa::path(put, path = "/v1/tenant/transport/http", tag = "transports",
    description = "Create or replace the tenant's HTTP transport: messages are POSTed to `url`, signed like webhooks with a secret of its own. A new transport's secret is in this answer only; a replacement keeps it.",
    request_body = HttpTransportBody,
    responses(
        (status = 200, description = "The transport (with `secret` when it was created)", body = HttpTransportOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 409, description = "transport_conflict: another transport of the channel is primary", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "webhook_host_not_allowed, webhook_plaintext_not_allowed, webhook_host_unresolvable (the webhooks' address policy)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn put_http_transport(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let b: HttpTransportBody = body.json().await?;
    Ok(shown(
        st.services
            .tenants
            .put_http_transport(&t.0, &b.url, b.use_as.as_deref())
            .await?,
    ))
}

#[utoipa::path(get, path = "/v1/tenant/transport/http", tag = "transports",
    responses(
        (status = 200, description = "The transport, without its secret", body = HttpTransportOut),
        (status = 404, response = problems::TransportNotFound),
    ),
    security(("secret_key" = [])))]
pub async fn get_http_transport(t: TenantAuth, st: State) -> ApiResult {
    Ok(shown(st.services.tenants.http_transport(&t.0)?))
}

#[utoipa::path(delete, path = "/v1/tenant/transport/http", tag = "transports",
    description = "Remove the HTTP transport: emails go through SMTP again; text messages cannot be sent.",
    responses(
        (status = 204, description = "Removed"),
        (status = 404, response = problems::TransportNotFound),
    ),
    security(("secret_key" = [])))]
pub async fn delete_http_transport(t: TenantAuth, st: State) -> ApiResult {
    st.services.tenants.delete_http_transport(&t.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/tenant/transport/http/rotate-secret", tag = "transports",
    description = "A new signing secret, shown once; the old one stops at once.",
    request_body(content = Option<NoBody>, description = "None: nothing, null or {}"),
    responses(
        (status = 200, description = "The transport with its new secret", body = HttpTransportOut),
        (status = 400, description = "invalid_request: the route takes no body (none, null or {})", body = Problem, content_type = "application/problem+json"),
        (status = 404, response = problems::TransportNotFound),
    ),
    security(("secret_key" = [])))]
pub async fn rotate_http_transport_secret(t: TenantAuth, st: State, body: Body) -> ApiResult {
    body.none().await?;
    Ok(shown(st.services.tenants.rotate_http_secret(&t.0).await?))
}
