//! The SMS fraud guard at mint (API.md §17.1): the tenant's countries and the number's
//! type first (no store), then the velocity limits, checked and counted in one step.
//! Every refusal is audited by the mint, counted in the statistics and raised as
//! `otp.blocked`.

use crate::domain::event::EventType;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::Channel;
use crate::domain::sms_guard::{screen, NumberFacts, Screened};
use crate::domain::stats::{BlockReason, CodeDims, Counted};
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::service::events::webhooks::EventData;
use crate::service::{Codes, ServiceError};
use crate::storage::stats::Bump;
use crate::storage::Store;

/// A number the guard let through, and whether it was counted (to give back if the mint
/// does not go ahead).
pub(super) struct Admitted {
    /// The counted row: the code's key digest and when it was counted.
    counted: Option<(Vec<u8>, Millis)>,
}

/// An SMS to count against the velocity limits, for the code of `key_digest`.
pub(super) struct SmsCount {
    pub tenant: Tenant,
    pub phone: String,
    pub purpose: Purpose,
    pub facts: NumberFacts,
    pub key_digest: Vec<u8>,
    pub now: Millis,
}

impl Codes {
    /// Whether the tenant texts numbers like this one at all: its countries, the number's
    /// validity and type (no store; before any hashing).
    pub(super) async fn screen_sms(
        &self,
        tenant: &Tenant,
        phone: &str,
        purpose: &Purpose,
        now: Millis,
    ) -> Result<NumberFacts, ServiceError> {
        let facts = NumberFacts::of(phone);
        if let Err(s) = screen(&tenant.sms, &facts) {
            let (reason, err) = match s {
                Screened::CountryNotAllowed => (
                    BlockReason::CountryNotAllowed,
                    ServiceError::SmsCountryNotAllowed(facts.country.clone()),
                ),
                Screened::NumberNotAllowed(why) => (
                    BlockReason::NumberNotAllowed,
                    ServiceError::PhoneNumberNotAllowed(why),
                ),
            };
            self.blocked(tenant, phone, purpose, reason, now).await;
            return Err(err);
        }
        Ok(facts)
    }

    /// Check the velocity limits and count the SMS (unless its number is trusted), then
    /// run `store` (the write that stores what was counted for), as one task that finishes
    /// even when the request goes away mid-way — actix drops a handler's future when its
    /// client disconnects, and a count whose code was never stored would hold the number's
    /// range for the hour. Unless `kept` says the stored outcome keeps the count, it is
    /// given back. Without `count` (not an SMS, or one that sends nothing) only `store` runs.
    pub(super) async fn with_sms_count<T: Send + 'static>(
        &self,
        count: Option<SmsCount>,
        store: impl std::future::Future<Output = Result<T, ServiceError>> + Send + 'static,
        kept: fn(&Result<T, ServiceError>) -> bool,
    ) -> Result<T, ServiceError> {
        let Some(count) = count else {
            return store.await;
        };
        let this = self.clone();
        let task = async move {
            let admitted = this.count_sms(count).await?;
            let out = store.await;
            if !kept(&out) {
                this.release_sms(admitted).await;
            }
            out
        };
        tokio::spawn(tracing::Instrument::instrument(
            task,
            tracing::Span::current(),
        ))
        .await
        .map_err(|e| ServiceError::Internal(format!("counting an SMS failed: {e}")))?
    }

    async fn count_sms(&self, c: SmsCount) -> Result<Admitted, ServiceError> {
        let SmsCount {
            tenant,
            phone,
            purpose,
            facts,
            key_digest,
            now,
        } = c;
        match self
            .core
            .take_sms_place(&tenant, &phone, facts, &key_digest, now)
            .await
        {
            Ok(counted) => Ok(Admitted {
                counted: counted.then_some((key_digest, now)),
            }),
            Err(e @ ServiceError::SmsVelocity { .. }) => {
                self.blocked(&tenant, &phone, &purpose, BlockReason::Velocity, now)
                    .await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Give back an SMS the guard counted for a mint that did not go ahead.
    async fn release_sms(&self, admitted: Admitted) {
        if let Some((d, at)) = admitted.counted {
            if let Err(e) = self.core.write(move |s| s.release_sms(&d, at)).await {
                tracing::warn!(error = %e, "giving back an SMS of the fraud guard's count failed");
            }
        }
    }

    /// A refusal's statistics and `otp.blocked` (the mint audits it).
    async fn blocked(
        &self,
        tenant: &Tenant,
        phone: &str,
        purpose: &Purpose,
        reason: BlockReason,
        now: Millis,
    ) {
        crate::metrics::inc(|m| &m.sms_blocked, &[reason.as_str()]);
        let (tid, dims) = (
            tenant.id.clone(),
            CodeDims::of(purpose.as_str(), None, "sms", phone),
        );
        let count = move |s: &dyn Store| {
            s.count_blocked(&Bump {
                tenant: tid.as_str(),
                created_at: now,
                dims: &dims,
                what: Counted::Blocked(reason),
            })
        };
        if let Err(e) = self.core.write(count).await {
            tracing::warn!(error = %e, "counting a blocked SMS in the statistics failed");
        }
        self.events
            .emit(
                &tenant.id,
                Some(tenant.webhook_events.as_str()),
                EventType::OtpBlocked,
                EventData {
                    shareable_key: "",
                    recipient: phone,
                    channel: Channel::Sms,
                    purpose: purpose.as_str(),
                    locale: None,
                    reason: Some(reason.as_str()),
                },
            )
            .await;
    }
}
