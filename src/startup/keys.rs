//! The keyring at start: the master key from configuration or its file (created, 0600, on
//! a first start with an empty database), the keyring unlocked or made — once, when
//! instances start together — and `migrate-store`'s copy of an installation.

use std::path::Path;

use secrecy::ExposeSecret;

use super::{open_source_store, open_store, resolve, StartupError};
use crate::config::Settings;
use crate::crypto::keyring::{Keyring, Keys, MasterKey, WrappedKey};
use crate::storage::Store;

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
            "cannot create master key file {} (crypto.master_key_file): {e}",
            path.display()
        ))
    })?;
    writeln!(f, "{}", key.to_base64())
        .and_then(|_| f.sync_all())
        .map_err(|e| {
            StartupError::MasterKey(format!(
                "cannot write master key file {} (crypto.master_key_file): {e}",
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
                    "master key file {} (crypto.master_key_file) does not hold base64 of 32 bytes",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StartupError::MasterKey(format!(
            "cannot read master key file {} (crypto.master_key_file): {e}",
            path.display()
        ))),
    }
}

/// A master key file that others than its owner can read is worth a loud line at start —
/// one: the key is read more than once as the server starts (its checks, then the keyring).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        static WARNED: AtomicBool = AtomicBool::new(false);
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 && !WARNED.swap(true, Ordering::Relaxed) {
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

/// Unlock a stored keyring with the configured master key (and the previous ones): the
/// key must be there and must open it — a missing key file is never made anew here.
fn unlock_stored(settings: &Settings, rows: &[WrappedKey]) -> Result<Keys, StartupError> {
    let previous = previous_master_keys(settings)?;
    match configured_master_key(settings)? {
        Some(master) => {
            let ring = Keyring::open(rows, &master, &previous)?;
            Ok(running_keys(settings, ring, master, previous))
        }
        None => Err(StartupError::MasterKey(format!(
            "master key file {} (crypto.master_key_file) is missing, but the database holds a keyring (wrapped by key id {}); restore the key file or set crypto.master_key — refusing to create a new key",
            resolve(Path::new(&settings.crypto.master_key_file)).display(),
            rows.first().map(|r| r.kek_id.as_str()).unwrap_or("?")
        ))),
    }
}

/// Whether `serve` with these settings would open the stored keyring `rows` (`config
/// check`, a reload: API.md §18.8); an empty keyring is made at start, so it passes.
pub fn check_keyring(settings: &Settings, rows: &[WrappedKey]) -> Result<(), StartupError> {
    if rows.is_empty() {
        return Ok(());
    }
    unlock_stored(settings, rows).map(drop)
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
    rows: Vec<WrappedKey>,
    now: i64,
) -> Result<Keys, StartupError> {
    let previous = previous_master_keys(settings)?;
    let key_path = resolve(Path::new(&settings.crypto.master_key_file));
    let no_keyring = || {
        StartupError::MasterKey(
            "the database holds tenants but no keyring; it cannot be opened".into(),
        )
    };
    if !rows.is_empty() {
        return unlock_stored(settings, &rows);
    }
    let master = match configured_master_key(settings)? {
        Some(m) => m,
        None => {
            // Before writing a new key file: a database that holds tenants (and, read
            // again now, still no keyring) can never be opened by a new key.
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
    Ok(running_keys(settings, ring, master, previous))
}

/// A process's keys, its master key read again from its file when the stored keyring is
/// found wrapped by another — the CLI's `keys rotate` after the file got the new key — so
/// that running instances go on without a restart (API.md §7.3). A `crypto.master_key`
/// given inline cannot change while the process runs.
fn running_keys(
    settings: &Settings,
    ring: Keyring,
    master: MasterKey,
    previous: Vec<MasterKey>,
) -> Keys {
    let keys = Keys::new(ring, master, previous);
    if !settings.crypto.master_key.expose_secret().is_empty() {
        return keys;
    }
    let path = resolve(Path::new(&settings.crypto.master_key_file));
    keys.rereading(Box::new(move || {
        let text = std::fs::read_to_string(&path).ok()?;
        MasterKey::from_base64(&text).ok()
    }))
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
    let at = |url: &str| {
        let mut s = settings.clone();
        s.database.url = url.to_string();
        s.validate().map_err(StartupError::Config)?;
        Ok::<_, StartupError>(s)
    };
    // A URL of no known kind is named by its flag, not as `database.url`.
    for (flag, url) in [("--from", from), ("--to", to)] {
        let mut s = settings.clone();
        s.database.url = url.to_string();
        match s.database_location() {
            Err(crate::config::ConfigError::Invalid { message, .. }) => {
                return Err(StartupError::Other(format!("{flag} {message}")));
            }
            Ok(crate::config::DatabaseLocation::Postgres(url)) => {
                if let Err(m) = crate::storage::postgres::check_url(&url) {
                    let m = m.strip_prefix("database.url: ").unwrap_or(&m);
                    return Err(StartupError::Other(format!("{flag}: {m}")));
                }
            }
            _ => {}
        }
    }
    // A source that is not there is named, and not made (API.md §18.8).
    let mut given = settings.clone();
    given.database.url = from.to_string();
    if let crate::config::DatabaseLocation::Sqlite(path) = given.database_location()? {
        if !resolve(&path).exists() {
            return Err(StartupError::Other(format!(
                "no database at {} (--from): nothing to copy",
                path.display()
            )));
        }
    }
    let source = open_source_store(&at(from)?).map_err(|e| match e {
        StartupError::Store(
            crate::storage::StoreError::NotInstalled(why) | crate::storage::StoreError::Newer(why),
        ) => StartupError::Other(format!("the source database (--from): {why}")),
        // A file that is no database, a server that refused: named by its flag too.
        StartupError::Store(other) => {
            StartupError::Other(format!("the source database (--from): {other}"))
        }
        other => other,
    })?;
    let rows = source.keyring()?;
    if rows.is_empty() {
        return Err(StartupError::Other(
            "the source database holds no installation (no keyring)".into(),
        ));
    }
    let master = configured_master_key(settings)?.ok_or_else(|| {
        StartupError::MasterKey(format!(
            "no master key at {} (crypto.master_key_file): the copy could not be checked; point the configuration at the installation's key",
            resolve(Path::new(&settings.crypto.master_key_file)).display()
        ))
    })?;
    Keyring::open(&rows, &master, &previous_master_keys(settings)?).map_err(|e| {
        StartupError::MasterKey(format!(
            "the configured master key does not open the source's keyring: {e}"
        ))
    })?;
    let target = open_store(&at(to)?)?;
    // Row by row, a part at a time, from the source's snapshot into the target's one
    // transaction: memory stays bounded whatever the installation's size.
    let mut copied: Vec<(&'static str, usize)> = crate::storage::copy::TABLES
        .iter()
        .map(|t| (t.name, 0))
        .collect();
    target
        .import_rows(&mut |sink| {
            source.export_rows(&mut |t, rows| {
                if let Some(c) = copied.iter_mut().find(|(name, _)| *name == t.name) {
                    c.1 += rows.len();
                }
                sink(t, rows)
            })
        })
        .map_err(|e| match e {
            crate::storage::StoreError::Conflict(m) => StartupError::Other(format!(
                "{m}: refusing to copy into it (nothing was changed)"
            )),
            other => other.into(),
        })?;
    Ok(copied)
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

    /// A copy larger than a part, by rows (audit events) and by bytes (test inbox
    /// messages), arrives whole and row for row: it is handed over part by part, never
    /// read into memory whole.
    #[test]
    fn migrate_store_copies_an_installation_of_many_parts_whole() {
        use crate::storage::copy::{PART_BYTES, PART_ROWS};
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let s = settings(dir.path(), &key);
        let store = SqliteStore::open(&dir.path().join("k.db"), 2).unwrap();
        open_keyring(&s, &store, 1).unwrap();
        let t = crate::domain::tenant::Tenant::sample();
        crate::storage::TenantStore::insert_tenant(&store, &t, &[1; 32], 1).unwrap();
        drop(store);
        let events = PART_ROWS * 2 + 500;
        let messages = PART_BYTES / (1 << 20) * 3;
        let conn = rusqlite::Connection::open(dir.path().join("k.db")).unwrap();
        conn.execute(
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {events}) \
                 INSERT INTO audit (tenant_id, at, event, recipient, outcome, client_ip, request_id) \
                 SELECT ?1, i, 'otp.mint', 'r' || i, 'ok', '127.0.0.1', hex(randomblob(8)) FROM n"
            ),
            [t.id.as_str()],
        )
        .unwrap();
        conn.execute(
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {messages}) \
                 INSERT INTO test_inbox (tenant_id, key_digest, recipient, message, received_at) \
                 SELECT ?1, randomblob(32), 'r' || i, randomblob(1048576), i FROM n"
            ),
            [t.id.as_str()],
        )
        .unwrap();
        drop(conn);
        let from = format!("sqlite://{}", dir.path().join("k.db").display());
        let to = format!("sqlite://{}", dir.path().join("copy.db").display());
        let copied = migrate_store(&s, &from, &to).unwrap();
        let count = |name: &str| copied.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(count("audit"), events);
        assert_eq!(count("test_inbox"), messages);
        assert_eq!(count("tenants"), 1);
        // Row for row: nothing in one that is not in the other.
        let conn = rusqlite::Connection::open(dir.path().join("copy.db")).unwrap();
        conn.execute(
            "ATTACH DATABASE ?1 AS src",
            [dir.path().join("k.db").to_str().unwrap()],
        )
        .unwrap();
        for table in ["audit", "test_inbox", "tenants", "keyring"] {
            for (a, b) in [("main", "src"), ("src", "main")] {
                let differ: i64 = conn
                    .query_row(
                        &format!(
                            "SELECT COUNT(*) FROM (SELECT * FROM {a}.{table} EXCEPT \
                             SELECT * FROM {b}.{table})"
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(differ, 0, "{table}: rows of {a} not in {b}");
            }
        }
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
