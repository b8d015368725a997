//! Retention: a background job deletes what is older than the retention period and, above
//! the size cap, the oldest messages. It deletes in small batches, each its own write job, so
//! the writer commits the messages being routed between two batches: purging never holds up
//! delivery for longer than one batch.

use std::sync::Arc;
use std::time::Duration;

use xmppd_storage::StorageError;

use crate::store::ArchiveStore;

/// How long and how much the archive keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Messages older than this are deleted; `None` keeps them.
    pub max_age: Option<Duration>,
    /// Above this many bytes of stanzas in all archives, the oldest go; `None`: no cap.
    pub max_bytes: Option<u64>,
    /// Time between two runs of the job.
    pub interval: Duration,
    /// Messages deleted per transaction.
    pub batch: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(365 * 86_400)),
            max_bytes: None,
            interval: Duration::from_secs(3600),
            batch: 500,
        }
    }
}

/// One run: deletes batch by batch until nothing is too old and the archive is under the
/// cap. Returns how many messages went.
pub async fn purge_once(
    store: &dyn ArchiveStore,
    r: &Retention,
    now_ms: i64,
) -> Result<usize, StorageError> {
    let batch = r.batch.max(1);
    let mut total = 0;
    if let Some(age) = r.max_age {
        let cutoff = now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        loop {
            let n = store.purge_older(cutoff, batch).await?;
            total += n;
            if n < batch {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    if let Some(max) = r.max_bytes {
        loop {
            let n = store.trim_to_bytes(max, batch).await?;
            total += n;
            if n == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(total)
}

/// Runs [`purge_once`] now and then every `interval`, on its own task, until the runtime
/// ends. A storage error is logged and retried at the next run.
pub fn spawn(store: Arc<dyn ArchiveStore>, r: Retention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if r.max_age.is_none() && r.max_bytes.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(r.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match purge_once(store.as_ref(), &r, xmppd_core::stanza::now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "message archive retention"),
                Err(e) => tracing::warn!(error = %e, "message archive retention failed"),
            }
        }
    })
}
