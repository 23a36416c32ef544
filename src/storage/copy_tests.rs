//! `storage/copy.rs`'s unit tests: the table list against the schema.
use super::*;

/// Every table of the schema is copied, with every column: a table or column a
/// migration adds and this list leaves out would be lost by `migrate-store`.
#[test]
fn every_table_and_column_of_the_schema_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::storage::sqlite::SqliteStore::open(&dir.path().join("c.db"), 1).unwrap();
    let c = rusqlite::Connection::open(dir.path().join("c.db")).unwrap();
    drop(store);
    let mut st = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> 'refinery_schema_history'",
        )
        .unwrap();
    let tables: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables.len(), TABLES.len(), "{tables:?}");
    for name in &tables {
        let t = TABLES
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} is not copied"));
        let mut cols = c
            .prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))
            .unwrap();
        let cols: Vec<String> = cols
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for col in &cols {
            assert!(
                t.columns.iter().any(|(c, _)| c == col),
                "{name}.{col} is not copied"
            );
        }
    }
}

#[test]
fn parents_come_before_their_children() {
    let pos = |n: &str| TABLES.iter().position(|t| t.name == n).unwrap();
    assert!(pos("tenants") < pos("tenant_secrets"));
    assert!(pos("tenants") < pos("challenges"));
    assert!(pos("challenges") < pos("outbox"));
    assert!(pos("tenants") < pos("audit"));
    assert!(pos("tenants") < pos("templates"));
    assert_eq!(
        TABLES[0].column_list(),
        "kind, version, wrapped, kek_id, active, created_at"
    );
}
