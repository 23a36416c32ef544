//! Template use cases (API.md §8): list, store (after the lint), delete, preview, and the
//! rendering of a code's message with the locale fallback chain. A tenant's templates are
//! compiled one locale at a time, when a message needs it, and kept per tenant and
//! `templates_version` (so a change made through any instance is used by every instance from
//! the next request that reads the tenant). Compiling and rendering run on the blocking
//! pool, never on an HTTP worker (API.md §6.29); a tenant template whose message would not
//! show the code gives way to the built-in one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::Tenant;
use crate::messages::{self, Fields, Rendered, Source, TemplateSet, Vars};
use crate::service::{ServiceError, Tenants};
use crate::storage::PutTemplate;

/// The template sources the cache may hold compiled, in bytes, over all tenants: beyond it
/// the cache starts over (it refills itself, one locale at a time).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A tenant's templates as cached: which locales it has, and those compiled so far.
struct Cached {
    version: i64,
    locales: BTreeSet<String>,
    compiled: HashMap<String, Arc<TemplateSet>>,
}

#[derive(Default)]
struct CacheState {
    tenants: HashMap<String, Cached>,
    bytes: usize,
}

#[derive(Clone, Default)]
pub struct TemplateCache {
    inner: Arc<Mutex<CacheState>>,
}

impl TemplateCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant's locales, if cached for this version.
    fn locales(&self, tenant: &str, version: i64) -> Option<BTreeSet<String>> {
        let c = self.lock();
        let t = c.tenants.get(tenant).filter(|t| t.version == version)?;
        Some(t.locales.clone())
    }

    fn compiled(&self, tenant: &str, version: i64, locale: &str) -> Option<Arc<TemplateSet>> {
        let c = self.lock();
        let t = c.tenants.get(tenant).filter(|t| t.version == version)?;
        t.compiled.get(locale).cloned()
    }

    fn put_locales(&self, tenant: &str, version: i64, locales: BTreeSet<String>) {
        let mut c = self.lock();
        if let Some(old) = c.tenants.get(tenant) {
            if old.version == version {
                return;
            }
        }
        let freed: usize = c
            .tenants
            .remove(tenant)
            .map_or(0, |t| t.compiled.values().map(|s| s.source_bytes()).sum());
        c.bytes = c.bytes.saturating_sub(freed);
        c.tenants.insert(
            tenant.to_string(),
            Cached {
                version,
                locales,
                compiled: HashMap::new(),
            },
        );
    }

    fn put_compiled(&self, tenant: &str, version: i64, locale: &str, set: Arc<TemplateSet>) {
        let mut c = self.lock();
        let bytes = set.source_bytes();
        if c.bytes + bytes > CACHE_BYTES {
            c.tenants.retain(|t, _| t == tenant);
            c.bytes = c
                .tenants
                .values()
                .flat_map(|t| t.compiled.values())
                .map(|s| s.source_bytes())
                .sum();
        }
        if let Some(t) = c.tenants.get_mut(tenant).filter(|t| t.version == version) {
            if t.compiled.insert(locale.to_string(), set).is_none() {
                c.bytes += bytes;
            }
        }
    }
}

/// What a preview renders: unsaved fields over the stored (or built-in) template.
#[derive(Debug)]
pub struct PreviewInput {
    pub locale: Option<Locale>,
    pub purpose: crate::domain::purpose::Purpose,
    pub subject: Option<String>,
    pub text: Option<String>,
    /// `Some(None)`: no HTML part (a text-only template); `None`: the resolved template's.
    pub html: Option<Option<String>>,
    pub sms: Option<String>,
}

/// A rendered message and the locale it was written in.
pub struct Message {
    pub locale: Locale,
    pub rendered: Rendered,
    /// The tenant's own template could not be used (it failed, or hid the code): this is the
    /// built-in one.
    pub fallback: bool,
}

/// [`Vars`] owned, to render on another thread.
struct OwnedVars {
    code: String,
    ttl_seconds: u32,
    expires_at: crate::domain::Millis,
    app_name: String,
    purpose: String,
    email: String,
    link: String,
}

impl OwnedVars {
    fn from(v: &Vars<'_>) -> OwnedVars {
        OwnedVars {
            code: v.code.to_string(),
            ttl_seconds: v.ttl_seconds,
            expires_at: v.expires_at,
            app_name: v.app_name.to_string(),
            purpose: v.purpose.to_string(),
            email: v.email.to_string(),
            link: v.link.to_string(),
        }
    }

    fn vars(&self) -> Vars<'_> {
        Vars {
            code: &self.code,
            ttl_seconds: self.ttl_seconds,
            expires_at: self.expires_at,
            app_name: &self.app_name,
            purpose: &self.purpose,
            email: &self.email,
            locale: "",
            link: &self.link,
        }
    }
}

/// The built-in message of `locale` (its language's, else English).
fn builtin(locale: Locale, vars: &Vars<'_>, fallback: bool) -> Result<Message, ServiceError> {
    let locale = if TemplateSet::builtins().has(locale.as_str()) {
        locale
    } else {
        messages::resolve(&[locale.language()], |_| false).0
    };
    let v = Vars {
        locale: locale.as_str(),
        ..vars.clone()
    };
    let rendered = TemplateSet::builtins()
        .render(locale.as_str(), &v)
        .map_err(|e| ServiceError::Internal(format!("built-in template failed in {}", e.field)))?;
    Ok(Message {
        locale,
        rendered,
        fallback,
    })
}

impl Tenants {
    pub async fn templates(&self, tenant: &TenantId) -> Result<Vec<TenantTemplate>, ServiceError> {
        let id = tenant.clone();
        self.core.db(move |s| s.templates(&id)).await
    }

    /// Lint and store a template; nothing changes on refusal.
    pub async fn put_template(
        &self,
        tenant: &Tenant,
        locale: &Locale,
        fields: Fields,
    ) -> Result<TenantTemplate, ServiceError> {
        let fields = self.checked(fields, tenant).await?;
        let row = TenantTemplate {
            locale: locale.as_str().to_string(),
            subject: fields.subject,
            text: fields.text,
            html: fields.html,
            sms: fields.sms,
            updated_at: self.core.now(),
        };
        let (id, r) = (tenant.id.clone(), row.clone());
        let max = self.core.settings.load().templates.max_locales_per_tenant;
        match self.core.db(move |s| s.put_template(&id, &r, max)).await? {
            PutTemplate::Stored => {}
            PutTemplate::NoTenant => return Err(ServiceError::TenantNotFound),
            PutTemplate::Full => return Err(ServiceError::TemplateLimit(max)),
        }
        tracing::info!(tenant_id = %tenant.id, locale = %locale, "template stored");
        Ok(row)
    }

    pub async fn delete_template(
        &self,
        tenant: &TenantId,
        locale: &Locale,
    ) -> Result<(), ServiceError> {
        let (id, l) = (tenant.clone(), locale.as_str().to_string());
        if self.core.db(move |s| s.delete_template(&id, &l)).await? {
            tracing::info!(tenant_id = %tenant, locale = %locale, "template deleted");
            Ok(())
        } else {
            Err(ServiceError::TemplateNotFound)
        }
    }

    /// The locales the tenant has its own template for (none without templates).
    async fn own_locales(&self, tenant: &Tenant) -> Result<BTreeSet<String>, ServiceError> {
        if tenant.templates_version == 0 {
            return Ok(BTreeSet::new());
        }
        let key = tenant.id.as_str();
        if let Some(l) = self.templates.locales(key, tenant.templates_version) {
            return Ok(l);
        }
        let id = tenant.id.clone();
        let locales: BTreeSet<String> = self
            .core
            .db(move |s| s.template_locales(&id))
            .await?
            .into_iter()
            .collect();
        self.templates
            .put_locales(key, tenant.templates_version, locales.clone());
        Ok(locales)
    }

    /// One of the tenant's templates, compiled (on the blocking pool) the first time a
    /// message needs it; `None` if it is gone or no longer compiles.
    async fn own_template(
        &self,
        tenant: &Tenant,
        locale: &str,
    ) -> Result<Option<Arc<TemplateSet>>, ServiceError> {
        let (key, version) = (tenant.id.as_str(), tenant.templates_version);
        if let Some(set) = self.templates.compiled(key, version, locale) {
            return Ok(Some(set));
        }
        let (id, l) = (tenant.id.clone(), locale.to_string());
        let Some(row) = self.core.db(move |s| s.template(&id, &l)).await? else {
            return Ok(None);
        };
        let set = tokio::task::spawn_blocking(move || Arc::new(TemplateSet::new(&[row])))
            .await
            .map_err(|e| ServiceError::Internal(format!("template compile task failed: {e}")))?;
        if !set.has(locale) {
            return Ok(None);
        }
        self.templates
            .put_compiled(key, version, locale, Arc::clone(&set));
        Ok(Some(set))
    }

    /// Render a code's message in the first locale of the chain that has a template, on the
    /// blocking pool. A tenant template that fails at send time, or whose message would not
    /// show the code as one run of digits (a branch on the recipient or the purpose that the
    /// lint did not take), gives way to the built-in one for the chain — the code is still
    /// delivered — and the answer says so (the mint audits it as `template.fallback`).
    pub async fn render_message(
        &self,
        tenant: &Tenant,
        requested: Option<&Locale>,
        vars: &Vars<'_>,
        sms: bool,
    ) -> Result<Message, ServiceError> {
        let default = tenant.default_locale.clone();
        let chain = messages::chain(requested, &default);
        let own = self.own_locales(tenant).await?;
        let (locale, source) = messages::resolve(&chain, |l| own.contains(l));
        let set = match source {
            Source::Tenant => self.own_template(tenant, locale.as_str()).await?,
            Source::Builtin => None,
        };
        let owned = OwnedVars::from(vars);
        let (tid, from_tenant) = (tenant.id.clone(), set.is_some());
        let (fallback_locale, _) = messages::resolve(&chain, |_| false);
        tokio::task::spawn_blocking(move || {
            let vars = owned.vars();
            if let Some(set) = set {
                let v = Vars {
                    locale: locale.as_str(),
                    ..vars.clone()
                };
                match set.render(locale.as_str(), &v) {
                    Ok(rendered)
                        if !sms
                            && messages::shows_code(&rendered, v.code)
                            && messages::subject_fits(&rendered)
                            || sms && messages::sms_shows_code(&rendered, v.code) =>
                    {
                        return Ok(Message {
                            locale,
                            rendered,
                            fallback: false,
                        })
                    }
                    // A template without a text message: the built-in one is meant.
                    Ok(_) if sms && !set.has_sms(locale.as_str()) => {
                        return builtin(locale, &vars, false);
                    }
                    Ok(r) if !sms && !messages::subject_fits(&r) => tracing::warn!(
                        tenant_id = %tid, locale = %locale,
                        "the tenant template's subject renders too long, or with a line break, for a header line; the built-in one is used"
                    ),
                    // The text message did not render (its error set aside with the email's
                    // parts), or rendered too long, or without the code: which, said by field
                    // and line only (the engine's words may quote values).
                    Ok(_) if sms => match set.render_sms(locale.as_str(), &v) {
                        Err(_) if set.sms_over_limit(locale.as_str(), &v) => tracing::warn!(
                            tenant_id = %tid, locale = %locale,
                            "the tenant template's text message renders more than {} characters for this message (a long app name, say); the built-in one is used",
                            messages::SMS_MAX_CHARS
                        ),
                        Err(e) => tracing::warn!(
                            tenant_id = %tid, locale = %locale, field = e.field,
                            line = ?e.line, "tenant template failed; the built-in one is used"
                        ),
                        Ok(_) => tracing::warn!(
                            tenant_id = %tid, locale = %locale,
                            "the tenant template's text message does not show the code; the built-in one is used"
                        ),
                    },
                    Ok(_) => tracing::warn!(
                        tenant_id = %tid, locale = %locale,
                        "the tenant template's message does not show the code; the built-in one is used"
                    ),
                    // Field and line only: the engine's message can quote values (the code,
                    // the address) that must never reach the logs.
                    Err(e) => tracing::warn!(
                        tenant_id = %tid, locale = %locale, field = e.field,
                        line = ?e.line, "tenant template failed; the built-in one is used"
                    ),
                }
            }
            builtin(fallback_locale, &vars, from_tenant)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("render task failed: {e}")))?
    }

    /// Render unsaved fields over the template the locale resolves to, with code 123456.
    pub async fn preview(&self, tenant: &Tenant, p: PreviewInput) -> Result<Message, ServiceError> {
        let default = tenant.default_locale.clone();
        let chain = messages::chain(p.locale.as_ref(), &default);
        let own = self.own_locales(tenant).await?;
        let (resolved, source) = messages::resolve(&chain, |l| own.contains(l));
        let base: Fields = match source {
            Source::Tenant => {
                let (id, l) = (tenant.id.clone(), resolved.as_str().to_string());
                self.core
                    .db(move |s| s.template(&id, &l))
                    .await?
                    .as_ref()
                    .map(Fields::from)
                    .ok_or_else(|| ServiceError::Internal("template vanished".into()))?
            }
            Source::Builtin => messages::builtin_fields(resolved.as_str())
                .ok_or_else(|| ServiceError::Internal("no built-in template".into()))?,
        };
        let overridden =
            p.subject.is_some() || p.text.is_some() || p.html.is_some() || p.sms.is_some();
        // Unsaved fields preview the template that would be stored for the locale asked for.
        let locale = match (&p.locale, overridden) {
            (Some(l), true) => l.clone(),
            _ => resolved,
        };
        let fields = Fields {
            subject: p.subject.unwrap_or(base.subject),
            text: p.text.unwrap_or(base.text),
            html: p.html.unwrap_or(base.html),
            sms: p.sms.or(base.sms).or_else(|| {
                messages::builtin_fields(locale.language().as_str())
                    .or_else(|| messages::builtin_fields("en"))
                    .and_then(|f| f.sms)
            }),
        };
        let (expires_at, ttl_seconds) = (
            self.core.now() + i64::from(tenant.policy.ttl_seconds) * 1000,
            tenant.policy.ttl_seconds,
        );
        let (code_length, name) = (tenant.policy.code_length, tenant.name.clone());
        let loc = locale.as_str().to_string();
        let rendered = self
            .template_check(tenant, move || {
                messages::lint_for(&fields, code_length, name.as_str())?;
                let vars = Vars {
                    code: messages::PREVIEW_CODE,
                    ttl_seconds,
                    expires_at,
                    app_name: name.as_str(),
                    purpose: p.purpose.as_str(),
                    email: "user@example.com",
                    locale: &loc,
                    link: "",
                };
                messages::render_once(&fields, &vars)
            })
            .await?;
        Ok(Message {
            locale,
            rendered,
            fallback: false,
        })
    }

    /// The lint, as a template check.
    async fn checked(&self, fields: Fields, tenant: &Tenant) -> Result<Fields, ServiceError> {
        let (code_length, name) = (tenant.policy.code_length, tenant.name.as_str().to_string());
        self.template_check(tenant, move || {
            messages::lint_for(&fields, code_length, &name).map(|()| fields)
        })
        .await
    }

    /// A template check (compiling and test-rendering up to four 64 KiB fields, within the
    /// fuel bound) on the blocking pool — CPU work that does not belong on an async worker —
    /// in a place of [`TemplateWork`](super::template_work::TemplateWork), held until the
    /// work is over.
    async fn template_check<T: Send + 'static>(
        &self,
        tenant: &Tenant,
        work: impl FnOnce() -> Result<T, Vec<messages::TemplateError>> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let place = self.template_work.place(tenant.id.as_str()).await?;
        tokio::task::spawn_blocking(move || {
            let _place = place;
            work()
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("template check failed: {e}")))?
        .map_err(ServiceError::TemplateInvalid)
    }
}
