//! SQLite implementation of every storage trait: [`SqliteStore`].
//!
//! Design: one *writer thread* owns the only write connection. Write methods send a job over a
//! channel and await a oneshot answer. The writer takes the first queued job, drains everything
//! else already queued (up to [`MAX_BATCH`]) and runs the lot in ONE `BEGIN IMMEDIATE`
//! transaction, each job inside its own SAVEPOINT so a failing job is rolled back alone. Only
//! after `COMMIT` returns are the callers answered: with `synchronous=FULL` in WAL mode the
//! commit has been fsynced, so `Ok` from a write method means the data survives a crash or power
//! loss. Many concurrent writers thus share one fsync (group commit) instead of paying one each.
//! A job may leave a second part to the end of its batch ([`SqliteStore::write_deferring`]):
//! those run after every job, in the same transaction, with no savepoint between them (an FTS5
//! index writes a segment at each savepoint; its inserts are cheaper together at the end).
//! Reads run on a few reader threads with their own connections; WAL lets them proceed while a
//! write transaction is open, so reads never queue behind writes. `busy_timeout` lets another
//! process (the CLI) use the same file. Dropping the store closes the channels and joins the
//! threads, after every queued job has run.
//!
//! Not done here: no XMPP validation (the core decides what to store), no foreign key from
//! roster/offline/data rows to `users` (writes for an unknown account are accepted;
//! `remove_account` cleans every table explicitly), no retry when another process holds the write
//! lock longer than the busy timeout (the jobs of that batch fail with `Backend`).
//!
//! Layout: this module opens the database and runs jobs; `writer` is the group-commit writer
//! and the reader threads, `migrations` the shared schema; each storage trait is implemented in
//! the module of its tables (`accounts`, `roster`, `offline`, `user_data`, `sessions`, `rooms`).

mod accounts;
mod migrations;
mod offline;
mod rooms;
mod roster;
mod sessions;
#[cfg(test)]
mod tests;
mod user_data;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::config::DbConfig;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{Queued, Result, StorageError};
use migrations::migrate;
pub use rooms::ROOMS_SCHEMA;
pub use writer::Deferred;
use writer::{checkpoint_loop, reader_loop, writer_loop, Job, ReadJob, WriteJob};

/// Upper bound of jobs committed together, so one huge burst does not delay its first callers
/// for too long.
pub const MAX_BATCH: usize = 512;

/// The writer connection's page cache: 16 MiB (a negative `cache_size` counts KiB).
const WRITER_CACHE_KIB: i64 = -16 * 1024;

/// WAL frames after which a commit copies the log back into the database (SQLite's default is
/// 1 000). The checkpoint thread has copied most of them by then (see [`CHECKPOINT_EVERY`]).
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// How often, at most, the checkpoint thread copies what was committed since back into the
/// database, while anything is committed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// How long a connection waits for a lock held by another connection or process.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader threads (and connections) of a file-backed store.
const READERS: usize = 3;

/// A SQLite database file shared safely by the server and the CLI; see the module docs.
pub struct SqliteStore {
    writer_tx: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    read_tx: Option<mpsc::Sender<ReadJob>>,
    threads: Vec<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    /// Write jobs handed to the writer (see [`SqliteStore::submitted_count`]).
    submitted: AtomicU64,
    /// Whether the `muc` schema is known to be applied (see `rooms.rs`).
    rooms_ready: Arc<AtomicBool>,
}

/// Creates `dir` and its missing parents with mode 0700 (owner only); an existing directory is
/// left as it is.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path` empty with mode 0600 unless it exists (SQLite takes an empty file as a new
/// database).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

impl SqliteStore {
    /// Opens (creating the file and its parent directory if missing) and migrates the database.
    ///
    /// Blocks while migrating or while another process holds the write lock (up to
    /// [`BUSY_TIMEOUT`]); call it at start-up, not on a latency-sensitive path.
    ///
    /// The database holds SCRAM keys, so what this creates is private to the owner: missing
    /// directories get mode 0700 and a new database file 0600 (SQLite gives its `-wal` and
    /// `-shm` files the database file's mode). Existing files and directories keep theirs.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir_all(parent).map_err(|e| {
                StorageError::Backend(format!("creating {}: {e}", parent.display()))
            })?;
        }
        create_private_file(path)
            .map_err(|e| StorageError::Backend(format!("creating {}: {e}", path.display())))?;
        let mut writer = Connection::open(path)?;
        configure(&writer)?;
        configure_writer(&writer)?;
        let mode = enable_wal(&writer)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Backend(format!(
                "{}: cannot enable WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        migrate(&mut writer)?;
        let checkpointer = Connection::open(path)?;
        configure(&checkpointer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path)?;
            configure(&reader)?;
            // Read-write open (a read-only one cannot always map the WAL index), but guarded.
            reader.pragma_update(None, "query_only", "ON")?;
            readers.push(Arc::new(Mutex::new(reader)));
        }
        Self::start(Arc::new(Mutex::new(writer)), readers, Some(checkpointer))
    }

    /// A private, empty in-memory database, for tests.
    ///
    /// An in-memory database lives in one connection, so the writer thread and the single reader
    /// thread share it (behind a mutex); reads then wait for a running batch.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn)?;
        migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        Self::start(conn.clone(), vec![conn], None)
    }

    /// Number of write jobs queued for this store's writer so far, counted once each job is
    /// in the queue. A caller that queued a job and reads the count again, finding it one
    /// higher than just before queueing, knows that no other job was counted between: while
    /// the count stays at that value, no job whose queueing has returned is behind its job,
    /// so work added to the job still runs in order with every write asked for before it
    /// (a job being queued at that very moment is concurrent with it, in no given order).
    pub fn submitted_count(&self) -> u64 {
        self.submitted.load(Ordering::SeqCst)
    }

    /// Number of write transactions committed by this store's writer so far.
    #[doc(hidden)]
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Starts the writer, the readers and, for a file, the checkpoint thread on `checkpointer`.
    fn start(
        writer: Arc<Mutex<Connection>>,
        readers: Vec<Arc<Mutex<Connection>>>,
        checkpointer: Option<Connection>,
    ) -> Result<Self> {
        let commits = Arc::new(AtomicU64::new(0));
        let (writer_tx, writer_rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let (read_tx, read_rx) = mpsc::channel::<ReadJob>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        let mut store = SqliteStore {
            writer_tx: Some(writer_tx),
            read_tx: Some(read_tx),
            threads: Vec::with_capacity(readers.len() + 2),
            commits: commits.clone(),
            submitted: AtomicU64::new(0),
            rooms_ready: Arc::new(AtomicBool::new(false)),
        };
        // On a spawn failure `store` is dropped, which closes the channels and joins the threads
        // already started.
        let committed = match checkpointer {
            Some(conn) => {
                // Ends when the writer does (its sender dropped).
                let (tx, rx) = mpsc::sync_channel(1);
                let handle = std::thread::Builder::new()
                    .name("xmppd-sqlite-checkpoint".into())
                    .spawn(move || checkpoint_loop(&conn, &rx, CHECKPOINT_EVERY))
                    .map_err(|e| {
                        StorageError::Backend(format!("spawning checkpoint thread: {e}"))
                    })?;
                store.threads.push(handle);
                Some(tx)
            }
            None => None,
        };
        let handle = std::thread::Builder::new()
            .name("xmppd-sqlite-writer".into())
            .spawn(move || writer_loop(&writer, &writer_rx, &commits, committed))
            .map_err(|e| StorageError::Backend(format!("spawning writer thread: {e}")))?;
        store.threads.push(handle);
        for (i, conn) in readers.into_iter().enumerate() {
            let rx = read_rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("xmppd-sqlite-reader-{i}"))
                .spawn(move || reader_loop(&conn, &rx))
                .map_err(|e| StorageError::Backend(format!("spawning reader thread: {e}")))?;
            store.threads.push(handle);
        }
        Ok(store)
    }

    /// Runs `f` in the writer's next batch, inside its own savepoint; answers once committed.
    /// Also the way for a service's own tables (see [`SqliteStore::extend`]): "Ok" means
    /// durable, as for every write of this store.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_deferring(move |c| Ok((f(c)?, None))).await
    }

    /// [`SqliteStore::write`] of a job in two parts: `f` runs in its savepoint and may return
    /// a second part, which runs once every job of the batch has run, in the same transaction
    /// but outside any savepoint; the second parts of a batch run one after the other. A
    /// failing second part fails the whole batch (every job of it gets the error and nothing
    /// is committed), so it should be one that does not fail short of an I/O error. For an
    /// FTS5 index: FTS5 writes the terms it holds as a new segment of its index at every
    /// savepoint, so rows indexed in each job cost one segment per job; indexed at the end,
    /// one per batch.
    pub async fn write_deferring<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Option<Deferred>)> + Send + 'static,
    {
        self.queue_deferring(f).await
    }

    /// [`SqliteStore::write`], queued for the writer before this returns: jobs queued one
    /// after the other run (and commit) in that order, so a caller may queue several writes
    /// and await their commits later, without holding anything across the fsync in between.
    pub fn queue<T, F>(&self, f: F) -> Queued<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.queue_deferring(move |c| Ok((f(c)?, None)))
    }

    /// [`SqliteStore::write_deferring`], queued before this returns (see [`SqliteStore::queue`]).
    pub fn queue_deferring<T, F>(&self, f: F) -> Queued<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Option<Deferred>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(Box::new(Job::new(f, writer::send_to(tx))));
        Box::pin(async move { rx.await.map_err(|_| stopped())? })
    }

    /// [`SqliteStore::queue_deferring`] whose outcome goes to `then` instead of to a future:
    /// `then` is called on the writer thread once the job's batch is committed or failed
    /// (or at once, with the error, when the store is stopping). For a caller that answers
    /// many waiters from one job (the archive gathers the messages appended while its job
    /// waits for the writer). `then` holds up the writer while it runs: it must only hand the
    /// outcome on, never block.
    pub fn queue_then<T, F, A>(&self, f: F, then: A)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Option<Deferred>)> + Send + 'static,
        A: FnOnce(Result<T>) + Send + 'static,
    {
        self.submit(Box::new(Job::new(f, then)));
    }

    /// Queues `job`; a job the writer cannot take (the store stopping) is dropped, and a
    /// dropped job answers that the store stopped.
    fn submit(&self, job: Box<dyn WriteJob>) {
        if let Some(writer) = self.writer_tx.as_ref() {
            if writer.send(job).is_ok() {
                self.submitted.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Runs `f` on one of the reader connections (read-only).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have given up waiting; nothing to do then.
            let _ = tx.send(f(conn));
        });
        self.read_tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channels ends the loops once the jobs already queued have run.
        self.writer_tx.take();
        self.read_tx.take();
        for handle in self.threads.drain(..) {
            if handle.join().is_err() {
                tracing::error!("an SQLite storage thread panicked");
            }
        }
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Backend(e.to_string())
    }
}

pub(super) fn stopped() -> StorageError {
    StorageError::Backend("storage threads stopped".into())
}

/// Switches the file to WAL and returns the journal mode it ends up in.
///
/// Leaving the rollback journal needs the file to itself, and SQLite answers `SQLITE_BUSY` at
/// once, without the busy handler, while another connection holds it: two processes opening
/// a new file together (a server and a command, or two servers) collide here. Retried like
/// the busy handler would, up to [`BUSY_TIMEOUT`].
fn enable_wal(conn: &Connection) -> Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// Per-connection settings (none of them persist in the file except WAL, set by `open`).
fn configure(conn: &Connection) -> Result<()> {
    // Every statement of this store fits, so none is re-prepared on the hot path.
    conn.set_prepared_statement_cache_capacity(64);
    // The bundled SQLite plans with STAT4, under which a cached statement whose bound values
    // changed is compiled again on its next step (as after a schema change): every query for
    // another account would be. The query planner stability guarantee keeps one plan per
    // statement; ours are index lookups whose best plan does not depend on the values.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Settings of the writer connection only.
fn configure_writer(conn: &Connection) -> Result<()> {
    // Each job runs in a savepoint, and a statement that fires a trigger keeps a statement
    // journal: SQLite copies every page a job changes first into a sub-journal. On SQLite's
    // default, a job whose pages outgrow 64 KiB (an insert that splits index pages) turns it
    // into a temporary file for the rest of the transaction, which a batch of a few hundred
    // jobs nearly always holds: then a write system call per page and job. In memory, it is
    // emptied at each released savepoint and holds one job's pages at most.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The pages a batch of appends touches (the last leaves of each table and index, the
    // full-text index's segments) stay cached between batches, and with them the upper
    // levels of the b-trees: 16 MiB, for the one writer, instead of SQLite's 2 MiB.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Backend(format!("corrupt value in database: {what}"))
}
