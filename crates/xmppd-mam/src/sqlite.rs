//! [`SqliteArchive`]: the archive's tables in the server's SQLite database, written through the
//! store's group-commit writer ([`SqliteStore::write`]), so an archived message is durable
//! when `append` returns and many messages share one fsync.
//!
//! One row per archived message and owner; its `INTEGER PRIMARY KEY AUTOINCREMENT` is the
//! archive id, so ids only grow and are never reused after a purge. The full-text index is a
//! contentless FTS5 table keyed by the same id, which holds each body beside a token naming its
//! owner ([`owner_token`]), so that a search intersects the owner's entries with the terms'
//! rather than reading every archive's matches; a one-row table counts the stanza bytes.
//! Appends index the bodies at the end of the writer's batch, in its transaction (one FTS5
//! segment per batch); deletions take the index entries and the byte count along by trigger.
//!
//! The trait's contract is tested on every engine alike by `tests/conformance`; the tests
//! here are of what only this engine has (the index's migration, the writer's batches).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use tokio::sync::oneshot;
use xmppd_storage::{Deferred, Queued, Schema, SqliteStore, StorageError};

use crate::sql::Arg;
use crate::store::{
    join_jids, split_jids, ArchiveError, ArchiveStore, DefaultPolicy, Direction, Matcher,
    NewMessage, Page, PageRequest, Prefs,
};

/// Migrations of the archive's tables (see [`Schema`]): append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "mam",
    migrations: &[
        r"
CREATE TABLE mam_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    stamp_ms INTEGER NOT NULL,
    with_bare TEXT NOT NULL,
    with_resource TEXT NOT NULL,
    direction INTEGER NOT NULL,
    stanza TEXT NOT NULL
);
CREATE INDEX mam_messages_owner ON mam_messages (owner, id);
CREATE INDEX mam_messages_with ON mam_messages (owner, with_bare, id);
CREATE INDEX mam_messages_stamp ON mam_messages (stamp_ms);
CREATE VIRTUAL TABLE mam_fts USING fts5 (body, content = '', contentless_delete = 1);
CREATE TABLE mam_size (only INTEGER PRIMARY KEY CHECK (only = 0), bytes INTEGER NOT NULL);
INSERT INTO mam_size (only, bytes) VALUES (0, 0);
CREATE TRIGGER mam_messages_added AFTER INSERT ON mam_messages BEGIN
    UPDATE mam_size SET bytes = bytes + octet_length(new.stanza);
END;
CREATE TRIGGER mam_messages_removed AFTER DELETE ON mam_messages BEGIN
    UPDATE mam_size SET bytes = bytes - octet_length(old.stanza);
    DELETE FROM mam_fts WHERE rowid = old.id;
END;
CREATE TABLE mam_prefs (
    owner TEXT PRIMARY KEY,
    default_policy TEXT NOT NULL,
    always TEXT NOT NULL,
    never TEXT NOT NULL
) WITHOUT ROWID;
",
        // 2: the full-text index with the owner's token beside each body. The old index is
        // contentless, so its bodies are read again from the stanzas, in batches, by
        // `SqliteArchive::open` (`reindex`), which drops `mam_fts` once they all moved.
        r"
CREATE VIRTUAL TABLE mam_text USING fts5 (owner, body, content = '', contentless_delete = 1);
DROP TRIGGER mam_messages_removed;
CREATE TRIGGER mam_messages_removed AFTER DELETE ON mam_messages BEGIN
    UPDATE mam_size SET bytes = bytes - octet_length(old.stanza);
    DELETE FROM mam_text WHERE rowid = old.id;
END;
",
        // 3: appends count their bytes themselves, once per writer job (`append_group`): the
        // trigger made every insert a statement that may abort, and SQLite copied each page
        // the insert touched into a statement journal first.
        r"
DROP TRIGGER mam_messages_added;
",
    ],
};

/// Rows read per transaction while an archive from before migration 2 is indexed again.
const REINDEX_BATCH: usize = 5_000;

/// Most ids one `ids` filter may name.
pub const MAX_IDS: usize = 256;

/// Most appends one writer job holds (see [`SqliteArchive`]'s `append_all`).
const GROUP_MAX: usize = 256;

/// The archive over a [`SqliteStore`].
///
/// Appends made while an earlier one still waits for the writer join its job, as long as
/// nothing else was queued for the writer since (the store's submission count tells): one
/// job, one savepoint and one byte-count update for many messages, in the order they were
/// appended and in order with every other write. SQLite copies every page a savepoint first
/// changes, so a savepoint per message cost more than its rows.
pub struct SqliteArchive {
    store: Arc<SqliteStore>,
    /// The latest stamp given, so stamps never decrease along ids when the clock steps back.
    last_stamp: Arc<AtomicI64>,
    /// The job later appends may join: the store's submission count right after it was
    /// queued, and what it holds.
    open: Mutex<Option<(u64, Arc<Mutex<Group>>)>>,
    /// Appends asked for so far.
    appended: AtomicU64,
}

/// One append's archive ids and stamps, in the order of its messages.
type Stored = Vec<(i64, i64)>;

/// The appends one writer job stores.
#[derive(Default)]
struct Group {
    /// Each append's messages; taken by the job when the writer runs it.
    msgs: Option<Vec<Vec<NewMessage>>>,
    /// Where each append's ids and stamps go, in the same order.
    answers: Vec<oneshot::Sender<Result<Stored, StorageError>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks but a push; the data stays consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteArchive {
    /// Creates or migrates the archive's tables in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteArchive, StorageError> {
        store.extend(SCHEMA).await?;
        reindex(&store).await?;
        let last: i64 = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COALESCE(MAX(stamp_ms), 0) FROM mam_messages",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await?;
        Ok(SqliteArchive {
            store,
            last_stamp: Arc::new(AtomicI64::new(last)),
            open: Mutex::new(None),
            appended: AtomicU64::new(0),
        })
    }

    /// Number of appends queued so far, counted once queued (several share one writer job; see
    /// [`SqliteStore::submitted_count`] for the jobs).
    #[doc(hidden)]
    pub fn appended_count(&self) -> u64 {
        self.appended.load(Ordering::SeqCst)
    }
}

/// Moves the bodies of an archive written before migration 2 into the owner-scoped index, a
/// batch of rows per transaction, then drops the old index in the last one. A restart in the
/// middle goes on after the highest row indexed so far; the server serves nobody before it is
/// done (ten million rows take minutes, once).
async fn reindex(store: &SqliteStore) -> Result<(), StorageError> {
    let mut after: Option<i64> = None;
    let mut indexed = 0usize;
    loop {
        let from = after;
        let step = store
            .write(move |c| {
                let old = c
                    .query_row(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mam_fts'",
                        [],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !old {
                    return Ok(None);
                }
                let from: i64 = match from {
                    Some(id) => id,
                    None => c.query_row("SELECT COALESCE(MAX(rowid), 0) FROM mam_text", [], |r| {
                        r.get(0)
                    })?,
                };
                let rows = c
                    .prepare("SELECT id, owner, stanza FROM mam_messages WHERE id > ?1 ORDER BY id LIMIT ?2")?
                    .query_map(params![from, REINDEX_BATCH as i64], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let (read, last) = (rows.len(), rows.last().map(|r| r.0));
                let mut bodies = 0;
                for (id, owner, stanza) in rows {
                    // A tombstone has no body, and a row that does not parse has nothing to find.
                    let text = crate::sql::stanza_text(&stanza);
                    if !text.trim().is_empty() {
                        index_text(c, id, &owner, &text)?;
                        bodies += 1;
                    }
                }
                match last {
                    Some(last) if read == REINDEX_BATCH => Ok(Some((last, bodies))),
                    _ => {
                        c.execute_batch("DROP TABLE mam_fts")?;
                        Ok(Some((i64::MAX, bodies)))
                    }
                }
            })
            .await?;
        match step {
            None => return Ok(()),
            Some((last, bodies)) => {
                if after.is_none() {
                    tracing::info!(
                        "indexing archived bodies again with their owners for full-text search"
                    );
                }
                indexed += bodies;
                if last == i64::MAX {
                    tracing::info!(bodies = indexed, "archived bodies indexed again");
                    return Ok(());
                }
                after = Some(last);
            }
        }
    }
}

/// The token that stands for `owner` in the full-text index: 64 bits of FNV-1a over the JID,
/// in hex, one word for the tokenizer. A shared token between two owners costs only speed, as
/// every search also checks the row's owner. Stored in the index: it must never change.
pub fn owner_token(owner: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in owner.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("o{h:016x}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An FTS5 query matching, in `owner`'s bodies, every whitespace-separated term of `text` as
/// a string (so nothing a user types is read as FTS5 syntax); `None` when there is no term.
fn fts_terms(owner: &str, text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .map(|t| format!("body : \"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty())
        .then(|| format!("owner : {} AND {}", owner_token(owner), terms.join(" AND ")))
}

/// Inserts `msg`'s row with `stamp_ms`; returns its archive id. Its text is not indexed.
fn insert_row(c: &Connection, msg: &NewMessage, stamp_ms: i64) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO mam_messages (owner, stamp_ms, with_bare, with_resource, direction, stanza)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        msg.owner,
        stamp_ms,
        msg.with_bare,
        msg.with_resource,
        msg.direction.as_i64(),
        msg.stanza
    ])?;
    Ok(c.last_insert_rowid())
}

/// Puts message `id`'s `text` into the full-text index, under `owner`'s token.
fn index_text(c: &Connection, id: i64, owner: &str, text: &str) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO mam_text (rowid, owner, body) VALUES (?1, ?2, ?3)")?
        .execute(params![id, owner_token(owner), text])?;
    Ok(())
}

/// Archives `msgs`, each with its stamp, on `c`, a connection to a database the archive's
/// [`SCHEMA`] is applied to: rows, then their bodies in the full-text index, as
/// [`ArchiveStore::append_all`] and the writer's batch write them. For a bulk loader
/// (`cargo xtask bench --archive-scale`) that fills a database in large transactions of its
/// own, without the store's writer; the stamps must not decrease along the ids. Indexing after
/// the rows matters for speed: FTS5 writes what it holds as a new segment whenever a statement
/// opens a savepoint, as each insert into the table does.
pub fn load_messages(
    c: &Connection,
    msgs: impl IntoIterator<Item = (NewMessage, i64)>,
) -> rusqlite::Result<()> {
    let mut rows = Inserted::default();
    for (msg, stamp_ms) in msgs {
        rows.insert(c, msg, stamp_ms)?;
    }
    count_bytes(c, rows.bytes)?;
    for (id, owner, text) in rows.texts {
        index_text(c, id, &owner, &text)?;
    }
    Ok(())
}

/// The rows one writer job or one load inserted: their bodies, left to index, and their bytes,
/// left to count.
#[derive(Default)]
struct Inserted {
    texts: Vec<(i64, String, String)>,
    bytes: usize,
}

impl Inserted {
    /// Inserts `msg`'s row with `stamp_ms` ([`insert_row`]), noting its body and its size.
    fn insert(&mut self, c: &Connection, msg: NewMessage, stamp_ms: i64) -> rusqlite::Result<i64> {
        let id = insert_row(c, &msg, stamp_ms)?;
        self.bytes += msg.stanza.len();
        if let Some(text) = msg.text.filter(|t| !t.trim().is_empty()) {
            self.texts.push((id, msg.owner, text));
        }
        Ok(id)
    }
}

/// Adds `bytes` of newly archived stanzas to the archive's size (deletions take theirs off by
/// trigger).
fn count_bytes(c: &Connection, bytes: usize) -> rusqlite::Result<()> {
    if bytes > 0 {
        c.prepare_cached("UPDATE mam_size SET bytes = bytes + ?1")?
            .execute(params![bytes as i64])?;
    }
    Ok(())
}

/// Stores the appends `groups` on the writer's connection `c`, all with one stamp: each
/// append's ids and stamps, in order, and the full-text indexing left to the end of the batch.
fn append_group(
    c: &Connection,
    groups: Vec<Vec<NewMessage>>,
    last: &AtomicI64,
) -> Result<(Vec<Stored>, Option<Deferred>), StorageError> {
    // Runs on the single writer thread, in id order: the stamp follows the ids.
    let stamp = now_ms().max(last.load(Ordering::SeqCst));
    let mut got = Vec::with_capacity(groups.len());
    let mut rows = Inserted::default();
    for msgs in groups {
        let mut ids = Vec::with_capacity(msgs.len());
        for msg in msgs {
            ids.push((rows.insert(c, msg, stamp)?, stamp));
        }
        got.push(ids);
    }
    count_bytes(c, rows.bytes)?;
    let texts = rows.texts;
    last.store(stamp, Ordering::SeqCst);
    // Indexed at the end of the batch, in its transaction: one new FTS5 segment per batch
    // instead of one per job (see `SqliteStore::write_deferring`).
    let index = (!texts.is_empty()).then(|| -> Deferred {
        Box::new(move |c: &Connection| {
            // A later job of the batch may have deleted the row (the owner's account
            // removed): its body is not indexed then.
            let mut kept = c.prepare_cached("SELECT 1 FROM mam_messages WHERE id = ?1")?;
            for (id, owner, text) in texts {
                if kept.exists(params![id])? {
                    index_text(c, id, &owner, &text)?;
                }
            }
            Ok(())
        })
    });
    Ok((got, index))
}

fn values(args: Vec<Arg>) -> Vec<Value> {
    args.into_iter()
        .map(|a| match a {
            Arg::Text(s) => Value::Text(s),
            Arg::Int(i) => Value::Integer(i),
        })
        .collect()
}

fn run_query(c: &Connection, owner: &str, req: &PageRequest) -> Result<Page, ArchiveError> {
    let named = crate::sql::named_ids(req);
    if !named.is_empty() {
        let (sql, args) = crate::sql::count_ids(owner, &named);
        let found: i64 = c
            .query_row(&sql, params_from_iter(values(args)), |r| r.get(0))
            .map_err(StorageError::from)?;
        if usize::try_from(found).ok() != Some(named.len()) {
            return Err(ArchiveError::UnknownId);
        }
    }
    let (sql, args) = crate::sql::page_query(owner, req, |text| {
        let terms = fts_terms(owner, text)?;
        Some((
            "id IN (SELECT rowid FROM mam_text WHERE mam_text MATCH ?)".into(),
            vec![Arg::Text(terms)],
        ))
    });
    let mut stmt = c.prepare_cached(&sql).map_err(StorageError::from)?;
    let rows = stmt
        .query_map(params_from_iter(values(args)), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(StorageError::from)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(StorageError::from)?;
    Ok(crate::sql::page_of(req, rows))
}

#[async_trait]
impl ArchiveStore for SqliteArchive {
    fn append_all(&self, msgs: Vec<NewMessage>) -> Queued<Vec<(i64, i64)>> {
        let (tx, rx) = oneshot::channel();
        let answer = Box::pin(async move {
            rx.await
                .map_err(|_| StorageError::Backend("archive append dropped".into()))?
        });
        let mut open = lock(&self.open);
        if let Some((at, group)) = open.as_ref() {
            if *at == self.store.submitted_count() {
                let mut g = lock(group);
                if let Some(waiting) = g.msgs.as_mut().filter(|w| w.len() < GROUP_MAX) {
                    waiting.push(msgs);
                    g.answers.push(tx);
                    self.appended.fetch_add(1, Ordering::SeqCst);
                    return answer;
                }
            }
        }
        let group = Arc::new(Mutex::new(Group {
            msgs: Some(vec![msgs]),
            answers: vec![tx],
        }));
        let (job, then) = (group.clone(), group.clone());
        let last = self.last_stamp.clone();
        let before = self.store.submitted_count();
        self.store.queue_then(
            move |c| {
                let groups = lock(&job).msgs.take().unwrap_or_default();
                append_group(c, groups, &last)
            },
            move |outcome: Result<Vec<Stored>, StorageError>| {
                let answers = {
                    let mut g = lock(&then);
                    g.msgs = None;
                    std::mem::take(&mut g.answers)
                };
                match outcome {
                    Ok(got) => {
                        for (answer, ids) in answers.into_iter().zip(got) {
                            let _ = answer.send(Ok(ids));
                        }
                    }
                    Err(e) => {
                        let e = match e {
                            StorageError::Backend(e) => e,
                            e => e.to_string(),
                        };
                        for answer in answers {
                            let _ = answer.send(Err(StorageError::Backend(e.clone())));
                        }
                    }
                }
            },
        );
        // Later appends may join only while nothing was queued behind this job.
        let after = self.store.submitted_count();
        *open = (after == before + 1).then_some((after, group));
        self.appended.fetch_add(1, Ordering::SeqCst);
        answer
    }

    async fn query(&self, owner: &str, req: PageRequest) -> Result<Page, ArchiveError> {
        let owner = owner.to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store
            .read(move |c| {
                let _ = tx.send(run_query(c, &owner, &req));
                Ok(())
            })
            .await?;
        rx.await
            .map_err(|_| StorageError::Backend("archive query dropped".into()))?
    }

    async fn bounds(&self, owner: &str) -> Result<Option<((i64, i64), (i64, i64))>, StorageError> {
        let owner = owner.to_owned();
        self.store
            .read(move |c| {
                let one = |order: &str| -> rusqlite::Result<Option<(i64, i64)>> {
                    c.query_row(
                        &format!(
                            "SELECT id, stamp_ms FROM mam_messages WHERE owner = ?1
                             ORDER BY id {order} LIMIT 1"
                        ),
                        params![owner],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                };
                Ok(one("ASC")?.zip(one("DESC")?))
            })
            .await
    }

    async fn prefs(&self, owner: &str) -> Result<Option<Prefs>, StorageError> {
        let owner = owner.to_owned();
        self.store
            .read(move |c| {
                let row = c
                    .query_row(
                        "SELECT default_policy, always, never FROM mam_prefs WHERE owner = ?1",
                        params![owner],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                            ))
                        },
                    )
                    .optional()?;
                Ok(row.map(|(d, always, never)| Prefs {
                    default: DefaultPolicy::parse(&d).unwrap_or(DefaultPolicy::Always),
                    always: split_jids(&always),
                    never: split_jids(&never),
                }))
            })
            .await
    }

    async fn set_prefs(&self, owner: &str, prefs: &Prefs) -> Result<(), StorageError> {
        let owner = owner.to_owned();
        let prefs = prefs.clone();
        self.store
            .write(move |c| {
                c.execute(
                    "INSERT INTO mam_prefs (owner, default_policy, always, never)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (owner) DO UPDATE SET default_policy = excluded.default_policy,
                         always = excluded.always, never = excluded.never",
                    params![
                        owner,
                        prefs.default.as_str(),
                        join_jids(&prefs.always),
                        join_jids(&prefs.never)
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn remove_owner(&self, owner: &str) -> Result<u64, StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                let n = c.execute("DELETE FROM mam_messages WHERE owner = ?1", params![owner])?;
                c.execute("DELETE FROM mam_prefs WHERE owner = ?1", params![owner])?;
                Ok(n as u64)
            })
            .await
    }

    async fn purge_older(&self, before_ms: i64, limit: usize) -> Result<usize, StorageError> {
        self.store
            .write(move |c| {
                Ok(c.execute(
                    "DELETE FROM mam_messages WHERE id IN (
                         SELECT id FROM mam_messages WHERE stamp_ms < ?1
                         ORDER BY stamp_ms LIMIT ?2)",
                    params![before_ms, limit as i64],
                )?)
            })
            .await
    }

    async fn purge_owner(
        &self,
        owner: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                Ok(c.execute(
                    "DELETE FROM mam_messages WHERE id IN (
                         SELECT id FROM mam_messages WHERE owner = ?1 AND stamp_ms < ?2
                         ORDER BY id LIMIT ?3)",
                    params![owner, before_ms, limit as i64],
                )?)
            })
            .await
    }

    async fn find_latest(
        &self,
        owner: &str,
        with_bare: &str,
        direction: Direction,
        needle: &str,
        names: Matcher,
    ) -> Result<Option<(i64, String)>, StorageError> {
        let (owner, with_bare, needle) =
            (owner.to_owned(), with_bare.to_owned(), needle.to_owned());
        self.store
            .read(move |c| {
                // Newest first along the conversation's index; `instr` spares parsing the rows
                // that cannot match.
                let mut stmt = c.prepare(
                    "SELECT id, stanza FROM mam_messages
                     WHERE owner = ?1 AND with_bare = ?2 AND direction = ?3
                       AND instr(stanza, ?4) > 0
                     ORDER BY id DESC",
                )?;
                let mut rows = stmt.query(params![owner, with_bare, direction.as_i64(), needle])?;
                while let Some(r) = rows.next()? {
                    let stanza: String = r.get(1)?;
                    if names(&stanza) {
                        return Ok(Some((r.get(0)?, stanza)));
                    }
                }
                Ok(None)
            })
            .await
    }

    async fn replace_stanza(
        &self,
        owner: &str,
        id: i64,
        stanza: String,
    ) -> Result<bool, StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                let old: Option<i64> = c
                    .query_row(
                        "SELECT octet_length(stanza) FROM mam_messages WHERE id = ?1 AND owner = ?2",
                        params![id, owner],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(old) = old else { return Ok(false) };
                c.execute(
                    "UPDATE mam_messages SET stanza = ?1 WHERE id = ?2",
                    params![stanza, id],
                )?;
                // Appends count their bytes and the trigger deletions': a new stanza, here.
                c.execute(
                    "UPDATE mam_size SET bytes = bytes - ?1 + octet_length(?2)",
                    params![old, stanza],
                )?;
                c.execute("DELETE FROM mam_text WHERE rowid = ?1", params![id])?;
                Ok(true)
            })
            .await
    }

    async fn trim_to_bytes(&self, max_bytes: u64, limit: usize) -> Result<usize, StorageError> {
        self.store
            .write(move |c| {
                let bytes: i64 = c.query_row("SELECT bytes FROM mam_size", [], |r| r.get(0))?;
                let excess = u64::try_from(bytes).unwrap_or(0).saturating_sub(max_bytes);
                if excess == 0 {
                    return Ok(0);
                }
                // The oldest messages, just enough of them to free `excess` bytes.
                let mut stmt = c.prepare(
                    "SELECT id, octet_length(stanza) FROM mam_messages ORDER BY id LIMIT ?1",
                )?;
                let sizes = stmt
                    .query_map(params![limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
                let Some(upto) = crate::sql::oldest_to_free(sizes, excess) else {
                    return Ok(0);
                };
                Ok(c.execute("DELETE FROM mam_messages WHERE id <= ?1", params![upto])?)
            })
            .await
    }

    async fn total_bytes(&self) -> Result<u64, StorageError> {
        self.store
            .read(|c| {
                let b: i64 = c.query_row("SELECT bytes FROM mam_size", [], |r| r.get(0))?;
                Ok(u64::try_from(b).unwrap_or(0))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Filter, Paging};

    async fn archive() -> (Arc<SqliteStore>, SqliteArchive) {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let a = SqliteArchive::open(store.clone()).await.unwrap();
        (store, a)
    }

    fn msg(owner: &str, with: &str, body: &str) -> NewMessage {
        let (bare, res) = with.split_once('/').unwrap_or((with, ""));
        NewMessage {
            owner: owner.into(),
            with_bare: bare.into(),
            with_resource: res.into(),
            direction: Direction::Incoming,
            stanza: format!(
                "<message xmlns='jabber:client' from='{with}' to='{owner}' type='chat'>\
                 <body>{body}</body></message>"
            ),
            text: Some(body.into()),
        }
    }

    fn ids(p: &Page) -> Vec<i64> {
        p.items.iter().map(|i| i.id).collect()
    }

    #[tokio::test]
    async fn an_archive_from_before_the_owner_scoped_index_is_indexed_again() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let first = Schema {
            name: SCHEMA.name,
            migrations: &SCHEMA.migrations[..1],
        };
        store.extend(first).await.unwrap();
        // More rows than one batch of the reindex, written as the first schema's appends did.
        let rows = REINDEX_BATCH + 3;
        let rowids = store
            .write(move |c| {
                let mut rowids = Vec::new();
                for i in 0..rows {
                    let (owner, body) = match i {
                        7 => ("c@x", "needle from c"),
                        _ if i % 1000 == 1 => ("b@x", "needle in b"),
                        _ => ("b@x", "hay"),
                    };
                    let mut m = msg(owner, "a@x", body);
                    if i == 2001 {
                        // A retracted message: its tombstone has no body to find.
                        m.stanza = "<message xmlns='jabber:client' from='a@x' to='b@x'>\
                                    <retracted xmlns='urn:xmpp:message-retract:1' by='a@x'/>\
                                    </message>"
                            .into();
                    }
                    let id = insert_row(c, &m, 1)?;
                    c.execute(
                        "INSERT INTO mam_fts (rowid, body) VALUES (?1, ?2)",
                        params![id, body],
                    )?;
                    rowids.push(id);
                }
                Ok(rowids)
            })
            .await
            .unwrap();
        let a = SqliteArchive::open(store.clone()).await.unwrap();
        let find = |owner: &'static str| {
            let a = &a;
            async move {
                let req = PageRequest {
                    filter: Filter {
                        fulltext: Some("needle".into()),
                        ..Default::default()
                    },
                    paging: Paging::Forward { after: None },
                    max: 100,
                };
                ids(&a.query(owner, req).await.unwrap())
            }
        };
        let expect_b: Vec<i64> = (0..rows)
            .filter(|i| i % 1000 == 1 && *i != 2001)
            .map(|i| rowids[i])
            .collect();
        assert_eq!(
            find("b@x").await,
            expect_b,
            "b's bodies, past the first batch too"
        );
        assert_eq!(find("c@x").await, [rowids[7]], "scoped to the owner");
        let (old, indexed): (i64, i64) = store
            .read(|c| {
                Ok((
                    c.query_row(
                        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'mam_fts'",
                        [],
                        |r| r.get(0),
                    )?,
                    c.query_row("SELECT COUNT(*) FROM mam_text", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(
            (old, indexed),
            (0, rows as i64 - 1),
            "the old index is gone"
        );
        // Deleting a row takes its entry along (the new trigger).
        let gone = rowids[1];
        store
            .write(move |c| {
                c.execute("DELETE FROM mam_messages WHERE id = ?1", params![gone])?;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(find("b@x").await, expect_b[1..]);
    }

    /// Polls `f` once: enough for a write to be queued to the writer thread.
    async fn queue<F: std::future::Future + Unpin>(f: &mut F) {
        std::future::poll_fn(|cx| {
            let _ = std::pin::Pin::new(&mut *f).poll(cx);
            std::task::Poll::Ready(())
        })
        .await
    }

    /// Holds the store's writer until the returned sender sends, so that what is queued
    /// meanwhile waits behind it; returns once the writer holds.
    async fn hold_writer(
        store: &Arc<SqliteStore>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), StorageError>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered, in_writer) = tokio::sync::oneshot::channel();
        let writer = store.clone();
        let hold = tokio::spawn(async move {
            writer
                .write(move |_| {
                    let _ = entered.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
        });
        in_writer.await.unwrap();
        (release, hold)
    }

    #[tokio::test]
    async fn appends_waiting_for_the_writer_share_a_job_and_keep_order_with_other_writes() {
        let (store, a) = archive().await;
        let (release, hold) = hold_writer(&store).await;
        let jobs = store.submitted_count();
        let first: Vec<_> = (0..5)
            .map(|i| a.append_all(vec![msg("a@x", "b@x", &format!("first {i}"))]))
            .collect();
        assert_eq!(store.submitted_count() - jobs, 1, "five appends, one job");
        // A write queued after them: what is appended later must be stored after it.
        let mut removal = Box::pin(a.remove_owner("a@x"));
        queue(&mut removal).await;
        let later = a.append_all(vec![msg("a@x", "b@x", "later")]);
        assert_eq!(
            store.submitted_count() - jobs,
            3,
            "the removal ended the group"
        );
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        let mut got = Vec::new();
        for f in first {
            got.push(f.await.unwrap()[0].0);
        }
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        assert_eq!(removal.await.unwrap(), 5, "the removal found the five");
        let later = later.await.unwrap()[0].0;
        let req = PageRequest {
            filter: Filter::default(),
            paging: Paging::Forward { after: None },
            max: 10,
        };
        assert_eq!(ids(&a.query("a@x", req).await.unwrap()), [later]);
        let bytes: i64 = store
            .read(|c| Ok(c.query_row("SELECT bytes FROM mam_size", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(
            bytes as usize,
            msg("a@x", "b@x", "later").stanza.len(),
            "the size counts what is left"
        );
    }

    #[tokio::test]
    async fn one_batch_indexes_its_appends_once_and_not_what_it_deleted() {
        let (store, a) = archive().await;
        // Hold the writer so that what follows is queued behind it and forms one batch.
        let (release, hold) = hold_writer(&store).await;
        let commits = store.commit_count();
        let mut both = Box::pin(a.append_all(vec![
            msg("a@x", "b@x", "shared words"),
            msg("b@x", "a@x", "shared words"),
        ]));
        queue(&mut both).await;
        let mut gone = Box::pin(a.append(msg("c@x", "a@x", "shared but removed")));
        queue(&mut gone).await;
        let mut removal = Box::pin(a.remove_owner("c@x"));
        queue(&mut removal).await;
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        let both = both.await.unwrap();
        gone.await.unwrap();
        assert_eq!(removal.await.unwrap(), 1);
        assert_eq!(
            store.commit_count() - commits,
            2,
            "the held batch, then one"
        );
        assert!(both[0].0 < both[1].0 && both[0].1 == both[1].1, "{both:?}");
        for (owner, id) in [("a@x", both[0].0), ("b@x", both[1].0)] {
            let req = PageRequest {
                filter: Filter {
                    fulltext: Some("words".into()),
                    ..Default::default()
                },
                paging: Paging::Forward { after: None },
                max: 5,
            };
            assert_eq!(ids(&a.query(owner, req).await.unwrap()), [id]);
        }
        let indexed: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM mam_text", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(indexed, 2, "the removed row's body is not indexed");
    }
}
