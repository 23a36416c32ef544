//! A hosted session's page as it stands (API.md §14.1): its words in the session's language,
//! what it asks for (the address, the send, the code), the error shown, the note and links
//! around the form, and the status it answers with.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use super::page_kit;
use super::AppState;
use crate::domain::email::mask;
use crate::domain::links::origin;
use crate::domain::locale::Locale;
use crate::domain::tenant::Tenant;
use crate::pages::{self, HostedPage, PageStrings};
use crate::service::codes::hosted::{session_redirect, status_of, PageError};
use crate::storage::SessionRow;

/// The cookie the pages' CSRF tokens are bound to.
pub(super) const COOKIE: &str = "__Host-otpmint_hosted";

/// The query of a session's page after a new code was sent from it (the first code's send
/// goes to the page itself).
pub(super) const RESENT: &str = "sent=again";

/// The session's pages' words: the first language of the §8 chain with pages (the session's
/// locale, its language, the tenant's default, its language, English).
pub(super) fn words(row: &SessionRow, tenant: &Tenant) -> &'static PageStrings {
    let chain = crate::messages::chain(row.session.locale.as_ref(), &tenant.default_locale);
    let lang = chain
        .iter()
        .map(Locale::language)
        .find(|l| crate::messages::LANGUAGES.contains(&l.as_str()))
        .unwrap_or_else(Locale::english);
    PageStrings::of(lang.as_str())
}

/// Render the session's page as it stands, with `error` shown.
pub(super) async fn render(
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
    // An open session whose way back the tenant no longer allows cannot be completed (its
    // code is not checked, none is sent): the page says so, not that it expired or failed.
    let withdrawn = status_now == "open"
        && session_redirect(
            &row.session.return_url,
            &row.session.id,
            &tenant.allowed_return_urls,
        )
        .is_none();
    let over = status_now != "open" || error == Some(&PageError::Over) || withdrawn;
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
    // A page with no form: its title and lead only.
    let no_form =
        |title: &str, lead: String| (title.to_string(), lead, "", "", "", String::new(), "");
    let (title, lead, field, label, button, action, again) = if error == Some(&PageError::Finishing)
    {
        no_form(s.finishing_title, s.finishing_lead.to_string())
    } else if done {
        no_form(s.done_title, s.done_lead.to_string())
    } else if over {
        let lead = if withdrawn {
            s.withdrawn_lead
        } else {
            s.over_lead
        };
        no_form(s.over_title, PageStrings::with_app(lead, app))
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
            PageStrings::with_app(s.email_title, app),
            s.send_lead.replace("{email}", &mask(email)),
            "send",
            "",
            s.send,
            format!("{base}/h/{}/send", row.session.id),
            "",
        )
    } else {
        (
            PageStrings::with_app(s.email_title, app),
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
    let back_label = PageStrings::with_app(s.back, app);
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
    let names_app = title == PageStrings::with_app(s.email_title, app);
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
        // What the person typed, back in the field after any error (a wait, a send that
        // failed: the address was fine).
        value: if field == "email" && error.is_some() {
            typed
        } else {
            ""
        },
        // About the field shown: an address refused (`Refused` on the code's page comes
        // from "send a new code", not from the code typed), a code that is not the one.
        invalid: match field {
            "email" => matches!(error, Some(PageError::BadEmail | PageError::Refused)),
            "code" => matches!(error, Some(PageError::BadCode | PageError::WrongCode(_))),
            _ => false,
        },
        focus_again: error == Some(&PageError::CodeEnded) && !again.is_empty(),
        button,
        action: &action,
        csrf: &csrf,
        seen: row.attempts_used.unwrap_or(0),
        sent: &row.sent_mark(),
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
