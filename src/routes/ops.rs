//! Operations routes: health, readiness, metrics, the OpenAPI document.

use actix_web::{HttpRequest, HttpResponse};

use super::dto::*;
use super::error::ApiError;
use super::respond::json;
use super::State;
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

/// `GET /`: a short page naming otpmint and where its API and docs are (API.md §18.8), for
/// the person who opens the server's address in a browser.
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .insert_header((actix_web::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(concat!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<title>otpmint</title></head><body>\n",
            "<h1>otpmint ",
            env!("CARGO_PKG_VERSION"),
            "</h1>\n<p>A self-hosted one-time-password server. This address serves its HTTP API; ",
            "there is nothing to sign in to here.</p>\n<ul>\n",
            "<li>API description: <a href=\"/openapi.json\">/openapi.json</a></li>\n",
            "<li>Health: <a href=\"/healthz\">/healthz</a>, readiness: <a href=\"/readyz\">/readyz</a></li>\n",
            "<li>Documentation: <code>docs/</code> in the source (docs/api.md for the API, ",
            "docs/operations.md to run it)</li>\n</ul>\n</body></html>\n"
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
pub async fn readyz(st: State) -> HttpResponse {
    match st.services.core.ready().await {
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
    ),
    security(("metrics_token" = []), ()))]
pub async fn metrics(req: HttpRequest, st: State) -> ApiResult {
    let settings = st.services.core.settings.load();
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
            st.services.core.hashing_queue_depth(),
            st.services.core.records_waiting(),
            st.services.delivery.outbox_stats().await.ok(),
            &st.services.delivery.outbox.windows(),
            st.services.delivery.outbox.sessions().in_use(),
        )))
}

/// The OpenAPI 3.1 description of this API.
pub async fn openapi() -> HttpResponse {
    // Built once: generating it is tens of milliseconds of CPU on an HTTP worker (found by a
    // black-box audit: clients looping on it slowed every other request), and it never
    // changes while the process runs.
    static DOCUMENT: std::sync::OnceLock<actix_web::web::Bytes> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        serde_json::to_vec(&super::openapi::document())
            .unwrap_or_default()
            .into()
    });
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .body(body.clone())
}
