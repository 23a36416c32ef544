//! Use cases, by what they own: codes, tenants, delivery, events, admin, over the shared
//! core. No HTTP words here; storage calls run on the blocking pool.

pub mod admin;
pub mod codes;
pub mod core;
pub mod delivery;
mod error;
pub mod events;
pub mod tenants;

use std::sync::Arc;

pub use self::admin::Admin;
pub use self::codes::Codes;
pub use self::core::Core;
pub use self::delivery::Delivery;
pub use self::events::Events;
pub use self::tenants::Tenants;
pub use error::*;

/// The use cases, by what they own; cheap to clone (one `Arc` each) and shared by every
/// worker. Each part holds only the handles it needs, and the parts it calls, so the
/// dependencies run one way: `Codes` → `Tenants` → `Delivery` → `Events` → `Core`.
#[derive(Clone)]
pub struct Services {
    pub core: Arc<Core>,
    pub events: Arc<Events>,
    pub delivery: Arc<Delivery>,
    pub tenants: Arc<Tenants>,
    pub codes: Arc<Codes>,
    pub admin: Arc<Admin>,
}

impl Services {
    /// Wire the parts together over the shared handles.
    pub(crate) fn assemble(
        core: Core,
        outbox: delivery::Outbox,
        hooks: events::hooks::Hooks,
    ) -> Services {
        let core = Arc::new(core);
        let events = Arc::new(Events {
            core: Arc::clone(&core),
            hooks,
            event_settings: events::provider_events::EventSettingsCache::default(),
        });
        let delivery = Arc::new(Delivery {
            core: Arc::clone(&core),
            events: Arc::clone(&events),
            outbox,
        });
        let tenants = Arc::new(Tenants {
            core: Arc::clone(&core),
            delivery: Arc::clone(&delivery),
            templates: tenants::templates::TemplateCache::default(),
            template_work: tenants::template_work::TemplateWork::default(),
            test_lists: tenants::test_mode::TestLists::default(),
            changes: Arc::default(),
        });
        let codes = Arc::new(Codes {
            core: Arc::clone(&core),
            tenants: Arc::clone(&tenants),
            delivery: Arc::clone(&delivery),
            events: Arc::clone(&events),
            turns: Arc::default(),
            sends: Arc::default(),
            page_guesses: Arc::default(),
            in_flight: Arc::default(),
        });
        let admin = Arc::new(Admin {
            core: Arc::clone(&core),
        });
        Services {
            core,
            events,
            delivery,
            tenants,
            codes,
            admin,
        }
    }
}
