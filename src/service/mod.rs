//! Use cases: tenants and codes. No HTTP words here; storage calls run on the blocking pool.

pub mod audit;
pub mod claims;
pub mod delivery;
pub mod dkim;
pub mod domain_check;
pub mod hosted;
pub mod idempotency;
pub mod import;
pub mod keys;
pub mod links;
pub mod otp;
pub mod provider_events;
pub mod providers;
mod relay_accounts;
pub mod resend;
mod retry;
pub(crate) mod seals;
mod sms_guard;
pub mod stats;
pub mod suppressions;
pub mod templates;
pub mod tenants;
pub mod test_mode;
pub mod transport_http;
pub mod verify;
pub mod webhooks;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::hashing::{HashError, Hasher};
use crate::crypto::keyring::{KeyError, Keys};
use crate::domain::policy::FieldError;
use crate::mailer::{DeliveryReason, Mailer};
use crate::net_policy::HostRefusal;
use crate::storage::{SendQuota, Store, StoreError, WriteCall};

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
    Delivery(DeliveryReason),
    #[error("overloaded")]
    Overloaded,
    /// The database cannot take the work now (locked, full, unreachable): 503.
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
    /// `check_relay` found the relay unusable: 422 `relay_check_failed` with its reason;
    /// nothing was saved.
    #[error("relay check failed")]
    RelayCheck(DeliveryReason),
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
    /// `phone_number_not_allowed`.
    #[error("phone number not allowed")]
    PhoneNumberNotAllowed,
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
    /// A second transport marked primary for a channel: 409 `transport_conflict`.
    #[error("transport conflict")]
    TransportConflict,
    /// A test message through a provider failed: 502 `delivery_failed` with its reason and
    /// the provider's code.
    #[error("provider test failed")]
    ProviderTest(crate::domain::delivery::DeliveryError),
    /// A webhook URL refused by policy: the problem code.
    #[error("webhook refused: {0}")]
    WebhookRefused(&'static str),
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

impl From<FieldError> for ServiceError {
    fn from(e: FieldError) -> Self {
        ServiceError::Invalid(vec![e])
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ServiceError::Unavailable(m),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<KeyError> for ServiceError {
    fn from(e: KeyError) -> Self {
        ServiceError::Internal(e.to_string())
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
}

/// Everything the use cases need, shared by every worker.
#[derive(Clone)]
pub struct Services {
    pub(crate) store: Arc<dyn Store>,
    pub keyring: Arc<Keys>,
    pub(crate) hasher: Hasher,
    pub(crate) mailer: Mailer,
    pub clock: Arc<dyn Clock>,
    /// Swapped whole on SIGHUP; see [`Services::reload`].
    pub settings: Arc<arc_swap::ArcSwap<Settings>>,
    pub(crate) audit: audit::Audit,
    pub(crate) outbox: delivery::Outbox,
    /// Each tenant's compiled templates, by `templates_version`.
    pub(crate) templates: templates::TemplateCache,
    /// Webhook delivery: the HTTP client and this process's part of the event outbox.
    pub(crate) hooks: webhooks::Hooks,
    /// Each tenant's test recipients, by `test_version`.
    pub(crate) test_lists: test_mode::TestLists,
}

impl Services {
    /// Hash jobs waiting for a hashing thread (the metrics' queue gauge).
    pub fn hashing_queue_depth(&self) -> usize {
        self.hasher.queue_depth()
    }

    /// Run a store call on the blocking pool.
    pub async fn db<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(store.as_ref())))
            .await
            .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))?
            .map_err(ServiceError::from)
    }

    /// Run a store call made of writes and the single-row reads they need (see
    /// [`Store::submit`]) and wait for it to be durable. On SQLite it runs on the
    /// group-commit writer's own thread, so no blocking thread sits waiting for the commit
    /// (two thread switches less per write); elsewhere it runs on the blocking pool like
    /// [`Services::db`].
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let call = Box::new(Call {
            store: Arc::clone(&self.store),
            span: tracing::Span::current(),
            f,
            tx,
        });
        if let Err(call) = self.store.submit(call) {
            tokio::task::spawn_blocking(move || call.run()(Ok(())))
                .await
                .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))?;
        }
        rx.await
            .map_err(|_| ServiceError::Unavailable("the store dropped a write".into()))?
            .map_err(ServiceError::from)
    }

    pub fn quota(&self) -> SendQuota {
        let l = &self.settings.load().limits;
        SendQuota {
            recipient_max: l.recipient_max_sends,
            recipient_window_ms: (l.recipient_window_seconds as i64).saturating_mul(1000),
            cooldown_ms: (l.resend_cooldown_seconds as i64).saturating_mul(1000),
            tenant_max_per_hour: l.tenant_max_sends_per_hour,
            max_failures: l.recipient_max_failures,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}

/// Seconds for a Retry-After header, at least 1.
pub fn retry_secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000).max(1)
}

/// A store call on its way to [`Store::submit`], answered through a channel.
struct Call<F, T> {
    store: Arc<dyn Store>,
    span: tracing::Span,
    f: F,
    tx: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> WriteCall for Call<F, T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>) -> Box<dyn FnOnce(Result<(), StoreError>) + Send> {
        let Call { store, span, f, tx } = *self;
        let out = span.in_scope(|| f(store.as_ref()));
        Box::new(move |committed| {
            let _ = tx.send(committed.and(out));
        })
    }

    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.tx.send(Err(e));
    }
}
