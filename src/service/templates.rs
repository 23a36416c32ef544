//! Template use cases (API.md §8): list, store (after the lint), delete, preview, and the
//! rendering of a code's message with the locale fallback chain. Compiled templates are
//! cached per tenant and `templates_version`, so a change made through any instance is used
//! by every instance from the next request that reads the tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{ServiceError, Services};
use crate::domain::keys::TenantId;
use crate::domain::locale::Locale;
use crate::domain::template::TenantTemplate;
use crate::domain::tenant::Tenant;
use crate::messages::{self, Fields, Rendered, Source, TemplateSet, Vars};

/// More tenants than this with templates in use: the cache starts over (it refills itself).
const CACHE_MAX: usize = 10_000;

/// tenant id → (its `templates_version`, its compiled templates)
type Cached = HashMap<String, (i64, Arc<TemplateSet>)>;

#[derive(Clone, Default)]
pub struct TemplateCache {
    inner: Arc<Mutex<Cached>>,
}

impl TemplateCache {
    fn get(&self, tenant: &str, version: i64) -> Option<Arc<TemplateSet>> {
        let m = self.inner.lock().ok()?;
        m.get(tenant)
            .filter(|(v, _)| *v == version)
            .map(|(_, s)| Arc::clone(s))
    }

    fn put(&self, tenant: &str, version: i64, set: Arc<TemplateSet>) {
        if let Ok(mut m) = self.inner.lock() {
            if m.len() >= CACHE_MAX && !m.contains_key(tenant) {
                m.clear();
            }
            m.insert(tenant.to_string(), (version, set));
        }
    }
}

/// What a preview renders: unsaved fields over the stored (or built-in) template.
#[derive(Debug, Default)]
pub struct PreviewInput {
    pub locale: Option<Locale>,
    pub purpose: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// A rendered message and the locale it was written in.
pub struct Message {
    pub locale: Locale,
    pub rendered: Rendered,
}

impl Services {
    pub async fn templates(&self, tenant: &TenantId) -> Result<Vec<TenantTemplate>, ServiceError> {
        let id = tenant.clone();
        self.db(move |s| s.templates(&id)).await
    }

    /// Lint and store a template; nothing changes on refusal.
    pub async fn put_template(
        &self,
        tenant: &Tenant,
        locale: &Locale,
        fields: Fields,
    ) -> Result<TenantTemplate, ServiceError> {
        let fields = self.checked(fields, tenant.policy.code_length).await?;
        let row = TenantTemplate {
            locale: locale.as_str().to_string(),
            subject: fields.subject,
            text: fields.text,
            html: fields.html,
            updated_at: self.now(),
        };
        let (id, r) = (tenant.id.clone(), row.clone());
        if !self.db(move |s| s.put_template(&id, &r)).await? {
            return Err(ServiceError::TenantNotFound);
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
        if self.db(move |s| s.delete_template(&id, &l)).await? {
            tracing::info!(tenant_id = %tenant, locale = %locale, "template deleted");
            Ok(())
        } else {
            Err(ServiceError::TemplateNotFound)
        }
    }

    /// The tenant's compiled templates (`None`: it has none).
    async fn tenant_templates(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<Arc<TemplateSet>>, ServiceError> {
        if tenant.templates_version == 0 {
            return Ok(None);
        }
        let key = tenant.id.as_str();
        if let Some(set) = self.templates.get(key, tenant.templates_version) {
            return Ok(Some(set));
        }
        let id = tenant.id.clone();
        let rows = self.db(move |s| s.templates(&id)).await?;
        let set = Arc::new(TemplateSet::new(&rows));
        self.templates
            .put(key, tenant.templates_version, Arc::clone(&set));
        Ok(Some(set))
    }

    /// Render a code's message in the first locale of the chain that has a template. A
    /// tenant template that fails at send time (it passed the lint, so this is rare: a
    /// runtime error that depends on the purpose, say) gives way to the built-in one — the
    /// code is still delivered — and is logged.
    pub async fn render_message(
        &self,
        tenant: &Tenant,
        requested: Option<&Locale>,
        vars: &Vars<'_>,
    ) -> Result<Message, ServiceError> {
        let default = tenant.default_locale.clone();
        let chain = messages::chain(requested, &default);
        let own = self.tenant_templates(tenant).await?;
        let (locale, source) = messages::resolve(&chain, own.as_deref());
        if source == Source::Tenant {
            if let Some(set) = &own {
                let v = Vars {
                    locale: locale.as_str(),
                    ..vars.clone()
                };
                match set.render(locale.as_str(), &v) {
                    Ok(rendered) => return Ok(Message { locale, rendered }),
                    // Field and line only: the engine's message can quote values (the code,
                    // the address) that must never reach the logs.
                    Err(e) => tracing::warn!(
                        tenant_id = %tenant.id, locale = %locale, field = e.field,
                        line = ?e.line, "tenant template failed; the built-in one is used"
                    ),
                }
            }
        }
        let (locale, _) = messages::resolve(&chain, None);
        let v = Vars {
            locale: locale.as_str(),
            ..vars.clone()
        };
        let rendered = TemplateSet::builtins()
            .render(locale.as_str(), &v)
            .map_err(|e| {
                ServiceError::Internal(format!("built-in template failed in {}", e.field))
            })?;
        Ok(Message { locale, rendered })
    }

    /// Render unsaved fields over the template the locale resolves to, with code 123456.
    pub async fn preview(&self, tenant: &Tenant, p: PreviewInput) -> Result<Message, ServiceError> {
        let purpose = crate::domain::purpose::Purpose::parse(p.purpose.as_deref())?;
        let default = tenant.default_locale.clone();
        let chain = messages::chain(p.locale.as_ref(), &default);
        let own = self.tenant_templates(tenant).await?;
        let (resolved, source) = messages::resolve(&chain, own.as_deref());
        let base: Fields = match source {
            Source::Tenant => {
                let id = tenant.id.clone();
                let rows = self.db(move |s| s.templates(&id)).await?;
                rows.iter()
                    .find(|r| r.locale == resolved.as_str())
                    .map(Fields::from)
                    .ok_or_else(|| ServiceError::Internal("template vanished".into()))?
            }
            Source::Builtin => messages::builtin_fields(resolved.as_str())
                .ok_or_else(|| ServiceError::Internal("no built-in template".into()))?,
        };
        let overridden = p.subject.is_some() || p.text.is_some() || p.html.is_some();
        // Unsaved fields preview the template that would be stored for the locale asked for.
        let locale = match (&p.locale, overridden) {
            (Some(l), true) => l.clone(),
            _ => resolved,
        };
        let fields = Fields {
            subject: p.subject.unwrap_or(base.subject),
            text: p.text.unwrap_or(base.text),
            html: p.html.or(base.html),
        };
        let fields = self.checked(fields, tenant.policy.code_length).await?;
        let (expires_at, ttl_seconds) = (
            self.now() + i64::from(tenant.policy.ttl_seconds) * 1000,
            tenant.policy.ttl_seconds,
        );
        let (name, loc) = (tenant.name.clone(), locale.as_str().to_string());
        let rendered = tokio::task::spawn_blocking(move || {
            let vars = Vars {
                code: messages::PREVIEW_CODE,
                ttl_seconds,
                expires_at,
                app_name: name.as_str(),
                purpose: purpose.as_str(),
                email: "user@example.com",
                locale: &loc,
            };
            messages::render_once(&fields, &vars)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("preview task failed: {e}")))?
        .map_err(|e| ServiceError::TemplateInvalid(vec![e]))?;
        Ok(Message { locale, rendered })
    }

    /// The lint, on the blocking pool: compiling and test-rendering up to three 64 KiB
    /// fields (within the fuel bound) is CPU work that does not belong on an async worker.
    async fn checked(&self, fields: Fields, code_length: u32) -> Result<Fields, ServiceError> {
        tokio::task::spawn_blocking(move || messages::lint(&fields, code_length).map(|()| fields))
            .await
            .map_err(|e| ServiceError::Internal(format!("template check failed: {e}")))?
            .map_err(ServiceError::TemplateInvalid)
    }
}
