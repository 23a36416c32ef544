//! PostgreSQL: provider events, each applied once in one transaction (the rules are
//! `storage::provider_events`'s).

use super::integration::insert_event_in;
use super::stats::{bump_in, count_in};
use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::stats::CodeDims;
use crate::domain::Millis;
use crate::storage::provider_events::{EventApplied, EventEffect, VerifiedWith};
use crate::storage::sql;
use crate::storage::stats::{tally_from, Bump};
use crate::storage::{ProviderEventStore, StoreError};

impl ProviderEventStore for PgStore {
    fn record_provider_event(
        &self,
        tenant: &TenantId,
        provider: &str,
        event_id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        Ok(self.conn()?.db().execute(
            sql::provider_events::SEEN.pg,
            &[&tenant.as_str(), &provider, &event_id, &now],
        )? == 1)
    }

    fn apply_provider_event(&self, e: &EventEffect) -> Result<EventApplied, StoreError> {
        let t = e.tenant.as_str();
        self.tx(|tx| {
            if let Some(w) = &e.verified_with {
                // No row lock: one taken here, before the suppression's count updates the same
                // row, would deadlock concurrent events of the tenant. A change committed
                // while this runs is ordered after the event, as if it had come a moment later.
                let now = tx.row_opt(sql::provider_events::VERIFIED_WITH.pg, &[&t], |r| {
                    Ok(VerifiedWith {
                        row_version: r.try_get(0)?,
                        webhook_events: r.try_get(1)?,
                    })
                })?;
                if now.as_ref() != Some(w) {
                    return Ok(EventApplied::Stale);
                }
            }
            if tx.execute(
                sql::provider_events::SEEN.pg,
                &[&t, &e.provider, &e.event_id, &e.now],
            )? == 0
            {
                return Ok(EventApplied::Seen);
            }
            let s = &e.suppression;
            if tx.execute(
                sql::suppressions::INSERT.pg,
                &[
                    &t,
                    &s.recipient,
                    &s.reason.as_str(),
                    &s.source,
                    &s.created_at,
                ],
            )? == 1
            {
                tx.execute(sql::suppressions::COUNT_UP.pg, &[&t])?;
            }
            let tallies = match &e.message_id {
                Some(m) => tx.rows(sql::provider_events::MARK_BOUNCED.pg, &[&t, m], |r| {
                    tally_from(r, 0)
                })?,
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
        Ok(self
            .conn()?
            .db()
            .query_opt(sql::provider_events::PIN.pg, &[&tenant.as_str(), &provider])?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?)
    }

    fn purge_provider_events(&self, before: Millis) -> Result<usize, StoreError> {
        Ok(self
            .conn()?
            .db()
            .execute(sql::provider_events::PURGE.pg, &[&before])? as usize)
    }
}
