//! The one place where errors become HTTP: problem+json for `/v1`, bare strings for compat.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::domain::policy::FieldError;
use crate::service::{ErrorCode, ServiceError};

mod compat;
pub use compat::*;

/// An HTTP-level failure of the native API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("malformed body")]
    BadBody(Vec<FieldError>),
    /// Over the route's limit, in bytes.
    #[error("payload too large")]
    TooLarge(usize),
    /// The media type the route takes.
    #[error("unsupported media type")]
    MediaType(&'static str),
    #[error("method not allowed")]
    Method,
    #[error("not found")]
    NotFound,
    #[error("registration closed")]
    RegistrationClosed,
    #[error("rate limited")]
    IpLimited { retry_after_secs: u64 },
    #[error("request timeout")]
    RequestTimeout,
}

fn problem(
    status: StatusCode,
    code: ErrorCode,
    detail: &str,
    extra: Map<String, Value>,
) -> HttpResponse {
    let mut body = Map::new();
    body.insert("type".into(), json!(format!("/problems/{}", code.as_str())));
    body.insert("title".into(), json!(code.title()));
    body.insert("status".into(), json!(status.as_u16()));
    body.insert("code".into(), json!(code.as_str()));
    body.insert("detail".into(), json!(detail));
    body.extend(extra);
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .body(Value::Object(body).to_string())
}

fn errors(list: &[FieldError]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "errors".into(),
        Value::Array(
            list.iter()
                .map(|e| json!({"field": e.field, "message": e.message}))
                .collect(),
        ),
    );
    m
}

/// A body limit as people write it: `16 KiB`, `1 MiB`.
fn size(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

fn one(key: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(key.into(), v);
    m
}

impl ApiError {
    /// The answer's code: its status and title come with it ([`ErrorCode`]).
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Service(e) => e.code(),
            ApiError::BadBody(_) => ErrorCode::InvalidRequest,
            ApiError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::MediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Method => ErrorCode::MethodNotAllowed,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::RegistrationClosed => ErrorCode::RegistrationClosed,
            ApiError::IpLimited { .. } => ErrorCode::RateLimited,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
        }
    }

    /// The answer's `detail`, and the members only some codes carry.
    fn detail(&self) -> (String, Map<String, Value>) {
        use ServiceError as S;
        let none = Map::new;
        match self {
            ApiError::BadBody(e) => (
                "The request is not valid: `errors` names what to change.".into(),
                errors(e),
            ),
            ApiError::TooLarge(limit) => (
                format!("Request bodies here are limited to {}.", size(*limit)),
                none(),
            ),
            ApiError::MediaType(ty) => (format!("Send {ty}."), none()),
            ApiError::Method => (
                "This route does not take that method.".into(),
                none(),
            ),
            ApiError::NotFound => (
                "No such route.".into(),
                none(),
            ),
            ApiError::RegistrationClosed => (
                "Registration is closed on this server (registration.mode = \"closed\"): tenants are created with the CLI (otpmint tenant create).".into(),
                none(),
            ),
            ApiError::RequestTimeout => (
                "The request body did not arrive in time.".into(),
                none(),
            ),
            ApiError::IpLimited { .. } => (
                "Too many requests from this address (limits.per_ip_per_second, \
                 limits.per_ip_burst); retry after the time Retry-After gives."
                    .into(),
                one("limit", json!("ip")),
            ),
            ApiError::Service(e) => match e {
                S::Unauthorized => (
                    "A valid bearer token is required.".into(),
                    none(),
                ),
                S::TenantNotFound => (
                    "No such tenant.".into(),
                    none(),
                ),
                S::TemplateNotFound => (
                    "The tenant has no template of its own for that locale.".into(),
                    none(),
                ),
                S::WebhookNotFound => (
                    "The tenant has no webhook.".into(),
                    none(),
                ),
                S::SessionNotFound => (
                    "The tenant has no hosted session with this id.".into(),
                    none(),
                ),
                S::TransportNotFound => (
                    "The tenant has no HTTP transport.".into(),
                    none(),
                ),
                S::LinksOff => (
                    "Magic links need server.public_url, and this server has none.".into(),
                    none(),
                ),
                S::ChannelNotConfigured => (
                    "No transport of the tenant takes this channel: emails need smtp, an email provider or the HTTP transport; text messages an SMS provider or the HTTP transport (PUT /v1/tenant/providers/{channel}).".into(),
                    none(),
                ),
                S::CodeVerifierMismatch => (
                    "A code_challenge was given when this started: the claim needs the code_verifier it was made from. Nothing was spent.".into(),
                    none(),
                ),
                S::AlreadyClaimed => (
                    "This outcome was claimed already; it is answered once.".into(),
                    none(),
                ),
                S::NotVerified => (
                    "Nothing to claim: it has not been verified (yet).".into(),
                    none(),
                ),
                S::PagesNotApproved => (
                    "This server lets anyone register: a tenant's hosted pages and magic links stay off until the admin approves them (PATCH /v1/tenants/{id} {\"pages_approved\": true}).".into(),
                    none(),
                ),
                S::RelayCheck(reason, code) => (
                    format!("Connecting, TLS or logging in to the relay failed ({}); nothing was saved. {}", reason.as_str(), reason.advice_with(code.as_deref())),
                    {
                        let mut m = one("reason", json!(reason.as_str()));
                        if let Some(c) = code {
                            m.insert("detail_code".into(), json!(c));
                        }
                        m
                    },
                ),
                S::LogoInvalid => (
                    "The logo must be a PNG image that decodes whole, of at most 1024×1024 pixels.".into(),
                    none(),
                ),
                S::RecipientSuppressed => (
                    "The recipient is on the tenant's suppression list (a hard bounce, a complaint or added by hand): nothing was sent. DELETE /v1/tenant/suppressions/{recipient} removes it.".into(),
                    none(),
                ),
                S::SmsCountryNotAllowed(country) => (
                    match country {
                        Some(c) => format!("This tenant does not text numbers of {c}: add it to sms.allowed_countries (PATCH /v1/tenant {{\"sms\": {{\"allowed_countries\": [\"{c}\"]}}}}). Nothing was sent."),
                        None => "This number belongs to no country this tenant texts (sms.allowed_countries). Nothing was sent.".into(),
                    },
                    country.as_ref().map_or_else(none, |c| one("country", json!(c))),
                ),
                S::PhoneNumberNotAllowed(why) => (
                    {
                        use crate::domain::sms_guard::NumberRefused as R;
                        match why {
                            R::Invalid => "This is not a valid number of its country (libphonenumber's metadata). Nothing was sent.",
                            R::FixedLine => "This is a fixed-line number: this tenant texts fixed lines only with sms.allow_fixed_line (PATCH /v1/tenant {\"sms\": {\"allow_fixed_line\": true}}). Nothing was sent.",
                            R::NotTexted => "This number is of a type that is never texted (premium-rate, shared-cost, UAN, voicemail, pager, VoIP, personal or unknown). Nothing was sent.",
                        }
                        .into()
                    },
                    one("number_type", json!(why.as_str())),
                ),
                S::SmsVelocity { setting, .. } => (
                    match setting.trim_start_matches("limits.") {
                        "sms_range_per_hour" => format!("Too many text messages of this tenant went to this number's range (the number without its last 3 digits) in the last hour ({setting}); numbers that verified a code before are not held back. Retry later."),
                        _ => format!("Too many text messages of this tenant went to numbers of this country whose code was not verified in the last hour ({setting}); numbers that verified a code before are not held back. Retry later."),
                    },
                    one("limit", json!(setting.trim_start_matches("limits."))),
                ),
                S::DkimNotFound => (
                    "The tenant has no DKIM key: POST /v1/tenant/dkim makes one.".into(),
                    none(),
                ),
                S::EventUnverified => (
                    "The event's signature or credentials did not verify with the tenant's email provider settings (events_secret, events_public_key, events_username/events_password), or its timestamp is more than 5 minutes off. Nothing changed.".into(),
                    none(),
                ),
                S::EventMalformed(why) => (
                    format!("The event verified but is not one this provider sends: {why}. Nothing changed."),
                    none(),
                ),
                S::SuppressionNotFound => (
                    "The recipient is not on the tenant's suppression list.".into(),
                    none(),
                ),
                S::ProviderNotFound => (
                    "The tenant has no provider for this channel.".into(),
                    none(),
                ),
                S::NoEventsProvider => (
                    "Events are received from postmark, resend, sendgrid, mailgun and ses (POST /v1/events/{provider}/{tenant_id}); this path names none of them.".into(),
                    none(),
                ),
                S::TransportConflict => (
                    "Another transport of this channel is already primary (at most one is): make it \"fallback\" first, or use this one as \"fallback\".".into(),
                    none(),
                ),
                S::ProviderTest(e) => {
                    let mut extra = one("reason", json!(e.reason.as_str()));
                    if let Some(code) = &e.detail_code {
                        extra.insert("detail_code".into(), json!(code));
                    }
                    (
                        format!(
                            "The provider did not take the test message. {}",
                            e.reason.advice()
                        ),
                        extra,
                    )
                }
                S::WebhookRefused(code, field) => {
                    let why = crate::service::endpoint_refusal(*code);
                    (why.into(), errors(&[FieldError::new(field, why)]))
                }
                S::IdempotencyMismatch => (
                    "This Idempotency-Key was used with a different request body.".into(),
                    none(),
                ),
                S::IdempotencyInUse => (
                    "A request with this Idempotency-Key is still running; retry shortly.".into(),
                    none(),
                ),
                S::TemplateInvalid(list) => (
                    "The template cannot be used; `errors` says where. Nothing was stored.".into(),
                    one(
                        "errors",
                        Value::Array(
                            list.iter()
                                .map(|e| json!({"field": e.field, "line": e.line, "message": e.message}))
                                .collect(),
                        ),
                    ),
                ),
                S::Invalid(e) => (
                    "Some fields are not valid.".into(),
                    errors(e),
                ),
                S::Unprocessable(e) => (
                    "The request is well-formed, but a rule refuses it; `errors` says which.".into(),
                    errors(e),
                ),
                S::InvalidEmail(m) => (
                    "The email address is not acceptable.".into(),
                    errors(&[FieldError::new("email", m.clone())]),
                ),
                S::SmtpPolicy(r) => (r.advice(), none()),
                S::SecretTaken => (
                    "That secret key is already registered.".into(),
                    none(),
                ),
                S::Conflict(why) => (
                    (*why).into(),
                    none(),
                ),
                S::TemplateLimit(n) => (
                    format!("A tenant stores at most {n} templates; delete one first."),
                    none(),
                ),
                S::ResendLimit(n) => (
                    format!(
                        "A key is sent at most {n} new codes (otp.max_resends); mint a new one."
                    ),
                    none(),
                ),
                S::RateLimited { kind, .. } => (
                    // The limit that refused, by its setting (API.md §18.8).
                    match kind {
                        crate::service::LimitKind::Recipient => "Too many codes were sent to this recipient recently (limits.recipient_max_sends per limits.recipient_window_seconds); retry later.",
                        crate::service::LimitKind::Cooldown => "A code was sent to this recipient moments ago (limits.resend_cooldown_seconds); retry later.",
                        crate::service::LimitKind::Tenant => "This tenant sent its hourly maximum (limits.tenant_max_sends_per_hour); retry later.",
                        crate::service::LimitKind::Failures => "Too many wrong codes for this recipient recently (limits.recipient_max_failures); retry later.",
                        crate::service::LimitKind::TestSends => "This tenant made its hourly maximum of test mints (limits.test_sends_per_hour); retry later.",
                    }
                    .into(),
                    one("limit", json!(kind.as_str())),
                ),
                S::Delivery(reason, code) => {
                    let mut extra = one("reason", json!(reason.as_str()));
                    if let Some(code) = code {
                        extra.insert("detail_code".into(), json!(code));
                    }
                    (
                        format!(
                            "The tenant's transports did not accept the message. {}",
                            reason.advice_with(code.as_deref())
                        ),
                        extra,
                    )
                }
                S::Overloaded => (
                    "The server is busy; retry shortly.".into(),
                    none(),
                ),
                S::Unavailable(_) => (
                    "The service cannot take this request now: its database, or a service this \
                     request needs, did not answer in time. Nothing was changed; retry shortly."
                        .into(),
                    none(),
                ),
                S::OtpFailed => (
                    "The code's message could not be delivered; request a new code.".into(),
                    none(),
                ),
                S::OtpNotFound => (
                    "No such code.".into(),
                    none(),
                ),
                S::OtpExpired => (
                    "The code has expired.".into(),
                    none(),
                ),
                S::OtpUsed => (
                    "The code was already verified.".into(),
                    none(),
                ),
                S::OtpSuperseded => (
                    "A newer code was sent.".into(),
                    none(),
                ),
                S::OtpCancelled => (
                    "The code was cancelled.".into(),
                    none(),
                ),
                S::AttemptsExhausted => (
                    "Too many wrong guesses; request a new code.".into(),
                    none(),
                ),
                S::Mismatch { attempts_remaining } => (
                    "The code does not match.".into(),
                    one("attempts_remaining", json!(attempts_remaining)),
                ),
                S::Internal(_) => (
                    "Something went wrong on our side.".into(),
                    none(),
                ),
            },
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::IpLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Service(ServiceError::RateLimited {
                retry_after_secs, ..
            }) => Some(*retry_after_secs),
            ApiError::Service(ServiceError::SmsVelocity {
                retry_after_secs, ..
            }) => Some(*retry_after_secs),
            ApiError::Service(ServiceError::Overloaded) => Some(1),
            ApiError::Service(ServiceError::Unavailable(_)) => Some(1),
            ApiError::Service(ServiceError::IdempotencyInUse) => Some(1),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Service(ServiceError::Internal(cause)) => {
                tracing::error!(cause = %cause, "internal error")
            }
            ApiError::Service(ServiceError::Unavailable(cause)) => {
                tracing::warn!(cause = %cause, "unavailable: the database, or a service this request needs, did not answer")
            }
            _ => {}
        }
        let (status, (detail, extra)) = (self.status_code(), self.detail());
        let mut resp = problem(status, self.code(), &detail, extra);
        let h = resp.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
