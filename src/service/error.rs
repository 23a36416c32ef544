//! What a use case answers when it does not succeed: [`ServiceError`], and the one list of
//! error codes ([`ErrorCode`]) with the HTTP status and title of each. The HTTP mapper, the
//! compat mapper, the audit log and the API description all read the code from here.

use crate::crypto::hashing::HashError;
use crate::crypto::keyring::KeyError;
use crate::domain::email::EmailError;
use crate::domain::policy::FieldError;
use crate::mailer::DeliveryReason;
use crate::net_policy::HostRefusal;
use crate::storage::StoreError;

/// Writes [`ErrorCode`] from one table: variant, code, HTTP status, title.
macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $title:literal;)*) => {
        /// The stable machine-readable error codes (API.md): every problem's `code`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order the API description lists them.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as answered (`snake_case`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status every answer with this code has.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// The problem document's `title`.
            pub const fn title(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $title,)*
                }
            }
        }

        impl std::fmt::Display for ErrorCode {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

error_codes! {
    InvalidRequest = "invalid_request", 400, "Invalid request";
    Unprocessable = "unprocessable", 422, "Unprocessable request";
    InvalidEmail = "invalid_email", 400, "Invalid email";
    Unauthorized = "unauthorized", 401, "Unauthorized";
    RegistrationClosed = "registration_closed", 403, "Registration closed";
    NotFound = "not_found", 404, "Not found";
    MethodNotAllowed = "method_not_allowed", 405, "Method not allowed";
    TenantNotFound = "tenant_not_found", 404, "Tenant not found";
    OtpNotFound = "otp_not_found", 404, "Code not found";
    Conflict = "conflict", 409, "Conflict";
    OtpExpired = "otp_expired", 410, "Code expired";
    OtpUsed = "otp_used", 410, "Code already used";
    OtpSuperseded = "otp_superseded", 410, "Code superseded";
    OtpCancelled = "otp_cancelled", 410, "Code cancelled";
    AttemptsExhausted = "attempts_exhausted", 410, "Attempts exhausted";
    PayloadTooLarge = "payload_too_large", 413, "Payload too large";
    UnsupportedMediaType = "unsupported_media_type", 415, "Unsupported media type";
    OtpMismatch = "otp_mismatch", 422, "Code does not match";
    SmtpHostNotAllowed = "smtp_host_not_allowed", 422, "SMTP settings refused";
    SmtpPortNotAllowed = "smtp_port_not_allowed", 422, "SMTP settings refused";
    SmtpPlaintextNotAllowed = "smtp_plaintext_not_allowed", 422, "SMTP settings refused";
    SmtpHostUnresolvable = "smtp_host_unresolvable", 422, "SMTP settings refused";
    RateLimited = "rate_limited", 429, "Too many requests";
    Internal = "internal", 500, "Internal error";
    DeliveryFailed = "delivery_failed", 502, "Delivery failed";
    Overloaded = "overloaded", 503, "Overloaded";
    Unavailable = "unavailable", 503, "Service unavailable";
    OtpFailed = "otp_failed", 410, "Code not delivered";
    RequestTimeout = "request_timeout", 408, "Request timeout";
    TemplateNotFound = "template_not_found", 404, "Template not found";
    TemplateInvalid = "template_invalid", 422, "Template refused";
    WebhookNotFound = "webhook_not_found", 404, "Webhook not found";
    WebhookHostNotAllowed = "webhook_host_not_allowed", 422, "Endpoint refused";
    WebhookPlaintextNotAllowed = "webhook_plaintext_not_allowed", 422, "Endpoint refused";
    WebhookHostUnresolvable = "webhook_host_unresolvable", 422, "Endpoint refused";
    IdempotencyKeyMismatch = "idempotency_key_mismatch", 422, "Idempotency key reused";
    IdempotencyKeyInUse = "idempotency_key_in_use", 409, "Idempotency key in use";
    TemplateLimitReached = "template_limit_reached", 409, "Template limit reached";
    ResendLimitReached = "resend_limit_reached", 429, "Resend limit reached";
    TransportNotFound = "transport_not_found", 404, "Transport not found";
    ChannelNotConfigured = "channel_not_configured", 422, "Channel not configured";
    LinksNotConfigured = "links_not_configured", 422, "Links not configured";
    SessionNotFound = "session_not_found", 404, "Session not found";
    ProviderNotFound = "provider_not_found", 404, "Provider not found";
    TransportConflict = "transport_conflict", 409, "Transport conflict";
    RecipientSuppressed = "recipient_suppressed", 422, "Recipient suppressed";
    SmsCountryNotAllowed = "sms_country_not_allowed", 422, "SMS country not allowed";
    PhoneNumberNotAllowed = "phone_number_not_allowed", 422, "Phone number not allowed";
    SmsVelocity = "sms_velocity", 429, "Too many text messages";
    EventUnverified = "event_unverified", 401, "Event not verified";
    DkimNotFound = "dkim_not_found", 404, "DKIM key not found";
    SuppressionNotFound = "suppression_not_found", 404, "Suppression not found";
    LogoInvalid = "logo_invalid", 422, "Logo invalid";
    RelayCheckFailed = "relay_check_failed", 422, "Relay check failed";
    PagesNotApproved = "pages_not_approved", 422, "Pages not approved";
    CodeVerifierMismatch = "code_verifier_mismatch", 403, "Code verifier mismatch";
    AlreadyClaimed = "already_claimed", 409, "Already claimed";
    NotVerified = "not_verified", 409, "Not verified";
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Recipient,
    Cooldown,
    Tenant,
    Failures,
    TestSends,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Recipient => "recipient",
            LimitKind::Cooldown => "cooldown",
            LimitKind::Tenant => "tenant",
            LimitKind::Failures => "failures",
            LimitKind::TestSends => "test_sends",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("tenant not found")]
    TenantNotFound,
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// Well-formed, but a rule the request's schema cannot state refuses it: fields that
    /// contradict each other, a range too wide, a value the tenant's state does not allow.
    #[error("unprocessable request")]
    Unprocessable(Vec<FieldError>),
    #[error("invalid email")]
    InvalidEmail(String),
    #[error("smtp host refused: {0}")]
    SmtpPolicy(HostRefusal),
    #[error("secret key already registered")]
    SecretTaken,
    #[error("rate limited")]
    RateLimited {
        retry_after_secs: u64,
        kind: LimitKind,
    },
    #[error("delivery failed")]
    /// The message was not accepted: its reason, and the code beyond it (a provider's own
    /// error code, `oauth2_unavailable`) when there is one.
    Delivery(DeliveryReason, Option<String>),
    #[error("overloaded")]
    Overloaded,
    /// The database, or a service the request needs (DNS, SNS), cannot take the work now
    /// (locked, full, unreachable, too slow): 503.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("otp not found")]
    OtpNotFound,
    #[error("otp expired")]
    OtpExpired,
    #[error("otp used")]
    OtpUsed,
    #[error("otp superseded")]
    OtpSuperseded,
    #[error("otp cancelled")]
    OtpCancelled,
    #[error("attempts exhausted")]
    AttemptsExhausted,
    #[error("otp failed")]
    OtpFailed,
    #[error("otp mismatch")]
    Mismatch { attempts_remaining: u32 },
    #[error("template not found")]
    TemplateNotFound,
    #[error("webhook not found")]
    WebhookNotFound,
    /// No such hosted session of this tenant: 404 `session_not_found`.
    #[error("session not found")]
    SessionNotFound,
    /// The tenant has no HTTP transport (API.md §12.2): 404 `transport_not_found`.
    #[error("transport not found")]
    TransportNotFound,
    /// A magic link asked for while `server.public_url` is empty: 422 `links_not_configured`.
    #[error("links not configured")]
    LinksOff,
    /// No transport takes the message's channel: 422 `channel_not_configured`.
    #[error("channel not configured")]
    ChannelNotConfigured,
    /// A wrong or missing PKCE verifier where a challenge was given: 403
    /// `code_verifier_mismatch` (the claim is not spent).
    #[error("code verifier mismatch")]
    CodeVerifierMismatch,
    /// The outcome was claimed already: 409 `already_claimed`.
    #[error("already claimed")]
    AlreadyClaimed,
    /// Nothing to claim yet: 409 `not_verified`.
    #[error("not verified")]
    NotVerified,
    /// Open registration and the admin has not approved the tenant's pages: 422
    /// `pages_not_approved`.
    #[error("pages not approved")]
    PagesNotApproved,
    /// `check_relay` found the relay unusable: 422 `relay_check_failed` with its reason
    /// (and `detail_code` where the failure has one); nothing was saved.
    #[error("relay check failed")]
    RelayCheck(DeliveryReason, Option<String>),
    /// A logo that is not a PNG that decodes whole, or is over 1024×1024: 422 `logo_invalid`.
    #[error("logo invalid")]
    LogoInvalid,
    /// The recipient is on the tenant's suppression list: 422 `recipient_suppressed`.
    #[error("recipient suppressed")]
    RecipientSuppressed,
    /// The SMS fraud guard (API.md §17.1): the number's country is not in the tenant's
    /// `sms.allowed_countries` (its ISO code, if it has one): 422 `sms_country_not_allowed`.
    #[error("sms country not allowed")]
    SmsCountryNotAllowed(Option<String>),
    /// The number is invalid for its country or of a type that is not texted: 422
    /// `phone_number_not_allowed`, naming which.
    #[error("phone number not allowed")]
    PhoneNumberNotAllowed(crate::domain::sms_guard::NumberRefused),
    /// Over a velocity limit of the SMS guard: 429 `sms_velocity` with Retry-After.
    #[error("sms velocity")]
    SmsVelocity {
        retry_after_secs: u64,
        /// The setting that refused it.
        setting: &'static str,
    },
    /// The tenant has no DKIM key: 404 `dkim_not_found`.
    #[error("dkim not found")]
    DkimNotFound,
    /// A provider event whose signature or credentials did not verify: 401
    /// `event_unverified`; nothing changed.
    #[error("event unverified")]
    EventUnverified,
    /// A verified provider event whose body is not that provider's: 400.
    #[error("event malformed: {0}")]
    EventMalformed(&'static str),
    /// No such entry on the tenant's suppression list: 404 `suppression_not_found`.
    #[error("suppression not found")]
    SuppressionNotFound,
    /// The tenant has no provider for the channel: 404 `provider_not_found`.
    #[error("provider not found")]
    ProviderNotFound,
    /// The events route's path names no provider otpmint receives events from: 404
    /// `provider_not_found`.
    #[error("no such events provider")]
    NoEventsProvider,
    /// A second transport marked primary for a channel: 409 `transport_conflict`.
    #[error("transport conflict")]
    TransportConflict,
    /// A test message through a provider failed: 502 `delivery_failed` with its reason and
    /// the provider's code.
    #[error("provider test failed")]
    ProviderTest(crate::domain::delivery::DeliveryError),
    /// An endpoint (a webhook's, the HTTP transport's, an OAuth2 token URL) refused by the
    /// outbound address policy: the problem code, and the field that named it.
    #[error("endpoint refused: {0}")]
    WebhookRefused(ErrorCode, String),
    #[error("idempotency key used with another body")]
    IdempotencyMismatch,
    #[error("idempotency key in use")]
    IdempotencyInUse,
    #[error("template invalid")]
    TemplateInvalid(Vec<crate::messages::TemplateError>),
    /// A change that could not be applied to the latest stored state: 409 `conflict`.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The tenant stores `templates.max_locales_per_tenant` templates already: 409.
    #[error("template limit reached")]
    TemplateLimit(u32),
    /// The key was resent `otp.max_resends` times already: 429 `resend_limit_reached`.
    #[error("resend limit reached")]
    ResendLimit(u32),
    #[error("internal: {0}")]
    Internal(String),
}

/// Why an endpoint (a webhook, an HTTP transport, an OAuth2 token URL) was refused, named
/// as API.md §18.8 asks: the setting that would allow it.
pub fn endpoint_refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::WebhookPlaintextNotAllowed => {
            "http:// endpoints are not allowed on this server; an operator allows them with webhooks.allow_plaintext."
        }
        ErrorCode::WebhookHostUnresolvable => "The endpoint's host does not resolve.",
        _ => "The endpoint's host is a private, local or special address; an operator allows those with webhooks.allow_private_hosts.",
    }
}

/// An address that is not one (400 `invalid_email`).
impl From<EmailError> for ServiceError {
    fn from(e: EmailError) -> Self {
        ServiceError::InvalidEmail(e.to_string())
    }
}

impl From<FieldError> for ServiceError {
    fn from(e: FieldError) -> Self {
        ServiceError::Invalid(vec![e])
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ServiceError::Unavailable(m),
            other => ServiceError::Internal(with_sources(&other)),
        }
    }
}

/// An error and every error under it (`a: b: c`), so the log of an internal error keeps the
/// whole chain, not only its outermost words.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        // thiserror's `#[error(transparent)]`/`{0}` already print their source.
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}

/// A keyring this process's master key does not open (another process rotated it) is this
/// instance's state, not the request's fault: 503, as when the database is away; anything
/// else is internal.
impl From<KeyError> for ServiceError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::WrongMasterKey { .. } => ServiceError::Unavailable(format!(
                "{e}: the active master key is needed here (a server: write it to its key file, which it reads again, or restart it with that key)"
            )),
            e => ServiceError::Internal(e.to_string()),
        }
    }
}

impl From<HashError> for ServiceError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => ServiceError::Overloaded,
            HashError::Internal(m) => ServiceError::Internal(m),
        }
    }
}

impl ServiceError {
    pub fn field(field: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::Invalid(vec![FieldError::new(field, message)])
    }

    /// A well-formed field a rule refuses (422 `unprocessable`).
    pub fn rule(field: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::Unprocessable(vec![FieldError::new(field, message)])
    }

    /// The error's code: what the HTTP answer's `code`, status and title are made of, what
    /// the compat routes and the audit log decide by.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        use ServiceError as S;
        match self {
            S::Unauthorized => C::Unauthorized,
            S::TenantNotFound => C::TenantNotFound,
            S::Invalid(_) | S::EventMalformed(_) => C::InvalidRequest,
            S::Unprocessable(_) => C::Unprocessable,
            S::InvalidEmail(_) => C::InvalidEmail,
            S::SmtpPolicy(r) => match r {
                HostRefusal::HostNotAllowed => C::SmtpHostNotAllowed,
                HostRefusal::PortNotAllowed(_) => C::SmtpPortNotAllowed,
                HostRefusal::PlaintextNotAllowed => C::SmtpPlaintextNotAllowed,
                HostRefusal::Unresolvable => C::SmtpHostUnresolvable,
            },
            S::SecretTaken | S::Conflict(_) => C::Conflict,
            S::RateLimited { .. } => C::RateLimited,
            S::Delivery(..) | S::ProviderTest(_) => C::DeliveryFailed,
            S::Overloaded => C::Overloaded,
            S::Unavailable(_) => C::Unavailable,
            S::OtpNotFound => C::OtpNotFound,
            S::OtpExpired => C::OtpExpired,
            S::OtpUsed => C::OtpUsed,
            S::OtpSuperseded => C::OtpSuperseded,
            S::OtpCancelled => C::OtpCancelled,
            S::AttemptsExhausted => C::AttemptsExhausted,
            S::OtpFailed => C::OtpFailed,
            S::Mismatch { .. } => C::OtpMismatch,
            S::TemplateNotFound => C::TemplateNotFound,
            S::WebhookNotFound => C::WebhookNotFound,
            S::SessionNotFound => C::SessionNotFound,
            S::TransportNotFound => C::TransportNotFound,
            S::LinksOff => C::LinksNotConfigured,
            S::ChannelNotConfigured => C::ChannelNotConfigured,
            S::CodeVerifierMismatch => C::CodeVerifierMismatch,
            S::AlreadyClaimed => C::AlreadyClaimed,
            S::NotVerified => C::NotVerified,
            S::PagesNotApproved => C::PagesNotApproved,
            S::RelayCheck(..) => C::RelayCheckFailed,
            S::LogoInvalid => C::LogoInvalid,
            S::RecipientSuppressed => C::RecipientSuppressed,
            S::SmsCountryNotAllowed(_) => C::SmsCountryNotAllowed,
            S::PhoneNumberNotAllowed(_) => C::PhoneNumberNotAllowed,
            S::SmsVelocity { .. } => C::SmsVelocity,
            S::DkimNotFound => C::DkimNotFound,
            S::EventUnverified => C::EventUnverified,
            S::SuppressionNotFound => C::SuppressionNotFound,
            S::ProviderNotFound | S::NoEventsProvider => C::ProviderNotFound,
            S::TransportConflict => C::TransportConflict,
            S::WebhookRefused(code, _) => *code,
            S::IdempotencyMismatch => C::IdempotencyKeyMismatch,
            S::IdempotencyInUse => C::IdempotencyKeyInUse,
            S::TemplateInvalid(_) => C::TemplateInvalid,
            S::TemplateLimit(_) => C::TemplateLimitReached,
            S::ResendLimit(_) => C::ResendLimitReached,
            S::Internal(_) => C::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn every_error_code_is_snake_case_once_with_an_error_status_and_a_title() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!((400..600).contains(&c.status()), "{s}: {}", c.status());
            assert!(!c.title().is_empty(), "{s}");
        }
        assert_eq!(seen.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn an_internal_error_keeps_the_errors_under_it() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(with_sources(&e), "outer: disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: {0}")]
        struct Says(#[source] std::io::Error);
        let e = Says(std::io::Error::other("inner"));
        assert_eq!(with_sources(&e), "wrapped: inner");
    }
}
