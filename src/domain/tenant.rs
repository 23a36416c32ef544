//! The tenant aggregate: an app that sends codes through its own relay, under its own policy.
//! Its fields are parsed once, where they enter (a request, the CLI, an import), into the
//! types below. Read back from the store, names, hosts and senders are taken as written
//! (`from_stored`); the TLS mode, origin and default locale must be one of their values, or
//! the row is reported as unreadable.

use std::collections::BTreeMap;
use std::fmt;

use super::delivery::DeliveryMode;
use super::keys::TenantId;
use super::locale::Locale;
use super::named::named_enum;
use super::oauth2::OAuth2;
use super::policy::{FieldError, Policy};
use super::provider::Provider;
use super::recipient::Channel;
pub use super::sender::Sender;
use super::Millis;

/// A tenant's display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(String);

impl TenantName {
    /// A name's form, `domain::grammar::TENANT_NAME` (API.md §17.8; the API description
    /// states it too); the spaces around it are dropped.
    pub fn parse(s: &str) -> Result<TenantName, FieldError> {
        if !crate::domain::grammar::TENANT_NAME.matches(s) {
            return Err(FieldError::new(
                "name",
                "must be 1 to 100 characters, not only spaces or combining marks, with no control, invisible or bidirectional-control characters",
            ));
        }
        Ok(TenantName(s.trim_matches(' ').to_string()))
    }
    /// A name read back from the store (checked when it was written).
    pub fn from_stored(s: String) -> TenantName {
        TenantName(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A relay's host name or IP address, lower case, without a trailing dot. Where it may
/// point (SSRF) is the host policy's business, when it is set and again at each connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpHost(String);

impl SmtpHost {
    pub fn parse(s: &str) -> Result<SmtpHost, FieldError> {
        let h = s.trim_end_matches('.').to_ascii_lowercase();
        if h.is_empty() || !super::grammar::SMTP_HOST.matches(s) {
            return Err(FieldError::new(
                "smtp.host",
                "must be a host name or IP address (not a URL, host:port, a path or user@host)",
            ));
        }
        Ok(SmtpHost(h))
    }
    pub fn from_stored(s: String) -> SmtpHost {
        SmtpHost(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SmtpHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A relay port: 1 to 65535.
pub fn parse_port(port: u16) -> Result<u16, FieldError> {
    if port == 0 {
        return Err(FieldError::new("smtp.port", "must be between 1 and 65535"));
    }
    Ok(port)
}

named_enum! {
    /// How a session to the relay is secured.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TlsMode {
        Starttls = "starttls",
        Implicit = "implicit",
        None = "none",
    }
}

impl TlsMode {
    /// The default for a port: implicit TLS on 465, STARTTLS elsewhere.
    pub fn default_for(port: u16) -> TlsMode {
        if port == 465 {
            TlsMode::Implicit
        } else {
            TlsMode::Starttls
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

named_enum! {
    /// Where a tenant came from.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Origin {
        /// `POST /v1/tenants` or `otpmint tenant create`.
        Native = "native",
        /// OtpMint's `/reg_secretkey`.
        Compat = "compat",
        /// `otpmint import-otpmint`.
        Import = "otpmint-import",
    }
}

/// A tenant's relay account (the password sealed with the data key, bound to the tenant,
/// host, port and user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpAccount {
    pub host: SmtpHost,
    pub port: u16,
    pub username: String,
    pub password: Vec<u8>,
    pub from: Sender,
    pub tls: TlsMode,
    /// The ceiling of SMTP sessions open to the relay at once (per instance); 0: the
    /// server's default (`smtp.max_connections_per_tenant`).
    pub max_connections: u32,
    /// Logs in with SASL XOAUTH2 (API.md §15.1): `password` then holds the sealed OAuth2
    /// secrets (client secret, refresh token) instead of a password.
    pub oauth2: Option<OAuth2>,
}

impl SmtpAccount {
    /// A login that would travel unencrypted (`tls = "none"` with a username): never sent,
    /// so the relay can only fail (`auth_needs_tls`), before any token or session.
    pub fn logs_in_clear(&self) -> bool {
        self.tls == TlsMode::None && !self.username.is_empty()
    }
}

/// A tenant as the services and routes see it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub enabled: bool,
    pub origin: Origin,
    pub created_at: Millis,
    /// Its relay; a tenant may have none (API.md §15.3: it sends through a provider or its
    /// HTTP transport, or it is a test tenant).
    pub smtp: Option<SmtpAccount>,
    /// Bumped on every SMTP change, so cached transports know they are stale.
    pub smtp_version: i64,
    pub policy: Policy,
    /// How mints wait for their message unless the request says otherwise.
    pub delivery: DeliveryMode,
    /// The locale messages fall back to (API.md §8).
    pub default_locale: Locale,
    /// Bumped on every template change, so cached templates know they are stale.
    pub templates_version: i64,
    /// The event types its webhook subscribes to, comma-separated ("" without a webhook);
    /// read from `webhooks` with the tenant, never stored on it.
    pub webhook_events: String,
    /// Bumped by every change of the row: a change applies to the version it read, or
    /// is made again on the latest (API.md §6.30).
    pub row_version: i64,
    /// A test tenant sends nothing to any relay: every mint goes to its test inbox
    /// (API.md §13.2).
    pub test: bool,
    /// Bumped on every change of its test recipients, so cached lists know they are stale
    /// (0: it never had any).
    pub test_version: i64,
    /// A second relay, tried at once when `smtp` fails transiently (API.md §12.1); its
    /// password is sealed as the tenant's fallback.
    pub smtp_fallback: Option<SmtpAccount>,
    /// Its HTTPS endpoint, as its primary transport or as the last fallback (API.md §12.2).
    pub http: Option<HttpTransport>,
    /// The prefixes a magic link's return URL must start with (API.md §14).
    pub allowed_return_urls: Vec<String>,
    /// Its colour on the hosted pages (`#RRGGBB`; empty: the default).
    pub brand_color: String,
    /// Its provider of each channel that has one: an email API, an SMS API (API.md §15.2).
    pub providers: BTreeMap<Channel, Provider>,
    /// Whether a mint to a suppressed recipient is refused (`"suppression": "on"`, the
    /// default) or only recorded (API.md §16.1).
    pub suppression: bool,
    /// How many entries its suppression list holds (0: a mint need not look).
    pub suppressed: i64,
    /// Its hosted pages and links may be used under open registration (API.md §17.6).
    pub pages_approved: bool,
    /// Its SMS fraud guard settings (API.md §17.1).
    pub sms: super::sms_guard::SmsSettings,
    /// Its DKIM keys' public parts, oldest first (API.md §16.3).
    pub dkim: Vec<super::dkim::DkimKey>,
    /// Their private keys, sealed as one JSON object by selector (empty: none).
    pub dkim_sealed: Vec<u8>,
}

impl Tenant {
    /// A new tenant as it is first stored: enabled, every version at its start, sync
    /// delivery in English, no fallback relay, HTTP transport, providers, DKIM key or
    /// branding, suppression on, pages approved; callers change what differs.
    pub fn new(
        id: TenantId,
        name: TenantName,
        origin: Origin,
        created_at: Millis,
        smtp: Option<SmtpAccount>,
        policy: Policy,
    ) -> Tenant {
        Tenant {
            id,
            name,
            enabled: true,
            origin,
            created_at,
            smtp,
            smtp_version: 1,
            policy,
            delivery: DeliveryMode::Sync,
            default_locale: Locale::english(),
            templates_version: 0,
            webhook_events: String::new(),
            row_version: 1,
            test: false,
            test_version: 0,
            smtp_fallback: None,
            http: None,
            allowed_return_urls: Vec::new(),
            brand_color: String::new(),
            providers: BTreeMap::new(),
            suppression: true,
            suppressed: 0,
            pages_approved: true,
            sms: super::sms_guard::SmsSettings::default(),
            dkim: Vec::new(),
            dkim_sealed: Vec::new(),
        }
    }

    /// Its provider of a channel.
    pub fn provider(&self, channel: Channel) -> Option<&Provider> {
        self.providers.get(&channel)
    }

    /// The sender of its emails: the relay's, else the email provider's.
    pub fn sender(&self) -> Option<&str> {
        self.smtp
            .as_ref()
            .map(|s| s.from.as_str())
            .or_else(|| self.provider(Channel::Email)?.setting("from"))
            .or_else(|| self.smtp_fallback.as_ref().map(|s| s.from.as_str()))
    }
}

named_enum! {
    /// Where a transport the tenant added (its HTTP endpoint, a provider) stands among the
    /// transports of its channel (API.md §15.3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TransportUse {
        /// Instead of SMTP (then `smtp_fallback`, if any, is its fallback).
        Primary = "primary",
        /// After the relays.
        Fallback = "fallback",
    }
}

/// A tenant's HTTP transport: messages are POSTed to `url`, signed with the secret (sealed
/// with the data key, bound to the tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTransport {
    pub url: String,
    pub use_as: TransportUse,
    pub secret: Vec<u8>,
}

#[cfg(test)]
impl Tenant {
    /// A tenant for unit tests of the layers below the services.
    #[allow(clippy::unwrap_used)]
    pub(crate) fn sample() -> Tenant {
        Tenant::new(
            TenantId::generate(),
            TenantName::parse("Acme").unwrap(),
            Origin::Native,
            1,
            Some(SmtpAccount {
                host: SmtpHost::parse("mail.acme.example").unwrap(),
                port: 587,
                username: "u".into(),
                password: vec![1, 2, 3],
                from: Sender::parse("Acme <a@acme.example>").unwrap(),
                tls: TlsMode::Starttls,
                max_connections: 4,
                oauth2: None,
            }),
            Policy {
                code_length: 6,
                ttl_seconds: 600,
                max_attempts: 5,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(TenantName::parse("  Acme ").unwrap().as_str(), "Acme");
        assert!(TenantName::parse(&"é".repeat(100)).is_ok());
        for bad in [
            "",
            "   ",
            "a\u{7}b",
            "line\nbreak",
            "Acme\u{202E}lapyap",
            "Pay\u{200B}Pal",
            "A\u{2066}b\u{2069}",
            "A\u{FEFF}",
            "A\u{00AD}cme",
            "A\u{200D}cme",
            "A\u{E0041}",
            "tab\tname",
            "A\u{3000}B",
            // Combining marks alone show nothing: they need a base.
            "\u{301}",
            "\u{301}\u{301}\u{301}",
            " \u{20DD} ",
        ] {
            assert_eq!(TenantName::parse(bad).unwrap_err().field, "name", "{bad:?}");
        }
        assert!(TenantName::parse(&"x".repeat(101)).is_err());
        // Letters of every script, marks, emoji and plain spaces are fine.
        for good in [
            "Acme Ltd.",
            "Bücher & Co",
            "東京",
            "مرحبا",
            "café",
            "cafe\u{301}",
            "Team 🚀",
        ] {
            assert!(TenantName::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn hosts_are_lower_case_without_a_trailing_dot() {
        assert_eq!(
            SmtpHost::parse("Mail.Example.COM.").unwrap().as_str(),
            "mail.example.com"
        );
        assert_eq!(SmtpHost::parse("::1").unwrap().as_str(), "::1");
        for bad in [
            "",
            ".",
            "a b",
            "a\tb",
            "a\r\nb",
            "smtp://localhost",
            "8.8.8.8:587",
            "localhost/x",
            "user@8.8.8.8",
        ] {
            assert_eq!(
                SmtpHost::parse(bad).unwrap_err().field,
                "smtp.host",
                "{bad:?}"
            );
        }
        assert!(SmtpHost::parse(&"a".repeat(254)).is_err());
        assert!(parse_port(0).is_err());
        assert_eq!(parse_port(587).unwrap(), 587);
    }

    #[test]
    fn a_sender_is_exactly_one_mailbox() {
        assert_eq!(
            Sender::parse(" Acme <no-reply@acme.example> ")
                .unwrap()
                .as_str(),
            "Acme <no-reply@acme.example>"
        );
        assert!(Sender::parse("no-reply@acme.example").is_ok());
        for bad in [
            "",
            "not an address",
            "a@b.example, c@d.example",
            "Acme <a@b.example>\r\nBcc: x@y.example",
        ] {
            assert_eq!(
                Sender::parse(bad).unwrap_err().field,
                "smtp.from",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tls_modes_and_origins_round_trip_their_stored_names() {
        for m in [TlsMode::Starttls, TlsMode::Implicit, TlsMode::None] {
            assert_eq!(TlsMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(TlsMode::parse("STARTTLS"), None);
        assert_eq!(TlsMode::default_for(465), TlsMode::Implicit);
        assert_eq!(TlsMode::default_for(587), TlsMode::Starttls);
        for o in [Origin::Native, Origin::Compat, Origin::Import] {
            assert_eq!(Origin::parse(o.as_str()), Some(o));
        }
        assert_eq!(Origin::parse("other"), None);
    }
}
