//! Provider events (API.md §16.2): each applied once — recorded by its provider's id, and in
//! the same transaction the recipient suppressed, the matching code's delivery marked
//! `bounced`, the statistics counted and the tenant's webhook event stored.

use super::cells::Cells;
use super::engine::{args, Engine};
use super::integration::insert_event_in;
use super::sql::{self, Arg};
use super::stats::{bump_in, count_in, tally_from, Bump};
use super::StoreError;
use crate::domain::event::EventType;
use crate::domain::keys::TenantId;
use crate::domain::stats::CodeDims;
use crate::domain::stats::Counted;
use crate::domain::suppression::Suppression;
use crate::domain::Millis;
use crate::storage::integration::NewEvent;

/// What a provider sent, by its id: recorded once (`SEEN`), so a repeat changes nothing.
/// Also what the events' own bookkeeping records under a name of its own (the AWS account
/// of an SES key, a confirmed subscription, a Mailgun token seen).
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub tenant: TenantId,
    /// `postmark`, `resend`, …; or the bookkeeping's own name (`mailgun-token`,
    /// `<key id>:ses-account-pin`, `subscribe:<message id>`).
    pub provider: String,
    pub event_id: String,
    pub now: Millis,
}

/// The bookkeeping name of a Mailgun signature's token, taken once across tenants (the
/// unique index of migration V21 names it too).
pub const MAILGUN_TOKEN: &str = "mailgun-token";

impl SeenEvent {
    /// How it is recorded: once for its tenant, or a token once across tenants.
    fn sql(&self) -> sql::Shared {
        if self.provider == MAILGUN_TOKEN {
            sql::provider_events::SEEN_ANYWHERE
        } else {
            sql::provider_events::SEEN
        }
    }

    /// `SEEN`'s arguments.
    fn args(&self) -> [Arg; 4] {
        let (t, p, id) = (
            self.tenant.as_str(),
            self.provider.as_str(),
            self.event_id.as_str(),
        );
        [t.into(), p.into(), id.into(), self.now.into()]
    }
}

/// A verified hard bounce or complaint, with everything it changes.
#[derive(Debug, Clone)]
pub struct EventEffect {
    /// The event (its tenant, provider and id), and when it arrived.
    pub seen: SeenEvent,
    /// The suppression entry it adds (the recipient canonical).
    pub suppression: Suppression,
    /// The provider's message id, to find the code it was about.
    pub message_id: Option<String>,
    /// `Counted::Bounced` or `Counted::Complained`.
    pub counted: Counted,
    /// The tenant's webhook event, if it subscribes.
    pub webhook: Option<NewEvent>,
    /// The tenant's settings the event was verified with, when they were read before this
    /// request: it is applied only while they still hold.
    pub verified_with: Option<VerifiedWith>,
    /// The one-time token its signature covers (Mailgun signs only a timestamp and a
    /// token, not the event), recorded in the same transaction: a token seen before makes
    /// the request a replay, and an event whose transaction fails leaves its token unused,
    /// so the provider's retry is applied.
    pub token: Option<SeenEvent>,
}

/// What an event was verified and shaped with: the tenant's row version (every change of
/// its provider settings, its enabled flag or its keys moves it on) and its webhook's event
/// types (which decide whether `otp.bounced` is raised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWith {
    pub row_version: i64,
    pub webhook_events: String,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventApplied {
    /// Applied now; `added`: its recipient was not on the list before (else the event is
    /// counted and marks its code, and the entry stays as it was).
    Applied { added: bool },
    /// Seen before: nothing changed.
    Seen,
    /// Its request's one-time token was seen before (a replayed signature): nothing changed,
    /// and nothing else of the request may.
    Replayed,
    /// The tenant's settings are no longer what the event was verified with (or it is
    /// disabled or gone): nothing changed.
    Stale,
}

impl EventEffect {
    pub fn event_type(&self) -> EventType {
        match self.counted {
            Counted::Complained => EventType::OtpComplained,
            _ => EventType::OtpBounced,
        }
    }
}

pub trait ProviderEventStore {
    /// Record something seen once (`false`: seen before, nothing changes): a Mailgun token,
    /// an SES key's account, a confirmed subscription.
    fn record_provider_event(&self, e: &SeenEvent) -> Result<bool, StoreError>;
    /// Apply a hard bounce or complaint once, in one transaction that first checks the
    /// tenant's settings are still [`EventEffect::verified_with`] (when given).
    fn apply_provider_event(&self, e: &EventEffect) -> Result<EventApplied, StoreError>;
    /// The first value recorded under `provider` for the tenant (an SES key's account).
    fn provider_pin(&self, tenant: &TenantId, provider: &str)
        -> Result<Option<String>, StoreError>;
    /// Forget events received before `before` (pins are kept).
    fn purge_provider_events(&self, before: Millis) -> Result<usize, StoreError>;
}

impl<E: Engine> ProviderEventStore for E {
    fn record_provider_event(&self, e: &SeenEvent) -> Result<bool, StoreError> {
        Ok(self.exec_one(e.sql(), &e.args())? == 1)
    }

    fn apply_provider_event(&self, e: &EventEffect) -> Result<EventApplied, StoreError> {
        let e = e.clone();
        self.transact(move |tx| {
            let t = e.seen.tenant.as_str();
            if let Some(w) = &e.verified_with {
                // No row lock: on PostgreSQL one taken here, before the suppression's count
                // updates the same row, would deadlock concurrent events of the tenant. A
                // change committed while this runs is ordered after the event, as if it had
                // come a moment later.
                let now = tx.row_opt(sql::provider_events::VERIFIED_WITH, args![t], |r| {
                    Ok(VerifiedWith {
                        row_version: r.int(0)?,
                        webhook_events: r.text(1)?,
                    })
                })?;
                if now.as_ref() != Some(w) {
                    return Ok(EventApplied::Stale);
                }
            }
            if let Some(token) = &e.token {
                if tx.exec(token.sql(), &token.args())? == 0 {
                    return Ok(EventApplied::Replayed);
                }
            }
            if tx.exec(sql::provider_events::SEEN, &e.seen.args())? == 0 {
                // Its token (new) is recorded all the same: a repeat of an event is no
                // reason to let its signature carry another.
                return Ok(EventApplied::Seen);
            }
            let s = &e.suppression;
            let entry = args![
                t,
                s.recipient.as_str(),
                s.reason.as_str(),
                s.source.as_str(),
                s.created_at
            ];
            let added = tx.exec(sql::suppressions::INSERT, entry)? == 1;
            if added {
                tx.exec(sql::suppressions::COUNT_UP, args![t])?;
            }
            // The code's tally. A message's code counts one `bounced` and one `complained`
            // at most, whatever order its events come in: which it counted is recorded as
            // seen (`counted-…`, purged with the events), so a second bounce of the message,
            // or a bounce after a complaint, counts once. (On PostgreSQL a second event of
            // the message waits for the first's row lock and then finds it recorded.)
            let mut code = None;
            if let Some(m) = &e.message_id {
                let q = args![t, m.as_str()];
                let tally = |r: &dyn Cells| tally_from(r, 0);
                code = tx
                    .rows(sql::provider_events::MARK_BOUNCED, q, tally)?
                    .pop()
                    .map(|c| (c, m));
            }
            match code {
                Some((tally, m)) => {
                    let what = match e.counted {
                        Counted::Complained => "counted-complained",
                        _ => "counted-bounced",
                    };
                    let first = args![t, what, m.as_str(), e.seen.now];
                    if tx.exec(sql::provider_events::SEEN, first)? == 1 {
                        count_in(tx, &tally, e.counted)?;
                    }
                }
                None => {
                    let dims = CodeDims::of("", None, "email", &s.recipient);
                    bump_in(
                        tx,
                        &Bump {
                            tenant: t,
                            created_at: e.seen.now,
                            dims: &dims,
                            what: e.counted,
                        },
                    )?
                }
            }
            if let Some(ev) = &e.webhook {
                insert_event_in(tx, ev)?;
            }
            Ok(EventApplied::Applied { added })
        })
    }

    fn provider_pin(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<Option<String>, StoreError> {
        let q = args![tenant.as_str(), provider];
        self.row_opt(sql::provider_events::PIN, q, |r| r.text(0))
    }

    fn purge_provider_events(&self, before: Millis) -> Result<usize, StoreError> {
        let limit = i64::try_from(super::records::PURGE_BATCH).unwrap_or(i64::MAX);
        let n = super::records::in_batches(|| {
            self.exec_one(sql::provider_events::PURGE, args![before, limit])
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}
