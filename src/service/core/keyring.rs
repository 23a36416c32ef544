//! The keyring as other processes change it: open a blob sealed under a data key this
//! process has not loaded yet, and reload the keyring when the store holds a newer one.

use super::Core;
use crate::crypto::cipher::blob_version;
use crate::crypto::keyring::{Keyring, KIND_DATA};
use crate::service::ServiceError;

impl Core {
    /// Open `blob` with `open`; a blob sealed under a data key this process has not loaded
    /// (another process rotated it) reloads the keyring from the database once.
    pub(crate) async fn open_with_keyring<T>(
        &self,
        blob: &[u8],
        open: impl Fn(&Keyring) -> Result<T, crate::crypto::keyring::KeyError>,
    ) -> Result<T, ServiceError> {
        let ring = self.keyring.get();
        match open(&ring) {
            Ok(v) => Ok(v),
            Err(e) if blob_version(blob).is_none_or(|(v, _)| ring.has_data_key(v)) => Err(e.into()),
            Err(_) => {
                let rows = self.db(|s| s.keyring()).await?;
                let ring = self.reopen(rows).await?;
                Ok(open(&ring)?)
            }
        }
    }

    /// Reopen the keyring if the database holds a data key this process does not know, or
    /// another one is active; true when it did.
    pub async fn refresh_keyring(&self) -> Result<bool, ServiceError> {
        let rows = self.db(|s| s.keyring()).await?;
        let ring = self.keyring.get();
        let active = rows
            .iter()
            .find(|r| r.kind == KIND_DATA && r.active)
            .map(|r| r.version);
        let all_known = rows
            .iter()
            .filter(|r| r.kind == KIND_DATA)
            .all(|r| ring.has_data_key(r.version));
        if all_known && active.is_none_or(|v| v == ring.active_data_version()) {
            return Ok(false);
        }
        self.reopen(rows).await?;
        Ok(true)
    }

    /// [`Keys::reopen`](crate::crypto::keyring::Keys::reopen) off the async workers: it may
    /// read the master key file again (once a second while the keyring stays locked out).
    async fn reopen(
        &self,
        rows: Vec<crate::crypto::keyring::WrappedKey>,
    ) -> Result<std::sync::Arc<Keyring>, ServiceError> {
        let keys = std::sync::Arc::clone(&self.keyring);
        let reopened = tokio::task::spawn_blocking(move || keys.reopen(&rows))
            .await
            .map_err(|e| ServiceError::Internal(format!("reopening the keyring: {e}")))?;
        Ok(reopened?)
    }
}
