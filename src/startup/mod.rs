//! Application: open the store, unlock the keyring, build the services, bind the listener.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, HttpServer};

use crate::clock::{Clock, SystemClock};
use crate::config::{DatabaseLocation, Settings};
use crate::crypto::hashing::Hasher;
use crate::crypto::keyring::KeyError;
use crate::mailer::Mailer;
use crate::net_policy::HostPolicy;
use crate::routes::{app, AppState};
use crate::service::{Delivery, Events, Services};
use crate::storage::postgres::{PgOptions, PgStore};
use crate::storage::sqlite::SqliteStore;
use crate::storage::Store;

mod background;
mod checks;
pub mod descriptors;
mod keys;
pub mod scheduling;

use background::{keyring_loop, purge_loop, stats_loop, stop_on_signal, tidy_loop};
pub use checks::{check_installation, preflight};
pub use keys::{
    check_keyring, configured_master_key, migrate_store, open_keyring, previous_master_keys,
};

/// How long after `server.shutdown_grace_seconds` the stop may still take to record what it
/// holds (leases given back, cut idempotency keys, the last audit events): the packaged
/// unit's `TimeoutStopSec` leaves 15 s beyond the default grace.
const AFTER_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Said once: a store error that already names the database is not prefixed again
    /// (before: "database: database unavailable: …").
    #[error("{}", store_text(.0))]
    Store(#[from] crate::storage::StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    MasterKey(String),
    #[error("{0}")]
    Other(String),
}

/// A store error as start-up says it: with `database: ` before it unless it names the
/// database itself.
fn store_text(e: &crate::storage::StoreError) -> String {
    let text = e.to_string();
    if text.starts_with("database") || text.starts_with("PostgreSQL") {
        text
    } else {
        format!("database: {text}")
    }
}

/// Resolve a relative path against the working directory.
fn resolve(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Open (creating it when there is none) and migrate the configured database.
pub fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartupError> {
    open_store_as(settings, Install::Make)
}

/// Open an installation to copy from (`migrate-store`), migrating it to this version's
/// schema; a database that holds none is refused with nothing written to it.
pub fn open_source_store(settings: &Settings) -> Result<Arc<dyn Store>, StartupError> {
    open_store_as(settings, Install::Source)
}

/// What opening a database may do about an installation that is not there yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Install {
    /// Create the database, migrate it and make its keyring (`serve`, `migrate`).
    Make,
    /// Use it as its server left it, or refuse (every other CLI command, API.md §18.8).
    Existing,
    /// Migrate it when it holds an installation, else refuse with nothing written
    /// (`migrate-store`'s source).
    Source,
    /// Read it as it stands, an older schema included, or refuse (`config check`, which
    /// reads the keyring `serve` would open after migrating it).
    AsFound,
}

fn open_store_as(settings: &Settings, install: Install) -> Result<Arc<dyn Store>, StartupError> {
    match settings.database_location()? {
        DatabaseLocation::Sqlite(path) => {
            let path = resolve(&path);
            let pool_size = settings.database.pool_size;
            Ok(Arc::new(match install {
                Install::Make => SqliteStore::open(&path, pool_size)?,
                Install::Existing => SqliteStore::open_existing(&path, pool_size)?,
                Install::Source => SqliteStore::open_source(&path, pool_size)?,
                Install::AsFound => SqliteStore::open_as_found(&path, pool_size)?,
            }))
        }
        DatabaseLocation::Postgres(url) => {
            let opts = PgOptions {
                url,
                pool_size: settings.database.pool_size,
                tls_ca_file: (!settings.database.tls_ca_file.is_empty())
                    .then(|| resolve(Path::new(&settings.database.tls_ca_file))),
                timeout: Duration::from_secs(settings.database.timeout_seconds),
                // Only what may make an installation waits: the other CLI commands fail at once.
                start_wait: match install {
                    Install::Make => Duration::from_secs(settings.database.start_wait_seconds),
                    Install::Existing | Install::Source | Install::AsFound => Duration::ZERO,
                },
            };
            Ok(Arc::new(match install {
                Install::Make => PgStore::open(&opts)?,
                Install::Existing => PgStore::open_existing(&opts)?,
                Install::Source => PgStore::open_source(&opts)?,
                Install::AsFound => PgStore::open_as_found(&opts)?,
            }))
        }
    }
}

/// The SMTP client of these settings (its extra root certificates parsed).
fn mailer_of(settings: &Settings) -> Result<Mailer, StartupError> {
    Mailer::new(
        HostPolicy {
            allowed_ports: Some(settings.smtp.allowed_ports.clone()),
            allow_private_hosts: settings.smtp.allow_private_hosts,
            allow_plaintext: settings.smtp.allow_plaintext,
            // The system's: `dns.resolver` is the domain check's.
            resolver: None,
        },
        Duration::from_secs(settings.smtp.timeout_seconds),
        settings.smtp.pool_size,
        &settings.smtp.extra_root_certificates,
    )
    .map_err(|e| StartupError::Other(format!("smtp.extra_root_certificates: {e}")))
}

/// Build the services (store, keyring, hashing pool, mailer) without any HTTP.
pub fn build_services(settings: Settings, clock: Arc<dyn Clock>) -> Result<Services, StartupError> {
    build_services_as(settings, clock, Install::Make)
}

/// [`build_services`] on an installation that exists, as its server left it: no database,
/// schema or keyring is made and nothing is migrated; without them it fails saying so (the
/// CLI's commands other than `serve` and `migrate`, API.md §18.8).
pub fn build_services_on_existing(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<Services, StartupError> {
    build_services_as(settings, clock, Install::Existing)
}

fn build_services_as(
    settings: Settings,
    clock: Arc<dyn Clock>,
    install: Install,
) -> Result<Services, StartupError> {
    // Blocking database work on a plain thread: this may be called from async code, where
    // the PostgreSQL client must not block.
    let (store, keyring) = std::thread::scope(|s| {
        s.spawn(|| -> Result<_, StartupError> {
            let store = open_store_as(&settings, install)?;
            let keyring = open_keyring(&settings, store.as_ref(), clock.now())?;
            Ok((store, keyring))
        })
        .join()
        .unwrap_or_else(|_| Err(StartupError::Other("opening the database panicked".into())))
    })?;
    let hasher = Hasher::new(
        &settings.hashing,
        settings.max_hashing_threads(),
        keyring.get().pepper(),
    )
    .map_err(|e| StartupError::Other(e.to_string()))?;
    let mailer = mailer_of(&settings)?;
    let outbox = crate::service::delivery::Outbox::new(settings.delivery.max_sessions as usize);
    let max_webhooks = settings.webhooks.max_in_flight as usize;
    let settings = Arc::new(arc_swap::ArcSwap::from_pointee(settings));
    let hooks = crate::outbound::WebhookClient::new(Arc::clone(&settings))
        .map_err(|e| StartupError::Other(e.to_string()))?;
    let core = crate::service::Core {
        audit: crate::service::core::audit::Audit::start(Arc::clone(&store)),
        store,
        keyring: Arc::new(keyring),
        hasher,
        mailer,
        clock,
        settings,
        backlog: Arc::default(),
    };
    let hooks = crate::service::events::hooks::Hooks::new(hooks, max_webhooks);
    Ok(Services::assemble(core, outbox, hooks))
}

pub struct Application {
    port: u16,
    server: Server,
    handle: actix_web::dev::ServerHandle,
    services: Services,
    governor: crate::routes::governor::IpGovernor,
    grace: Duration,
}

/// `server.max_connections_per_worker`, lowered (with a warning) when every worker's clients
/// together would leave too few open files for the rest; the soft limit raised first.
fn within_descriptors(settings: &Settings) -> usize {
    let (workers, wanted) = (
        settings.server.workers,
        settings.server.max_connections_per_worker,
    );
    let Some(limit) = descriptors::raise_limit() else {
        return wanted;
    };
    let outbound = u64::from(settings.delivery.max_sessions)
        + u64::from(settings.database.pool_size)
        + u64::from(settings.webhooks.max_in_flight);
    let reserve = descriptors::RESERVED + outbound;
    let workers = if workers > 0 {
        workers
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    };
    let allowed = descriptors::per_worker(limit, reserve, workers, wanted);
    if allowed < wanted {
        tracing::warn!(
            open_files = limit,
            workers,
            configured = wanted,
            allowed,
            reserve,
            "server.max_connections_per_worker lowered: the clients of every worker would leave too few open files for relays, endpoints and the database"
        );
    }
    allowed
}

impl Application {
    pub fn build(settings: Settings) -> Result<Application, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock))
    }

    pub fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let bind = settings.server.bind.clone();
        let workers = settings.server.workers;
        let grace = settings.server.shutdown_grace_seconds;
        let request_timeout = Duration::from_secs(settings.server.request_timeout_seconds);
        let max_conns = within_descriptors(&settings);
        // The port first: a start that cannot listen makes no database and no master key.
        let listener = TcpListener::bind(&bind)
            .map_err(|e| StartupError::Other(format!("cannot listen on {bind}: {e}")))?;
        let services = build_services(settings, clock)?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::Other(e.to_string()))?
            .port();
        let state = web::Data::new(AppState {
            proxies: crate::client_ip::TrustedProxies::parse(
                &services.core.settings.load().server.trusted_proxies,
            ),
            services: services.clone(),
        });
        // One limiter state shared by every worker.
        let governor = crate::routes::governor::ip_governor(&services.core.settings.load())
            .ok_or_else(|| StartupError::Other("invalid per-IP limit settings".into()))?;
        let limiter = governor.clone();
        let mut server = HttpServer::new(move || app(state.clone(), governor.clone()))
            .shutdown_timeout(grace)
            // SIGTERM and SIGINT are ours (run_until_stopped): delivery stops claiming at
            // once while the HTTP side drains.
            .disable_signals()
            // Headers within the request timeout (the body's bound is in routes::auth::Body); a
            // stalled client holds no socket past it (API.md §6.21).
            .client_request_timeout(request_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .max_connections(max_conns)
            .listen(listener)
            .map_err(|e| StartupError::Other(e.to_string()))?;
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.run();
        Ok(Application {
            port,
            handle: server.handle(),
            server,
            services,
            governor: limiter,
            grace: Duration::from_secs(grace),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (graceful: in-flight requests finish).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.handle.clone()
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Re-read the configuration on SIGHUP from `file` (the same layers as at start).
    pub fn reload_on_sighup(&self, file: Option<PathBuf>) {
        #[cfg(unix)]
        {
            let services = self.services.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP; configuration reload is off");
                    return;
                };
                while hup.recv().await.is_some() {
                    // Refused as `serve` would refuse it at start, restart-only keys too (a
                    // reload that passes must not leave a file the next start refuses).
                    // Files are read and certificates parsed: off the runtime's threads.
                    // The master key as well: it must still open the stored keyring (a key
                    // file moved away, or another key set, is refused at the next start). A
                    // running database that does not answer now leaves that to the next
                    // start. A file naming another database (SQLite or PostgreSQL) is checked
                    // as `config check` checks it: that database must answer and its
                    // keyring open with the file's master key. The running instance keeps its
                    // database and key until the restart either way.
                    let path = file.clone();
                    let running = services.core.settings.load().database_location().ok();
                    let rows = services.core.db(|s| s.keyring()).await.ok();
                    let loaded = tokio::task::spawn_blocking(move || {
                        let new = Settings::load(path.as_deref()).map_err(|e| e.to_string())?;
                        preflight(&new).map_err(|e| e.to_string())?;
                        let named = new.database_location().ok();
                        if named.is_some() && named != running {
                            check_installation(&new).map_err(|e| e.to_string())?;
                        } else if let Some(rows) = rows {
                            check_keyring(&new, &rows).map_err(|e| e.to_string())?;
                        }
                        Ok::<_, String>(new)
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("the reload stopped: {e}")));
                    match loaded {
                        Ok(new) => {
                            let level = new.log.level.clone();
                            // The warnings of a start that concern the settings (a short
                            // admin token), for the settings now taken.
                            for (_, note) in new
                                .start_notes(std::iter::empty())
                                .into_iter()
                                .filter(|(warn, _)| *warn)
                            {
                                tracing::warn!("{note}");
                            }
                            let (live, restart) = services.admin.reload(new);
                            tracing::info!(
                                applied = %live.join(","),
                                need_restart = %restart.join(","),
                                "configuration reloaded"
                            );
                            // After the line above, so a quieter level does not hide it.
                            if live.iter().any(|k| k == "log.level") {
                                crate::telemetry::set_level(&level);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "configuration reload failed; keeping the current settings")
                        }
                    }
                }
            });
        }
        #[cfg(not(unix))]
        let _ = file;
    }

    /// Serve until the server stops (SIGTERM or SIGINT, or its handle), purging ended codes
    /// and delivering from the outboxes in the background. On the way out (API.md §11.5):
    /// the senders stop claiming at once, requests and sends in flight finish within
    /// `server.shutdown_grace_seconds`, and the leases of messages and events not being sent
    /// are given back, so a restart or another instance sends them without waiting.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let purger = tokio::spawn(purge_loop(self.services.clone()));
        let keys = tokio::spawn(keyring_loop(self.services.clone()));
        let stats = tokio::spawn(stats_loop(self.services.clone()));
        let sender = tokio::spawn(Delivery::clone(&self.services.delivery).run_sender());
        let hooks = tokio::spawn(Events::clone(&self.services.events).run_webhook_sender());
        let tidy = tokio::spawn(tidy_loop(self.governor.clone()));
        let signals = tokio::spawn(stop_on_signal(self.services.clone(), self.handle.clone()));
        let result = self.server.await;
        // What follows the requests — giving back leases, settling cut idempotency keys,
        // writing the last audit events — is bounded together, to the grace and
        // [`AFTER_GRACE`] from the stop: a database that is away cannot stretch the stop past
        // what a service manager allows (the packaged unit's TimeoutStopSec is the default
        // grace and 15 s).
        let began = self
            .services
            .delivery
            .stopped_at()
            .unwrap_or_else(std::time::Instant::now);
        let stop_by = tokio::time::Instant::from_std(began) + self.grace + AFTER_GRACE;
        let services = &self.services;
        let grace = self.grace;
        let settle = async move {
            services
                .delivery
                .stop_delivery(grace, vec![sender, hooks])
                .await;
            // The idempotency keys of mints the stop cut: their answer kept, or the key freed.
            services.codes.settle_idempotency_at_stop().await;
            // In-flight requests are done: write the last audit events before exiting.
            services.core.audit.flush().await;
        };
        let settled = tokio::time::timeout_at(stop_by, settle).await.is_ok();
        // Nothing writes any more (a purge batch already running still ends by itself).
        for task in [purger, keys, stats, tidy, signals] {
            task.abort();
        }
        // Last, after what the database must take: the relays' idle sessions end with a
        // QUIT, not a dropped socket (a relay that does not answer costs at most 2 s).
        if let Ok(closed) =
            tokio::time::timeout_at(stop_by, services.core.mailer.close_all_idle()).await
        {
            if closed > 0 {
                tracing::debug!(closed, "closed idle SMTP connections");
            }
        }
        // SQLite's -wal emptied: what was deleted leaves no earlier copy beside the file.
        if settled {
            let store = std::sync::Arc::clone(&services.core.store);
            let emptied = tokio::task::spawn_blocking(move || store.at_stop());
            match tokio::time::timeout_at(
                stop_by.max(tokio::time::Instant::now() + Duration::from_secs(2)),
                emptied,
            )
            .await
            {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "the database's WAL could not be emptied at the stop: SQLite writes over it in time")
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!("emptying the database's WAL at the stop did not end in time")
                }
            }
        }
        if !settled {
            tracing::error!("the database did not take in time what the stop had to record: leases still held run out by themselves (their messages and events are sent then), cut idempotency keys are free once their claims run out, and audit events still queued are lost");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::StartupError;
    use crate::storage::StoreError;

    #[test]
    fn a_store_error_names_the_database_once() {
        let said = |e: StoreError| StartupError::from(e).to_string();
        assert_eq!(
            said(StoreError::Unavailable("no database connection".into())),
            "database unavailable: no database connection"
        );
        assert_eq!(
            said(StoreError::Conflict("tenant")),
            "database: conflict: tenant"
        );
        assert_eq!(said(StoreError::Unsupported("x")), "database: x");
    }
}
