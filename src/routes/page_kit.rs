//! What every page people see shares (the link pages and the hosted pages, API.md §14):
//! the headers (a strict Content-Security-Policy, no caching, no framing, no referrer), the
//! redirect, the CSRF cookie, and the path prefix of `server.public_url`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};

use super::AppState;

/// The path prefix of `server.public_url` (`""` or `/otp`): pages link under it.
pub(super) fn base_path(st: &AppState) -> String {
    st.services
        .links_base()
        .and_then(|b| reqwest::Url::parse(&b).ok())
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// The browser's cookie `name`, if it sent a plausible one.
pub(super) fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    let raw = req.headers().get(header::COOKIE)?.to_str().ok()?;
    raw.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name && !v.is_empty() && v.len() <= 64).then(|| v.to_string())
    })
}

/// A `Set-Cookie` for a page's CSRF cookie under `path` (`Secure` behind https).
pub(super) fn set_cookie(st: &AppState, name: &str, value: &str, path: &str) -> String {
    let secure = st
        .services
        .links_base()
        .is_some_and(|b| b.starts_with("https://"));
    format!(
        "{name}={value}; Path={}{path}; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        base_path(st),
        if secure { "; Secure" } else { "" }
    )
}

/// A page with the headers every page carries; `form_to`: the origin a form's redirect may
/// go to besides this one (Chrome applies `form-action` to the redirect after a POST), or
/// `None` for a page whose forms (if any) stay here.
pub(super) fn page(
    status: StatusCode,
    html: String,
    form_to: Option<String>,
    cookie: Option<String>,
) -> HttpResponse {
    let form_action = match form_to {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_string(),
    };
    let mut b = HttpResponse::build(status);
    b.content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
                 frame-ancestors 'none'; base-uri 'none'"
            ),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if let Some(c) = cookie {
        b.insert_header((header::SET_COOKIE, c));
    }
    b.body(html)
}

/// 303 to `to`, after a form.
pub(super) fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .finish()
}

/// Whether `given` equals the expected CSRF token (constant time).
pub(super) fn same_token(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    !given.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}
