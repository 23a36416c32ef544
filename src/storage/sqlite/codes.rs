//! SQLite: codes — stored with their message (the mint's one commit: quota, code, outbox
//! row), resent, and their attempts reserved. A code's outcomes and views are written once,
//! in `storage::codes` (`CodeOutcomeStore`).

use crate::storage::sql::live_code;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::stats::Counted;
use crate::domain::Millis;
use crate::storage::cells::Cells;
use crate::storage::codes::{insert_challenge, minted_in, Inserted};
use crate::storage::codes::{reservation_from, PUSH_EARLIER};
use crate::storage::quota::{take_send, take_test_send};
use crate::storage::settle::supersede_older_than;
use crate::storage::stats::{tally_from, TALLY_COLS, TALLY_WIDTH};
use crate::storage::test_mode::{insert_inbox_in, resend_to_inbox_in};
use crate::storage::{
    AttemptAsk, CodeStore, InboxEntry, NewChallenge, Queued, QuotaChecked, Resend, ResendVia,
    Resent, Reservation, StoreError,
};

/// Queue a code's message (its send counted in the quotas at `now` when it has quotas).
fn insert_outbox_in(
    tx: &rusqlite::Connection,
    key_digest: &[u8],
    tenant: &str,
    q: &Queued,
    now: Millis,
) -> Result<(), StoreError> {
    let m = &q.outbox;
    tx.execute_cached(
        "INSERT INTO outbox (key_digest, tenant_id, recipient, payload, due_at, attempts, lease_until, leased_by, quota_at, created_at, channel, unstarted) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?5, ?9, ?10)",
        params![
            key_digest,
            tenant,
            m.recipient,
            m.payload,
            now,
            m.lease.as_ref().map(|l| now + l.for_ms),
            m.lease.as_ref().map(|l| l.owner.clone()),
            q.quota.is_some().then_some(now),
            m.channel.as_str(),
            m.lease.is_some() && m.unstarted
        ],
    )?;
    Ok(())
}

impl CodeStore for SqliteStore {
    fn insert_code(&self, c: &NewChallenge, queued: &Queued, now: Millis) -> QuotaChecked {
        let (c, queued) = (c.clone(), queued.clone());
        self.writer.write(move |tx| {
            if let Some(q) = &queued.quota {
                if let Err(r) = take_send(&mut super::Statements(tx), &c.quota_ask(q, now))? {
                    return Ok(Err(r));
                }
            }
            insert_challenge(
                &mut super::Statements(tx),
                &c,
                c.tenant_id.as_str(),
                Inserted::queued(&c),
            )?;
            insert_outbox_in(tx, &c.key_digest, c.tenant_id.as_str(), &queued, now)?;
            minted_in(&mut super::Statements(tx), &c, Counted::Minted)?;
            Ok(Ok(()))
        })
    }

    fn insert_test_code(&self, c: &NewChallenge, inbox: &InboxEntry, now: Millis) -> QuotaChecked {
        let (c, inbox) = (c.clone(), inbox.clone());
        self.writer.write(move |tx| {
            if let Err(r) = take_test_send(
                &mut super::Statements(tx),
                &c.tenant_id,
                inbox.per_hour,
                now,
            )? {
                return Ok(Err(r));
            }
            let test = Inserted::test(&c, now);
            insert_challenge(&mut super::Statements(tx), &c, c.tenant_id.as_str(), test)?;
            supersede_older_than(&mut super::Statements(tx), &c.key_digest, now)?;
            insert_inbox_in(
                &mut super::Statements(tx),
                c.tenant_id.as_str(),
                &c.key_digest,
                &inbox,
                now,
            )?;
            minted_in(&mut super::Statements(tx), &c, Counted::Test)?;
            Ok(Ok(()))
        })
    }

    fn resend_code(&self, r: &Resend, now: Millis) -> Result<Resent, StoreError> {
        let r = r.clone();
        self.writer.write(move |tx| {
            // Checked, then counted, then changed — all under the write lock, so a refusal
            // changes nothing.
            let resendable: bool = tx.query_row_cached(
                concat!(
                    "SELECT EXISTS(SELECT 1 FROM challenges c WHERE c.key_digest = ?1 AND c.tenant_id = ?2 AND ",
                    live_code!("c.", "?3"),
                    " AND c.resends < ?4 \
                     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key_digest = c.key_digest))"
                ),
                params![r.key_digest, r.tenant_id.as_str(), now, r.max_resends],
                |row| row.get(0),
            )?;
            if !resendable {
                return Ok(Resent::NotNow);
            }
            let refused = match &r.via {
                ResendVia::Inbox(inbox) => take_test_send(&mut super::Statements(tx), &r.tenant_id, inbox.per_hour, now)?,
                ResendVia::Relay(Queued { quota: Some(q), .. }) => take_send(&mut super::Statements(tx), &r.quota_ask(q, now))?,
                ResendVia::Relay(Queued { quota: None, .. }) => Ok(()),
            };
            if let Err(q) = refused {
                return Ok(Resent::Refused(q));
            }
            let test = matches!(r.via, ResendVia::Inbox(_));
            let tally = tx.query_row_cached(
                &format!(
                    "UPDATE challenges SET {PUSH_EARLIER}, code_hash = ?2, resends = resends + 1, \
                       delivery_status = CASE WHEN ?4 THEN 'sent' ELSE 'queued' END, delivery_attempts = 0, delivery_transport = NULL, \
                       delivery_reason = NULL, sent_at = CASE WHEN ?4 THEN ?3 ELSE sent_at END, \
                       test = (test OR ?4) \
                     WHERE key_digest = ?1 RETURNING {TALLY_COLS}, resends"
                ),
                params![r.key_digest, r.code_hash, now, test],
                |row| Ok(tally_from(row, 0).and_then(|t| Ok((t, row.int(TALLY_WIDTH)?)))),
            )??;
            let (tally, resends) = tally;
            match &r.via {
                ResendVia::Inbox(inbox) => {
                    resend_to_inbox_in(&mut super::Statements(tx), &tally, &r.key_digest, inbox, now)?;
                }
                ResendVia::Relay(queued) => {
                    insert_outbox_in(tx, &r.key_digest, r.tenant_id.as_str(), queued, now)?;
                }
            }
            Ok(Resent::Done {
                resends: u32::try_from(resends).unwrap_or(u32::MAX),
            })
        })
    }

    fn reserve_attempt(
        &self,
        a: &AttemptAsk,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError> {
        let (a, max_failures) = (a.clone(), a.failure_cap());
        // The attempt and the recipient's failure budget are taken together (one savepoint),
        // so neither can be overrun by concurrent guesses; a match or a release gives the
        // budget back.
        self.writer.write(move |tx| {
            let (tenant, q) = (&a.code.tenant, &a.quota);
            let res = tx
                .row_opt(
                    concat!(
                    "UPDATE challenges SET attempts = attempts + 1, attempts_open = attempts_open + 1, attempt_at = ?4, attempt_by = ?8 \
                     WHERE key_digest = ?1 AND tenant_id = ?2 AND flavor = ?3 AND ",
                    live_code!("?4"),
                    " AND code_length = ?7 \
                       AND NOT EXISTS (SELECT 1 FROM recipient_failures f WHERE f.tenant_id = challenges.tenant_id \
                           AND f.email_canonical = challenges.email_canonical AND f.failures >= MAX(?5, challenges.max_attempts) AND f.window_start + ?6 > ?4) \
                     RETURNING code_hash, attempts, max_attempts, email, email_canonical, purpose, locale, earlier_hashes, test, channel"
                    ),
                    params![a.code.key_digest, tenant.as_str(), a.code.flavor.as_str(), now, max_failures, q.recipient_window_ms, a.code_len, a.by],
                    |r| reservation_from(r),
                )?;
            if let Some(r) = &res {
                if q.max_failures > 0 {
                    tx.execute_cached(
                        "INSERT INTO recipient_failures (tenant_id, email_canonical, failures, window_start) VALUES (?1, ?2, 1, ?3) \
                         ON CONFLICT (tenant_id, email_canonical) DO UPDATE SET \
                           failures = CASE WHEN window_start + ?4 <= ?3 THEN 1 ELSE failures + 1 END, \
                           window_start = CASE WHEN window_start + ?4 <= ?3 THEN ?3 ELSE window_start END",
                        params![tenant.as_str(), r.email_canonical, now, q.recipient_window_ms],
                    )?;
                }
            }
            Ok(res)
        })
    }
}
