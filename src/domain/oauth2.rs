//! SMTP with OAuth2 (API.md §15.1): the settings of a relay that logs in with SASL XOAUTH2
//! instead of a password — where its tokens come from, for which client and scope, and
//! whether a refresh token is kept — and the presets for Microsoft 365 and Google.

use super::named::named_enum;
use super::policy::FieldError;

named_enum! {
    /// A token endpoint otpmint knows.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum OAuth2Provider {
        Microsoft = "microsoft",
        Google = "google",
    }
}

/// The scope of Microsoft 365's client-credentials grant (app-only SMTP).
pub const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// The scope of Microsoft 365's delegated SMTP with a refresh token.
pub const MICROSOFT_DELEGATED_SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";

/// A relay's OAuth2 settings. Stored as this type's JSON (the tenants' `*_oauth2` columns):
/// renaming, reordering or re-skipping a field changes stored data, which the tests of
/// `storage::cells::tenant` pin. Its client secret and refresh token are sealed with the
/// relay's other secrets, never here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OAuth2 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<OAuth2Provider>,
    pub token_url: String,
    pub client_id: String,
    /// Empty: no scope is sent.
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_tenant: Option<String>,
    /// A refresh token is stored: the refresh-token grant is used, else client credentials.
    #[serde(default)]
    pub refresh_token: bool,
}

impl OAuth2 {
    /// What a change of these settings must carry the secrets again for (with host, port
    /// and username): where the tokens come from and for whom.
    pub fn moved_from(&self, before: &OAuth2) -> bool {
        self.token_url != before.token_url
            || self.client_id != before.client_id
            || self.entra_tenant != before.entra_tenant
    }
}

/// The secrets of an OAuth2 relay, sealed together.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OAuth2Secrets {
    pub client_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for OAuth2Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OAuth2Secrets(..)")
    }
}

/// The `oauth2` object of a relay as given (also the JSON file of
/// `otpmint tenant create --smtp-oauth2-file`).
#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Input {
    pub provider: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub refresh_token: Option<String>,
    pub entra_tenant: Option<String>,
}

impl std::fmt::Debug for OAuth2Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Input")
            .field("provider", &self.provider)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("entra_tenant", &self.entra_tenant)
            .finish_non_exhaustive()
    }
}

fn visible(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(|c| c.is_control() || c == ' ')
}

impl OAuth2Input {
    /// Parse against what is stored (`current`: a patch names only what changes). Errors are
    /// named under `relay` (`smtp.oauth2.client_id`). The secrets come back only when given:
    /// `None` keeps the stored ones (the caller decides whether the change allows that).
    pub fn parse(
        &self,
        relay: &str,
        current: Option<&OAuth2>,
        errs: &mut Vec<FieldError>,
    ) -> Option<(OAuth2, Option<OAuth2Secrets>)> {
        let field = |name: &str| format!("{relay}.oauth2.{name}");
        let before = errs.len();
        let provider = match (&self.provider, current) {
            (Some(p), _) => match OAuth2Provider::parse(p) {
                Some(p) => Some(p),
                None => {
                    errs.push(FieldError::new(
                        field("provider"),
                        "must be \"microsoft\" or \"google\"",
                    ));
                    None
                }
            },
            (None, Some(c)) if self.token_url.is_none() => c.provider,
            (None, _) => None,
        };
        let entra_tenant = self
            .entra_tenant
            .clone()
            .or_else(|| current.and_then(|c| c.entra_tenant.clone()));
        if let Some(t) = &entra_tenant {
            let ok = t.len() <= 100
                && !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                errs.push(FieldError::new(
                    field("entra_tenant"),
                    "must be a Microsoft Entra tenant id or domain",
                ));
            }
        }
        let client_id = self
            .client_id
            .clone()
            .or_else(|| current.map(|c| c.client_id.clone()));
        match &client_id {
            Some(c) if visible(c, 256) => {}
            Some(_) => errs.push(FieldError::new(
                field("client_id"),
                "must be 1 to 256 characters, no spaces",
            )),
            None => errs.push(FieldError::new(field("client_id"), "is required")),
        }
        for (name, v) in [
            ("client_secret", &self.client_secret),
            ("refresh_token", &self.refresh_token),
        ] {
            if v.as_deref().is_some_and(|s| !visible(s, 4096)) {
                errs.push(FieldError::new(
                    field(name),
                    "must be 1 to 4096 characters, no spaces",
                ));
            }
        }
        // Kept unless given anew; whether it must be given again is the caller's rule.
        let refresh = self.refresh_token.is_some() || current.is_some_and(|c| c.refresh_token);
        let token_url = match (&self.token_url, provider) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(OAuth2Provider::Microsoft)) => match &entra_tenant {
                Some(t) => Some(format!(
                    "https://login.microsoftonline.com/{t}/oauth2/v2.0/token"
                )),
                None => {
                    errs.push(FieldError::new(
                        field("entra_tenant"),
                        "is required with provider \"microsoft\"",
                    ));
                    None
                }
            },
            (None, Some(OAuth2Provider::Google)) => Some(GOOGLE_TOKEN_URL.to_string()),
            (None, None) => match current {
                Some(c) if self.provider.is_none() => Some(c.token_url.clone()),
                _ => {
                    errs.push(FieldError::new(
                        field("token_url"),
                        "is required without a provider",
                    ));
                    None
                }
            },
        };
        if let Some(u) = &token_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || !visible(u, 2048) {
                errs.push(FieldError::new(
                    field("token_url"),
                    "must be an absolute https:// URL",
                ));
            }
        }
        let scope = match (&self.scope, provider) {
            (Some(s), _) => s.clone(),
            // A patch that names neither a scope nor a provider keeps the stored scope; one
            // Microsoft's preset filled follows the grant (a refresh token given turns the
            // client-credentials scope into the delegated one).
            (None, _) if self.provider.is_none() && current.is_some() => {
                let kept = current.map(|c| c.scope.clone()).unwrap_or_default();
                let preset = [MICROSOFT_APP_SCOPE, MICROSOFT_DELEGATED_SCOPE].contains(&&*kept);
                match provider {
                    Some(OAuth2Provider::Microsoft) if preset && refresh => {
                        MICROSOFT_DELEGATED_SCOPE.to_string()
                    }
                    _ => kept,
                }
            }
            (None, Some(OAuth2Provider::Microsoft)) if refresh => {
                MICROSOFT_DELEGATED_SCOPE.to_string()
            }
            (None, Some(OAuth2Provider::Microsoft)) => MICROSOFT_APP_SCOPE.to_string(),
            (None, Some(OAuth2Provider::Google)) => GOOGLE_SCOPE.to_string(),
            (None, None) => current.map(|c| c.scope.clone()).unwrap_or_default(),
        };
        if scope.len() > 1024 || scope.chars().any(char::is_control) {
            errs.push(FieldError::new(
                field("scope"),
                "must be at most 1024 characters, no control characters",
            ));
        }
        if current.is_none() && self.client_secret.is_none() {
            errs.push(FieldError::new(field("client_secret"), "is required"));
        } else if self.refresh_token.is_some() && self.client_secret.is_none() {
            // Sealed together: a new refresh token comes with the client secret.
            errs.push(FieldError::new(
                field("client_secret"),
                "is required with refresh_token",
            ));
        }
        if errs.len() > before {
            return None;
        }
        let secrets = self.client_secret.as_ref().map(|s| OAuth2Secrets {
            client_secret: s.clone(),
            refresh_token: self.refresh_token.clone(),
        });
        Some((
            OAuth2 {
                provider,
                token_url: token_url.unwrap_or_default(),
                client_id: client_id.unwrap_or_default(),
                scope,
                entra_tenant,
                refresh_token: refresh,
            },
            secrets,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(f: impl FnOnce(&mut OAuth2Input)) -> OAuth2Input {
        let mut i = OAuth2Input {
            client_id: Some("app".into()),
            client_secret: Some("s3cret".into()),
            ..Default::default()
        };
        f(&mut i);
        i
    }

    #[test]
    fn presets_fill_the_token_url_and_the_scope_of_the_grant() {
        let mut errs = Vec::new();
        let (o, s) = input(|i| {
            i.provider = Some("microsoft".into());
            i.entra_tenant = Some("contoso.onmicrosoft.com".into());
        })
        .parse("smtp", None, &mut errs)
        .unwrap();
        assert_eq!(
            o.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(o.scope, MICROSOFT_APP_SCOPE);
        assert!(!o.refresh_token);
        assert_eq!(s.unwrap().client_secret, "s3cret");
        let (o, _) = input(|i| {
            i.provider = Some("microsoft".into());
            i.entra_tenant = Some("contoso".into());
            i.refresh_token = Some("rt".into());
        })
        .parse("smtp", None, &mut errs)
        .unwrap();
        assert_eq!(o.scope, MICROSOFT_DELEGATED_SCOPE);
        assert!(o.refresh_token);
        let (o, _) = input(|i| {
            i.provider = Some("google".into());
            i.refresh_token = Some("rt".into());
        })
        .parse("smtp", None, &mut errs)
        .unwrap();
        assert_eq!(
            (o.token_url.as_str(), o.scope.as_str()),
            (GOOGLE_TOKEN_URL, GOOGLE_SCOPE)
        );
        assert!(errs.is_empty());
    }

    #[test]
    fn what_is_missing_or_malformed_is_named() {
        let mut errs = Vec::new();
        assert!(input(|i| i.provider = Some("microsoft".into()))
            .parse("smtp", None, &mut errs)
            .is_none());
        assert_eq!(errs[0].field, "smtp.oauth2.entra_tenant");
        errs.clear();
        assert!(input(|_| {})
            .parse("smtp_fallback", None, &mut errs)
            .is_none());
        assert_eq!(errs[0].field, "smtp_fallback.oauth2.token_url");
        errs.clear();
        assert!(input(|i| {
            i.token_url = Some("https://t.example/token".into());
            i.client_secret = None;
        })
        .parse("smtp", None, &mut errs)
        .is_none());
        assert_eq!(errs[0].field, "smtp.oauth2.client_secret");
        errs.clear();
        assert!(input(|i| i.token_url = Some("ftp://x".into()))
            .parse("smtp", None, &mut errs)
            .is_none());
        assert_eq!(errs[0].field, "smtp.oauth2.token_url");
    }

    #[test]
    fn a_refresh_token_patched_into_a_microsoft_relay_brings_the_delegated_scope() {
        let mut errs = Vec::new();
        let microsoft = |scope: Option<&str>| {
            input(|i| {
                i.provider = Some("microsoft".into());
                i.entra_tenant = Some("contoso.onmicrosoft.com".into());
                i.scope = scope.map(str::to_string);
            })
            .parse("smtp", None, &mut Vec::new())
            .unwrap()
            .0
        };
        let add_token = OAuth2Input {
            client_secret: Some("s3cret".into()),
            refresh_token: Some("rt".into()),
            ..Default::default()
        };
        let stored = microsoft(None);
        assert_eq!(stored.scope, MICROSOFT_APP_SCOPE);
        let (patched, _) = add_token.parse("smtp", Some(&stored), &mut errs).unwrap();
        assert_eq!(patched.scope, MICROSOFT_DELEGATED_SCOPE);
        assert!(patched.refresh_token);
        // A scope set by hand stays.
        let custom = microsoft(Some("https://outlook.office.com/SMTP.Send"));
        let (patched, _) = add_token.parse("smtp", Some(&custom), &mut errs).unwrap();
        assert_eq!(patched.scope, "https://outlook.office.com/SMTP.Send");
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn a_patch_keeps_what_it_does_not_name_and_knows_a_move() {
        let mut errs = Vec::new();
        let (stored, _) = input(|i| {
            i.token_url = Some("https://t.example/token".into());
            i.refresh_token = Some("rt".into());
            i.scope = Some("smtp".into());
        })
        .parse("smtp", None, &mut errs)
        .unwrap();
        let (same, secrets) = OAuth2Input::default()
            .parse("smtp", Some(&stored), &mut errs)
            .unwrap();
        assert_eq!(same, stored);
        assert!(secrets.is_none());
        let (moved, _) = OAuth2Input {
            client_id: Some("other".into()),
            ..Default::default()
        }
        .parse("smtp", Some(&stored), &mut errs)
        .unwrap();
        assert!(moved.moved_from(&stored));
        assert!(!same.moved_from(&stored));
        assert!(errs.is_empty());
        assert!(!format!("{:?}", input(|_| {})).contains("s3cret"));
    }
}
