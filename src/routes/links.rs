//! Magic-link pages (API.md §14.2): `GET /l/{token}` shows a confirm page and changes nothing
//! (mail scanners that follow links consume nothing); its form POSTs back with a CSRF token
//! bound to a cookie the GET set, and a verified link redirects (303) to the tenant's return
//! URL. Every page: no JavaScript, a strict Content-Security-Policy, no caching, no framing.
//! With `server.public_url` empty these routes answer 404.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::page_kit;
use super::{AppState, State};
use crate::domain::links::{allowed_return, origin};
use crate::pages::{self, Form, Page, PageStrings};
use crate::service::codes::links::{ConfirmError, LinkState};

const COOKIE: &str = "__Host-otpmint_link";

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
}

/// A verified link, to any browser but the one that confirmed it: the sign-in is complete, in
/// the link's language, and nobody is sent anywhere (API.md §17.2).
fn done(st: &AppState, locale: Option<&crate::domain::locale::Locale>) -> HttpResponse {
    let s = PageStrings::of(locale.map_or("en", |l| l.as_str()));
    page_kit::notice(
        st,
        actix_web::http::StatusCode::OK,
        s.lang,
        s.done_title,
        s.done_lead,
    )
}

/// A link that cannot be used from here: 410, naming the app in its title and words — its
/// code ended (verified elsewhere, expired, used up), or, `withdrawn`, its way back is no
/// longer one the tenant allows (API.md §17.7: said as the hosted page says it; nothing is
/// spent, and the link works again if the tenant allows it again).
fn gone(
    st: &AppState,
    app: &str,
    locale: Option<&crate::domain::locale::Locale>,
    withdrawn: bool,
) -> HttpResponse {
    let s = PageStrings::of(locale.map_or("en", |l| l.as_str()));
    let (title, lead) = if withdrawn {
        (s.over_title, s.withdrawn_lead)
    } else {
        (s.ended_title, s.ended_lead)
    };
    page_kit::app_notice(
        st,
        actix_web::http::StatusCode::GONE,
        (s.lang, title, &PageStrings::with_app(lead, app)),
        app,
    )
}

pub async fn show(req: HttpRequest, st: State, token: web::Path<String>) -> HttpResponse {
    use actix_web::http::StatusCode;
    if st.services.codes.links_base().is_none() {
        return super::page_kit::not_found();
    }
    let state = match st.services.codes.link_state(&token).await {
        Ok(s) => s,
        Err(e) => return page_kit::failed(&e),
    };
    match state {
        None => page_kit::not_there(&st, &req),
        Some(LinkState::Verified(l)) => {
            let cookie = page_kit::cookie(&st, &req, COOKIE);
            match st
                .services
                .codes
                .verified_return(&token, &l, cookie.as_deref())
                .await
            {
                Some(to) => page_kit::see_other(&to),
                None => done(&st, l.locale.as_ref()),
            }
        }
        Some(LinkState::Ended(l)) => gone(&st, &l.tenant_name, l.locale.as_ref(), false),
        Some(LinkState::Open(l)) => {
            let s = PageStrings::of(l.locale.as_ref().map_or("en", |l| l.as_str()));
            // The browser's cookie for this page (a new one unless it has one).
            let cookie = page_kit::cookie_or_new(&st, &req, COOKIE);
            let csrf = st.services.codes.link_csrf(&token, &cookie);
            let set_cookie = page_kit::set_cookie(&st, &req, COOKIE, &cookie);
            let lead = PageStrings::with_app(s.confirm_lead, &l.tenant_name);
            let action = format!("{}/l/{}", page_kit::base_path(&st), token.as_str());
            // The tenant's colour and logo, as on its hosted pages (API.md §18.8).
            let tenant = st.services.core.tenant(l.tenant_id.as_str()).await;
            if let Ok(t) = &tenant {
                if allowed_return(&l.return_url, &t.allowed_return_urls).is_none() {
                    return gone(&st, &l.tenant_name, l.locale.as_ref(), true);
                }
            }
            let (branded, logo) = match tenant {
                Ok(t) if t.enabled && st.services.codes.pages_allowed(&t) => (
                    !t.brand_color.is_empty(),
                    st.services.codes.has_logo(&t.id).await,
                ),
                _ => (false, false),
            };
            let html = pages::render(&Page {
                lang: s.lang,
                title: s.confirm_title,
                app_name: Some(&l.tenant_name),
                lead: &lead,
                form: Some(Form {
                    button: s.confirm_button,
                    action: &action,
                    csrf: &csrf,
                }),
                base_path: &page_kit::base_path(&st),
                brand: branded.then_some(l.tenant_id.as_str()),
                logo: logo.then_some((l.tenant_id.as_str(), l.tenant_name.as_str())),
                link: None,
            });
            page_kit::page(
                StatusCode::OK,
                html,
                origin(&l.return_url),
                Some(set_cookie),
            )
        }
    }
}

pub async fn confirm(
    req: HttpRequest,
    st: State,
    token: web::Path<String>,
    form: web::Form<ConfirmForm>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if st.services.codes.links_base().is_none() {
        return super::page_kit::not_found();
    }
    let ctx = super::request_context(&req, &st);
    let cookie = page_kit::cookie(&st, &req, COOKIE);
    let state = match st.services.codes.link_state(&token).await {
        Ok(s) => s,
        Err(e) => return page_kit::failed(&e),
    };
    let (lang, app) = match &state {
        Some(LinkState::Open(l) | LinkState::Verified(l) | LinkState::Ended(l)) => {
            (l.locale.clone(), l.tenant_name.clone())
        }
        None => (None, String::new()),
    };
    let s = PageStrings::of(lang.as_ref().map_or("en", |l| l.as_str()));
    match st
        .services
        .codes
        .confirm_link(&token, state, (cookie.as_deref(), &form.csrf), &ctx)
        .await
    {
        Ok(to) => page_kit::see_other(&to),
        Err(ConfirmError::NotFound) => page_kit::not_there(&st, &req),
        // The form came without its cookie or token (cookies blocked, a page left open past
        // its cookie): the link still works; its page, opened again, sets a new cookie.
        Err(ConfirmError::Forbidden) => page_kit::notice_with_link(
            &st,
            StatusCode::FORBIDDEN,
            (s.lang, s.form_expired_title, s.form_expired_lead),
            Some((
                &format!("{}/l/{}", page_kit::base_path(&st), token.as_str()),
                s.open_again,
            )),
        ),
        Err(ConfirmError::Done) => done(&st, lang.as_ref()),
        Err(ConfirmError::Ended) => gone(&st, &app, lang.as_ref(), false),
        Err(ConfirmError::Withdrawn) => gone(&st, &app, lang.as_ref(), true),
    }
}

pub async fn style(st: State) -> HttpResponse {
    asset(&st, "text/css; charset=utf-8", pages::STYLE_CSS)
}

pub async fn icon(st: State) -> HttpResponse {
    asset(&st, "image/svg+xml", pages::ICON_SVG)
}

/// One of the pages' own files (not there while `server.public_url` is empty, like the
/// pages), cached an hour; nothing in it may run or load (an SVG opened on its own).
fn asset(st: &State, content_type: &str, body: &'static str) -> HttpResponse {
    if st.services.codes.links_base().is_none() {
        return super::page_kit::not_found();
    }
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'"))
        .body(body)
}
