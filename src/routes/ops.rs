//! Operations routes: health, readiness, metrics, the OpenAPI document.

use actix_web::{web, HttpRequest, HttpResponse};

use super::dto::*;
use super::error::ApiError;
use super::v1::json;
use super::AppState;
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

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
    match st.services.ready().await {
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
        (status = 401, response = problems::Unauthorized),
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
            st.services.hashing_queue_depth(),
            st.services.outbox_stats().await.ok(),
            &st.services.outbox.windows(),
        )))
}

/// The OpenAPI 3.1 description of this API.
pub async fn openapi() -> HttpResponse {
    json(HttpResponse::Ok(), &super::openapi::document())
}
