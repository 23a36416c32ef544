//! `Idempotency-Key` on the native API (API.md §9): the header's rule, and the wrapper that
//! runs a request's work once per key — the first request claims the key, runs, and keeps
//! its answer; a repeat with the same body gets the kept answer; another body is refused.

use std::future::Future;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::respond::{json, no_store};
use super::AppState;
use crate::domain::keys::TenantId;
use crate::service::codes::idempotency::{fingerprint, kept, valid_key, Answer, IdemStart, Stage};
use crate::service::codes::mint::Minted;
use crate::service::ServiceError;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request's `Idempotency-Key`, if it has one. Two of them, or one that breaks the rule,
/// is 400 before anything else happens.
pub(super) fn key_of(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let mut keys = req.headers().get_all(IDEMPOTENCY_KEY);
    match (keys.next(), keys.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => match v.to_str() {
            Ok(k) if valid_key(k) => Ok(Some(k.to_string())),
            _ => Err(bad_key()),
        },
        (Some(_), Some(_)) => Err(bad_key()),
    }
}

fn bad_key() -> ApiError {
    ServiceError::field(
        "Idempotency-Key",
        "must be one header of 1 to 255 visible ASCII characters",
    )
    .into()
}

/// Answer `work`'s result, run once per `key` of `tenant` when there is a key (`body`, the
/// request's, is what a repeat must match). With a key, `work` runs on a task of its own
/// together with keeping its answer: a client that goes away mid-request cannot leave the key
/// claimed with the work done and no answer kept. `work` is given the key's [`Stage`], where
/// a mint leaves its answer (`answer_of` writes it) once its code is stored, for a stop that
/// cuts the request after that.
pub(super) async fn once<T, F, Fut>(
    st: &AppState,
    tenant: &TenantId,
    key: Option<String>,
    body: &[u8],
    answer_of: fn(&Minted) -> Answer,
    work: F,
) -> Result<HttpResponse, ApiError>
where
    T: Serialize,
    F: FnOnce(Option<Stage>) -> Fut,
    Fut: Future<Output = Result<(StatusCode, T), ApiError>> + Send + 'static,
{
    let Some(key) = key else {
        let (status, out) = work(None).await?;
        return Ok(json(no_store(HttpResponse::build(status)), &out));
    };
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let ticket = match st
        .services
        .codes
        .idem_begin(tenant, &key, fingerprint(&value))
        .await?
    {
        IdemStart::Replay { status, body } => return Ok(answer(status, body.into(), true)),
        IdemStart::Proceed(ticket) => ticket,
    };
    let services = st.services.clone();
    let work = work(Some(services.codes.stage(&ticket, answer_of)));
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let (status, body, err) = match work.await {
                Ok((status, out)) => {
                    let body = serde_json::to_vec(&out).unwrap_or_default();
                    (status.as_u16(), web::Bytes::from(body), None)
                }
                Err(e) => {
                    let status = actix_web::ResponseError::status_code(&e).as_u16();
                    // Only a kept answer needs its body here (building a response logs 5xx
                    // errors; the handler builds the one actually sent).
                    let body = if kept(status) {
                        let resp = actix_web::ResponseError::error_response(&e);
                        actix_web::body::MessageBody::try_into_bytes(resp.into_body())
                            .unwrap_or_default()
                    } else {
                        web::Bytes::new()
                    };
                    (status, body, Some(e))
                }
            };
            services.codes.idem_end(ticket, status, &body).await;
            (status, body, err)
        },
        span,
    ));
    let (status, body, err) = task
        .await
        .map_err(|e| ServiceError::Internal(format!("idempotent task failed: {e}")))?;
    match err {
        // Not kept: the error as it is (with its own headers, e.g. Retry-After).
        Some(e) if !kept(status) => Err(e),
        _ => Ok(answer(status, body, false)),
    }
}

/// A kept answer (first time or again).
fn answer(status: u16, body: web::Bytes, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
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
