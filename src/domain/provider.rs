//! A tenant's provider per channel (API.md §15.2): which email or SMS API it sends through,
//! where that provider stands among its transports, and the settings each kind takes. The
//! secrets (tokens, keys) are parsed here and sealed by the service; what is stored on the
//! tenant row is the kind, its use and the settings that are not secret.

use std::collections::BTreeMap;

use super::named::named_enum;
use super::policy::FieldError;
use super::recipient::{Channel, PhoneNumber};
use super::tenant::{Sender, TransportUse};

named_enum! {
    /// The providers otpmint speaks to itself.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ProviderKind {
        Postmark = "postmark",
        Resend = "resend",
        Sendgrid = "sendgrid",
        Mailgun = "mailgun",
        Ses = "ses",
        Twilio = "twilio",
        Vonage = "vonage",
    }
}

/// What a setting must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A secret or an identifier: 1 to 1024 visible characters.
    Token,
    /// One mailbox (`Acme <no-reply@acme.example>`).
    Mailbox,
    /// A sender of text messages: E.164, or up to 11 letters, digits and inner spaces.
    SmsSender,
    /// A Postmark message stream id.
    Stream,
    /// A domain name.
    Domain,
    /// `us` or `eu` (Mailgun).
    MailgunRegion,
    /// An AWS region, like `eu-west-1`.
    AwsRegion,
    /// An AWS access key id.
    AccessKeyId,
    /// An SES configuration set name.
    ConfigSet,
    /// A Twilio SID: this two-letter prefix, then letters and digits.
    Sid(&'static str),
    /// A Standard Webhooks signing secret: `whsec_` and base64 (Resend).
    WebhookSecret,
    /// SendGrid's event verification key: base64 of a P-256 SubjectPublicKeyInfo.
    EcPublicKey,
    /// An SNS topic ARN (`arn:aws:sns:eu-west-1:123456789012:ses-events`).
    TopicArn,
}

/// One setting of a kind.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    /// Sealed, never shown.
    secret: bool,
    required: bool,
    check: Check,
}

const fn f(name: &'static str, secret: bool, required: bool, check: Check) -> Field {
    Field {
        name,
        secret,
        required,
        check,
    }
}

const POSTMARK: &[Field] = &[
    f("server_token", true, true, Check::Token),
    f("from", false, true, Check::Mailbox),
    f("message_stream", false, false, Check::Stream),
    f("events_username", false, false, Check::Token),
    f("events_password", true, false, Check::Token),
];
const RESEND: &[Field] = &[
    f("api_key", true, true, Check::Token),
    f("from", false, true, Check::Mailbox),
    f("events_secret", true, false, Check::WebhookSecret),
];
const SENDGRID: &[Field] = &[
    f("api_key", true, true, Check::Token),
    f("from", false, true, Check::Mailbox),
    f("events_public_key", false, false, Check::EcPublicKey),
];
const MAILGUN: &[Field] = &[
    f("api_key", true, true, Check::Token),
    f("domain", false, true, Check::Domain),
    f("region", false, true, Check::MailgunRegion),
    f("from", false, true, Check::Mailbox),
    f("events_secret", true, false, Check::Token),
];
const SES: &[Field] = &[
    f("access_key_id", false, true, Check::AccessKeyId),
    f("secret_access_key", true, true, Check::Token),
    f("region", false, true, Check::AwsRegion),
    f("from", false, true, Check::Mailbox),
    f("configuration_set", false, false, Check::ConfigSet),
    f("events_topic_arn", false, false, Check::TopicArn),
];
const TWILIO: &[Field] = &[
    f("account_sid", false, true, Check::Sid("AC")),
    f("auth_token", true, true, Check::Token),
    f("from", false, false, Check::SmsSender),
    f("messaging_service_sid", false, false, Check::Sid("MG")),
];
const VONAGE: &[Field] = &[
    f("api_key", true, true, Check::Token),
    f("api_secret", true, true, Check::Token),
    f("from", false, true, Check::SmsSender),
];

/// Every setting name any kind takes (for a request body's shape).
pub const SETTING_NAMES: &[&str] = &[
    "server_token",
    "from",
    "message_stream",
    "api_key",
    "domain",
    "region",
    "access_key_id",
    "secret_access_key",
    "configuration_set",
    "account_sid",
    "auth_token",
    "messaging_service_sid",
    "api_secret",
    "events_secret",
    "events_public_key",
    "events_username",
    "events_password",
    "events_topic_arn",
];

impl ProviderKind {
    /// The channel its API sends on.
    pub fn channel(self) -> Channel {
        match self {
            ProviderKind::Twilio | ProviderKind::Vonage => Channel::Sms,
            _ => Channel::Email,
        }
    }

    fn fields(self) -> &'static [Field] {
        match self {
            ProviderKind::Postmark => POSTMARK,
            ProviderKind::Resend => RESEND,
            ProviderKind::Sendgrid => SENDGRID,
            ProviderKind::Mailgun => MAILGUN,
            ProviderKind::Ses => SES,
            ProviderKind::Twilio => TWILIO,
            ProviderKind::Vonage => VONAGE,
        }
    }

    /// The kinds of a channel, for error messages.
    pub fn names_for(channel: Channel) -> String {
        ProviderKind::ALL
            .iter()
            .filter(|k| k.channel() == channel)
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A provider as stored on the tenant row: its kind, its place among the channel's
/// transports, the settings that are not secret, and the secrets sealed (a JSON object of
/// name → value, bound to the tenant, the channel and the kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub kind: ProviderKind,
    pub use_as: TransportUse,
    pub settings: BTreeMap<String, String>,
    pub sealed: Vec<u8>,
}

impl Provider {
    /// A setting that is not secret (`from`, `region`, …).
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// The transport's name in delivery records: `provider:postmark`.
    pub fn transport_name(&self) -> String {
        format!("provider:{}", self.kind.as_str())
    }
}

/// A provider's settings as given, parsed and checked; the secrets still in the clear (the
/// service seals them at once).
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderInput {
    pub kind: ProviderKind,
    pub use_as: TransportUse,
    pub settings: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for ProviderInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderInput")
            .field("kind", &self.kind)
            .field("use_as", &self.use_as)
            .field("settings", &self.settings)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ProviderInput {
    /// Parse a `PUT /v1/tenant/providers/{channel}` body: `kind`, `use` and the named
    /// settings (absent ones are `None`). Every bad field is reported at once.
    pub fn parse(
        channel: Channel,
        kind: &str,
        use_as: Option<&str>,
        given: &[(&str, Option<&str>)],
    ) -> Result<ProviderInput, Vec<FieldError>> {
        let mut errs = Vec::new();
        let Some(kind) = ProviderKind::parse(kind).filter(|k| k.channel() == channel) else {
            return Err(vec![FieldError::new(
                "kind",
                format!(
                    "must be one of {} for the {} channel",
                    ProviderKind::names_for(channel),
                    channel.as_str()
                ),
            )]);
        };
        let use_as = match use_as {
            None => TransportUse::Primary,
            Some(u) => TransportUse::parse(u).unwrap_or_else(|| {
                errs.push(FieldError::new(
                    "use",
                    "must be \"primary\" or \"fallback\"",
                ));
                TransportUse::Primary
            }),
        };
        let fields = kind.fields();
        let (mut settings, mut secrets) = (BTreeMap::new(), BTreeMap::new());
        for (name, value) in given {
            let Some(value) = value else { continue };
            let Some(field) = fields.iter().find(|f| f.name == *name) else {
                errs.push(FieldError::new(
                    *name,
                    format!("is not a setting of {}", kind.as_str()),
                ));
                continue;
            };
            match checked(field.check, value) {
                Ok(v) if field.secret => {
                    secrets.insert(field.name.to_string(), v);
                }
                Ok(v) => {
                    settings.insert(field.name.to_string(), v);
                }
                Err(rule) => errs.push(FieldError::new(field.name, rule)),
            }
        }
        // Whether a setting was given a value.
        let named = |name: &str| given.iter().any(|(n, v)| *n == name && v.is_some());
        for field in fields.iter().filter(|f| f.required) {
            if !named(field.name) {
                errs.push(FieldError::new(field.name, "is required"));
            }
        }
        if kind == ProviderKind::Twilio {
            let (from, service) = (named("from"), named("messaging_service_sid"));
            if from == service {
                errs.push(FieldError::new(
                    "from",
                    "give exactly one of from (E.164) and messaging_service_sid",
                ));
            } else if from
                && settings
                    .get("from")
                    .is_none_or(|f| !PhoneNumber::has_e164_form(f))
            {
                // Twilio's sender is a number: one rule, not the general one of SMS senders.
                errs.retain(|e| e.field != "from");
                errs.push(FieldError::new(
                    "from",
                    "must be a phone number in E.164 form, like +15005550006",
                ));
            }
        }
        if kind == ProviderKind::Postmark {
            // The Basic credentials put on the webhook's URL: one without the other verifies
            // no event, so it is refused here rather than every event later.
            for (has, lacks) in [
                ("events_username", "events_password"),
                ("events_password", "events_username"),
            ] {
                if named(has) && !named(lacks) {
                    errs.push(FieldError::new(lacks, format!("is required with {has}")));
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(ProviderInput {
            kind,
            use_as,
            settings,
            secrets,
        })
    }
}

/// A value that passes its check, as stored (trimmed where that is harmless), or the rule.
fn checked(check: Check, v: &str) -> Result<String, String> {
    let visible = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && !s.chars().any(|c| c.is_control() || c == ' ')
    };
    match check {
        // Keys and secrets go out in headers and signatures, which take visible ASCII only
        // (a key pasted with typographic quotes around it could never be sent).
        Check::Token => (visible(v, 1024) && v.chars().all(|c| c.is_ascii_graphic()))
            .then(|| v.to_string())
            .ok_or_else(|| "must be 1 to 1024 visible ASCII characters, no spaces".into()),
        Check::Mailbox => Sender::parse(v)
            .map(|s| s.as_str().to_string())
            .map_err(|e| e.message),
        Check::SmsSender => {
            // An alphanumeric sender ID: letters, digits and inner spaces ("My App"), as both
            // providers take it, with at least one letter.
            let alnum = !v.is_empty()
                && v.chars().count() <= 11
                && v.trim() == v
                && !v.contains("  ")
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
                && v.chars().any(|c| c.is_ascii_alphabetic());
            // Vonage writes numbers in E.164 without the `+` (447700900000).
            let bare = PhoneNumber::has_e164_form(&format!("+{v}"));
            if PhoneNumber::has_e164_form(v) || bare || alnum {
                Ok(v.to_string())
            } else {
                Err("must be a phone number in E.164 form (with or without +) or up to 11 letters, digits and inner spaces".into())
            }
        }
        Check::Stream => (!v.is_empty()
            && v.len() <= 100
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| v.to_string())
        .ok_or_else(|| "must be 1 to 100 letters, digits, - or _".into()),
        Check::Domain => {
            super::dns_name(v).ok_or_else(|| "must be a domain name, like mg.acme.example".into())
        }
        Check::MailgunRegion => matches!(v, "us" | "eu")
            .then(|| v.to_string())
            .ok_or_else(|| "must be \"us\" or \"eu\"".into()),
        Check::AwsRegion => {
            let parts: Vec<&str> = v.split('-').collect();
            let ok = v.len() <= 32
                && parts.len() >= 3
                && parts.iter().all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
                && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
            ok.then(|| v.to_string())
                .ok_or_else(|| "must be an AWS region, like eu-west-1".into())
        }
        // AWS's keys are 16–128 capitals and digits; its SigV4 examples use shorter ones
        // (AKIDEXAMPLE).
        Check::AccessKeyId => ((1..=128).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        .then(|| v.to_string())
        .ok_or_else(|| {
            "must be an AWS access key id (up to 128 capital letters and digits)".into()
        }),
        Check::ConfigSet => (!v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| v.to_string())
        .ok_or_else(|| "must be 1 to 64 letters, digits, - or _".into()),
        // Twilio's ids are the prefix and 32 hexadecimal digits; its documentation writes
        // them with X's (ACXXXX…): any letters and digits after the prefix pass, and the id
        // stays safe in the request's path.
        Check::Sid(prefix) => (v.len() > prefix.len()
            && v.len() <= 64
            && v.starts_with(prefix)
            && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| v.to_string())
        .ok_or_else(|| {
            format!("must be {prefix} followed by letters and digits (up to 64 in all)")
        }),
        Check::WebhookSecret => v
            .strip_prefix("whsec_")
            .and_then(|k| {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, k).ok()
            })
            .filter(|k| !k.is_empty())
            .map(|_| v.to_string())
            .ok_or_else(|| {
                "must be the signing secret as the provider shows it: whsec_ and base64".into()
            }),
        Check::TopicArn => {
            let parts: Vec<&str> = v.split(':').collect();
            let ok = parts.len() == 6
                && parts[..3] == ["arn", "aws", "sns"]
                && !parts[3].is_empty()
                && parts[4].len() == 12
                && parts[4].bytes().all(|b| b.is_ascii_digit())
                && !parts[5].is_empty()
                && parts[5].len() <= 256
                && parts[5]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            ok.then(|| v.to_string()).ok_or_else(|| {
                "must be an SNS topic ARN, like arn:aws:sns:eu-west-1:123456789012:ses-events"
                    .into()
            })
        }
        Check::EcPublicKey => super::provider_event::sendgrid_point(v)
            .map(|_| v.trim().to_string())
            .ok_or_else(|| {
                "must be the verification key as SendGrid shows it: base64 of a P-256 public key"
                    .into()
            }),
    }
}

#[cfg(test)]
mod tests;
