//! Tenants and their settings: accounts, relays, providers, HTTP transports, templates,
//! test mode, DKIM, domains and suppressions.

pub mod accounts;
mod change_turns;
pub mod dkim;
pub mod domain_check;
pub mod http_transport;
pub mod providers;
pub(crate) mod relay_accounts;
pub mod suppressions;
pub(crate) mod template_work;
pub mod templates;
pub mod test_mode;

use std::sync::Arc;

use crate::service::{Core, Delivery};

/// Tenant accounts and their settings: relays, providers, templates, test mode, DKIM,
/// domains and suppressions.
#[derive(Clone)]
pub struct Tenants {
    pub(crate) core: Arc<Core>,
    /// Relay settings are checked by connecting through delivery's own path.
    pub(crate) delivery: Arc<Delivery>,
    /// Each tenant's compiled templates, by `templates_version`.
    pub(crate) templates: templates::TemplateCache,
    /// Template checks (lint, preview) in flight: a share per tenant, a turn on the CPU.
    pub(crate) template_work: template_work::TemplateWork,
    /// Each tenant's test recipients, by `test_version`.
    pub(crate) test_lists: test_mode::TestLists,
    /// One change of a tenant at a time in this process (changes from other instances are
    /// caught by the row version).
    pub(crate) changes: Arc<change_turns::ChangeTurns>,
}
