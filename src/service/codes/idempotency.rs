//! Idempotent mint (API.md §9): a client that retries `POST /v1/otp` with the same
//! `Idempotency-Key` and body gets the first answer again, and nothing is sent or counted
//! twice. Keys are scoped to the tenant, stored only as a digest under the pepper, kept 24
//! hours in the database (so they hold across instances and restarts); the kept answer is
//! sealed with the data key (it names a shareable key).

use sha2::{Digest, Sha256};

use crate::crypto::cipher::{decrypt_record, encrypt_record};
use crate::crypto::lookup_digest;
use crate::domain::keys::TenantId;
use crate::service::{Codes, ServiceError};
use crate::storage::integration::{IdemBegin, IdemClaim, IdemHold};

pub const KEY_MAX: usize = 255;
const KEY_LABEL: &str = "idempotency-key";
const ANSWER_KIND: &str = "idempotent-answer";
const KEPT_MS: i64 = 24 * 3_600_000;

/// Answers that are kept; after any other the key may be used again.
pub fn kept(status: u16) -> bool {
    matches!(status, 201 | 202 | 502)
}

/// The claim on a key held by the running request.
#[derive(Debug)]
pub struct IdemTicket(IdemHold);

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
            IdemBegin::Started => Ok(IdemStart::Proceed(IdemTicket(hold))),
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

    /// Keep the answer (201, 202, 502) or free the key (anything else). If the database
    /// cannot take it now, keep trying in the background (the client has its answer; until
    /// it is recorded a repeat gets 409, and a repeat after the claim's lease could mint
    /// again — so the record must not be dropped). Only the claim's holder can record, so a
    /// late retry changes nothing once the key moved on.
    pub async fn idem_end(&self, ticket: IdemTicket, status: u16, body: &[u8]) {
        let IdemTicket(hold) = ticket;
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
                    None => s.idem_release(&hold),
                },
                || {},
            )
            .await;
    }
}
