//! Magic-link pages (API.md §14.2): `GET /l/{token}` shows a confirm page and changes nothing
//! (mail scanners that follow links consume nothing); its form POSTs back with a CSRF token
//! bound to a cookie the GET set, and a verified link redirects (303) to the tenant's return
//! URL. Every page: no JavaScript, a strict Content-Security-Policy, no caching, no framing.
//! With `server.public_url` empty these routes answer 404.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::AppState;
use crate::domain::keys::random_id;
use crate::domain::links::origin;
use crate::pages::{self, Form, Page, Strings};
use crate::service::links::{ConfirmError, LinkState};

const COOKIE: &str = "otpmint_link";

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
}

/// The path prefix of `server.public_url` (its stylesheet lives under it).
fn base_path(st: &AppState) -> String {
    st.services
        .links_base()
        .and_then(|b| reqwest::Url::parse(&b).ok())
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// A page with the headers every page carries; `form_to`: the origin the form's redirect may
/// go to (Chrome applies `form-action` to the redirect after a POST).
fn page(
    status: actix_web::http::StatusCode,
    html: String,
    form_to: Option<&str>,
    cookie: Option<String>,
) -> HttpResponse {
    let form_action = match form_to {
        Some(o) => format!("'self' {o}"),
        None => "'none'".to_string(),
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

fn notice(
    st: &AppState,
    status: actix_web::http::StatusCode,
    lang: &str,
    title: &str,
    lead: &str,
) -> HttpResponse {
    let html = pages::render(&Page {
        lang,
        title,
        lead,
        form: None,
        base_path: &base_path(st),
    });
    page(status, html, None, None)
}

fn the_cookie(req: &HttpRequest) -> Option<String> {
    let raw = req.headers().get(header::COOKIE)?.to_str().ok()?;
    raw.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty() && v.len() <= 64).then(|| v.to_string())
    })
}

pub async fn show(
    req: HttpRequest,
    st: web::Data<AppState>,
    token: web::Path<String>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if st.services.links_base().is_none() {
        return HttpResponse::NotFound().finish();
    }
    let state = match st.services.link_state(&token).await {
        Ok(s) => s,
        Err(_) => return HttpResponse::ServiceUnavailable().finish(),
    };
    match state {
        None => {
            let s = Strings::of("en");
            notice(&st, StatusCode::NOT_FOUND, s.lang, s.not_found, s.not_found)
        }
        Some(LinkState::Ended(l)) => {
            let s = Strings::of(l.locale.as_deref().unwrap_or("en"));
            let lead = s.ended_lead.replace("{app}", &l.tenant_name);
            notice(&st, StatusCode::GONE, s.lang, s.ended_title, &lead)
        }
        Some(LinkState::Open(l)) => {
            let s = Strings::of(l.locale.as_deref().unwrap_or("en"));
            // The browser's cookie for this page (a new one unless it has one).
            let cookie = the_cookie(&req).unwrap_or_else(|| random_id(32));
            let csrf = st.services.link_csrf(&token, &cookie);
            let secure = st
                .services
                .links_base()
                .is_some_and(|b| b.starts_with("https://"));
            let set_cookie = format!(
                "{COOKIE}={cookie}; Path={}/l/; HttpOnly; SameSite=Strict; Max-Age=3600{}",
                base_path(&st),
                if secure { "; Secure" } else { "" }
            );
            let lead = s.confirm_lead.replace("{app}", &l.tenant_name);
            let action = format!("{}/l/{}", base_path(&st), token.as_str());
            let html = pages::render(&Page {
                lang: s.lang,
                title: s.confirm_title,
                lead: &lead,
                form: Some(Form {
                    button: s.confirm_button,
                    action: &action,
                    csrf: &csrf,
                }),
                base_path: &base_path(&st),
            });
            page(
                StatusCode::OK,
                html,
                origin(&l.return_url).as_deref(),
                Some(set_cookie),
            )
        }
    }
}

pub async fn confirm(
    req: HttpRequest,
    st: web::Data<AppState>,
    token: web::Path<String>,
    form: web::Form<ConfirmForm>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if st.services.links_base().is_none() {
        return HttpResponse::NotFound().finish();
    }
    let ctx = super::request_context(&req, &st);
    let cookie = the_cookie(&req);
    let lang = match st.services.link_state(&token).await {
        Ok(Some(LinkState::Open(l) | LinkState::Ended(l))) => l.locale.clone(),
        _ => None,
    };
    let s = Strings::of(lang.as_deref().unwrap_or("en"));
    match st
        .services
        .confirm_link(&token, cookie.as_deref(), &form.csrf, &ctx)
        .await
    {
        Ok(to) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, to))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .finish(),
        Err(ConfirmError::NotFound) => {
            notice(&st, StatusCode::NOT_FOUND, s.lang, s.not_found, s.not_found)
        }
        Err(ConfirmError::Forbidden) => notice(
            &st,
            StatusCode::FORBIDDEN,
            s.lang,
            s.ended_title,
            s.expired_form,
        ),
        Err(ConfirmError::Ended) => {
            notice(&st, StatusCode::GONE, s.lang, s.ended_title, s.ended_title)
        }
    }
}

pub async fn style(st: web::Data<AppState>) -> HttpResponse {
    if st.services.links_base().is_none() {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(pages::STYLE_CSS)
}
