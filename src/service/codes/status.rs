//! A code by its shareable key: its state (`GET /v1/otp/{key}`, and OtpMint's verify when a
//! guess is malformed) and its cancel.

use crate::domain::challenge::ChallengeView;
use crate::domain::event::EventType;
use crate::domain::keys::{CodeApi, ShareableKey, TenantId};
use crate::service::codes::mint::ended;
use crate::service::core::audit::RequestContext;
use crate::service::events::webhooks::EventData;
use crate::service::{Codes, ServiceError};
use crate::storage::CodeKey;

impl Codes {
    /// The tenant's code of `key`, as the store finds it.
    fn code_key(&self, tenant: &TenantId, key: &ShareableKey, flavor: CodeApi) -> CodeKey {
        CodeKey {
            tenant: tenant.clone(),
            key_digest: self.key_digest(key.expose()),
            flavor,
        }
    }

    pub async fn otp_status(
        &self,
        tenant: &TenantId,
        key: &ShareableKey,
        flavor: CodeApi,
    ) -> Result<ChallengeView, ServiceError> {
        let k = self.code_key(tenant, key, flavor);
        let now = self.core.now();
        let read = k.clone();
        let view = self
            .core
            .db(move |s| s.challenge(&read, now))
            .await?
            .ok_or(ServiceError::OtpNotFound)?;
        // Not `exhausted` while the verify that took its last attempt is still comparing.
        let (view, _) = self
            .settled_view(&k, view, now)
            .await?
            .ok_or(ServiceError::OtpNotFound)?;
        Ok(view)
    }

    pub async fn cancel(
        &self,
        tenant: &TenantId,
        subscribed: Option<&str>,
        key: &ShareableKey,
        flavor: CodeApi,
        ctx: &RequestContext,
    ) -> Result<(), ServiceError> {
        let k = self.code_key(tenant, key, flavor);
        let mut tries = 0;
        let (v, now, audit) = loop {
            tries += 1;
            // Taken before the change it records, and not held through a wait below.
            let audit = self.core.audit.slot()?;
            let now = self.core.now();
            let cancel = k.clone();
            match self.core.db(move |s| s.cancel(&cancel, now)).await? {
                None => return Err(ServiceError::OtpNotFound),
                Some((true, v)) => break (v, now, audit),
                Some((false, v)) => {
                    drop(audit);
                    // Every attempt taken: once their verifies have their outcome the code
                    // is verified or exhausted — or pending again (an attempt given back),
                    // and cancelled then.
                    let (v, now) = self
                        .settled_view(&k, v, now)
                        .await?
                        .ok_or(ServiceError::OtpNotFound)?;
                    let status = v.status_at(now);
                    // Pending twice over: given back and taken again — 503, try again.
                    if status != crate::domain::challenge::Status::Pending || tries > 1 {
                        return Err(ended(status));
                    }
                }
            }
        };
        audit.record(tenant, now, "cancel", &v.email, "cancelled", ctx);
        self.events
            .emit(
                tenant,
                subscribed,
                EventType::OtpCancelled,
                EventData {
                    shareable_key: key.expose(),
                    recipient: &v.email,
                    channel: v.channel,
                    purpose: v.purpose.as_str(),
                    locale: v.locale.as_ref().map(|l| l.as_str()),
                    reason: None,
                },
            )
            .await;
        Ok(())
    }
}
