//! How `migrate-store` hands rows from its source to its target: in parts bounded by rows
//! and by bytes, so a copy's memory stays small whatever the installation's size.

use super::{StoreError, Table, Value};

/// What a copy's source hands its target as it reads: some rows of a table. Tables come
/// in `TABLES` order, a table's rows in one or more parts.
pub type Sink<'a> = dyn FnMut(&'static Table, Vec<Vec<Value>>) -> Result<(), StoreError> + 'a;

/// A copy's source as its target calls it: it hands every row to the sink it is given.
pub type Source<'a> = dyn FnMut(&mut Sink<'_>) -> Result<(), StoreError> + 'a;

/// A copy hands its rows over in parts of at most this many rows…
pub const PART_ROWS: usize = 1_000;
/// …or of about this many bytes (a part is handed over once it holds more), so a copy's
/// memory stays bounded whatever the installation's size (before, the whole source was
/// read into memory first: 2 GB for a 580 MB database, found by the data-volume audit).
pub const PART_BYTES: usize = 4 << 20;

/// Gathers one table's rows into parts for a [`Sink`].
pub struct Parts<'s, 'a> {
    sink: &'s mut Sink<'a>,
    table: &'static Table,
    rows: Vec<Vec<Value>>,
    bytes: usize,
}

impl<'s, 'a> Parts<'s, 'a> {
    pub fn new(sink: &'s mut Sink<'a>, table: &'static Table) -> Self {
        Parts {
            sink,
            table,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// One more row; a full part is handed over.
    pub fn push(&mut self, row: Vec<Value>) -> Result<(), StoreError> {
        self.bytes += row_size(&row);
        self.rows.push(row);
        if self.rows.len() >= PART_ROWS || self.bytes > PART_BYTES {
            self.bytes = 0;
            (self.sink)(self.table, std::mem::take(&mut self.rows))?;
        }
        Ok(())
    }

    /// The table's last rows.
    pub fn finish(mut self) -> Result<(), StoreError> {
        match self.rows.is_empty() {
            true => Ok(()),
            false => (self.sink)(self.table, std::mem::take(&mut self.rows)),
        }
    }
}

/// About how many bytes a row holds.
pub fn row_size(row: &[Value]) -> usize {
    row.iter().map(Value::size).sum()
}

impl Value {
    /// About how many bytes the value holds.
    fn size(&self) -> usize {
        match self {
            Value::Text(s) => s.len() + 24,
            Value::Blob(b) => b.len() + 24,
            _ => 16,
        }
    }
}
