//! The tenant routes' request bodies (their OpenAPI schemas) and their parsing into the
//! service's inputs: every field refused with a 400 that names it.

use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::respond::{parse_delivery, parse_locale};
use crate::domain::oauth2::OAuth2Input;
use crate::domain::policy::PolicyPatch;
use crate::domain::tenant::TlsMode;
use crate::service::tenants::accounts::{SmtpInput, SmtpPatch, TenantPatch};
use crate::service::ServiceError;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpBody {
    pub(super) host: String,
    #[serde(deserialize_with = "super::strict::whole")]
    pub(super) port: u16,
    #[serde(default)]
    pub(super) username: String,
    /// The relay's password (unless `oauth2`).
    pub(super) password: Option<String>,
    pub(super) from: String,
    pub(super) tls: Option<String>,
    /// 1 to `smtp.max_connections_limit`; default `smtp.max_connections_per_tenant`
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) max_connections: Option<u32>,
    /// Log in with OAuth2 (SASL XOAUTH2) instead of a password (API.md §15.1).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) oauth2: Option<OAuth2Body>,
}

/// A relay's OAuth2 settings (API.md §15.1). `provider` fills `token_url` and `scope`;
/// without it `token_url` is required. With `refresh_token` the refresh-token grant is
/// used, else client credentials. Secrets are sealed and never shown.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Body {
    /// `microsoft` or `google`
    pub(super) provider: Option<String>,
    /// `https://…` (the outbound address policy applies)
    pub(super) token_url: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) refresh_token: Option<String>,
    /// Microsoft Entra tenant id or domain (required with `provider: "microsoft"`)
    pub(super) entra_tenant: Option<String>,
}

impl From<OAuth2Body> for OAuth2Input {
    fn from(b: OAuth2Body) -> Self {
        OAuth2Input {
            provider: b.provider,
            token_url: b.token_url,
            client_id: b.client_id,
            client_secret: b.client_secret,
            scope: b.scope,
            refresh_token: b.refresh_token,
            entra_tenant: b.entra_tenant,
        }
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) code_length: Option<u32>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) ttl_seconds: Option<u32>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) max_attempts: Option<u32>,
}

impl From<PolicyBody> for PolicyPatch {
    fn from(p: PolicyBody) -> Self {
        PolicyPatch {
            code_length: p.code_length,
            ttl_seconds: p.ttl_seconds,
            max_attempts: p.max_attempts,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    pub(super) name: String,
    /// The relay; a tenant may have none and send through a provider or its HTTP transport
    /// (API.md §15.3), or be a test tenant.
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) smtp: Option<SmtpBody>,
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) policy: Option<PolicyBody>,
    /// `sync` (default) or `async`
    pub(super) delivery: Option<String>,
    /// The locale messages fall back to (default `en`)
    pub(super) default_locale: Option<String>,
    /// A test tenant (API.md §13.2): it sends nothing to any relay, every mint goes to its
    /// test inbox, and its secret key starts `sk_test_`.
    #[serde(default)]
    pub(super) test: bool,
    /// A second relay, tried at once when `smtp` fails transiently (API.md §12.1).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) smtp_fallback: Option<SmtpBody>,
    /// Connect, TLS and AUTH to the relay (no mail) before saving; a failure is 422
    /// `relay_check_failed` with the delivery `reason`, and nothing is saved.
    pub(super) check_relay: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpPatchBody {
    pub(super) host: Option<String>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) port: Option<u16>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) from: Option<String>,
    pub(super) tls: Option<String>,
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) max_connections: Option<u32>,
    /// OAuth2 settings to set or change (API.md §15.1).
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) oauth2: Option<OAuth2Body>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantBody {
    pub(super) name: Option<String>,
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) smtp: Option<SmtpPatchBody>,
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) policy: Option<PolicyBody>,
    pub(super) enabled: Option<bool>,
    /// `sync` or `async`
    pub(super) delivery: Option<String>,
    /// The locale messages fall back to, e.g. `de`
    pub(super) default_locale: Option<String>,
    /// Admin only: make the tenant a test tenant, or take it out of test mode (its relay
    /// must then pass the host policy).
    pub(super) test: Option<bool>,
    /// The fallback relay: fields to change (`host`, `port` and `from` at least when the
    /// tenant has none yet), or `null` to remove it.
    #[serde(default, deserialize_with = "super::strict::present_object")]
    #[schema(value_type = Option<SmtpPatchBody>)]
    pub(super) smtp_fallback: Option<Option<SmtpPatchBody>>,
    /// The prefixes a magic link's `return_url` must start with (API.md §14; replaces the
    /// list; ≤ 20): `https://…`, or `http://localhost…` for development.
    pub(super) allowed_return_urls: Option<Vec<String>>,
    /// The hosted pages' look (API.md §14.1): `{"color": "#RRGGBB"}` (`null`: the default).
    #[serde(default, deserialize_with = "super::strict::present_object")]
    #[schema(value_type = Option<BrandingBody>)]
    pub(super) branding: Option<Option<BrandingBody>>,
    /// `on` (default: a mint to a suppressed recipient answers 422 `recipient_suppressed`)
    /// or `off` (the list only records; API.md §16.1).
    #[schema(pattern = "^(on|off)$")]
    pub(super) suppression: Option<String>,
    /// Admin only: under `registration.mode = "open"` a self-registered tenant's hosted
    /// pages and links stay off (422 `pages_not_approved`) until this is true (API.md §17.6).
    pub(super) pages_approved: Option<bool>,
    /// The SMS fraud guard (API.md §17.1): the fields given replace the stored ones.
    #[serde(default, deserialize_with = "super::strict::maybe_object")]
    pub(super) sms: Option<SmsBody>,
    /// Connect, TLS and AUTH to the relay as changed (no mail) before saving; a failure is
    /// 422 `relay_check_failed` with the delivery `reason`, and nothing is saved.
    pub(super) check_relay: Option<bool>,
}

/// A tenant's SMS fraud guard settings (API.md §17.1).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsBody {
    /// The countries whose numbers the tenant texts, as ISO 3166-1 alpha-2 codes
    /// (`["DE", "FR"]`; replaces the list; lower case is taken and stored upper case).
    /// Empty by default: SMS is opt-in per country.
    // `domain::sms_guard::COUNTRIES_MAX`.
    #[schema(max_items = 250)]
    pub(super) allowed_countries: Option<Vec<String>>,
    /// Numbers that verified a code of the tenant within this many days skip the velocity
    /// limits (0: none does). Default 90.
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) trusted_days: Option<u32>,
    /// Text fixed-line numbers too. Default false.
    pub(super) allow_fixed_line: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandingBody {
    #[serde(default, deserialize_with = "super::strict::present")]
    #[schema(value_type = Option<String>)]
    pub(super) color: Option<Option<String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old key keeps working, 0–86400 seconds (default 0).
    #[schema(minimum = 0, maximum = 86400)]
    #[serde(default, deserialize_with = "super::strict::maybe_whole")]
    pub(super) grace_seconds: Option<u64>,
}

fn parse_tls(s: Option<&str>, relay: &str) -> Result<Option<TlsMode>, ApiError> {
    match s {
        None => Ok(None),
        Some(t) => TlsMode::parse(t).map(Some).ok_or_else(|| {
            ServiceError::field(
                &format!("{relay}.tls"),
                "must be \"starttls\", \"implicit\" or \"none\"",
            )
            .into()
        }),
    }
}

pub(super) fn input_from(s: SmtpBody, relay: &str) -> Result<SmtpInput, ApiError> {
    Ok(SmtpInput {
        tls: parse_tls(s.tls.as_deref(), relay)?,
        host: s.host,
        port: s.port,
        username: s.username,
        // A relay without a login takes an empty password, as before OAuth2.
        password: match (&s.oauth2, s.password) {
            (None, p) => Some(SecretString::from(p.unwrap_or_default())),
            (Some(_), p) => p.map(SecretString::from),
        },
        from: s.from,
        max_connections: s.max_connections,
        oauth2: s.oauth2.map(Into::into),
    })
}

fn smtp_patch_from(s: SmtpPatchBody, relay: &str) -> Result<SmtpPatch, ApiError> {
    Ok(SmtpPatch {
        tls: parse_tls(s.tls.as_deref(), relay)?,
        host: s.host,
        port: s.port,
        username: s.username,
        password: s.password.map(SecretString::from),
        from: s.from,
        max_connections: s.max_connections,
        oauth2: s.oauth2.map(Into::into),
    })
}

pub(super) fn patch_from(b: PatchTenantBody) -> Result<TenantPatch, ApiError> {
    let smtp = b.smtp.map(|s| smtp_patch_from(s, "smtp")).transpose()?;
    let smtp_fallback = match b.smtp_fallback {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => Some(Some(smtp_patch_from(s, "smtp_fallback")?)),
    };
    Ok(TenantPatch {
        name: b.name,
        enabled: b.enabled,
        smtp,
        policy: b.policy.map(Into::into),
        delivery: parse_delivery(b.delivery.as_deref())?,
        default_locale: parse_locale(b.default_locale.as_deref(), "default_locale")?,
        test: b.test,
        smtp_fallback,
        allowed_return_urls: b.allowed_return_urls,
        brand_color: match b.branding {
            None => None,
            Some(None) => Some(None),
            Some(Some(x)) => x.color,
        },
        pages_approved: b.pages_approved,
        check_relay: b.check_relay.unwrap_or(false),
        sms: b.sms.map(|s| crate::domain::sms_guard::SmsPatch {
            allowed_countries: s.allowed_countries,
            trusted_days: s.trusted_days,
            allow_fixed_line: s.allow_fixed_line,
        }),
        suppression: match b.suppression.as_deref() {
            None => None,
            Some("on") => Some(true),
            Some("off") => Some(false),
            Some(_) => {
                return Err(ServiceError::field("suppression", "must be \"on\" or \"off\"").into())
            }
        },
    })
}
