//! A claimed message's outcome, recorded by its lease's holder — sent (superseding its
//! group's older codes), tried again later, given back, given up — and the steps the sweep
//! shares with it: written once for both backends over the engine. A message is settled by
//! deleting its outbox row first, so whoever deletes it settles (and refunds) it, once.

use super::cells::status_from;
use super::engine::{args, lock_key, Engine, Exec};
use super::integration::{insert_event_in, NewEvent};
use super::outbox::{AttemptFailure, AttemptRecord, OutboxStats, SweepItem, Unsent};
use super::rules;
use super::sql::outbox as sql;
use super::stats::{count_in, tally_from, Tally, STATE_COUNTED, STATE_EXPIRY_COUNTED};
use super::{StoreError, MINUTE_MS};
use crate::domain::stats::Counted;
use crate::domain::Millis;

/// What the holder of a message's lease records of its attempt (see `OutboxStore` for the
/// claims and the sweep, which each backend does its own way).
pub trait SettleStore {
    /// The relay accepted the message: delivery `sent`, the outbox row gone, and the
    /// group's older pending, live codes superseded — one transaction, and only while
    /// `owner` holds the row (false: someone else settled or re-claimed it; nothing
    /// changed). `event`: its webhook event, written in the same transaction.
    fn outbox_sent(
        &self,
        key_digest: &[u8],
        owner: &str,
        attempt: &AttemptRecord,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError>;
    /// A transient failure (or a message that cannot be opened yet): try again at
    /// `due_at`, only while `owner` holds the row.
    fn outbox_retry(
        &self,
        key_digest: &[u8],
        owner: &str,
        attempt: &AttemptRecord,
        failure: AttemptFailure,
        due_at: Millis,
    ) -> Result<bool, StoreError>;
    /// Give the row back without an attempt (its message cannot be opened yet, its tenant
    /// could not be read, no session was free), only while `owner` holds it: due again at
    /// `due_at`, or when it was (`None`: its place in the queue kept).
    fn outbox_defer(
        &self,
        key_digest: &[u8],
        owner: &str,
        due_at: Option<Millis>,
    ) -> Result<(), StoreError>;
    /// The holder (`owner`) begins the message's send (it has a session): until this is
    /// written, a lease that runs out is given back and the message sent by another sender
    /// (nothing left); after, it is an interrupted send, recorded `unknown` (API.md §19.2).
    /// False: `owner` no longer holds the row, and must not send.
    fn outbox_send_started(&self, key_digest: &[u8], owner: &str) -> Result<bool, StoreError>;
    /// Give up, only while `owner` holds the row: the code becomes `failed` (it can never
    /// verify), the outbox row goes, and the quota charge is given back unless some attempt
    /// may have reached the relay. When this attempt's outcome is unknown
    /// (`attempt.outcome_unknown`), the delivery is `unknown` instead and the code stays
    /// valid (see `rules::given_up`).
    fn outbox_failed(
        &self,
        key_digest: &[u8],
        owner: &str,
        attempt: &AttemptRecord,
        failure: AttemptFailure,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError>;
    /// How many messages wait, and how long the longest-waiting due one has been due.
    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError>;
    /// The messages `owner` leased that will never be sent here (`which`) are given up as
    /// `not_sent` — delivery `failed`, the code as it is, the quota given back — where their
    /// lease would run out into `unknown`: its sync ones at shutdown (API.md §19.4), and that
    /// of a mint or resend answered 503 whose store committed after all. Returns how many.
    fn settle_unsent_sync(
        &self,
        owner: &str,
        which: Unsent,
        now: Millis,
    ) -> Result<usize, StoreError>;
}

impl<E: Engine> SettleStore for E {
    fn settle_unsent_sync(
        &self,
        owner: &str,
        which: Unsent,
        now: Millis,
    ) -> Result<usize, StoreError> {
        let owner = owner.to_string();
        self.transact(move |tx| {
            let only = which.only();
            let leased = tx.rows(sql::LEASED_UNSENT, args![owner.as_str(), only], |r| {
                r.bytes(0)
            })?;
            let items: Vec<SweepItem> = leased
                .into_iter()
                .filter(|k| which.takes(k))
                .map(|key_digest| SweepItem {
                    key_digest,
                    verdict: rules::SweepVerdict::NotSent,
                    event: None,
                })
                .collect();
            // The rows are this owner's and still leased: no verdict to read again.
            settle_swept_rows(tx, &items, Some(owner.as_str()), now, None)
        })
    }

    fn outbox_sent(
        &self,
        key_digest: &[u8],
        owner: &str,
        rec: &AttemptRecord,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let (key, owner) = (key_digest.to_vec(), owner.to_string());
        let (rec, event) = (rec.clone(), event.cloned());
        self.transact(move |tx| {
            // The outbox row first, as every settlement does (the lock order of `take_row`
            // and the sweep): only the lease's holder settles the message, once — or a sync
            // send another instance's sweep recorded as `unknown` while this outcome waited
            // for the database (the relay did take it).
            let held = tx.exec(sql::DELETE_HELD, args![key.as_slice(), owner.as_str()])? == 1;
            if !held {
                let unknown =
                    tx.row_opt(sql::DELIVERY_UNKNOWN, args![key.as_slice()], |_| Ok(()))?;
                if unknown.is_none() {
                    return Ok(false);
                }
            }
            let group = group_of(tx, &key)?;
            if let Some(g) = &group {
                // The group's lock before any of its rows, as the mint takes it. Settlements
                // of one group superseding older codes at once could otherwise lock rows in
                // opposite orders (PostgreSQL would abort one of them).
                tx.serialize(&[g.lock()])?;
            }
            let values = args![
                key.as_slice(),
                rec.attempts,
                now,
                held,
                rec.transport.as_deref(),
                rec.provider_message_id.as_deref(),
            ];
            let sent = tx.row_opt(sql::MARK_SENT, values, |r| {
                Ok((status_from(&r.text(0)?)?, tally_from(r, 1)?))
            })?;
            if !held && sent.is_none() {
                return Ok(false);
            }
            // Only pending, live codes are superseded: an exhausted or expired code keeps its
            // state (and its retention). An older code of the group was committed before
            // this one took its number (the group lock), so it is visible here.
            if let Some((status, _)) = &sent {
                if let (true, Some(g)) = (rules::accepted_supersedes(*status), &group) {
                    supersede(tx, g, now)?;
                }
            }
            if let Some(e) = &event {
                insert_event_in(tx, e)?;
            }
            // Counted last, so the statistics' cells are locked in one order.
            if let Some((_, tally)) = &sent {
                count_in(tx, tally, Counted::Sent)?;
            }
            Ok(true)
        })
    }

    fn outbox_retry(
        &self,
        key_digest: &[u8],
        owner: &str,
        rec: &AttemptRecord,
        failure: AttemptFailure,
        due_at: Millis,
    ) -> Result<bool, StoreError> {
        let key = key_digest.to_vec();
        let maybe_delivered = failure.maybe_delivered;
        let retry = args![key.as_slice(), owner, rec.attempts, due_at, maybe_delivered].to_vec();
        let record = args![
            key.as_slice(),
            rec.attempts,
            failure.reason.as_str(),
            rec.detail_code.as_deref()
        ]
        .to_vec();
        self.transact(move |tx| {
            let n = tx.exec(sql::RETRY_LATER, &retry)?;
            if n == 1 {
                tx.exec(sql::RECORD_DELIVERY_ATTEMPTS, &record)?;
            }
            Ok(n == 1)
        })
    }

    fn outbox_defer(
        &self,
        key_digest: &[u8],
        owner: &str,
        due_at: Option<Millis>,
    ) -> Result<(), StoreError> {
        self.exec_one(sql::OUTBOX_DEFER, args![key_digest, owner, due_at])
            .map(drop)
    }

    fn outbox_send_started(&self, key_digest: &[u8], owner: &str) -> Result<bool, StoreError> {
        self.exec_one(sql::SEND_STARTED, args![key_digest, owner])
            .map(|n| n == 1)
    }

    fn outbox_failed(
        &self,
        key_digest: &[u8],
        owner: &str,
        rec: &AttemptRecord,
        failure: AttemptFailure,
        now: Millis,
        event: Option<&NewEvent>,
    ) -> Result<bool, StoreError> {
        let (key, owner, reason) = (key_digest.to_vec(), owner.to_string(), failure.reason);
        let (rec, event) = (rec.clone(), event.cloned());
        self.transact(move |tx| {
            let Some(taken) = take_row(tx, &key, Some(&owner))? else {
                return Ok(false);
            };
            let (status, fail_code) = rules::given_up(rec.outcome_unknown);
            let settle = Settle {
                attempts: Some(rec.attempts),
                reason: reason.as_str(),
                status: status.as_str(),
                fail_code,
                refund: rules::refunds_quota(taken.maybe_delivered, failure.maybe_delivered),
                quota_at: taken.quota_at,
                queued_at: taken.queued_at,
                text: taken.text,
            };
            let failed = give_up(tx, &key, settle, now)?;
            let detail = args![key.as_slice(), rec.detail_code.as_deref()];
            tx.exec(sql::OUTBOX_FAILED, detail)?;
            if let Some(e) = &event {
                insert_event_in(tx, e)?;
            }
            if let Some(t) = &failed {
                count_in(tx, t, Counted::Failed)?;
            }
            Ok(true)
        })
    }

    fn outbox_stats(&self, now: Millis) -> Result<OutboxStats, StoreError> {
        let row = self.row_opt(sql::OUTBOX_STATS, &[], |r| Ok((r.int(0)?, r.opt_int(1)?)))?;
        let (depth, oldest) = row.unwrap_or((0, None));
        Ok(OutboxStats {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest_due_ms: oldest.map_or(0, |o| (now - o).max(0)),
        })
    }
}

/// A code's group (tenant, canonical recipient, purpose, flavor) and its number in it.
struct Group {
    tenant: String,
    recipient: String,
    purpose: String,
    flavor: String,
    seq: i64,
}

impl Group {
    fn parts(&self) -> [&str; 4] {
        [&self.tenant, &self.recipient, &self.purpose, &self.flavor]
    }

    /// The group's lock, as the mint takes it.
    fn lock(&self) -> String {
        lock_key("g", &self.parts())
    }
}

fn group_of(tx: &mut dyn Exec, key_digest: &[u8]) -> Result<Option<Group>, StoreError> {
    tx.row_opt(sql::GROUP_OF, args![key_digest], |r| {
        Ok(Group {
            tenant: r.text(0)?,
            recipient: r.text(1)?,
            purpose: r.text(2)?,
            flavor: r.text(3)?,
            seq: r.int(4)?,
        })
    })
}

/// The codes of group `g` older than its number `g.seq` that are still pending and live,
/// superseded by that code's accepted message (callers hold the group's lock).
fn supersede(tx: &mut dyn Exec, g: &Group, now: Millis) -> Result<(), StoreError> {
    let [tenant, recipient, purpose, flavor] = g.parts();
    let values = args![tenant, recipient, purpose, flavor, g.seq, now];
    tx.exec(sql::SUPERSEDE_OLDER, values).map(drop)
}

/// The older pending, live codes of `key_digest`'s group, superseded by its accepted
/// message (callers hold the group's lock, or SQLite's writer).
pub(crate) fn supersede_older_than(
    tx: &mut dyn Exec,
    key_digest: &[u8],
    now: Millis,
) -> Result<(), StoreError> {
    match group_of(tx, key_digest)? {
        Some(g) => supersede(tx, &g, now),
        None => Ok(()),
    }
}

/// What a message's outbox row carried when it was taken.
struct Taken {
    /// Whether an earlier attempt may have reached the relay; when the quotas counted it.
    maybe_delivered: bool,
    quota_at: Option<Millis>,
    /// When it was queued: when the SMS fraud guard counted it, if it is a text (`text`).
    queued_at: Millis,
    text: bool,
    /// The attempts recorded before the one under way.
    attempts: u32,
}

/// Delete a message's outbox row — only `owner`'s, when given — and say what it carried.
/// `None`: already settled (or held by someone else).
fn take_row(
    tx: &mut dyn Exec,
    key_digest: &[u8],
    owner: Option<&str>,
) -> Result<Option<Taken>, StoreError> {
    tx.row_opt(sql::TAKE_ROW, args![key_digest, owner], |r| {
        Ok(Taken {
            maybe_delivered: r.flag(0)?,
            quota_at: r.opt_int(1)?,
            queued_at: r.int(2)?,
            text: super::cells::channel_from(&r.text(3)?)?.is_phone(),
            attempts: r.count(4)?,
        })
    })
}

/// How a message that will not be sent (again) is recorded.
struct Settle<'a> {
    attempts: Option<u32>,
    reason: &'a str,
    /// The delivery status: `failed`, or `unknown` for an interrupted sync send.
    status: &'a str,
    /// Whether the code itself becomes `failed` (if still pending).
    fail_code: bool,
    /// Whether the send goes back to the quotas.
    refund: bool,
    quota_at: Option<Millis>,
    queued_at: Millis,
    text: bool,
}

/// Record a message given up on (its outbox row already taken). Returns what to count as
/// `failed`: callers count it last in their transaction, a batch's in one go
/// (`count_all`), so the statistics' cells are locked in one order.
fn give_up(
    tx: &mut dyn Exec,
    key_digest: &[u8],
    s: Settle<'_>,
    now: Millis,
) -> Result<Option<Tally>, StoreError> {
    let values = args![
        key_digest,
        s.attempts.map(i64::from),
        s.reason,
        now,
        s.fail_code,
        s.status,
        STATE_COUNTED,
        STATE_EXPIRY_COUNTED,
    ];
    let row = tx.row_opt(sql::GIVE_UP, values, |r| {
        Ok((tally_from(r, 0)?, r.text(5)?))
    })?;
    let Some((tally, recipient)) = row else {
        return Ok(None);
    };
    if let (true, Some(quota_at)) = (s.refund, s.quota_at) {
        // Nothing can have reached the relay: give the send back to the quotas.
        let t = tally.tenant.as_str();
        tx.exec(sql::GIVE_BACK_SEND, args![t, recipient.as_str(), quota_at])?;
        let minute = quota_at.div_euclid(MINUTE_MS);
        tx.exec(sql::GIVE_BACK_TENANT_SEND, args![t, minute])?;
    }
    if s.refund && s.text {
        // Nor to the SMS fraud guard's velocity (API.md §17.1): a text that never left
        // holds no place of its range or country (a provider's outage would else close a
        // range for the hour) — its own place, counted when it was queued.
        tx.exec(
            super::sql::sms_guard::RELEASE,
            args![key_digest, s.queued_at],
        )?;
    }
    Ok(s.fail_code.then_some(tally))
}

/// Settle each of a batch of swept rows whose verdict still holds: each as
/// [`settle_swept_row`] does, and the failures counted once for the batch, last. How many
/// it settled. `recheck`: the backend's sweep query for one row (`now` and its key as
/// parameters 1 and 2; it takes the row's lock where the backend has row locks), which reads
/// the verdict again in the transaction — the row may have been claimed, settled or its
/// code changed since the sweep read it; `None` where the caller's own lease keeps the rows.
pub(crate) fn settle_swept_rows(
    tx: &mut dyn Exec,
    items: &[SweepItem],
    owner: Option<&str>,
    now: Millis,
    recheck: Option<&str>,
) -> Result<usize, StoreError> {
    let (mut settled, mut failed) = (0, Vec::new());
    for item in items {
        if let Some(text) = recheck {
            let args = args![now, item.key_digest.as_slice()];
            let verdict = tx.first_text(text, args, |r| super::outbox::sweep_verdict_of(r, now))?;
            if verdict.flatten() != Some(item.verdict) {
                continue;
            }
        }
        if let Some(f) = settle_swept_row(tx, item, owner, now)? {
            failed.extend(f);
            settled += 1;
        }
    }
    super::stats::count_all(tx, &failed, Counted::Failed)?;
    Ok(settled)
}

/// Settle a swept row whose verdict still holds (its caller checked, under the row's lock):
/// the row taken, the message given up as the verdict says, its event written. `None`:
/// settled by someone else first; else what to count as `failed`, which the caller counts
/// for the whole batch last (see [`give_up`]).
pub(crate) fn settle_swept_row(
    tx: &mut dyn Exec,
    item: &SweepItem,
    owner: Option<&str>,
    now: Millis,
) -> Result<Option<Option<Tally>>, StoreError> {
    let Some(taken) = take_row(tx, &item.key_digest, owner)? else {
        return Ok(None);
    };
    let v = item.verdict;
    let settle = Settle {
        // An interrupted send is counted (it may have arrived); the others never began.
        attempts: (v == rules::SweepVerdict::Interrupted).then_some(taken.attempts + 1),
        reason: v.reason(),
        status: v.delivery_status().as_str(),
        fail_code: v.fails_code(),
        refund: v.refunds(taken.maybe_delivered),
        quota_at: taken.quota_at,
        queued_at: taken.queued_at,
        text: taken.text,
    };
    let failed = give_up(tx, &item.key_digest, settle, now)?;
    if let Some(e) = &item.event {
        insert_event_in(tx, e)?;
    }
    Ok(Some(failed))
}

#[cfg(test)]
mod tests {
    use super::Unsent;

    #[test]
    fn unsent_takes_every_key_but_the_kept_ones_or_only_its_own() {
        let (a, b) = (vec![1u8, 2], vec![3u8]);
        let all_but = Unsent::AllBut(vec![a.clone()]);
        assert!(!all_but.takes(&a) && all_but.takes(&b));
        assert!(Unsent::AllBut(Vec::new()).takes(&a));
        let only = Unsent::Only(a.clone());
        assert!(only.takes(&a) && !only.takes(&b) && !only.takes(&[1]));
    }
}
