//! The hosted-page aggregate (API.md §14.1): sessions on otpmint's pages, and tenants'
//! logos. A session's code is an ordinary code.

use super::cells::{stored_locale, Cells};
use super::engine::{args, Engine};
use super::sql::{hosted as sql, Arg};
use super::StoreError;
use crate::domain::claim::CodeChallenge;
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::purpose::Purpose;
use crate::domain::Millis;

/// A session as opened: what it was opened with (the address may be typed on the page
/// later, and is fixed by the first send).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub tenant_id: TenantId,
    pub email: Option<String>,
    pub purpose: Purpose,
    pub locale: Option<Locale>,
    pub return_url: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// The PKCE challenge its outcome is claimed with (API.md §17.2).
    pub code_challenge: Option<CodeChallenge>,
}

/// The hosted session a verify finishes (API.md §17.2), in the verify's own transaction:
/// its id, and a digest of the page token of the browser that typed the code — only that
/// browser is sent back to the return URL. It finishes only while open with that code.
#[derive(Debug, Clone)]
pub struct SessionFinisher {
    pub id: String,
    pub by: Vec<u8>,
}

/// A session as stored, with its code's state.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub session: Session,
    pub key_sealed: Option<Vec<u8>>,
    pub verified: bool,
    pub verified_at: Option<Millis>,
    /// Its code's stored status, once one was sent — `exhausted` when its attempts are
    /// spent.
    pub code_state: Option<String>,
    /// When its outcome was claimed (once).
    pub claimed_at: Option<Millis>,
    /// A digest of the page cookie of the browser that finished it.
    pub finished_by: Option<Vec<u8>>,
    /// How many digits its code has (the length it was minted with), once one was sent.
    pub code_length: Option<u32>,
    /// How many times its code was sent again, once one was sent.
    pub resends: Option<u32>,
    /// When its code expires, once one was sent.
    pub code_expires_at: Option<Millis>,
    /// The attempts its code has used (taken by guesses), and may, once one was sent.
    pub attempts_used: Option<u32>,
    pub max_attempts: Option<u32>,
}

impl SessionRow {
    /// What the session has sent, as a mark that changes with every code it sends: `0`
    /// before any, else its code's key (a digest of its sealed form) and resends.
    pub fn sent_mark(&self) -> String {
        use sha2::Digest;
        match &self.key_sealed {
            None => "0".to_string(),
            Some(sealed) => format!(
                "{}-{}",
                hex::encode(&sha2::Sha256::digest(sealed)[..6]),
                self.resends.unwrap_or(0)
            ),
        }
    }

    /// Whether its code can still be typed: pending, not expired, attempts left.
    pub fn code_usable(&self, now: Millis) -> bool {
        self.code_state.as_deref() == Some("pending")
            && self.code_expires_at.is_some_and(|t| now < t)
            && self.attempts_used.unwrap_or(0) < self.max_attempts.unwrap_or(0)
    }
}

/// How a session's id is stored: its SHA-256, in hex. The id is the bearer of the
/// session's page (`/h/{id}`), so a copy of the database (a backup, a dump) must not
/// open pages. The id is random (≥128 bits), so a hash without a key is enough to keep
/// it from being worked back (a key would add nothing a guess could get past). Rows
/// stored before ids were hashed hold the id itself and are still found by it until they
/// are purged (they expire within a session's life).
pub(crate) fn stored_session_id(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

/// A session's columns, with its code's (`c`, joined by [`SESSION_FROM`]; none before a
/// code was sent).
pub(crate) const SESSION_COLS: &str = concat!(
    "h.id, h.tenant_id, h.email, h.purpose, h.locale, h.return_url, \
     h.key_sealed, h.status, h.expires_at, \
     COALESCE(h.verified_at, c.verified_at), \
     CASE WHEN c.status = 'pending' AND ",
    crate::storage::sql::no_attempts_left!("c."),
    " THEN 'exhausted' ELSE c.status END, \
     h.code_challenge, \
     COALESCE(h.claimed_at, c.claimed_at), \
     h.finished_by, h.created_at, \
     c.code_length, c.resends, c.expires_at, c.attempts, c.max_attempts"
);

/// What [`SESSION_COLS`] reads from: the session and its code's row, looked up once.
pub(crate) const SESSION_FROM: &str =
    " FROM hosted_sessions h LEFT JOIN challenges c ON c.key_digest = h.key_digest";

pub(crate) fn session_from(r: &(impl Cells + ?Sized)) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        session: Session {
            // The stored id; `session` puts back the id it was asked for.
            id: r.text(0)?,
            tenant_id: TenantId::from_trusted(r.text(1)?),
            email: r.opt_text(2)?,
            purpose: Purpose::from_stored(r.text(3)?),
            locale: stored_locale(r.opt_text(4)?),
            return_url: r.text(5)?,
            created_at: r.int(14)?,
            expires_at: r.int(8)?,
            code_challenge: r.opt_text(11)?.map(CodeChallenge::from_stored),
        },
        key_sealed: r.opt_bytes(6)?,
        verified: r.text(7)? == "verified",
        verified_at: r.opt_int(9)?,
        code_state: r.opt_text(10)?,
        claimed_at: r.opt_int(12)?,
        finished_by: r.opt_bytes(13)?,
        code_length: r.opt_int(15)?.and_then(|n| u32::try_from(n).ok()),
        resends: r.opt_int(16)?.and_then(|n| u32::try_from(n).ok()),
        code_expires_at: r.opt_int(17)?,
        attempts_used: r.opt_int(18)?.and_then(|n| u32::try_from(n).ok()),
        max_attempts: r.opt_int(19)?.and_then(|n| u32::try_from(n).ok()),
    })
}

pub trait HostedStore {
    fn insert_session(&self, s: &Session) -> Result<(), StoreError>;
    fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError>;
    /// The code sent for an open session (replacing an earlier one), to its address: the
    /// first one sets it, and it never changes after; false when the session is no longer
    /// open, has another address, or the code is no longer pending (superseded by a send
    /// at the same time).
    fn set_session_code(
        &self,
        id: &str,
        email: &str,
        key_digest: &[u8],
        key_sealed: &[u8],
    ) -> Result<bool, StoreError>;
    fn logo(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether the tenant has a logo (without reading it).
    fn has_logo(&self, tenant: &TenantId) -> Result<bool, StoreError>;
    /// Store (or with `None` remove) the tenant's logo; false: no such tenant (or no logo).
    fn put_logo(
        &self,
        tenant: &TenantId,
        png: Option<&[u8]>,
        now: Millis,
    ) -> Result<bool, StoreError>;
}

impl<E: Engine> HostedStore for E {
    fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        let row = [
            Arg::from(stored_session_id(&s.id)),
            s.tenant_id.as_str().into(),
            s.email.clone().into(),
            s.purpose.as_str().into(),
            s.locale.as_ref().map(Locale::as_str).into(),
            s.return_url.as_str().into(),
            s.created_at.into(),
            s.expires_at.into(),
            s.code_challenge.as_ref().map(CodeChallenge::as_str).into(),
        ];
        self.exec_one(sql::INSERT_SESSION, &row).map(drop)
    }

    fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let found = self.row_opt(sql::SESSION, args![stored_session_id(id), id], |r| {
            session_from(r)
        })?;
        Ok(found.map(|mut row| {
            row.session.id = id.to_string();
            row
        }))
    }

    fn set_session_code(
        &self,
        id: &str,
        email: &str,
        key_digest: &[u8],
        key_sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let row = args![stored_session_id(id), email, key_digest, key_sealed, id].to_vec();
        let challenge = args![stored_session_id(id), id, key_digest].to_vec();
        self.transact(move |tx| {
            let set = tx.exec(sql::SET_SESSION_CODE, &row)? == 1;
            if set {
                tx.exec(sql::SESSION_CHALLENGE_TO_CODE, &challenge)?;
            }
            Ok(set)
        })
    }

    fn logo(&self, tenant: &TenantId) -> Result<Option<Vec<u8>>, StoreError> {
        // A disabled tenant's logo is not served (API.md §17.8).
        self.row_opt(sql::LOGO, args![tenant.as_str()], |r| r.bytes(0))
    }

    fn has_logo(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let has = self.row_opt(sql::HAS_LOGO, args![tenant.as_str()], |r| r.flag(0))?;
        Ok(has == Some(true))
    }

    fn put_logo(
        &self,
        tenant: &TenantId,
        png: Option<&[u8]>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let t = Arg::from(tenant.as_str());
        Ok(match png {
            Some(p) => self.exec_one(sql::PUT_LOGO, &[t, p.into(), now.into()])?,
            None => self.exec_one(sql::DELETE_LOGO, &[t])?,
        } == 1)
    }
}
