//! The write queue of the archive on a database server (PostgreSQL, MariaDB): what the SQLite
//! store's single writer gives the SQLite archive, for engines whose connections come from a
//! pool.
//!
//! One task per store runs every write in the order it was queued. Appends that queue up while
//! a transaction commits go together into the next one (group commit): each resolves only
//! after that COMMIT returned, and the cost of a commit is shared by the whole batch. A batch
//! that fails is tried again one append per transaction, so one bad message fails only its own
//! append. Other writes (removals, purges, tombstones, preferences) run one per transaction,
//! between the batches, in their place in the queue: an append queued before an account's
//! removal is removed with it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use xmppd_storage::{Queued, StorageError};

use crate::store::NewMessage;

/// Messages archived per transaction at most.
pub const MAX_BATCH: usize = 256;

/// Why a batch was not archived.
pub(crate) struct Failed {
    pub error: StorageError,
    /// The database refused a statement (a value, a constraint): one message of the batch
    /// may be at fault, so its appends are tried again one by one. Otherwise (no connection,
    /// a timeout) they all fail at once, without waiting for each in turn.
    pub refused: bool,
}

impl Failed {
    /// A failure that is not the data's: the store could not be reached.
    pub(crate) fn unavailable(error: StorageError) -> Failed {
        Failed {
            error,
            refused: false,
        }
    }
}

pub(crate) type Appended =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<i64>, Failed>> + Send>>;

/// What an engine does for the queue: archive a batch in one transaction.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Stores `msgs`, all stamped `stamp_ms`, in one transaction; resolves after its COMMIT to
    /// their ids, in order (growing).
    fn append(&self, msgs: Arc<Vec<NewMessage>>, stamp_ms: i64) -> Appended;
}

type Reply = oneshot::Sender<Result<Vec<(i64, i64)>, StorageError>>;

enum Job {
    Append(Vec<NewMessage>, Reply),
    Write(Box<dyn FnOnce() -> Queued<()> + Send>),
}

/// The queue; dropping it ends the task once the queued writes ran.
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

fn stopped() -> StorageError {
    StorageError::Backend("archive writer stopped".into())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Writer {
    /// Starts the task on the current runtime; `last_stamp` is the newest stamp archived, so
    /// stamps never decrease along ids when the clock steps back.
    pub(crate) fn start<S: Sink>(sink: Arc<S>, last_stamp: i64) -> Writer {
        let (jobs, queued) = mpsc::unbounded_channel();
        tokio::spawn(run(sink, queued, last_stamp));
        Writer { jobs }
    }

    /// Queues an append (before returning); resolves after its commit.
    pub(crate) fn append(&self, msgs: Vec<NewMessage>) -> Queued<Vec<(i64, i64)>> {
        let (tx, rx) = oneshot::channel();
        if msgs.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        if self.jobs.send(Job::Append(msgs, tx)).is_err() {
            return Box::pin(std::future::ready(Err(stopped())));
        }
        Box::pin(async move { rx.await.map_err(|_| stopped())? })
    }

    /// Queues another write, `f` run in its turn; resolves to what it returned.
    pub(crate) fn write<T, F>(&self, f: F) -> Queued<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Queued<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Write(Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(f().await);
                Ok(())
            })
        }));
        if self.jobs.send(job).is_err() {
            return Box::pin(std::future::ready(Err(stopped())));
        }
        Box::pin(async move { rx.await.map_err(|_| stopped())? })
    }
}

async fn run<S: Sink>(sink: Arc<S>, mut queued: mpsc::UnboundedReceiver<Job>, mut last: i64) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match queued.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let (first, reply) = match job {
            Job::Write(f) => {
                let _ = f().await;
                continue;
            }
            Job::Append(msgs, reply) => (msgs, reply),
        };
        // Whatever queued up behind the first append joins its transaction, up to the batch's
        // bound; a write of another kind waits for the next turn.
        let mut replies = vec![(first.len(), reply)];
        let mut all = first;
        while all.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(Job::Append(msgs, reply)) => {
                    replies.push((msgs.len(), reply));
                    all.extend(msgs);
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let stamp = now_ms().max(last);
        last = stamp;
        let all = Arc::new(all);
        match sink.append(all.clone(), stamp).await {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                for (n, reply) in replies {
                    let got = ids.by_ref().take(n).map(|id| (id, stamp)).collect();
                    let _ = reply.send(Ok(got));
                }
            }
            Err(f) if replies.len() == 1 || !f.refused => {
                let text = f.error.to_string();
                let mut first = Some(f.error);
                for (_, reply) in replies {
                    let e = first
                        .take()
                        .unwrap_or_else(|| StorageError::Backend(text.clone()));
                    let _ = reply.send(Err(e));
                }
            }
            Err(_) => {
                // Each on its own: only the appends that fail by themselves fail.
                let mut from = 0;
                for (n, reply) in replies {
                    let msgs = Arc::new(all[from..from + n].to_vec());
                    from += n;
                    let got = sink.append(msgs, stamp).await;
                    let got = got
                        .map(|ids| ids.into_iter().map(|id| (id, stamp)).collect())
                        .map_err(|f| f.error);
                    let _ = reply.send(got);
                }
            }
        }
    }
}
