//! Hosted verification (API.md §14.1): the tenant's routes (open a session, read its
//! outcome) and the pages people use (`/h/{id}`), server-rendered, without
//! JavaScript, under a strict Content-Security-Policy, every form with a CSRF token bound to
//! a cookie. With `server.public_url` empty the pages answer 404.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Body, TenantAuth};
use super::dto::{problems, Problem};
use super::error::ApiError;
use super::hosted_page::{render, words, COOKIE, RESENT};
use super::page_kit;
use super::respond::{json, no_store, parse_locale};
use super::{AppState, State};
use crate::clock::rfc3339;
use crate::domain::claim::CodeChallenge;
use crate::domain::email::RecipientEmail;
use crate::domain::purpose::Purpose;
use crate::domain::tenant::Tenant;
use crate::service::codes::hosted::{session_redirect, status_of, NewHosted};
use crate::service::ServiceError;
use crate::storage::SessionRow;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostedBody {
    /// The address to verify; without it the page asks for one.
    email: Option<String>,
    /// Default `default`.
    purpose: Option<String>,
    /// The first step of the pages' and the message's locale chain.
    locale: Option<String>,
    /// Must start with one of the tenant's `allowed_return_urls`.
    return_url: String,
    /// PKCE (API.md §17.2): base64url SHA-256 of a 43–128 character verifier the initiating
    /// browser keeps; the outcome is then claimed once with it.
    code_challenge: Option<String>,
    /// `S256` (the only method)
    #[schema(pattern = "^S256$")]
    code_challenge_method: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HostedOut {
    /// `hs_…`
    pub id: String,
    /// Where to send the person (on `server.public_url`).
    pub url: String,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct HostedStatusOut {
    /// `open`, `verified`, `failed` or `expired`
    pub status: String,
    /// The address (given, or typed on the page), once known.
    pub email: Option<String>,
    pub verified_at: Option<String>,
}

#[utoipa::path(post, path = "/v1/tenant/hosted-sessions", tag = "hosted pages",
    request_body = HostedBody,
    responses(
        (status = 201, description = "Opened", body = HostedOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 422, description = "links_not_configured: server.public_url is empty; unprocessable: return_url is not one of the tenant's allowed ones", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn open(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let b: HostedBody = body.json().await?;
    let codes = &st.services.codes;
    let code_challenge = CodeChallenge::parse_given(
        b.code_challenge.as_deref(),
        b.code_challenge_method.as_deref(),
        "code_challenge",
    )
    .map_err(|e| ServiceError::Invalid(vec![e]))?;
    let pages = codes.pages_open(&t.0)?;
    let email = b.email.as_deref().map(RecipientEmail::parse).transpose();
    let n = NewHosted {
        email: email.map_err(ServiceError::from)?,
        purpose: Purpose::parse(b.purpose.as_deref()).map_err(ServiceError::from)?,
        locale: parse_locale(b.locale.as_deref(), "locale")?,
        return_url: b.return_url,
        code_challenge,
    };
    let o = codes.open_hosted(&t.0, pages, n).await?;
    // The id is the bearer of the session's page: not kept by caches.
    Ok(json(
        no_store(HttpResponse::Created()),
        &HostedOut {
            id: o.id,
            url: o.url,
            expires_at: rfc3339(o.expires_at),
        },
    ))
}

#[utoipa::path(get, path = "/v1/tenant/hosted-sessions/{id}", tag = "hosted pages",
    params(("id" = String, Path, description = "`hs_…`")),
    responses(
        (status = 200, description = "The session's outcome", body = HostedStatusOut),
        (status = 404, description = "session_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn outcome(t: TenantAuth, st: State, id: web::Path<String>) -> ApiResult {
    let o = st.services.codes.hosted_outcome(&t.0, &id).await?;
    Ok(json(
        super::respond::no_store(HttpResponse::Ok()),
        &HostedStatusOut {
            status: o.status.to_string(),
            email: o.email,
            verified_at: o.verified_at.map(rfc3339),
        },
    ))
}

// ---- the pages ----

#[derive(Deserialize)]
pub struct PageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    code: String,
    /// The attempts the code had used when the page was made (see `pages::HostedPage`);
    /// absent from forms not made by the pages.
    #[serde(default)]
    seen: Option<String>,
    /// What the session had sent when the page was made (see `pages::HostedPage`);
    /// absent from forms not made by the pages.
    #[serde(default)]
    sent: Option<String>,
}

async fn session(
    st: &AppState,
    req: &HttpRequest,
    id: &str,
) -> Result<(SessionRow, Tenant), HttpResponse> {
    if st.services.codes.links_base().is_none() {
        return Err(page_kit::not_found());
    }
    match st.services.codes.hosted_page(id).await {
        Ok(Some(x)) => Ok(x),
        // As an unknown link answers: a page, not bare text.
        Ok(None) => Err(page_kit::not_there(st, req)),
        Err(e) => Err(page_kit::failed(&e)),
    }
}

pub async fn show(req: HttpRequest, st: State, id: web::Path<String>) -> HttpResponse {
    let (row, tenant) = match session(&st, &req, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Once verified, only the browser that finished the flow goes back to the tenant;
    // anyone else sees that the sign-in is complete (API.md §17.2).
    if row.verified
        && st
            .services
            .codes
            .finished_here(&row, page_kit::cookie(&st, &req, COOKIE).as_deref())
    {
        if let Some(to) = session_redirect(
            &row.session.return_url,
            &row.session.id,
            &tenant.allowed_return_urls,
        ) {
            return page_kit::see_other(&to);
        }
    }
    render(&st, &req, &row, &tenant, None, "").await
}

/// A form posted without its token or its cookie: a page in the session's language saying
/// what to do (reload; allow cookies), with a link to the session's page (which sets a new
/// cookie: reloading this answer would post the same form again), nothing done.
fn forbidden(st: &AppState, row: &SessionRow, tenant: &Tenant) -> HttpResponse {
    let s = words(row, tenant);
    page_kit::notice_with_link(
        st,
        StatusCode::FORBIDDEN,
        (s.lang, s.form_expired_title, s.form_expired_lead),
        Some((&page_of(st, &row.session.id), s.open_again)),
    )
}

/// The address of a session's page.
fn page_of(st: &AppState, id: &str) -> String {
    format!("{}/h/{id}", page_kit::base_path(st))
}

/// `GET` of a form's address (`/h/{id}/send`, `/h/{id}/verify`): the address of an answer
/// to a form, opened again (a reload in a new tab, a phone's browser restoring the tab), goes
/// to the session's page, as it stands now.
pub async fn to_page(req: HttpRequest, st: State, id: web::Path<String>) -> HttpResponse {
    if st.services.codes.links_base().is_none() {
        return page_kit::not_found();
    }
    // Only what a session id can be goes into the address (the path is decoded: `%2F`,
    // `%0A` would make another path, or no header at all).
    let shaped = id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !shaped {
        return page_kit::not_there(&st, &req);
    }
    page_kit::see_other(&page_of(&st, &id))
}

/// A form of the pages: `send` (the code goes out) or `verify` (the code typed).
async fn act(req: HttpRequest, st: State, id: &str, form: PageForm, verify: bool) -> HttpResponse {
    let (row, tenant) = match session(&st, &req, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let cookie = page_kit::cookie(&st, &req, COOKIE);
    let expected = cookie
        .as_deref()
        .map(|c| st.services.codes.hosted_csrf(&row.session.id, c));
    if !expected.is_some_and(|e| page_kit::same_token(&e, &form.csrf)) {
        return forbidden(&st, &row, &tenant);
    }
    let cookie = cookie.unwrap_or_default();
    // A code posted before any was sent (only a crafted form can): nothing to check it
    // against, nothing spent; the page as it stands asks for the address. (A session whose
    // way back is no longer allowed is over, as it says below.)
    let way_back = || {
        session_redirect(
            &row.session.return_url,
            &row.session.id,
            &tenant.allowed_return_urls,
        )
    };
    if verify
        && row.key_sealed.is_none()
        && status_of(&row, st.services.core.now()) == "open"
        && way_back().is_some()
    {
        return page_kit::see_other(&page_of(&st, &row.session.id));
    }
    let ctx = super::request_context(&req, &st);
    let done = if verify {
        st.services
            .codes
            .hosted_verify(
                &row,
                &tenant,
                (
                    &form.code,
                    form.seen.as_deref().and_then(|s| s.parse().ok()),
                ),
                (&cookie, &ctx),
            )
            .await
    } else {
        st.services
            .codes
            .hosted_send(&row, &tenant, (&form.email, form.sent.as_deref()), &ctx)
            .await
            .map(|sent_now| {
                let page = page_of(&st, &row.session.id);
                // A new code: sent now, or by the first post of a "send a new code" form
                // posted again.
                let new_code = if sent_now {
                    row.key_sealed.is_some()
                } else {
                    form.sent.as_deref().is_some_and(|m| m != "0")
                };
                if new_code {
                    format!("{page}?{RESENT}")
                } else {
                    page
                }
            })
    };
    match done {
        Ok(to) => page_kit::see_other(&to),
        Err(e) => {
            // The page as it stands now (a code may have been sent, attempts used); a
            // session verified meanwhile (a second click) goes back to the tenant.
            let now = st
                .services
                .codes
                .hosted_page(&row.session.id)
                .await
                .ok()
                .flatten();
            let row = now.map(|x| x.0).unwrap_or(row);
            if status_of(&row, st.services.core.now()) == "verified"
                && st.services.codes.finished_here(&row, Some(&cookie))
            {
                if let Some(to) = session_redirect(
                    &row.session.return_url,
                    &row.session.id,
                    &tenant.allowed_return_urls,
                ) {
                    return page_kit::see_other(&to);
                }
            }
            render(&st, &req, &row, &tenant, Some(&e), &form.email).await
        }
    }
}

pub async fn send(
    req: HttpRequest,
    st: State,
    id: web::Path<String>,
    form: web::Form<PageForm>,
) -> HttpResponse {
    act(req, st, &id, form.into_inner(), false).await
}

pub async fn verify(
    req: HttpRequest,
    st: State,
    id: web::Path<String>,
    form: web::Form<PageForm>,
) -> HttpResponse {
    act(req, st, &id, form.into_inner(), true).await
}
