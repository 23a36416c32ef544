//! PostgreSQL: codes — stored with their message (the mint's one transaction: quota locks
//! and counts, code, outbox row), resent, and their attempts reserved under row locks. A
//! code's outcomes and views are written once, in `storage::codes` (`CodeOutcomeStore`).

use crate::storage::sql::live_code;
use ::postgres::GenericClient;

use super::conn::Db;
use super::{lock_all, PgStore};
use crate::domain::stats::Counted;
use crate::domain::Millis;
use crate::storage::cells::Cells;
use crate::storage::codes::{insert_challenge, minted_in, Inserted};
use crate::storage::codes::{reservation_from, PUSH_EARLIER};
use crate::storage::quota::{
    recipient_check_first, recipient_lock, take_test_send, tenant_check_and_count,
};
use crate::storage::settle::supersede_older_than;
use crate::storage::stats::{tally_from, TALLY_COLS, TALLY_WIDTH};
use crate::storage::test_mode::{insert_inbox_in, resend_to_inbox_in};
use crate::storage::{
    AttemptAsk, CodeStore, InboxEntry, NewChallenge, Queued, QuotaChecked, Resend, ResendVia,
    Resent, Reservation, StoreError,
};

/// Queue a code's message (its send counted in the quotas at `now` when it has quotas); a sync
/// row's lease is measured on the database's clock, like every lease here.
fn insert_outbox(
    tx: &mut Db<'_, impl GenericClient>,
    key_digest: &[u8],
    tenant: &str,
    q: &Queued,
    now: Millis,
) -> Result<(), StoreError> {
    let m = &q.outbox;
    tx.execute(
        concat!(
            "INSERT INTO outbox (key_digest, tenant_id, recipient, payload, due_at, attempts, lease_until, leased_by, quota_at, created_at, channel, unstarted) \
             VALUES ($1, $2, $3, $4, $5, 0, ",
            db_now!(),
            " + $6, $7, $8, $5, $9, $10)"
        ),
        &[
            &key_digest,
            &tenant,
            &m.recipient,
            &m.payload,
            &now,
            &m.lease.as_ref().map(|l| l.for_ms),
            &m.lease.as_ref().map(|l| l.owner.as_str()),
            &q.quota.is_some().then_some(now),
            &m.channel.as_str(),
            &(m.lease.is_some() && m.unstarted),
        ],
    )?;
    Ok(())
}

impl CodeStore for PgStore {
    fn insert_code(&self, c: &NewChallenge, queued: &Queued, now: Millis) -> QuotaChecked {
        let (tenant, q) = (c.tenant_id.as_str(), queued.quota.as_ref());
        self.tx_unless_refused(|tx| {
            if let Some(q) = q {
                lock_all(tx, &[recipient_lock(&c.tenant_id, &c.email_canonical)])?;
                if let Err(r) = recipient_check_first(tx, &c.quota_ask(q, now))? {
                    return Ok(Err(r));
                }
            }
            insert_challenge(tx, c, tenant, Inserted::queued(c))?;
            insert_outbox(tx, &c.key_digest, tenant, queued, now)?;
            if let Some(q) = q {
                // The tenant's lock last; a refusal here rolls the code and its message back.
                if let Err(r) = tenant_check_and_count(tx, &c.quota_ask(q, now))? {
                    return Ok(Err(r));
                }
            }
            minted_in(tx, c, Counted::Minted)?;
            Ok(Ok(()))
        })
    }

    fn insert_test_code(&self, c: &NewChallenge, inbox: &InboxEntry, now: Millis) -> QuotaChecked {
        let tenant = c.tenant_id.as_str();
        self.tx_unless_refused(|tx| {
            // The group's lock (taken here) before the tenant's test lock.
            insert_challenge(tx, c, tenant, Inserted::test(c, now))?;
            // The group's lock was taken by the insert.
            supersede_older_than(tx, &c.key_digest, now)?;
            if let Err(r) = take_test_send(tx, &c.tenant_id, inbox.per_hour, now)? {
                return Ok(Err(r));
            }
            insert_inbox_in(tx, tenant, &c.key_digest, inbox, now)?;
            minted_in(tx, c, Counted::Test)?;
            Ok(Ok(()))
        })
    }

    fn resend_code(&self, r: &Resend, now: Millis) -> Result<Resent, StoreError> {
        let t = r.tenant_id.as_str();
        let test = matches!(r.via, ResendVia::Inbox(_));
        let out = self.tx_unless_refused(|tx| {
            // Locks in the order every mint takes them: the recipient's, the code's row,
            // then the tenant's (its quota or its test sends).
            if let ResendVia::Relay(Queued { quota: Some(_), .. }) = &r.via {
                lock_all(tx, &[recipient_lock(&r.tenant_id, &r.recipient)])?;
            }
            // The key's row first, in a statement of its own: the change below then reads
            // the outbox as it is once a concurrent resend of the key committed (its own
            // snapshot starts after this lock), so two resends never both queue a message.
            tx.execute(
                "SELECT 1 FROM challenges WHERE key_digest = $1 AND tenant_id = $2 FOR UPDATE",
                &[&r.key_digest, &t],
            )?;
            let tally = tx.row_opt(
                &format!(
                    "UPDATE challenges c SET {PUSH_EARLIER}, code_hash = $3, resends = resends + 1, \
                       delivery_status = CASE WHEN $6 THEN 'sent' ELSE 'queued' END, delivery_attempts = 0, delivery_transport = NULL, \
                       delivery_reason = NULL, sent_at = CASE WHEN $6 THEN $4 ELSE sent_at END, \
                       test = (test OR $6) \
                     WHERE key_digest = $1 AND tenant_id = $2 AND {live} AND resends < $5 \
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.key_digest = c.key_digest) \
                     RETURNING {TALLY_COLS}, resends",
                    live = live_code!("$4")
                ),
                &[&r.key_digest, &t, &r.code_hash, &now, &i64::from(r.max_resends), &test],
                |row| Ok((tally_from(row, 0)?, row.int(TALLY_WIDTH)?)),
            )?;
            let Some((tally, resends)) = tally else {
                return Ok(Ok(Resent::NotNow));
            };
            match &r.via {
                ResendVia::Inbox(inbox) => {
                    if let Err(q) = take_test_send(tx, &r.tenant_id, inbox.per_hour, now)? {
                        return Ok(Err(q));
                    }
                    resend_to_inbox_in(tx, &tally, &r.key_digest, inbox, now)?;
                }
                ResendVia::Relay(queued) => {
                    if let Some(q) = &queued.quota {
                        let ask = r.quota_ask(q, now);
                        if let Err(x) = recipient_check_first(tx, &ask)? {
                            return Ok(Err(x));
                        }
                        if let Err(x) = tenant_check_and_count(tx, &ask)? {
                            return Ok(Err(x));
                        }
                    }
                    insert_outbox(tx, &r.key_digest, t, queued, now)?;
                }
            }
            Ok(Ok(Resent::Done {
                resends: u32::try_from(resends).unwrap_or(u32::MAX),
            }))
        })?;
        // A refusal rolled the resend back whole.
        Ok(out.unwrap_or_else(Resent::Refused))
    }

    fn reserve_attempt(
        &self,
        a: &AttemptAsk,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError> {
        let (t, q, key_digest) = (a.code.tenant.as_str(), &a.quota, &a.code.key_digest);
        let max_failures = a.failure_cap();
        self.tx(|tx| {
            if q.max_failures > 0 {
                // The recipient's failure budget is shared by all its codes: take its lock
                // (the same one a mint's quota check takes) before reading it.
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('r' || chr(31) || tenant_id || chr(31) || email_canonical, 0)) \
                     FROM challenges WHERE key_digest = $1 AND tenant_id = $2",
                    &[key_digest, &t],
                )?;
            }
            // The row lock of the UPDATE serialises guesses on one key: a concurrent guess
            // re-checks `attempts < max_attempts` on the committed row.
            let row = tx.query_opt(
                concat!(
                "UPDATE challenges c SET attempts = attempts + 1, attempts_open = attempts_open + 1, attempt_at = $4, attempt_by = $8 \
                 WHERE key_digest = $1 AND tenant_id = $2 AND flavor = $3 AND ",
                live_code!("$4"),
                " AND code_length = $7 \
                   AND NOT EXISTS (SELECT 1 FROM recipient_failures f WHERE f.tenant_id = c.tenant_id \
                       AND f.email_canonical = c.email_canonical AND f.failures >= GREATEST($5, c.max_attempts) AND f.window_start + $6 > $4) \
                 RETURNING code_hash, attempts, max_attempts, email, email_canonical, purpose, locale, earlier_hashes, test, channel"
                ),
                &[key_digest, &t, &a.code.flavor.as_str(), &now, &max_failures, &q.recipient_window_ms, &i64::from(a.code_len), &a.by],
            )?;
            let Some(row) = row else { return Ok(None) };
            let res = reservation_from(&row)?;
            if q.max_failures > 0 {
                tx.execute(
                    "INSERT INTO recipient_failures (tenant_id, email_canonical, failures, window_start) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (tenant_id, email_canonical) DO UPDATE SET \
                       failures = CASE WHEN recipient_failures.window_start + $4 <= $3 THEN 1 ELSE recipient_failures.failures + 1 END, \
                       window_start = CASE WHEN recipient_failures.window_start + $4 <= $3 THEN $3 ELSE recipient_failures.window_start END",
                    &[&t, &res.email_canonical, &now, &q.recipient_window_ms],
                )?;
            }
            Ok(Some(res))
        })
    }
}
