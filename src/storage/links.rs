//! The magic-link aggregate (API.md §14.2): a link's token digest leads to its code. A link
//! verifies its code with `CodeOutcomeStore::finish_verify`, like a matching code does.

use super::engine::{args, Engine};
use super::StoreError;
use crate::domain::challenge::StoredStatus;
use crate::domain::keys::TenantId;
use crate::domain::Millis;

/// A link and what its pages need of its code and tenant.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub key_digest: Vec<u8>,
    pub return_url: String,
    pub key_sealed: Vec<u8>,
    pub status: StoredStatus,
    pub expires_at: Millis,
    /// The locale its message was written in.
    pub locale: Option<crate::domain::locale::Locale>,
    pub email: String,
    pub purpose: crate::domain::purpose::Purpose,
    /// Its attempts are spent: no way verifies it any more.
    pub spent: bool,
    /// `code` or `link`, once verified.
    pub verified_via: Option<crate::domain::challenge::VerifiedVia>,
    /// Its tenant's pages are approved (API.md §17.6).
    pub pages_approved: bool,
    /// A digest of the page token of the browser that confirmed it (API.md §17.2).
    pub finished_by: Option<Vec<u8>>,
}

/// The browser that confirmed a link (API.md §17.2): the link's token digest and a digest of
/// that browser's page token — only it is sent back to the return URL afterwards.
#[derive(Debug, Clone)]
pub struct LinkFinisher {
    pub link: Vec<u8>,
    pub by: Vec<u8>,
}

/// The columns [`LinkView`] is read from (`l`: magic_links, `c`: challenges, `t`: tenants).
pub(crate) const LINK_COLS: &str = concat!(
    "c.tenant_id, t.name, l.key_digest, l.return_url, l.key_sealed, \
     c.status, c.expires_at, c.locale, c.email, c.purpose, ",
    crate::storage::sql::no_attempts_left!("c."),
    ", c.verified_via, t.pages_approved, l.finished_by"
);

pub trait LinkStore {
    /// The link with this token digest, of an enabled tenant.
    fn link(&self, digest: &[u8]) -> Result<Option<LinkView>, StoreError>;
}

impl<E: Engine> LinkStore for E {
    fn link(&self, digest: &[u8]) -> Result<Option<LinkView>, StoreError> {
        self.row_opt(super::sql::links::LINK, args![digest], |r| link_from(r))
    }
}

pub(crate) fn link_from(r: &(impl super::cells::Cells + ?Sized)) -> Result<LinkView, StoreError> {
    Ok(LinkView {
        tenant_id: TenantId::from_trusted(r.text(0)?),
        tenant_name: r.text(1)?,
        key_digest: r.bytes(2)?,
        return_url: r.text(3)?,
        key_sealed: r.bytes(4)?,
        status: super::cells::status_from(&r.text(5)?)?,
        expires_at: r.int(6)?,
        locale: super::cells::stored_locale(r.opt_text(7)?),
        email: r.text(8)?,
        purpose: crate::domain::purpose::Purpose::from_stored(r.text(9)?),
        spent: r.flag(10)?,
        verified_via: super::cells::verified_via_from(r.opt_text(11)?)?,
        pages_approved: r.flag(12)?,
        finished_by: r.opt_bytes(13)?,
    })
}
