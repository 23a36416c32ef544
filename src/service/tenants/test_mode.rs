//! Test mode use cases (API.md §13.1–13.2): a tenant's test recipients (read, replaced —
//! fixed codes hashed like every code, every change audited), which mints they catch, and
//! the test inbox those mints' messages land in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::code::OtpCode;
use crate::domain::keys::TenantId;
use crate::domain::policy::FieldError;
use crate::domain::tenant::Tenant;
use crate::domain::test_mode::{
    self, FixedCode, RecipientPattern, TestMessage, TestRecipient, INBOX_KEPT_MS, MAX_LIFETIME_MS,
    MAX_RECIPIENTS,
};
use crate::domain::Millis;
use crate::service::core::audit::RequestContext;
use crate::service::{ServiceError, Tenants};

/// Tenants whose lists are kept at most; beyond it the cache starts over.
const CACHED_TENANTS: usize = 10_000;

/// A tenant's list as cached: its `test_version`, and the list.
type Cached = (i64, Arc<Vec<TestRecipient>>);

/// Each tenant's test recipients, by `test_version`: a mint reads the list from the
/// database only after it changed (through any instance).
#[derive(Clone, Default)]
pub struct TestLists {
    inner: Arc<Mutex<HashMap<String, Cached>>>,
}

impl TestLists {
    fn get(&self, tenant: &str, version: i64) -> Option<Arc<Vec<TestRecipient>>> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.get(tenant)
            .filter(|(v, _)| *v == version)
            .map(|(_, l)| Arc::clone(l))
    }

    fn put(&self, tenant: &str, version: i64, list: Arc<Vec<TestRecipient>>) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHED_TENANTS && !m.contains_key(tenant) {
            m.clear();
        }
        m.insert(tenant.to_string(), (version, list));
    }
}

/// Where a mint's message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The tenant's route of transports, as always.
    Deliver,
    /// The test inbox; with the recipient's fixed code, if it has one.
    TestInbox(Option<FixedCode>),
}

/// One entry of a `PUT /v1/tenant/test-recipients`, as given.
#[derive(Debug)]
pub struct TestRecipientInput {
    pub pattern: String,
    pub code: Option<String>,
    pub expires_at: Millis,
}

impl Tenants {
    /// Where a mint for this recipient (its canonical form) goes: a test tenant's always to
    /// its inbox; otherwise to the inbox only when a live test recipient covers it.
    pub(crate) async fn destination(
        &self,
        tenant: &Tenant,
        canonical: &str,
        now: Millis,
    ) -> Result<Destination, ServiceError> {
        if tenant.test_version == 0 {
            return Ok(if tenant.test {
                Destination::TestInbox(None)
            } else {
                Destination::Deliver
            });
        }
        let list = self.test_list(tenant).await?;
        // A wildcard's scope (API.md §17.8) holds at every mint, not only when the list was
        // saved: the sender may have moved to another domain since.
        let from_domain = tenant.sender().and_then(crate::domain::dkim::sender_domain);
        match test_mode::find(&list, canonical, now, from_domain.as_deref()) {
            // An entry whose fixed code ran out of its failure budget still catches the
            // mint, with a random code (API.md §17.3).
            Some(hit) => Ok(Destination::TestInbox(
                hit.fixed.clone().filter(|_| hit.disabled_at.is_none()),
            )),
            None if tenant.test => Ok(Destination::TestInbox(None)),
            None => Ok(Destination::Deliver),
        }
    }

    async fn test_list(&self, tenant: &Tenant) -> Result<Arc<Vec<TestRecipient>>, ServiceError> {
        let key = tenant.id.as_str();
        if let Some(l) = self.test_lists.get(key, tenant.test_version) {
            return Ok(l);
        }
        let tid = tenant.id.clone();
        // A number pattern an earlier version stored that could catch real people's numbers
        // catches nobody (API.md §17.8); it stays listed until the list is stored again. The
        // check samples the range: on the blocking pool with the read, not on a worker.
        let list = self
            .core
            .db(move |s| {
                let mut list = s.test_recipients(&tid)?;
                list.retain(|t| t.pattern.number_range_allowed());
                Ok(list)
            })
            .await?;
        let list = Arc::new(list);
        self.test_lists
            .put(key, tenant.test_version, Arc::clone(&list));
        Ok(list)
    }

    /// The tenant's test recipients, as stored (fixed codes never shown).
    pub async fn test_recipients(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<TestRecipient>, ServiceError> {
        let tid = tenant.clone();
        self.core.db(move |s| s.test_recipients(&tid)).await
    }

    /// Replace the tenant's test recipients (all checked first: one bad entry changes
    /// nothing); fixed codes are hashed like every code. Audited.
    pub async fn put_test_recipients(
        &self,
        tenant: &Tenant,
        input: Vec<TestRecipientInput>,
        ctx: &RequestContext,
    ) -> Result<Vec<TestRecipient>, ServiceError> {
        let now = self.core.now();
        if input.len() > MAX_RECIPIENTS {
            return Err(ServiceError::field(
                "recipients",
                format!("at most {MAX_RECIPIENTS} entries"),
            ));
        }
        let mut errs = Vec::new();
        let mut parsed = Vec::with_capacity(input.len());
        // The domain of the tenant's sender: its own addresses may be caught by a pattern.
        let from_domain = tenant.sender().and_then(crate::domain::dkim::sender_domain);
        // A number pattern's scope check samples its range (hundreds of reads of the
        // numbering metadata, for up to MAX_RECIPIENTS patterns): on the blocking pool, not
        // on a worker.
        let given: Vec<String> = input.iter().map(|e| e.pattern.clone()).collect();
        let scoped = tokio::task::spawn_blocking(move || {
            given
                .iter()
                .map(|p| {
                    RecipientPattern::parse(p)
                        .and_then(|p| p.check_scope(from_domain.as_deref()).map(|()| p))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))?;
        for (i, (e, scoped)) in input.iter().zip(scoped).enumerate() {
            let at = |f: &str| format!("recipients[{i}].{f}");
            let pattern = match scoped {
                Ok(p) => p,
                Err(err) => {
                    errs.push(FieldError::new(at("match"), err.message));
                    continue;
                }
            };
            if parsed
                .iter()
                .any(|(p, _, _): &(RecipientPattern, _, _)| p == &pattern)
            {
                errs.push(FieldError::new(at("match"), "is listed twice"));
            }
            if e.expires_at <= now || e.expires_at > now + MAX_LIFETIME_MS {
                errs.push(FieldError::new(
                    at("expires_at"),
                    "must be in the future, at most 90 days ahead",
                ));
            }
            let code = match &e.code {
                None => None,
                Some(_) if !pattern.is_exact() => {
                    errs.push(FieldError::new(
                        at("code"),
                        "a fixed code only on an exact address or number, never on a pattern",
                    ));
                    None
                }
                Some(c) => {
                    let len = tenant.policy.code_length as usize;
                    match OtpCode::parse_guess(c) {
                        Ok(code) if c.len() == len => Some(code),
                        _ => {
                            errs.push(FieldError::new(
                                at("code"),
                                format!("must be {len} ASCII digits (the tenant's code length)"),
                            ));
                            None
                        }
                    }
                }
            };
            parsed.push((pattern, code, e.expires_at));
        }
        if !errs.is_empty() {
            return Err(ServiceError::Invalid(errs));
        }
        let audit = self.core.audit.slot()?;
        let mut list = Vec::with_capacity(parsed.len());
        for (pattern, code, expires_at) in parsed {
            let fixed = match code {
                Some(c) => Some(FixedCode {
                    hash: self
                        .core
                        .hasher
                        .hash_in(self.core.hasher.slot_for(tenant.id.as_str())?, c.expose())
                        .await?,
                    length: c.expose().len() as u32,
                }),
                None => None,
            };
            list.push(TestRecipient {
                pattern,
                fixed,
                expires_at,
                disabled_at: None,
            });
        }
        let (tid, stored) = (tenant.id.clone(), list.clone());
        self.core
            .write(move |s| s.put_test_recipients(&tid, &stored, now))
            .await?
            .ok_or(ServiceError::TenantNotFound)?;
        let fixed = list.iter().filter(|t| t.fixed.is_some()).count();
        audit.record(
            &tenant.id,
            now,
            "test_recipients.put",
            "",
            &format!("entries:{} fixed_codes:{fixed}", list.len()),
            ctx,
        );
        Ok(list)
    }

    /// The tenant's test inbox of the last hour, newest first (one recipient's, if given).
    pub async fn test_inbox(
        &self,
        tenant: &TenantId,
        to: Option<&str>,
    ) -> Result<Vec<TestMessage>, ServiceError> {
        let to = match to {
            None => None,
            Some(t) => Some(
                match RecipientPattern::parse(t)
                    .map_err(|e| ServiceError::field("to", e.message))?
                {
                    RecipientPattern::Exact(c) => c,
                    RecipientPattern::Wildcard(_) => {
                        return Err(ServiceError::field("to", "must be one address or number"))
                    }
                },
            ),
        };
        let since = self.core.now() - INBOX_KEPT_MS;
        let tid = tenant.clone();
        let rows = self
            .core
            .db(move |s| s.test_inbox(&tid, to.as_deref(), since))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let m = self
                .delivery
                .open_message(tenant, &r.key_digest, &r.payload)
                .await?;
            out.push(TestMessage {
                to: m.recipient,
                subject: m.subject,
                text: m.text,
                html: m.html,
                received_at: r.received_at,
            });
        }
        Ok(out)
    }
}
