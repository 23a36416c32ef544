//! Resend under one handle (API.md §13.3): a new code under the same shareable key. The
//! key's earlier codes keep verifying until its (unchanged) expiry, its attempts are shared
//! by all its codes, `otp.max_resends` bounds it, and the recipient's cooldown and quotas
//! apply as to a mint.

use crate::domain::challenge::{ChallengeView, Status};
use crate::domain::code::OtpCode;
use crate::domain::delivery::{DeliveryMode, DeliveryStatus};
use crate::domain::email::RecipientEmail;
use crate::domain::keys::{CodeApi, ShareableKey, TenantId};
use crate::domain::locale::Locale;
use crate::domain::recipient::{PhoneNumber, Recipient};
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::messages::Vars;
use crate::service::codes::mint::{ended, limited, stored_message};
use crate::service::codes::sms_guard::SmsCount;
use crate::service::core::audit::RequestContext;
use crate::service::tenants::test_mode::Destination;
use crate::service::{Codes, ServiceError};
use crate::storage::{
    CodeKey, InboxEntry, NewOutbox, OutboxJob, Queued, Resend, ResendVia, Resent, Store, Unsent,
};

/// A key after a resend.
pub struct ResentKey {
    pub key: ShareableKey,
    pub view: ChallengeView,
    /// Sync: the relay accepted the new message. Async: it is queued.
    pub delivery: DeliveryMode,
    /// Sync: the new message may have reached the person but no answer came.
    pub outcome_unknown: bool,
    /// The locale the new message was written in.
    pub locale: Locale,
}

/// Whether a key can no longer be resent: ended (410 with its state's code) or out of
/// resends (429 `resend_limit_reached`).
fn ended_or_spent(v: &ChallengeView, max_resends: u32, now: Millis) -> Option<ServiceError> {
    let status = v.status_at(now);
    if status != Status::Pending {
        return Some(ended(status));
    }
    (v.resends >= max_resends).then_some(ServiceError::ResendLimit(max_resends))
}

/// Whether the key's last message is still on its way (409): checked after the cooldown and
/// quotas, whose 429 tells when to try again.
fn in_flight(v: &ChallengeView) -> Option<ServiceError> {
    matches!(
        v.delivery.status,
        DeliveryStatus::Queued | DeliveryStatus::Sending
    )
    .then_some(ServiceError::Conflict(
        "the key's last message is still on its way; resend once it was delivered or failed",
    ))
}

/// Why a key cannot be resent now, from its state.
fn why_not(v: &ChallengeView, max_resends: u32, now: Millis) -> Option<ServiceError> {
    ended_or_spent(v, max_resends, now).or_else(|| in_flight(v))
}

impl Codes {
    pub async fn resend(
        &self,
        tenant: &Tenant,
        key: ShareableKey,
        ctx: &RequestContext,
    ) -> Result<ResentKey, ServiceError> {
        let audit = self.core.audit.slot()?;
        let mut recipient = String::new();
        let result = self.resend_inner(tenant, key, &mut recipient).await;
        let outcome = match &result {
            Ok(r) if r.view.test => "test".to_string(),
            Ok(r) if r.delivery == DeliveryMode::Async => "queued".to_string(),
            Ok(_) => "sent".to_string(),
            Err(ServiceError::OtpNotFound) => return result,
            Err(e) => super::refusal_outcome(e),
        };
        audit.record(
            &tenant.id,
            self.core.now(),
            "resend",
            &recipient,
            &outcome,
            ctx,
        );
        result
    }

    /// The key a resend reads (with its current code's hash), once the verifies that took
    /// its attempts have their outcome: every attempt taken, the last perhaps by a verify
    /// still comparing the right code, is not yet exhausted — its outcome decides the answer
    /// (`otp_used`, not `attempts_exhausted`), as a status read or a cancel waits for it
    /// (found by the verify audit). Read anew when it is pending again (an attempt given
    /// back); with the time it was read at.
    async fn settled_target(
        &self,
        tenant: &TenantId,
        digest: &[u8],
        now: Millis,
    ) -> Result<(ChallengeView, String, Millis), ServiceError> {
        let target = |now: Millis| {
            let (tid, d) = (tenant.clone(), digest.to_vec());
            async move {
                self.core
                    .db(move |s| s.resend_target(&tid, &d, now))
                    .await?
                    .ok_or(ServiceError::OtpNotFound)
            }
        };
        let (view, hash) = target(now).await?;
        if view.status_at(now) != Status::Exhausted {
            return Ok((view, hash, now));
        }
        let k = CodeKey {
            tenant: tenant.clone(),
            key_digest: digest.to_vec(),
            flavor: CodeApi::Native,
        };
        let (settled, at) = self
            .settled_view(&k, view, now)
            .await?
            .ok_or(ServiceError::OtpNotFound)?;
        if settled.status_at(at) != Status::Pending {
            // Its hash is not needed: the key refuses a resend.
            return Ok((settled, String::new(), at));
        }
        let (view, hash) = target(at).await?;
        Ok((view, hash, at))
    }

    async fn resend_inner(
        &self,
        tenant: &Tenant,
        key: ShareableKey,
        recipient_seen: &mut String,
    ) -> Result<ResentKey, ServiceError> {
        let now = self.core.now();
        let digest = self.key_digest(key.expose());
        let max_resends = self.core.settings.load().otp.max_resends;
        let (view, current_hash, now) = self.settled_target(&tenant.id, &digest, now).await?;
        recipient_seen.clone_from(&view.email);
        if let Some(e) = ended_or_spent(&view, max_resends, now) {
            return Err(e);
        }
        // A test key, or any key of a tenant now in test mode, is resent to the test inbox.
        let test = view.test || tenant.test;
        let sms = view.channel.is_phone();
        let email = if sms {
            PhoneNumber::parse(&view.email).map(Recipient::Phone)
        } else {
            RecipientEmail::parse(&view.email)
                .ok()
                .map(Recipient::Email)
        }
        .ok_or_else(|| ServiceError::Internal("a stored recipient does not parse".into()))?;
        // The SMS fraud guard sees a resend like a mint (API.md §17.1): the country and type
        // again (the tenant may have taken the country off its list), and the velocity.
        let sms_facts = self
            .send_gate(tenant, &email, &view.purpose, test, now)
            .await?;
        let quota = self.core.quota().for_attempts(view.max_attempts);
        let counted = !test && quota.any();
        // As at mint: a test resend counts against no send limit, but a recipient out of its
        // failure budget is refused like any (API.md §17.8).
        let checked = if test { quota.failures_only() } else { quota };
        if checked.any() {
            // A read first, so a refused resend costs no hash.
            self.quota_read(&tenant.id, &view.email_canonical, checked, now)
                .await?;
        }
        if let Some(e) = in_flight(&view) {
            return Err(e);
        }
        // The new code shares the key's salt: a guess is hashed once for all its codes. A
        // test recipient with a fixed code gets that code again.
        let fixed = match test {
            true => match self
                .tenants
                .destination(tenant, &view.email_canonical, now)
                .await?
            {
                Destination::TestInbox(Some(f)) if f.length == view.code_length => Some(f),
                _ => None,
            },
            false => None,
        };
        let (code, code_hash) = match fixed {
            Some(f) => (None, f.hash),
            None => {
                let code = OtpCode::generate(view.code_length);
                let hasher = &self.core.hasher;
                let hash = hasher
                    .hash_like_in(
                        hasher.slot_for(tenant.id.as_str())?,
                        code.expose(),
                        &current_hash,
                    )
                    .await?;
                (Some(code), hash)
            }
        };
        let masked = "*".repeat(view.code_length as usize);
        let shown = code.as_ref().map_or(masked.as_str(), |c| c.expose());
        let locale = view.locale.clone();
        let written = self
            .tenants
            .render_message(
                tenant,
                locale.as_ref(),
                &Vars {
                    code: shown,
                    ttl_seconds: u32::try_from((view.expires_at - now).max(0) / 1000).unwrap_or(0),
                    expires_at: view.expires_at,
                    app_name: tenant.name.as_str(),
                    purpose: view.purpose.as_str(),
                    email: &view.email,
                    locale: "",
                    link: "",
                },
                sms,
            )
            .await?;
        let message = stored_message(
            tenant,
            written.rendered,
            (&written.locale, view.channel),
            key.expose(),
            (&view.email, view.purpose.as_str()),
        );
        let payload = self.delivery.seal_message(&tenant.id, &digest, &message)?;
        drop(message);
        let mode = view.delivery.mode;
        let via = if test {
            ResendVia::Inbox(InboxEntry {
                recipient: view.email_canonical.clone(),
                payload: payload.clone(),
                per_hour: self.core.settings.load().limits.test_sends_per_hour,
            })
        } else {
            ResendVia::Relay(Queued {
                outbox: NewOutbox {
                    recipient: email.delivery_address(),
                    payload: payload.clone(),
                    lease: Some(self.delivery.lease()),
                    unstarted: mode == DeliveryMode::Async,
                    channel: email.channel(),
                },
                quota: counted.then_some(quota),
            })
        };
        let r = Resend {
            tenant_id: tenant.id.clone(),
            key_digest: digest.clone(),
            code_hash,
            max_resends,
            recipient: view.email_canonical.clone(),
            via,
        };
        let count = sms_facts.map(|facts| SmsCount {
            tenant: tenant.clone(),
            phone: email.canonical().to_string(),
            purpose: view.purpose.clone(),
            facts,
            key_digest: digest.clone(),
            now,
        });
        // A resend that commits after this request answered 503: its message, leased here
        // and never to be sent by this request (sync), or never handed to this process's
        // sender (async), is given up as never sent (delivery `failed`, its quota given
        // back, the key's earlier codes still verifying) — a 503 sends nothing — where it
        // would hold the key (409) until its lease ran out. A test message is in the inbox.
        let unsent = (!test).then(|| {
            let (owner, d) = (self.delivery.lease_owner().to_string(), digest.clone());
            move |s: &dyn Store| {
                s.settle_unsent_sync(&owner, Unsent::Only(d.clone()), now)
                    .map(drop)
            }
        });
        let this = std::sync::Arc::clone(&self.core);
        let store = async move {
            this.write_or_undo(
                move |s| s.resend_code(&r, now),
                move |resent: Resent| unsent.filter(|_| matches!(resent, Resent::Done { .. })),
            )
            .await
        };
        let handed = !test && mode == DeliveryMode::Async;
        if handed {
            self.delivery
                .hold_for_hand_over(&digest, tenant.id.as_str(), view.expires_at);
        }
        let resent = self
            .with_sms_count(count, store, |r| matches!(r, Ok(Resent::Done { .. })))
            .await;
        // Stored nothing: refused, or answered otherwise than 503 (whose change may yet
        // commit, and is undone while its message is held here).
        if handed
            && !matches!(
                &resent,
                Ok(Resent::Done { .. }) | Err(ServiceError::Unavailable(_))
            )
        {
            self.delivery.never_stored(&digest);
        }
        let resends = match resent? {
            Resent::Done { resends } => resends,
            Resent::Refused(q) => return Err(limited(q)),
            Resent::NotNow => {
                // Changed since it was read (a verify took its last attempt, say): say how,
                // from its state now.
                let (v, _, at) = self.settled_target(&tenant.id, &digest, now).await?;
                return Err(
                    why_not(&v, max_resends, at).unwrap_or(ServiceError::Conflict(
                        "the key changed under this request; try again",
                    )),
                );
            }
        };
        let delivery = if test { DeliveryMode::Sync } else { mode };
        let mut outcome_unknown = false;
        if !test {
            let job = OutboxJob {
                key_digest: digest.clone(),
                tenant_id: tenant.id.clone(),
                recipient: email.delivery_address(),
                payload,
                attempts: 0,
                expires_at: view.expires_at,
                mode,
                channel: email.channel(),
            };
            if mode == DeliveryMode::Async {
                // This process's lease, as a mint's (see `NewOutbox::lease`).
                self.delivery.hand_over(job, tenant.clone());
            } else {
                outcome_unknown = self.deliver_now(tenant, job).await?;
            }
        }
        let label = if test { "test" } else { mode.as_str() };
        crate::metrics::inc(|m| &m.codes_resent, &[label]);
        let mut view = view;
        // The count as this resend wrote it: another resend of the key may have counted
        // since the key was read.
        view.resends = resends;
        view.test = test;
        Ok(ResentKey {
            key,
            view,
            delivery,
            outcome_unknown,
            locale: written.locale,
        })
    }
}
