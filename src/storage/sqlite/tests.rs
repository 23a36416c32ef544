//! The SQLite store's own unit tests: the group-commit writer, submitted calls, stored values.

#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use crate::domain::tenant::Tenant;
use crate::storage::TenantStore;

#[test]
fn a_panicking_write_fails_its_batch_and_the_writer_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("w.db"), 2).unwrap();
    let r: Result<(), StoreError> = store.writer.write(|_| panic!("a bug in one write"));
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    // The next write commits: the writer thread survived.
    store.write_probe().unwrap();
    let n: i64 = store
        .writer
        .write(|c| Ok(c.query_row_cached("SELECT 41 + 1", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(n, 42);
}

/// A test call: runs `f` against the store, reports through a channel.
struct TestCall<F> {
    store: std::sync::Arc<SqliteStore>,
    f: F,
    tx: std::sync::mpsc::Sender<Result<i64, StoreError>>,
}

impl<F> WriteCall for TestCall<F>
where
    F: FnOnce(&SqliteStore) -> Result<i64, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>) -> Box<dyn FnOnce(Result<(), StoreError>) + Send> {
        let out = (self.f)(&self.store);
        let tx = self.tx;
        Box::new(move |committed| {
            let _ = tx.send(committed.and(out));
        })
    }
    fn fail(self: Box<Self>, e: StoreError) {
        let _ = self.tx.send(Err(e));
    }
}

/// A store with a one-column `kv` table, made through the writer.
fn kv_store(dir: &tempfile::TempDir, file: &str) -> std::sync::Arc<SqliteStore> {
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join(file), 2).unwrap());
    store
        .writer
        .write(|c| Ok(c.execute_batch("CREATE TABLE kv (k INTEGER PRIMARY KEY)")?))
        .unwrap();
    store
}

fn count(store: &SqliteStore) -> i64 {
    store
        .conn()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_submitted_call_writes_in_the_writers_batch_and_hears_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir, "s.db");
    let (tx, rx) = std::sync::mpsc::channel();
    // Two writes of the store's own kind inside one call: on the writer's thread they
    // run in its open batch (a wait for the writer there would never end). The second
    // fails and is rolled back alone; the first stays.
    let call = TestCall {
        store: std::sync::Arc::clone(&store),
        f: |s: &SqliteStore| {
            assert_eq!(
                std::thread::current().name(),
                Some("otpmint-db-writer"),
                "the call runs on the writer's thread"
            );
            s.writer
                .write(|c| Ok(c.execute("INSERT INTO kv (k) VALUES (1)", [])?))?;
            let dup = s.writer.write(|c| {
                c.execute("INSERT INTO kv (k) VALUES (2)", [])?;
                Ok(c.execute("INSERT INTO kv (k) VALUES (1)", [])?)
            });
            assert!(dup.is_err());
            s.writer
                .write(|c| Ok(c.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))?))
        },
        tx,
    };
    assert!(store.submit(Box::new(call)).is_ok());
    let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(seen, 1);
    // Answered only once durable: a fresh connection sees exactly the first row.
    assert_eq!(count(&store), 1);
    let k: i64 = store
        .conn()
        .unwrap()
        .query_row("SELECT k FROM kv", [], |r| r.get(0))
        .unwrap();
    assert_eq!(k, 1);
}

#[test]
fn a_submitted_call_reads_through_its_batch_without_waiting_for_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir, "r.db");
    // Every pooled connection is taken: a read through the pool would wait for one (and
    // time out), as it would while the callers holding them wait for the writer.
    let held = (store.pooled().unwrap(), store.pooled().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let call = TestCall {
        store: std::sync::Arc::clone(&store),
        f: |s: &SqliteStore| {
            s.writer
                .write(|c| Ok(c.execute("INSERT INTO kv (k) VALUES (5)", [])?))?;
            // The read sees the batch's own uncommitted row.
            Ok(s.conn()?.query_row("SELECT k FROM kv", [], |r| r.get(0))?)
        },
        tx,
    };
    assert!(store.submit(Box::new(call)).is_ok());
    let seen = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(seen, 5);
    drop(held);
    assert_eq!(count(&store), 1);
}

#[test]
fn a_call_finding_the_writers_queue_full_is_refused_at_once_and_the_rest_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("q.db"), 2).unwrap());
    // Hold the writer inside a write until released.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            store.writer.write(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            })
        })
    };
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let call = |tx: &std::sync::mpsc::Sender<Result<i64, StoreError>>| {
        Box::new(TestCall {
            store: std::sync::Arc::clone(&store),
            f: |_: &SqliteStore| Ok(1),
            tx: tx.clone(),
        })
    };
    for _ in 0..writer::QUEUE_MAX {
        assert!(store.submit(call(&tx)).is_ok());
    }
    // One more than the queue holds: refused as unavailable, without waiting.
    let (over_tx, over_rx) = std::sync::mpsc::channel();
    assert!(store.submit(call(&over_tx)).is_ok());
    let refused = over_rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("busy")),
        "{refused:?}"
    );
    // Released, the writer answers every queued call.
    release_tx.send(()).unwrap();
    holder.join().unwrap().unwrap();
    for _ in 0..writer::QUEUE_MAX {
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap(),
            1
        );
    }
}

#[test]
fn a_panicking_call_fails_its_batch_and_nothing_of_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = kv_store(&dir, "p.db");
    let (tx, rx) = std::sync::mpsc::channel();
    let call = TestCall {
        store: std::sync::Arc::clone(&store),
        f: |s: &SqliteStore| {
            s.writer
                .write(|c| Ok(c.execute("INSERT INTO kv (k) VALUES (7)", [])?))?;
            panic!("a bug after a write");
        },
        tx,
    };
    assert!(store.submit(Box::new(call)).is_ok());
    // The call's channel is dropped unanswered with the batch; nothing was committed.
    assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
    assert_eq!(count(&store), 0);
    store.write_probe().unwrap();
}

#[test]
fn a_stored_value_outside_its_type_is_reported_as_corrupt() {
    use crate::domain::tenant::{Origin, TlsMode};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db"), 2).unwrap();
    let t = Tenant::sample();
    store.insert_tenant(&t, &[9; 32], 1).unwrap();
    let back = store.tenant(&t.id).unwrap().unwrap();
    assert_eq!(
        (back.smtp.as_ref().unwrap().tls, back.origin),
        (TlsMode::Starttls, Origin::Native)
    );
    for (column, bad) in [
        ("smtp_tls", "sometimes"),
        ("origin", "elsewhere"),
        ("delivery", "carrier-pigeon"),
        ("default_locale", "not a locale!"),
    ] {
        let conn = store.conn().unwrap();
        let good: String = conn
            .query_row(&format!("SELECT {column} FROM tenants"), [], |r| r.get(0))
            .unwrap();
        conn.execute(&format!("UPDATE tenants SET {column} = ?1"), [bad])
            .unwrap();
        let r = store.tenant(&t.id);
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{column}: {r:?}");
        conn.execute(&format!("UPDATE tenants SET {column} = ?1"), [good])
            .unwrap();
    }
    assert!(store.tenant(&t.id).unwrap().is_some());
}

/// A batch of audit events written again after a failure whose commit happened all the
/// same (its answer lost with the connection) is not stored twice; one that did not commit
/// is written whole; a first write stores what it is given.
#[test]
fn an_audit_batch_written_again_stores_each_event_once() {
    use crate::domain::audit::AuditEvent;
    use crate::storage::AuditStore;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db"), 2).unwrap();
    let t = Tenant::sample();
    store.insert_tenant(&t, &[9; 32], 1).unwrap();
    let event = |event: &str, request_id: &str| AuditEvent {
        id: 0,
        tenant_id: t.id.as_str().to_string(),
        at: 1_000,
        event: event.into(),
        recipient: "a***@example.com".into(),
        outcome: "sent".into(),
        client_ip: "192.0.2.1".into(),
        request_id: request_id.into(),
    };
    let batch = [event("mint", "r1"), event("mint", "r2")];
    store.append_audit(&batch, false).unwrap();
    // Written again: nothing new.
    store.append_audit(&batch, true).unwrap();
    let page = |s: &SqliteStore| s.audit_page(&t.id, None, 200).unwrap().len();
    assert_eq!(page(&store), 2);
    // A batch commits whole: one whose events are not all stored did not, and is written.
    let more = [event("mint", "r2"), event("verify", "r2")];
    store.append_audit(&more, true).unwrap();
    assert_eq!(page(&store), 4);
    // Events alike to the letter (a provider's batch of bounces, recipients masked alike)
    // are all kept, and a batch of them written again is not stored twice.
    let alike = [
        event("suppression.add", "r3"),
        event("suppression.add", "r3"),
    ];
    store.append_audit(&alike, false).unwrap();
    assert_eq!(page(&store), 6);
    store.append_audit(&alike, true).unwrap();
    assert_eq!(page(&store), 6);
    // A first write is not looked up: what it is given is stored.
    store.append_audit(&batch[..1], false).unwrap();
    assert_eq!(page(&store), 7);
}

/// A write that meets a full disk (`SQLITE_FULL`) is `Unavailable`, and is remembered for the
/// readiness probe, whose own write takes no space (API.md §6.24).
#[test]
fn a_write_that_meets_a_full_disk_is_unavailable_and_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("f.db"), 2).unwrap();
    let conn = store.conn().unwrap();
    conn.execute("CREATE TABLE filler (b BLOB)", []).unwrap();
    // This connection's database may not grow: as a disk with no space left.
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    let full = (0..10_000)
        .find_map(|_| {
            conn.execute("INSERT INTO filler (b) VALUES (zeroblob(4096))", [])
                .err()
        })
        .expect("the database stops growing");
    let noted = crate::storage::error::disk_full_notes();
    let e = StoreError::from(full);
    assert!(e.is_unavailable(), "{e:?}");
    assert!(crate::storage::error::disk_full_notes() > noted);
}

/// A write that meets a failing disk (`SQLITE_IOERR`) or a file system turned read-only
/// under the server (`SQLITE_READONLY`: ext4 remounts itself so after an error) is
/// `Unavailable` and remembered as a full disk is: the readiness probe then writes for real,
/// and answers 503 until a write takes again (found by the filesystem audit: `/readyz`
/// answered 200 while every write failed).
#[test]
fn a_write_that_meets_a_failing_or_read_only_disk_is_unavailable_and_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    drop(SqliteStore::open(&path, 2).unwrap());
    let ro =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let refused = ro
        .execute("UPDATE keyring SET active = active", [])
        .expect_err("a read-only connection writes nothing");
    let io = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_WRITE),
        None,
    );
    for e in [refused, io] {
        let noted = crate::storage::error::disk_full_notes();
        let e = StoreError::from(e);
        assert!(e.is_unavailable(), "{e:?}");
        assert!(crate::storage::error::disk_full_notes() > noted, "{e:?}");
    }
}

/// A file system is read-only exactly when it is mounted so: every mount this process sees
/// (the last one on a mount point is the one in force), and a temporary directory's.
#[test]
fn a_read_only_file_system_is_seen_and_a_writable_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!super::disk::read_only(dir.path()));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut in_force = std::collections::BTreeMap::new();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        // A mount point with white space in it is written escaped (`\040`): not read here;
        // nor a network or automounted one (asking it could hang).
        const LOCAL: &[&str] = &[
            "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "proc", "sysfs", "overlay",
            "squashfs", "iso9660", "vfat", "devtmpfs", "devpts", "cgroup2", "mqueue",
        ];
        if f.len() > 3 && !f[1].contains('\\') {
            let ro = f[3].split(',').any(|o| o == "ro");
            if LOCAL.contains(&f[2]) {
                in_force.insert(f[1].to_string(), ro);
            } else {
                in_force.remove(f[1]);
            }
        }
    }
    for (point, ro) in &in_force {
        if std::fs::metadata(point).is_ok_and(|m| m.is_dir()) {
            assert_eq!(
                super::disk::read_only(std::path::Path::new(point)),
                *ro,
                "{point}"
            );
        }
    }
}

/// A key version another data-key rotation took first is a conflict, as PostgreSQL's
/// unique violation is (before: the database's own words, which `keys rotate-data-key`
/// printed), and the keyring keeps the first one's key.
#[test]
fn a_data_key_version_taken_already_is_a_conflict() {
    use crate::crypto::keyring::WrappedKey;
    use crate::storage::KeyringStore;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db"), 2).unwrap();
    let row = |wrapped: u8| WrappedKey {
        kind: "data".into(),
        version: 2,
        wrapped: vec![wrapped; 40],
        kek_id: "k".into(),
        active: true,
    };
    store.add_data_key(&row(1), 1).unwrap();
    let again = store.add_data_key(&row(2), 2);
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let stored = store.keyring().unwrap();
    let v2: Vec<_> = stored
        .iter()
        .filter(|r| r.kind == "data" && r.version == 2)
        .collect();
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0].wrapped, vec![1; 40]);
    assert!(v2[0].active);
}

/// The readiness probe's write takes space: a page reaches the WAL (a row given the bytes
/// it has would write nothing), the row is as it was after it, and the store knows a write
/// took — for a while, not for ever.
#[test]
fn the_space_probe_writes_a_page_and_changes_nothing() {
    use crate::storage::Store;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let store = SqliteStore::open(&path, 2).unwrap();
    assert!(!store.wrote_within(Duration::from_secs(60)));
    store
        .conn()
        .unwrap()
        .execute(
            "INSERT INTO keyring (kind, version, wrapped, kek_id, active, created_at) VALUES ('data', 1, x'00', 'k', 1, 42)",
            [],
        )
        .unwrap();
    // Another connection's view of the file: its data version moves when a commit wrote
    // pages, not when a transaction left every page as it was.
    let watcher = rusqlite::Connection::open(&path).unwrap();
    let version = || -> i64 {
        watcher
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    let before = version();
    let same: usize = store
        .conn()
        .unwrap()
        .execute("UPDATE keyring SET active = active", [])
        .unwrap();
    assert_eq!(
        (same, version()),
        (1, before),
        "a row given its own bytes writes nothing"
    );
    store.space_probe().unwrap();
    assert!(version() > before, "the probe wrote no page");
    let created: i64 = store
        .conn()
        .unwrap()
        .query_row("SELECT created_at FROM keyring", [], |r| r.get(0))
        .unwrap();
    assert_eq!(created, 42);
    assert!(store.wrote_within(Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(50));
    assert!(!store.wrote_within(Duration::from_millis(10)));
}

/// `config check` reads a database with nothing beside it as immutable (no `-wal` or `-shm`
/// made), through a URI that spells any path exactly, and the ordinary way when a `-wal` or a
/// `-journal` (a rollback journal a crash may have left hot) stands beside it.
#[cfg(unix)]
#[test]
fn a_database_with_nothing_beside_it_is_read_as_immutable_and_its_path_survives_the_uri() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a dir%?#é");
    std::fs::create_dir(&odd).unwrap();
    let db = odd.join("x.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (7);")
            .unwrap();
    }
    assert!(!odd.join("x.db-wal").exists(), "closed cleanly");
    let uri = unused_file_uri(&db).unwrap();
    assert!(uri.ends_with("?immutable=1") && !uri.contains(' '), "{uri}");
    let c = rusqlite::Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let v: i64 = c.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 7, "the URI named the file itself");
    drop(c);
    for side in ["x.db-wal", "x.db-shm"] {
        assert!(!odd.join(side).exists(), "{side} made by an immutable read");
    }
    for side in ["x.db-wal", "x.db-journal"] {
        std::fs::write(odd.join(side), b"").unwrap();
        assert_eq!(unused_file_uri(&db), None, "{side} beside it");
        std::fs::remove_file(odd.join(side)).unwrap();
    }
}

/// Deleted rows leave nothing readable: not beside rows that stay on their page, not on pages
/// a purge frees whole, not in a backup (found by the privacy audit: purged addresses read
/// back with `strings` from the file and from every backup).
#[test]
fn deleted_rows_leave_nothing_readable_in_the_file_or_a_backup() {
    use crate::storage::RecordStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let store = SqliteStore::open(&db, 2).unwrap();
    let secret = |i: i64| format!("gone-{i:05}@purged.example");
    store
        .writer
        .write(move |c| {
            c.execute_batch("CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT)")?;
            // Kept and deleted rows side by side, then a run of deleted rows that fills
            // whole pages.
            for i in 0..4000i64 {
                let v = if i < 1000 && i % 2 == 0 {
                    format!("kept-{i:05}@stays.example")
                } else {
                    secret(i)
                };
                c.execute("INSERT INTO scratch (id, v) VALUES (?1, ?2)", (i, v))?;
            }
            Ok(())
        })
        .unwrap();
    store
        .writer
        .write(|c| {
            c.execute("DELETE FROM scratch WHERE v LIKE 'gone-%'", [])?;
            Ok(())
        })
        .unwrap();
    let backup = dir.path().join("b.db");
    store.backup_to(&backup).unwrap();
    // Every page into the file, and the WAL emptied.
    drop(store);
    let c = rusqlite::Connection::open(&db).unwrap();
    let busy: i64 = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(busy, 0, "the checkpoint was blocked");
    drop(c);
    for file in [&db, &backup] {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("@purged.example"),
            "{} keeps deleted rows",
            file.display()
        );
        assert!(
            text.contains("kept-00998@stays.example"),
            "{}",
            file.display()
        );
    }
}

/// A backup holds the live rows only: rows deleted by a connection that left their bytes in
/// the file (a version before `secure_delete`) are not carried over.
#[test]
fn a_backup_leaves_out_what_an_older_version_left_in_free_space() {
    use crate::storage::RecordStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o.db");
    let store = SqliteStore::open(&db, 2).unwrap();
    let old = rusqlite::Connection::open(&db).unwrap();
    old.busy_timeout(Duration::from_secs(5)).unwrap();
    old.execute_batch(
        "PRAGMA secure_delete = OFF; CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT);",
    )
    .unwrap();
    for i in 0..2000i64 {
        let v = if i % 2 == 0 {
            "kept@stays.example"
        } else {
            "gone@left-behind.example"
        };
        old.execute("INSERT INTO scratch (id, v) VALUES (?1, ?2)", (i, v))
            .unwrap();
    }
    old.execute("DELETE FROM scratch WHERE v LIKE 'gone@%'", [])
        .unwrap();
    let busy: i64 = old
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(busy, 0);
    let live = String::from_utf8_lossy(&std::fs::read(&db).unwrap()).into_owned();
    assert!(
        live.contains("gone@left-behind.example"),
        "nothing left behind: nothing to show"
    );
    let backup = dir.path().join("b.db");
    store.backup_to(&backup).unwrap();
    let copy = String::from_utf8_lossy(&std::fs::read(&backup).unwrap()).into_owned();
    assert!(
        !copy.contains("gone@left-behind.example"),
        "the backup carried deleted rows"
    );
    assert!(copy.contains("kept@stays.example"));
}
