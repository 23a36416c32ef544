//! A tenant's relay accounts (API.md §12.1): the primary relay and the fallback, parsed,
//! checked against the host policy, and sealed — the password bound to the tenant (as its
//! fallback, for the second relay), host, port and user.

use secrecy::{ExposeSecret, SecretString};

use super::{ServiceError, Services};
use crate::crypto::cipher::{encrypt_password, PasswordContext};
use crate::domain::keys::TenantId;
use crate::domain::policy::FieldError;
use crate::domain::tenant::{parse_port, Sender, SmtpAccount, SmtpHost, TlsMode};

/// SMTP settings for a new tenant.
#[derive(Debug)]
pub struct SmtpInput {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    pub from: String,
    pub tls: Option<TlsMode>,
    /// Default: `smtp.max_connections_per_tenant`.
    pub max_connections: Option<u32>,
}

/// A partial change of SMTP settings.
#[derive(Debug, Default)]
pub struct SmtpPatch {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub from: Option<String>,
    pub tls: Option<TlsMode>,
    pub max_connections: Option<u32>,
}

impl From<&SmtpInput> for SmtpPatch {
    fn from(s: &SmtpInput) -> SmtpPatch {
        SmtpPatch {
            host: Some(s.host.clone()),
            port: Some(s.port),
            username: Some(s.username.clone()),
            password: Some(s.password.clone()),
            from: Some(s.from.clone()),
            tls: s.tls,
            max_connections: s.max_connections,
        }
    }
}

/// The id a relay password is sealed under (bound into its AAD): the tenant's, or for its
/// fallback relay the tenant's marked as such, so the two blobs cannot stand in for each other.
pub(crate) fn sealed_as(id: &TenantId, fallback: bool) -> String {
    if fallback {
        format!("{}/fallback", id.as_str())
    } else {
        id.as_str().to_string()
    }
}

/// Keep a parsed value, or note why it is not one.
pub(super) fn take<T>(r: Result<T, FieldError>, errs: &mut Vec<FieldError>) -> Option<T> {
    r.map_err(|e| errs.push(e)).ok()
}

/// The relay fields parsed into their domain types; every bad one is noted in `errs` and
/// comes back `None`.
/// `relay`: the field the errors are named under (`smtp` or `smtp_fallback`).
pub(super) fn parse_smtp_fields(
    relay: &str,
    host: &str,
    port: u16,
    username: &str,
    password: Option<&str>,
    from: &str,
    errs: &mut Vec<FieldError>,
) -> (Option<SmtpHost>, Option<u16>, Option<Sender>) {
    let mut mine = Vec::new();
    let host = take(SmtpHost::parse(host), &mut mine);
    let port = take(parse_port(port), &mut mine);
    if username.len() > 256 || username.chars().any(char::is_control) {
        mine.push(FieldError::new(
            "smtp.username",
            "must be at most 256 characters, no control characters",
        ));
    }
    if let Some(p) = password {
        if p.len() > 1024 || p.contains(['\r', '\n', '\0']) {
            mine.push(FieldError::new(
                "smtp.password",
                "must be at most 1024 characters, no line breaks",
            ));
        }
    }
    let from = take(Sender::parse(from), &mut mine);
    errs.extend(mine.into_iter().map(|mut e| {
        if let Some(rest) = e.field.strip_prefix("smtp.") {
            e.field = format!("{relay}.{rest}");
        }
        e
    }));
    (host, port, from)
}

pub(super) fn check_max_connections(
    relay: &str,
    v: Option<u32>,
    limit: u32,
    errs: &mut Vec<FieldError>,
) {
    if let Some(n) = v {
        if n == 0 || n > limit {
            errs.push(FieldError::new(
                format!("{relay}.max_connections"),
                format!("must be between 1 and {limit}"),
            ));
        }
    }
}

impl Services {
    pub(super) fn encrypt(
        &self,
        (id, fallback): (&TenantId, bool),
        host: &SmtpHost,
        port: u16,
        username: &str,
        password: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        Ok(encrypt_password(
            &self.keyring.get(),
            &PasswordContext {
                tenant_id: &sealed_as(id, fallback),
                host: host.as_str(),
                port,
                username,
            },
            password,
        )?)
    }

    /// SSRF and port/plaintext policy for a host being set (resolves it).
    pub(super) async fn check_host(
        &self,
        host: &SmtpHost,
        port: u16,
        tls: TlsMode,
    ) -> Result<(), ServiceError> {
        self.mailer
            .policy()
            .check(host.as_str(), port, tls == TlsMode::None)
            .await
            .map(|_| ())
            .map_err(ServiceError::SmtpPolicy)
    }

    /// A relay account changed by `sp`: the primary relay (`fallback` false; `current` is
    /// its account) or the fallback (`current` is `None` while the tenant has none: then
    /// every field but `tls` and `max_connections` is required). Bad fields are noted in
    /// `errs` (and `None` comes back); a relay that moves needs its password again, and a
    /// relay given passes the host policy.
    pub(super) async fn account_change(
        &self,
        (id, fallback): (&TenantId, bool),
        current: Option<&SmtpAccount>,
        sp: &SmtpPatch,
        errs: &mut Vec<FieldError>,
    ) -> Result<Option<SmtpAccount>, ServiceError> {
        let relay = if fallback { "smtp_fallback" } else { "smtp" };
        let before = errs.len();
        check_max_connections(
            relay,
            sp.max_connections,
            self.settings.load().smtp.max_connections_limit,
            errs,
        );
        let c = match current {
            Some(c) => c.clone(),
            None => {
                let missing = [
                    ("host", sp.host.is_none()),
                    ("port", sp.port.is_none()),
                    ("username", sp.username.is_none()),
                    ("password", sp.password.is_none()),
                    ("from", sp.from.is_none()),
                ];
                for (field, absent) in missing {
                    if absent {
                        errs.push(FieldError::new(format!("{relay}.{field}"), "is required"));
                    }
                }
                if errs.len() > before {
                    return Ok(None);
                }
                // Every field comes from the patch: this stands in for "nothing before".
                SmtpAccount {
                    host: SmtpHost::from_stored(String::new()),
                    port: 0,
                    username: String::new(),
                    password: Vec::new(),
                    from: Sender::from_stored(String::new()),
                    tls: TlsMode::Starttls,
                    max_connections: 0,
                }
            }
        };
        let port = sp.port.unwrap_or(c.port);
        let username = sp.username.clone().unwrap_or_else(|| c.username.clone());
        let tls = match sp.tls {
            Some(t) => t,
            None if sp.port.is_some() && sp.port != Some(c.port) => TlsMode::default_for(port),
            None => c.tls,
        };
        let (host, port_ok, from) = parse_smtp_fields(
            relay,
            sp.host.as_deref().unwrap_or(c.host.as_str()),
            port,
            &username,
            sp.password.as_ref().map(|s| s.expose_secret()),
            sp.from.as_deref().unwrap_or(c.from.as_str()),
            errs,
        );
        // A host given but not parsed counts as a move: the password rule is reported with
        // the other errors, not in a second round.
        let moved =
            host.as_ref().is_none_or(|h| *h != c.host) || port != c.port || username != c.username;
        if moved && sp.password.is_none() {
            errs.push(FieldError::new(
                format!("{relay}.password"),
                "is required when host, port or username change",
            ));
        }
        let (Some(host), Some(port), Some(from), true) = (host, port_ok, from, errs.is_empty())
        else {
            return Ok(None);
        };
        if moved || sp.tls.is_some() || sp.port.is_some() {
            self.check_host(&host, port, tls).await?;
        }
        let password = match &sp.password {
            Some(pw) => self.encrypt((id, fallback), &host, port, &username, pw.expose_secret())?,
            None => c.password.clone(),
        };
        Ok(Some(SmtpAccount {
            host,
            port,
            username,
            password,
            from,
            tls,
            max_connections: sp.max_connections.unwrap_or(c.max_connections),
        }))
    }
}
