//! The SQLite store's unit tests of its records: the export and copy of `migrate-store`,
//! the backup and the retention purge.

#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use crate::domain::tenant::Tenant;
use crate::storage::TenantStore;

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
    // The copy was made under another name and given PATH whole: nothing else is left
    // beside it, after a backup made or refused.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("live.db"))
        .collect();
    names.sort();
    assert_eq!(names, ["copy.db", "link.db"]);
    // The copy is a database of its own: no WAL, no journal beside it, whole.
    let c = rusqlite::Connection::open(&copy).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
}

/// A whole copy gets its name only where nothing took it meanwhile, and leaves no second
/// name behind.
#[test]
fn a_whole_copy_is_named_only_where_the_name_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let (partial, path) = (dir.path().join(".b.partial"), dir.path().join("b.db"));
    std::fs::write(&partial, b"copy").unwrap();
    super::records::give_name(&partial, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"copy");
    assert!(!partial.exists());
    std::fs::write(&partial, b"second").unwrap();
    assert!(matches!(
        super::records::give_name(&partial, &path),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"copy", "the first is kept");
}

/// The name a backup is made under until it is whole is hidden beside PATH, its own for
/// each backup.
#[test]
fn a_backup_is_made_under_a_partial_name_of_its_own() {
    let p = std::path::Path::new("/var/backups/otpmint.db");
    let (a, b) = (
        super::records::partial_name(p),
        super::records::partial_name(p),
    );
    assert_ne!(a, b);
    for x in [a, b] {
        let name = x.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            x.parent() == p.parent()
                && name.starts_with(".otpmint.db.")
                && name.ends_with(".partial"),
            "{x:?}"
        );
    }
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

/// A number trusted by the SMS guard is kept for its tenant's `sms.trusted_days`, no longer:
/// at once gone when they are 0 (found by the privacy audit: every number kept ten years).
#[test]
fn trusted_numbers_are_kept_for_their_tenants_trusted_days_only() {
    use crate::storage::SmsGuardStore;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), 2).unwrap();
    let (a, b) = (Tenant::sample(), Tenant::sample());
    store.insert_tenant(&a, &[9; 32], 1).unwrap();
    store.insert_tenant(&b, &[8; 32], 1).unwrap();
    let day = 86_400_000i64;
    let now = 1_000 * day;
    let conn = store.conn().unwrap();
    conn.execute(
        "UPDATE tenants SET sms_trusted_days = CASE id WHEN ?1 THEN 0 ELSE 90 END",
        [a.id.as_str()],
    )
    .unwrap();
    for (tenant, phone, at) in [
        (&a, "+4915100000001", now - day),
        (&b, "+4915100000002", now - day),
        (&b, "+4915100000003", now - 91 * day),
    ] {
        conn.execute(
            "INSERT INTO sms_trusted (tenant_id, phone, verified_at) VALUES (?1, ?2, ?3)",
            (tenant.id.as_str(), phone, at),
        )
        .unwrap();
    }
    assert_eq!(store.purge_trusted(now).unwrap(), 2);
    let mut left: Vec<String> = conn
        .prepare("SELECT phone FROM sms_trusted")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    left.sort();
    assert_eq!(left, ["+4915100000002"]);
}
