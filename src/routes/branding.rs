//! A tenant's brand on the hosted pages (API.md §14.1, §17.8): the logo it uploads (a PNG
//! that must decode whole) and the stylesheet of its colour, both served by otpmint.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::auth::{Body, TenantAuth};
use super::dto::{problems, Problem};
use super::error::ApiError;
use super::State;
use crate::pages;
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

/// The largest logo accepted.
pub const LOGO_MAX: usize = 64 * 1024;

/// The largest logo, in pixels each way.
const LOGO_PIXELS: u32 = 1024;

/// Whether the bytes are a PNG that decodes whole, of at most 1024×1024 pixels (API.md
/// §17.8): its header alone says nothing of what follows.
fn is_valid_logo(b: &[u8]) -> bool {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(b));
    // 1024×1024 at 16-bit RGBA at most.
    decoder.set_limits(png::Limits {
        bytes: (LOGO_PIXELS * LOGO_PIXELS * 8) as usize,
    });
    let Ok(mut reader) = decoder.read_info() else {
        return false;
    };
    let (w, h) = (reader.info().width, reader.info().height);
    if w == 0 || h == 0 || w > LOGO_PIXELS || h > LOGO_PIXELS {
        return false;
    }
    let Some(size) = reader.output_buffer_size() else {
        return false;
    };
    let mut buf = vec![0u8; size];
    // The image, every further frame of an animated PNG, and the end of the stream must
    // decode: any error refuses the logo.
    let frames = reader
        .info()
        .animation_control
        .map_or(1, |a| a.num_frames.max(1));
    for _ in 0..frames {
        if reader.next_frame(&mut buf).is_err() {
            return false;
        }
    }
    reader.finish().is_ok() && ends_at_iend(b)
}

/// Whether nothing follows the PNG's `IEND` chunk (a decoder stops reading there; bytes
/// behind it would be stored and served with the logo).
fn ends_at_iend(b: &[u8]) -> bool {
    let mut at = 8; // the signature
    while let Some(head) = b.get(at..).and_then(|rest| rest.get(..8)) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        // Length, type, data and CRC.
        let Some(end) = at.checked_add(12).and_then(|e| e.checked_add(len)) else {
            return false;
        };
        if &head[4..8] == b"IEND" {
            return end == b.len();
        }
        at = end;
    }
    false
}

#[utoipa::path(put, path = "/v1/tenant/branding/logo", tag = "hosted pages",
    description = "The logo on the hosted pages: a PNG of at most 64 KiB and 1024×1024 pixels (`Content-Type: image/png`) that decodes whole, nothing after its IEND chunk, served by otpmint.",
    request_body(content = String, description = "The PNG's bytes", content_type = "image/png"),
    responses(
        (status = 204, description = "Stored"),
        (status = 400, response = problems::InvalidRequest),
        (status = 413, description = "payload_too_large: over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type: not image/png", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "logo_invalid: not a PNG that decodes (or bytes after its end), or larger than 1024×1024 pixels", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn put_logo(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let png = body
        .req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("image/png"));
    if !png {
        return Err(ApiError::MediaType("image/png"));
    }
    let bytes = body.bytes_up_to(LOGO_MAX).await?;
    let bytes = web::block(move || is_valid_logo(&bytes).then_some(bytes))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .ok_or(ServiceError::LogoInvalid)?;
    st.services.codes.put_logo(&t.0, Some(&bytes)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(delete, path = "/v1/tenant/branding/logo", tag = "hosted pages",
    responses(
        (status = 204, description = "Removed (or there was none)"),
    ),
    security(("secret_key" = [])))]
pub async fn delete_logo(t: TenantAuth, st: State) -> ApiResult {
    st.services.codes.put_logo(&t.0, None).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn brand_css(st: State, tenant: web::Path<String>) -> HttpResponse {
    let id = tenant.trim_end_matches(".css");
    let Ok(t) = st.services.core.tenant(id).await else {
        return super::page_kit::not_found();
    };
    if st.services.codes.links_base().is_none()
        || t.brand_color.is_empty()
        || !t.enabled
        || !st.services.codes.pages_allowed(&t)
    {
        return super::page_kit::not_found();
    }
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(pages::brand_css(&t.brand_color))
}

pub async fn logo(st: State, tenant: web::Path<String>) -> HttpResponse {
    let id = tenant.trim_end_matches(".png");
    if st.services.codes.links_base().is_none() {
        return super::page_kit::not_found();
    }
    // Under open registration a tenant's brand shows only once its pages are approved.
    if !st
        .services
        .core
        .tenant(id)
        .await
        .is_ok_and(|t| st.services.codes.pages_allowed(&t))
    {
        return super::page_kit::not_found();
    }
    match st.services.codes.logo(id).await {
        Some(png) => HttpResponse::Ok()
            .content_type("image/png")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'"))
            .body(png),
        None => super::page_kit::not_found(),
    }
}
