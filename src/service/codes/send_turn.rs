//! A hosted session's sends take turns: one at a time in this process ([`KeyTurns::alone`])
//! and, against other instances on one database (API.md §7), under a short lease kept in
//! the idempotency-key table (its own label, so it never meets a client's key). A double
//! click's second send so finds the first one's code and sends under the same key, instead
//! of minting a code that supersedes the one just sent.
//!
//! [`KeyTurns::alone`]: super::turns::KeyTurns::alone

use std::time::Duration;

use crate::crypto::lookup_digest;
use crate::domain::keys::{random_id, TenantId};
use crate::service::codes::turns::Under;
use crate::service::{Codes, ServiceError};
use crate::storage::integration::{IdemBegin, IdemClaim, IdemHold};

const LABEL: &str = "hosted-send";
/// Every lease of a session's sends has this fingerprint: another holder's lease is never
/// a "mismatch", only in use.
const FINGERPRINT: &[u8] = b"hosted-send";

/// A session's turn to send; given back with [`Codes::end_send_turn`] (a lease that is not
/// given back ends by itself).
pub(super) struct SendTurn<'a> {
    _here: Under<'a>,
    lease: IdemHold,
}

impl Codes {
    /// Wait for the session's turn to send: for this process's send of it, then for another
    /// instance's lease — as long as a send may take, then 503 (`Overloaded`).
    pub(super) async fn send_turn(
        &self,
        tenant: &TenantId,
        session: &str,
    ) -> Result<SendTurn<'_>, ServiceError> {
        let here = self.sends.alone(session.as_bytes()).await;
        // As long as a sync send may take (each route's bound, a fallback after it), and a
        // little: a lease past it lets the next send go (as if there were none).
        let lease_ms = {
            let settings = self.core.settings.load();
            i64::try_from(settings.attempt_seconds())
                .unwrap_or(i64::MAX / 4_000)
                .saturating_mul(2_000)
                .saturating_add(10_000)
        };
        let lease = IdemHold {
            tenant_id: tenant.clone(),
            key_digest: lookup_digest(self.core.keyring.get().pepper(), LABEL, session),
            holder: random_id(22),
        };
        let started = self.core.now();
        loop {
            let now = self.core.now();
            let claim = IdemClaim {
                hold: lease.clone(),
                fingerprint: FINGERPRINT.to_vec(),
                now,
                lease_until: now + lease_ms,
                expires_at: now + lease_ms,
            };
            if let IdemBegin::Started = self.core.db(move |s| s.idem_begin(&claim)).await? {
                return Ok(SendTurn { _here: here, lease });
            }
            if now - started > lease_ms {
                return Err(ServiceError::Overloaded);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Give the turn back (the lease at once; if the database is away it ends by itself).
    pub(super) async fn end_send_turn(&self, turn: SendTurn<'_>) {
        let lease = turn.lease.clone();
        if let Err(e) = self.core.db(move |s| s.idem_release(&lease, false)).await {
            tracing::warn!(error = %e, "a hosted send's lease could not be given back; it ends by itself");
        }
        drop(turn);
    }
}
