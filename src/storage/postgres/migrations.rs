//! PostgreSQL migrations (refinery, `migrations/postgres/`): every pending one in one
//! transaction with its record, run again when a deadlock with an earlier version's
//! instance broke it, and a failure named with the database's own words.

use std::time::Duration;

use crate::storage::StoreError;

/// How often a migration that another session's locks broke (a deadlock with an instance
/// of an earlier version still serving, during a rolling upgrade) is run again.
const MIGRATION_TRIES: u32 = 5;

/// Run the migrations not yet applied, all in one transaction with their records (refinery
/// otherwise commits a migration and its record apart: a stop between the two would leave a
/// schema that the next start fails to migrate again). A run that a deadlock broke is run
/// again; any other failure names the migrations and the database's own words.
pub(super) fn run(conn: &mut ::postgres::Client) -> Result<refinery::Report, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut runner = embedded::migrations::runner().set_grouped(true);
        let e = match runner
            .set_migration_table_name("otpmint_schema_history")
            .run(conn)
        {
            Ok(report) => return Ok(report),
            Err(e) => e,
        };
        let db = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<::postgres::Error>())
            .and_then(::postgres::Error::as_db_error);
        let deadlock =
            db.is_some_and(|d| d.code() == &::postgres::error::SqlState::T_R_DEADLOCK_DETECTED);
        let failed = pending_migrations(conn);
        if deadlock && tries < MIGRATION_TRIES {
            tracing::warn!(migrations = %failed, tries, "migrating was broken by a deadlock with another session (an instance of an earlier version still serving?); running it again");
            std::thread::sleep(Duration::from_millis(500 * u64::from(tries)));
            continue;
        }
        let said = match db {
            Some(d) => format!("{} ({})", d.message(), d.code().code()),
            None => e.to_string(),
        };
        let hint = if deadlock {
            ": other sessions kept breaking it (instances of an earlier version still serving); nothing was changed, start again"
        } else {
            ""
        };
        return Err(StoreError::Migration(format!(
            "{failed} failed: {said}{hint}"
        )));
    }
}

/// The migrations the database has not applied (a failed run applied none of them).
fn pending_migrations(conn: &mut ::postgres::Client) -> String {
    let applied: Option<i64> = conn
        .query_one(
            "SELECT MAX(version)::BIGINT FROM otpmint_schema_history",
            &[],
        )
        .ok()
        .and_then(|r| r.get(0));
    let runner = embedded::migrations::runner();
    let pending: Vec<_> = runner
        .get_migrations()
        .iter()
        .filter(|m| i64::from(m.version()) > applied.unwrap_or(0))
        .collect();
    match pending.as_slice() {
        [] => "migrating".to_string(),
        [one] => format!("migration {one}"),
        [first, .., last] => format!("migrations {first} to {last} (none applied)"),
    }
}

/// This version's migrations.
pub(super) fn runner() -> refinery::Runner {
    embedded::migrations::runner()
}

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}
