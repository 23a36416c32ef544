//! Operations: keys, import, purge, statistics and reloading the settings.

pub mod import;
pub mod keys;
mod purge;
pub mod reload;
pub mod stats;

use std::sync::Arc;

use crate::service::Core;

/// Operations: keys, import, purge, statistics and reload.
#[derive(Clone)]
pub struct Admin {
    pub(crate) core: Arc<Core>,
}
