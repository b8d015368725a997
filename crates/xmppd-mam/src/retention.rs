//! Retention: a background job deletes what is older than the retention period and, above
//! the size cap, the oldest messages. It deletes in small batches, each its own write job, so
//! the writer commits the messages being routed between two batches: purging never holds up
//! delivery for longer than one batch. After each batch it rests as long as the batch took
//! ([`rest`]), so that while it runs the messages being routed keep at least half of the
//! writer's time instead of queueing behind one batch after another.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
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
            batch: 200,
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
        total += purge(store, None, cutoff(now_ms, age), batch).await?;
    }
    if let Some(max) = r.max_bytes {
        loop {
            let started = Instant::now();
            let n = store.trim_to_bytes(max, batch).await?;
            total += n;
            if n == 0 {
                break;
            }
            rest(started.elapsed()).await;
        }
    }
    Ok(total)
}

/// The pause after a batch that took `took` from its queueing to its commit: as long again, so
/// the job holds the writer at most half the time. The wait includes the queueing behind the
/// routed messages' writes, so the busier the writer, the slower the purge.
async fn rest(took: Duration) {
    tokio::time::sleep(took).await;
}

/// The Unix millisecond `age` before `now_ms`.
pub fn cutoff(now_ms: i64, age: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// Deletes every message archived before `before_ms`, of `owner`'s archive only when given,
/// `batch` per transaction (the operator's `xmppd mam purge` too: a running server sharing the
/// database commits its messages between two batches). Returns how many went.
pub async fn purge(
    store: &dyn ArchiveStore,
    owner: Option<&str>,
    before_ms: i64,
    batch: usize,
) -> Result<usize, StorageError> {
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        let started = Instant::now();
        let n = match owner {
            Some(owner) => store.purge_owner(owner, before_ms, batch).await?,
            None => store.purge_older(before_ms, batch).await?,
        };
        total += n;
        if n < batch {
            return Ok(total);
        }
        rest(started.elapsed()).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Direction, Filter, NewMessage, PageRequest, Paging};
    use crate::SqliteArchive;
    use xmppd_storage::SqliteStore;

    async fn bodies(a: &SqliteArchive, owner: &str) -> Vec<String> {
        let req = PageRequest {
            filter: Filter::default(),
            paging: Paging::Forward { after: None },
            max: 100,
        };
        let page = a.query(owner, req).await.unwrap();
        page.items.into_iter().map(|i| i.stanza).collect()
    }

    #[tokio::test]
    async fn purging_one_owner_in_batches_leaves_the_others() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let a = SqliteArchive::open(store.clone()).await.unwrap();
        for owner in ["a@x", "b@x"] {
            for i in 0..5 {
                let msg = NewMessage {
                    owner: owner.into(),
                    with_bare: "c@x".into(),
                    with_resource: String::new(),
                    direction: Direction::Incoming,
                    stanza: format!("{owner} {i}"),
                    text: Some(format!("word{i}")),
                };
                a.append(msg).await.unwrap();
            }
        }
        // The first three of each archive are older than the cut.
        store
            .write(|c| {
                c.execute(
                    "UPDATE mam_messages SET stamp_ms = 1000 WHERE substr(stanza, -1) < '3'",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let commits = store.commit_count();
        assert_eq!(purge(&a, Some("a@x"), 2_000, 2).await.unwrap(), 3);
        assert!(
            store.commit_count() - commits >= 2,
            "one transaction per batch"
        );
        assert_eq!(bodies(&a, "a@x").await, ["a@x 3", "a@x 4"]);
        assert_eq!(bodies(&a, "b@x").await.len(), 5);
        // Everything of one owner, whatever its age.
        assert_eq!(purge(&a, Some("a@x"), i64::MAX, 2).await.unwrap(), 2);
        assert!(bodies(&a, "a@x").await.is_empty());
        assert_eq!(bodies(&a, "b@x").await.len(), 5);
        // Every owner, by age.
        assert_eq!(purge(&a, None, 2_000, 500).await.unwrap(), 3);
        assert_eq!(bodies(&a, "b@x").await, ["b@x 3", "b@x 4"]);
        assert_eq!(cutoff(10_000, Duration::from_secs(4)), 6_000);
    }
}
