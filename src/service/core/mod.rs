//! The handles every part of the service shares, and what is built on them alone: store
//! calls on the blocking pool or the group-commit writer, sealing, the audit log, reading a
//! tenant, and recording that outlives a database outage.

pub mod audit;
mod keyring;
mod retry;
pub(crate) mod seals;
pub(crate) mod shares;
mod sms_velocity;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Settings;
use crate::crypto::hashing::Hasher;
use crate::crypto::keyring::Keys;
use crate::domain::keys::TenantId;
use crate::domain::tenant::Tenant;
use crate::mailer::Mailer;
use crate::service::ServiceError;
use crate::storage::{SendQuota, Store, StoreError, WriteCall};

/// The handles every part shares: the store, the keys, hashing, the mailer, the clock, the
/// settings and the audit log, with the store calls and sealing built on them.
#[derive(Clone)]
pub struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub keyring: Arc<Keys>,
    pub(crate) hasher: Hasher,
    pub(crate) mailer: Mailer,
    pub clock: Arc<dyn Clock>,
    /// Swapped whole on SIGHUP; see [`Admin::reload`](crate::service::Admin::reload).
    pub settings: Arc<arc_swap::ArcSwap<Settings>>,
    pub(crate) audit: audit::Audit,
    /// Facts the database could not take yet, written in order when it answers.
    pub(crate) backlog: Arc<retry::Backlog>,
}

impl Core {
    /// Hash jobs waiting for a hashing thread (the metrics' queue gauge).
    pub fn hashing_queue_depth(&self) -> usize {
        self.hasher.queue_depth()
    }

    /// Facts waiting for the database to take them (the metrics' gauge).
    pub fn records_waiting(&self) -> usize {
        self.backlog.len()
    }

    /// Run a store call on the blocking pool, answered within [`Core::db_bound`]; a call
    /// the request gave up on before it began never runs.
    pub async fn db<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let given_up = GivenUp::default();
        self.bounded(self.db_bound(), self.db_long(given_up.unless(f)))
            .await
    }

    /// As [`Core::db`], without the bound: maintenance that may rightly take long on a big
    /// database (purge, backup, import), each statement still bounded by the database.
    pub async fn db_long<T, F>(&self, f: F) -> Result<T, ServiceError>
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

    /// How long a store call may take before the request answers 503 `unavailable`: twice
    /// `database.timeout_seconds` (a wait for a connection, then statements, each bounded
    /// by it). The database bounds its own waits; this bounds a database that does not
    /// answer at all (a hung server, a network that stopped forwarding), where a request
    /// would otherwise wait without end and act long after its client gave up. A call still
    /// waiting for its turn (a connection, the writer) when the request gives up never
    /// runs; one already running may still finish, and the request never acts on it.
    fn db_bound(&self) -> Duration {
        Duration::from_secs(self.settings.load().database.timeout_seconds.max(1) * 2)
    }

    async fn bounded<T>(
        &self,
        within: Duration,
        call: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        tokio::time::timeout(within, call)
            .await
            .unwrap_or_else(|_| {
                Err(ServiceError::Unavailable(
                    "the database did not answer in time".into(),
                ))
            })
    }

    /// Run a store call made of writes and the single-row reads they need (see
    /// [`Store::submit`]) and wait for it to be durable. On SQLite it runs on the
    /// group-commit writer's own thread, so no blocking thread sits waiting for the commit
    /// (two thread switches less per write); elsewhere it runs on the blocking pool like
    /// [`Core::db`]. Answered within [`Core::db_bound`]; a call the request gave up on
    /// before its turn never runs.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.bounded(self.db_bound(), self.write_long(f)).await
    }

    /// As [`Core::write`], for a request's last write whose effect cannot be taken back once
    /// it took (a verify's: the code is used, its webhook raised): waited for twice as long,
    /// so that a database answering late — a connection stalled, then flowing again — gives
    /// the request its true answer rather than a 503 ("nothing changed") over a change
    /// that took effect. Only a database silent for longer than that leaves the outcome
    /// unknown to the request.
    pub(crate) async fn write_final<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.bounded(self.db_bound() * 2, self.write_long(f)).await
    }

    /// As [`Core::write`], for a write a request must not leave behind once it answers 503:
    /// a call that had begun when the bound passed may still commit; then `undo_of` is
    /// given what it returned and names the write that takes it back (`None`: it changed
    /// nothing to take back), which runs in the background until the database takes it.
    /// A call that had not begun never runs.
    pub async fn write_or_undo<T, F, M, U>(&self, f: F, undo_of: M) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
        M: FnOnce(T) -> Option<U> + Send + 'static,
        U: Fn(&dyn Store) -> Result<(), StoreError> + Send + Sync + 'static,
    {
        let given_up = GivenUp::default();
        let (core, f) = (self.clone(), given_up.unless(f));
        let mut call = Box::pin(async move { core.write_long(f).await });
        match tokio::time::timeout(self.db_bound(), &mut call).await {
            Ok(out) => out,
            Err(_) => {
                drop(given_up);
                let core = self.clone();
                tokio::spawn(async move {
                    if let Some(undo) = call.await.ok().and_then(undo_of) {
                        tracing::warn!("a write answered 503 committed after all; undoing it");
                        core.record_until_taken("undoing a write answered 503", undo, || {})
                            .await;
                    }
                });
                Err(ServiceError::Unavailable(
                    "the database did not answer in time".into(),
                ))
            }
        }
    }

    /// As [`Core::write`], without the bound: maintenance that may rightly take long.
    pub(crate) async fn write_long<T, F>(&self, f: F) -> Result<T, ServiceError>
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

/// Set when the request that made a store call stops waiting for it (its future finished
/// or was dropped): a call that has not begun by then does nothing.
#[derive(Default)]
struct GivenUp(Arc<std::sync::atomic::AtomicBool>);

impl GivenUp {
    /// `f`, unless the request gave up before it began.
    fn unless<T, F>(
        &self,
        f: F,
    ) -> impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static
    where
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let flag = Arc::clone(&self.0);
        move |s| {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Unavailable(
                    "the request gave up on this call".into(),
                ));
            }
            f(s)
        }
    }
}

impl Drop for GivenUp {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
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
        // Nobody waits for it any more (the request gave up, or went away): it does nothing.
        if tx.is_closed() {
            return Box::new(|_| {});
        }
        let out = span.in_scope(|| f(store.as_ref()));
        Box::new(move |committed| {
            let _ = tx.send(committed.and(out));
        })
    }

    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.tx.send(Err(e));
    }
}

impl Core {
    pub async fn tenant(&self, id: &str) -> Result<Tenant, ServiceError> {
        let id = TenantId::parse(id).ok_or(ServiceError::TenantNotFound)?;
        self.db(move |s| s.tenant(&id))
            .await?
            .ok_or(ServiceError::TenantNotFound)
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, ServiceError> {
        self.db(|s| s.tenants()).await
    }
}
