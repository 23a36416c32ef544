//! Test mode's routes (API.md §13.1–§13.2): the tenant's test recipients
//! (`/v1/tenant/test-recipients`) and its test inbox (`/v1/tenant/test-inbox`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Body, TenantAuth};
use super::dto::problems;
use super::error::ApiError;
use super::respond::{json, no_store};
use super::State;
use crate::clock::rfc3339;
use crate::domain::test_mode::TestRecipient;
use crate::domain::Millis;
use crate::service::tenants::test_mode::TestRecipientInput;

use super::respond::parse_time;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRecipientBody {
    /// An address (`review@acme.example`), a number (`+15551234567`), or a pattern with `*`
    /// (`*@test.acme.example`, `+1555*`).
    #[serde(rename = "match")]
    pattern: String,
    /// A fixed code of the tenant's code length, on an exact address or number only; stored
    /// hashed, never shown again.
    code: Option<String>,
    /// RFC 3339, at most 90 days ahead.
    expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRecipientsBody {
    /// At most 100 entries; replaces the list.
    #[serde(deserialize_with = "super::strict::objects")]
    recipients: Vec<TestRecipientBody>,
}

#[derive(Serialize, ToSchema)]
pub struct TestRecipientOut {
    #[serde(rename = "match")]
    pub pattern: String,
    /// Whether it has a fixed code (the code itself is never shown).
    pub fixed_code: bool,
    pub expires_at: String,
    /// An expired entry is inert.
    pub expired: bool,
    /// When its fixed code's failure budget ran out (`limits.test_code_max_failures`): its
    /// mints get a random code until the list is stored again.
    pub disabled_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TestRecipientsOut {
    pub recipients: Vec<TestRecipientOut>,
}

impl TestRecipientsOut {
    fn of(list: &[TestRecipient], now: Millis) -> Self {
        TestRecipientsOut {
            recipients: list
                .iter()
                .map(|t| TestRecipientOut {
                    pattern: t.pattern.as_str().to_string(),
                    fixed_code: t.fixed.is_some(),
                    expires_at: rfc3339(t.expires_at),
                    expired: t.expires_at <= now,
                    disabled_at: t.disabled_at.map(rfc3339),
                })
                .collect(),
        }
    }
}

#[utoipa::path(put, path = "/v1/tenant/test-recipients", tag = "test mode",
    description = "Replace the tenant's test recipients (API.md §13.1). A mint to a live entry's recipient sends nothing to any relay: its message goes to the test inbox and the answer says `\"test\": true`. Every change is audited.",
    request_body = TestRecipientsBody,
    responses(
        (status = 200, description = "The list as stored", body = TestRecipientsOut),
        (status = 400, response = problems::InvalidRequest),
    ),
    security(("secret_key" = [])))]
pub async fn put_test_recipients(t: TenantAuth, st: State, body: Body) -> ApiResult {
    let ctx = super::request_context(&body.req, &st);
    let b: TestRecipientsBody = body.json().await?;
    let mut input = Vec::with_capacity(b.recipients.len());
    for (i, r) in b.recipients.into_iter().enumerate() {
        input.push(TestRecipientInput {
            expires_at: parse_time(&format!("recipients[{i}].expires_at"), &r.expires_at)?,
            pattern: r.pattern,
            code: r.code,
        });
    }
    let list = st
        .services
        .tenants
        .put_test_recipients(&t.0, input, &ctx)
        .await?;
    Ok(json(
        HttpResponse::Ok(),
        &TestRecipientsOut::of(&list, st.services.core.now()),
    ))
}

#[utoipa::path(get, path = "/v1/tenant/test-recipients", tag = "test mode",
    responses(
        (status = 200, description = "The tenant's test recipients", body = TestRecipientsOut),
    ),
    security(("secret_key" = [])))]
pub async fn get_test_recipients(t: TenantAuth, st: State) -> ApiResult {
    let list = st.services.tenants.test_recipients(&t.0.id).await?;
    Ok(json(
        HttpResponse::Ok(),
        &TestRecipientsOut::of(&list, st.services.core.now()),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Only the messages to this address or number (a number's `+` as `%2B`, or as is).
    to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TestMessageOut {
    pub to: String,
    pub subject: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    pub received_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct TestInboxOut {
    /// Newest first; the last 100 of the tenant, kept one hour.
    pub messages: Vec<TestMessageOut>,
}

#[utoipa::path(get, path = "/v1/tenant/test-inbox", tag = "test mode",
    description = "The messages of test mints (API.md §13.1): the last 100 of the tenant, kept one hour, newest first. They hold codes: the answer is `Cache-Control: no-store`.",
    params(InboxQuery),
    responses(
        (status = 200, description = "The messages", body = TestInboxOut),
        (status = 400, response = problems::InvalidRequest),
    ),
    security(("secret_key" = [])))]
pub async fn test_inbox(t: TenantAuth, st: State, q: web::Query<InboxQuery>) -> ApiResult {
    let to = q.to.as_deref().map(plus_read_as_space);
    let list = st
        .services
        .tenants
        .test_inbox(&t.0.id, to.as_deref())
        .await?;
    Ok(json(
        no_store(HttpResponse::Ok()),
        &TestInboxOut {
            messages: list
                .into_iter()
                .map(|m| TestMessageOut {
                    to: m.to,
                    subject: m.subject,
                    text: m.text,
                    html: m.html,
                    received_at: rfc3339(m.received_at),
                })
                .collect(),
        },
    ))
}

/// `?to=+15551234567` written without encoding its `+`: a query decodes `+` as a space. No
/// address or number starts with a space, so a space before a digit is the `+` meant.
fn plus_read_as_space(to: &str) -> std::borrow::Cow<'_, str> {
    match to.strip_prefix(' ') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            std::borrow::Cow::Owned(format!("+{rest}"))
        }
        _ => std::borrow::Cow::Borrowed(to),
    }
}
