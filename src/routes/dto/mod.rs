//! Response bodies of the native API: the handlers serialize these, and the OpenAPI
//! document is generated from the same types.

use serde::Serialize;
use utoipa::ToSchema;

mod problem;
pub use problem::{problems, FieldErrorOut, Problem, ProblemCode};

use crate::clock::rfc3339;
use crate::domain::audit::AuditEvent;
use crate::domain::challenge::ChallengeView;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::Channel;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;

#[derive(Serialize, ToSchema)]
pub struct SmtpOut {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// One mailbox, e.g. `Acme <no-reply@acme.example>`.
    pub from: String,
    /// `starttls`, `implicit` or `none`.
    pub tls: String,
    /// The ceiling of SMTP sessions open to the relay at once (per instance); the sessions
    /// actually opened adapt below it. The server's default unless the tenant chose one.
    pub max_connections: u32,
    /// Present when the relay logs in with OAuth2 (SASL XOAUTH2) instead of a password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Out>,
}

/// A relay's OAuth2 settings as shown: never its client secret nor its refresh token.
#[derive(Serialize, ToSchema)]
pub struct OAuth2Out {
    /// `microsoft`, `google`, or null (an explicit `token_url`).
    pub provider: Option<String>,
    pub token_url: String,
    pub client_id: String,
    pub scope: String,
    pub entra_tenant: Option<String>,
    /// Whether a refresh token is stored (the refresh-token grant; else client credentials).
    pub refresh_token: bool,
}

impl SmtpOut {
    fn of(a: &crate::domain::tenant::SmtpAccount, max_connections: u32) -> SmtpOut {
        SmtpOut {
            host: a.host.as_str().to_string(),
            port: a.port,
            username: a.username.clone(),
            from: a.from.as_str().to_string(),
            tls: a.tls.as_str().to_string(),
            max_connections,
            oauth2: a.oauth2.as_ref().map(|o| OAuth2Out {
                provider: o.provider.map(|p| p.as_str().to_string()),
                token_url: o.token_url.clone(),
                client_id: o.client_id.clone(),
                scope: o.scope.clone(),
                entra_tenant: o.entra_tenant.clone(),
                refresh_token: o.refresh_token,
            }),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PolicyOut {
    /// 4–10
    pub code_length: u32,
    /// 1–86400
    pub ttl_seconds: u32,
    /// 1–20
    pub max_attempts: u32,
}

/// A tenant: never its SMTP password nor its secret key.
#[derive(Serialize, ToSchema)]
pub struct TenantOut {
    /// `tnt_…`
    pub id: String,
    pub name: String,
    pub enabled: bool,
    /// RFC 3339
    pub created_at: String,
    /// The relay; null for a tenant without one (it sends through a provider or its HTTP
    /// transport, API.md §15.3).
    pub smtp: Option<SmtpOut>,
    pub policy: PolicyOut,
    /// `sync` or `async`: how mints wait for their message unless the request says.
    pub delivery: String,
    /// The locale messages fall back to (API.md §8).
    pub default_locale: String,
    /// A test tenant: sends nothing to any relay (API.md §13.2).
    pub test: bool,
    /// The second relay, tried at once when `smtp` fails transiently (API.md §12.1); null
    /// without one.
    pub smtp_fallback: Option<SmtpOut>,
    /// The prefixes a magic link's `return_url` must start with (API.md §14).
    pub allowed_return_urls: Vec<String>,
    /// The hosted pages' look.
    pub branding: BrandingOut,
    /// `on`: mints to suppressed recipients are refused; `off`: the list only records.
    pub suppression: String,
    /// Its hosted pages and links may be used under open registration (API.md §17.6).
    pub pages_approved: bool,
    /// The SMS fraud guard's settings (API.md §17.1).
    pub sms: SmsOut,
}

/// A tenant's SMS fraud guard settings.
#[derive(Serialize, ToSchema)]
pub struct SmsOut {
    /// ISO 3166-1 alpha-2 codes of the countries it texts (empty: none).
    pub allowed_countries: Vec<String>,
    /// Days a number that verified a code skips the velocity limits.
    pub trusted_days: u32,
    /// Whether fixed-line numbers are texted.
    pub allow_fixed_line: bool,
}

#[derive(Serialize, ToSchema)]
pub struct BrandingOut {
    /// `#rrggbb`, or null for the default.
    pub color: Option<String>,
}

impl TenantOut {
    /// The tenant as shown: its session ceiling resolved (a tenant that chose none follows
    /// the server's default).
    pub fn of(services: &crate::service::Services, t: &Tenant) -> Self {
        TenantOut {
            id: t.id.to_string(),
            name: t.name.as_str().to_string(),
            enabled: t.enabled,
            created_at: rfc3339(t.created_at),
            smtp: t
                .smtp
                .as_ref()
                .map(|a| SmtpOut::of(a, services.delivery.max_connections(t))),
            delivery: t.delivery.as_str().into(),
            default_locale: t.default_locale.as_str().to_string(),
            test: t.test,
            smtp_fallback: t
                .smtp_fallback
                .as_ref()
                .map(|f| SmtpOut::of(f, services.delivery.ceiling(f.max_connections))),
            allowed_return_urls: t.allowed_return_urls.clone(),
            branding: BrandingOut {
                color: (!t.brand_color.is_empty()).then(|| t.brand_color.clone()),
            },
            suppression: if t.suppression { "on" } else { "off" }.into(),
            pages_approved: t.pages_approved,
            sms: SmsOut {
                allowed_countries: t.sms.allowed_countries.clone(),
                trusted_days: t.sms.trusted_days,
                allow_fixed_line: t.sms.allow_fixed_line,
            },
            policy: PolicyOut {
                code_length: t.policy.code_length,
                ttl_seconds: t.policy.ttl_seconds,
                max_attempts: t.policy.max_attempts,
            },
        }
    }
}

/// A new tenant, with its secret key shown this once.
#[derive(Serialize, ToSchema)]
pub struct TenantCreatedOut {
    #[serde(flatten)]
    pub tenant: TenantOut,
    /// `sk_…`, ≥128 bits; store it now, it is not shown again.
    pub secret_key: String,
}

/// A tenant after an admin's change.
#[derive(Serialize, ToSchema)]
pub struct TenantPatchedOut {
    #[serde(flatten)]
    pub tenant: TenantOut,
    /// Only when a test tenant was made live (`"test": false`): its new `sk_…` key, shown
    /// once; its `sk_test_` keys stopped working with this change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantListOut {
    pub tenants: Vec<TenantOut>,
}

/// The body of a route that takes none: nothing, `null` or `{}`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoBody {}

#[derive(Serialize, ToSchema)]
pub struct SecretOut {
    pub secret_key: String,
}

#[derive(Serialize, ToSchema, Clone)]
pub struct MintOut {
    /// `otp_…`, ≥128 bits: names the code for verify, status and cancel.
    pub shareable_key: String,
    pub expires_at: String,
    pub ttl_seconds: u32,
    pub code_length: u32,
    pub max_attempts: u32,
    /// `sent` (201: the relay accepted the message), `unknown` (201: the relay or provider
    /// took the message and never answered; the person may have it, the code is valid, and
    /// nothing sends it again by itself: resend if the person has nothing) or `queued` (202:
    /// stored, a sender delivers it; see `GET /v1/otp/{key}`), or `test` (201: a test mint,
    /// in the tenant's test inbox).
    pub delivery: String,
    /// The locale the message was written in (the first of the fallback chain with a
    /// template).
    pub locale: String,
    /// Present and true for a test mint: the message went to the tenant's test inbox, not
    /// to any relay (API.md §13.1).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

/// A key after `POST /v1/otp/{key}/resend`: as a mint's answer (the same key and expiry),
/// with the number of codes sent under it since its mint.
#[derive(Serialize, ToSchema)]
pub struct ResendOut {
    #[serde(flatten)]
    pub code: MintOut,
    pub resends: u32,
}

#[derive(Serialize, ToSchema)]
pub struct VerifyOut {
    pub verified: bool,
    #[serde(flatten)]
    pub who: VerifiedOut,
}

/// Who and what was verified, as a verify and a claimed outcome (API.md §17.2) show it.
#[derive(Serialize, ToSchema)]
pub struct VerifiedOut {
    /// The address that was verified, as given at mint or typed on a hosted page (absent
    /// for a text message's code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The phone number of a text message's code (API.md §12.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    pub purpose: String,
    pub verified_at: String,
}

impl VerifiedOut {
    /// `recipient` shown as `email` or `phone`, by the channel its code went on.
    pub fn new(recipient: String, channel: Channel, purpose: &Purpose, at: Millis) -> Self {
        let (email, phone) = if channel.is_phone() {
            (None, Some(recipient))
        } else {
            (Some(recipient), None)
        };
        VerifiedOut {
            email,
            phone,
            purpose: purpose.as_str().to_string(),
            verified_at: rfc3339(at),
        }
    }
}

/// A test code's delivery `status` where another code's would say `sent`: its message went
/// to the test inbox, not to anyone (API.md §18.8).
pub const TEST_SENT: &str = "test";

/// A code's delivery.
#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    /// `sync` or `async`
    pub mode: String,
    /// `queued`, `sending`, `sent`, `failed`, `unknown` (it may have arrived; nobody can
    /// know), `bounced` (the provider reported a hard bounce or a complaint, API.md §16.2)
    /// or `test` (a test code: its message went to the test inbox)
    pub status: String,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// The last failure: `smtp_unreachable`, `smtp_timeout`, `smtp_tls`, `smtp_auth`,
    /// `smtp_rejected`, `smtp_host_not_allowed`; `http_rejected`, `http_unavailable`,
    /// `http_unreachable`, `http_host_not_allowed` (the HTTP transport);
    /// `provider_auth`, `provider_rejected`, `provider_unavailable`,
    /// `provider_unreachable`, `provider_host_not_allowed` (an email or SMS provider);
    /// `channel_not_configured`; `interrupted` (the process sending it stopped mid-send:
    /// `unknown`); `expired` (the code expired before the relay accepted it) or `not_sent`
    /// (the code ended before its message left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `reason`: what to check, in one sentence (the setting to change, where one
    /// applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// The transport that accepted the last message: `smtp`, `smtp_fallback`, `http` or
    /// `provider:<kind>` (API.md §12, §15); absent until one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The provider's id of the accepted message (API.md §15.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The last failure's code beyond its reason: the provider's own error code (Postmark
    /// `ErrorCode`, Resend `name`, SES error type, Twilio `code`, Vonage `status`) or
    /// `oauth2_invalid_grant` and the like.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StatusOut {
    /// `pending`, `verified`, `expired`, `exhausted`, `superseded`, `cancelled` or `failed`
    /// (its message could not be delivered; it never verifies).
    pub status: String,
    pub purpose: String,
    pub created_at: String,
    pub expires_at: String,
    pub attempts_used: u32,
    pub attempts_remaining: u32,
    pub verified_at: Option<String>,
    pub delivery: DeliveryOut,
    /// New codes sent under this key since its mint (each keeps verifying until
    /// `expires_at`).
    pub resends: u32,
    /// Present and true for a test code (its messages went to the test inbox).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
    /// Once verified: `code` or `link` (a magic link, API.md §14.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_via: Option<String>,
    /// The address (an email code), until the outcome is claimed (API.md §17.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The number (a text-message code), until the outcome is claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Present and true once the outcome was claimed (`POST /v1/otp/{key}/claim`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub claimed: bool,
}

impl StatusOut {
    pub fn new(v: &ChallengeView, now: i64) -> Self {
        let accepted = v.delivery.accepted();
        StatusOut {
            status: v.status_at(now).as_str().into(),
            purpose: v.purpose.as_str().to_string(),
            created_at: rfc3339(v.created_at),
            expires_at: rfc3339(v.expires_at),
            attempts_used: v.attempts,
            attempts_remaining: v.attempts_remaining(),
            verified_at: v.verified_at.map(rfc3339),
            delivery: DeliveryOut {
                mode: v.delivery.mode.as_str().into(),
                // A test code's message went to the test inbox, not to anyone (API.md §18.8).
                status: match v.delivery.status {
                    crate::domain::delivery::DeliveryStatus::Sent if v.test => TEST_SENT.into(),
                    s => s.as_str().into(),
                },
                attempts: v.delivery.attempts,
                reason: v.delivery.reason.clone(),
                detail: v.delivery.advice().map(str::to_string),
                sent_at: v.delivery.sent_at.filter(|_| accepted).map(rfc3339),
                transport: v.delivery.transport.clone().filter(|_| accepted),
                provider_message_id: v.delivery.provider_message_id.clone().filter(|_| accepted),
                detail_code: v.delivery.detail_code.clone(),
            },
            resends: v.resends,
            test: v.test,
            verified_via: v.verified_via.map(|w| w.as_str().to_string()),
            email: (v.claimed_at.is_none() && !v.channel.is_phone()).then(|| v.email.clone()),
            phone: (v.claimed_at.is_none() && v.channel.is_phone()).then(|| v.email.clone()),
            claimed: v.claimed_at.is_some(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventOut {
    /// The event's number for this tenant: unique and stable, in no order (sort by `at`,
    /// page with `next_before`).
    pub id: i64,
    pub at: String,
    /// What happened: `mint` (a refusal of the SMS guard included), `verify`, `resend`,
    /// `cancel`, `claim`, `template.fallback` (a message written in a fallback locale),
    /// `test_recipient.disabled`, `test_recipients.put`, `suppression.add`,
    /// `suppression.remove`, `provider.test`.
    pub event: String,
    /// Masked: `a***@example.com`
    pub recipient: String,
    pub outcome: String,
    pub client_ip: String,
    pub request_id: String,
}

impl From<&AuditEvent> for AuditEventOut {
    fn from(e: &AuditEvent) -> Self {
        AuditEventOut {
            id: e.id,
            at: rfc3339(e.at),
            event: e.event.clone(),
            recipient: e.recipient.clone(),
            outcome: e.outcome.clone(),
            client_ip: e.client_ip.clone(),
            request_id: e.request_id.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPageOut {
    pub events: Vec<AuditEventOut>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthOut {
    pub status: String,
}
