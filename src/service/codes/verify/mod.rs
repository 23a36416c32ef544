//! Verifying a code: an attempt is reserved atomically in the store before the comparison,
//! so no concurrency evaluates more than `max_attempts` guesses; a miss is explained from
//! the code's state.

use crate::domain::challenge::VerifiedVia;
use crate::domain::code::OtpCode;
use crate::domain::event::EventType;
use crate::domain::keys::{CodeApi, ShareableKey, TenantId};
use crate::domain::locale::Locale;
use crate::domain::purpose::Purpose;
use crate::domain::recipient::Channel;
use crate::domain::Millis;
use crate::service::core::audit::RequestContext;
use crate::service::events::webhooks::EventData;
use crate::service::{Codes, ErrorCode, ServiceError};
use crate::storage::{AttemptAsk, CodeKey, Reservation, Reserved, Store, TestGuess, VerifyFinish};

mod caller;

pub use caller::Caller;
use caller::{Lookup, Resolved};

pub struct Verified {
    /// The address or number as it was given at the mint.
    pub recipient: String,
    pub channel: Channel,
    pub purpose: Purpose,
    pub verified_at: Millis,
}

/// What a verify did: its result, and the tenant it was for once known (`None`: a wrong
/// secret, an unknown key, or a store that could not say) — for the access log and metrics.
pub struct VerifyOutcome {
    pub tenant: Option<TenantId>,
    pub result: Result<Verified, ServiceError>,
}

/// One verify's steps as they went: the tenant found (if it was), the recipient seen (once
/// the attempt was reserved) and the result.
struct Steps {
    resolved: Resolved,
    recipient: String,
    result: Result<Verified, ServiceError>,
}

/// A number for each attempt this process reserves (part of its stamp).
fn next_reservation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Codes {
    /// Check a code. Malformed input uses no attempt; the attempt is reserved in the store
    /// before the comparison, so concurrency cannot exceed `max_attempts` evaluations.
    /// Also returns the tenant, once known (`None`: a wrong secret, an unknown key, or a store
    /// that could not say).
    ///
    /// On a task of its own: a verify whose client goes away (actix drops a handler's work
    /// when its connection is reset) still ends as it would have — a right code verifies the
    /// key, a wrong one's attempt is no longer open — instead of stopping between its
    /// reservation and its outcome, the key left pending with an attempt used and open. (The
    /// task runs on the worker's runtime: a process that stops meanwhile still cuts it, as
    /// it cuts any request; the 2 s bound on waits covers that.)
    pub async fn verify(
        &self,
        caller: Caller,
        key: &str,
        code: &str,
        flavor: CodeApi,
        ctx: &RequestContext,
    ) -> VerifyOutcome {
        let (this, key, code, ctx) = (self.clone(), key.to_string(), code.to_string(), ctx.clone());
        let task = async move { this.verify_here(&caller, &key, &code, flavor, &ctx).await };
        tokio::spawn(tracing::Instrument::instrument(
            task,
            tracing::Span::current(),
        ))
        .await
        .unwrap_or_else(|e| VerifyOutcome {
            tenant: None,
            result: Err(ServiceError::Internal(format!("verify task failed: {e}"))),
        })
    }

    async fn verify_here(
        &self,
        caller: &Caller,
        key: &str,
        code: &str,
        flavor: CodeApi,
        ctx: &RequestContext,
    ) -> VerifyOutcome {
        let audit = match self.core.audit.slot() {
            Ok(a) => a,
            Err(e) => {
                return VerifyOutcome {
                    tenant: None,
                    result: Err(e),
                }
            }
        };
        let Steps {
            resolved,
            recipient,
            result,
        } = self.verify_steps(caller, key, code, (flavor, ctx)).await;
        let outcome = match result.as_ref().map_err(ServiceError::code) {
            Ok(_) => "verified",
            Err(ErrorCode::OtpMismatch) => "mismatch",
            Err(ErrorCode::OtpExpired) => "expired",
            Err(ErrorCode::OtpUsed) => "used",
            Err(ErrorCode::OtpSuperseded) => "superseded",
            Err(ErrorCode::OtpCancelled) => "cancelled",
            Err(ErrorCode::AttemptsExhausted) => "exhausted",
            Err(ErrorCode::OtpNotFound) => "not_found",
            Err(ErrorCode::InvalidRequest) => "invalid",
            Err(ErrorCode::RateLimited) => "rate_limited",
            Err(ErrorCode::OtpFailed) => "failed",
            Err(ErrorCode::Overloaded) => "overloaded",
            Err(_) => "error",
        };
        let Some((tenant, _)) = resolved else {
            // No tenant: not authenticated, or the store did not answer who (no verify, not
            // counted), or a key no tenant owns (the compat route and the pages find the
            // tenant by the key): counted as the native route counts it, with nobody's audit
            // to write to.
            if matches!(outcome, "not_found" | "invalid") {
                crate::metrics::inc(|m| &m.verify_outcomes, &[outcome]);
            }
            return VerifyOutcome {
                tenant: None,
                result,
            };
        };
        crate::metrics::inc(|m| &m.verify_outcomes, &[outcome]);
        if let Err(ServiceError::RateLimited { kind, .. }) = &result {
            crate::metrics::inc(|m| &m.rate_limited, &[kind.as_str()]);
        }
        if outcome != "not_found" && outcome != "invalid" {
            audit.record(&tenant, self.core.now(), "verify", &recipient, outcome, ctx);
        }
        VerifyOutcome {
            tenant: Some(tenant),
            result,
        }
    }

    async fn verify_steps(
        &self,
        caller: &Caller,
        key: &str,
        code: &str,
        (flavor, ctx): (CodeApi, &RequestContext),
    ) -> Steps {
        let mut resolved: Resolved = None;
        let mut recipient = String::new();
        let result = async {
        let key = ShareableKey::parse(key, flavor);
        let digest = key.as_ref().map(|k| self.key_digest(k.expose()));
        let lookup = match caller {
            Caller::Secret(secret) => Lookup::Secret(self.tenants.secret_digest(secret)),
            Caller::KeyOwner | Caller::Page(_) => match &digest {
                Some(d) => Lookup::KeyOwner(d.clone()),
                // A malformed key has no owner.
                None => return Err(ServiceError::OtpNotFound),
            },
        };
        let now = self.core.now();
        let (Some(key), Some(digest)) = (key, digest) else {
            let e = ServiceError::OtpNotFound;
            let (found, e) = self.refuse(lookup, flavor, now, e).await;
            resolved = found;
            return Err(e);
        };
        let guess = match OtpCode::parse_guess(code) {
            Ok(g) => g,
            Err(e) => {
                let e = ServiceError::field("otp", e.to_string());
                let (found, e) = self.refuse(lookup, flavor, now, e).await;
                resolved = found;
                return Err(e);
            }
        };
        let code = guess.expose();
        // Under way until this verify ends: one that finds no attempt left waits for it.
        let mut under = self.turns.enter(&digest).await;
        let quota = self.core.quota();
        let d = digest.clone();
        let len = code.len() as u32;
        let hasher = self.core.hasher.clone();
        let find = lookup.clone();
        // The reservation's stamp, which names it when it is given back: this process's
        // lease owner (which other instances read, API.md §7) and a number of its own, so no
        // two reservations share one (a release retried late never gives back another's).
        let by = format!("{}#{}", self.delivery.lease_owner(), next_reservation());
        let stamp = (now, by.clone());
        // A reservation that commits after this verify answered 503 is given back: the
        // attempt and the failure budget it took, named by its stamp.
        let (of_key, given_back) = (digest.clone(), by.clone());
        let undo_of = move |reserved: Option<(TenantId, _, Result<Option<(_, Reservation)>, _>)>| {
            let Some((tid, _, Ok(Some((_slot, res))))) = reserved else {
                return None;
            };
            let who = res.email_canonical;
            Some(move |s: &dyn Store| s.release_attempt(&tid, &of_key, &who, (now, &given_back)))
        };
        let reserved = self
            .core.write_or_undo(move |s| {
                let Some((tid, subscribed)) = find.find(s, flavor, now)? else {
                    return Ok(None);
                };
                // Admission to the hashing pool once the tenant is known and before any state
                // changes: overload is refused with no attempt used, and a request without a
                // credential never holds a slot. A reservation that fails gives it back here.
                let admitted = match hasher.slot_for(tid.as_str()) {
                    Ok(slot) => {
                        let code = CodeKey { tenant: tid.clone(), key_digest: d, flavor };
                        let ask = AttemptAsk { code, code_len: len, quota, by };
                        Ok(s.reserve_attempt(&ask, now)?.map(|r| (slot, r)))
                    }
                    Err(e) => Err(e),
                };
                Ok(Some((tid, subscribed, admitted)))
            }, undo_of)
            .await;
        let reserved = match reserved {
            Ok(r) => r,
            // The store failed (its writer busy, a batch aborted): a wrong secret or an unknown
            // key is still told apart from a store that cannot answer.
            Err(e) => {
                let (found, e) = self.refuse(lookup, flavor, now, e).await;
                resolved = found;
                return Err(e);
            }
        };
        let Some((tid, subscribed, admitted)) = reserved else {
            return Err(lookup.missing());
        };
        let (tenant, subscribed) = &*resolved.get_or_insert((tid, subscribed));
        let subscribed = subscribed.as_deref();
        let (slot, res) = match admitted {
            Ok(Some(admitted)) => admitted,
            Ok(None) => {
                // Every attempt taken: by wrong guesses, or by copies of the right code still
                // being compared here. Their outcome decides the answer.
                under.settle().await;
                let now = self.core.now();
                let (e, whose) = self.why_not(tenant, &digest, flavor, now, code.len()).await;
                recipient = whose.unwrap_or_default();
                return Err(e);
            }
            Err(overloaded) => return Err(overloaded.into()),
        };
        recipient.clone_from(&res.recipient);
        // What every event of this verify says of the code.
        let data = |reason: Option<&'static str>| EventData {
            shareable_key: key.expose(),
            recipient: &res.recipient,
            channel: res.channel,
            purpose: res.purpose.as_str(),
            locale: res.locale.as_ref().map(Locale::as_str),
            reason,
        };
        // A test recipient's fixed code has a failure budget of its own (API.md §17.3): the
        // fixed codes among the key's, so that an inert entry's verifies on no key (one minted
        // before it turned inert, a resent one) and a wrong guess counts on the live one's.
        let max_test = self.core.settings.load().limits.test_code_max_failures;
        let guess = if res.test && max_test > 0 {
            let (tid, who, codes) = (
                tenant.clone(),
                res.email_canonical.clone(),
                res.code_hashes.clone(),
            );
            match self
                .core
                .db(move |s| s.fixed_test_codes(&tid, &who, &codes))
                .await
            {
                Ok(g) => g,
                Err(e) => {
                    // Never evaluated: the attempt and the failure budget are given back.
                    self.release(tenant, &digest, &res, &stamp).await;
                    return Err(e);
                }
            }
        } else {
            TestGuess::default()
        };
        // Every code of the key (its resends') in one hashing job (API.md §13.3), but an
        // inert entry's fixed code.
        let codes: Vec<String> = res
            .code_hashes
            .iter()
            .filter(|h| !guess.dead.contains(h))
            .cloned()
            .collect();
        let matched = match self.core.hasher.verify_any(slot, code, &codes).await {
            Ok(m) => m,
            Err(e) => {
                // Never evaluated: the attempt and the failure budget are given back.
                self.release(tenant, &digest, &res, &stamp).await;
                return Err(e.into());
            }
        };
        let spent = match guess.live.filter(|_| !matched) {
            Some(hash) => self.test_code_failed(tenant, &res, hash, max_test).await,
            None => false,
        };
        if spent {
            let now = self.core.now();
            tracing::warn!(tenant_id = %tenant, "a test recipient's fixed code ran out of its failure budget; the entry is inert until stored again");
            if let Ok(audit) = self.core.audit.slot() {
                audit.record(
                    tenant,
                    now,
                    "test_recipient.disabled",
                    &res.recipient,
                    "failure_budget",
                    ctx,
                );
            }
            self.events
                .emit(
                    tenant,
                    subscribed,
                    EventType::TestRecipientDisabled,
                    data(Some("failure_budget")),
                )
                .await;
        }
        if matched {
            let t = self.core.now();
            // `otp.verified` commits with the verify itself, and a match resets the
            // recipient's failure budget in the same commit.
            let finish = VerifyFinish {
                tenant: tenant.clone(),
                key_digest: digest.clone(),
                via: VerifiedVia::Code,
                event: self.events.event_for(
                    tenant,
                    subscribed,
                    EventType::OtpVerified,
                    data(None),
                ),
                clear_failures_of: (quota.max_failures > 0).then(|| res.email_canonical.clone()),
                confirmed_by: None,
                session: match caller {
                    Caller::Page(session) => Some(session.clone()),
                    _ => None,
                },
                reserved: Some(Reserved {
                    at: stamp.0,
                    recipient: res.email_canonical.clone(),
                }),
            };
            let raised = finish.event.is_some();
            let finished = match self.core.write_final(move |s| s.finish_verify(&finish, t)).await {
                Ok(f) => f,
                Err(e) => {
                    // The answer is 503 ("nothing changed"): the attempt goes back, so the
                    // same right code may be tried again (a verify that committed after all
                    // keeps its code verified; only a pending code's attempt is given back).
                    self.release(tenant, &digest, &res, &stamp).await;
                    return Err(e);
                }
            };
            if finished {
                if raised {
                    self.events.wake_hooks();
                }
                return Ok(Verified {
                    recipient: res.recipient,
                    channel: res.channel,
                    purpose: res.purpose,
                    verified_at: t,
                });
            }
            return Err(self.why_not(tenant, &digest, flavor, t, code.len()).await.0);
        }
        // This guess's outcome is in: its attempt is no longer open (a verify that finds
        // every attempt taken, on any instance, waits while some are — for 2 s at most, so
        // one not recorded here only makes those wait).
        let (tid, d) = (tenant.clone(), digest.clone());
        if let Err(e) = self.core.write(move |s| s.attempt_done(&tid, &d)).await {
            tracing::warn!(error = %e, "recording a wrong guess's outcome failed");
        }
        let attempts_remaining = res.max_attempts.saturating_sub(res.attempts);
        // Exhausted only if no copy of the right code still being compared verifies it.
        if attempts_remaining == 0
            && self
                .still_exhausted(&mut under, tenant, &digest, flavor)
                .await
        {
            self.events.emit(
                tenant,
                subscribed,
                EventType::OtpAttemptsExhausted,
                data(None),
            )
            .await;
        }
        Err(ServiceError::Mismatch { attempts_remaining })
        }
        .await;
        Steps {
            resolved,
            recipient,
            result,
        }
    }

    /// Give back a reserved attempt (and the recipient's failure) never evaluated: until
    /// the database takes it (in the background while it is away), so an answer that says
    /// nothing changed does not leave an attempt used. The release names its reservation by
    /// its stamp and may run again safely.
    async fn release(
        &self,
        tenant: &TenantId,
        digest: &[u8],
        res: &Reservation,
        (at, by): &(Millis, String),
    ) {
        let (tid, d, r, at, by) = (
            tenant.clone(),
            digest.to_vec(),
            res.email_canonical.clone(),
            *at,
            by.clone(),
        );
        self.core
            .record_until_taken(
                "giving back a verify attempt never evaluated",
                move |s| s.release_attempt(&tid, &d, &r, (at, &by)),
                || {},
            )
            .await;
    }

    /// A wrong guess at a key holding a live fixed test code (`hash`): counted on its
    /// entry. True when this guess spent the budget and the entry turned inert now.
    async fn test_code_failed(
        &self,
        tenant: &TenantId,
        res: &Reservation,
        hash: String,
        max: u32,
    ) -> bool {
        let (tid, who, now) = (tenant.clone(), res.email_canonical.clone(), self.core.now());
        let failed = self
            .core
            .write(move |s| s.test_code_failed(&tid, &who, &hash, max, now))
            .await;
        failed.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "counting a fixed test code's failure failed");
            false
        })
    }
}
