//! The integration aggregate (API.md §9): kept idempotent answers, a tenant's webhook, its
//! durable event outbox and the record of delivery attempts.

use super::cells::{attempt_from, corrupt, webhook_from};
use super::engine::{args, Engine, Exec};
use super::rules;
use super::sql::{integration as sql, tenants::TENANT_LOCKED, Arg};
use super::{Fairness, StoreError, HOUR_MS};
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::webhook::{Webhook, WebhookAttempt};
use crate::domain::Millis;

/// An event to deliver. `payload` is the JSON body sealed with the data key.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: EventType,
    pub payload: Vec<u8>,
    pub created_at: Millis,
}

/// A claimed event.
#[derive(Debug, Clone)]
pub struct EventJob {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: EventType,
    pub payload: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What an event sender asks for in one claim.
#[derive(Debug, Clone)]
pub struct EventClaim {
    pub now: Millis,
    pub owner: String,
    /// How long the lease lasts (on PostgreSQL measured on the database's clock).
    pub lease_ms: Millis,
    pub fair: Fairness<String>,
}

/// How an attempt ended, for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Delivered,
    Retry { due_at: Millis },
    Failed,
}

/// One delivery attempt of an event and how it ended, as its lease holder records it.
#[derive(Debug, Clone)]
pub struct EventAttempt {
    pub event_id: String,
    /// The lease owner that made the attempt (only its record counts).
    pub owner: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub outcome: EventOutcome,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong, in a line (no payload, no secret).
    pub error: Option<String>,
}

/// What a mint with an `Idempotency-Key` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemBegin {
    /// The key is now held by this request (new, expired, or its holder's lease ran out
    /// before it stored a code).
    Started,
    /// The key is now held by this request; its last holder's lease ran out after it stored
    /// its code (`code`: the code's key digest) with the answers it gives (`answers`, sealed).
    Orphaned { answers: Vec<u8>, code: Vec<u8> },
    /// A finished answer for the same body.
    Replay { status: u16, response: Vec<u8> },
    /// The key was used with another body.
    Mismatch,
    /// The first request with the key is still running.
    InUse,
}

/// A key being claimed.
#[derive(Debug, Clone)]
pub struct IdemClaim {
    pub hold: IdemHold,
    pub fingerprint: Vec<u8>,
    pub now: Millis,
    pub lease_until: Millis,
    pub expires_at: Millis,
}

/// An idempotency key of a tenant, as one claim holds it.
#[derive(Debug, Clone)]
pub struct IdemHold {
    pub tenant_id: TenantId,
    pub key_digest: Vec<u8>,
    /// A random token naming the claim; only its holder may settle the key.
    pub holder: String,
}

impl IdemHold {
    /// `$1` to `$3` of the statements that settle the key.
    pub(crate) fn args(&self) -> Vec<Arg> {
        let (t, d) = (self.tenant_id.as_str(), self.key_digest.as_slice());
        vec![t.into(), d.into(), self.holder.as_str().into()]
    }
}

/// The leases of webhook events: each backend claims its own way (SQLite plans the claim
/// on a read and leases on its writer, PostgreSQL skips rows another instance is claiming
/// and leases on the database's clock).
pub trait EventClaimStore {
    /// Lease due pending events tenant by tenant (see [`Fairness`]), not those of a
    /// disabled webhook; returns them and where the next claim starts.
    fn claim_events(&self, c: &EventClaim) -> Result<(Vec<EventJob>, Option<String>), StoreError>;
    /// Give back the leases `owner` holds on events, but those in `keep` (shutdown).
    fn release_events(&self, owner: &str, keep: &[String]) -> Result<usize, StoreError>;
}

/// Webhooks, their events and delivery records, and idempotency keys: written once for
/// both backends (`impl<E: Engine> IntegrationStore for E`).
pub trait IntegrationStore {
    /// Create or replace the tenant's webhook (a replacement keeps the stored secret and
    /// enables a disabled one). `None`: no such tenant; `Some(true)`: created.
    fn put_webhook(&self, id: &TenantId, w: &Webhook) -> Result<Option<bool>, StoreError>;
    fn webhook(&self, id: &TenantId) -> Result<Option<Webhook>, StoreError>;
    /// Remove the webhook and its undelivered events; false when there was none.
    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError>;
    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Queue an event, if the tenant still subscribes to its type.
    fn insert_event(&self, e: &NewEvent) -> Result<bool, StoreError>;
    /// An event that cannot be opened yet: due again at `due_at`, no attempt counted (only
    /// while `owner` holds it).
    fn defer_event(&self, event_id: &str, owner: &str, due_at: Millis) -> Result<(), StoreError>;
    /// The endpoint at `url` answered 410 Gone: disable the webhook (its pending events
    /// fail) until the tenant stores it again — only while it still points at `url`; false
    /// when there is no such webhook.
    fn disable_webhook(
        &self,
        id: &TenantId,
        url: &str,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Record an attempt and its outcome, if its owner still holds the event's lease; false
    /// when it did not (nothing recorded).
    fn settle_event(&self, a: &EventAttempt, now: Millis) -> Result<bool, StoreError>;
    /// The newest delivery attempts of a tenant, newest first.
    fn webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>, StoreError>;
    /// Claim an idempotency key, or say what holds it (one atomic step).
    fn idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError>;
    /// Keep the answer of the request that holds the key (a request whose claim was taken
    /// over changes nothing).
    fn idem_finish(&self, h: &IdemHold, status: u16, response: &[u8]) -> Result<(), StoreError>;
    /// Free a key whose request got an answer that is not kept (only the holder's claim);
    /// with `unless_staged`, not a key whose code was stored with its answers.
    fn idem_release(&self, h: &IdemHold, unless_staged: bool) -> Result<(), StoreError>;
    /// Give the holder's claim back without an answer, free from `at` on (its answers, if
    /// any, kept for the next request).
    fn idem_give_back(&self, h: &IdemHold, at: Millis) -> Result<(), StoreError>;
    /// Delete expired idempotency keys, and settled events and delivery records older than
    /// `records_before`.
    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError>;
}

/// Queue `e` if an enabled webhook of its tenant takes its type (inside the caller's
/// transaction); whether it was queued.
pub(crate) fn insert_event_in(tx: &mut dyn Exec, e: &NewEvent) -> Result<bool, StoreError> {
    Ok(tx.exec(sql::INSERT_EVENT, &event_row(e))? > 0)
}

/// [`sql::INSERT_EVENT`]'s values.
fn event_row(e: &NewEvent) -> [Arg; 5] {
    [
        e.id.as_str().into(),
        e.tenant_id.as_str().into(),
        e.kind.as_str().into(),
        e.payload.as_slice().into(),
        e.created_at.into(),
    ]
}

/// The idempotency key's row, locked for the rest of the transaction on PostgreSQL (on
/// SQLite the single writer runs one claim at a time).
const IDEM_ROW: super::sql::Shared = super::sql::Shared {
    sqlite: "SELECT fingerprint, status, response, lease_until, expires_at, staged, staged_code \
             FROM idempotency_keys WHERE tenant_id = ?1 AND key_digest = ?2",
    pg: "SELECT fingerprint, status, response, lease_until, expires_at, staged, staged_code \
         FROM idempotency_keys WHERE tenant_id = $1 AND key_digest = $2 FOR UPDATE",
};

/// An idempotency key as stored.
struct KeyRow {
    fingerprint: Vec<u8>,
    status: Option<u16>,
    response: Option<Vec<u8>>,
    lease_until: Millis,
    expires_at: Millis,
    /// The answers its holder's code gives, and that code's key digest.
    staged: Option<(Vec<u8>, Vec<u8>)>,
}

impl<E: Engine> IntegrationStore for E {
    fn put_webhook(&self, id: &TenantId, w: &Webhook) -> Result<Option<bool>, StoreError> {
        let (id, w) = (id.to_string(), w.clone());
        self.transact(move |tx| {
            // Webhook changes of one tenant take turns.
            if tx
                .row_opt(TENANT_LOCKED, args![id.as_str()], |_| Ok(()))?
                .is_none()
            {
                return Ok(None);
            }
            let (url, events) = (w.url.as_str(), w.events_joined());
            let set = args![id.as_str(), url, events.as_str(), w.updated_at];
            if tx.exec(sql::SET_WEBHOOK_URL, set)? > 0 {
                return Ok(Some(false));
            }
            let secret = w.secret.as_slice();
            let row = args![id.as_str(), url, events, secret, w.created_at, w.updated_at];
            tx.exec(sql::INSERT_WEBHOOK, row)?;
            Ok(Some(true))
        })
    }

    fn webhook(&self, id: &TenantId) -> Result<Option<Webhook>, StoreError> {
        self.row_opt(sql::WEBHOOK, args![id.as_str()], |r| webhook_from(r))
    }

    fn delete_webhook(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = [Arg::from(id.as_str())];
        self.transact(move |tx| {
            let n = tx.exec(sql::DELETE_WEBHOOK, &id)?;
            // Also events queued by an insert that committed after an earlier delete.
            tx.exec(sql::DELETE_WEBHOOK_EVENTS, &id)?;
            Ok(n > 0)
        })
    }

    fn set_webhook_secret(
        &self,
        id: &TenantId,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let row = [id.as_str().into(), sealed.into(), now.into()];
        Ok(self.exec_one(sql::SET_WEBHOOK_SECRET, &row)? > 0)
    }

    fn insert_event(&self, e: &NewEvent) -> Result<bool, StoreError> {
        Ok(self.exec_one(sql::INSERT_EVENT, &event_row(e))? > 0)
    }

    fn defer_event(&self, event_id: &str, owner: &str, due_at: Millis) -> Result<(), StoreError> {
        let row = [event_id.into(), owner.into(), due_at.into()];
        self.exec_one(sql::DEFER_EVENT, &row).map(drop)
    }

    fn disable_webhook(
        &self,
        id: &TenantId,
        url: &str,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let t = Arg::from(id.as_str());
        let row = [t.clone(), now.into(), reason.into(), url.into()];
        self.transact(move |tx| {
            let n = tx.exec(sql::DISABLE_WEBHOOK, &row)?;
            if n > 0 {
                tx.exec(sql::FAIL_PENDING_EVENTS, std::slice::from_ref(&t))?;
            }
            Ok(n > 0)
        })
    }

    fn settle_event(&self, a: &EventAttempt, now: Millis) -> Result<bool, StoreError> {
        let (status, due) = rules::event_row(a.outcome, now);
        let id = a.event_id.as_str();
        let settle = [
            id.into(),
            a.owner.as_str().into(),
            a.attempt.into(),
            status.into(),
            due.into(),
        ];
        let code = a.status_code.map(i64::from);
        let error = a.error.as_deref();
        let record = [
            id.into(),
            a.attempt.into(),
            code.into(),
            error.into(),
            now.into(),
        ];
        self.transact(move |tx| {
            let held = tx.exec(sql::SETTLE_EVENT, &settle)? > 0;
            if held {
                tx.exec(sql::RECORD_WEBHOOK_DELIVERY, &record)?;
            }
            Ok(held)
        })
    }

    fn webhook_deliveries(
        &self,
        id: &TenantId,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>, StoreError> {
        let q = args![id.as_str(), limit];
        self.rows(sql::WEBHOOK_DELIVERIES, q, |r| attempt_from(r))
    }

    fn idem_begin(&self, c: &IdemClaim) -> Result<IdemBegin, StoreError> {
        let c = c.clone();
        self.transact(move |tx| {
            let h = &c.hold;
            let key = [
                Arg::from(h.tenant_id.as_str()),
                h.key_digest.as_slice().into(),
            ];
            let claim = [
                key[0].clone(),
                key[1].clone(),
                c.fingerprint.as_slice().into(),
                c.lease_until.into(),
                c.expires_at.into(),
                h.holder.as_str().into(),
            ];
            // Insert, or lock the row that is there; if that row went meanwhile (released
            // or purged), insert again.
            let row = loop {
                if tx.exec(sql::IDEM_INSERT, &claim)? == 1 {
                    return Ok(IdemBegin::Started);
                }
                if let Some(r) = tx.row_opt(IDEM_ROW, &key, |r| key_row(r))? {
                    break r;
                }
            };
            let same = row.fingerprint == c.fingerprint;
            let orphaned = same && row.status.is_none() && row.lease_until <= c.now;
            if row.expires_at <= c.now || orphaned {
                // A holder that died after storing its code leaves its answers to this one.
                let inherited = row.staged.filter(|_| row.expires_at > c.now);
                let mut retake = claim.to_vec();
                retake.push(i64::from(inherited.is_some()).into());
                tx.exec(sql::IDEM_RETAKE, &retake)?;
                return Ok(match inherited {
                    Some((answers, code)) => IdemBegin::Orphaned { answers, code },
                    None => IdemBegin::Started,
                });
            }
            if !same {
                return Ok(IdemBegin::Mismatch);
            }
            Ok(match (row.status, row.response) {
                (Some(status), Some(response)) => IdemBegin::Replay { status, response },
                _ => IdemBegin::InUse,
            })
        })
    }

    fn idem_finish(&self, h: &IdemHold, status: u16, response: &[u8]) -> Result<(), StoreError> {
        let mut row = h.args();
        row.extend([i64::from(status).into(), Arg::from(response)]);
        self.exec_one(sql::IDEM_FINISH, &row).map(drop)
    }

    fn idem_release(&self, h: &IdemHold, unless_staged: bool) -> Result<(), StoreError> {
        let statement = if unless_staged {
            sql::IDEM_RELEASE_UNSTAGED
        } else {
            sql::IDEM_RELEASE
        };
        self.exec_one(statement, &h.args()).map(drop)
    }

    fn idem_give_back(&self, h: &IdemHold, at: Millis) -> Result<(), StoreError> {
        let mut row = h.args();
        row.push(at.into());
        self.exec_one(sql::IDEM_GIVE_BACK, &row).map(drop)
    }

    fn purge_integration(&self, now: Millis, records_before: Millis) -> Result<usize, StoreError> {
        // Each statement commits alone (each is idempotent: instances purging at once
        // delete each row once).
        // Each in batches (see `records::PURGE_BATCH`). An idempotency key is kept to its
        // expiry; a settled event only a day (only its delivery records' type and id need
        // it).
        let limit = i64::try_from(super::records::PURGE_BATCH).unwrap_or(i64::MAX);
        let mut n = 0;
        for (q, cutoff) in [
            (sql::PURGE_IDEMPOTENCY_KEYS, now),
            (sql::PURGE_WEBHOOK_EVENTS, now - 24 * HOUR_MS),
            (sql::PURGE_WEBHOOK_DELIVERIES, records_before),
        ] {
            n += super::records::in_batches(|| self.exec_one(q, args![cutoff, limit]))?;
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// An idempotency key's row from [`IDEM_ROW`].
fn key_row(r: &dyn super::cells::Cells) -> Result<KeyRow, StoreError> {
    let status = r
        .opt_int(1)?
        .map(|v| u16::try_from(v).map_err(|_| corrupt("a status code")))
        .transpose()?;
    Ok(KeyRow {
        fingerprint: r.bytes(0)?,
        status,
        response: r.opt_bytes(2)?,
        lease_until: r.int(3)?,
        expires_at: r.int(4)?,
        staged: r.opt_bytes(5)?.zip(r.opt_bytes(6)?),
    })
}
