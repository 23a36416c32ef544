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

/// A REAL where otpmint keeps whole numbers is damage: the export for `migrate-store` fails
/// naming the column, instead of copying the number cut down.
#[test]
fn a_real_where_otpmint_keeps_whole_numbers_fails_the_export_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db"), 2).unwrap();
    let t = Tenant::sample();
    store.insert_tenant(&t, &[9; 32], 1).unwrap();
    let export = |store: &SqliteStore| store.export_rows(&mut |_, _| Ok(()));
    assert!(export(&store).is_ok());
    store
        .conn()
        .unwrap()
        .execute("UPDATE tenants SET created_at = 1.5", [])
        .unwrap();
    let r = export(&store);
    assert!(
        matches!(&r, Err(StoreError::Corrupt(m)) if m.contains("tenants.created_at")),
        "{r:?}"
    );
}

/// A copy's target takes all of it or nothing: a source that fails after its first part
/// leaves the target as it was (and a copy can be made into it afterwards).
#[test]
fn a_copy_whose_source_fails_midway_leaves_its_target_empty() {
    use crate::storage::copy::{Sink, Value};
    use crate::storage::RecordStore;
    let dir = tempfile::tempdir().unwrap();
    let source = SqliteStore::open(&dir.path().join("s.db"), 2).unwrap();
    let t = Tenant::sample();
    source.insert_tenant(&t, &[9; 32], 1).unwrap();
    let target = SqliteStore::open(&dir.path().join("t.db"), 2).unwrap();
    let tenants = |store: &SqliteStore| -> i64 {
        let conn = store.conn().unwrap();
        conn.query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get(0))
            .unwrap()
    };
    let mut parts = 0;
    let r = target.import_rows(&mut |sink: &mut Sink<'_>| {
        source.export_rows(&mut |table, rows: Vec<Vec<Value>>| {
            parts += 1;
            sink(table, rows)?;
            match table.name {
                "tenants" => Err(StoreError::Unavailable("the source went away".into())),
                _ => Ok(()),
            }
        })
    });
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(parts >= 1);
    assert_eq!(tenants(&target), 0, "nothing of the failed copy stays");
    target
        .import_rows(&mut |sink| source.export_rows(sink))
        .unwrap();
    assert_eq!(tenants(&target), 1);
}

#[cfg(unix)]
#[test]
fn a_backup_is_owner_only_and_never_made_through_a_link() {
    use crate::storage::RecordStore;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("live.db"), 2).unwrap();
    // A link at PATH, even one that points nowhere, is something there: refused, and
    // nothing appears where it points.
    let target = dir.path().join("elsewhere.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let r = store.backup_to(&link);
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert!(!target.exists());
    // A new path gets an owner-only copy whatever the umask would give.
    let copy = dir.path().join("copy.db");
    store.backup_to(&copy).unwrap();
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        store.backup_to(&copy),
        Err(StoreError::Conflict(_))
    ));
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

/// A retention backlog larger than one batch is purged whole, batch after batch (each its
/// own transaction, so writes go on between them: found by the data-volume audit, one
/// delete of 418,000 codes held the writer 34 s); rows still kept stay.
#[test]
fn a_purge_backlog_larger_than_a_batch_is_deleted_whole() {
    use crate::storage::records::PURGE_BATCH;
    use crate::storage::{IntegrationStore, ProviderEventStore, RecordStore};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("p.db"), 2).unwrap();
    let t = Tenant::sample();
    store.insert_tenant(&t, &[9; 32], 1).unwrap();
    let conn = store.conn().unwrap();
    // Rows of every required column, from the table's own description: ended (verified,
    // expired long ago) but for the last 10, which expire in the future.
    let backlog = PURGE_BATCH * 2 + 7;
    let fill = |table: &str, set: &[(&str, String)], n: u64| {
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info('{table}')"
            ))
            .unwrap();
        let info: Vec<(String, String, bool, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (name, ty, notnull, default) in info {
            if let Some((_, v)) = set.iter().find(|(c, _)| *c == name) {
                cols.push(name);
                vals.push(v.clone());
            } else if notnull && default.is_none() && name != "id" {
                cols.push(name);
                vals.push(if ty == "TEXT" {
                    "'x'".into()
                } else {
                    "0".into()
                });
            }
        }
        conn.execute(
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
                 INSERT INTO {table} ({}) SELECT {} FROM n",
                cols.join(", "),
                vals.join(", ")
            ),
            [],
        )
        .unwrap();
    };
    let tenant = format!("'{}'", t.id.as_str());
    let code = |expires: &str, seq: &str| {
        vec![
            ("key_digest", "randomblob(32)".to_string()),
            ("tenant_id", tenant.clone()),
            ("status", "'verified'".into()),
            ("expires_at", expires.to_string()),
            ("seq", seq.to_string()),
        ]
    };
    fill("challenges", &code("1000", "i"), backlog);
    fill("challenges", &code("9000000000000", "i + 1000000"), 9);
    // Expired but not yet counted as expired unverified: kept for the count.
    let mut uncounted = code("1000", "i + 2000000");
    uncounted[2].1 = "'pending'".into();
    uncounted.push(("stats_state", "1".into()));
    fill("challenges", &uncounted, 1);
    let audit = |at: &str| vec![("tenant_id", tenant.clone()), ("at", at.to_string())];
    fill("audit", &audit("1000"), backlog);
    fill("audit", &audit("9000000000000"), 10);
    // The recipients' send records and the webhooks' delivery records, likewise.
    for table in ["sends", "webhook_deliveries"] {
        fill(table, &audit("1000"), backlog);
        fill(table, &audit("9000000000000"), 10);
    }
    // The other tables that grow with traffic: each row old (1000) or to be kept (9e12).
    type Columns = &'static [(&'static str, &'static str)];
    let others: [(&str, &str, Columns); 6] = [
        ("sms_sends", "at", &[("key_digest", "randomblob(32)")]),
        ("test_inbox", "received_at", &[]),
        (
            "hosted_sessions",
            "expires_at",
            &[("id", "hex(randomblob(16))")],
        ),
        (
            "idempotency_keys",
            "expires_at",
            &[("key_digest", "randomblob(32)")],
        ),
        (
            "webhook_events",
            "created_at",
            &[("id", "hex(randomblob(16))"), ("status", "'delivered'")],
        ),
        (
            "provider_events",
            "received_at",
            &[("provider", "'ses'"), ("event_id", "hex(randomblob(16))")],
        ),
    ];
    for (table, at, extra) in others {
        for (when, n) in [("1000", backlog), ("9000000000000", 10)] {
            let mut set = vec![("tenant_id", tenant.clone()), (at, when.to_string())];
            set.extend(extra.iter().map(|(c, v)| (*c, v.to_string())));
            fill(table, &set, n);
        }
    }
    // A provider's pin is no event: it stays however old.
    fill(
        "provider_events",
        &[
            ("tenant_id", tenant.clone()),
            ("provider", "'ses-pin'".into()),
            ("event_id", "'p'".into()),
            ("received_at", "1000".into()),
        ],
        1,
    );
    let count = |table: &str| -> u64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("challenges"), backlog + 10);
    // Past a day, so a settled webhook event is old enough to go. The codes' cut-off and
    // the send records' differ, and rows between them stay: each table by its own.
    let now = 200_000_000;
    let (before, sends_before) = (now, 5_000);
    for (table, at) in [
        ("sends", "at"),
        ("sms_sends", "at"),
        ("test_inbox", "received_at"),
    ] {
        let mut set = vec![("tenant_id", tenant.clone()), (at, "6000".to_string())];
        if table == "sms_sends" {
            set.push(("key_digest", "randomblob(32)".into()));
        }
        fill(table, &set, 1);
    }
    let mut between = code("6000", "i + 3000000");
    between[2].1 = "'verified'".into();
    fill("challenges", &between, 1);
    assert_eq!(
        store.purge(before, sends_before).unwrap() as u64,
        backlog + 1
    );
    assert_eq!(store.purge_audit(now).unwrap() as u64, backlog);
    store.purge_integration(now, now).unwrap();
    store.purge_provider_events(now).unwrap();
    for table in ["challenges", "audit", "webhook_deliveries"] {
        assert_eq!(count(table), 10, "{table}");
    }
    // The send records at 6000 are past their cut-off (5000): kept.
    assert_eq!(count("sends"), 11);
    for (table, _, _) in others {
        let kept = match table {
            "provider_events" => 11,
            "sms_sends" | "test_inbox" => 11,
            _ => 10,
        };
        assert_eq!(count(table), kept, "{table}");
    }
}
