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

/// The use cases, by what they own; cheap to clone (one `Arc` each) and shared by every
/// worker. Each part holds only the handles it needs, and the parts it calls, so the
/// dependencies run one way: `Codes` → `Tenants` → `Delivery` → `Events` → `Core`.
#[derive(Clone)]
pub struct Services {
    pub core: Arc<Core>,
    pub events: Arc<Events>,
    pub delivery: Arc<Delivery>,
    pub tenants: Arc<Tenants>,
    pub codes: Arc<Codes>,
    pub admin: Arc<Admin>,
}

/// The handles every part shares: the store, the keys, hashing, the mailer, the clock, the
/// settings and the audit log, with the store calls and sealing built on them.
#[derive(Clone)]
pub struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub keyring: Arc<Keys>,
    pub(crate) hasher: Hasher,
    pub(crate) mailer: Mailer,
    pub clock: Arc<dyn Clock>,
    /// Swapped whole on SIGHUP; see [`Admin::reload`].
    pub settings: Arc<arc_swap::ArcSwap<Settings>>,
    pub(crate) audit: audit::Audit,
}

/// Events out (signed webhooks, their outbox and sender) and in (provider events).
#[derive(Clone)]
pub struct Events {
    pub(crate) core: Arc<Core>,
    /// Webhook delivery: the HTTP client and this process's part of the event outbox.
    pub(crate) hooks: webhooks::Hooks,
    /// Each tenant's provider event settings as last read (checked when an event applies).
    pub(crate) event_settings: provider_events::EventSettingsCache,
}

/// Getting a code's message out: the outbox, its sender, routes, windows, breakers and
/// transports.
#[derive(Clone)]
pub struct Delivery {
    pub(crate) core: Arc<Core>,
    pub(crate) events: Arc<Events>,
    pub(crate) outbox: delivery::Outbox,
}

/// Tenant accounts and their settings: relays, providers, templates, test mode, DKIM,
/// domains and suppressions.
#[derive(Clone)]
pub struct Tenants {
    pub(crate) core: Arc<Core>,
    /// Relay settings are checked by connecting through delivery's own path.
    pub(crate) delivery: Arc<Delivery>,
    /// Each tenant's compiled templates, by `templates_version`.
    pub(crate) templates: templates::TemplateCache,
    /// Each tenant's test recipients, by `test_version`.
    pub(crate) test_lists: test_mode::TestLists,
}

/// Codes: mint, verify, resend, cancel, claims, links, hosted pages, idempotency and the
/// SMS guard.
#[derive(Clone)]
pub struct Codes {
    pub(crate) core: Arc<Core>,
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) events: Arc<Events>,
}

/// Operations: keys, import, purge, statistics and reload.
#[derive(Clone)]
pub struct Admin {
    pub(crate) core: Arc<Core>,
}

impl Services {
    /// Wire the parts together over the shared handles.
    pub(crate) fn assemble(
        core: Core,
        outbox: delivery::Outbox,
        hooks: webhooks::Hooks,
    ) -> Services {
        let core = Arc::new(core);
        let events = Arc::new(Events {
            core: Arc::clone(&core),
            hooks,
            event_settings: provider_events::EventSettingsCache::default(),
        });
        let delivery = Arc::new(Delivery {
            core: Arc::clone(&core),
            events: Arc::clone(&events),
            outbox,
        });
        let tenants = Arc::new(Tenants {
            core: Arc::clone(&core),
            delivery: Arc::clone(&delivery),
            templates: templates::TemplateCache::default(),
            test_lists: test_mode::TestLists::default(),
        });
        let codes = Arc::new(Codes {
            core: Arc::clone(&core),
            tenants: Arc::clone(&tenants),
            delivery: Arc::clone(&delivery),
            events: Arc::clone(&events),
        });
        let admin = Arc::new(Admin {
            core: Arc::clone(&core),
        });
        Services {
            core,
            events,
            delivery,
            tenants,
            codes,
            admin,
        }
    }
}

impl Core {
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
