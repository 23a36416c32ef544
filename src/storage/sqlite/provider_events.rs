//! SQLite: provider events, each applied once in one write (the rules are
//! `storage::provider_events`'s).

use crate::storage::sql;
use rusqlite::params;

use super::integration::insert_event_in;
use super::stats::{bump_in, count_in};
use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::stats::CodeDims;
use crate::domain::Millis;
use crate::storage::provider_events::{EventApplied, EventEffect, VerifiedWith};
use crate::storage::stats::{tally_from, Bump};
use crate::storage::{ProviderEventStore, StoreError};

impl ProviderEventStore for SqliteStore {
    fn record_provider_event(
        &self,
        tenant: &TenantId,
        provider: &str,
        event_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (t, p, id) = (tenant.clone(), provider.to_string(), event_id.to_string());
        self.writer.write(move |tx| {
            Ok(tx.execute_cached(
                sql::provider_events::SEEN.sqlite,
                params![t.as_str(), p, id, now],
            )? == 1)
        })
    }

    fn apply_provider_event(&self, e: &EventEffect) -> Result<EventApplied, StoreError> {
        use rusqlite::OptionalExtension;
        let e = e.clone();
        self.writer.write(move |tx| {
            let t = e.tenant.as_str();
            if let Some(w) = &e.verified_with {
                let now = tx
                    .query_row_cached(sql::provider_events::VERIFIED_WITH.sqlite, [t], |r| {
                        Ok(VerifiedWith {
                            row_version: r.get(0)?,
                            webhook_events: r.get(1)?,
                        })
                    })
                    .optional()?;
                if now.as_ref() != Some(w) {
                    return Ok(EventApplied::Stale);
                }
            }
            if tx.execute_cached(
                sql::provider_events::SEEN.sqlite,
                params![t, e.provider, e.event_id, e.now],
            )? == 0
            {
                return Ok(EventApplied::Seen);
            }
            let s = &e.suppression;
            if tx.execute_cached(
                sql::suppressions::INSERT.sqlite,
                params![t, s.recipient, s.reason.as_str(), s.source, s.created_at],
            )? == 1
            {
                tx.execute_cached(sql::suppressions::COUNT_UP.sqlite, [t])?;
            }
            let tallies = match &e.message_id {
                Some(m) => tx.rows(
                    sql::provider_events::MARK_BOUNCED.sqlite,
                    params![t, m],
                    |r| tally_from(r, 0),
                )?,
                None => Vec::new(),
            };
            match tallies.first() {
                Some(tally) => count_in(tx, tally, e.counted)?,
                None => bump_in(
                    tx,
                    &Bump {
                        tenant: t,
                        created_at: e.now,
                        dims: &CodeDims::of("", None, "email", &s.recipient),
                        what: e.counted,
                    },
                )?,
            }
            if let Some(ev) = &e.webhook {
                insert_event_in(tx, ev)?;
            }
            Ok(EventApplied::Applied)
        })
    }

    fn provider_pin(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()?
            .query_row_cached(
                sql::provider_events::PIN.sqlite,
                params![tenant.as_str(), provider],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn purge_provider_events(&self, before: Millis) -> Result<usize, StoreError> {
        self.writer
            .write(move |tx| Ok(tx.execute_cached(sql::provider_events::PURGE.sqlite, [before])?))
    }
}
