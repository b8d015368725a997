//! SQLite implementation of every storage trait: [`SqliteStore`].
//!
//! Design: one *writer thread* owns the only write connection. Write methods send a job over a
//! channel and await a oneshot answer. The writer takes the first queued job, drains everything
//! else already queued (up to [`MAX_BATCH`]) and runs the lot in ONE `BEGIN IMMEDIATE`
//! transaction, each job inside its own SAVEPOINT so a failing job is rolled back alone. Only
//! after `COMMIT` returns are the callers answered: with `synchronous=FULL` in WAL mode the
//! commit has been fsynced, so `Ok` from a write method means the data survives a crash or power
//! loss. Many concurrent writers thus share one fsync (group commit) instead of paying one each.
//! Reads run on a few reader threads with their own connections; WAL lets them proceed while a
//! write transaction is open, so reads never queue behind writes. `busy_timeout` lets another
//! process (the CLI) use the same file. Dropping the store closes the channels and joins the
//! threads, after every queued job has run.
//!
//! Not done here: no XMPP validation (the core decides what to store), no foreign key from
//! roster/offline/data rows to `users` (writes for an unknown account are accepted;
//! `remove_account` cleans every table explicitly), no retry when another process holds the write
//! lock longer than the busy timeout (the jobs of that batch fail with `Backend`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use crate::{
    AccountRemoval, CredentialStore, OfflineMessage, OfflineStore, Result, RoomAffiliation,
    RoomStore, RosterItem, RosterStore, SessionRecord, SessionStore, StorageError, StoredRoom,
    StoredScram, Subscription, UserDataStore, UserRef,
};

/// Upper bound of jobs committed together, so one huge burst does not delay its first callers
/// for too long.
pub const MAX_BATCH: usize = 512;
/// How long a connection waits for a lock held by another connection or process.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader threads (and connections) of a file-backed store.
const READERS: usize = 3;

/// Schema migrations, applied in order; `PRAGMA user_version` is the number already applied.
/// Never edit an entry once released: append a new one.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE users (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, user)
) WITHOUT ROWID;
CREATE TABLE scram (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    hash TEXT NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (domain, user, hash),
    FOREIGN KEY (domain, user) REFERENCES users (domain, user) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE roster (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL,
    ask INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    PRIMARY KEY (domain, user, contact)
) WITHOUT ROWID;
CREATE TABLE roster_groups (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    pos INTEGER NOT NULL,
    grp TEXT NOT NULL,
    PRIMARY KEY (domain, user, contact, grp),
    FOREIGN KEY (domain, user, contact) REFERENCES roster (domain, user, contact)
        ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE roster_version (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (domain, user)
) WITHOUT ROWID;
CREATE TABLE pending_subscriptions (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, user, contact)
) WITHOUT ROWID;
CREATE TABLE offline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    stamp_ms INTEGER NOT NULL,
    xml TEXT NOT NULL
);
CREATE INDEX offline_by_user ON offline (domain, user, id);
CREATE TABLE user_data (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (domain, user, key)
) WITHOUT ROWID;
CREATE TABLE sessions (
    jid TEXT NOT NULL PRIMARY KEY,
    peer TEXT NOT NULL,
    node TEXT NOT NULL,
    started_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_node ON sessions (node);
",
    r"
CREATE TABLE muc_rooms (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (domain, name)
) WITHOUT ROWID;
CREATE TABLE muc_affiliations (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    nick TEXT,
    reason TEXT,
    PRIMARY KEY (domain, name, jid),
    FOREIGN KEY (domain, name) REFERENCES muc_rooms (domain, name) ON DELETE CASCADE
) WITHOUT ROWID;
",
    r"
CREATE TABLE tombstones (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (domain, user)
) WITHOUT ROWID;
CREATE INDEX roster_by_contact ON roster (contact);
CREATE INDEX pending_by_contact ON pending_subscriptions (contact);
CREATE INDEX muc_affiliations_by_jid ON muc_affiliations (jid);
",
    // The number of items kept next to the version, so that the roster limit is checked without
    // counting the roster.
    r"
ALTER TABLE roster_version ADD COLUMN items INTEGER NOT NULL DEFAULT 0;
UPDATE roster_version SET items = (
    SELECT COUNT(*) FROM roster r
    WHERE r.domain = roster_version.domain AND r.user = roster_version.user
);
",
];

/// A SQLite database file shared safely by the server and the CLI; see the module docs.
pub struct SqliteStore {
    writer_tx: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    read_tx: Option<mpsc::Sender<ReadJob>>,
    threads: Vec<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    /// Write jobs handed to the writer; lets tests know when a burst is fully queued.
    submitted: AtomicU64,
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
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Backend(format!(
                "{}: cannot enable WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        migrate(&mut writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path)?;
            configure(&reader)?;
            // Read-write open (a read-only one cannot always map the WAL index), but guarded.
            reader.pragma_update(None, "query_only", "ON")?;
            readers.push(Arc::new(Mutex::new(reader)));
        }
        Self::start(Arc::new(Mutex::new(writer)), readers)
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
        Self::start(conn.clone(), vec![conn])
    }

    /// Number of write transactions committed by this store's writer so far.
    #[doc(hidden)]
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    fn start(writer: Arc<Mutex<Connection>>, readers: Vec<Arc<Mutex<Connection>>>) -> Result<Self> {
        let commits = Arc::new(AtomicU64::new(0));
        let (writer_tx, writer_rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let (read_tx, read_rx) = mpsc::channel::<ReadJob>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        let mut store = SqliteStore {
            writer_tx: Some(writer_tx),
            read_tx: Some(read_tx),
            threads: Vec::with_capacity(readers.len() + 1),
            commits: commits.clone(),
            submitted: AtomicU64::new(0),
        };
        // On a spawn failure `store` is dropped, which closes the channels and joins the threads
        // already started.
        let handle = std::thread::Builder::new()
            .name("xmppd-sqlite-writer".into())
            .spawn(move || writer_loop(&writer, &writer_rx, &commits))
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
        let (tx, rx) = oneshot::channel();
        let job = Box::new(Job {
            f: Some(f),
            out: None,
            answer: tx,
        });
        self.writer_tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        self.submitted.fetch_add(1, Ordering::SeqCst);
        rx.await.map_err(|_| stopped())?
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

fn stopped() -> StorageError {
    StorageError::Backend("storage threads stopped".into())
}

/// Per-connection settings (none of them persist in the file except WAL, set by `open`).
fn configure(conn: &Connection) -> Result<()> {
    // Every statement of this module fits, so none is re-prepared on the hot path.
    conn.set_prepared_statement_cache_capacity(64);
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Applies the missing migrations in one transaction; `IMMEDIATE` so two processes opening a new
/// file at once do not both run them.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len();
    let current = usize::try_from(current)
        .ok()
        .filter(|v| *v <= known)
        .ok_or_else(|| {
            StorageError::Backend(format!(
                "database schema version {current} is not supported by this xmppd (max {known})"
            ))
        })?;
    if current == known {
        return Ok(());
    }
    for sql in &MIGRATIONS[current..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known as i64)?;
    tx.commit()?;
    tracing::info!(from = current, to = known, "storage schema migrated");
    Ok(())
}

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock happens between statements; SQLite's own state is intact.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A queued write: `run` inside a savepoint, then `finish` with the batch's commit outcome.
trait WriteJob: Send {
    /// Runs the job; `false` means it failed and its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller; `batch` is the outcome of the transaction that held the job.
    fn finish(self: Box<Self>, batch: &std::result::Result<(), String>);
}

struct Job<T, F> {
    f: Option<F>,
    out: Option<Result<T>>,
    answer: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let out = catch_unwind(AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(StorageError::Backend("storage job panicked".into())));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, batch: &std::result::Result<(), String>) {
        let answer = match (self.out, batch) {
            // The job's own failure is more useful to its caller than the batch's.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(msg)) => Err(StorageError::Backend(msg.clone())),
            (None, Ok(())) => Err(StorageError::Backend("write job was not run".into())),
        };
        let _ = self.answer.send(answer);
    }
}

type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

fn writer_loop(
    conn: &Mutex<Connection>,
    rx: &mpsc::Receiver<Box<dyn WriteJob>>,
    commits: &AtomicU64,
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
            run_batch(&mut conn, &mut batch)
        };
        match &outcome {
            Ok(()) => {
                commits.fetch_add(1, Ordering::SeqCst);
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
    tx.commit().map_err(|e| format!("commit: {e}"))
}

fn reader_loop(conn: &Mutex<Connection>, rx: &Mutex<mpsc::Receiver<ReadJob>>) {
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Backend(format!("corrupt value in database: {what}"))
}

fn user_exists(conn: &Connection, user: &UserRef) -> Result<bool> {
    let found = conn
        .prepare_cached("SELECT 1 FROM users WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

fn insert_scram(conn: &Connection, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO scram
             (domain, user, hash, salt, iterations, stored_key, server_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for c in creds {
        stmt.execute(params![
            user.domain,
            user.user,
            c.hash,
            c.salt,
            i64::from(c.iterations),
            c.stored_key,
            c.server_key
        ])?;
    }
    Ok(())
}

fn roster_version(conn: &Connection, user: &UserRef) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT version FROM roster_version WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |r| r.get(0))
        .optional()?;
    u64::try_from(v.unwrap_or(0)).map_err(|_| corrupt("roster version"))
}

/// Moves the roster of `user` to its next version; `added` is the change in its item count.
fn bump_roster_version(conn: &Connection, user: &UserRef, added: i64) -> Result<u64> {
    let v: i64 = conn
        .prepare_cached(
            "INSERT INTO roster_version (domain, user, version, items) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (domain, user) DO UPDATE
                 SET version = version + 1, items = items + excluded.items
             RETURNING version",
        )?
        .query_row(params![user.domain, user.user, added], |r| r.get(0))?;
    u64::try_from(v).map_err(|_| corrupt("roster version"))
}

/// Reads the roster items of `user` (all, or only `contact`), sorted by contact.
fn load_roster(
    conn: &Connection,
    user: &UserRef,
    contact: Option<&str>,
) -> Result<Vec<RosterItem>> {
    let mut items = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT contact, name, subscription, ask, approved FROM roster
         WHERE domain = ?1 AND user = ?2 AND (?3 IS NULL OR contact = ?3)
         ORDER BY contact",
    )?;
    let mut rows = stmt.query(params![user.domain, user.user, contact])?;
    while let Some(row) = rows.next()? {
        let sub: String = row.get(2)?;
        items.push(RosterItem {
            jid: row.get(0)?,
            name: row.get(1)?,
            subscription: Subscription::parse(&sub).ok_or_else(|| corrupt("subscription"))?,
            ask: row.get(3)?,
            approved: row.get(4)?,
            groups: Vec::new(),
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT contact, grp FROM roster_groups
         WHERE domain = ?1 AND user = ?2 AND (?3 IS NULL OR contact = ?3)
         ORDER BY contact, pos",
    )?;
    let mut rows = stmt.query(params![user.domain, user.user, contact])?;
    // Both queries are ordered by contact, so one forward walk attaches every group.
    let mut i = 0;
    while let Some(row) = rows.next()? {
        let owner: String = row.get(0)?;
        while i < items.len() && items[i].jid < owner {
            i += 1;
        }
        match items.get_mut(i) {
            Some(item) if item.jid == owner => item.groups.push(row.get(1)?),
            _ => return Err(corrupt("roster group without item")),
        }
    }
    Ok(items)
}

/// The end of the tombstone of `user`'s name, if it is still in force.
fn active_tombstone(conn: &Connection, user: &UserRef) -> Result<Option<i64>> {
    let until: Option<i64> = conn
        .prepare_cached("SELECT until_ms FROM tombstones WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |r| r.get(0))
        .optional()?;
    Ok(until.filter(|u| *u > now_ms()))
}

/// Deletes what is stored for `user` itself (not its roster version counter).
fn delete_account_rows(conn: &Connection, user: &UserRef) -> Result<()> {
    for table in [
        "roster_groups",
        "roster",
        "pending_subscriptions",
        "offline",
        "user_data",
        "scram",
        "users",
    ] {
        conn.prepare_cached(&format!(
            "DELETE FROM {table} WHERE domain = ?1 AND user = ?2"
        ))?
        .execute(params![user.domain, user.user])?;
    }
    // The counter stays; the roster it counts is gone.
    conn.prepare_cached("UPDATE roster_version SET items = 0 WHERE domain = ?1 AND user = ?2")?
        .execute(params![user.domain, user.user])?;
    Ok(())
}

/// Resets every other account's roster item for `user` to no subscription; returns the items
/// as they were.
fn reset_contacts(conn: &Connection, user: &UserRef) -> Result<Vec<(UserRef, RosterItem)>> {
    let jid = user.jid();
    let holders = conn
        .prepare_cached(
            "SELECT domain, user FROM roster WHERE contact = ?1
             AND NOT (domain = ?2 AND user = ?3) ORDER BY domain, user",
        )?
        .query_map(params![jid, user.domain, user.user], |r| {
            Ok(UserRef::new(r.get::<_, String>(1)?, r.get::<_, String>(0)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut reset = Vec::with_capacity(holders.len());
    for holder in holders {
        let Some(before) = load_roster(conn, &holder, Some(&jid))?.pop() else {
            continue;
        };
        conn.prepare_cached(
            "UPDATE roster SET subscription = 'none', ask = 0, approved = 0
             WHERE domain = ?1 AND user = ?2 AND contact = ?3",
        )?
        .execute(params![holder.domain, holder.user, jid])?;
        bump_roster_version(conn, &holder, 0)?;
        reset.push((holder, before));
    }
    Ok(reset)
}

/// Drops the subscription requests `user` sent that still wait for an answer; returns whose.
fn drop_requests_from(conn: &Connection, user: &UserRef) -> Result<Vec<UserRef>> {
    let mut dropped = conn
        .prepare_cached(
            "DELETE FROM pending_subscriptions WHERE contact = ?1
             AND NOT (domain = ?2 AND user = ?3) RETURNING domain, user",
        )?
        .query_map(params![user.jid(), user.domain, user.user], |r| {
            Ok(UserRef::new(r.get::<_, String>(1)?, r.get::<_, String>(0)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    dropped.sort_by(|a, b| (&a.domain, &a.user).cmp(&(&b.domain, &b.user)));
    Ok(dropped)
}

/// Removes `user`'s chat room affiliations; returns the rooms (service domain, name).
fn drop_affiliations(conn: &Connection, user: &UserRef) -> Result<Vec<(String, String)>> {
    let mut rooms = conn
        .prepare_cached("DELETE FROM muc_affiliations WHERE jid = ?1 RETURNING domain, name")?
        .query_map(params![user.jid()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rooms.sort();
    Ok(rooms)
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn create_user(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let (user, creds) = (user.clone(), creds.to_vec());
        self.write(move |c| {
            if user_exists(c, &user)? {
                return Err(StorageError::AlreadyExists);
            }
            if let Some(until_ms) = active_tombstone(c, &user)? {
                return Err(StorageError::Tombstoned { until_ms });
            }
            c.prepare_cached("DELETE FROM tombstones WHERE domain = ?1 AND user = ?2")?
                .execute(params![user.domain, user.user])?;
            delete_account_rows(c, &user)?;
            c.prepare_cached("INSERT INTO users (domain, user, created_ms) VALUES (?1, ?2, ?3)")?
                .execute(params![user.domain, user.user, now_ms()])?;
            insert_scram(c, &user, &creds)
        })
        .await
    }

    async fn set_credentials(&self, user: &UserRef, creds: &[StoredScram]) -> Result<()> {
        let (user, creds) = (user.clone(), creds.to_vec());
        self.write(move |c| {
            if !user_exists(c, &user)? {
                return Err(StorageError::NoSuchUser);
            }
            c.prepare_cached("DELETE FROM scram WHERE domain = ?1 AND user = ?2")?
                .execute(params![user.domain, user.user])?;
            insert_scram(c, &user, &creds)
        })
        .await
    }

    async fn remove_account(
        &self,
        user: &UserRef,
        tombstone_until_ms: Option<i64>,
    ) -> Result<AccountRemoval> {
        let user = user.clone();
        self.write(move |c| {
            if !user_exists(c, &user)? {
                return Err(StorageError::NoSuchUser);
            }
            let removed = AccountRemoval {
                roster: load_roster(c, &user, None)?,
                contacts: reset_contacts(c, &user)?,
                requests_dropped: drop_requests_from(c, &user)?,
                rooms: drop_affiliations(c, &user)?,
            };
            delete_account_rows(c, &user)?;
            bump_roster_version(c, &user, 0)?;
            if let Some(until) = tombstone_until_ms {
                c.prepare_cached(
                    "INSERT INTO tombstones (domain, user, until_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (domain, user) DO UPDATE SET until_ms = excluded.until_ms",
                )?
                .execute(params![user.domain, user.user, until])?;
            }
            Ok(removed)
        })
        .await
    }

    async fn tombstone(&self, user: &UserRef) -> Result<Option<i64>> {
        let user = user.clone();
        self.read(move |c| active_tombstone(c, &user)).await
    }

    async fn clear_tombstone(&self, user: &UserRef) -> Result<()> {
        let user = user.clone();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM tombstones WHERE domain = ?1 AND user = ?2")?
                .execute(params![user.domain, user.user])?;
            Ok(())
        })
        .await
    }

    async fn user_exists(&self, user: &UserRef) -> Result<bool> {
        let user = user.clone();
        self.read(move |c| user_exists(c, &user)).await
    }

    async fn credentials(&self, user: &UserRef, hash: &str) -> Result<Option<StoredScram>> {
        let (user, hash) = (user.clone(), hash.to_owned());
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT hash, salt, iterations, stored_key, server_key FROM scram
                     WHERE domain = ?1 AND user = ?2 AND hash = ?3",
                )?
                .query_row(params![user.domain, user.user, hash], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, i64>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })
                .optional()?;
            row.map(|(hash, salt, iterations, stored_key, server_key)| {
                Ok(StoredScram {
                    hash,
                    salt,
                    iterations: u32::try_from(iterations).map_err(|_| corrupt("iterations"))?,
                    stored_key,
                    server_key,
                })
            })
            .transpose()
        })
        .await
    }

    async fn list_users(&self, domain: &str) -> Result<Vec<String>> {
        let domain = domain.to_owned();
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT user FROM users WHERE domain = ?1 ORDER BY user")?;
            let users = stmt.query_map([domain], |r| r.get(0))?;
            Ok(users.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }
}

#[async_trait]
impl RosterStore for SqliteStore {
    async fn roster(&self, user: &UserRef) -> Result<(u64, Vec<RosterItem>)> {
        let user = user.clone();
        self.read(move |c| {
            // One read transaction so the version matches the items.
            let tx = c.transaction()?;
            let version = roster_version(&tx, &user)?;
            let items = load_roster(&tx, &user, None)?;
            tx.finish()?;
            Ok((version, items))
        })
        .await
    }

    async fn roster_item(&self, user: &UserRef, contact: &str) -> Result<Option<RosterItem>> {
        let (user, contact) = (user.clone(), contact.to_owned());
        self.read(move |c| {
            let tx = c.transaction()?;
            let item = load_roster(&tx, &user, Some(&contact))?.into_iter().next();
            tx.finish()?;
            Ok(item)
        })
        .await
    }

    async fn set_roster_item(&self, user: &UserRef, item: &RosterItem) -> Result<u64> {
        let (user, item) = (user.clone(), item.clone());
        self.write(move |c| {
            let known = c
                .prepare_cached(
                    "SELECT 1 FROM roster WHERE domain = ?1 AND user = ?2 AND contact = ?3",
                )?
                .query_row(params![user.domain, user.user, item.jid], |_| Ok(()))
                .optional()?
                .is_some();
            c.prepare_cached(
                "INSERT INTO roster (domain, user, contact, name, subscription, ask, approved)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (domain, user, contact) DO UPDATE SET
                     name = excluded.name, subscription = excluded.subscription,
                     ask = excluded.ask, approved = excluded.approved",
            )?
            .execute(params![
                user.domain,
                user.user,
                item.jid,
                item.name,
                item.subscription.as_str(),
                item.ask,
                item.approved
            ])?;
            c.prepare_cached(
                "DELETE FROM roster_groups WHERE domain = ?1 AND user = ?2 AND contact = ?3",
            )?
            .execute(params![user.domain, user.user, item.jid])?;
            let mut stmt = c.prepare_cached(
                "INSERT OR IGNORE INTO roster_groups (domain, user, contact, pos, grp)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (pos, group) in item.groups.iter().enumerate() {
                stmt.execute(params![user.domain, user.user, item.jid, pos as i64, group])?;
            }
            bump_roster_version(c, &user, if known { 0 } else { 1 })
        })
        .await
    }

    async fn remove_roster_item(&self, user: &UserRef, contact: &str) -> Result<u64> {
        let (user, contact) = (user.clone(), contact.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM roster_groups WHERE domain = ?1 AND user = ?2 AND contact = ?3",
            )?
            .execute(params![user.domain, user.user, contact])?;
            let removed = c
                .prepare_cached(
                    "DELETE FROM roster WHERE domain = ?1 AND user = ?2 AND contact = ?3",
                )?
                .execute(params![user.domain, user.user, contact])?;
            if removed > 0 {
                bump_roster_version(c, &user, -1)
            } else {
                roster_version(c, &user)
            }
        })
        .await
    }

    async fn roster_len(&self, user: &UserRef) -> Result<usize> {
        let user = user.clone();
        self.read(move |c| {
            let n: Option<i64> = c
                .prepare_cached("SELECT items FROM roster_version WHERE domain = ?1 AND user = ?2")?
                .query_row(params![user.domain, user.user], |r| r.get(0))
                .optional()?;
            usize::try_from(n.unwrap_or(0)).map_err(|_| corrupt("roster item count"))
        })
        .await
    }

    async fn bump_roster_version(&self, user: &UserRef) -> Result<u64> {
        let user = user.clone();
        self.write(move |c| bump_roster_version(c, &user, 0)).await
    }

    async fn add_pending_subscription(
        &self,
        user: &UserRef,
        contact: &str,
        stanza_xml: &str,
    ) -> Result<()> {
        let (user, contact, xml) = (user.clone(), contact.to_owned(), stanza_xml.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO pending_subscriptions (domain, user, contact, xml)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user.domain, user.user, contact, xml])?;
            Ok(())
        })
        .await
    }

    async fn remove_pending_subscription(&self, user: &UserRef, contact: &str) -> Result<()> {
        let (user, contact) = (user.clone(), contact.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "DELETE FROM pending_subscriptions
                 WHERE domain = ?1 AND user = ?2 AND contact = ?3",
            )?
            .execute(params![user.domain, user.user, contact])?;
            Ok(())
        })
        .await
    }

    async fn pending_subscriptions(&self, user: &UserRef) -> Result<Vec<(String, String)>> {
        let user = user.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT contact, xml FROM pending_subscriptions
                 WHERE domain = ?1 AND user = ?2 ORDER BY contact",
            )?;
            let rows = stmt.query_map(params![user.domain, user.user], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

fn count_offline(conn: &Connection, user: &UserRef) -> Result<usize> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM offline WHERE domain = ?1 AND user = ?2")?
        .query_row(params![user.domain, user.user], |r| r.get(0))?;
    usize::try_from(n).map_err(|_| corrupt("offline count"))
}

#[async_trait]
impl OfflineStore for SqliteStore {
    async fn push_offline(
        &self,
        user: &UserRef,
        stamp_ms: i64,
        xml: &str,
        max: usize,
    ) -> Result<bool> {
        let (user, xml) = (user.clone(), xml.to_owned());
        self.write(move |c| {
            // Counting inside the writer makes check-and-insert atomic against other pushes.
            if count_offline(c, &user)? >= max {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO offline (domain, user, stamp_ms, xml) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user.domain, user.user, stamp_ms, xml])?;
            Ok(true)
        })
        .await
    }

    async fn offline_messages(&self, user: &UserRef) -> Result<Vec<OfflineMessage>> {
        let user = user.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, stamp_ms, xml FROM offline
                 WHERE domain = ?1 AND user = ?2 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![user.domain, user.user], |r| {
                Ok(OfflineMessage {
                    id: r.get(0)?,
                    stamp_ms: r.get(1)?,
                    xml: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn offline_page(
        &self,
        user: &UserRef,
        after_id: i64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<OfflineMessage>> {
        let user = user.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, stamp_ms, xml FROM offline
                 WHERE domain = ?1 AND user = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
            )?;
            let limit = i64::try_from(max_count).unwrap_or(i64::MAX);
            let mut rows = stmt.query(params![user.domain, user.user, after_id, limit])?;
            let (mut page, mut bytes) = (Vec::new(), 0usize);
            while let Some(r) = rows.next()? {
                let xml: String = r.get(2)?;
                bytes += xml.len();
                if bytes > max_bytes && !page.is_empty() {
                    break;
                }
                page.push(OfflineMessage {
                    id: r.get(0)?,
                    stamp_ms: r.get(1)?,
                    xml,
                });
            }
            Ok(page)
        })
        .await
    }

    async fn remove_offline(&self, user: &UserRef, up_to_id: i64) -> Result<()> {
        let user = user.clone();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM offline WHERE domain = ?1 AND user = ?2 AND id <= ?3")?
                .execute(params![user.domain, user.user, up_to_id])?;
            Ok(())
        })
        .await
    }

    async fn offline_count(&self, user: &UserRef) -> Result<usize> {
        let user = user.clone();
        self.read(move |c| count_offline(c, &user)).await
    }
}

#[async_trait]
impl UserDataStore for SqliteStore {
    async fn get_data(&self, user: &UserRef, key: &str) -> Result<Option<String>> {
        let (user, key) = (user.clone(), key.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT value FROM user_data WHERE domain = ?1 AND user = ?2 AND key = ?3",
            )?
            .query_row(params![user.domain, user.user, key], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    async fn set_data(&self, user: &UserRef, key: &str, value: &str) -> Result<()> {
        let (user, key, value) = (user.clone(), key.to_owned(), value.to_owned());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO user_data (domain, user, key, value)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user.domain, user.user, key, value])?;
            Ok(())
        })
        .await
    }

    async fn remove_data(&self, user: &UserRef, key: &str) -> Result<()> {
        let (user, key) = (user.clone(), key.to_owned());
        self.write(move |c| {
            c.prepare_cached("DELETE FROM user_data WHERE domain = ?1 AND user = ?2 AND key = ?3")?
                .execute(params![user.domain, user.user, key])?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn session_opened(&self, rec: &SessionRecord) -> Result<()> {
        let rec = rec.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO sessions (jid, peer, node, started_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![rec.jid, rec.peer, rec.node, rec.started_ms])?;
            Ok(())
        })
        .await
    }

    async fn session_closed(&self, jid: &str) -> Result<()> {
        let jid = jid.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE jid = ?1")?
                .execute([jid])?;
            Ok(())
        })
        .await
    }

    async fn clear_sessions(&self, node: &str) -> Result<()> {
        let node = node.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM sessions WHERE node = ?1")?
                .execute([node])?;
            Ok(())
        })
        .await
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT jid, peer, node, started_ms FROM sessions ORDER BY jid")?;
            let rows = stmt.query_map([], |r| {
                Ok(SessionRecord {
                    jid: r.get(0)?,
                    peer: r.get(1)?,
                    node: r.get(2)?,
                    started_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[async_trait]
impl RoomStore for SqliteStore {
    async fn save_room(&self, room: &StoredRoom) -> Result<()> {
        let room = room.clone();
        self.write(move |c| {
            // A plain REPLACE would delete the row first and cascade to the affiliations; they
            // are rewritten below anyway, but an upsert keeps the intent obvious.
            c.prepare_cached(
                "INSERT INTO muc_rooms (domain, name, config, subject) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (domain, name) DO UPDATE SET config = ?3, subject = ?4",
            )?
            .execute(params![room.domain, room.name, room.config, room.subject])?;
            c.prepare_cached("DELETE FROM muc_affiliations WHERE domain = ?1 AND name = ?2")?
                .execute(params![room.domain, room.name])?;
            let mut insert = c.prepare_cached(
                "INSERT OR REPLACE INTO muc_affiliations
                 (domain, name, jid, affiliation, nick, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for a in &room.affiliations {
                insert.execute(params![
                    room.domain,
                    room.name,
                    a.jid,
                    a.affiliation,
                    a.nick,
                    a.reason
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_room(&self, domain: &str, name: &str) -> Result<()> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        self.write(move |c| {
            c.prepare_cached("DELETE FROM muc_affiliations WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
            c.prepare_cached("DELETE FROM muc_rooms WHERE domain = ?1 AND name = ?2")?
                .execute(params![domain, name])?;
            Ok(())
        })
        .await
    }

    async fn room(&self, domain: &str, name: &str) -> Result<Option<StoredRoom>> {
        let (domain, name) = (domain.to_owned(), name.to_owned());
        self.read(move |c| Ok(load_rooms(c, &domain, Some(&name))?.pop()))
            .await
    }

    async fn rooms(&self, domain: &str) -> Result<Vec<StoredRoom>> {
        let domain = domain.to_owned();
        self.read(move |c| load_rooms(c, &domain, None)).await
    }
}

/// The rooms of `domain` (only `name` when given), sorted by name, with their affiliations.
fn load_rooms(c: &Connection, domain: &str, name: Option<&str>) -> Result<Vec<StoredRoom>> {
    let mut stmt = c.prepare_cached(
        "SELECT name, config, subject FROM muc_rooms
         WHERE domain = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY name",
    )?;
    let mut rooms = stmt
        .query_map(params![domain, name], |r| {
            Ok(StoredRoom {
                domain: domain.to_owned(),
                name: r.get(0)?,
                config: r.get(1)?,
                subject: r.get(2)?,
                affiliations: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut affs = c.prepare_cached(
        "SELECT jid, affiliation, nick, reason FROM muc_affiliations
         WHERE domain = ?1 AND name = ?2 ORDER BY jid",
    )?;
    for room in &mut rooms {
        room.affiliations = affs
            .query_map(params![domain, room.name], |r| {
                Ok(RoomAffiliation {
                    jid: r.get(0)?,
                    affiliation: r.get(1)?,
                    nick: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
    }
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tempfile::TempDir;

    fn alice() -> UserRef {
        UserRef::new("alice", "example.org")
    }

    fn bob() -> UserRef {
        UserRef::new("bob", "example.org")
    }

    fn carol() -> UserRef {
        UserRef::new("carol", "example.org")
    }

    fn scram(hash: &str, seed: u8) -> StoredScram {
        StoredScram {
            hash: hash.into(),
            salt: vec![seed; 16],
            iterations: 4096 + u32::from(seed),
            stored_key: vec![seed.wrapping_add(1); 32],
            server_key: vec![seed.wrapping_add(2); 32],
        }
    }

    fn item(jid: &str, sub: Subscription, groups: &[&str]) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            name: Some(format!("name of {jid}")),
            subscription: sub,
            ask: sub == Subscription::None,
            approved: sub == Subscription::To,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn file_store() -> (TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("xmppd.db")).unwrap();
        (dir, store)
    }

    /// Occupies the writer with a job that waits until the returned sender fires, so the
    /// following jobs pile up in the queue and form one batch.
    async fn hold_writer(
        store: &Arc<SqliteStore>,
    ) -> (mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let s = store.clone();
        let handle = tokio::spawn(async move {
            s.write(move |_| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
        });
        entered_rx.await.unwrap();
        (release_tx, handle)
    }

    async fn wait_submitted(store: &SqliteStore, n: u64) {
        while store.submitted.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn table_rows(store: &SqliteStore, table: &'static str) -> i64 {
        store
            .read(move |c| {
                Ok(c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn create_user_and_read_credentials() {
        let (_dir, store) = file_store();
        assert!(!store.user_exists(&alice()).await.unwrap());
        store
            .create_user(&alice(), &[scram("SHA-1", 1), scram("SHA-256", 2)])
            .await
            .unwrap();
        assert!(store.user_exists(&alice()).await.unwrap());
        assert!(!store
            .user_exists(&UserRef::new("alice", "other.org"))
            .await
            .unwrap());
        assert_eq!(
            store.credentials(&alice(), "SHA-1").await.unwrap(),
            Some(scram("SHA-1", 1))
        );
        assert_eq!(
            store.credentials(&alice(), "SHA-256").await.unwrap(),
            Some(scram("SHA-256", 2))
        );
        assert_eq!(store.credentials(&alice(), "SHA-512").await.unwrap(), None);
        assert_eq!(store.credentials(&bob(), "SHA-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn create_user_twice_is_already_exists_and_keeps_credentials() {
        let (_dir, store) = file_store();
        store
            .create_user(&alice(), &[scram("SHA-1", 1)])
            .await
            .unwrap();
        let again = store.create_user(&alice(), &[scram("SHA-1", 9)]).await;
        assert!(
            matches!(again, Err(StorageError::AlreadyExists)),
            "{again:?}"
        );
        assert_eq!(
            store.credentials(&alice(), "SHA-1").await.unwrap(),
            Some(scram("SHA-1", 1))
        );
    }

    #[tokio::test]
    async fn set_credentials_replaces_all_entries() {
        let (_dir, store) = file_store();
        store
            .create_user(&alice(), &[scram("SHA-1", 1), scram("SHA-256", 2)])
            .await
            .unwrap();
        store
            .set_credentials(&alice(), &[scram("SHA-512", 3)])
            .await
            .unwrap();
        assert_eq!(store.credentials(&alice(), "SHA-1").await.unwrap(), None);
        assert_eq!(store.credentials(&alice(), "SHA-256").await.unwrap(), None);
        assert_eq!(
            store.credentials(&alice(), "SHA-512").await.unwrap(),
            Some(scram("SHA-512", 3))
        );
    }

    #[tokio::test]
    async fn missing_user_is_no_such_user() {
        let (_dir, store) = file_store();
        let set = store.set_credentials(&alice(), &[scram("SHA-1", 1)]).await;
        assert!(matches!(set, Err(StorageError::NoSuchUser)), "{set:?}");
        let del = store.remove_account(&alice(), Some(i64::MAX)).await;
        assert!(matches!(del, Err(StorageError::NoSuchUser)), "{del:?}");
        // Only a removal keeps a name.
        assert_eq!(store.tombstone(&alice()).await.unwrap(), None);
        // The failed set_credentials must not have left credentials behind.
        assert_eq!(table_rows(&store, "scram").await, 0);
    }

    #[tokio::test]
    async fn list_users_is_per_domain_and_sorted() {
        let (_dir, store) = file_store();
        for name in ["zoe", "bob", "alice"] {
            store
                .create_user(&UserRef::new(name, "example.org"), &[])
                .await
                .unwrap();
        }
        store
            .create_user(&UserRef::new("carl", "other.org"), &[])
            .await
            .unwrap();
        assert_eq!(
            store.list_users("example.org").await.unwrap(),
            ["alice", "bob", "zoe"]
        );
        assert_eq!(store.list_users("other.org").await.unwrap(), ["carl"]);
        assert!(store.list_users("nowhere.org").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn remove_account_removes_everything_of_that_user_only() {
        let (_dir, store) = file_store();
        for u in [alice(), bob()] {
            store.create_user(&u, &[scram("SHA-1", 1)]).await.unwrap();
            store
                .set_roster_item(
                    &u,
                    &item("carol@example.com", Subscription::Both, &["a", "b"]),
                )
                .await
                .unwrap();
            store
                .add_pending_subscription(&u, "dave@example.com", "<presence/>")
                .await
                .unwrap();
            assert!(store.push_offline(&u, 1, "<message/>", 10).await.unwrap());
            store
                .set_data(&u, "jabber:iq:private", "<x/>")
                .await
                .unwrap();
        }
        store.remove_account(&alice(), None).await.unwrap();

        assert!(!store.user_exists(&alice()).await.unwrap());
        assert_eq!(store.credentials(&alice(), "SHA-1").await.unwrap(), None);
        // The version counter stays and moves on: a cached roster of the old account is stale.
        assert_eq!(store.roster(&alice()).await.unwrap(), (2, vec![]));
        assert!(store
            .pending_subscriptions(&alice())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.offline_count(&alice()).await.unwrap(), 0);
        assert_eq!(
            store.get_data(&alice(), "jabber:iq:private").await.unwrap(),
            None
        );
        for table in ["scram", "roster", "roster_groups", "offline", "users"] {
            assert_eq!(
                table_rows(&store, table).await,
                if table == "roster_groups" { 2 } else { 1 }
            );
        }
        assert_eq!(table_rows(&store, "tombstones").await, 0);

        // Bob is untouched.
        assert!(store.user_exists(&bob()).await.unwrap());
        let (version, items) = store.roster(&bob()).await.unwrap();
        assert_eq!((version, items.len()), (1, 1));
        assert_eq!(items[0].groups, ["a", "b"]);
        assert_eq!(store.offline_count(&bob()).await.unwrap(), 1);
        assert_eq!(store.pending_subscriptions(&bob()).await.unwrap().len(), 1);

        // A re-created account starts empty.
        store.create_user(&alice(), &[]).await.unwrap();
        assert_eq!(store.roster(&alice()).await.unwrap(), (2, vec![]));
    }

    /// alice@example.org's footprint in others' data: rosters (both directions, a request she
    /// has not answered, a pre-approval), a request of hers waiting at erin, and rooms of two
    /// chat services.
    async fn alice_with_footprint(store: &SqliteStore) {
        let dave = UserRef::new("dave", "other.org");
        let named = |sub, ask, approved| RosterItem {
            name: Some("Al".into()),
            ask,
            approved,
            ..item("alice@example.org", sub, &["friends"])
        };
        for (user, it) in [
            (bob(), named(Subscription::Both, false, false)),
            (carol(), named(Subscription::None, true, true)),
            (dave.clone(), named(Subscription::From, false, false)),
        ] {
            store.create_user(&user, &[]).await.unwrap();
            store.set_roster_item(&user, &it).await.unwrap();
        }
        store.create_user(&alice(), &[]).await.unwrap();
        for it in [
            item("bob@example.org", Subscription::Both, &[]),
            item("dave@other.org", Subscription::To, &[]),
        ] {
            store.set_roster_item(&alice(), &it).await.unwrap();
        }
        let erin = UserRef::new("erin", "example.org");
        for from in ["alice@example.org", "bob@example.org"] {
            store
                .add_pending_subscription(&erin, from, "<presence/>")
                .await
                .unwrap();
        }
        store
            .add_pending_subscription(&alice(), "erin@example.org", "<presence/>")
            .await
            .unwrap();
        let owned = room(
            "a",
            &[
                ("alice@example.org", "owner"),
                ("bob@example.org", "member"),
            ],
        );
        store.save_room(&owned).await.unwrap();
        store
            .save_room(&room("b", &[("bob@example.org", "owner")]))
            .await
            .unwrap();
        let mut banned = room("c", &[("alice@example.org", "outcast")]);
        banned.domain = "conference.other.org".into();
        store.save_room(&banned).await.unwrap();
    }

    #[tokio::test]
    async fn removing_an_account_cancels_its_subscriptions_requests_and_affiliations() {
        let (_dir, store) = file_store();
        alice_with_footprint(&store).await;
        let own_roster = store.roster(&alice()).await.unwrap().1;
        let before: Vec<RosterItem> = {
            let mut v = Vec::new();
            for u in [bob(), carol(), UserRef::new("dave", "other.org")] {
                v.push(
                    store
                        .roster_item(&u, "alice@example.org")
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            v
        };
        let until = now_ms() + 3_600_000;
        let removal = store.remove_account(&alice(), Some(until)).await.unwrap();

        assert_eq!(removal.roster, own_roster);
        let holders: Vec<UserRef> = removal.contacts.iter().map(|(u, _)| u.clone()).collect();
        assert_eq!(holders, [bob(), carol(), UserRef::new("dave", "other.org")]);
        let was: Vec<RosterItem> = removal.contacts.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(was, before);
        for holder in &holders {
            let (version, items) = store.roster(holder).await.unwrap();
            // RFC 6121 §3.2, §3.3: as if alice had sent unsubscribe and unsubscribed; the item
            // itself (name, groups) is the contact's to keep or remove.
            assert_eq!(version, 2, "{holder:?}");
            assert_eq!(
                items,
                [RosterItem {
                    name: Some("Al".into()),
                    ask: false,
                    approved: false,
                    ..item("alice@example.org", Subscription::None, &["friends"])
                }]
            );
        }
        let erin = UserRef::new("erin", "example.org");
        assert_eq!(removal.requests_dropped, std::slice::from_ref(&erin));
        let left: Vec<String> = (store.pending_subscriptions(&erin).await.unwrap())
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(left, ["bob@example.org"]);

        assert_eq!(
            removal.rooms,
            [
                ("conference.example.org".to_owned(), "a".to_owned()),
                ("conference.other.org".to_owned(), "c".to_owned())
            ]
        );
        let dom = "conference.example.org";
        let a = store.room(dom, "a").await.unwrap().unwrap();
        assert_eq!(
            a.affiliations,
            room("a", &[("bob@example.org", "member")]).affiliations
        );
        let b = store.room(dom, "b").await.unwrap().unwrap();
        assert_eq!(b, room("b", &[("bob@example.org", "owner")]));
        let c = store.room("conference.other.org", "c").await.unwrap();
        assert!(c.unwrap().affiliations.is_empty());

        // The name is kept until the tombstone ends, unless an administrator lifts it.
        assert_eq!(store.tombstone(&alice()).await.unwrap(), Some(until));
        let again = store.create_user(&alice(), &[scram("SHA-1", 1)]).await;
        assert!(
            matches!(again, Err(StorageError::Tombstoned { until_ms }) if until_ms == until),
            "{again:?}"
        );
        assert!(!store.user_exists(&alice()).await.unwrap());
        store.clear_tombstone(&alice()).await.unwrap();
        store
            .create_user(&alice(), &[scram("SHA-1", 1)])
            .await
            .unwrap();
        assert_eq!(store.tombstone(&alice()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_new_account_of_a_removed_name_starts_empty() {
        let (_dir, store) = file_store();
        alice_with_footprint(&store).await;
        // A tombstone that has ended does not hold the name.
        let removal = store.remove_account(&alice(), Some(now_ms() - 1)).await;
        assert_eq!(removal.unwrap().contacts.len(), 3);
        assert_eq!(store.tombstone(&alice()).await.unwrap(), None);
        // What the last sessions of the old account wrote after its removal.
        store
            .set_roster_item(&alice(), &item("bob@example.org", Subscription::Both, &[]))
            .await
            .unwrap();
        store
            .set_data(&alice(), "urn:xmpp:last", "1")
            .await
            .unwrap();
        store
            .add_pending_subscription(&alice(), "bob@example.org", "<presence/>")
            .await
            .unwrap();

        store
            .create_user(&alice(), &[scram("SHA-1", 1)])
            .await
            .unwrap();
        assert!(store.roster(&alice()).await.unwrap().1.is_empty());
        assert_eq!(
            store.get_data(&alice(), "urn:xmpp:last").await.unwrap(),
            None
        );
        assert!(store
            .pending_subscriptions(&alice())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(table_rows(&store, "tombstones").await, 0);
        assert_eq!(
            store.credentials(&alice(), "SHA-1").await.unwrap(),
            Some(scram("SHA-1", 1))
        );
    }

    #[tokio::test]
    async fn roster_versions_and_items() {
        let (_dir, store) = file_store();
        assert_eq!(store.roster(&alice()).await.unwrap(), (0, vec![]));
        let zed = item("zed@example.com", Subscription::To, &["Friends", "Work"]);
        let amy = RosterItem {
            name: None,
            ..item("amy@example.com", Subscription::None, &[])
        };
        assert_eq!(store.set_roster_item(&alice(), &zed).await.unwrap(), 1);
        assert_eq!(store.set_roster_item(&alice(), &amy).await.unwrap(), 2);
        assert_eq!(
            store.roster(&alice()).await.unwrap(),
            (2, vec![amy.clone(), zed.clone()])
        );
        assert_eq!(
            store
                .roster_item(&alice(), "zed@example.com")
                .await
                .unwrap(),
            Some(zed)
        );
        assert_eq!(
            store
                .roster_item(&alice(), "nobody@example.com")
                .await
                .unwrap(),
            None
        );

        // Replacing an item replaces its groups and fields.
        let zed2 = item("zed@example.com", Subscription::Both, &["Work", "Zoo"]);
        assert_eq!(store.set_roster_item(&alice(), &zed2).await.unwrap(), 3);
        assert_eq!(
            store.roster(&alice()).await.unwrap(),
            (3, vec![amy.clone(), zed2])
        );

        assert_eq!(
            store
                .remove_roster_item(&alice(), "nobody@example.com")
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            store
                .remove_roster_item(&alice(), "zed@example.com")
                .await
                .unwrap(),
            4
        );
        assert_eq!(store.roster(&alice()).await.unwrap(), (4, vec![amy]));
        assert_eq!(table_rows(&store, "roster_groups").await, 0);
        // Another user's roster has its own counter.
        assert_eq!(store.roster(&bob()).await.unwrap(), (0, vec![]));
    }

    #[tokio::test]
    async fn roster_length_and_bare_version_bumps() {
        let (_dir, store) = file_store();
        assert_eq!(store.roster_len(&alice()).await.unwrap(), 0);
        assert_eq!(store.bump_roster_version(&alice()).await.unwrap(), 1);
        assert_eq!(store.roster_len(&alice()).await.unwrap(), 0);
        let a = item("a@x", Subscription::None, &["g"]);
        let b = item("b@x", Subscription::Both, &[]);
        store.set_roster_item(&alice(), &a).await.unwrap();
        store.set_roster_item(&alice(), &b).await.unwrap();
        // Replacing an item does not count it twice; removing an absent one changes nothing.
        store.set_roster_item(&alice(), &a).await.unwrap();
        store
            .remove_roster_item(&alice(), "absent@x")
            .await
            .unwrap();
        assert_eq!(store.roster_len(&alice()).await.unwrap(), 2);
        assert_eq!(store.bump_roster_version(&alice()).await.unwrap(), 5);
        store.remove_roster_item(&alice(), "a@x").await.unwrap();
        assert_eq!(store.roster_len(&alice()).await.unwrap(), 1);
        assert_eq!(store.roster(&alice()).await.unwrap(), (6, vec![b]));
        assert_eq!(store.roster_len(&bob()).await.unwrap(), 0);
        // A removed account's count goes with its roster; a new account of the name starts at 0.
        store.create_user(&alice(), &[]).await.unwrap();
        store.remove_account(&alice(), None).await.unwrap();
        assert_eq!(store.roster_len(&alice()).await.unwrap(), 0);
        store.create_user(&alice(), &[]).await.unwrap();
        store.set_roster_item(&alice(), &a).await.unwrap();
        assert_eq!(store.roster_len(&alice()).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn migrating_counts_the_rosters_already_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.db");
        {
            // A database as the release before the item count left it.
            let mut raw = Connection::open(&path).unwrap();
            let tx = raw.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute_batch(
                "INSERT INTO roster VALUES ('example.org', 'alice', 'a@x', NULL, 'none', 0, 0);
                 INSERT INTO roster VALUES ('example.org', 'alice', 'b@x', NULL, 'none', 0, 0);
                 INSERT INTO roster VALUES ('example.org', 'bob', 'a@x', NULL, 'none', 0, 0);
                 INSERT INTO roster_version VALUES ('example.org', 'alice', 7);
                 INSERT INTO roster_version VALUES ('example.org', 'bob', 1);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.roster_len(&alice()).await.unwrap(), 2);
        assert_eq!(store.roster_len(&bob()).await.unwrap(), 1);
        assert_eq!(store.roster(&alice()).await.unwrap().0, 7);
    }

    #[tokio::test]
    async fn roster_groups_keep_odd_names_and_order() {
        let (_dir, store) = file_store();
        let odd = item(
            "x@example.com",
            Subscription::From,
            &["b\nc", "", "'; DROP TABLE roster;--", "é"],
        );
        store.set_roster_item(&alice(), &odd).await.unwrap();
        // Duplicate groups collapse to the first occurrence instead of failing the write.
        let dup = item("y@example.com", Subscription::Both, &["g", "h", "g"]);
        store.set_roster_item(&alice(), &dup).await.unwrap();
        let (_, items) = store.roster(&alice()).await.unwrap();
        assert_eq!(items[0], odd);
        assert_eq!(items[1].groups, ["g", "h"]);
    }

    #[tokio::test]
    async fn corrupt_subscription_is_a_backend_error() {
        let (_dir, store) = file_store();
        store
            .write(|c| {
                c.execute(
                    "INSERT INTO roster
                     VALUES ('example.org', 'alice', 'x@y', NULL, 'bogus', 0, 0)",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let got = store.roster(&alice()).await;
        assert!(matches!(got, Err(StorageError::Backend(_))), "{got:?}");
    }

    #[tokio::test]
    async fn pending_subscriptions_add_replace_remove() {
        let (_dir, store) = file_store();
        store
            .add_pending_subscription(&alice(), "zed@x", "<presence id='1'/>")
            .await
            .unwrap();
        store
            .add_pending_subscription(&alice(), "amy@x", "<presence id='2'/>")
            .await
            .unwrap();
        store
            .add_pending_subscription(&alice(), "zed@x", "<presence id='3'/>")
            .await
            .unwrap();
        assert_eq!(
            store.pending_subscriptions(&alice()).await.unwrap(),
            [
                ("amy@x".to_string(), "<presence id='2'/>".to_string()),
                ("zed@x".to_string(), "<presence id='3'/>".to_string())
            ]
        );
        store
            .remove_pending_subscription(&alice(), "amy@x")
            .await
            .unwrap();
        store
            .remove_pending_subscription(&alice(), "never@x")
            .await
            .unwrap();
        let left = store.pending_subscriptions(&alice()).await.unwrap();
        assert_eq!(
            left.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
            ["zed@x"]
        );
        assert!(store
            .pending_subscriptions(&bob())
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn offline_cap_order_and_removal() {
        let (_dir, store) = file_store();
        for i in 0..3 {
            assert!(store
                .push_offline(&alice(), 100 + i, &format!("<m{i}/>"), 3)
                .await
                .unwrap());
        }
        assert!(!store
            .push_offline(&alice(), 200, "<over/>", 3)
            .await
            .unwrap());
        assert!(!store.push_offline(&bob(), 200, "<zero/>", 0).await.unwrap());
        assert!(store.push_offline(&bob(), 200, "<bob/>", 3).await.unwrap());
        assert_eq!(store.offline_count(&alice()).await.unwrap(), 3);

        let msgs = store.offline_messages(&alice()).await.unwrap();
        let xml: Vec<_> = msgs.iter().map(|m| m.xml.as_str()).collect();
        assert_eq!(xml, ["<m0/>", "<m1/>", "<m2/>"]);
        assert_eq!(
            msgs.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(),
            [100, 101, 102]
        );
        assert!(msgs.windows(2).all(|w| w[0].id < w[1].id));

        store.remove_offline(&alice(), msgs[1].id).await.unwrap();
        assert_eq!(
            store.offline_messages(&alice()).await.unwrap(),
            [msgs[2].clone()]
        );
        // Removal is per user even when ids overlap the range.
        assert_eq!(store.offline_count(&bob()).await.unwrap(), 1);
        // Room again after removal.
        assert!(store
            .push_offline(&alice(), 300, "<again/>", 3)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn offline_pages_follow_the_cursor_and_both_bounds() {
        let (_dir, store) = file_store();
        for i in 0..5 {
            let xml = format!("<m{i}>{}</m{i}>", "x".repeat(100));
            assert!(store.push_offline(&alice(), i, &xml, 10).await.unwrap());
        }
        store.push_offline(&bob(), 9, "<bob/>", 10).await.unwrap();
        let page = store.offline_page(&alice(), 0, 2, 1 << 20).await.unwrap();
        assert_eq!(page.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [0, 1]);
        let next = store
            .offline_page(&alice(), page[1].id, 10, 250)
            .await
            .unwrap();
        assert_eq!(next.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [2, 3]);
        // A message larger than the byte bound still comes, alone.
        let big = store
            .offline_page(&alice(), next[1].id, 10, 1)
            .await
            .unwrap();
        assert_eq!(big.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [4]);
        assert!(store
            .offline_page(&alice(), big[0].id, 10, 1)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn offline_ids_are_not_reused_after_removal() {
        let (_dir, store) = file_store();
        store.push_offline(&alice(), 1, "<a/>", 10).await.unwrap();
        let first = store.offline_messages(&alice()).await.unwrap()[0].id;
        store.remove_offline(&alice(), first).await.unwrap();
        store.push_offline(&alice(), 2, "<b/>", 10).await.unwrap();
        let second = store.offline_messages(&alice()).await.unwrap()[0].id;
        assert!(
            second > first,
            "an id acknowledged as delivered must not come back"
        );
    }

    #[tokio::test]
    async fn user_data_roundtrip() {
        let (_dir, store) = file_store();
        assert_eq!(store.get_data(&alice(), "k").await.unwrap(), None);
        store.set_data(&alice(), "k", "v1").await.unwrap();
        store.set_data(&alice(), "k", "v2").await.unwrap();
        store.set_data(&bob(), "k", "bob's").await.unwrap();
        let weird = "'); DELETE FROM user_data; --\0\n✓";
        store.set_data(&alice(), weird, weird).await.unwrap();
        assert_eq!(
            store.get_data(&alice(), "k").await.unwrap().as_deref(),
            Some("v2")
        );
        assert_eq!(
            store.get_data(&alice(), weird).await.unwrap().as_deref(),
            Some(weird)
        );
        store.remove_data(&alice(), "k").await.unwrap();
        store.remove_data(&alice(), "absent").await.unwrap();
        assert_eq!(store.get_data(&alice(), "k").await.unwrap(), None);
        assert_eq!(
            store.get_data(&bob(), "k").await.unwrap().as_deref(),
            Some("bob's")
        );
    }

    #[tokio::test]
    async fn sessions_open_close_clear() {
        let (_dir, store) = file_store();
        let rec = |jid: &str, node: &str| SessionRecord {
            jid: jid.into(),
            peer: "192.0.2.1:5222".into(),
            node: node.into(),
            started_ms: 42,
        };
        store.session_opened(&rec("b@x/r", "n1")).await.unwrap();
        store.session_opened(&rec("a@x/r", "n1")).await.unwrap();
        store.session_opened(&rec("c@x/r", "n2")).await.unwrap();
        // Re-opening the same full JID replaces the record.
        store.session_opened(&rec("c@x/r", "n3")).await.unwrap();
        assert_eq!(
            store.sessions().await.unwrap(),
            [rec("a@x/r", "n1"), rec("b@x/r", "n1"), rec("c@x/r", "n3")]
        );
        store.session_closed("b@x/r").await.unwrap();
        store.session_closed("unknown@x/r").await.unwrap();
        store.clear_sessions("n1").await.unwrap();
        assert_eq!(store.sessions().await.unwrap(), [rec("c@x/r", "n3")]);
    }

    #[tokio::test]
    async fn iterations_use_the_full_u32_range() {
        let (_dir, store) = file_store();
        let creds = StoredScram {
            iterations: u32::MAX,
            ..scram("SHA-256", 7)
        };
        store
            .create_user(&alice(), std::slice::from_ref(&creds))
            .await
            .unwrap();
        assert_eq!(
            store.credentials(&alice(), "SHA-256").await.unwrap(),
            Some(creds)
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_and_its_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/db/xmppd.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .create_user(&alice(), &[scram("SHA-256", 1)])
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(&dir.path().join("data/db")), 0o700);
        for file in ["xmppd.db", "xmppd.db-wal", "xmppd.db-shm"] {
            assert_eq!(
                mode(&dir.path().join("data/db").join(file)),
                0o600,
                "{file}"
            );
        }
        // An existing directory keeps the mode its owner chose.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
        drop(SqliteStore::open(&shared.join("xmppd.db")).unwrap());
        assert_eq!(mode(&shared), 0o750);
        assert_eq!(mode(&shared.join("xmppd.db")), 0o600);
    }

    #[tokio::test]
    async fn writes_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dirs/xmppd.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .create_user(&alice(), &[scram("SHA-1", 1)])
                .await
                .unwrap();
            store
                .set_roster_item(&alice(), &item("c@x", Subscription::Both, &["g"]))
                .await
                .unwrap();
            store
                .push_offline(&alice(), 5, "<message/>", 10)
                .await
                .unwrap();
            store.set_data(&alice(), "k", "v").await.unwrap();
            assert!(store.commit_count() >= 4);
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.credentials(&alice(), "SHA-1").await.unwrap(),
            Some(scram("SHA-1", 1))
        );
        let (version, items) = store.roster(&alice()).await.unwrap();
        assert_eq!(
            (version, items),
            (1, vec![item("c@x", Subscription::Both, &["g"])])
        );
        assert_eq!(
            store.offline_messages(&alice()).await.unwrap()[0].xml,
            "<message/>"
        );
        assert_eq!(
            store.get_data(&alice(), "k").await.unwrap().as_deref(),
            Some("v")
        );
        assert_eq!(store.commit_count(), 0, "the counter is per instance");
    }

    #[tokio::test]
    async fn pragmas_are_applied() {
        let (_dir, store) = file_store();
        let (mode, sync, fk, version): (String, i64, i64, i64) = store
            .write(|c| {
                let get = |p: &str| c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0));
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    get("synchronous")?,
                    get("foreign_keys")?,
                    get("user_version")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(fk, 1);
        assert_eq!(version, MIGRATIONS.len() as i64);
        // Reader connections refuse writes.
        let write_on_reader = store
            .read(|c| Ok(c.execute("DELETE FROM users", [])?))
            .await;
        assert!(matches!(write_on_reader, Err(StorageError::Backend(_))));
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.db");
        drop(SqliteStore::open(&path).unwrap());
        let raw = Connection::open(&path).unwrap();
        raw.pragma_update(None, "user_version", 99).unwrap();
        drop(raw);
        let err = SqliteStore::open(&path)
            .err()
            .expect("newer schema must be refused");
        assert!(err.to_string().contains("99"), "{err}");
    }

    #[tokio::test]
    async fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StorageError::Backend(_))
        ));
    }

    fn room(name: &str, affs: &[(&str, &str)]) -> StoredRoom {
        StoredRoom {
            domain: "conference.example.org".into(),
            name: name.into(),
            config: format!("<x>{name}</x>"),
            subject: "hello".into(),
            affiliations: affs
                .iter()
                .map(|(jid, a)| RoomAffiliation {
                    jid: (*jid).into(),
                    affiliation: (*a).into(),
                    nick: (*a == "member").then(|| "nick".into()),
                    reason: None,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn rooms_save_replace_list_delete() {
        let (_dir, store) = file_store();
        let dom = "conference.example.org";
        let a = room("a", &[("m@x", "member"), ("o@x", "owner")]);
        store.save_room(&a).await.unwrap();
        store.save_room(&room("b", &[])).await.unwrap();
        assert_eq!(store.room(dom, "a").await.unwrap(), Some(a.clone()));
        // Saving again replaces the affiliation list as a whole.
        let mut a2 = room("a", &[("bad@x", "outcast"), ("o@x", "owner")]);
        a2.subject = "changed".into();
        store.save_room(&a2).await.unwrap();
        assert_eq!(store.room(dom, "a").await.unwrap(), Some(a2.clone()));
        let names: Vec<String> = store
            .rooms(dom)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(store.rooms("other.example.org").await.unwrap().is_empty());
        store.delete_room(dom, "a").await.unwrap();
        store.delete_room(dom, "missing").await.unwrap();
        assert_eq!(store.room(dom, "a").await.unwrap(), None);
        assert_eq!(table_rows(&store, "muc_affiliations").await, 0);
        assert_eq!(store.rooms(dom).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn rooms_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let r = room("persist", &[("o@x", "owner")]);
        {
            let store = SqliteStore::open(&path).unwrap();
            store.save_room(&r).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.rooms(&r.domain).await.unwrap(), vec![r]);
    }

    #[tokio::test]
    async fn in_memory_store_works() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .create_user(&alice(), &[scram("SHA-1", 1)])
            .await
            .unwrap();
        assert!(store.user_exists(&alice()).await.unwrap());
        assert_eq!(
            store
                .set_roster_item(&alice(), &item("c@x", Subscription::To, &[]))
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.roster(&alice()).await.unwrap().1.len(), 1);
        // Two in-memory stores are independent databases.
        let other = SqliteStore::open_in_memory().unwrap();
        assert!(!other.user_exists(&alice()).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_pushes_are_group_committed() {
        let (_dir, store) = file_store();
        let store = Arc::new(store);
        let (release, gate) = hold_writer(&store).await;
        let commits_before = store.commit_count();
        let submitted_before = store.submitted.load(Ordering::SeqCst);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                let user = UserRef::new(format!("u{}", i % 7), "example.org");
                tokio::spawn(
                    async move { s.push_offline(&user, i, &format!("<m{i}/>"), 1000).await },
                )
            })
            .collect();
        wait_submitted(&store, submitted_before + 200).await;
        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
        for t in tasks {
            assert!(t.await.unwrap().unwrap());
        }
        // The held batch, then all 200 pushes in a single transaction.
        assert_eq!(store.commit_count() - commits_before, 2);

        let mut ids = HashSet::new();
        let mut xml = HashSet::new();
        for u in 0..7 {
            for m in store
                .offline_messages(&UserRef::new(format!("u{u}"), "example.org"))
                .await
                .unwrap()
            {
                assert!(ids.insert(m.id), "duplicate id {}", m.id);
                xml.insert(m.xml);
            }
        }
        assert_eq!((ids.len(), xml.len()), (200, 200));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_pushes_respect_the_cap() {
        let (_dir, store) = file_store();
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.push_offline(&alice(), i, "<m/>", 150).await })
            })
            .collect();
        let mut stored = 0;
        for t in tasks {
            stored += usize::from(t.await.unwrap().unwrap());
        }
        assert_eq!(stored, 150);
        assert_eq!(store.offline_count(&alice()).await.unwrap(), 150);
        assert!(store.commit_count() <= 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failing_job_does_not_fail_its_batch() {
        let (_dir, store) = file_store();
        let store = Arc::new(store);
        store.create_user(&alice(), &[]).await.unwrap();
        let (release, gate) = hold_writer(&store).await;
        let commits_before = store.commit_count();
        let base = store.submitted.load(Ordering::SeqCst);

        let s = store.clone();
        let first = tokio::spawn(async move { s.push_offline(&bob(), 1, "<first/>", 10).await });
        wait_submitted(&store, base + 1).await;
        let s = store.clone();
        let failing = tokio::spawn(async move {
            s.write(|c| {
                c.execute(
                    "INSERT INTO user_data VALUES ('example.org', 'bob', 'half', 'done')",
                    [],
                )?;
                Err::<(), _>(StorageError::Backend("job failed after writing".into()))
            })
            .await
        });
        wait_submitted(&store, base + 2).await;
        let s = store.clone();
        let duplicate = tokio::spawn(async move { s.create_user(&alice(), &[]).await });
        wait_submitted(&store, base + 3).await;
        let s = store.clone();
        let bad_sql = tokio::spawn(async move {
            s.write(|c| Ok(c.execute("INSERT INTO no_such_table VALUES (1)", [])?))
                .await
        });
        wait_submitted(&store, base + 4).await;
        let s = store.clone();
        let last = tokio::spawn(async move { s.set_data(&bob(), "last", "yes").await });
        wait_submitted(&store, base + 5).await;

        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
        assert!(first.await.unwrap().unwrap());
        assert!(matches!(
            failing.await.unwrap(),
            Err(StorageError::Backend(_))
        ));
        assert!(matches!(
            duplicate.await.unwrap(),
            Err(StorageError::AlreadyExists)
        ));
        assert!(matches!(
            bad_sql.await.unwrap(),
            Err(StorageError::Backend(_))
        ));
        last.await.unwrap().unwrap();
        assert_eq!(
            store.commit_count() - commits_before,
            2,
            "one batch after the held one"
        );

        assert_eq!(store.offline_count(&bob()).await.unwrap(), 1);
        assert_eq!(
            store.get_data(&bob(), "last").await.unwrap().as_deref(),
            Some("yes")
        );
        assert_eq!(
            store.get_data(&bob(), "half").await.unwrap(),
            None,
            "rolled back"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_do_not_wait_for_a_running_batch() {
        let (_dir, store) = file_store();
        let store = Arc::new(store);
        store.set_data(&alice(), "k", "committed").await.unwrap();
        let (release, gate) = hold_writer(&store).await;
        // The writer is stuck inside an open transaction; a read must still complete.
        assert_eq!(
            store.get_data(&alice(), "k").await.unwrap().as_deref(),
            Some("committed")
        );
        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_on_one_file_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.db");
        let server = Arc::new(SqliteStore::open(&path).unwrap());
        let cli = Arc::new(SqliteStore::open(&path).unwrap());

        cli.create_user(&alice(), &[scram("SHA-256", 4)])
            .await
            .unwrap();
        assert!(server.user_exists(&alice()).await.unwrap());
        let dup = server.create_user(&alice(), &[]).await;
        assert!(matches!(dup, Err(StorageError::AlreadyExists)), "{dup:?}");
        server.set_data(&alice(), "k", "from server").await.unwrap();
        assert_eq!(
            cli.get_data(&alice(), "k").await.unwrap().as_deref(),
            Some("from server")
        );

        // Both write at once: the busy timeout serialises them without errors.
        let mut tasks = Vec::new();
        for store in [server.clone(), cli.clone()] {
            for i in 0..50 {
                let s = store.clone();
                tasks.push(tokio::spawn(async move {
                    s.push_offline(&alice(), i, "<m/>", 1000).await
                }));
            }
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap());
        }
        assert_eq!(server.offline_count(&alice()).await.unwrap(), 100);
        cli.remove_account(&alice(), None).await.unwrap();
        assert!(!server.user_exists(&alice()).await.unwrap());
        assert_eq!(server.offline_count(&alice()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn dropping_the_store_runs_queued_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xmppd.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            use std::future::Future;
            // Queue a write whose caller gives up before the answer arrives.
            let user = alice();
            let pending = store.set_data(&user, "k", "queued");
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut pending = std::pin::pin!(pending);
            let _ = pending.as_mut().poll(&mut cx);
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.get_data(&alice(), "k").await.unwrap().as_deref(),
            Some("queued")
        );
    }
}
