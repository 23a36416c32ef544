//! Application: open the store, unlock the keyring, build the services, bind the listener.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, HttpServer};
use secrecy::ExposeSecret;

use crate::clock::{Clock, SystemClock};
use crate::config::{DatabaseLocation, Settings};
use crate::crypto::hashing::Hasher;
use crate::crypto::keyring::{KeyError, Keyring, Keys, MasterKey};
use crate::mailer::Mailer;
use crate::net_policy::HostPolicy;
use crate::routes::{app, AppState};
use crate::service::Services;
use crate::storage::postgres::{PgOptions, PgStore};
use crate::storage::sqlite::SqliteStore;
use crate::storage::Store;

mod reload;
pub mod scheduling;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("database: {0}")]
    Store(#[from] crate::storage::StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    MasterKey(String),
    #[error("{0}")]
    Other(String),
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

pub fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartupError> {
    match settings.database_location()? {
        DatabaseLocation::Sqlite(path) => Ok(Arc::new(SqliteStore::open(
            &resolve(&path),
            settings.database.pool_size,
        )?)),
        DatabaseLocation::Postgres(url) => Ok(Arc::new(PgStore::open(&PgOptions {
            url,
            pool_size: settings.database.pool_size,
            tls_ca_file: (!settings.database.tls_ca_file.is_empty())
                .then(|| resolve(Path::new(&settings.database.tls_ca_file))),
            timeout: Duration::from_secs(settings.database.timeout_seconds),
        })?)),
    }
}

fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), StartupError> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StartupError::MasterKey(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        StartupError::MasterKey(format!(
            "cannot create master key file {}: {e}",
            path.display()
        ))
    })?;
    writeln!(f, "{}", key.to_base64())
        .and_then(|_| f.sync_all())
        .map_err(|e| {
            StartupError::MasterKey(format!(
                "cannot write master key file {}: {e}",
                path.display()
            ))
        })
}

/// The configured master key: from `crypto.master_key`, or read from the key file.
/// `Ok(None)` means the key file does not exist.
pub fn configured_master_key(settings: &Settings) -> Result<Option<MasterKey>, StartupError> {
    let inline = settings.crypto.master_key.expose_secret();
    if !inline.is_empty() {
        return Ok(Some(MasterKey::from_base64(inline)?));
    }
    let path = resolve(Path::new(&settings.crypto.master_key_file));
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            warn_if_readable_by_others(&path);
            MasterKey::from_base64(&s).map(Some).map_err(|_| {
                StartupError::MasterKey(format!(
                    "master key file {} does not hold base64 of 32 bytes",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StartupError::MasterKey(format!(
            "cannot read master key file {}: {e}",
            path.display()
        ))),
    }
}

/// A master key file that others than its owner can read is worth a loud line at start.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = %format!("{mode:04o}"),
                    "the master key file is readable by others than its owner; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

pub fn previous_master_keys(settings: &Settings) -> Result<Vec<MasterKey>, StartupError> {
    Ok(settings
        .crypto
        .previous_master_keys
        .iter()
        .map(|k| MasterKey::from_base64(k.expose_secret()))
        .collect::<Result<_, _>>()?)
}

/// Unlock the keyring, creating it (and the key file) on a first start with an empty database.
pub fn open_keyring(
    settings: &Settings,
    store: &dyn Store,
    now: i64,
) -> Result<Keys, StartupError> {
    let rows = store.keyring()?;
    open_keyring_from(settings, store, rows, now)
}

/// [`open_keyring`] from the rows it read. Instances starting together on an empty
/// PostgreSQL database (API.md §6.32) may all read no keyring: each then offers one, and the
/// store keeps the first (under a lock) and gives every instance that one. The database
/// holding tenants but no keyring is the only refusal, decided under that same lock.
fn open_keyring_from(
    settings: &Settings,
    store: &dyn Store,
    rows: Vec<crate::crypto::keyring::WrappedKey>,
    now: i64,
) -> Result<Keys, StartupError> {
    let previous = previous_master_keys(settings)?;
    let key_path = resolve(Path::new(&settings.crypto.master_key_file));
    let no_keyring = || {
        StartupError::MasterKey(
            "the database holds tenants but no keyring; it cannot be opened".into(),
        )
    };
    match (rows.is_empty(), configured_master_key(settings)?) {
        (false, Some(master)) => {
            let ring = Keyring::open(&rows, &master, &previous)?;
            Ok(Keys::new(ring, master, previous))
        }
        (false, None) => Err(StartupError::MasterKey(format!(
            "master key file {} is missing, but the database holds a keyring (wrapped by key id {}); restore the key file or set crypto.master_key — refusing to create a new key",
            key_path.display(),
            rows.first().map(|r| r.kek_id.as_str()).unwrap_or("?")
        ))),
        (true, master) => {
            let master = match master {
                Some(m) => m,
                None => {
                    // Before writing a new key file: a database that holds tenants (and,
                    // read again now, still no keyring) can never be opened by a new key.
                    if store.has_tenants()? && store.keyring()?.is_empty() {
                        return Err(no_keyring());
                    }
                    let m = MasterKey::generate();
                    write_key_file(&key_path, &m)?;
                    tracing::info!(path = %key_path.display(), key_id = %m.id(), "created a new master key file; back it up — without it the database cannot be read");
                    m
                }
            };
            let (_, fresh) = Keyring::generate(&master)?;
            let stored = store.init_keyring(&fresh, now).map_err(|e| match e {
                crate::storage::StoreError::Conflict(_) => no_keyring(),
                other => other.into(),
            })?;
            let ring = Keyring::open(&stored, &master, &previous)?;
            Ok(Keys::new(ring, master, previous))
        }
    }
}

/// `otpmint migrate-store`: copy the installation at `from` into the empty database at `to`
/// (both migrated first); the configured master key must open the source's keyring, and
/// the copy keeps it wrapped as it is. Blocking: call it off the async workers. Returns the
/// rows copied per table.
pub fn migrate_store(
    settings: &Settings,
    from: &str,
    to: &str,
) -> Result<Vec<(&'static str, usize)>, StartupError> {
    let open = |url: &str| {
        let mut s = settings.clone();
        s.database.url = url.to_string();
        s.validate().map_err(StartupError::Config)?;
        open_store(&s)
    };
    let source = open(from)?;
    let rows = source.keyring()?;
    if rows.is_empty() {
        return Err(StartupError::Other(
            "the source database holds no installation (no keyring)".into(),
        ));
    }
    let master = configured_master_key(settings)?.ok_or_else(|| {
        StartupError::MasterKey("no master key configured: the copy could not be checked".into())
    })?;
    Keyring::open(&rows, &master, &previous_master_keys(settings)?).map_err(|e| {
        StartupError::MasterKey(format!(
            "the configured master key does not open the source's keyring: {e}"
        ))
    })?;
    let target = open(to)?;
    let snapshot = source.export_snapshot()?;
    target.import_snapshot(&snapshot).map_err(|e| match e {
        crate::storage::StoreError::Conflict(m) => StartupError::Other(format!(
            "{m}: refusing to copy into it (nothing was changed)"
        )),
        other => other.into(),
    })?;
    Ok(snapshot.iter().map(|(t, r)| (t.name, r.len())).collect())
}

/// Build the services (store, keyring, hashing pool, mailer) without any HTTP.
pub fn build_services(settings: Settings, clock: Arc<dyn Clock>) -> Result<Services, StartupError> {
    // Blocking database work on a plain thread: this may be called from async code, where
    // the PostgreSQL client must not block.
    let (store, keyring) = std::thread::scope(|s| {
        s.spawn(|| -> Result<_, StartupError> {
            let store = open_store(&settings)?;
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
    let mailer = Mailer::new(
        HostPolicy {
            allowed_ports: Some(settings.smtp.allowed_ports.clone()),
            allow_private_hosts: settings.smtp.allow_private_hosts,
            allow_plaintext: settings.smtp.allow_plaintext,
        },
        Duration::from_secs(settings.smtp.timeout_seconds),
        settings.smtp.pool_size,
        &settings.smtp.extra_root_certificates,
    )
    .map_err(|e| StartupError::Other(e.to_string()))?;
    let settings = Arc::new(arc_swap::ArcSwap::from_pointee(settings));
    let hooks = crate::webhook::WebhookClient::new(Arc::clone(&settings))
        .map_err(|e| StartupError::Other(e.to_string()))?;
    Ok(Services {
        audit: crate::service::audit::Audit::start(Arc::clone(&store)),
        store,
        keyring: Arc::new(keyring),
        hasher,
        mailer,
        clock,
        settings,
        outbox: crate::service::delivery::Outbox::new(),
        templates: crate::service::templates::TemplateCache::default(),
        hooks: crate::service::webhooks::Hooks::new(hooks),
    })
}

pub struct Application {
    port: u16,
    server: Server,
    handle: actix_web::dev::ServerHandle,
    services: Services,
    governor: crate::routes::governor::IpGovernor,
    grace: Duration,
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
        let max_conns = settings.server.max_connections_per_worker;
        let services = build_services(settings, clock)?;
        let listener = TcpListener::bind(&bind)
            .map_err(|e| StartupError::Other(format!("cannot listen on {bind}: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::Other(e.to_string()))?
            .port();
        let state = web::Data::new(AppState {
            proxies: crate::limits::TrustedProxies::parse(
                &services.settings.load().server.trusted_proxies,
            ),
            services: services.clone(),
        });
        // One limiter state shared by every worker.
        let governor = crate::routes::governor::ip_governor(&services.settings.load())
            .ok_or_else(|| StartupError::Other("invalid per-IP limit settings".into()))?;
        let limiter = governor.clone();
        let mut server = HttpServer::new(move || app(state.clone(), governor.clone()))
            .shutdown_timeout(grace)
            // SIGTERM and SIGINT are ours (run_until_stopped): delivery stops claiming at
            // once while the HTTP side drains.
            .disable_signals()
            // Headers within the request timeout (the body's bound is in read_body); a
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
                    match Settings::load(file.as_deref()) {
                        Ok(new) => {
                            let level = new.log.level.clone();
                            let (live, restart) = services.reload(new);
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
        let sender = tokio::spawn(self.services.clone().run_sender());
        let hooks = tokio::spawn(self.services.clone().run_webhook_sender());
        let tidy = tokio::spawn(tidy_loop(self.governor.clone()));
        let signals = tokio::spawn(stop_on_signal(self.services.clone(), self.handle.clone()));
        let result = self.server.await;
        self.services.stop_delivery(self.grace).await;
        for task in [purger, keys, sender, hooks, tidy, signals] {
            task.abort();
        }
        // In-flight requests are done: write the last audit events before exiting.
        self.services.audit.flush().await;
        result
    }
}

/// SIGTERM or SIGINT: the senders stop claiming, and the HTTP server drains.
async fn stop_on_signal(services: Services, handle: actix_web::dev::ServerHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM and SIGINT; stop the server with its handle");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    tracing::info!("stopping: finishing requests and sends in flight");
    services.outbox.stop();
    handle.stop(true).await;
}

/// Keep what clients cannot grow without bound in check (API.md §6.27): the per-IP
/// limiter forgets addresses whose buckets are full again.
async fn tidy_loop(governor: crate::routes::governor::IpGovernor) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let limiter = governor.limiter();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Delete ended codes after `otp.retention_seconds`, and quota records past their windows.
/// Pick up a data-key rotation made by the CLI or another instance within a second or two,
/// so every instance seals new messages and passwords under the active key.
async fn keyring_loop(services: Services) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match services.refresh_keyring().await {
            Ok(true) => tracing::info!("keyring reloaded: a new data key is active"),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "keyring refresh failed"),
        }
    }
}

async fn purge_loop(services: Services) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match services.purge_once().await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "purged ended codes"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
    }
}

impl Services {
    /// One purge pass: codes that ended (or expired) more than `otp.retention_seconds` ago,
    /// and quota records older than their windows. Returns how many codes went.
    pub async fn purge_once(&self) -> Result<usize, crate::service::ServiceError> {
        let now = self.now();
        let retention = (self.settings.load().otp.retention_seconds as i64) * 1000;
        // A send record is kept as long as any limit looks at it: the recipient window,
        // the cooldown, the tenant's hour (all range-checked, so no overflow).
        let limits = self.settings.load().limits.clone();
        let windows = (limits
            .recipient_window_seconds
            .max(limits.resend_cooldown_seconds)
            .max(3600) as i64)
            .saturating_mul(1000);
        let audit = (self.settings.load().audit.retention_seconds as i64).saturating_mul(1000);
        self.db(move |s| {
            s.purge_audit(now - audit)?;
            // Idempotency keys after their 24 hours; webhook delivery records with the audit.
            s.purge_integration(now, now - audit)?;
            s.purge(now - retention, now - windows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::sqlite::SqliteStore;
    use crate::storage::KeyringStore;

    fn settings(dir: &Path, key: &MasterKey) -> Settings {
        let mut s = Settings::load_from(None, Vec::<(String, String)>::new()).unwrap();
        s.crypto.master_key = secrecy::SecretString::from(key.to_base64());
        s.database.url = format!("sqlite://{}", dir.join("k.db").display());
        s
    }

    #[test]
    fn an_instance_that_read_no_keyring_while_another_made_one_opens_that_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let s = settings(dir.path(), &key);
        let store = SqliteStore::open(&dir.path().join("k.db"), 2).unwrap();
        // Instance A read the keyring: empty.
        let read_by_a = store.keyring().unwrap();
        assert!(read_by_a.is_empty());
        // Instance B made it meanwhile, and its first tenant is already there.
        let b = open_keyring(&s, &store, 1).unwrap();
        crate::storage::TenantStore::insert_tenant(
            &store,
            &crate::domain::tenant::Tenant::sample(),
            &[1; 32],
            1,
        )
        .unwrap();
        // A goes on from what it read, and opens B's keyring.
        let a = open_keyring_from(&s, &store, read_by_a, 2).unwrap();
        assert_eq!(a.get().pepper(), b.get().pepper());
    }

    #[test]
    fn a_database_with_tenants_and_no_keyring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let s = settings(dir.path(), &key);
        let store = SqliteStore::open(&dir.path().join("k.db"), 2).unwrap();
        crate::storage::TenantStore::insert_tenant(
            &store,
            &crate::domain::tenant::Tenant::sample(),
            &[1; 32],
            1,
        )
        .unwrap();
        let e = open_keyring(&s, &store, 1).err().unwrap();
        assert!(
            e.to_string().contains("holds tenants but no keyring"),
            "{e}"
        );
        assert!(store.keyring().unwrap().is_empty(), "no keyring was made");
    }
}
