//! SQLite: test recipients and the test inbox.

use crate::storage::sql;
use rusqlite::params;

use super::{CachedSql, SqliteStore};
use crate::domain::keys::TenantId;
use crate::domain::test_mode::{TestRecipient, INBOX_KEPT};
use crate::domain::Millis;
use crate::storage::cells::{inbox_row_from, test_recipient_from};
use crate::storage::{InboxEntry, InboxRow, StoreError, TestStore};

/// Put a test message in the tenant's inbox, which keeps its last `INBOX_KEPT`.
pub(super) fn insert_inbox_in(
    tx: &rusqlite::Connection,
    tenant: &str,
    key_digest: &[u8],
    e: &InboxEntry,
    now: Millis,
) -> Result<(), StoreError> {
    tx.execute_cached(
        sql::test_mode::INSERT_INBOX.sqlite,
        params![tenant, key_digest, e.recipient, e.payload, now],
    )?;
    tx.execute_cached(
        sql::test_mode::TRIM_INBOX.sqlite,
        params![tenant, INBOX_KEPT],
    )?;
    Ok(())
}

impl TestStore for SqliteStore {
    fn test_code_failed(
        &self,
        tenant: &TenantId,
        recipient: &str,
        code_hash: &str,
        max: u32,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (tenant, recipient, hash) =
            (tenant.clone(), recipient.to_string(), code_hash.to_string());
        self.writer.write(move |tx| {
            let disabled: Option<Option<i64>> = tx.row_opt(
                sql::test_mode::CODE_FAILED.sqlite,
                params![tenant.as_str(), recipient, hash, max, now],
                |r| Ok(r.get(0)?),
            )?;
            let now_inert = matches!(disabled, Some(Some(_)));
            if now_inert {
                tx.execute_cached(sql::test_mode::BUMP_TEST_VERSION.sqlite, [tenant.as_str()])?;
            }
            Ok(now_inert)
        })
    }

    fn test_recipients(&self, tenant: &TenantId) -> Result<Vec<TestRecipient>, StoreError> {
        self.conn()?.rows(
            sql::test_mode::TEST_RECIPIENTS.sqlite,
            [tenant.as_str()],
            |r| test_recipient_from(r),
        )
    }

    fn put_test_recipients(
        &self,
        tenant: &TenantId,
        list: &[TestRecipient],
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        let (tenant, list) = (tenant.clone(), list.to_vec());
        self.writer.write(move |tx| {
            let version: Option<i64> = tx.row_opt(
                sql::test_mode::NEW_TEST_VERSION.sqlite,
                [tenant.as_str()],
                |r| Ok(r.get(0)?),
            )?;
            if version.is_none() {
                return Ok(None);
            }
            tx.execute_cached(
                sql::test_mode::CLEAR_TEST_RECIPIENTS.sqlite,
                [tenant.as_str()],
            )?;
            for (i, t) in list.iter().enumerate() {
                tx.execute_cached(
                    sql::test_mode::ADD_TEST_RECIPIENT.sqlite,
                    params![
                        tenant.as_str(),
                        t.pattern.as_str(),
                        t.fixed.as_ref().map(|f| f.hash.as_str()),
                        t.fixed.as_ref().map(|f| f.length),
                        t.expires_at,
                        // The list's order, kept.
                        now + i as i64
                    ],
                )?;
            }
            Ok(version)
        })
    }

    fn test_inbox(
        &self,
        tenant: &TenantId,
        recipient: Option<&str>,
        since: Millis,
    ) -> Result<Vec<InboxRow>, StoreError> {
        self.conn()?.rows(
            sql::test_mode::INBOX.sqlite,
            params![tenant.as_str(), since, recipient, INBOX_KEPT],
            |r| inbox_row_from(r),
        )
    }
}
