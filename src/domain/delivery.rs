//! Delivery of a code's message: the mode a mint asked for, the states of its outbox work, and
//! the retry schedule for transient failures. Pure: times are passed in.

use super::named::named_enum;
use super::Millis;

named_enum! {
    /// How a mint waits for its message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DeliveryMode {
        /// The answer waits for the relay: 201 once it accepted the message, 502 otherwise.
        Sync = "sync",
        /// The answer (202) comes once the code and its message are stored; a sender delivers it.
        Async = "async",
    }
}

named_enum! {
    /// Why a delivery failed: the `reason` clients see.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DeliveryReason {
        HostNotAllowed = "smtp_host_not_allowed",
        Unreachable = "smtp_unreachable",
        Timeout = "smtp_timeout",
        Tls = "smtp_tls",
        Auth = "smtp_auth",
        Rejected = "smtp_rejected",
        /// The HTTP endpoint refused the message for good (a 4xx other than 408 and 429, or a
        /// redirect, which is not followed).
        HttpRejected = "http_rejected",
        /// The HTTP endpoint answered 408, 429 or 5xx.
        HttpUnavailable = "http_unavailable",
        /// No answer from the HTTP endpoint (connection, TLS, timeout).
        HttpUnreachable = "http_unreachable",
        /// The HTTP endpoint's host is not allowed by the address policy.
        HttpHostNotAllowed = "http_host_not_allowed",
        /// No transport takes the message's channel (any more).
        ChannelNotConfigured = "channel_not_configured",
        /// A provider refused the credentials (401/403).
        ProviderAuth = "provider_auth",
        /// A provider refused the message for good (another 4xx); its own code is kept.
        ProviderRejected = "provider_rejected",
        /// A provider answered 408, 429 or 5xx.
        ProviderUnavailable = "provider_unavailable",
        /// No answer from a provider (connection, TLS, timeout).
        ProviderUnreachable = "provider_unreachable",
        /// A provider's host is not allowed by the address policy.
        ProviderHostNotAllowed = "provider_host_not_allowed",
    }
}

/// `detail_code` of a send that found no session free in time and sent nothing.
pub const NO_SESSION_FREE: &str = "no_session_free";

/// `detail_code` of a message otpmint did not offer a relay without SMTPUTF8: a recipient
/// whose local part is not ASCII (the relay refused nothing).
pub const NO_SMTPUTF8: &str = "smtputf8_unsupported";

/// `detail_code` of a relay that does not offer STARTTLS where `tls = "starttls"` needs it.
pub const NO_STARTTLS: &str = "starttls_unsupported";

/// `detail_code` of a login that was not sent: the relay is set to `tls = "none"`, and
/// credentials never travel in the clear (the relay refused nothing).
pub const AUTH_NEEDS_TLS: &str = "auth_needs_tls";

impl DeliveryReason {
    /// What to check for a stored `reason` (a transport's failure, or the code's end
    /// before its message left), in one sentence.
    pub fn advice_for(reason: &str) -> Option<&'static str> {
        match reason {
            "expired" => Some("The code expired before a transport accepted its message."),
            "not_sent" => {
                Some("The code ended (verified, cancelled or superseded) before its message left.")
            }
            r => DeliveryReason::ALL
                .into_iter()
                .find(|x| x.as_str() == r)
                .map(DeliveryReason::advice),
        }
    }

    /// [`DeliveryReason::advice`], for a failure that also has a code beyond its reason
    /// (`detail_code`): an OAuth2 token endpoint that did not answer is not a login refused.
    pub fn advice_with(self, detail_code: Option<&str>) -> &'static str {
        match detail_code {
            Some("oauth2_unavailable") => "The relay's OAuth2 token endpoint did not answer (busy or down): nothing is wrong with the settings; try again shortly.",
            Some("oauth2_no_token") => "The relay's OAuth2 token endpoint answered without an access token: check token_url (it must be the provider's token endpoint, or leave it out and name the provider).",
            Some(NO_SMTPUTF8) => "The recipient's address has non-ASCII characters before the @, which needs SMTPUTF8, and the relay does not offer it (it refused nothing): use a relay that offers SMTPUTF8, or an email provider, for such addresses.",
            Some(NO_STARTTLS) => "The relay does not offer STARTTLS on this port: use its port that does (587), or tls = \"implicit\" for port 465; tls = \"none\" sends the code unencrypted and needs smtp.allow_plaintext.",
            Some(AUTH_NEEDS_TLS) => "The relay is set to tls = \"none\", and a login is never sent unencrypted (nothing was sent, the relay refused nothing): use tls = \"starttls\" (587) or \"implicit\" (465), or leave the username out for a relay that needs no login.",
            Some(NO_SESSION_FREE) => "No session to the transport was free in time (the tenant's max_connections, or this server's delivery.max_sessions, were all in use): nothing was sent; try again shortly.",
            _ => self.advice(),
        }
    }

    /// What to check, in one sentence a person can act on (API.md §18.8).
    pub fn advice(self) -> &'static str {
        match self {
            DeliveryReason::HostNotAllowed => "This server's SMTP policy refuses the relay: an operator allows a private, local or special host with smtp.allow_private_hosts, another port with smtp.allowed_ports, and tls = \"none\" with smtp.allow_plaintext.",
            DeliveryReason::Unreachable => "The relay could not be reached, or turned the session away as busy (421): check its host and port, that it accepts connections from this server, and how many sessions at once it allows (the tenant's smtp.max_connections, over all instances).",
            DeliveryReason::Timeout => "The relay did not answer in time (smtp.timeout_seconds): check the port and the TLS mode (tls = \"implicit\" for port 465, \"starttls\" for 587).",
            DeliveryReason::Tls => "TLS with the relay failed: an untrusted certificate needs its CA in smtp.extra_root_certificates (the relay's own certificate signed by it, not a CA certificate itself); a mismatched mode needs tls = \"implicit\" for port 465 or \"starttls\" for 587.",
            DeliveryReason::Auth => "The relay refused the login, or it was not sent: check the username and password (or the OAuth2 settings and consent). A relay set to tls = \"none\" is never sent a login: use TLS there, or leave the username out.",
            DeliveryReason::Rejected => "The relay refused the message: check that it lets this account send as the from address, and the recipient.",
            DeliveryReason::HttpRejected => "The tenant's HTTP endpoint refused the message (a 4xx or a redirect): check its URL and what it expects.",
            DeliveryReason::HttpUnavailable => "The tenant's HTTP endpoint answered 408, 429 or 5xx: it is busy or failing.",
            DeliveryReason::HttpUnreachable => "The tenant's HTTP endpoint did not answer (connection, TLS or delivery.http_timeout_seconds): check its URL and certificate (a certificate this server does not trust needs webhooks.extra_root_certificates).",
            DeliveryReason::HttpHostNotAllowed => "The HTTP endpoint's host is not allowed: an operator allows private hosts with webhooks.allow_private_hosts.",
            DeliveryReason::ChannelNotConfigured => "No transport takes this channel: set smtp, a provider or the HTTP transport for it.",
            DeliveryReason::ProviderAuth => "The provider did not accept the credentials (401/403): check the API key or token in the provider settings.",
            DeliveryReason::ProviderRejected => "The provider turned the message down (its own error code, when it gives one, is in detail_code): check that the sender (from) is verified there, and the recipient.",
            DeliveryReason::ProviderUnavailable => "The provider answered 408, 429 or 5xx: it is busy or failing; try again later (a queued message is retried by itself).",
            DeliveryReason::ProviderUnreachable => "The provider did not answer (connection, TLS or delivery.http_timeout_seconds): a certificate this server does not trust needs webhooks.extra_root_certificates.",
            DeliveryReason::ProviderHostNotAllowed => "The provider's host (its public one, or delivery.provider_base_urls) is refused by the outbound address policy: an operator allows private hosts with webhooks.allow_private_hosts and http:// with webhooks.allow_plaintext.",
        }
    }
}

/// What kind of failure a delivery failure is: what the route, the window, the breaker and
/// the retry schedule do with it — decided where the failure is seen, never from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Final: the message, the recipient or the credentials were refused.
    Permanent,
    /// It may pass: worth a try later, or at once elsewhere if nothing was sent.
    Transient,
    /// The relay turned the session away (connection refused or reset, a 421, a 4xx at its
    /// greeting, a session not through TLS and AUTH in time): its window shrinks and the
    /// message may go on another session. Transient.
    SessionRefused,
    /// The endpoint or API asked for fewer requests (408, 429, 5xx): its window shrinks.
    /// Transient.
    Throttled,
    /// No session of the transport was free in this process in time: says nothing of the
    /// transport itself. Transient.
    NoSession,
    /// The transport cannot be used here (its credentials cannot be opened): the next one
    /// is tried; final if none is left.
    Unusable,
    /// A queued message's send could not be recorded as begun, just before the message
    /// would have left (its lease was given back or taken over, or the database did not
    /// answer): nothing of it was sent, and nothing is sent here. Says nothing of the
    /// transport.
    NotBegun,
}

/// A failed delivery: the `reason` clients see, what kind of failure it is, whether the
/// message may have reached the other side anyway, and details for the record and the logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("delivery failed ({})", reason.as_str())]
pub struct DeliveryError {
    pub reason: DeliveryReason,
    pub kind: FailureKind,
    /// The failure came after the message may have reached the other side (a timeout or a
    /// broken connection during the transaction, a gateway's 5xx): never treated as unsent.
    pub maybe_delivered: bool,
    /// Nobody can tell whether it arrived (API.md §19.2): the relay took the body and
    /// never answered, or the provider's request went out and no answer came. Never tried
    /// again by itself (implies `maybe_delivered`).
    pub outcome_unknown: bool,
    /// For the logs only: never credentials, never a server's reply text (it can hold the
    /// recipient's address).
    pub detail: String,
    /// The other side's own error code, kept in the delivery record (a provider's code,
    /// `oauth2_invalid_grant`).
    pub detail_code: Option<String>,
    /// How long the other side asked to wait before the next try (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    /// The relay answered that it has no room now (`421`, or a 4xx at its greeting or
    /// EHLO): its sessions are taken, and one may free up soon. Not a relay that is down
    /// (no connection, a reset, a timeout).
    pub busy: bool,
}

impl DeliveryError {
    pub fn new(reason: DeliveryReason, kind: FailureKind, detail: impl Into<String>) -> Self {
        DeliveryError {
            reason,
            kind,
            maybe_delivered: false,
            outcome_unknown: false,
            detail: detail.into(),
            detail_code: None,
            retry_after: None,
            busy: false,
        }
    }
    pub fn permanent(reason: DeliveryReason, detail: impl Into<String>) -> Self {
        Self::new(reason, FailureKind::Permanent, detail)
    }
    pub fn transient(reason: DeliveryReason, detail: impl Into<String>) -> Self {
        Self::new(reason, FailureKind::Transient, detail)
    }
    /// A login not sent: the relay is set to `tls = "none"`, and credentials never travel
    /// in the clear (the relay refused nothing).
    pub fn login_in_clear() -> Self {
        Self::permanent(
            DeliveryReason::Auth,
            "AUTH is never sent over an unencrypted connection",
        )
        .with_code(AUTH_NEEDS_TLS)
    }
    /// Nothing free in this process's queue of the transport in time.
    pub fn no_session() -> Self {
        Self::new(
            DeliveryReason::Timeout,
            FailureKind::NoSession,
            "no session of the transport was free in time",
        )
        .with_code(NO_SESSION_FREE)
    }
    /// A queued message whose send could not be recorded as begun (see
    /// [`FailureKind::NotBegun`]).
    pub fn not_begun() -> Self {
        Self::new(
            DeliveryReason::Timeout,
            FailureKind::NotBegun,
            "the send could not be recorded as begun; nothing was sent",
        )
    }
    /// It may have been delivered.
    pub fn maybe_delivered(mut self, maybe: bool) -> Self {
        self.maybe_delivered = maybe;
        self
    }
    /// Whether it arrived cannot be known (`true`): never sent again by itself.
    pub fn outcome_unknown(mut self, unknown: bool) -> Self {
        self.outcome_unknown = unknown;
        self.maybe_delivered |= unknown;
        self
    }
    /// The other side's own code for the failure, kept only when it looks like one
    /// ([`token_like`], at most 64 characters).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.detail_code = token_like(&code.into(), 64, CODE_CHARS);
        self
    }
    pub fn busy(mut self, busy: bool) -> Self {
        self.busy = busy;
        self
    }
    pub fn with_retry_after(mut self, d: Option<std::time::Duration>) -> Self {
        self.retry_after = d;
        self
    }
    /// The kind from the two facts the SMTP layer finds: worth another try, and whether
    /// the relay turned the session away.
    pub fn classed(mut self, transient: bool, refused: bool) -> Self {
        self.kind = match (refused, transient) {
            (true, _) => FailureKind::SessionRefused,
            (false, true) => FailureKind::Transient,
            (false, false) => FailureKind::Permanent,
        };
        self
    }
    /// Worth another try (later, or elsewhere when nothing was sent).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Transient
                | FailureKind::SessionRefused
                | FailureKind::Throttled
                | FailureKind::NoSession
        )
    }
    /// The session was turned away: the window shrinks, another session may be tried.
    pub fn is_refused(&self) -> bool {
        self.kind == FailureKind::SessionRefused
    }
}

/// Where a code's message is: stored and waiting, being sent, accepted, given up — or
/// `Unknown`: its message left and no answer came (the relay or provider took the body and
/// then timed out or dropped the connection, or the process sending it died): the person may
/// have it, and it is never sent again by itself (API.md §19.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Queued,
    Sending,
    Sent,
    Failed,
    Unknown,
    /// Sent, then reported by the provider as a hard bounce or complaint (API.md §16.2).
    Bounced,
}

impl DeliveryStatus {
    /// Every status, as answers show them.
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Queued,
        DeliveryStatus::Sending,
        DeliveryStatus::Sent,
        DeliveryStatus::Failed,
        DeliveryStatus::Unknown,
        DeliveryStatus::Bounced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Unknown => "unknown",
            DeliveryStatus::Bounced => "bounced",
        }
    }
    /// The stored column holds queued, sent, failed or unknown; `sending` is a queued
    /// message whose outbox row is leased right now.
    pub fn parse_stored(s: &str) -> Option<DeliveryStatus> {
        match s {
            "queued" => Some(DeliveryStatus::Queued),
            "sent" => Some(DeliveryStatus::Sent),
            "failed" => Some(DeliveryStatus::Failed),
            "unknown" => Some(DeliveryStatus::Unknown),
            "bounced" => Some(DeliveryStatus::Bounced),
            _ => None,
        }
    }
}

/// A code's delivery as `GET /v1/otp/{key}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub mode: DeliveryMode,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The last failure's reason (`smtp_*`, `expired`, or `not_sent` for a code that ended
    /// before its message left).
    pub reason: Option<String>,
    pub sent_at: Option<Millis>,
    /// The transport that accepted its last message: `smtp`, `smtp_fallback`, `http` or
    /// `provider:<kind>`.
    pub transport: Option<String>,
    /// The provider's id of the accepted message (API.md §15.2).
    pub provider_message_id: Option<String>,
    /// The last failure's code beyond its reason (a provider's error code,
    /// `oauth2_invalid_grant`).
    pub detail_code: Option<String>,
}

/// What to check for a delivery whose outcome nobody can know (API.md §19.2), whatever its
/// reason.
pub const UNKNOWN_OUTCOME_ADVICE: &str = "Its send began and no answer came (the transport took the message, then timed out or dropped the connection, or the server stopped mid-send): it may have arrived. It is not sent again by itself; a resend sends it again.";

/// What to check for a delivery of unknown outcome whose provider did answer, but not
/// clearly that it took the message.
pub const UNCLEAR_ANSWER_ADVICE: &str = "The provider answered, but not clearly that it took the whole message (an answer that could not be read, or a text it took only in part): it may have arrived. It is not sent again by itself; a resend sends it again.";

impl DeliveryView {
    /// Whether its last message was accepted (sent, or bounced after): only then are
    /// `sent_at` and `provider_message_id` that message's. A resend's message on its way,
    /// failed or of unknown outcome leaves the earlier message's in the record (a late
    /// bounce of that message still finds its code by them), and they are not shown as its.
    pub fn accepted(&self) -> bool {
        matches!(self.status, DeliveryStatus::Sent | DeliveryStatus::Bounced)
    }

    /// What to check, in one sentence: for an unknown outcome that it may have arrived,
    /// else the advice of its last failure's reason and code beyond it (the same words as a
    /// sync mint's 502: `oauth2_no_token` says to check `token_url`).
    pub fn advice(&self) -> Option<&'static str> {
        match self.status {
            // An answer came, but not one that says the message was taken whole (a
            // provider's answer that could not be read, or a text taken only in part).
            DeliveryStatus::Unknown
                if matches!(
                    self.reason.as_deref(),
                    Some("provider_unavailable" | "provider_rejected")
                ) =>
            {
                Some(UNCLEAR_ANSWER_ADVICE)
            }
            DeliveryStatus::Unknown => Some(UNKNOWN_OUTCOME_ADVICE),
            _ => self.reason.as_deref().and_then(|r| {
                match DeliveryReason::ALL.into_iter().find(|x| x.as_str() == r) {
                    Some(reason) => Some(reason.advice_with(self.detail_code.as_deref())),
                    None => DeliveryReason::advice_for(r),
                }
            }),
        }
    }
}

/// Delays after the 1st, 2nd, … failed attempt: about 1 s, 5 s, 30 s, 2 min, 10 min, then
/// every 30 min. Retries go on until the code expires.
const RETRY_DELAYS_MS: &[Millis] = &[1_000, 5_000, 30_000, 120_000, 600_000, 1_800_000];

/// Where the schedule's next try would come in the code's last moments or after expiry,
/// one last try comes this long before expiry instead: time for a send (bounded by `smtp.timeout_seconds`, 10 s by default) and
/// for the person to type the code.
pub const LAST_TRY_BEFORE_EXPIRY_MS: Millis = 30_000;

/// When to try again after `attempts` failed attempts, not before `asked` ms from now (the
/// endpoint's `Retry-After`): the schedule's next time if it leaves
/// [`LAST_TRY_BEFORE_EXPIRY_MS`] before `expires_at`; else the last try, that long before
/// expiry, if it is still ahead and not sooner than asked; else the schedule's time if it
/// still comes before expiry (lifetimes too short for the margin); else `None` (the
/// delivery fails).
pub fn next_attempt_at(
    attempts: u32,
    now: Millis,
    expires_at: Millis,
    asked: Millis,
) -> Option<Millis> {
    let i = (attempts.max(1) as usize - 1).min(RETRY_DELAYS_MS.len() - 1);
    let at = now.saturating_add(RETRY_DELAYS_MS[i].max(asked));
    let last = expires_at.saturating_sub(LAST_TRY_BEFORE_EXPIRY_MS);
    if at <= last {
        Some(at)
    } else if last > now && last >= now.saturating_add(asked) {
        Some(last)
    } else {
        (at < expires_at).then_some(at)
    }
}

/// The longest wait before the next try of a message whose relay answered it was busy
/// (421, or a 4xx at its greeting): the relay is up and sending for others — other
/// instances, this tenant's other sessions — and frees a session within moments, so the
/// message does not wait out the schedule's minutes while the relay sits idle (API.md
/// §11.1: a relay that allows N sessions gets about N).
pub const BUSY_RETRY_MAX_MS: Millis = 10_000;

/// [`next_attempt_at`], within [`BUSY_RETRY_MAX_MS`] when the relay answered it was busy
/// (and asked for no longer wait).
pub fn next_try_at(
    attempts: u32,
    now: Millis,
    expires_at: Millis,
    asked: Millis,
    busy: bool,
) -> Option<Millis> {
    let at = next_attempt_at(attempts, now, expires_at, asked)?;
    if busy {
        let soon = now.saturating_add(BUSY_RETRY_MAX_MS.max(asked));
        Some(at.min(soon))
    } else {
        Some(at)
    }
}

/// What a provider's error code is made of besides letters and digits.
pub const CODE_CHARS: &str = "._-:";
/// What a provider's message id is made of besides letters and digits (Mailgun's is
/// `<…@domain>`).
pub const ID_CHARS: &str = "._-:@<>/";

/// A provider's id or code as it is kept and shown: at most `max` characters of letters,
/// digits and `extra` ([`CODE_CHARS`], [`ID_CHARS`]), or nothing. An answer that echoes
/// the request (a phone number, the message with its code) is no id and is never stored.
pub fn token_like(s: &str, max: usize, extra: &str) -> Option<String> {
    let s = s.trim();
    let fits = |c: char| c.is_ascii_alphanumeric() || extra.contains(c);
    (!s.is_empty() && s.len() <= max && s.chars().all(fits)).then(|| s.to_string())
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
