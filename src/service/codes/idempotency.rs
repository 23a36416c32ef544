//! Idempotent mint (API.md §9): a client that retries `POST /v1/otp` with the same
//! `Idempotency-Key` and body gets the first answer again, and nothing is sent or counted
//! twice. Keys are scoped to the tenant, stored only as a digest under the pepper, kept 24
//! hours in the database (so they hold across instances and restarts); the kept answer is
//! sealed with the data key (it names a shareable key).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::crypto::cipher::{decrypt_record, encrypt_record};
use crate::crypto::keyring::Keys;
use crate::crypto::lookup_digest;
use crate::domain::delivery::DeliveryStatus;
use crate::domain::keys::{CodeApi, TenantId};
use crate::service::codes::mint::Minted;
use crate::service::{Codes, ServiceError};
use crate::storage::integration::{IdemBegin, IdemClaim, IdemHold};
use crate::storage::{CodeKey, StagedAnswers};

pub const KEY_MAX: usize = 255;
const KEY_LABEL: &str = "idempotency-key";
const ANSWER_KIND: &str = "idempotent-answer";
const STAGED_KIND: &str = "idempotent-staged";
const KEPT_MS: i64 = 24 * 3_600_000;

/// Answers that are kept; after any other the key may be used again.
pub fn kept(status: u16) -> bool {
    matches!(status, 201 | 202 | 502)
}

/// The claim on a key held by the running request.
#[derive(Debug)]
pub struct IdemTicket(IdemHold);

/// A mint's answer as it reads for its code's recorded delivery status (status code and
/// body): what a repeat gets when this process stops after the code was stored but before
/// the answer was (API.md §9, §19.4).
pub type Answer = Box<dyn Fn(DeliveryStatus) -> (u16, Vec<u8>) + Send + Sync>;

/// A key claimed by a request running in this process, and — once its code is stored — the
/// code's digest and its answer.
struct Held {
    hold: IdemHold,
    staged: Option<(Vec<u8>, Answer)>,
}

/// The idempotency keys this process's requests hold, by claim: a stop settles those whose
/// requests it cut, so that no claim outlives its process (API.md §19.4) and a repeat gets the
/// stored code's answer instead of a second code.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<String, Held>>);

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a mint under an idempotency key leaves its answer once its code is stored.
pub struct Stage {
    in_flight: Arc<InFlight>,
    hold: IdemHold,
    keys: Arc<Keys>,
    answer_of: fn(&Minted) -> Answer,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage")
    }
}

impl Stage {
    /// The code of `key_digest` is stored: from now on a stop keeps `minted`'s answer.
    pub(crate) fn stored(&self, minted: &Minted, key_digest: &[u8]) {
        if let Some(held) = self.in_flight.lock().get_mut(&self.hold.holder) {
            held.staged = Some((key_digest.to_vec(), (self.answer_of)(minted)));
        }
    }

    /// `minted`'s answers for each delivery status its code may have (but `failed`, after
    /// which a repeat mints), sealed, to keep with the key in the code's own transaction: a
    /// repeat after this process died gets the one its code's delivery gives (API.md §9,
    /// §19.2). `None` (nothing kept: a repeat mints again) only if they cannot be sealed.
    pub(crate) fn answers(&self, minted: &Minted) -> Option<StagedAnswers> {
        let answer = (self.answer_of)(minted);
        let answers: Vec<(&str, u16, String)> = DeliveryStatus::ALL
            .into_iter()
            .filter(|s| *s != DeliveryStatus::Failed)
            .map(|s| {
                let (status, body) = answer(s);
                (
                    s.as_str(),
                    status,
                    String::from_utf8_lossy(&body).into_owned(),
                )
            })
            .collect();
        let plain = serde_json::to_vec(&answers).ok()?;
        let h = &self.hold;
        match encrypt_record(
            &self.keys.get(),
            STAGED_KIND,
            h.tenant_id.as_str(),
            &h.key_digest,
            &plain,
        ) {
            Ok(sealed) => Some(StagedAnswers {
                hold: h.clone(),
                sealed,
            }),
            Err(e) => {
                tracing::warn!(tenant_id = %h.tenant_id, error = %e, "an idempotent mint's answers could not be sealed: a repeat after a crash mints again");
                None
            }
        }
    }
}

pub enum IdemStart {
    Proceed(IdemTicket),
    Replay { status: u16, body: Vec<u8> },
}

/// 1–255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    crate::domain::grammar::IDEMPOTENCY_KEY.matches(key)
}

/// What "the same body" means: the JSON value, whatever its spacing.
pub fn fingerprint(body: &serde_json::Value) -> Vec<u8> {
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    Sha256::digest(&canonical).to_vec()
}

impl Codes {
    pub async fn idem_begin(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: Vec<u8>,
    ) -> Result<IdemStart, ServiceError> {
        if !valid_key(key) {
            return Err(ServiceError::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ));
        }
        let key_digest = lookup_digest(self.core.keyring.get().pepper(), KEY_LABEL, key);
        let now = self.core.now();
        // A crashed holder blocks its key no longer than a mint can take.
        let lease_ms = {
            let settings = self.core.settings.load();
            (settings.attempt_seconds() + settings.server.request_timeout_seconds) as i64 * 2000
                + 30_000
        };
        let hold = IdemHold {
            tenant_id: tenant.clone(),
            key_digest: key_digest.clone(),
            holder: crate::domain::keys::random_id(22),
        };
        let claim = IdemClaim {
            hold: hold.clone(),
            fingerprint,
            now,
            lease_until: now + lease_ms,
            expires_at: now + KEPT_MS,
        };
        match self.core.db(move |s| s.idem_begin(&claim)).await? {
            IdemBegin::Started => Ok(self.proceed(hold)),
            IdemBegin::Orphaned { answers, code } => {
                // On a task of its own, as a mint's work: a client that goes away cannot
                // leave the key claimed with no answer; a failure gives the claim back.
                let this = self.clone();
                let settle = async move {
                    let given = hold.clone();
                    match this.orphaned(hold, &answers, code).await {
                        Ok(start) => Ok(start),
                        Err(e) => {
                            let now = this.core.now();
                            let back = this.core.write(move |s| s.idem_give_back(&given, now));
                            if let Err(e) = back.await {
                                tracing::warn!(error = %e, "an idempotency key could not be given back: it is free once its claim runs out");
                            }
                            Err(e)
                        }
                    }
                };
                tokio::spawn(settle).await.map_err(|e| {
                    ServiceError::Internal(format!("an idempotent replay failed: {e}"))
                })?
            }
            IdemBegin::Replay { status, response } => {
                // Sealed by another instance, perhaps under a data key this one has not
                // loaded yet (API.md §11.6): reloading the keyring is the store's, not a 500.
                let body = self
                    .core
                    .open_with_keyring(&response, |ring| {
                        decrypt_record(ring, ANSWER_KIND, tenant.as_str(), &key_digest, &response)
                    })
                    .await?;
                Ok(IdemStart::Replay { status, body })
            }
            IdemBegin::Mismatch => Err(ServiceError::IdempotencyMismatch),
            IdemBegin::InUse => Err(ServiceError::IdempotencyInUse),
        }
    }

    /// The key is this request's: it runs, and a stop settles the key.
    fn proceed(&self, hold: IdemHold) -> IdemStart {
        let held = Held {
            hold: hold.clone(),
            staged: None,
        };
        self.in_flight.lock().insert(hold.holder.clone(), held);
        IdemStart::Proceed(IdemTicket(hold))
    }

    /// The key is this request's after its last holder died having stored its code: the
    /// answer that code's delivery gives is kept and replayed — nothing is minted or sent
    /// again — unless its message is recorded failed (never sent) or the code is gone; then
    /// this request mints, once (API.md §9, §19.2).
    async fn orphaned(
        &self,
        hold: IdemHold,
        answers: &[u8],
        code: Vec<u8>,
    ) -> Result<IdemStart, ServiceError> {
        let tenant = hold.tenant_id.clone();
        let code = CodeKey {
            tenant: tenant.clone(),
            key_digest: code,
            flavor: CodeApi::Native,
        };
        let now = self.core.now();
        let status = match self.core.db(move |s| s.challenge(&code, now)).await? {
            Some(v) if v.delivery.status != DeliveryStatus::Failed => v.delivery.status,
            _ => return Ok(self.proceed(hold)),
        };
        let plain = self
            .core
            .open_with_keyring(answers, |ring| {
                decrypt_record(
                    ring,
                    STAGED_KIND,
                    tenant.as_str(),
                    &hold.key_digest,
                    answers,
                )
            })
            .await?;
        let answers: Vec<(String, u16, String)> = serde_json::from_slice(&plain)
            .map_err(|e| ServiceError::Internal(format!("staged idempotent answers: {e}")))?;
        let Some((_, code, body)) = answers.into_iter().find(|a| a.0 == status.as_str()) else {
            return Err(ServiceError::Internal(format!(
                "no staged idempotent answer for delivery {}",
                status.as_str()
            )));
        };
        let body = body.into_bytes();
        let sealed = encrypt_record(
            &self.core.keyring.get(),
            ANSWER_KIND,
            tenant.as_str(),
            &hold.key_digest,
            &body,
        )
        .map_err(|e| ServiceError::Internal(format!("sealing an idempotent answer: {e}")))?;
        self.core
            .write(move |s| s.idem_finish(&hold, code, &sealed))
            .await?;
        tracing::info!(tenant_id = %tenant, delivery = status.as_str(), "an idempotency key whose request died after storing its code answers that code");
        Ok(IdemStart::Replay { status: code, body })
    }

    /// Keep the answer (201, 202, 502) or free the key (anything else). If the database
    /// cannot take it now, keep trying in the background (the client has its answer; until
    /// it is recorded a repeat gets 409, and a repeat after the claim's lease could mint
    /// again — so the record must not be dropped). Only the claim's holder can record, so a
    /// late retry changes nothing once the key moved on.
    pub async fn idem_end(&self, ticket: IdemTicket, status: u16, body: &[u8]) {
        let IdemTicket(hold) = ticket;
        // Answered: a stop from here on leaves the key to this record (or to its lease).
        self.in_flight.lock().remove(&hold.holder);
        let (tenant, key_digest) = (&hold.tenant_id, &hold.key_digest);
        let sealed = if kept(status) {
            match encrypt_record(
                &self.core.keyring.get(),
                ANSWER_KIND,
                tenant.as_str(),
                key_digest,
                body,
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, error = %e, "an idempotent answer could not be sealed; the key is freed");
                    None
                }
            }
        } else {
            None
        };
        // Only the claim's holder can record, so a late retry changes nothing once the key
        // moved on.
        self.core
            .record_until_taken(
                "an idempotent answer",
                move |s| match &sealed {
                    Some(sealed) => s.idem_finish(&hold, status, sealed),
                    None => s.idem_release(&hold, false),
                },
                || {},
            )
            .await;
    }

    /// Where the mint holding `ticket` leaves its answer once its code is stored;
    /// `answer_of` writes that answer.
    pub fn stage(&self, ticket: &IdemTicket, answer_of: fn(&Minted) -> Answer) -> Stage {
        Stage {
            in_flight: Arc::clone(&self.in_flight),
            hold: ticket.0.clone(),
            keys: Arc::clone(&self.core.keyring),
            answer_of,
        }
    }

    /// At shutdown, once the requests in flight are gone and the delivery's leases settled:
    /// settle every key a cut request still holds (API.md §19.4). A request whose code was
    /// stored keeps the answer its code's recorded delivery gives (`unknown` for a send the
    /// stop cut, `queued` for one given back to the queue) — a repeat replays it and nothing
    /// is sent twice. A key whose request stored no code, or whose message is recorded failed
    /// (never sent, or refused), is freed: a repeat mints, and sends, once.
    pub async fn settle_idempotency_at_stop(&self) {
        let cut: Vec<Held> = self.in_flight.lock().drain().map(|(_, h)| h).collect();
        let now = self.core.now();
        let (mut kept_n, mut freed) = (0usize, 0usize);
        for Held { hold, staged } in cut {
            // Whether this process noted its code stored (else the code may have been
            // stored with its answers just before the stop: those then keep the key).
            let noted = staged.is_some();
            let answer = match staged {
                None => None,
                Some((key_digest, answer)) => {
                    let code = CodeKey {
                        tenant: hold.tenant_id.clone(),
                        key_digest,
                        flavor: CodeApi::Native,
                    };
                    match self.core.db(move |s| s.challenge(&code, now)).await {
                        Ok(Some(v)) if v.delivery.status != DeliveryStatus::Failed => {
                            Some(answer(v.delivery.status))
                        }
                        Ok(_) => None,
                        Err(e) => {
                            tracing::warn!(error = %e, "an idempotency key a stop cut could not be settled: it is free once its claim runs out");
                            continue;
                        }
                    }
                }
            };
            let sealed = match answer {
                Some((status, body)) => match encrypt_record(
                    &self.core.keyring.get(),
                    ANSWER_KIND,
                    hold.tenant_id.as_str(),
                    &hold.key_digest,
                    &body,
                ) {
                    Ok(sealed) => Some((status, sealed)),
                    Err(e) => {
                        tracing::warn!(tenant_id = %hold.tenant_id, error = %e, "an idempotent answer could not be sealed; the key is freed");
                        None
                    }
                },
                None => None,
            };
            let kept_answer = sealed.is_some();
            let settled = self
                .core
                .write(move |s| match &sealed {
                    Some((status, sealed)) => s.idem_finish(&hold, *status, sealed),
                    // A code stored with its answers whose staging this process had not
                    // noted yet keeps the key until its claim runs out: a repeat then gets
                    // the code's answer, never a second code.
                    None => s.idem_release(&hold, !noted),
                })
                .await;
            match settled {
                Ok(()) if kept_answer => kept_n += 1,
                Ok(()) => freed += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "an idempotency key a stop cut could not be settled: it is free once its claim runs out");
                }
            }
        }
        if kept_n + freed > 0 {
            tracing::info!(
                kept = kept_n,
                freed,
                "settled the idempotency keys of requests the stop cut"
            );
        }
    }
}
