//! Verifying a code: an attempt is reserved atomically in the store before the comparison,
//! so no concurrency evaluates more than `max_attempts` guesses; a miss is explained from
//! the code's state.

use super::otp::ended;
use super::{retry_secs, LimitKind, ServiceError, Services};
use crate::domain::challenge::Status;
use crate::domain::code::OtpCode;
use crate::domain::event::EventType;
use crate::domain::keys::{Flavor, ShareableKey, TenantId};
use crate::domain::Millis;
use crate::service::audit::RequestContext;
use crate::service::webhooks::EventData;

pub struct Verified {
    pub email: String,
    pub purpose: String,
    pub verified_at: Millis,
}

impl Services {
    /// Check a code. Malformed input uses no attempt; the attempt is reserved in the store
    /// before the comparison, so concurrency cannot exceed `max_attempts` evaluations.
    /// `subscribed`: the tenant's webhook event types when the caller has its row (else they
    /// are read if an event is raised).
    pub async fn verify(
        &self,
        tenant: &TenantId,
        subscribed: Option<&str>,
        key: &str,
        code: &str,
        flavor: Flavor,
        ctx: &RequestContext,
    ) -> Result<Verified, ServiceError> {
        let mut recipient = String::new();
        let result = self
            .verify_inner(tenant, subscribed, key, code, flavor, &mut recipient)
            .await;
        let outcome = match &result {
            Ok(_) => "verified",
            Err(ServiceError::Mismatch { .. }) => "mismatch",
            Err(ServiceError::OtpExpired) => "expired",
            Err(ServiceError::OtpUsed) => "used",
            Err(ServiceError::OtpSuperseded) => "superseded",
            Err(ServiceError::OtpCancelled) => "cancelled",
            Err(ServiceError::AttemptsExhausted) => "exhausted",
            Err(ServiceError::OtpNotFound) => "not_found",
            Err(ServiceError::Invalid(_)) => "invalid",
            Err(ServiceError::RateLimited { .. }) => "rate_limited",
            Err(ServiceError::OtpFailed) => "failed",
            Err(ServiceError::Overloaded) => "overloaded",
            Err(_) => "error",
        };
        crate::metrics::inc(|m| &m.verify_outcomes, &[outcome]);
        if let Err(ServiceError::RateLimited { kind, .. }) = &result {
            crate::metrics::inc(|m| &m.rate_limited, &[kind.as_str()]);
        }
        if outcome != "not_found" && outcome != "invalid" {
            self.audit
                .record(tenant, self.now(), "verify", &recipient, outcome, ctx);
        }
        result
    }

    async fn verify_inner(
        &self,
        tenant: &TenantId,
        subscribed: Option<&str>,
        key: &str,
        code: &str,
        flavor: Flavor,
        recipient_seen: &mut String,
    ) -> Result<Verified, ServiceError> {
        let key = ShareableKey::parse(key, flavor).ok_or(ServiceError::OtpNotFound)?;
        let guess =
            OtpCode::parse_guess(code).map_err(|e| ServiceError::field("otp", e.to_string()))?;
        let code = guess.expose();
        let digest = self.key_digest(key.expose());
        let quota = self.quota();
        let now = self.now();
        let tid = tenant.clone();
        let d = digest.clone();
        let len = code.len() as u32;
        // Admission to the hashing pool first: overload is refused before any state changes.
        let slot = self.hasher.slot()?;
        let reserved = self
            .write(move |s| s.reserve_attempt(&tid, &d, flavor, len, &quota, now))
            .await?;
        let Some(res) = reserved else {
            // No hashing will happen: give the admission back before the explanatory reads.
            drop(slot);
            return Err(self.why_not(tenant, &digest, flavor, now, code.len()).await);
        };
        recipient_seen.clone_from(&res.email);
        let matched = match self.hasher.verify_stored(slot, code, &res.code_hash).await {
            Ok(m) => m,
            Err(e) => {
                // Never evaluated: the attempt and the failure budget are given back.
                let tid = tenant.clone();
                let d = digest.clone();
                let r = res.email_canonical.clone();
                let _ = self.write(move |s| s.release_attempt(&tid, &d, &r)).await;
                return Err(e.into());
            }
        };
        if matched {
            let t = self.now();
            let d = digest.clone();
            let tid = tenant.clone();
            // A match resets the recipient's failure budget, in the same commit.
            let clear = (quota.max_failures > 0).then(|| res.email_canonical.clone());
            // `otp.verified` commits with the verify itself.
            let event = self.event_for(
                tenant,
                subscribed,
                EventType::OtpVerified,
                EventData {
                    shareable_key: key.expose(),
                    email: &res.email,
                    purpose: &res.purpose,
                    locale: res.locale.as_deref(),
                    reason: None,
                },
            );
            let raised = event.is_some();
            if self
                .write(move |s| s.finish_verify(&tid, &d, t, event.as_ref(), clear.as_deref()))
                .await?
            {
                if raised {
                    self.wake_hooks();
                }
                return Ok(Verified {
                    email: res.email,
                    purpose: res.purpose,
                    verified_at: t,
                });
            }
            return Err(self.why_not(tenant, &digest, flavor, t, code.len()).await);
        }
        // The failure was counted against the recipient's budget with the reservation.
        let attempts_remaining = res.max_attempts.saturating_sub(res.attempts);
        if attempts_remaining == 0 {
            self.emit(
                tenant,
                subscribed,
                EventType::OtpAttemptsExhausted,
                EventData {
                    shareable_key: key.expose(),
                    email: &res.email,
                    purpose: &res.purpose,
                    locale: res.locale.as_deref(),
                    reason: None,
                },
            )
            .await;
        }
        Err(ServiceError::Mismatch { attempts_remaining })
    }

    /// Why no attempt could be reserved: unknown, ended, or the recipient is blocked.
    async fn why_not(
        &self,
        tenant: &TenantId,
        digest: &[u8],
        flavor: Flavor,
        now: Millis,
        code_len: usize,
    ) -> ServiceError {
        let tid = tenant.clone();
        let d = digest.to_vec();
        let view = match self.db(move |s| s.challenge(&tid, &d, flavor)).await {
            Ok(Some(v)) => v,
            Ok(None) => return ServiceError::OtpNotFound,
            Err(e) => return e,
        };
        let status = view.status_at(now);
        if status == Status::Pending {
            if code_len != view.code_length as usize {
                return ServiceError::field(
                    "otp",
                    format!("must be {} ASCII digits", view.code_length),
                );
            }
            let quota = self.quota();
            let tid = tenant.clone();
            let recipient = view.email_canonical.clone();
            if let Ok(Some(until)) = self
                .db(move |s| s.failures_blocked(&tid, &recipient, &quota, now))
                .await
            {
                return ServiceError::RateLimited {
                    retry_after_secs: retry_secs(until - now),
                    kind: LimitKind::Failures,
                };
            }
        }
        ended(status)
    }
}
