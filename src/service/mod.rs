//! Use cases: tenants and codes. No HTTP words here; storage calls run on the blocking pool.

pub mod audit;
pub mod claims;
pub mod delivery;
pub mod dkim;
pub mod domain_check;
mod error;
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

pub use error::*;

use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::hashing::Hasher;
use crate::crypto::keyring::Keys;
use crate::mailer::Mailer;
use crate::storage::{SendQuota, Store, StoreError, WriteCall};

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
    /// Each tenant's provider event settings as last read (checked when an event applies).
    pub(crate) event_settings: provider_events::EventSettingsCache,
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
