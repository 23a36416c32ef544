//! Events: signed webhooks out (their outbox and sender) and provider events in.

pub mod hooks;
pub mod provider_events;
pub mod sender;
mod sns;
pub mod webhooks;

use std::sync::Arc;

use crate::service::Core;

/// Events out (signed webhooks, their outbox and sender) and in (provider events).
#[derive(Clone)]
pub struct Events {
    pub(crate) core: Arc<Core>,
    /// Webhook delivery: the HTTP client and this process's part of the event outbox.
    pub(crate) hooks: hooks::Hooks,
    /// Each tenant's provider event settings as last read (checked when an event applies).
    pub(crate) event_settings: provider_events::EventSettingsCache,
}
