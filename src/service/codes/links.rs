//! Magic links (API.md §14.2): beside the code, a link `server.public_url/l/{token}` whose
//! GET only shows a confirm page (mail scanners that follow links consume nothing) and whose
//! POST — with the page's CSRF token — verifies the code's key, like a matching code: one
//! success, whichever comes first. The token (190 bits) is stored only as a digest; the
//! shareable key the redirect names only sealed, bound to the link.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::crypto::cipher::{decrypt_record, encrypt_record};
use crate::crypto::lookup_digest;
use crate::domain::challenge::{StoredStatus, VerifiedVia};
use crate::domain::claim::CodeChallenge;
use crate::domain::event::EventType;
use crate::domain::keys::random_id;
use crate::domain::links::{allowed_return, public_base, verified_redirect};
use crate::domain::recipient::Channel;
use crate::domain::tenant::Tenant;
use crate::service::events::webhooks::EventData;
use crate::service::{Codes, ServiceError};
use crate::storage::{LinkFinisher, LinkView, NewLink, VerifyFinish};

const TOKEN_LABEL: &str = "magic-link";
const CSRF_LABEL: &str = "magic-link-csrf";
const KEY_KIND: &str = "magic-link-key";
/// Base62 characters of a token: 32 × log2(62) ≈ 190 bits.
const TOKEN_CHARS: usize = 32;

/// A link asked for on a mint, checked: where links live and where it returns to.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    base: String,
    return_url: String,
    code_challenge: Option<CodeChallenge>,
}

/// A mint's `link`: where it returns to, and the PKCE challenge its outcome is claimed
/// with (API.md §17.2).
#[derive(Debug, Clone)]
pub struct LinkRequest {
    pub return_url: String,
    pub code_challenge: Option<CodeChallenge>,
}

/// What a link's page shows.
pub enum LinkState {
    /// Live: the confirm page.
    Open(Box<LinkView>),
    /// Its code was verified (by this link or by the code): the browser that confirmed the
    /// link goes back to the return URL, anyone else is told the sign-in is complete.
    Verified(Box<LinkView>),
    /// Its code ended otherwise (expired, used up, cancelled): nothing to confirm.
    Ended(Box<LinkView>),
}

/// How often, and how far apart, a link that cannot be confirmed now looks again at its
/// code before it is told ended (the verifies under way end within a hash or two).
const SETTLE_TRIES: u32 = 15;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a confirm did not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfirmError {
    /// Unknown token (or links are off).
    NotFound,
    /// The form's CSRF token does not match the page's.
    Forbidden,
    /// The code was verified, but not through this browser: the sign-in is complete and
    /// nobody else is sent back (API.md §17.2).
    Done,
    /// The code ended without being verified.
    Ended,
    /// The link's return URL is no longer one the tenant allows (API.md §17.7): nothing
    /// was verified (the link works again if the tenant allows it again).
    Withdrawn,
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    for p in parts {
        mac.update(p);
        mac.update(&[0]);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// What a page cookie's MAC is keyed for (API.md §17.5).
const PAGE_COOKIE_LABEL: &str = "page-cookie";

impl Codes {
    /// A new page cookie value the server chose: a random id and its MAC (API.md §17.5).
    pub fn new_page_cookie(&self) -> String {
        let id = crate::domain::keys::random_id(24);
        let mac = self.page_cookie_mac(&id);
        format!("{id}.{mac}")
    }

    /// Whether a cookie value the browser brought is one this server issued.
    pub fn page_cookie_issued(&self, value: &str) -> bool {
        use subtle::ConstantTimeEq;
        value.split_once('.').is_some_and(|(id, mac)| {
            id.len() == 24 && bool::from(self.page_cookie_mac(id).as_bytes().ct_eq(mac.as_bytes()))
        })
    }

    fn page_cookie_mac(&self, id: &str) -> String {
        let mut mac = hmac_hex(
            self.core.keyring.get().pepper(),
            &[PAGE_COOKIE_LABEL.as_bytes(), id.as_bytes()],
        );
        mac.truncate(32);
        mac
    }

    /// Links are served at `server.public_url` (empty: off).
    pub fn links_base(&self) -> Option<String> {
        public_base(&self.core.settings.load().server.public_url)
    }

    /// Whether the tenant's hosted pages and links may be used: always, but under open
    /// registration only once the admin approved them (API.md §17.6).
    pub fn pages_allowed(&self, tenant: &Tenant) -> bool {
        tenant.pages_approved
            || self.core.settings.load().registration.mode != crate::config::RegistrationMode::Open
    }

    /// Check a mint's `link`: links on, pages approved, an email (not a text message), a
    /// return URL the tenant allows.
    pub fn plan_link(
        &self,
        tenant: &Tenant,
        link: &LinkRequest,
        sms: bool,
    ) -> Result<LinkPlan, ServiceError> {
        let return_url = link.return_url.as_str();
        let base = self.links_base().ok_or(ServiceError::LinksOff)?;
        if !self.pages_allowed(tenant) {
            return Err(ServiceError::PagesNotApproved);
        }
        if sms {
            return Err(ServiceError::rule(
                "link",
                "goes with \"email\" only (a text message carries the code)",
            ));
        }
        let Some(return_url) = allowed_return(return_url, &tenant.allowed_return_urls) else {
            return Err(ServiceError::rule(
                "link.return_url",
                crate::domain::links::return_refusal(return_url),
            ));
        };
        Ok(LinkPlan {
            base,
            return_url,
            code_challenge: link.code_challenge.clone(),
        })
    }

    /// A new link for the key: its URL (for the message) and its row.
    pub(super) fn make_link(
        &self,
        tenant: &Tenant,
        plan: &LinkPlan,
        shareable_key: &str,
    ) -> Result<(String, NewLink), ServiceError> {
        let token = random_id(TOKEN_CHARS);
        let digest = lookup_digest(self.core.keyring.get().pepper(), TOKEN_LABEL, &token);
        let key_sealed = encrypt_record(
            &self.core.keyring.get(),
            KEY_KIND,
            tenant.id.as_str(),
            &digest,
            shareable_key.as_bytes(),
        )?;
        Ok((
            format!("{}/l/{token}", plan.base),
            NewLink {
                digest,
                return_url: plan.return_url.clone(),
                key_sealed,
                code_challenge: plan.code_challenge.as_ref().map(|c| c.as_str().to_string()),
            },
        ))
    }

    fn link_digest(&self, token: &str) -> Option<Vec<u8>> {
        // A token is base62 of its length; anything else is unknown without a lookup.
        let ok = token.len() == TOKEN_CHARS && token.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| lookup_digest(self.core.keyring.get().pepper(), TOKEN_LABEL, token))
    }

    /// The link of a token, for its page. `None`: unknown (or links are off).
    pub async fn link_state(&self, token: &str) -> Result<Option<LinkState>, ServiceError> {
        if self.links_base().is_none() {
            return Ok(None);
        }
        let Some(digest) = self.link_digest(token) else {
            return Ok(None);
        };
        let now = self.core.now();
        // Under open registration a link lives only while its tenant's pages are approved
        // (API.md §17.6): one sent before an approval was taken back is unknown now.
        let open_registration =
            self.core.settings.load().registration.mode == crate::config::RegistrationMode::Open;
        let link = self.core.db(move |s| s.link(&digest)).await?;
        Ok(link
            .filter(|l| l.pages_approved || !open_registration)
            .map(|l| {
                if l.status == StoredStatus::Verified {
                    LinkState::Verified(Box::new(l))
                } else if l.status == StoredStatus::Pending && l.expires_at > now && !l.spent {
                    LinkState::Open(Box::new(l))
                } else {
                    LinkState::Ended(Box::new(l))
                }
            }))
    }

    /// What a link keeps of the browser that confirmed it: a digest of the page's token for
    /// that browser's cookie (never the cookie itself).
    fn link_finisher(&self, token: &str, cookie: &str) -> Vec<u8> {
        use sha2::Digest;
        Sha256::digest(self.link_csrf(token, cookie).as_bytes()).to_vec()
    }

    /// Where a verified link sends this browser (its page cookie): the return URL with the
    /// key when it is the browser that confirmed the link, else nowhere (API.md §17.2).
    pub async fn verified_return(
        &self,
        token: &str,
        link: &LinkView,
        cookie: Option<&str>,
    ) -> Option<String> {
        let here = match (&link.finished_by, cookie) {
            (Some(by), Some(c)) => bool::from(self.link_finisher(token, c).ct_eq(by)),
            _ => false,
        };
        if !here || link.verified_via != Some(VerifiedVia::Link) {
            return None;
        }
        self.link_redirect(token, link).await
    }

    /// The CSRF token of a page: bound to the link's token and to the browser's cookie.
    pub fn link_csrf(&self, token: &str, cookie: &str) -> String {
        hmac_hex(
            self.core.keyring.get().pepper(),
            &[CSRF_LABEL.as_bytes(), token.as_bytes(), cookie.as_bytes()],
        )
    }

    /// The confirm button of the link `state` read for `token`: check the CSRF token, verify
    /// the key (one success, as always), and answer where to send the person (`return_url`
    /// with `key` and `status=verified`). Guesses of the code being compared right now hold
    /// its attempts until they end, so a code that cannot be confirmed now may yet turn out
    /// verified (anyone but the finisher is then told the sign-in is complete, API.md §17.2)
    /// or usable again: asked again for a moment before the link is told ended.
    pub async fn confirm_link(
        &self,
        token: &str,
        state: Option<LinkState>,
        (cookie, csrf): (Option<&str>, &str),
        ctx: &crate::service::core::audit::RequestContext,
    ) -> Result<String, ConfirmError> {
        let mut state = state;
        for _ in 0..SETTLE_TRIES {
            if let Some(answer) = self.confirm_once(token, state, (cookie, csrf), ctx).await {
                return answer;
            }
            tokio::time::sleep(SETTLE_PAUSE).await;
            state = self
                .link_state(token)
                .await
                .map_err(|_| ConfirmError::Ended)?;
        }
        Err(ConfirmError::Ended)
    }

    /// One try of [`Codes::confirm_link`]; `None`: not settled yet (see there).
    async fn confirm_once(
        &self,
        token: &str,
        state: Option<LinkState>,
        (cookie, csrf): (Option<&str>, &str),
        ctx: &crate::service::core::audit::RequestContext,
    ) -> Option<Result<String, ConfirmError>> {
        let expected = cookie.map(|c| self.link_csrf(token, c));
        let matches = expected
            .as_ref()
            .is_some_and(|e| !csrf.is_empty() && bool::from(e.as_bytes().ct_eq(csrf.as_bytes())));
        let link = match state {
            Some(LinkState::Open(l)) => l,
            // Verified already: the browser that confirmed it (a second click) goes back the
            // same way; anyone else is told the sign-in is complete.
            Some(LinkState::Verified(l)) => {
                return Some(
                    self.verified_return(token, &l, cookie)
                        .await
                        .ok_or(ConfirmError::Done),
                );
            }
            // Its attempts held by guesses being compared right now: see how they end.
            Some(LinkState::Ended(l)) if self.unsettled(&l) => return None,
            Some(LinkState::Ended(_)) => return Some(Err(ConfirmError::Ended)),
            None => return Some(Err(ConfirmError::NotFound)),
        };
        let (true, Some(cookie), Some(link_digest)) = (matches, cookie, self.link_digest(token))
        else {
            return Some(Err(ConfirmError::Forbidden));
        };
        // The way back is checked before the key is spent: a return URL the tenant took off
        // its list since the mint verifies nothing (API.md §17.7).
        let Ok(tenant) = self.core.tenant(link.tenant_id.as_str()).await else {
            return Some(Err(ConfirmError::NotFound));
        };
        if allowed_return(&link.return_url, &tenant.allowed_return_urls).is_none() {
            return Some(Err(ConfirmError::Withdrawn));
        }
        let Some(key) = self.link_key(token, &link).await else {
            return Some(Err(ConfirmError::NotFound));
        };
        // The store queues it only if the tenant subscribes.
        let event = self.events.event_for(
            &link.tenant_id,
            None,
            EventType::OtpVerified,
            EventData {
                shareable_key: &key,
                recipient: &link.email,
                channel: Channel::Email,
                purpose: link.purpose.as_str(),
                locale: link.locale.as_ref().map(|l| l.as_str()),
                reason: None,
            },
        );
        let now = self.core.now();
        let finish = VerifyFinish {
            tenant: link.tenant_id.clone(),
            key_digest: link.key_digest.clone(),
            via: VerifiedVia::Link,
            event,
            // A success resets the recipient's failure budget, as a matching code does.
            clear_failures_of: (self.core.quota().max_failures > 0)
                .then(|| crate::domain::email::RecipientEmail::parse(&link.email).ok())
                .flatten()
                .map(|e| e.canonical().to_string()),
            confirmed_by: Some(LinkFinisher {
                link: link_digest,
                by: self.link_finisher(token, cookie),
            }),
            session: None,
            reserved: None,
        };
        let raised = finish.event.is_some();
        let verified = self
            .core
            .write_final(move |s| s.finish_verify(&finish, now))
            .await
            .unwrap_or(false);
        let outcome = if verified { "verified_link" } else { "ended" };
        if let Ok(slot) = self.core.audit.slot() {
            slot.record(&link.tenant_id, now, "verify", &link.email, outcome, ctx);
        }
        if !verified {
            // Another click or the code came first, or guesses hold its attempts: what the
            // link is now decides.
            return None;
        }
        if raised {
            self.events.wake_hooks();
        }
        crate::metrics::inc(|m| &m.verify_outcomes, &["verified_link"]);
        Some(
            self.link_redirect(token, &link)
                .await
                .ok_or(ConfirmError::NotFound),
        )
    }

    /// Whether a link's code may yet turn out verified though it cannot be confirmed now:
    /// pending and unexpired, its attempts held by guesses being compared.
    fn unsettled(&self, l: &LinkView) -> bool {
        l.status == StoredStatus::Pending && l.expires_at > self.core.now()
    }

    /// The shareable key a link's redirect names (a data key another process rotated in is
    /// loaded first, API.md §11.6).
    async fn link_key(&self, token: &str, link: &LinkView) -> Option<String> {
        let digest = self.link_digest(token)?;
        let key = self
            .core
            .open_with_keyring(&link.key_sealed, |ring| {
                decrypt_record(
                    ring,
                    KEY_KIND,
                    link.tenant_id.as_str(),
                    &digest,
                    &link.key_sealed,
                )
            })
            .await
            .ok()?;
        String::from_utf8(key).ok()
    }

    /// Where a verified link sends the person: its return URL with the key — if the
    /// tenant's allowlist still allows it (checked again at the redirect, API.md §17.7).
    async fn link_redirect(&self, token: &str, link: &LinkView) -> Option<String> {
        let tenant = self.core.tenant(link.tenant_id.as_str()).await.ok()?;
        allowed_return(&link.return_url, &tenant.allowed_return_urls)?;
        verified_redirect(&link.return_url, &self.link_key(token, link).await?)
    }
}
