//! A tenant's providers per channel (API.md §15.2), by the tenant with its secret key or by
//! the admin: store, show (never a secret), remove, and send one test message.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Body, Owner};
use super::dto::{problems, Problem};
use super::error::ApiError;
use super::respond::json;
use super::State;
use crate::domain::email::RecipientEmail;
use crate::domain::provider::ProviderInput;
use crate::domain::recipient::{Channel, PhoneNumber, Recipient, PHONE_RULE};
use crate::service::tenants::providers::ProviderShown;
use crate::service::ServiceError;

type ApiResult = Result<HttpResponse, ApiError>;

/// A provider's settings. Which fields a kind takes (API.md §15.2): postmark
/// `server_token`, `from`, `message_stream`?; resend and sendgrid `api_key`, `from`; mailgun
/// `api_key`, `domain`, `region` (`us`|`eu`), `from`; ses `access_key_id`,
/// `secret_access_key`, `region`, `from`, `configuration_set`?; twilio `account_sid`,
/// `auth_token`, `from` (E.164) or `messaging_service_sid`; vonage `api_key`, `api_secret`,
/// `from`. Secrets are sealed at once and never shown.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// email: `postmark`, `resend`, `sendgrid`, `mailgun`, `ses`; sms: `twilio`, `vonage`
    kind: String,
    /// `primary` (default) or `fallback` (API.md §15.3)
    #[serde(rename = "use")]
    use_as: Option<String>,
    server_token: Option<String>,
    from: Option<String>,
    message_stream: Option<String>,
    api_key: Option<String>,
    domain: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    configuration_set: Option<String>,
    account_sid: Option<String>,
    auth_token: Option<String>,
    messaging_service_sid: Option<String>,
    api_secret: Option<String>,
    /// Resend: the webhook's `whsec_…` signing secret; Mailgun: the webhook signing key
    /// (API.md §16.2). Sealed, never shown.
    events_secret: Option<String>,
    /// SendGrid: the Event Webhook's verification key (base64).
    events_public_key: Option<String>,
    /// Postmark: the Basic credentials put on the webhook URL (the password sealed).
    events_username: Option<String>,
    events_password: Option<String>,
    /// SES: the SNS topic its events come from (without it, only topics of the AWS account
    /// the SES credentials belong to are taken, as STS names it).
    events_topic_arn: Option<String>,
}

impl ProviderBody {
    fn parse(self, channel: Channel) -> Result<ProviderInput, ApiError> {
        let given = [
            ("server_token", self.server_token.as_deref()),
            ("from", self.from.as_deref()),
            ("message_stream", self.message_stream.as_deref()),
            ("api_key", self.api_key.as_deref()),
            ("domain", self.domain.as_deref()),
            ("region", self.region.as_deref()),
            ("access_key_id", self.access_key_id.as_deref()),
            ("secret_access_key", self.secret_access_key.as_deref()),
            ("configuration_set", self.configuration_set.as_deref()),
            ("account_sid", self.account_sid.as_deref()),
            ("auth_token", self.auth_token.as_deref()),
            (
                "messaging_service_sid",
                self.messaging_service_sid.as_deref(),
            ),
            ("api_secret", self.api_secret.as_deref()),
            ("events_secret", self.events_secret.as_deref()),
            ("events_public_key", self.events_public_key.as_deref()),
            ("events_username", self.events_username.as_deref()),
            ("events_password", self.events_password.as_deref()),
            ("events_topic_arn", self.events_topic_arn.as_deref()),
        ];
        ProviderInput::parse(channel, &self.kind, self.use_as.as_deref(), &given)
            .map_err(|e| ServiceError::Invalid(e).into())
    }
}

/// A provider as shown: its kind, use and the settings that are not secret.
#[derive(Serialize, ToSchema)]
pub struct ProviderOut {
    /// `email` or `sms`
    pub channel: String,
    pub kind: String,
    /// `primary` or `fallback`
    #[serde(rename = "use")]
    pub use_as: String,
    /// The settings that are not secret, by name (`from`, `region`, `domain`, …).
    #[serde(flatten)]
    pub settings: BTreeMap<String, String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderTestBody {
    /// An email address (email channel) or an E.164 number (sms channel).
    to: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderTestOut {
    pub accepted: bool,
    /// The provider's id of the test message, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
}

/// The `{channel}` of a provider's path; an unknown channel is 404 `not_found`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChannelPath {
    /// `email` or `sms`
    channel: String,
}

impl ChannelPath {
    fn parse(&self) -> Result<Channel, ApiError> {
        Channel::parse(&self.channel).ok_or(ApiError::NotFound)
    }
}

fn shown(p: ProviderShown) -> HttpResponse {
    json(
        HttpResponse::Ok(),
        &ProviderOut {
            channel: p.channel.as_str().into(),
            kind: p.kind.as_str().into(),
            use_as: p.use_as.as_str().into(),
            settings: p.settings,
        },
    )
}

#[utoipa::path(put, path = "/v1/tenant/providers/{channel}", tag = "providers",
    description = "Store (or replace) the tenant's provider of a channel. The settings' shape is checked (400 names the field); nothing is sent. Secrets are sealed at once and never shown.",
    params(ChannelPath),
    request_body = ProviderBody,
    responses(
        (status = 200, description = "The provider, without its secrets", body = ProviderOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 404, description = "not_found: no such channel", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "transport_conflict: another transport of the channel is primary", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn put_provider(
    o: Owner,
    st: State,
    path: web::Path<ChannelPath>,
    body: Body,
) -> ApiResult {
    let channel = path.parse()?;
    let body: ProviderBody = body.json().await?;
    let input = body.parse(channel)?;
    let tenants = &st.services.tenants;
    Ok(shown(tenants.put_provider(&o.0.id, channel, input).await?))
}

#[utoipa::path(get, path = "/v1/tenant/providers/{channel}", tag = "providers",
    params(ChannelPath),
    responses(
        (status = 200, description = "The provider, without its secrets", body = ProviderOut),
        (status = 404, description = "provider_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn get_provider(o: Owner, st: State, path: web::Path<ChannelPath>) -> ApiResult {
    Ok(shown(
        st.services.tenants.provider_shown(&o.0, path.parse()?)?,
    ))
}

#[utoipa::path(delete, path = "/v1/tenant/providers/{channel}", tag = "providers",
    params(ChannelPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "provider_not_found", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn delete_provider(o: Owner, st: State, path: web::Path<ChannelPath>) -> ApiResult {
    let tenants = &st.services.tenants;
    tenants.delete_provider(&o.0.id, path.parse()?).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/tenant/providers/{channel}/test", tag = "providers",
    description = "Send one test message through the provider (no code is minted). A text message passes the SMS fraud guard as a mint's does (API.md §17.1): the tenant's countries, the number's type, the velocity limits (it counts as a send that never verifies). Audited as `provider.test`.",
    params(ChannelPath),
    request_body = ProviderTestBody,
    responses(
        (status = 200, description = "The provider accepted it", body = ProviderTestOut),
        (status = 400, response = problems::InvalidRequest),
        (status = 404, description = "provider_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "sms_country_not_allowed, phone_number_not_allowed: the SMS fraud guard refused the number; recipient_suppressed: it is on the tenant's suppression list", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: the per-address limit; or sms_velocity: over a velocity limit of the SMS fraud guard (both with Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "delivery_failed with `reason` (provider_auth, provider_rejected, provider_unavailable, provider_unreachable) and the provider's `detail_code`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "overloaded: the tenant already had four relay checks and provider test messages in flight on this instance, or no outbound session was free (`delivery.max_sessions`); or unavailable: the database did not answer in time", body = Problem, content_type = "application/problem+json"),
    ),
    security(("secret_key" = [])))]
pub async fn test_provider(
    o: Owner,
    st: State,
    path: web::Path<ChannelPath>,
    body: Body,
) -> ApiResult {
    let (t, channel) = (&o.0, path.parse()?);
    let ctx = super::request_context(&body.req, &st);
    let body: ProviderTestBody = body.json().await?;
    let to = if channel.is_phone() {
        Recipient::Phone(
            PhoneNumber::parse(&body.to).ok_or_else(|| ServiceError::field("to", PHONE_RULE))?,
        )
    } else {
        Recipient::Email(
            RecipientEmail::parse(&body.to)
                .map_err(|e| ServiceError::field("to", format!("is not an email address: {e}")))?,
        )
    };
    let id = st
        .services
        .tenants
        .test_provider(t, channel, &to, &ctx)
        .await?;
    Ok(json(
        HttpResponse::Ok(),
        &ProviderTestOut {
            accepted: true,
            provider_message_id: id,
        },
    ))
}
