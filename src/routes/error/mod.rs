//! The one place where errors become HTTP: problem+json for `/v1`, bare strings for compat.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::domain::policy::FieldError;
use crate::net_policy::HostRefusal;
use crate::service::ServiceError;

mod compat;
pub use compat::*;

/// An HTTP-level failure of the native API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("malformed body")]
    BadBody(Vec<FieldError>),
    #[error("payload too large")]
    TooLarge,
    #[error("unsupported media type")]
    MediaType,
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
    code: &str,
    title: &str,
    detail: &str,
    extra: Map<String, Value>,
) -> HttpResponse {
    let mut body = Map::new();
    body.insert("type".into(), json!(format!("/problems/{code}")));
    body.insert("title".into(), json!(title));
    body.insert("status".into(), json!(status.as_u16()));
    body.insert("code".into(), json!(code));
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

fn one(key: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(key.into(), v);
    m
}

impl ApiError {
    fn parts(
        &self,
    ) -> (
        StatusCode,
        &'static str,
        &'static str,
        String,
        Map<String, Value>,
    ) {
        use ServiceError as S;
        let none = Map::new;
        match self {
            ApiError::BadBody(e) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid request",
                "The request body is not valid.".into(),
                errors(e),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                "Request bodies are limited to 16 KiB.".into(),
                none(),
            ),
            ApiError::MediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "Send application/json.".into(),
                none(),
            ),
            ApiError::Method => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "This route does not take that method.".into(),
                none(),
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                "No such route.".into(),
                none(),
            ),
            ApiError::RegistrationClosed => (
                StatusCode::FORBIDDEN,
                "registration_closed",
                "Registration closed",
                "Tenants are created by the administrator.".into(),
                none(),
            ),
            ApiError::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Request timeout",
                "The request body did not arrive in time.".into(),
                none(),
            ),
            ApiError::IpLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                "Too many requests from this address (limits.per_ip_per_second, \
                 limits.per_ip_burst); retry after the time Retry-After gives."
                    .into(),
                one("limit", json!("ip")),
            ),
            ApiError::Service(e) => match e {
                S::Unauthorized => (
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Unauthorized",
                    "A valid bearer token is required.".into(),
                    none(),
                ),
                S::TenantNotFound => (
                    StatusCode::NOT_FOUND,
                    "tenant_not_found",
                    "Tenant not found",
                    "No such tenant.".into(),
                    none(),
                ),
                S::TemplateNotFound => (
                    StatusCode::NOT_FOUND,
                    "template_not_found",
                    "Template not found",
                    "The tenant has no template of its own for that locale.".into(),
                    none(),
                ),
                S::WebhookNotFound => (
                    StatusCode::NOT_FOUND,
                    "webhook_not_found",
                    "Webhook not found",
                    "The tenant has no webhook.".into(),
                    none(),
                ),
                S::SessionNotFound => (
                    StatusCode::NOT_FOUND,
                    "session_not_found",
                    "Session not found",
                    "The tenant has no hosted session with this id.".into(),
                    none(),
                ),
                S::TransportNotFound => (
                    StatusCode::NOT_FOUND,
                    "transport_not_found",
                    "Transport not found",
                    "The tenant has no HTTP transport.".into(),
                    none(),
                ),
                S::LinksOff => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "links_not_configured",
                    "Links not configured",
                    "Magic links need server.public_url, and this server has none.".into(),
                    none(),
                ),
                S::ChannelNotConfigured => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "channel_not_configured",
                    "Channel not configured",
                    "No transport of the tenant takes this channel: emails need smtp, an email provider or the HTTP transport; text messages an SMS provider or the HTTP transport (PUT /v1/tenant/providers/{channel}).".into(),
                    none(),
                ),
                S::CodeVerifierMismatch => (
                    StatusCode::FORBIDDEN,
                    "code_verifier_mismatch",
                    "Code verifier mismatch",
                    "A code_challenge was given when this started: the claim needs the code_verifier it was made from. Nothing was spent.".into(),
                    none(),
                ),
                S::AlreadyClaimed => (
                    StatusCode::CONFLICT,
                    "already_claimed",
                    "Already claimed",
                    "This outcome was claimed already; it is answered once.".into(),
                    none(),
                ),
                S::NotVerified => (
                    StatusCode::CONFLICT,
                    "not_verified",
                    "Not verified",
                    "Nothing to claim: it has not been verified (yet).".into(),
                    none(),
                ),
                S::PagesNotApproved => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "pages_not_approved",
                    "Pages not approved",
                    "This server lets anyone register: a tenant's hosted pages and magic links stay off until the admin approves them (PATCH /v1/tenants/{id} {\"pages_approved\": true}).".into(),
                    none(),
                ),
                S::RelayCheck(reason) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "relay_check_failed",
                    "Relay check failed",
                    format!("Connecting, TLS or logging in to the relay failed ({}); nothing was saved. {}", reason.as_str(), reason.advice()),
                    one("reason", json!(reason.as_str())),
                ),
                S::LogoInvalid => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "logo_invalid",
                    "Logo invalid",
                    "The logo must be a PNG image that decodes whole, of at most 1024×1024 pixels.".into(),
                    none(),
                ),
                S::RecipientSuppressed => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "recipient_suppressed",
                    "Recipient suppressed",
                    "The recipient is on the tenant's suppression list (a hard bounce, a complaint or added by hand): nothing was sent. DELETE /v1/tenant/suppressions/{recipient} removes it.".into(),
                    none(),
                ),
                S::SmsCountryNotAllowed(country) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "sms_country_not_allowed",
                    "SMS country not allowed",
                    match country {
                        Some(c) => format!("This tenant does not text numbers of {c}: add it to sms.allowed_countries (PATCH /v1/tenant {{\"sms\": {{\"allowed_countries\": [\"{c}\"]}}}}). Nothing was sent."),
                        None => "This number belongs to no country this tenant texts (sms.allowed_countries). Nothing was sent.".into(),
                    },
                    country.as_ref().map_or_else(none, |c| one("country", json!(c))),
                ),
                S::PhoneNumberNotAllowed => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "phone_number_not_allowed",
                    "Phone number not allowed",
                    "This number is not valid for its country, or is of a type that is not texted (premium-rate, shared-cost, UAN, voicemail, pager, VoIP, personal or unknown; fixed-line only with sms.allow_fixed_line). Nothing was sent.".into(),
                    none(),
                ),
                S::SmsVelocity { setting, .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "sms_velocity",
                    "Too many text messages",
                    format!("Too many text messages of this tenant went to numbers like this one in the last hour ({setting}); numbers that verified a code before are not held back. Retry later."),
                    one("limit", json!(setting.trim_start_matches("limits."))),
                ),
                S::DkimNotFound => (
                    StatusCode::NOT_FOUND,
                    "dkim_not_found",
                    "DKIM key not found",
                    "The tenant has no DKIM key: POST /v1/tenant/dkim makes one.".into(),
                    none(),
                ),
                S::EventUnverified => (
                    StatusCode::UNAUTHORIZED,
                    "event_unverified",
                    "Event not verified",
                    "The event's signature or credentials did not verify with the tenant's email provider settings (events_secret, events_public_key, events_username/events_password), or its timestamp is more than 5 minutes off. Nothing changed.".into(),
                    none(),
                ),
                S::EventMalformed(why) => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Invalid request",
                    format!("The event verified but is not one this provider sends: {why}. Nothing changed."),
                    none(),
                ),
                S::SuppressionNotFound => (
                    StatusCode::NOT_FOUND,
                    "suppression_not_found",
                    "Suppression not found",
                    "The recipient is not on the tenant's suppression list.".into(),
                    none(),
                ),
                S::ProviderNotFound => (
                    StatusCode::NOT_FOUND,
                    "provider_not_found",
                    "Provider not found",
                    "The tenant has no provider for this channel.".into(),
                    none(),
                ),
                S::TransportConflict => (
                    StatusCode::CONFLICT,
                    "transport_conflict",
                    "Transport conflict",
                    "Another transport of this channel is already primary (at most one is): make it \"fallback\" first, or use this one as \"fallback\".".into(),
                    none(),
                ),
                S::ProviderTest(e) => {
                    let mut extra = one("reason", json!(e.reason.as_str()));
                    if let Some(code) = &e.detail_code {
                        extra.insert("detail_code".into(), json!(code));
                    }
                    (
                        StatusCode::BAD_GATEWAY,
                        "delivery_failed",
                        "Delivery failed",
                        "The provider did not accept the test message.".into(),
                        extra,
                    )
                }
                S::WebhookRefused(code) => {
                    let detail = match *code {
                        "webhook_plaintext_not_allowed" => {
                            "http:// endpoints are not allowed on this server."
                        }
                        "webhook_host_unresolvable" => "The endpoint's host does not resolve.",
                        _ => "The endpoint's host is not allowed (private, local or special address).",
                    };
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        code,
                        "Webhook endpoint refused",
                        detail.into(),
                        none(),
                    )
                }
                S::IdempotencyMismatch => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_mismatch",
                    "Idempotency key reused",
                    "This Idempotency-Key was used with a different request body.".into(),
                    none(),
                ),
                S::IdempotencyInUse => (
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "Idempotency key in use",
                    "A request with this Idempotency-Key is still running; retry shortly.".into(),
                    none(),
                ),
                S::TemplateInvalid(list) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "template_invalid",
                    "Template refused",
                    "The template cannot be used; nothing was changed.".into(),
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
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Invalid request",
                    "Some fields are not valid.".into(),
                    errors(e),
                ),
                S::Unprocessable(e) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unprocessable",
                    "Unprocessable request",
                    "The request is well-formed, but a rule refuses it; `errors` says which.".into(),
                    errors(e),
                ),
                S::InvalidEmail(m) => (
                    StatusCode::BAD_REQUEST,
                    "invalid_email",
                    "Invalid email",
                    "The email address is not acceptable.".into(),
                    errors(&[FieldError::new("email", m.clone())]),
                ),
                S::SmtpPolicy(r) => {
                    let (code, detail) = match r {
                        HostRefusal::HostNotAllowed => (
                            "smtp_host_not_allowed",
                            "The SMTP host is a private, local or special address; an operator allows those with smtp.allow_private_hosts.",
                        ),
                        HostRefusal::PortNotAllowed => (
                            "smtp_port_not_allowed",
                            "The SMTP port is not one of smtp.allowed_ports (465, 587 and 2525 unless the operator changed them).",
                        ),
                        HostRefusal::PlaintextNotAllowed => (
                            "smtp_plaintext_not_allowed",
                            "tls = \"none\" is not allowed on this server; an operator allows it with smtp.allow_plaintext.",
                        ),
                        HostRefusal::Unresolvable => (
                            "smtp_host_unresolvable",
                            "The SMTP host does not resolve: check its name.",
                        ),
                    };
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        code,
                        "SMTP settings refused",
                        detail.into(),
                        none(),
                    )
                }
                S::SecretTaken => (
                    StatusCode::CONFLICT,
                    "conflict",
                    "Conflict",
                    "That secret key is already registered.".into(),
                    none(),
                ),
                S::Conflict(why) => (
                    StatusCode::CONFLICT,
                    "conflict",
                    "Conflict",
                    (*why).into(),
                    none(),
                ),
                S::TemplateLimit(n) => (
                    StatusCode::CONFLICT,
                    "template_limit_reached",
                    "Template limit reached",
                    format!("A tenant stores at most {n} templates; delete one first."),
                    none(),
                ),
                S::ResendLimit(n) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "resend_limit_reached",
                    "Resend limit reached",
                    format!(
                        "A key is sent at most {n} new codes (otp.max_resends); mint a new one."
                    ),
                    none(),
                ),
                S::RateLimited { kind, .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests",
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
                S::Delivery(reason) => (
                    StatusCode::BAD_GATEWAY,
                    "delivery_failed",
                    "Delivery failed",
                    format!(
                        "The tenant's transports did not accept the message. {}",
                        reason.advice()
                    ),
                    one("reason", json!(reason.as_str())),
                ),
                S::Overloaded => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "Overloaded",
                    "The server is busy; retry shortly.".into(),
                    none(),
                ),
                S::Unavailable(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "The database cannot take this request now; nothing was changed. Retry shortly."
                        .into(),
                    none(),
                ),
                S::OtpFailed => (
                    StatusCode::GONE,
                    "otp_failed",
                    "Code not delivered",
                    "The code's message could not be delivered; request a new code.".into(),
                    none(),
                ),
                S::OtpNotFound => (
                    StatusCode::NOT_FOUND,
                    "otp_not_found",
                    "Code not found",
                    "No such code.".into(),
                    none(),
                ),
                S::OtpExpired => (
                    StatusCode::GONE,
                    "otp_expired",
                    "Code expired",
                    "The code has expired.".into(),
                    none(),
                ),
                S::OtpUsed => (
                    StatusCode::GONE,
                    "otp_used",
                    "Code already used",
                    "The code was already verified.".into(),
                    none(),
                ),
                S::OtpSuperseded => (
                    StatusCode::GONE,
                    "otp_superseded",
                    "Code superseded",
                    "A newer code was sent.".into(),
                    none(),
                ),
                S::OtpCancelled => (
                    StatusCode::GONE,
                    "otp_cancelled",
                    "Code cancelled",
                    "The code was cancelled.".into(),
                    none(),
                ),
                S::AttemptsExhausted => (
                    StatusCode::GONE,
                    "attempts_exhausted",
                    "Attempts exhausted",
                    "Too many wrong guesses; request a new code.".into(),
                    none(),
                ),
                S::Mismatch { attempts_remaining } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "otp_mismatch",
                    "Code does not match",
                    "The code does not match.".into(),
                    one("attempts_remaining", json!(attempts_remaining)),
                ),
                S::Internal(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
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
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Service(ServiceError::Internal(cause)) => {
                tracing::error!(cause = %cause, "internal error")
            }
            ApiError::Service(ServiceError::Unavailable(cause)) => {
                tracing::warn!(cause = %cause, "database unavailable")
            }
            _ => {}
        }
        let (status, code, title, detail, extra) = self.parts();
        let mut resp = problem(status, code, title, &detail, extra);
        let h = resp.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body is not waited for: the connection ends here.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
