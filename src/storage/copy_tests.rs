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

/// A table is handed over in parts bounded by rows and by bytes (a part goes once it
/// holds more than `PART_BYTES`, so at most one row past it), in order, nothing lost.
#[test]
fn rows_go_over_in_parts_bounded_by_count_and_by_bytes() {
    let table = &TABLES[0];
    let mut parts: Vec<(usize, usize)> = Vec::new();
    let mut seen = Vec::new();
    let mut sink = |t: &'static Table, rows: Vec<Vec<Value>>| {
        assert_eq!(t.name, table.name);
        parts.push((rows.len(), rows.iter().map(|r| row_size(r)).sum()));
        seen.extend(rows.into_iter().map(|r| r[0].clone()));
        Ok(())
    };
    // Small rows: parts of PART_ROWS.
    let mut p = Parts::new(&mut sink, table);
    for i in 0..(PART_ROWS * 2 + 5) {
        p.push(vec![Value::Int(i as i64)]).unwrap();
    }
    p.finish().unwrap();
    // Large rows: parts of about PART_BYTES.
    let big = PART_BYTES / 3 + 1;
    let mut p = Parts::new(&mut sink, table);
    for i in 0..10 {
        p.push(vec![Value::Int(i), Value::Blob(vec![7; big])])
            .unwrap();
    }
    p.finish().unwrap();
    let small: Vec<usize> = parts.iter().take(3).map(|p| p.0).collect();
    assert_eq!(small, [PART_ROWS, PART_ROWS, 5]);
    let large = &parts[3..];
    assert!(large.len() >= 3, "{large:?}");
    for (rows, bytes) in large {
        assert!(
            *rows <= 4 && *bytes <= PART_BYTES + big + 64,
            "{rows} rows, {bytes} bytes"
        );
    }
    assert_eq!(large.iter().map(|p| p.0).sum::<usize>(), 10);
    // Every row once, in order.
    let mut want: Vec<Value> = (0..(PART_ROWS * 2 + 5) as i64).map(Value::Int).collect();
    want.extend((0..10).map(Value::Int));
    assert_eq!(seen, want);
}
