//! Template routes (API.md §8): each serves the tenant itself (`/v1/tenant/templates…`)
//! and the admin (`/v1/tenants/{id}/templates…`, `auth::Owner`). Bodies up to 256 KiB here
//! (16 KiB elsewhere).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Body, Owner};
use super::dto::{problems, Problem};
use super::error::ApiError;
use super::respond::{json, parse_locale};
use super::State;
use crate::clock::rfc3339;
use crate::domain::locale::{Locale, LOCALE_RULE};
use crate::domain::purpose::Purpose;
use crate::domain::template::TenantTemplate;
use crate::messages::Fields;
use crate::service::tenants::templates::{Message, PreviewInput};
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

/// Template bodies may be up to three 64 KiB fields and JSON escaping.
pub const TEMPLATE_BODY_LIMIT: usize = 256 * 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// ≤ 200 characters, one line
    subject: String,
    /// ≤ 64 KiB of UTF-8; must contain `{{ code }}`
    text: String,
    /// ≤ 64 KiB of UTF-8; must show `{{ code }}` where a reader sees text (not only in a
    /// comment, an attribute, the head, style or script); variables are HTML-escaped
    html: Option<String>,
    /// The text message (API.md §12.3): must contain `{{ code }}`, ≤ 320 characters
    /// rendered; without it the built-in text message of the language is used
    sms: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    locale: Option<String>,
    purpose: Option<String>,
    subject: Option<String>,
    text: Option<String>,
    /// The HTML part; `null`: none (a text-only template), absent: the resolved template's.
    #[serde(default, deserialize_with = "super::strict::present")]
    #[schema(value_type = Option<String>)]
    html: Option<Option<String>>,
    sms: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TemplateOut {
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub sms: Option<String>,
    pub updated_at: String,
}

impl From<&TenantTemplate> for TemplateOut {
    fn from(t: &TenantTemplate) -> Self {
        TemplateOut {
            locale: t.locale.clone(),
            subject: t.subject.clone(),
            text: t.text.clone(),
            html: t.html.clone(),
            sms: t.sms.clone(),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TemplatesOut {
    /// The locale messages fall back to.
    pub default_locale: String,
    /// The tenant's own templates (the built-in ones are not listed).
    pub templates: Vec<TemplateOut>,
}

/// A rendered preview (code `123456`).
#[derive(Serialize, ToSchema)]
pub struct PreviewOut {
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The text message.
    pub sms: Option<String>,
}

impl From<Message> for PreviewOut {
    fn from(m: Message) -> Self {
        PreviewOut {
            locale: m.locale.as_str().to_string(),
            subject: m.rendered.subject,
            text: m.rendered.text,
            html: m.rendered.html,
            sms: m.rendered.sms,
        }
    }
}

/// The `{locale}` of a template's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LocalePath {
    /// Language tag, e.g. `en` or `pt-BR`
    locale: String,
}

fn path_locale(p: &LocalePath) -> Result<Locale, ApiError> {
    Locale::parse(&p.locale).ok_or_else(|| ServiceError::field("locale", LOCALE_RULE).into())
}

#[utoipa::path(get, path = "/v1/tenant/templates", tag = "templates",
    responses(
        (status = 200, description = "The tenant's own templates and its default locale", body = TemplatesOut),
    ),
    security(("secret_key" = [])))]
pub async fn list_templates(o: Owner, st: State) -> ApiResult {
    let rows = st.services.tenants.templates(&o.0.id).await?;
    Ok(json(
        HttpResponse::Ok(),
        &TemplatesOut {
            default_locale: o.0.default_locale.as_str().to_string(),
            templates: rows.iter().map(TemplateOut::from).collect(),
        },
    ))
}

#[utoipa::path(put, path = "/v1/tenant/templates/{locale}", tag = "templates",
    description = "Store the template of one locale (MiniJinja; variables code, ttl_seconds, ttl_minutes, expires_at, app_name, purpose, email, locale). Checked first: a refusal changes nothing.",
    params(LocalePath),
    request_body = TemplateBody,
    responses(
        (status = 200, description = "The stored template", body = TemplateOut),
        (status = 400, description = "invalid_request (bad locale tag, malformed body)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "template_limit_reached: the tenant holds templates.max_locales_per_tenant locales already", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large (over 256 KiB)", body = Problem, content_type = "application/problem+json"),
        (status = 422, response = problems::TemplateInvalid),
    ),
    security(("secret_key" = [])))]
pub async fn put_template(
    o: Owner,
    st: State,
    path: web::Path<LocalePath>,
    body: Body,
) -> ApiResult {
    let locale = path_locale(&path)?;
    let b: TemplateBody = body.json_up_to(TEMPLATE_BODY_LIMIT).await?;
    let fields = Fields {
        subject: b.subject,
        text: b.text,
        html: b.html,
        sms: b.sms,
    };
    let row = st
        .services
        .tenants
        .put_template(&o.0, &locale, fields)
        .await?;
    Ok(json(HttpResponse::Ok(), &TemplateOut::from(&row)))
}

#[utoipa::path(delete, path = "/v1/tenant/templates/{locale}", tag = "templates",
    description = "Remove the tenant's template of one locale; the built-in one for that language applies again.",
    params(LocalePath),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "invalid_request (bad locale tag)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "template_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn delete_template(o: Owner, st: State, path: web::Path<LocalePath>) -> ApiResult {
    let locale = path_locale(&path)?;
    st.services
        .tenants
        .delete_template(&o.0.id, &locale)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/tenant/templates/preview", tag = "templates",
    description = "Render unsaved fields over the template the locale resolves to, with code 123456. Saves nothing.",
    request_body = PreviewBody,
    responses(
        (status = 200, description = "The rendered message", body = PreviewOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 413, description = "payload_too_large (over 256 KiB)", body = Problem, content_type = "application/problem+json"),
        (status = 422, response = problems::TemplateInvalid),
    ),
    security(("secret_key" = [])))]
pub async fn preview_template(o: Owner, st: State, body: Body) -> ApiResult {
    let b: PreviewBody = body.json_up_to(TEMPLATE_BODY_LIMIT).await?;
    let input = PreviewInput {
        locale: parse_locale(b.locale.as_deref(), "locale")?,
        purpose: Purpose::parse(b.purpose.as_deref()).map_err(ServiceError::from)?,
        subject: b.subject,
        text: b.text,
        html: b.html,
        sms: b.sms,
    };
    let m = st.services.tenants.preview(&o.0, input).await?;
    Ok(json(HttpResponse::Ok(), &PreviewOut::from(m)))
}
