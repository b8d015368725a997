//! Expiry: a background job deletes files older than `expire_after`, and forgets slots whose
//! PUT URL expired unused (they count against the quota until then). Like the archive's
//! retention, it works in small batches, each its own write job, and rests after each batch
//! as long as the batch took, so the writer keeps at least half its time for the stanzas
//! being routed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use xmppd_storage::StorageError;

use crate::store::{Slot, State};
use crate::{Files, Uploads};

/// Slots removed per transaction.
const BATCH: usize = 100;

/// Deletes the files of `slots` (a file already gone is fine). Issued slots too: a stop
/// between an upload's rename and its record leaves a file under a slot that reads issued.
pub(crate) async fn remove_files(files: &Files, slots: &[Slot]) {
    for slot in slots {
        match tokio::fs::remove_file(files.path(&slot.id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(id = slot.id, error = %e, "deleting an uploaded file"),
        }
    }
}

/// One run at `now_ms`: returns how many files were deleted.
pub async fn expire_once(uploads: &Uploads, now_ms: i64) -> Result<usize, StorageError> {
    let Some(files) = uploads.files() else {
        return Ok(0);
    };
    let cutoff = (uploads.settings.expire_after)
        .map(|age| now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
    let mut deleted = 0;
    loop {
        let started = Instant::now();
        let slots = files.store.take_expired(now_ms, cutoff, BATCH).await?;
        remove_files(files, &slots).await;
        deleted += slots.iter().filter(|s| s.state == State::Stored).count();
        if slots.len() < BATCH {
            return Ok(deleted);
        }
        tokio::time::sleep(started.elapsed()).await;
    }
}

/// Runs [`expire_once`] now and then every `expire_interval`, until the runtime ends; `None`
/// when there are no files here. A storage error is logged and retried at the next run.
pub fn spawn(uploads: Arc<Uploads>) -> Option<tokio::task::JoinHandle<()>> {
    uploads.files()?;
    Some(tokio::spawn(async move {
        let period = uploads
            .settings
            .expire_interval
            .max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match expire_once(&uploads, xmppd_core::stanza::now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "upload expiry"),
                Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Slot, SqliteUploads};
    use crate::Settings;
    use xmppd_storage::SqliteStore;

    fn settings() -> Settings {
        Settings {
            max_file_bytes: 1000,
            quota_bytes_per_user: None,
            max_total_bytes: None,
            expire_after: Some(Duration::from_secs(10)),
            expire_interval: Duration::from_secs(1),
            slot_lifetime: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            cors_origins: Vec::new(),
        }
    }

    #[tokio::test]
    async fn expiry_deletes_old_files_and_what_an_interrupted_upload_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let store = Arc::new(SqliteUploads::open(store).await.unwrap());
        let uploads = Uploads::local(settings(), store, dir.path(), "node", None, None)
            .await
            .unwrap();
        let files = uploads.files().unwrap();
        let ids = ["0".repeat(32), "1".repeat(32), "2".repeat(32)];
        for (i, id) in ids.iter().enumerate() {
            let slot = Slot {
                id: id.clone(),
                owner: "u@x".into(),
                name: "f".into(),
                size: 1,
                content_type: None,
                state: State::Issued,
                stamp_ms: 1_000,
                expires_ms: 2_000,
            };
            files
                .store
                .reserve(slot, None, None)
                .await
                .unwrap()
                .unwrap();
            std::fs::write(files.path(id), b"x").unwrap();
            if i < 2 {
                files.store.claim(id, "node").await.unwrap();
                let at = if i == 0 { 1_000 } else { 50_000 };
                files.store.finish(id, at, None).await.unwrap();
            }
        }
        // The third is an issued slot with a file: renamed into place, but the stop came
        // before its upload was recorded.
        assert_eq!(expire_once(&uploads, 20_000).await.unwrap(), 1);
        assert!(!files.path(&ids[0]).exists(), "older than expire_after");
        assert!(files.path(&ids[1]).exists(), "younger");
        assert!(!files.path(&ids[2]).exists(), "an expired slot's leftover");
    }
}
