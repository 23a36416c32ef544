//! What every page people see shares (the link pages and the hosted pages, API.md §14):
//! the headers (a strict Content-Security-Policy, no caching, no framing, no referrer), the
//! redirect, the CSRF cookie, and the path prefix of `server.public_url`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};

use super::AppState;

/// The path prefix of `server.public_url` (`""` or `/otp`): pages link under it.
pub(super) fn base_path(st: &AppState) -> String {
    st.services
        .codes
        .links_base()
        .and_then(|b| reqwest::Url::parse(&b).ok())
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// The browser's cookie `name`, if it sent one this server issued (API.md §17.5): a value
/// the server did not choose is no cookie, and the page sets a new one.
pub(super) fn cookie(st: &AppState, req: &HttpRequest, name: &str) -> Option<String> {
    let raw = req.headers().get(header::COOKIE)?.to_str().ok()?;
    raw.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name && v.len() <= 80 && st.services.codes.page_cookie_issued(v))
            .then(|| v.to_string())
    })
}

/// The browser's cookie `name`, or a new one the server chose.
pub(super) fn cookie_or_new(st: &AppState, req: &HttpRequest, name: &str) -> String {
    cookie(st, req, name).unwrap_or_else(|| st.services.codes.new_page_cookie())
}

/// A `Set-Cookie` for a page's CSRF cookie: a `__Host-` name (the caller's), `Path=/`, no
/// domain; `Secure` when `server.public_url` is https (API.md §17.5). On a plain-http
/// loopback `public_url` (development), `Secure` too when the request comes from a browser
/// that treats the host as secure — one that sends fetch metadata (`Sec-Fetch-*`, sent only
/// to such hosts): it refuses a `__Host-` cookie without `Secure` there. Any other client
/// gets a cookie it may send back over http. `SameSite=Lax`: a person who comes back to a
/// finished flow from another site (a second click on the link in their webmail, the app
/// linking to the page) is known by the browser that finished it and sent back the same
/// way (API.md §17.2) — with `Strict` the cookie stayed behind, the page set a new one and
/// the finishing browser was refused even after; a POST from another site still carries no
/// cookie, and every POST needs the token bound to it.
pub(super) fn set_cookie(st: &AppState, req: &HttpRequest, name: &str, value: &str) -> String {
    let base = st.services.codes.links_base().unwrap_or_default();
    let loopback = reqwest::Url::parse(&base).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    });
    let browser = ["sec-fetch-site", "sec-fetch-mode"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    let secure = base.starts_with("https://") || (loopback && browser);
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600{}",
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

/// 404 as for a path the server does not have (a problem document, API.md §6): pages that
/// are off, a tenant's brand it does not show.
pub(super) fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&super::ApiError::NotFound)
}

/// A short plain-text answer of the pages (not found, an expired form) with the headers
/// every page carries: nothing in it may load, frame or be cached.
pub(super) fn plain(status: StatusCode, text: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(text)
}

/// A page whose state could not be read: 503 with `Retry-After` when the database did not
/// answer (API.md §6.24), else 500 — a short page a person can read either way; the cause is
/// logged, never shown.
pub(super) fn failed(e: &crate::service::ServiceError) -> HttpResponse {
    use crate::service::ServiceError;
    if matches!(e, ServiceError::Unavailable(_) | ServiceError::Overloaded) {
        tracing::warn!(error = %e, "a page could not be served: the database did not answer");
        let mut r = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "This page is unavailable for a moment. Please try again shortly.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    } else {
        tracing::error!(error = %e, "a page could not be served");
        plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side. Please try again later.",
        )
    }
}

/// The answer to a page's form that cannot be read (the pages' `FormConfig`): 413 past
/// the form limit, 415 when it is not a form, else 400 — each a plain page that says what
/// to do.
pub(super) fn unreadable_form(e: &actix_web::error::UrlencodedError) -> HttpResponse {
    use actix_web::error::UrlencodedError as U;
    match e {
        U::Overflow { .. } => plain(StatusCode::PAYLOAD_TOO_LARGE, "This form is too large."),
        U::ContentType => plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "This form must be sent as application/x-www-form-urlencoded.",
        ),
        _ => plain(
            StatusCode::BAD_REQUEST,
            "This form could not be read. Go back and reload the page.",
        ),
    }
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

/// A page that only says something (a link or a session that is not valid, a sign-in
/// complete), in `lang`.
pub(super) fn notice(
    st: &AppState,
    status: StatusCode,
    lang: &str,
    title: &str,
    lead: &str,
) -> HttpResponse {
    notice_with_link(st, status, (lang, title, lead), None)
}

/// [`notice`], with a link (its address and words) to where the person goes on.
pub(super) fn notice_with_link(
    st: &AppState,
    status: StatusCode,
    words: (&str, &str, &str),
    link: Option<(&str, &str)>,
) -> HttpResponse {
    notice_as(st, status, words, None, link)
}

/// [`notice`] of a tenant's code: its title names the app, as its other pages do.
pub(super) fn app_notice(
    st: &AppState,
    status: StatusCode,
    words: (&str, &str, &str),
    app_name: &str,
) -> HttpResponse {
    notice_as(st, status, words, Some(app_name), None)
}

fn notice_as(
    st: &AppState,
    status: StatusCode,
    (lang, title, lead): (&str, &str, &str),
    app_name: Option<&str>,
    link: Option<(&str, &str)>,
) -> HttpResponse {
    let html = crate::pages::render(&crate::pages::Page {
        lang,
        title,
        app_name,
        lead,
        form: None,
        base_path: &base_path(st),
        brand: None,
        logo: None,
        link,
    });
    page(status, html, None, None)
}

/// The 404 page of a link or a session that is not there, in the first of the ten
/// languages the browser asks for (`Accept-Language`; English without one): there is no
/// session or tenant to take a language from.
pub(super) fn not_there(st: &AppState, req: &HttpRequest) -> HttpResponse {
    use actix_web::http::header::{AcceptLanguage, Header, Preference};
    let asked = AcceptLanguage::parse(req)
        .map(|h| h.ranked())
        .unwrap_or_default();
    let s = asked
        .iter()
        .find_map(|p| match p {
            Preference::Specific(tag) => crate::pages::PageStrings::known(tag.primary_language()),
            Preference::Any => None,
        })
        .unwrap_or_else(|| crate::pages::PageStrings::of("en"));
    notice(
        st,
        StatusCode::NOT_FOUND,
        s.lang,
        s.not_found,
        s.not_found_lead,
    )
}
