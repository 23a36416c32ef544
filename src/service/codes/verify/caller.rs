//! Who a verify is for: the caller a route names, how its tenant is found in the store
//! (inside the call that reserves the attempt, or on its own for a request that ends
//! before it), and the answer when none is.

use crate::domain::keys::{CodeApi, TenantId};
use crate::domain::Millis;
use crate::service::{Codes, ServiceError};
use crate::storage::{SessionFinisher, Store, StoreError};

/// Who a verify is for. Either way the tenant is found in the same store call that
/// reserves the attempt: one trip to the store, not two.
pub enum Caller {
    /// The bearer secret the request presented. A request that ends before the store call
    /// is authenticated on its own first, so a wrong secret is `Unauthorized` whatever else
    /// is wrong.
    Secret(String),
    /// Whoever owns the shareable key (OtpMint's routes carry no tenant credential). An
    /// unknown key, or one whose tenant is disabled, is `OtpNotFound`.
    KeyOwner,
    /// A hosted session's page: whoever owns the key, as `KeyOwner`, and a right code
    /// finishes the session in the verify's own transaction — a code is never spent
    /// without its session recorded.
    Page(SessionFinisher),
}

/// The tenant a verify turned out to be for, and its webhook subscriptions if known.
pub(super) type Resolved = Option<(TenantId, Option<String>)>;

/// How a [`Caller`]'s tenant is found in the store: one lookup, made inside the reserving
/// call or, for a request that never gets there, on its own.
#[derive(Clone)]
pub(super) enum Lookup {
    /// The secret key's digest (the same indexed read for unknown and disabled keys).
    Secret(Vec<u8>),
    /// The shareable key's digest: its owner, if enabled.
    KeyOwner(Vec<u8>),
}

impl Lookup {
    pub(super) fn find(
        &self,
        s: &dyn Store,
        flavor: CodeApi,
        now: Millis,
    ) -> Result<Resolved, StoreError> {
        Ok(match self {
            Lookup::Secret(d) => s
                .tenant_by_secret(d, now)?
                .map(|t| (t.id, Some(t.webhook_events))),
            Lookup::KeyOwner(d) => s.challenge_owner(d, flavor)?.map(|id| (id, None)),
        })
    }

    /// The answer when no tenant is found.
    pub(super) fn missing(&self) -> ServiceError {
        match self {
            Lookup::Secret(_) => ServiceError::Unauthorized,
            Lookup::KeyOwner(_) => ServiceError::OtpNotFound,
        }
    }
}

impl Codes {
    /// Find the tenant of a request that ends before, or without, the store call that would
    /// have found it, then answer `e` for it; a wrong secret or an unknown key answers for
    /// itself (and finds no tenant).
    pub(super) async fn refuse(
        &self,
        lookup: Lookup,
        flavor: CodeApi,
        now: Millis,
        e: ServiceError,
    ) -> (Resolved, ServiceError) {
        let missing = lookup.missing();
        match self.core.db(move |s| lookup.find(s, flavor, now)).await {
            Ok(Some(found)) => (Some(found), e),
            Ok(None) => (None, missing),
            Err(store) => (None, store),
        }
    }
}
