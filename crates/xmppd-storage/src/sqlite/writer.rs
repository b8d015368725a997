//! The group-commit writer thread and the reader threads (see the module docs of `sqlite`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::MAX_BATCH;
use crate::{Result, StorageError};

pub(super) fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock happens between statements; SQLite's own state is intact.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a job leaves to the end of its batch (see [`super::SqliteStore::write_deferring`]).
pub type Deferred = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

/// A queued write: `run` inside a savepoint, then `finish` with the batch's commit outcome.
pub(super) trait WriteJob: Send {
    /// Runs the job; `false` means it failed and its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// What the job, having run, leaves to the end of the batch.
    fn deferred(&mut self) -> Option<Deferred> {
        None
    }
    /// Answers the caller; `batch` is the outcome of the transaction that held the job.
    fn finish(self: Box<Self>, batch: &std::result::Result<(), String>);
}

pub(super) struct Job<T, F, A: FnOnce(Result<T>)> {
    f: Option<F>,
    out: Option<Result<T>>,
    deferred: Option<Deferred>,
    /// Taken when called; a job dropped unanswered (the writer thread gone) answers on drop.
    answer: Option<A>,
}

impl<T, F, A: FnOnce(Result<T>)> Job<T, F, A> {
    /// A job that runs `f` and gives its outcome, once the batch is committed, to `answer`
    /// (on the writer thread). `f` answers with what it leaves to the end of the batch, if
    /// anything.
    pub(super) fn new(f: F, answer: A) -> Self {
        Job {
            f: Some(f),
            out: None,
            deferred: None,
            answer: Some(answer),
        }
    }
}

impl<T, F, A: FnOnce(Result<T>)> Drop for Job<T, F, A> {
    fn drop(&mut self) {
        // Only when `finish` never ran: every caller, and every waiter behind a
        // `queue_then`, gets an answer even if the writer thread died.
        if let Some(answer) = self.answer.take() {
            answer(Err(super::stopped()));
        }
    }
}

/// The answer of a job whose caller awaits it.
pub(super) fn send_to<T>(tx: oneshot::Sender<Result<T>>) -> impl FnOnce(Result<T>) + Send
where
    T: Send,
{
    move |out| {
        let _ = tx.send(out);
    }
}

impl<T, F, A> WriteJob for Job<T, F, A>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<(T, Option<Deferred>)> + Send,
    A: FnOnce(Result<T>) + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let out = catch_unwind(AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(StorageError::Backend("storage job panicked".into())));
        let out = out.map(|(v, deferred)| {
            self.deferred = deferred;
            v
        });
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn deferred(&mut self) -> Option<Deferred> {
        self.deferred.take()
    }

    fn finish(mut self: Box<Self>, batch: &std::result::Result<(), String>) {
        let answer = match (self.out.take(), batch) {
            // The job's own failure is more useful to its caller than the batch's.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(msg)) => Err(StorageError::Backend(msg.clone())),
            (None, Ok(())) => Err(StorageError::Backend("write job was not run".into())),
        };
        if let Some(then) = self.answer.take() {
            then(answer);
        }
    }
}

pub(super) type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// Runs the queued jobs, batch after batch; after each commit, wakes the checkpoint thread
/// through `committed`, if there is one.
pub(super) fn writer_loop(
    conn: &Mutex<Connection>,
    rx: &mpsc::Receiver<Box<dyn WriteJob>>,
    commits: &AtomicU64,
    committed: Option<mpsc::SyncSender<()>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = {
            let mut conn = lock(conn);
            let began = std::time::Instant::now();
            let outcome = run_batch(&mut conn, &mut batch);
            if outcome.is_ok() {
                xmppd_metrics::storage_commit(began.elapsed());
            }
            outcome
        };
        match &outcome {
            Ok(()) => {
                commits.fetch_add(1, Ordering::SeqCst);
                if let Some(wake) = &committed {
                    // Full: a wake-up is already pending.
                    let _ = wake.try_send(());
                }
            }
            Err(e) => tracing::error!(jobs = batch.len(), error = %e, "storage batch failed"),
        }
        for job in batch {
            job.finish(&outcome);
        }
    }
}

fn run_batch(
    conn: &mut Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> std::result::Result<(), String> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("begin: {e}"))?;
    for job in batch.iter_mut() {
        let sp = tx.savepoint().map_err(|e| format!("savepoint: {e}"))?;
        if job.run(&sp) {
            sp.commit().map_err(|e| format!("release savepoint: {e}"))?;
        } else {
            drop(sp);
        }
        // Some errors (I/O, full disk) make SQLite abort the whole transaction; later jobs
        // must then not run in autocommit mode as if they were part of this batch.
        if tx.is_autocommit() {
            return Err("transaction aborted by SQLite".into());
        }
    }
    // What the jobs left to the end runs together, with no savepoint in between: a failure
    // there cannot be undone for one job alone, so it fails the batch.
    for job in batch.iter_mut() {
        if let Some(deferred) = job.deferred() {
            catch_unwind(AssertUnwindSafe(|| deferred(&tx)))
                .unwrap_or_else(|_| Err(StorageError::Backend("deferred write panicked".into())))
                .map_err(|e| format!("end of batch: {e}"))?;
            if tx.is_autocommit() {
                return Err("transaction aborted by SQLite".into());
            }
        }
    }
    tx.commit().map_err(|e| format!("commit: {e}"))
}

/// Copies what the writer committed back into the database file, on a connection of its own,
/// at most every `every` while commits come, until the writer stops. A passive checkpoint
/// never waits for the writer nor makes it wait; the writer's own automatic checkpoint then
/// finds little left to copy, so the copy and the database file's `fsync` are not in the
/// commit path (they paused the writer each time the log reached 10 000 pages).
pub(super) fn checkpoint_loop(conn: &Connection, committed: &mpsc::Receiver<()>, every: Duration) {
    let mut pending = false;
    loop {
        if !pending && committed.recv().is_err() {
            return;
        }
        let began = Instant::now();
        let done: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        if let Err(e) = done {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        // Wait out the interval, noting the commits made meanwhile; stop at once when the
        // writer is gone.
        pending = false;
        while let Some(left) = every.checked_sub(began.elapsed()) {
            match committed.recv_timeout(left) {
                Ok(()) => pending = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

pub(super) fn reader_loop(conn: &Mutex<Connection>, rx: &Mutex<mpsc::Receiver<ReadJob>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { break };
        let mut conn = lock(conn);
        // A panicking job drops its answer sender, so its caller gets an error; keep serving.
        if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!("storage read job panicked");
        }
    }
}
