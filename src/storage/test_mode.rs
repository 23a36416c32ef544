//! The test-mode aggregate (API.md §13.1–13.2): a tenant's test recipients and its test
//! inbox. Test codes themselves are codes (see `CodeStore::insert_test_code`).

use super::cells::{inbox_row_from, test_recipient_from};
use super::engine::{args, Engine, Exec};
use super::sql::{test_mode as sql, Arg};
use super::stats::{bump_in, Bump, Tally};
use super::StoreError;
use crate::domain::keys::TenantId;
use crate::domain::stats::Counted;
use crate::domain::test_mode::{TestRecipient, INBOX_KEPT};
use crate::domain::Millis;

/// A message for the test inbox, stored with its code.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    /// The recipient's canonical form (what `?to=` is compared with).
    pub recipient: String,
    /// The rendered message, sealed with the data key and bound to the code's key, like an
    /// outbox row.
    pub payload: Vec<u8>,
    /// The test sends a tenant may make per hour (`limits.test_sends_per_hour`; 0: no
    /// limit).
    pub per_hour: u32,
}

/// The fixed codes among a test key's codes ([`TestStore::fixed_test_codes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestGuess {
    /// A live entry's fixed code: a wrong guess counts against that entry's budget.
    pub live: Option<String>,
    /// Inert entries' fixed codes: no guess matches them any more, on any key.
    pub dead: Vec<String>,
}

/// A message read back from the test inbox.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub key_digest: Vec<u8>,
    pub payload: Vec<u8>,
    pub received_at: Millis,
}

pub trait TestStore {
    /// The tenant's test recipients, expired ones included (they are inert, and shown).
    fn test_recipients(&self, tenant: &TenantId) -> Result<Vec<TestRecipient>, StoreError>;
    /// Replace the tenant's test recipients and bump its `test_version`; `None`: no such
    /// tenant.
    fn put_test_recipients(
        &self,
        tenant: &TenantId,
        list: &[TestRecipient],
        now: Millis,
    ) -> Result<Option<i64>, StoreError>;
    /// The fixed codes among a test key's codes `hashes` (API.md §17.3): those of
    /// `recipient`'s exact entry, live or inert.
    fn fixed_test_codes(
        &self,
        tenant: &TenantId,
        recipient: &str,
        hashes: &[String],
    ) -> Result<TestGuess, StoreError>;
    /// A wrong guess at a key holding a fixed code (`code_hash`): one more failure on the
    /// exact entry of `recipient` that has that code; at `max` the entry turns inert and
    /// the tenant's `test_version` moves on. True when it turned inert now.
    fn test_code_failed(
        &self,
        tenant: &TenantId,
        recipient: &str,
        code_hash: &str,
        max: u32,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// The tenant's inbox received after `since`, newest first (only `recipient`'s, if
    /// given), at most [`crate::domain::test_mode::INBOX_KEPT`].
    fn test_inbox(
        &self,
        tenant: &TenantId,
        recipient: Option<&str>,
        since: Millis,
    ) -> Result<Vec<InboxRow>, StoreError>;
}

/// A resent test code (`tally`: its row as the resend left it): its message into the
/// inbox, counted as a test send in the code's cells (a test code's other counts are not
/// kept).
pub(crate) fn resend_to_inbox_in(
    tx: &mut dyn Exec,
    tally: &Tally,
    key_digest: &[u8],
    inbox: &InboxEntry,
    now: Millis,
) -> Result<(), StoreError> {
    insert_inbox_in(tx, &tally.tenant, key_digest, inbox, now)?;
    let test = Bump {
        tenant: &tally.tenant,
        created_at: tally.created_at,
        dims: &tally.dims,
        what: Counted::Test,
    };
    bump_in(tx, &test)
}

/// Put a test message in the tenant's inbox, which keeps its last `INBOX_KEPT` (inside the
/// caller's transaction; on PostgreSQL callers hold the tenant's test-sends lock, so trims
/// of one inbox do not race).
pub(crate) fn insert_inbox_in(
    tx: &mut dyn Exec,
    tenant: &str,
    key_digest: &[u8],
    e: &InboxEntry,
    now: Millis,
) -> Result<(), StoreError> {
    let row = args![
        tenant,
        key_digest,
        e.recipient.as_str(),
        e.payload.clone(),
        now
    ];
    tx.exec(sql::INSERT_INBOX, row)?;
    tx.exec(sql::TRIM_INBOX, args![tenant, INBOX_KEPT])?;
    Ok(())
}

impl<E: Engine> TestStore for E {
    fn test_recipients(&self, tenant: &TenantId) -> Result<Vec<TestRecipient>, StoreError> {
        self.rows(sql::TEST_RECIPIENTS, args![tenant.as_str()], |r| {
            test_recipient_from(r)
        })
    }

    fn put_test_recipients(
        &self,
        tenant: &TenantId,
        list: &[TestRecipient],
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        let t = Arg::from(tenant.as_str());
        let rows: Vec<_> = list
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let fixed = r.fixed.as_ref();
                [
                    t.clone(),
                    r.pattern.as_str().into(),
                    fixed.map(|f| f.hash.clone()).into(),
                    fixed.map(|f| i64::from(f.length)).into(),
                    r.expires_at.into(),
                    // The list's order, kept.
                    (now + i as i64).into(),
                ]
            })
            .collect();
        self.transact(move |tx| {
            // On PostgreSQL the tenant's row lock serialises changes of its list.
            let key = std::slice::from_ref(&t);
            let Some(version) = tx.row_opt(sql::NEW_TEST_VERSION, key, |r| r.int(0))? else {
                return Ok(None);
            };
            tx.exec(sql::CLEAR_TEST_RECIPIENTS, key)?;
            for row in &rows {
                tx.exec(sql::ADD_TEST_RECIPIENT, row)?;
            }
            Ok(Some(version))
        })
    }

    fn fixed_test_codes(
        &self,
        tenant: &TenantId,
        recipient: &str,
        hashes: &[String],
    ) -> Result<TestGuess, StoreError> {
        let other = other_spelling(recipient);
        let entries = self.rows(
            sql::FIXED_CODES,
            args![tenant.as_str(), recipient, other],
            |c| Ok((c.text(0)?, c.opt_int(1)?.is_some())),
        )?;
        let mut guess = TestGuess::default();
        for (hash, inert) in entries.into_iter().filter(|(h, _)| hashes.contains(h)) {
            if inert {
                guess.dead.push(hash);
            } else {
                guess.live.get_or_insert(hash);
            }
        }
        Ok(guess)
    }

    fn test_code_failed(
        &self,
        tenant: &TenantId,
        recipient: &str,
        code_hash: &str,
        max: u32,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let t = Arg::from(tenant.as_str());
        let guess = [
            t.clone(),
            recipient.into(),
            code_hash.into(),
            max.into(),
            now.into(),
            other_spelling(recipient).into(),
        ];
        self.transact(move |tx| {
            let key = std::slice::from_ref(&t);
            if tx
                .row_opt(sql::TENANT_TEST_LOCKED, key, |_| Ok(()))?
                .is_none()
            {
                return Ok(false);
            }
            let disabled = tx.row_opt(sql::CODE_FAILED, &guess, |r| r.opt_int(0))?;
            let now_inert = matches!(disabled, Some(Some(_)));
            if now_inert {
                tx.exec(sql::BUMP_TEST_VERSION, key)?;
            }
            Ok(now_inert)
        })
    }

    fn test_inbox(
        &self,
        tenant: &TenantId,
        recipient: Option<&str>,
        since: Millis,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let q = args![tenant.as_str(), since, recipient, INBOX_KEPT];
        self.rows(sql::INBOX, q, |r| inbox_row_from(r))
    }
}

/// The other spelling a test recipient stored before numbers had one spelling may hold for
/// this recipient (`+49 0151…`), else the recipient itself.
fn other_spelling(recipient: &str) -> String {
    crate::domain::numbering::with_national_prefix(recipient)
        .unwrap_or_else(|| recipient.to_string())
}
