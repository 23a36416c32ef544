//! Outcomes claimed once, by the browser that started them (API.md §17.2): a verified key
//! or hosted session answers who verified, once; with a code challenge given at the start
//! only to the holder of its verifier.

use crate::domain::challenge::{Status, VerifiedVia};
use crate::domain::claim::CodeChallenge;
use crate::domain::keys::{CodeApi, ShareableKey};
use crate::domain::purpose::Purpose;
use crate::domain::recipient::Channel;
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::service::core::audit::RequestContext;
use crate::service::{Codes, ServiceError};
use crate::storage::Store;

/// What a claim answers.
pub struct ClaimedOutcome {
    /// The address or number as given.
    pub recipient: String,
    /// The channel it was sent on (a hosted session's: email).
    pub channel: Channel,
    pub purpose: Purpose,
    pub verified_at: Millis,
    /// A code or a link (a key); a code for a hosted session (typed on the page).
    pub verified_via: VerifiedVia,
}

/// A wrong or missing verifier where a challenge was given: 403, and nothing is spent.
fn check_verifier(
    challenge: Option<&CodeChallenge>,
    verifier: Option<&str>,
) -> Result<(), ServiceError> {
    match challenge {
        Some(c) if !verifier.is_some_and(|v| c.matches(v)) => {
            Err(ServiceError::CodeVerifierMismatch)
        }
        _ => Ok(()),
    }
}

impl Codes {
    /// Claim a verified key's outcome once.
    pub async fn claim_code(
        &self,
        tenant: &Tenant,
        key: &ShareableKey,
        verifier: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<ClaimedOutcome, ServiceError> {
        let view = self.otp_status(&tenant.id, key, CodeApi::Native).await?;
        check_verifier(view.code_challenge.as_ref(), verifier)?;
        if view.claimed_at.is_some() {
            return Err(ServiceError::AlreadyClaimed);
        }
        let (Status::Verified, Some(verified_at)) =
            (view.status_at(self.core.now()), view.verified_at)
        else {
            return Err(ServiceError::NotVerified);
        };
        let audit = self.core.audit.slot()?;
        let (tid, digest, now) = (
            tenant.id.clone(),
            self.key_digest(key.expose()),
            self.core.now(),
        );
        // A claim that commits after this one answered 503 is taken back (claimed at `now`,
        // by this call: nothing else claims a claimed key).
        let (of_tid, of_key) = (tid.clone(), digest.clone());
        let unclaim = move |s: &dyn Store| s.unclaim_code(&of_tid, &of_key, now);
        if !self
            .core
            .write_or_undo(
                move |s| s.claim_code(&tid, &digest, now),
                move |claimed: bool| claimed.then_some(unclaim),
            )
            .await?
        {
            return Err(ServiceError::AlreadyClaimed);
        }
        audit.record(&tenant.id, now, "claim", &view.email, "claimed", ctx);
        Ok(ClaimedOutcome {
            recipient: view.email,
            channel: view.channel,
            purpose: view.purpose,
            verified_at,
            verified_via: view.verified_via.unwrap_or(VerifiedVia::Code),
        })
    }

    /// Claim a verified hosted session's outcome once.
    pub async fn claim_session(
        &self,
        tenant: &Tenant,
        id: &str,
        verifier: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<ClaimedOutcome, ServiceError> {
        let row = self
            .hosted_session_of(tenant, id)
            .await?
            .ok_or(ServiceError::SessionNotFound)?;
        check_verifier(row.session.code_challenge.as_ref(), verifier)?;
        if row.claimed_at.is_some() {
            return Err(ServiceError::AlreadyClaimed);
        }
        let (true, Some(verified_at), Some(email)) =
            (row.verified, row.verified_at, row.session.email)
        else {
            return Err(ServiceError::NotVerified);
        };
        let audit = self.core.audit.slot()?;
        let (tid, sid, now) = (tenant.id.clone(), row.session.id.clone(), self.core.now());
        let (of_tid, of_sid) = (tid.clone(), sid.clone());
        let unclaim = move |s: &dyn Store| s.unclaim_session(&of_tid, &of_sid, now);
        if !self
            .core
            .write_or_undo(
                move |s| s.claim_session(&tid, &sid, now),
                move |claimed: bool| claimed.then_some(unclaim),
            )
            .await?
        {
            return Err(ServiceError::AlreadyClaimed);
        }
        audit.record(&tenant.id, now, "claim", &email, "claimed", ctx);
        Ok(ClaimedOutcome {
            recipient: email,
            channel: Channel::Email,
            purpose: row.session.purpose,
            verified_at,
            verified_via: VerifiedVia::Code,
        })
    }
}
