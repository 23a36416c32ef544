//! PostgreSQL: test recipients and the test inbox.

use crate::storage::sql;
use ::postgres::GenericClient;

use super::conn::Db;
use super::PgStore;
use crate::domain::keys::TenantId;
use crate::domain::test_mode::{TestRecipient, INBOX_KEPT};
use crate::domain::Millis;
use crate::storage::cells::{inbox_row_from, test_recipient_from};
use crate::storage::{InboxEntry, InboxRow, StoreError, TestStore};

const KEPT: i64 = INBOX_KEPT as i64;

/// Put a test message in the tenant's inbox, which keeps its last `INBOX_KEPT` (callers
/// hold the tenant's test-sends lock, so trims of one inbox do not race).
pub(super) fn insert_inbox_in(
    tx: &mut Db<'_, impl GenericClient>,
    tenant: &str,
    key_digest: &[u8],
    e: &InboxEntry,
    now: Millis,
) -> Result<(), StoreError> {
    tx.execute(
        sql::test_mode::INSERT_INBOX.pg,
        &[&tenant, &key_digest, &e.recipient, &e.payload, &now],
    )?;
    tx.execute(sql::test_mode::TRIM_INBOX.pg, &[&tenant, &KEPT])?;
    Ok(())
}

impl TestStore for PgStore {
    fn test_code_failed(
        &self,
        tenant: &TenantId,
        recipient: &str,
        code_hash: &str,
        max: u32,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            // `failures` is an INTEGER: the budget goes as one.
            let max = i32::try_from(max).unwrap_or(i32::MAX);
            let row = tx.query_opt(
                sql::test_mode::CODE_FAILED.pg,
                &[&t, &recipient, &code_hash, &max, &now],
            )?;
            let now_inert = match row {
                Some(r) => r.try_get::<_, Option<i64>>(0)?.is_some(),
                None => false,
            };
            if now_inert {
                tx.execute(sql::test_mode::BUMP_TEST_VERSION.pg, &[&t])?;
            }
            Ok(now_inert)
        })
    }

    fn test_recipients(&self, tenant: &TenantId) -> Result<Vec<TestRecipient>, StoreError> {
        self.conn()?.db().rows(
            sql::test_mode::TEST_RECIPIENTS.pg,
            &[&tenant.as_str()],
            test_recipient_from,
        )
    }

    fn put_test_recipients(
        &self,
        tenant: &TenantId,
        list: &[TestRecipient],
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        let t = tenant.as_str();
        self.tx(|tx| {
            // The tenant's row lock serialises changes of its list.
            let Some(row) = tx.query_opt(sql::test_mode::NEW_TEST_VERSION.pg, &[&t])? else {
                return Ok(None);
            };
            tx.execute(sql::test_mode::CLEAR_TEST_RECIPIENTS.pg, &[&t])?;
            for (i, r) in list.iter().enumerate() {
                tx.execute(
                    sql::test_mode::ADD_TEST_RECIPIENT.pg,
                    &[
                        &t,
                        &r.pattern.as_str(),
                        &r.fixed.as_ref().map(|f| f.hash.as_str()),
                        &r.fixed.as_ref().map(|f| i64::from(f.length)),
                        &r.expires_at,
                        // The list's order, kept.
                        &(now + i as i64),
                    ],
                )?;
            }
            Ok(Some(row.try_get(0)?))
        })
    }

    fn test_inbox(
        &self,
        tenant: &TenantId,
        recipient: Option<&str>,
        since: Millis,
    ) -> Result<Vec<InboxRow>, StoreError> {
        self.conn()?.db().rows(
            sql::test_mode::INBOX.pg,
            &[&tenant.as_str(), &since, &recipient, &KEPT],
            inbox_row_from,
        )
    }
}
