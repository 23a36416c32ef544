//! What every handler of the native API shares: the JSON answer with the contract's charset,
//! `no-store`, and the parsers of the fields several routes take.

use actix_web::http::header;
use actix_web::HttpResponse;
use serde::Serialize;

use super::error::ApiError;
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::{CodeApi, ShareableKey};
use crate::domain::locale::{Locale, LOCALE_RULE};
use crate::domain::Millis;
use crate::service::ServiceError;

/// An optional language tag, refused with 400 naming `field`.
pub(super) fn parse_locale(s: Option<&str>, field: &str) -> Result<Option<Locale>, ApiError> {
    match s {
        None => Ok(None),
        Some(l) => Locale::parse(l)
            .map(Some)
            .ok_or_else(|| ServiceError::field(field, LOCALE_RULE).into()),
    }
}

/// A shareable key in a path: a malformed one names no code (404 `otp_not_found`).
pub(super) fn parse_key(s: &str, flavor: CodeApi) -> Result<ShareableKey, ServiceError> {
    ShareableKey::parse(s, flavor).ok_or(ServiceError::OtpNotFound)
}

pub(super) fn parse_delivery(s: Option<&str>) -> Result<Option<DeliveryMode>, ApiError> {
    match s {
        None => Ok(None),
        Some(d) => DeliveryMode::parse(d)
            .map(Some)
            .ok_or_else(|| ServiceError::field("delivery", "must be \"sync\" or \"async\"").into()),
    }
}

/// A JSON answer with the charset the contract names.
pub(super) fn json<T: Serialize>(mut b: actix_web::HttpResponseBuilder, v: &T) -> HttpResponse {
    b.content_type("application/json; charset=utf-8")
        .body(serde_json::to_string(v).unwrap_or_default())
}

pub(super) fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

/// Whether a time was given as a date alone (`2026-11-24`).
pub(super) fn is_date_only(s: &str) -> bool {
    s.len() == 10 && !s.contains('T')
}

/// A time given as RFC 3339 or as a date (`2026-11-24`: its midnight, UTC).
pub(super) fn parse_time(field: &str, s: &str) -> Result<Millis, ServiceError> {
    crate::clock::parse_time(s).ok_or_else(|| {
        ServiceError::field(field, "must be an RFC 3339 time or a date (YYYY-MM-DD)")
    })
}
