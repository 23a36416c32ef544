//! Code use cases: mint (quota → hash → store → send → supersede), status and cancel
//! (verify is in verify/).

use crate::crypto::lookup_digest;
use crate::domain::challenge::Status;
use crate::domain::code::OtpCode;
use crate::domain::delivery::DeliveryMode;
use crate::domain::keys::{CodeApi, ShareableKey, TenantId};
use crate::domain::locale::Locale;
use crate::domain::policy::Policy;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::{Channel, Recipient};
use crate::domain::tenant::Tenant;
use crate::domain::Millis;
use crate::mailer::new_message_id;
use crate::messages::Vars;
use crate::service::codes::sms_guard::SmsCount;
use crate::service::core::audit::RequestContext;
use crate::service::core::retry_secs;
use crate::service::delivery::{Attempt, StoredMessage};
use crate::service::tenants::test_mode::Destination;
use crate::service::{Codes, LimitKind, ServiceError};
use crate::storage::{
    CodeKey, InboxEntry, NewChallenge, NewOutbox, OutboxJob, Queued, QuotaAsk, QuotaRefusal,
    SendQuota, Store, Unsent,
};

pub const KEY_LABEL: &str = "shareable-key";

/// What a mint asks for, parsed.
#[derive(Debug)]
pub struct MintRequest {
    /// An address, or a phone number for a text message (API.md §12.3).
    pub to: Recipient,
    pub purpose: Purpose,
    pub flavor: CodeApi,
    /// Default: the tenant's.
    pub delivery: Option<DeliveryMode>,
    /// The first step of the locale chain, if the request names one.
    pub locale: Option<Locale>,
    /// A magic link beside the code (API.md §14.2).
    pub link: Option<crate::service::codes::links::LinkRequest>,
    /// Under an idempotency key: where its answer is left once the code is stored.
    pub stage: Option<crate::service::codes::idempotency::Stage>,
}

pub struct Minted {
    pub key: ShareableKey,
    pub expires_at: Millis,
    pub policy: Policy,
    /// Sync: the relay accepted the message. Async: the message is queued.
    pub delivery: DeliveryMode,
    /// The locale the message was written in.
    pub locale: Locale,
    /// The tenant's template for that locale could not be used (it failed, or its message
    /// would not have shown the code): the built-in one was.
    pub template_fallback: bool,
    /// A test mint: the message went to the tenant's test inbox, not to any relay.
    pub test: bool,
    /// Sync: the message may have reached the person but no answer came (API.md §19.2):
    /// its delivery is `unknown` and the code is valid.
    pub outcome_unknown: bool,
}

/// A quota refusal as the error clients see, counted in the metrics.
pub(super) fn limited(r: QuotaRefusal) -> ServiceError {
    let e = refusal(r);
    if let ServiceError::RateLimited { kind, .. } = &e {
        crate::metrics::inc(|m| &m.rate_limited, &[kind.as_str()]);
    }
    e
}

pub(super) fn refusal(r: QuotaRefusal) -> ServiceError {
    let (kind, ms) = match r {
        QuotaRefusal::Recipient { retry_after_ms } => (LimitKind::Recipient, retry_after_ms),
        QuotaRefusal::Cooldown { retry_after_ms } => (LimitKind::Cooldown, retry_after_ms),
        QuotaRefusal::Tenant { retry_after_ms } => (LimitKind::Tenant, retry_after_ms),
        QuotaRefusal::Failures { retry_after_ms } => (LimitKind::Failures, retry_after_ms),
        QuotaRefusal::TestSends { retry_after_ms } => (LimitKind::TestSends, retry_after_ms),
    };
    ServiceError::RateLimited {
        retry_after_secs: retry_secs(ms),
        kind,
    }
}

/// The error a code's final state answers with.
pub(super) fn ended(status: Status) -> ServiceError {
    match status {
        Status::Expired => ServiceError::OtpExpired,
        Status::Exhausted => ServiceError::AttemptsExhausted,
        Status::Verified => ServiceError::OtpUsed,
        Status::Superseded => ServiceError::OtpSuperseded,
        Status::Cancelled => ServiceError::OtpCancelled,
        Status::Failed => ServiceError::OtpFailed,
        // Still live, though what was asked of it did not take: its state moved between the
        // two reads (attempts held by a concurrent verify were given back, a limit's window
        // ended). Not "unknown key": the same request may be tried again.
        Status::Pending => ServiceError::Overloaded,
    }
}

/// A message as it is sealed in the outbox: an email, or (a channel to a phone) a text
/// message whose text is the rendered `sms` part (the built-in one when the template has
/// none). Every channel but email is named in it (absent: email).
pub(super) fn stored_message(
    tenant: &Tenant,
    rendered: crate::messages::Rendered,
    (locale, channel): (&Locale, Channel),
    key: &str,
    (to, purpose): (&str, &str),
) -> StoredMessage {
    let sms = channel.is_phone();
    let (subject, text, html) = match (sms, rendered.sms) {
        (true, Some(t)) => (String::new(), t, None),
        _ => (rendered.subject, rendered.text, rendered.html),
    };
    StoredMessage {
        subject,
        text,
        html,
        message_id: new_message_id(tenant.sender().unwrap_or("otpmint.invalid")),
        shareable_key: Some(key.to_string()),
        recipient: to.to_string(),
        purpose: purpose.to_string(),
        locale: Some(locale.as_str().to_string()),
        channel: (channel != Channel::Email).then(|| channel.as_str().to_string()),
    }
}

impl Codes {
    /// Every quota of a send to `recipient`, read before a mint or resend hashes anything (a
    /// refused one costs no hash); the write that counts the send checks again, atomically.
    pub(super) async fn quota_read(
        &self,
        tenant: &TenantId,
        recipient: &str,
        quota: SendQuota,
        now: Millis,
    ) -> Result<(), ServiceError> {
        let (tid, c2) = (tenant.clone(), recipient.to_string());
        let ask = move |s: &dyn Store| s.check_quota(&QuotaAsk::new(&tid, &c2, &quota, now));
        self.core.db(ask).await?.map_err(limited)
    }

    pub(super) fn key_digest(&self, key: &str) -> Vec<u8> {
        lookup_digest(self.core.keyring.get().pepper(), KEY_LABEL, key)
    }

    /// The policy a new code of this flavor gets.
    pub fn policy_for(&self, tenant: &Tenant, flavor: CodeApi) -> Policy {
        match flavor {
            CodeApi::Native => tenant.policy,
            CodeApi::Compat => Policy {
                code_length: 6,
                ttl_seconds: self.core.settings.load().otp.ttl_seconds,
                max_attempts: self.core.settings.load().compat.max_attempts,
            },
        }
    }

    pub async fn mint(
        &self,
        tenant: &Tenant,
        req: MintRequest,
        ctx: &RequestContext,
    ) -> Result<Minted, ServiceError> {
        let MintRequest {
            to: email,
            purpose,
            flavor,
            delivery,
            locale,
            link,
            stage,
        } = req;
        let to = email.delivery_address();
        // Room for the mint's audit entry, and for a template fallback's, before any work.
        let (audit, fallback_audit) = (self.core.audit.slot()?, self.core.audit.slot()?);
        let mode = match flavor {
            // OtpMint's clients expect the message to have left when /otp answers.
            CodeApi::Compat => DeliveryMode::Sync,
            CodeApi::Native => delivery.unwrap_or(tenant.delivery),
        };
        let result = self
            .mint_inner(
                tenant,
                email,
                purpose,
                (flavor, mode),
                locale.as_ref(),
                link.as_ref(),
                stage.as_ref(),
            )
            .await;
        let outcome = match &result {
            Ok(m) if m.test => "test".to_string(),
            Ok(m) if m.delivery == DeliveryMode::Async => "queued".to_string(),
            Ok(_) => "sent".to_string(),
            Err(e) => super::refusal_outcome(e),
        };
        let now = self.core.now();
        audit.record(&tenant.id, now, "mint", &to, &outcome, ctx);
        if let Ok(m) = &result {
            if m.template_fallback {
                fallback_audit.record(
                    &tenant.id,
                    now,
                    "template.fallback",
                    &to,
                    m.locale.as_str(),
                    ctx,
                );
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn mint_inner(
        &self,
        tenant: &Tenant,
        recipient: Recipient,
        purpose: Purpose,
        (flavor, mode): (CodeApi, DeliveryMode),
        locale: Option<&Locale>,
        link: Option<&crate::service::codes::links::LinkRequest>,
        stage: Option<&crate::service::codes::idempotency::Stage>,
    ) -> Result<Minted, ServiceError> {
        let mut policy = self.policy_for(tenant, flavor);
        let quota = self.core.quota().for_attempts(policy.max_attempts);
        let now = self.core.now();
        // A test recipient's (or a test tenant's) mint goes to the test inbox: it counts
        // against the test sends only, and with a fixed code needs no new hash.
        let destination = self
            .tenants
            .destination(tenant, recipient.canonical(), now)
            .await?;
        let test = destination != Destination::Deliver;
        let sms = recipient.channel().is_phone();
        let sms_facts = self
            .send_gate(tenant, &recipient, &purpose, test, now)
            .await?;
        let link_plan = link.map(|l| self.plan_link(tenant, l, sms)).transpose()?;
        let mode = if test { DeliveryMode::Sync } else { mode };
        // With every limit off there is nothing to check or count.
        let counted = !test && quota.any();
        // A test mint counts against no send limit, but a recipient out of its failure
        // budget is refused like any (API.md §17.8).
        let checked = if test { quota.failures_only() } else { quota };
        if checked.any() {
            // A read first, so a refused mint costs no hash; the counting write below
            // checks again atomically.
            self.quota_read(&tenant.id, recipient.canonical(), checked, now)
                .await?;
        }
        let (code, code_hash) = match &destination {
            Destination::TestInbox(Some(fixed)) => {
                policy.code_length = fixed.length;
                (None, fixed.hash.clone())
            }
            _ => {
                let code = OtpCode::generate(policy.code_length);
                let hasher = &self.core.hasher;
                let hash = hasher
                    .hash_in(hasher.slot_for(tenant.id.as_str())?, code.expose())
                    .await?;
                (Some(code), hash)
            }
        };
        // A fixed code is never shown again, not even in the test inbox.
        let masked = "*".repeat(policy.code_length as usize);
        let shown = code.as_ref().map_or(masked.as_str(), |c| c.expose());
        let key = ShareableKey::generate(flavor);
        let expires_at = crate::domain::whole_second(now + i64::from(policy.ttl_seconds) * 1000);
        let key_digest = self.key_digest(key.expose());
        let (link_url, link_row) = match &link_plan {
            Some(plan) => {
                let (url, row) = self.make_link(tenant, plan, key.expose())?;
                (url, Some(row))
            }
            None => (String::new(), None),
        };
        let mut written = self
            .tenants
            .render_message(
                tenant,
                locale,
                &Vars {
                    code: shown,
                    ttl_seconds: policy.ttl_seconds,
                    expires_at,
                    app_name: tenant.name.as_str(),
                    purpose: purpose.as_str(),
                    email: recipient.as_given(),
                    locale: "",
                    link: &link_url,
                },
                sms,
            )
            .await?;
        if !link_url.is_empty() {
            crate::messages::ensure_link(&mut written.rendered, &link_url);
        }
        let mut challenge = NewChallenge {
            key_digest: key_digest.clone(),
            tenant_id: tenant.id.clone(),
            flavor,
            email: recipient.as_given().to_string(),
            email_canonical: recipient.canonical().to_string(),
            purpose: purpose.clone(),
            code_hash,
            max_attempts: policy.max_attempts,
            code_length: policy.code_length,
            created_at: now,
            expires_at,
            delivery_mode: mode,
            locale: Some(written.locale.clone()),
            channel: recipient.channel(),
            link: link_row,
            staged: None,
        };
        let message = stored_message(
            tenant,
            written.rendered,
            (&written.locale, recipient.channel()),
            key.expose(),
            (recipient.as_given(), purpose.as_str()),
        );
        let payload = self
            .delivery
            .seal_message(&tenant.id, &key_digest, &message)?;
        drop(message);
        let minted = Minted {
            key,
            expires_at,
            policy,
            delivery: mode,
            locale: written.locale,
            template_fallback: written.fallback,
            test,
            outcome_unknown: false,
        };
        // Its answers, kept with its idempotency key in the code's own transaction.
        challenge.staged = stage.and_then(|s| s.answers(&minted));
        // The new code, as an undo of a store that committed after its 503 names it.
        let code = CodeKey {
            tenant: tenant.id.clone(),
            key_digest: key_digest.clone(),
            flavor: challenge.flavor,
        };
        if test {
            let inbox = InboxEntry {
                recipient: recipient.canonical().to_string(),
                payload,
                per_hour: self.core.settings.load().limits.test_sends_per_hour,
            };
            // A test code stored after its 503 is cancelled: nothing verifies it.
            let undo = move |s: &dyn Store| s.cancel(&code, now).map(drop);
            self.core
                .write_or_undo(
                    move |s| s.insert_test_code(&challenge, &inbox, now),
                    move |stored: Result<(), _>| stored.is_ok().then_some(undo),
                )
                .await?
                .map_err(limited)?;
            crate::metrics::inc(|m| &m.codes_minted, &["test"]);
            if let Some(stage) = stage {
                stage.stored(&minted, &key_digest);
            }
            return Ok(minted);
        }
        let queued = Queued {
            outbox: NewOutbox {
                recipient: recipient.delivery_address(),
                payload: payload.clone(),
                lease: Some(self.delivery.lease()),
                unstarted: mode == DeliveryMode::Async,
                channel: recipient.channel(),
            },
            quota: counted.then_some(quota),
        };
        let count = sms_facts.map(|facts| SmsCount {
            tenant: tenant.clone(),
            phone: recipient.canonical().to_string(),
            purpose: purpose.clone(),
            facts,
            key_digest: key_digest.clone(),
            now,
        });
        // Store first, send second: one durable commit holds the quota count, the code
        // and its message. A mint whose code cannot be stored answers 503 and sends nothing:
        // a store that commits after the 503 (the database answered too late) is undone —
        // a sync message this process leased given up as never sent (its quota given back,
        // where its lease would run out into `unknown`), the code cancelled before anything
        // sends it.
        let (this, c) = (std::sync::Arc::clone(&self.core), challenge.clone());
        let owner = self.delivery.lease_owner().to_string();
        let undo = move |s: &dyn Store| {
            s.settle_unsent_sync(&owner, Unsent::Only(code.key_digest.clone()), now)?;
            s.cancel(&code, now).map(drop)
        };
        let store = async move {
            // Refused by a quota, it stored nothing.
            let undo_of = move |stored: Result<(), _>| stored.is_ok().then_some(undo);
            this.write_or_undo(move |s| s.insert_code(&c, &queued, now), undo_of)
                .await?
                .map_err(limited)
        };
        let handed = mode == DeliveryMode::Async;
        if handed {
            self.delivery
                .hold_for_hand_over(&key_digest, tenant.id.as_str(), expires_at);
        }
        let stored = self.with_sms_count(count, store, Result::is_ok).await;
        if handed && matches!(&stored, Err(e) if !matches!(e, ServiceError::Unavailable(_))) {
            self.delivery.never_stored(&key_digest);
        }
        stored?;
        if let Some(stage) = stage {
            stage.stored(&minted, &key_digest);
        }
        let job = OutboxJob {
            key_digest,
            tenant_id: tenant.id.clone(),
            recipient: recipient.delivery_address(),
            payload,
            attempts: 0,
            expires_at,
            mode,
            channel: recipient.channel(),
        };
        // Stored: minted, whatever its delivery does (a failed one counts, as in the stats).
        crate::metrics::inc(|m| &m.codes_minted, &[mode.as_str()]);
        if mode == DeliveryMode::Async {
            // Its row is this process's lease: sent by this process's sender, now that its
            // store answered in time.
            self.delivery.hand_over(job, tenant.clone());
            return Ok(minted);
        }
        let outcome_unknown = self.deliver_now(tenant, job).await?;
        Ok(Minted {
            outcome_unknown,
            ..minted
        })
    }

    /// Send a sync message this process holds the lease of, and wait for the outcome:
    /// `true` when it is unknown (the message may have reached the person; the code stays
    /// valid and nothing sends it again by itself).
    pub(super) async fn deliver_now(
        &self,
        tenant: &Tenant,
        job: OutboxJob,
    ) -> Result<bool, ServiceError> {
        // On a task of its own: a client that goes away does not cut the send or the record
        // of its outcome in half (the message and its lease stay this process's until then).
        let (me, owner) = (std::sync::Arc::clone(&self.delivery), tenant.clone());
        let attempt = tokio::spawn(tracing::Instrument::instrument(
            async move { me.attempt(&job, &owner, None).await },
            tracing::Span::current(),
        ))
        .await
        .map_err(|e| ServiceError::Internal(format!("delivery task failed: {e}")))?;
        match attempt {
            Attempt::Sent => Ok(false),
            Attempt::Unknown(_) => Ok(true),
            // A failed sync delivery: the code is `failed` (it can never verify) unless an
            // earlier message of its key was accepted, the quota given back when nothing can
            // have reached the relay, the earlier code untouched.
            Attempt::Failed(reason, code) | Attempt::Retry(reason, code) => {
                Err(ServiceError::Delivery(reason, code))
            }
            // A sync message always opens (this process sealed it a moment ago).
            Attempt::NotMade => Err(ServiceError::Unavailable(
                "the message could not be sent now".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ErrorCode;

    #[test]
    fn a_live_code_whose_ask_did_not_take_is_told_to_try_again_not_that_it_is_unknown() {
        assert_eq!(ended(Status::Pending).code(), ErrorCode::Overloaded);
        // Every final state answers its own 410 (or 404 for none).
        for (s, c) in [
            (Status::Expired, ErrorCode::OtpExpired),
            (Status::Exhausted, ErrorCode::AttemptsExhausted),
            (Status::Verified, ErrorCode::OtpUsed),
            (Status::Superseded, ErrorCode::OtpSuperseded),
            (Status::Cancelled, ErrorCode::OtpCancelled),
            (Status::Failed, ErrorCode::OtpFailed),
        ] {
            assert_eq!(ended(s).code(), c);
        }
    }
}
