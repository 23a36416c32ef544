//! Writes that record a fact the database must not lose (a relay's answer, an idempotent
//! answer already given): made now, and if the database cannot take them, made again in the
//! background with growing pauses until it does. One helper for every such fact.

use std::sync::Arc;
use std::time::Duration;

use crate::service::{Core, ServiceError};
use crate::storage::{Store, StoreError};

/// The first pause before trying again, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

impl Core {
    /// Make `f` (a write that may be repeated: it changes nothing once it took effect) until
    /// the store takes it. While the database is unavailable it is tried again in the
    /// background, however long that lasts; a failure of any other kind (a bug, damage) is
    /// logged and dropped. `taken` runs once the write is durable (not if it is dropped).
    /// Returns whether it was taken at once.
    pub(crate) async fn record_until_taken<F>(
        &self,
        what: &'static str,
        f: F,
        taken: impl FnOnce() + Send + 'static,
    ) -> bool
    where
        F: Fn(&dyn Store) -> Result<(), StoreError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let first = Arc::clone(&f);
        match self.write(move |s| first(s)).await {
            Ok(()) => {
                taken();
                return true;
            }
            Err(ServiceError::Unavailable(e)) => {
                tracing::warn!(error = %e, what, "the database cannot record this now; trying again in the background");
            }
            Err(e) => {
                tracing::error!(error = %e, what, "recording failed");
                return false;
            }
        }
        let services = self.clone();
        tokio::spawn(async move {
            let mut pause = FIRST_PAUSE;
            loop {
                tokio::time::sleep(pause).await;
                let again = Arc::clone(&f);
                match services.write(move |s| again(s)).await {
                    Ok(()) => {
                        tracing::info!(what, "recorded after the database came back");
                        taken();
                        return;
                    }
                    Err(ServiceError::Unavailable(_)) => {}
                    Err(e) => {
                        tracing::error!(error = %e, what, "recording failed");
                        return;
                    }
                }
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        });
        false
    }
}
