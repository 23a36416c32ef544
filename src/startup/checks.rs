//! What `serve` checks before it opens the database and binds, without doing either
//! (`otpmint config check` makes the same checks, API.md §18.8).

use std::path::Path;
use std::sync::Arc;

use super::{
    check_keyring, configured_master_key, mailer_of, previous_master_keys, resolve, Install,
    StartupError,
};
use crate::config::{DatabaseLocation, Settings};
use crate::storage::sqlite::SqliteStore;

/// What `serve` checks before it opens the database and binds, without doing either
/// (`otpmint config check`, API.md §18.8): the certificate files of the SMTP and HTTP
/// clients and of PostgreSQL parse, and the master key file, when there is one, is readable.
pub fn preflight(settings: &Settings) -> Result<(), StartupError> {
    mailer_of(settings)?;
    crate::outbound::WebhookClient::new(Arc::new(arc_swap::ArcSwap::from_pointee(
        settings.clone(),
    )))
    .map_err(|e| StartupError::Other(format!("webhooks.extra_root_certificates: {e}")))?;
    if !settings.database.tls_ca_file.is_empty() {
        use rustls_pki_types::pem::PemObject;
        let path = resolve(Path::new(&settings.database.tls_ca_file));
        let pem = std::fs::read(&path).map_err(|e| {
            StartupError::Other(format!(
                "database.tls_ca_file {} cannot be read: {}",
                path.display(),
                e.kind()
            ))
        })?;
        // Parsed as the PostgreSQL connector parses it: at least one certificate, each a
        // trust anchor rustls takes.
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            let added = cert
                .map_err(|e| e.to_string())
                .and_then(|c| roots.add(c).map_err(|e| e.to_string()));
            if let Err(e) = added {
                return Err(StartupError::Other(format!(
                    "database.tls_ca_file {}: {e}",
                    path.display()
                )));
            }
        }
        if roots.is_empty() {
            return Err(StartupError::Other(format!(
                "database.tls_ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    // The master key as serve reads it: the inline key or the file must decode (a file
    // that does not exist yet is made on the first start, so it must be creatable).
    if configured_master_key(settings)?.is_none() {
        let path = resolve(Path::new(&settings.crypto.master_key_file));
        creatable(&path).map_err(|e| {
            StartupError::MasterKey(format!(
                "cannot create master key file {} (crypto.master_key_file): {e}",
                path.display()
            ))
        })?;
    }
    previous_master_keys(settings)?;
    // A PostgreSQL URL as the connector reads it (its sslmode); a SQLite database that does
    // not exist yet is made on the first start.
    if let Ok(crate::config::DatabaseLocation::Postgres(url)) = settings.database_location() {
        crate::storage::postgres::check_url(&url).map_err(StartupError::Other)?;
    }
    if let Ok(crate::config::DatabaseLocation::Sqlite(path)) = settings.database_location() {
        if !path.exists() {
            creatable(&path).map_err(|e| {
                StartupError::Other(format!(
                    "cannot create database {} ({}): {e}",
                    path.display(),
                    settings.database_url_source()
                ))
            })?;
        }
    }
    Ok(())
}

/// What `serve` checks of a database that exists, without writing to it (`otpmint config
/// check`, API.md §18.8): SQLite's file is a database, PostgreSQL's server answers at once
/// and the database is there, and the master key opens the keyring (a missing key file is
/// not made anew for a database that holds one) — also of a schema from an older version,
/// read as it stands (`serve` migrates it, then opens the keyring). One with no keyring yet
/// passes (`serve` makes one).
pub fn check_installation(settings: &Settings) -> Result<(), StartupError> {
    let not_yet = |e: &StartupError| {
        matches!(
            e,
            StartupError::Store(crate::storage::StoreError::NotInstalled(_))
        )
    };
    let store = match settings.database_location() {
        Ok(DatabaseLocation::Sqlite(path)) => {
            let path = resolve(&path);
            if !path.exists() {
                return Ok(());
            }
            match SqliteStore::open_as_found(&path, 1) {
                Ok(store) => Arc::new(store) as Arc<dyn crate::storage::Store>,
                Err(crate::storage::StoreError::NotInstalled(_)) => return Ok(()),
                Err(e) => {
                    return Err(StartupError::Other(format!(
                        "database {} ({}): {e}",
                        path.display(),
                        settings.database_url_source()
                    )))
                }
            }
        }
        Ok(DatabaseLocation::Postgres(_)) => {
            match super::open_store_as(settings, Install::AsFound) {
                Ok(store) => store,
                Err(e) if not_yet(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(_) => return Ok(()),
    };
    // The PostgreSQL driver blocks: on a thread of its own, not the caller's async one
    // (the store is dropped there too).
    let rows = std::thread::scope(|s| {
        s.spawn(move || store.keyring()).join().unwrap_or_else(|_| {
            Err(crate::storage::StoreError::Corrupt(
                "reading the keyring panicked".into(),
            ))
        })
    })?;
    check_keyring(settings, &rows)
}

/// Whether `serve` could make a file at `path`, its folders included: the nearest folder
/// that exists is a folder, and writable (by its permission bits; the user is not asked).
fn creatable(path: &Path) -> Result<(), String> {
    let mut next = path.parent();
    while let Some(dir) = next {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => return Err(format!("{} is not a folder", dir.display())),
            Ok(m) if m.permissions().readonly() => {
                return Err(format!("{} is not writable", dir.display()))
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => next = dir.parent(),
            Err(e) => return Err(format!("{}: {}", dir.display(), e.kind())),
        }
    }
    Ok(())
}
