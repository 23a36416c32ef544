//! A tenant's relay accounts (API.md §12.1, §15.1): the primary relay and the fallback,
//! parsed, checked against the host policy, and sealed — the password, or the OAuth2
//! secrets, bound to the tenant (as its fallback, for the second relay), host, port and
//! user (and the token endpoint and client). A relay that moves needs its secrets again.

use secrecy::{ExposeSecret, SecretString};

use crate::domain::keys::TenantId;
use crate::domain::oauth2::{OAuth2Input, OAuth2Secrets};
use crate::domain::policy::FieldError;
use crate::domain::tenant::{parse_port, Sender, SmtpAccount, SmtpHost, TlsMode};
use crate::service::core::seals::Seal;
use crate::service::{ServiceError, Tenants};

/// SMTP settings for a new tenant.
#[derive(Debug)]
pub struct SmtpInput {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// A password login (unless `oauth2`).
    pub password: Option<SecretString>,
    pub from: String,
    pub tls: Option<TlsMode>,
    /// Default: `smtp.max_connections_per_tenant`.
    pub max_connections: Option<u32>,
    /// SASL XOAUTH2 instead of a password (API.md §15.1).
    pub oauth2: Option<OAuth2Input>,
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
    /// OAuth2 settings to set or change (API.md §15.1).
    pub oauth2: Option<OAuth2Input>,
}

impl From<&SmtpInput> for SmtpPatch {
    fn from(s: &SmtpInput) -> SmtpPatch {
        SmtpPatch {
            host: Some(s.host.clone()),
            port: Some(s.port),
            username: Some(s.username.clone()),
            password: s.password.clone(),
            from: Some(s.from.clone()),
            tls: s.tls,
            max_connections: s.max_connections,
            oauth2: s.oauth2.clone(),
        }
    }
}

/// Keep a parsed value, or note why it is not one.
pub(super) fn take<T>(r: Result<T, FieldError>, errs: &mut Vec<FieldError>) -> Option<T> {
    r.map_err(|e| errs.push(e)).ok()
}

/// The longest relay user name and password, in characters.
pub(crate) const USERNAME_MAX: usize = 256;
pub(crate) const PASSWORD_MAX: usize = 1024;

/// A host the address policy could not read as a name or an address (`a..b.example`, a
/// label over 63 characters, a leading hyphen) is a bad field (400), not a refused address
/// (422) whose advice no setting could follow. A name or address in another script is kept
/// in the ASCII form that is dialled (`smtp.bücher.example` → `smtp.xn--bcher-kva.example`,
/// full-width digits → the address), so what is shown is what is used. IPv6 addresses, in
/// any spelling, are the policy's to judge.
pub(crate) fn readable_host(h: SmtpHost) -> Result<SmtpHost, FieldError> {
    use crate::net_policy::HostName;
    let s = h.as_str();
    if s.contains(':') {
        return Ok(h);
    }
    match HostName::parse(s) {
        None => Err(FieldError::new(
            "smtp.host",
            "must be a host name (dot-separated labels of at most 63 characters: letters of any script, digits, `_` and inner hyphens) or an IP address",
        )),
        Some(HostName::Dns(d)) if !s.is_ascii() => Ok(SmtpHost::from_stored(d)),
        Some(HostName::Ip(ip)) if !s.is_ascii() => Ok(SmtpHost::from_stored(ip.to_string())),
        Some(_) => Ok(h),
    }
}

/// The relay fields parsed into their domain types; every bad one is noted in `errs` and
/// comes back `None`. A host or sender not given (`None`) is the stored one (`kept`), as it
/// was stored: today's rules apply to what a request sends, not to what an earlier version
/// took; a host given in another spelling of the stored one is the stored one (no move).
/// `relay`: the field the errors are named under (`smtp` or `smtp_fallback`).
#[allow(clippy::too_many_arguments)]
pub(super) fn parse_smtp_fields(
    relay: &str,
    host: Option<&str>,
    port: u16,
    username: &str,
    password: Option<&str>,
    from: Option<&str>,
    kept: (&SmtpHost, &Sender),
    errs: &mut Vec<FieldError>,
) -> (Option<SmtpHost>, Option<u16>, Option<Sender>) {
    let mut mine = Vec::new();
    let host = match host {
        None => Some(kept.0.clone()),
        Some(h) => take(SmtpHost::parse(h).and_then(readable_host), &mut mine).map(|h| {
            let stored_as = readable_host(kept.0.clone()).ok();
            if stored_as.as_ref() == Some(&h) {
                kept.0.clone()
            } else {
                h
            }
        }),
    };
    let port = take(parse_port(port), &mut mine);
    // Characters, as the API description's maxLength counts them.
    if username.chars().count() > USERNAME_MAX || username.chars().any(char::is_control) {
        mine.push(FieldError::new(
            "smtp.username",
            "must be at most 256 characters, no control characters",
        ));
    }
    if let Some(p) = password {
        if p.chars().count() > PASSWORD_MAX || p.contains(['\r', '\n', '\0']) {
            mine.push(FieldError::new(
                "smtp.password",
                "must be at most 1024 characters, no line breaks",
            ));
        }
    }
    let from = match from {
        None => Some(kept.1.clone()),
        Some(f) => take(Sender::parse(f), &mut mine),
    };
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

impl Tenants {
    /// SSRF and port/plaintext policy for a host being set (resolves it).
    pub(super) async fn check_host(
        &self,
        host: &SmtpHost,
        port: u16,
        tls: TlsMode,
    ) -> Result<(), ServiceError> {
        self.core
            .mailer
            .policy()
            .check(host.as_str(), port, tls == TlsMode::None)
            .await
            .map(|_| ())
            .map_err(ServiceError::SmtpPolicy)
    }

    /// A relay account changed by `sp`: the primary relay (`fallback` false; `current` is
    /// its account) or the fallback. `current` is `None` while the tenant has no such relay:
    /// then host, port, from and a password or `oauth2` are required. Bad fields are noted
    /// in `errs` (and `None` comes back); a relay that moves — host, port, username, or its
    /// token endpoint, client or Entra tenant — needs its secrets again, and a relay given
    /// passes the host policy (and the token endpoint the outbound address policy).
    pub(super) async fn account_change(
        &self,
        (id, fallback): (&TenantId, bool),
        current: Option<&SmtpAccount>,
        sp: &SmtpPatch,
        errs: &mut Vec<FieldError>,
    ) -> Result<Option<SmtpAccount>, ServiceError> {
        let relay = if fallback { "smtp_fallback" } else { "smtp" };
        // A relay added where there was none takes what a tenant's creation takes: no
        // username and an empty password for a relay without AUTH.
        let filled;
        let sp = if current.is_none() && sp.oauth2.is_none() {
            filled = SmtpPatch {
                username: Some(sp.username.clone().unwrap_or_default()),
                password: Some(SecretString::from(
                    sp.password
                        .as_ref()
                        .map(|p| p.expose_secret().to_string())
                        .unwrap_or_default(),
                )),
                host: sp.host.clone(),
                port: sp.port,
                from: sp.from.clone(),
                tls: sp.tls,
                max_connections: sp.max_connections,
                oauth2: None,
            };
            &filled
        } else {
            sp
        };
        let before = errs.len();
        check_max_connections(
            relay,
            sp.max_connections,
            self.core.settings.load().smtp.max_connections_limit,
            errs,
        );
        if sp.password.is_some() && sp.oauth2.is_some() {
            errs.push(FieldError::new(
                format!("{relay}.password"),
                "give either password or oauth2, not both",
            ));
        }
        let c = match current {
            Some(c) => c.clone(),
            None => {
                let missing = [
                    ("host", sp.host.is_none()),
                    ("port", sp.port.is_none()),
                    ("username", sp.username.is_none()),
                    ("password", sp.password.is_none() && sp.oauth2.is_none()),
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
                    oauth2: None,
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
            sp.host.as_deref(),
            port,
            &username,
            sp.password.as_ref().map(|s| s.expose_secret()),
            sp.from.as_deref(),
            (&c.host, &c.from),
            errs,
        );
        // The login it will have: OAuth2 when given (or kept), a password when given.
        let oauth2 = match (&sp.oauth2, &sp.password) {
            (Some(input), _) => input.parse(relay, c.oauth2.as_ref(), errs),
            (None, Some(_)) => None,
            (None, None) => c.oauth2.clone().map(|o| (o, None)),
        };
        // A host given but not parsed counts as a move: the secrets rule is reported with
        // the other errors, not in a second round. The same address spelt another way
        // (`[192.0.2.1]` for `192.0.2.1`) is no move.
        let mut moved = host.as_ref().is_none_or(|h| !same_place(h, &c.host))
            || port != c.port
            || username != c.username;
        match (&oauth2, &c.oauth2) {
            (Some((o, _)), Some(before)) => moved |= o.moved_from(before),
            // A new way to log in needs its secret whatever else changed.
            (Some(_), None) | (None, Some(_)) => moved = true,
            (None, None) => {}
        }
        if oauth2.is_some() && username.is_empty() {
            // XOAUTH2 names the mailbox: without a user name nothing would log in.
            errs.push(FieldError::new(
                format!("{relay}.username"),
                "is required with oauth2 (the mailbox that sends)",
            ));
        }
        let given = sp.password.is_some() || oauth2.as_ref().is_some_and(|(_, s)| s.is_some());
        // OAuth2 settings given but refused have their own errors: asking for a password
        // beside them would contradict "either password or oauth2".
        let oauth2_refused = sp.oauth2.is_some() && oauth2.is_none();
        if moved && !given && !oauth2_refused {
            let (field, what) = if oauth2.is_some() {
                (
                    "oauth2.client_secret",
                    "host, port, username, token_url, client_id or entra_tenant",
                )
            } else {
                ("password", "host, port or username")
            };
            errs.push(FieldError::new(
                format!("{relay}.{field}"),
                format!("is required when {what} change"),
            ));
        }
        if let (Some((o, Some(secrets))), true) = (&oauth2, moved) {
            let had_refresh = c.oauth2.as_ref().is_some_and(|b| b.refresh_token);
            if had_refresh && secrets.refresh_token.is_none() && o.refresh_token {
                errs.push(FieldError::new(
                    format!("{relay}.oauth2.refresh_token"),
                    "is required again when the relay moves (one was stored)",
                ));
            }
        }
        let (Some(host), Some(port), Some(from), true) = (host, port_ok, from, errs.is_empty())
        else {
            return Ok(None);
        };
        if moved || sp.tls.is_some() || sp.port.is_some() {
            self.check_host(&host, port, tls).await?;
        }
        let mut account = SmtpAccount {
            host,
            port,
            username,
            password: Vec::new(),
            from,
            tls,
            max_connections: sp.max_connections.unwrap_or(c.max_connections),
            oauth2: None,
        };
        account.password = match oauth2 {
            Some((o, secrets)) => {
                if moved || secrets.is_some() {
                    // The endpoint's form when the request names the endpoint; a stored
                    // one (an earlier version's looser form) passes the policy alone.
                    let named = sp.oauth2.as_ref().is_some_and(|i| {
                        i.token_url.is_some() || i.provider.is_some() || i.entra_tenant.is_some()
                    });
                    self.check_token_url(relay, &o.token_url, named).await?;
                }
                account.oauth2 = Some(o.clone());
                match secrets {
                    Some(mut secrets) => {
                        // A new client secret alone keeps the stored refresh token.
                        // One that cannot be read now is not silently dropped (the relay
                        // would move to the client-credentials grant): the database away
                        // answers 503, a stored value that cannot be opened asks for it again.
                        if secrets.refresh_token.is_none() && o.refresh_token && !moved {
                            let unreadable = || {
                                ServiceError::field(
                                    if fallback {
                                        "smtp_fallback.oauth2.refresh_token"
                                    } else {
                                        "smtp.oauth2.refresh_token"
                                    },
                                    "the stored refresh token cannot be read: give it again",
                                )
                            };
                            let plain = self
                                .core
                                .open(&Seal::relay(id, fallback, &c), &c.password)
                                .await
                                .map_err(|e| match e {
                                    ServiceError::Unavailable(_) | ServiceError::Overloaded => e,
                                    _ => unreadable(),
                                })?;
                            let stored = serde_json::from_slice::<OAuth2Secrets>(&plain)
                                .map_err(|_| unreadable())?;
                            secrets.refresh_token = stored.refresh_token;
                        }
                        if secrets.refresh_token.is_none() {
                            if let Some(o) = account.oauth2.as_mut() {
                                o.refresh_token = false;
                            }
                        }
                        self.core
                            .seal_oauth2_for(id, fallback, &account, &o, &secrets)?
                    }
                    None => c.password.clone(),
                }
            }
            None => match &sp.password {
                Some(pw) => self.core.seal(
                    &Seal::relay(id, fallback, &account),
                    pw.expose_secret().as_bytes(),
                )?,
                None => c.password.clone(),
            },
        };
        Ok(Some(account))
    }

    /// A token endpoint passes the outbound address policy (the webhooks' settings) as far
    /// as it can be told without DNS (scheme, an IP literal's address, local names); the
    /// resolved addresses are checked at every request.
    async fn check_token_url(
        &self,
        relay: &str,
        url: &str,
        form: bool,
    ) -> Result<(), ServiceError> {
        let settings = self.core.settings.load_full();
        let form = if form {
            crate::outbound::check_url_form(url, &settings)
        } else {
            Ok(())
        };
        form.and_then(|()| crate::outbound::check_url(url, &settings).map(drop))
            .map_err(|e| {
                crate::service::events::webhooks::refused(&format!("{relay}.oauth2.token_url"), e)
            })
    }
}

/// Whether two relay hosts name the same place: the same text, or the same address however
/// it is spelt.
fn same_place(a: &SmtpHost, b: &SmtpHost) -> bool {
    use crate::net_policy::HostName;
    a == b || HostName::parse(a.as_str()).is_some_and(|h| HostName::parse(b.as_str()) == Some(h))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Found by a review: a host or sender stored before today's rules (a host in another
    /// script, stored as given then) is kept as stored when a PATCH does not send it, and a
    /// host sent in another spelling of the stored one is the stored one — so neither
    /// counts as a move that would ask for the relay's secrets again.
    #[test]
    fn what_a_patch_does_not_send_is_kept_as_stored() {
        let kept_host = SmtpHost::from_stored("ｌｏｃａｌｈｏｓｔ".into());
        let kept_from = Sender::from_stored("\u{202E}Acme <a@acme.example>".into());
        let parse = |host: Option<&str>, from: Option<&str>| {
            let mut errs = Vec::new();
            let (h, p, f) = parse_smtp_fields(
                "smtp",
                host,
                587,
                "user",
                None,
                from,
                (&kept_host, &kept_from),
                &mut errs,
            );
            (h, p, f, errs)
        };
        let (h, p, f, errs) = parse(None, None);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            (h.unwrap(), p, f.unwrap()),
            (kept_host.clone(), Some(587), kept_from.clone())
        );
        // The stored host in its ASCII spelling is the stored host.
        let (h, _, _, errs) = parse(Some("localhost"), None);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(h.unwrap(), kept_host);
        // What a request sends meets today's rules.
        let (h, _, f, errs) = parse(Some("ｍａｉｌ.example"), Some("\u{202E}X <a@acme.example>"));
        assert_eq!(h.unwrap().as_str(), "mail.example");
        assert!(f.is_none());
        assert_eq!(
            errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["smtp.from"]
        );
    }
}
