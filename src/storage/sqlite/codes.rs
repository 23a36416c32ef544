//! SQLite: codes — attempts reserved and given back, verify, status, cancel — and the quota
//! and failure-budget reads and writes around them.

use super::*;

impl SqliteStore {
    pub(super) fn do_reserve_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        code_len: u32,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Reservation>, StoreError> {
        let (tenant, key_digest, q) = (tenant.clone(), key_digest.to_vec(), *q);
        let max_failures: i64 = if q.max_failures == 0 {
            i64::MAX
        } else {
            q.max_failures.into()
        };
        // The attempt and the recipient's failure budget are taken together (one savepoint),
        // so neither can be overrun by concurrent guesses; a match or a release gives the
        // budget back.
        self.writer.write(move |tx| {
            let res = tx
                .query_row_cached(
                    "UPDATE challenges SET attempts = attempts + 1 \
                     WHERE key_digest = ?1 AND tenant_id = ?2 AND flavor = ?3 AND status = 'pending' \
                       AND attempts < max_attempts AND expires_at > ?4 AND code_length = ?7 \
                       AND NOT EXISTS (SELECT 1 FROM recipient_failures f WHERE f.tenant_id = challenges.tenant_id \
                           AND f.email_canonical = challenges.email_canonical AND f.failures >= ?5 AND f.window_start + ?6 > ?4) \
                     RETURNING code_hash, attempts, max_attempts, email, email_canonical, purpose, locale",
                    params![key_digest, tenant.as_str(), flavor.as_str(), now, max_failures, q.recipient_window_ms, code_len],
                    |r| {
                        Ok(Reservation {
                            code_hash: r.get(0)?,
                            attempts: r.get(1)?,
                            max_attempts: r.get(2)?,
                            email: r.get(3)?,
                            email_canonical: r.get(4)?,
                            purpose: r.get(5)?,
                            locale: r.get(6)?,
                        })
                    },
                )
                .optional()?;
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

    pub(super) fn do_release_attempt(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        recipient: &str,
    ) -> Result<(), StoreError> {
        let (tenant, key_digest, recipient) =
            (tenant.clone(), key_digest.to_vec(), recipient.to_string());
        self.writer.write(move |tx| {
            tx.execute_cached(
                "UPDATE challenges SET attempts = attempts - 1 WHERE key_digest = ?1 AND tenant_id = ?2 AND attempts > 0",
                params![key_digest, tenant.as_str()],
            )?;
            tx.execute_cached(
                "UPDATE recipient_failures SET failures = failures - 1 WHERE tenant_id = ?1 AND email_canonical = ?2 AND failures > 0",
                params![tenant.as_str(), recipient],
            )?;
            Ok(())
        })
    }

    pub(super) fn do_finish_verify(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        now: Millis,
        event: Option<&NewEvent>,
        clear_failures_of: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (tenant, key_digest, event) = (tenant.clone(), key_digest.to_vec(), event.cloned());
        let clear = clear_failures_of.map(str::to_string);
        self.writer.write(move |conn| {
            let n = conn.execute_cached(
                "UPDATE challenges SET status = 'verified', verified_at = ?3, ended_at = ?3 \
                 WHERE key_digest = ?1 AND tenant_id = ?2 AND status = 'pending' AND expires_at > ?3",
                params![key_digest, tenant.as_str(), now],
            )?;
            if n == 1 {
                if let Some(e) = &event {
                    integration::insert_event_in(conn, e)?;
                }
                if let Some(r) = &clear {
                    conn.execute_cached(
                        "DELETE FROM recipient_failures WHERE tenant_id = ?1 AND email_canonical = ?2",
                        params![tenant.as_str(), r],
                    )?;
                }
            }
            Ok(n == 1)
        })
    }

    pub(super) fn do_challenge_owner(
        &self,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<TenantId>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row_cached(
                "SELECT c.tenant_id FROM challenges c JOIN tenants t ON t.id = c.tenant_id \
                 WHERE c.key_digest = ?1 AND c.flavor = ?2 AND t.enabled = 1",
                params![key_digest, flavor.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(TenantId::from_trusted))
    }

    pub(super) fn do_challenge(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
    ) -> Result<Option<ChallengeView>, StoreError> {
        let conn = self.conn()?;
        let v = conn
            .query_row_cached(
                &format!("SELECT {VIEW_COLS} FROM challenges WHERE key_digest = ?1 AND tenant_id = ?2 AND flavor = ?3"),
                params![key_digest, tenant.as_str(), flavor.as_str()],
                view_from_row,
            )
            .optional()?;
        finish_view(v)
    }

    pub(super) fn do_cancel(
        &self,
        tenant: &TenantId,
        key_digest: &[u8],
        flavor: Flavor,
        now: Millis,
    ) -> Result<Option<(bool, ChallengeView)>, StoreError> {
        let (tenant, key_digest) = (tenant.clone(), key_digest.to_vec());
        self.writer.write(move |tx| {
            let n = tx.execute_cached(
                "UPDATE challenges SET status = 'cancelled', ended_at = ?4 WHERE key_digest = ?1 AND tenant_id = ?2 \
                 AND flavor = ?3 AND status = 'pending' AND expires_at > ?4 AND attempts < max_attempts",
                params![key_digest, tenant.as_str(), flavor.as_str(), now],
            )?;
            let v = tx
                .query_row_cached(
                    &format!("SELECT {VIEW_COLS} FROM challenges WHERE key_digest = ?1 AND tenant_id = ?2 AND flavor = ?3"),
                    params![key_digest, tenant.as_str(), flavor.as_str()],
                    view_from_row,
                )
                .optional()?;
            Ok(finish_view(v)?.map(|v| (n == 1, v)))
        })
    }

    pub(super) fn do_take_send(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        let (tenant, recipient, q) = (tenant.clone(), recipient.to_string(), *q);
        self.writer
            .write(move |tx| take_send_in(tx, &tenant, &recipient, &q, now))
    }

    pub(super) fn do_check_quota(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Result<(), QuotaRefusal>, StoreError> {
        let conn = self.conn()?;
        quota_check(&conn, tenant, recipient, q, now)
    }

    pub(super) fn do_failures_blocked(
        &self,
        tenant: &TenantId,
        recipient: &str,
        q: &SendQuota,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        if q.max_failures == 0 {
            return Ok(None);
        }
        let conn = self.conn()?;
        let row: Option<(i64, Millis)> = conn
            .query_row_cached(
                "SELECT failures, window_start FROM recipient_failures WHERE tenant_id = ?1 AND email_canonical = ?2",
                params![tenant.as_str(), recipient],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(f, start)| q.failures_until(f, start, now)))
    }
}
