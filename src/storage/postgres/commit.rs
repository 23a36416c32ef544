//! A commit whose answer was lost: each write transaction reads its id and server process
//! just before COMMIT; when COMMIT's answer does not come (the connection broke after it
//! left), the transaction's outcome is asked on a connection of its own, once the broken
//! one is back in the pool (docs/deployment.md, "Health checks").

use std::time::Duration;

use super::conn::{self, Db, PgConn};
use super::PgStore;
use crate::storage::StoreError;

impl PgStore {
    /// A commit whose answer was lost, asked after once its connection is back in the pool
    /// (discarded there if broken): a break that lost every connection's answer at once
    /// must not leave the pool held by dead ones while they are asked after.
    pub(super) fn settled(&self, lost: Option<Lost>) -> Result<(), StoreError> {
        match lost {
            None => Ok(()),
            Some(l) => self.outcome_of(&l.xid, l.pid, l.error),
        }
    }

    /// Commit `tx`. A commit whose answer does not come (the connection broke, or the
    /// server ended the session, after COMMIT left) may have taken or not: it is returned,
    /// named by the transaction id and server process read just before, to be asked after
    /// ([`PgStore::settled`]) — so a transaction that did commit is answered as done, not as
    /// a 503 whose verify nevertheless used the code, or whose mint nevertheless sends it.
    /// One that wrote nothing has nothing to lose when its connection broke; an error the
    /// server gave it is returned.
    pub(super) fn commit(
        &self,
        mut tx: ::postgres::Transaction<'_>,
        cache: &mut std::collections::HashMap<String, ::postgres::Statement>,
    ) -> Result<Option<Lost>, StoreError> {
        let mark = Db { c: &mut tx, cache }.query_one(
            "SELECT pg_current_xact_id_if_assigned()::text, pg_backend_pid()",
            &[],
        )?;
        let xid: Option<String> = mark.try_get(0)?;
        let pid: i32 = mark.try_get(1)?;
        let Err(error) = tx.commit() else {
            return Ok(None);
        };
        let broke = conn::broke(&error);
        if broke {
            conn::note_lost();
        }
        match xid {
            Some(xid) => Ok(Some(Lost { xid, pid, error })),
            None if broke => Ok(None),
            None => Err(error.into()),
        }
    }

    /// Whether the transaction `xid` (of server process `pid`), whose commit's answer was
    /// lost, took: `Ok` when it did, the lost answer's error when it did not or when that
    /// cannot be learned within `database.timeout_seconds` (the database is away). It is
    /// asked on a connection of its own, opened again while it fails: the pool's idle
    /// connections may have broken with the one that was lost. One still open (its COMMIT
    /// never arrived, and its process has not yet noticed that the connection is gone) is
    /// ended, so the answer given is the one that holds.
    fn outcome_of(&self, xid: &str, pid: i32, lost: ::postgres::Error) -> Result<(), StoreError> {
        use r2d2::ManageConnection;
        let xid32 = xid.parse::<u64>().map(|x| (x & 0xffff_ffff).to_string());
        let deadline = std::time::Instant::now() + self.timeout.max(Duration::from_secs(1));
        let mut asking: Option<PgConn> = None;
        let mut open_rounds = 0;
        loop {
            if asking.is_none() {
                asking = self.asker.connect().ok();
            }
            let status = asking.as_mut().map(|c| {
                let mut db = c.db();
                if open_rounds >= END_OPEN_AFTER {
                    if let Ok(x) = &xid32 {
                        // Its failure (a role that may not end it) leaves the asking on.
                        let _ = db.query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE pid = $1 AND backend_xid::text = $2",
                            &[&pid, x],
                        );
                    }
                }
                let row = db.query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])?;
                row.try_get::<_, Option<String>>(0)
            });
            match status {
                Some(Ok(Some(s))) if s == "committed" => {
                    tracing::warn!(
                        xid,
                        "the database's answer to a commit was lost; asked again, it had committed"
                    );
                    return Ok(());
                }
                Some(Ok(Some(s))) if s == "aborted" => return Err(lost.into()),
                Some(Ok(Some(_))) => open_rounds += 1,
                Some(Ok(None)) => break,
                Some(Err(_)) => asking = None,
                None => {}
            }
            if std::time::Instant::now() + OUTCOME_PAUSE >= deadline {
                break;
            }
            std::thread::sleep(OUTCOME_PAUSE);
        }
        tracing::warn!(xid, error = %crate::storage::error::pg_text(&lost), "the database's answer to a commit was lost, and whether it took cannot be learned now; answered as not done");
        Err(lost.into())
    }
}

/// A commit whose answer was lost (see [`PgStore::commit`]).
pub(super) struct Lost {
    xid: String,
    pid: i32,
    error: ::postgres::Error,
}

/// How long apart a commit whose answer was lost is asked after.
const OUTCOME_PAUSE: Duration = Duration::from_millis(50);
/// After how many answers "still open" its transaction is ended.
const END_OPEN_AFTER: u32 = 4;
