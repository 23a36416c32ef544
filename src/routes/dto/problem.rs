//! Problem documents (RFC 9457) as the API description shows them: the body, its error
//! codes, and the responses the paths share.

use serde::Serialize;
use utoipa::ToSchema;

use crate::service::ErrorCode;

/// The stable machine-readable error codes: the API description's list is
/// [`ErrorCode::ALL`], the one list the answers are made from.
#[derive(Serialize)]
pub struct ProblemCode;

impl utoipa::PartialSchema for ProblemCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("The stable machine-readable error codes."))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl ToSchema for ProblemCode {
    fn name() -> std::borrow::Cow<'static, str> {
        "ProblemCode".into()
    }
}

#[derive(Serialize, ToSchema)]
pub struct FieldErrorOut {
    pub field: String,
    /// With `template_invalid`: the line in that field, when it is known.
    pub line: Option<u32>,
    pub message: String,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<code>`
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub code: ProblemCode,
    pub detail: String,
    /// With `invalid_request` / `invalid_email` / `template_invalid`, and with the
    /// `webhook_*` refusals of an endpoint URL (the field that named it).
    pub errors: Option<Vec<FieldErrorOut>>,
    /// With `otp_mismatch`.
    pub attempts_remaining: Option<u32>,
    /// With `delivery_failed`: why the last transport did not take the message — an SMTP
    /// relay's (`smtp_host_not_allowed`, `smtp_unreachable`, `smtp_timeout`, `smtp_tls`,
    /// `smtp_auth`, `smtp_rejected`), the HTTP transport's (`http_rejected`, …) or a
    /// provider's (`provider_auth`, `provider_rejected`, `provider_unavailable`, …).
    pub reason: Option<String>,
    /// With `delivery_failed`, where there is one: the code beyond the reason — a provider's
    /// own error code (API.md §15.2), `oauth2_*` from a relay's OAuth2 token endpoint, or
    /// `no_session_free` (no session to the transport was free in time; nothing was sent).
    pub detail_code: Option<String>,
    /// With `sms_country_not_allowed`: the number's country (ISO 3166 alpha-2).
    pub country: Option<String>,
    /// With `phone_number_not_allowed`: which rule refused it — `invalid` (not a valid
    /// number of its country), `fixed_line` (texted only with `sms.allow_fixed_line`) or
    /// `not_texted` (premium-rate, shared-cost, UAN, voicemail, pager, VoIP, personal,
    /// unknown).
    #[schema(pattern = "^(invalid|fixed_line|not_texted)$")]
    pub number_type: Option<String>,
    /// With `rate_limited`: the limit that refused (`ip`, `recipient`, `cooldown`, `tenant`,
    /// `failures`, `test_sends`); `detail` names its setting.
    pub limit: Option<String>,
}

/// The problem responses several routes share: one definition each, referenced from every
/// route that can answer them (`components/responses` in the document).
pub mod problems {
    use utoipa::ToResponse;

    use super::Problem;

    /// unauthorized: the bearer token is missing, unknown, disabled or not the one this route takes
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Unauthorized(pub Problem);

    /// invalid_request: the body or a parameter is malformed; `errors` names each field
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct InvalidRequest(pub Problem);

    /// tenant_not_found
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct TenantNotFound(pub Problem);

    /// webhook_not_found: the tenant has no webhook
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct WebhookNotFound(pub Problem);

    /// transport_not_found: the tenant has no HTTP transport
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct TransportNotFound(pub Problem);

    /// otp_not_found: unknown, malformed, another tenant's or purged key
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct OtpNotFound(pub Problem);

    /// template_invalid, with `errors` [{field, line, message}]; nothing changed
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct TemplateInvalid(pub Problem);

    /// smtp_host_not_allowed, smtp_port_not_allowed, smtp_plaintext_not_allowed or smtp_host_unresolvable
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct SmtpPolicyRefused(pub Problem);

    /// request_timeout: the request's body did not arrive within
    /// `server.request_timeout_seconds`; nothing was done
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct RequestTimeout(pub Problem);

    /// payload_too_large: request bodies are limited to 16 KiB
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct PayloadTooLarge(pub Problem);

    /// rate_limited: a limit refused (every route has the per-address flood guard); `limit`
    /// names which, `Retry-After` says when to try again
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct RateLimited(pub Problem);

    /// unprocessable: well-formed, but a rule the schema cannot state refuses it; `errors`
    /// names each field
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Unprocessable(pub Problem);

    /// unavailable: the database did not answer (or was not writable) within its timeout;
    /// `Retry-After` says when to try again
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Unavailable(pub Problem);

    /// unsupported_media_type: the body is not `application/json`
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct UnsupportedMediaType(pub Problem);

    /// overloaded: four relay checks and provider test messages of the tenant (of the client, for a create) were in flight on this instance, or no outbound session was free (`delivery.max_sessions`) for `check_relay`; or unavailable: the database did not answer in time; nothing was saved
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct RelayCheckBusy(pub Problem);
}
