//! What the mailer is asked to do: where to send for a tenant, how to log in, the message,
//! and the DKIM key it is signed with.

use std::path::PathBuf;

use secrecy::SecretString;

use crate::domain::tenant::TlsMode;

/// Where and how to send for one tenant. How many sessions may be open at once is the
/// caller's (the delivery service's relay window); the mailer opens, reuses and closes them.
pub struct SmtpTarget {
    pub tenant_id: String,
    /// Changes whenever the tenant's SMTP settings change.
    pub version: i64,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: SmtpAuth,
    pub from: String,
    pub tls: TlsMode,
}

/// How a session logs in (with a non-empty username).
pub enum SmtpAuth {
    /// AUTH PLAIN or LOGIN.
    Password(SecretString),
    /// SASL XOAUTH2 with this access token (API.md §15.1).
    Xoauth2(SecretString),
}

/// One message to send: a text part and, optionally, an HTML alternative.
pub struct Outgoing<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub html: Option<&'a str>,
    /// `<id@domain>`; fixed when the message is stored, so a resend carries the same one.
    pub message_id: Option<&'a str>,
    /// The tenant's DKIM key, when its domain aligns with the sender's (API.md §16.3).
    pub dkim: Option<&'a DkimSigner>,
    /// Asked once the relay has said go ahead to DATA, before the first byte of the
    /// message: a queued message's send is recorded as begun there (API.md §19.2).
    pub before_body: Option<&'a dyn BeforeBody>,
}

/// What must hold before a message's body leaves: `false` stops the send there, the
/// connection dropped mid-DATA (the relay keeps nothing of it).
pub trait BeforeBody: Sync {
    fn ready(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}

/// A DKIM key a message is signed with (relaxed/relaxed).
pub struct DkimSigner {
    pub domain: String,
    pub selector: String,
    pub algorithm: crate::domain::dkim::DkimAlgorithm,
    /// As lettre takes it: Ed25519 base64 of the seed; RSA PKCS#1 PEM.
    pub private: SecretString,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailerSetupError {
    #[error("cannot read SMTP root certificate {path}: {message}")]
    RootCertificate { path: PathBuf, message: String },
}
