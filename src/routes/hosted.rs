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
use super::page_kit;
use super::respond::{json, no_store, parse_locale};
use super::{AppState, State};
use crate::clock::rfc3339;
use crate::domain::claim::CodeChallenge;
use crate::domain::email::{mask, RecipientEmail};
use crate::domain::links::origin;
use crate::domain::locale::Locale;
use crate::domain::purpose::Purpose;
use crate::domain::tenant::Tenant;
use crate::pages::{self, HostedPage, PageStrings};
use crate::service::codes::hosted::{session_redirect, status_of, NewHosted, PageError};
use crate::service::ServiceError;
use crate::storage::SessionRow;

type ApiResult = Result<HttpResponse, ApiError>;

const COOKIE: &str = "__Host-otpmint_hosted";

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
}

/// The session's pages' words: the first language of the §8 chain with pages (the session's
/// locale, its language, the tenant's default, its language, English).
fn words(row: &SessionRow, tenant: &Tenant) -> &'static PageStrings {
    let chain = crate::messages::chain(row.session.locale.as_ref(), &tenant.default_locale);
    let lang = chain
        .iter()
        .map(Locale::language)
        .find(|l| crate::messages::LANGUAGES.contains(&l.as_str()))
        .unwrap_or_else(Locale::english);
    PageStrings::of(lang.as_str())
}

/// Render the session's page as it stands, with `error` shown.
async fn render(
    st: &AppState,
    req: &HttpRequest,
    row: &SessionRow,
    tenant: &Tenant,
    error: Option<&PageError>,
    typed: &str,
) -> HttpResponse {
    let s = words(row, tenant);
    let app = tenant.name.as_str();
    let base = page_kit::base_path(st);
    let logo = st.services.codes.has_logo(&tenant.id).await;
    let cookie = page_kit::cookie_or_new(st, req, COOKIE);
    let csrf = st.services.codes.hosted_csrf(&row.session.id, &cookie);
    let set_cookie = page_kit::set_cookie(st, req, COOKIE, &cookie);
    let now = st.services.core.now();
    let status_now = status_of(row, now);
    let over = status_now != "open" || error == Some(&PageError::Over);
    let code_sent = row.key_sealed.is_some();
    let err = match error {
        Some(PageError::BadEmail) => s.bad_email.to_string(),
        Some(PageError::BadCode) => s
            .bad_code
            // The length the session's code was minted with (a later policy change does not
            // alter it).
            .replace(
                "{n}",
                &row.code_length
                    .unwrap_or(tenant.policy.code_length)
                    .to_string(),
            ),
        Some(PageError::CodeEnded) => s.code_ended.to_string(),
        Some(PageError::WrongCode(n)) => s.wrong_code.replace("{n}", &n.to_string()),
        Some(PageError::Limited(secs)) => s.wait(*secs),
        Some(PageError::NoMoreCodes) => s.no_more_codes.to_string(),
        Some(PageError::NotSent) => s.not_sent.to_string(),
        Some(PageError::Refused) => s.refused.to_string(),
        Some(PageError::Busy) => s.busy.to_string(),
        Some(PageError::Finishing) => String::new(),
        Some(PageError::Over) | None => String::new(),
    };
    let done = status_now == "verified";
    // A new code is offered unless the one sent is still pending with its resends spent
    // (`otp.max_resends`); one that expired or ended is followed by a new key's code.
    let max_resends = st.services.core.settings.load().otp.max_resends;
    let resend = match (row.resends, row.code_state.as_deref(), row.code_expires_at) {
        (Some(n), Some("pending"), Some(until)) if n >= max_resends && now < until => "",
        _ => s.resend,
    };
    let (title, lead, field, label, button, action, again) = if error == Some(&PageError::Finishing)
    {
        (
            s.finishing_title.to_string(),
            s.finishing_lead.to_string(),
            "",
            "",
            "",
            String::new(),
            "",
        )
    } else if done {
        (
            s.done_title.to_string(),
            s.done_lead.to_string(),
            "",
            "",
            "",
            String::new(),
            "",
        )
    } else if over {
        (
            s.over_title.to_string(),
            s.over_lead.replace("{app}", app),
            "",
            "",
            "",
            String::new(),
            "",
        )
    } else if code_sent && error != Some(&PageError::BadEmail) {
        let email = row.session.email.as_deref().map(mask).unwrap_or_default();
        // The page a new code's send goes back to says that one was sent.
        let lead = if error.is_none() && req.query_string() == RESENT {
            s.resent
        } else {
            s.code_lead
        };
        (
            s.code_title.to_string(),
            lead.replace("{email}", &email),
            "code",
            s.code_label,
            s.verify,
            format!("{base}/h/{}/verify", row.session.id),
            resend,
        )
    } else if let Some(email) = row.session.email.as_deref() {
        // The tenant gave the address: only the button to send the code.
        (
            s.email_title.replace("{app}", app),
            s.send_lead.replace("{email}", &mask(email)),
            "send",
            "",
            s.send,
            format!("{base}/h/{}/send", row.session.id),
            "",
        )
    } else {
        (
            s.email_title.replace("{app}", app),
            s.email_lead.to_string(),
            "email",
            s.email_label,
            s.send,
            format!("{base}/h/{}/send", row.session.id),
            "",
        )
    };
    // A sign-in that can no longer be completed links back to the tenant's app (its return
    // URL with the session, whose status the app reads: expired or failed), where the
    // person starts again.
    let back = if matches!(status_now, "expired" | "failed") && error != Some(&PageError::Finishing)
    {
        session_redirect(
            &row.session.return_url,
            &row.session.id,
            &tenant.allowed_return_urls,
        )
        .unwrap_or_default()
    } else {
        String::new()
    };
    let back_label = s.back.replace("{app}", app);
    // Under the code's form, when no new code can be asked for: use the last one (unless
    // the error says just that).
    let note = if field == "code" && resend.is_empty() && error != Some(&PageError::NoMoreCodes) {
        s.no_more_codes
    } else {
        ""
    };
    // What a screen reader says of the field once it has the focus (it has on load): the
    // error, the text above the form (where the code went, that a new one was sent), the
    // note under it.
    let described = [
        ("error", err.as_str()),
        ("lead", lead.as_str()),
        ("note", note),
    ]
    .iter()
    .filter(|(_, text)| !text.is_empty())
    .map(|(id, _)| *id)
    .collect::<Vec<_>>()
    .join(" ");
    // The title names the app where its words do ("Sign in to {app}"); others get it after.
    let names_app = title == s.email_title.replace("{app}", app);
    let html = pages::render_hosted(&HostedPage {
        lang: s.lang,
        app,
        tenant: tenant.id.as_str(),
        title: &title,
        names_app,
        lead: &lead,
        error: &err,
        field,
        label,
        // What the person typed, back in the field after a refusal.
        value: if error == Some(&PageError::BadEmail) {
            typed
        } else {
            ""
        },
        button,
        action: &action,
        csrf: &csrf,
        again,
        again_action: &format!("{base}/h/{}/send", row.session.id),
        note,
        described: &described,
        back: &back_label,
        back_url: &back,
        brand: !tenant.brand_color.is_empty(),
        logo,
        base_path: &base,
    });
    let status = match error {
        Some(PageError::Over) => StatusCode::GONE,
        Some(
            PageError::BadEmail
            | PageError::BadCode
            | PageError::WrongCode(_)
            | PageError::CodeEnded
            | PageError::Refused,
        ) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(PageError::Limited(_) | PageError::NoMoreCodes) => StatusCode::TOO_MANY_REQUESTS,
        Some(PageError::NotSent) => StatusCode::BAD_GATEWAY,
        Some(PageError::Busy | PageError::Finishing) => StatusCode::SERVICE_UNAVAILABLE,
        None if done => StatusCode::OK,
        None if over => StatusCode::GONE,
        None => StatusCode::OK,
    };
    page_kit::page(
        status,
        html,
        origin(&row.session.return_url),
        Some(set_cookie),
    )
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

/// The query of a session's page after a new code was sent from it (the first code's send
/// goes to the page itself).
const RESENT: &str = "sent=again";

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
    let ctx = super::request_context(&req, &st);
    let done = if verify {
        st.services
            .codes
            .hosted_verify(&row, &tenant, &form.code, (&cookie, &ctx))
            .await
    } else {
        st.services
            .codes
            .hosted_send(&row, &tenant, &form.email, &ctx)
            .await
            .map(|()| {
                let page = page_of(&st, &row.session.id);
                if row.key_sealed.is_some() {
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
