//! [`MysqlArchive`]: the archive's tables in the deployment's MariaDB database, beside the
//! core's ([`MysqlStore::extend`]). Its structure is [`crate::PgArchive`]'s.
//!
//! The tables and columns are the SQLite archive's, by name (`mam_messages`, `mam_prefs`,
//! `mam_size`), so `xmppd migrate` copies them as they are. JIDs and stanzas are `utf8mb4` with
//! the binary collation, as the core's tables: they match exactly. The full-text index is an
//! InnoDB `FULLTEXT` index on a column of its own, `body`, the body's text with a collation
//! that folds case and accents (`utf8mb4_unicode_ci`): InnoDB matches words with the column's
//! collation. The index is created without a stopword list (`innodb_ft_enable_stopword` off in
//! the migrating session), so "the" or "who" are found like any word. Words shorter than the
//! server's `innodb_ft_min_token_size` (3 by default; MariaDB reads it at start-up only) are not
//! in the index: such a word of a query is matched as a part of the body instead (`LIKE`), so
//! it is found, and also inside longer words. A NULL `body` marks a row copied without its
//! text: the store indexes such rows when it opens.
//!
//! Writes go through the archive's write queue ([`crate::writer`]), appends batched into one
//! transaction; each writing transaction first locks the `mam_size` row, as on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Transaction, TxOpts, Value};
use xmppd_storage::{MysqlStore, Queued, Schema, StorageError};

use crate::sql::{self, Arg, BACKFILL_BATCH, FIND_CHUNK};
use crate::store::{
    join_jids, split_jids, ArchiveError, ArchiveStore, DefaultPolicy, Direction, Matcher,
    NewMessage, Page, PageRequest, Prefs,
};
use crate::writer::{Appended, Failed, Sink, Writer};

/// Migrations of the archive's tables on MariaDB (see [`Schema`]): append, never edit. Bare
/// JIDs up to 511 characters (a 255-character user name and domain, as the core's), other
/// JIDs and resources up to 1023; the `with` index holds the first 250 characters of the
/// other party's JID, so that it fits InnoDB's 3072 bytes.
pub const SCHEMA: Schema = Schema {
    name: "mam",
    migrations: &[r"
SET SESSION innodb_ft_enable_stopword = OFF;
CREATE TABLE mam_messages (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    owner VARCHAR(511) NOT NULL,
    stamp_ms BIGINT NOT NULL,
    with_bare VARCHAR(1023) NOT NULL,
    with_resource VARCHAR(1023) NOT NULL,
    direction BIGINT NOT NULL,
    stanza MEDIUMTEXT NOT NULL,
    body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
    KEY mam_messages_owner (owner, id),
    KEY mam_messages_with (owner, with_bare(250), id),
    KEY mam_messages_stamp (stamp_ms),
    KEY mam_messages_unindexed (body(1)),
    FULLTEXT KEY mam_messages_text (body)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE mam_size (
    `only` BIGINT NOT NULL PRIMARY KEY CHECK (`only` = 0),
    bytes BIGINT NOT NULL
) ENGINE=InnoDB;
INSERT INTO mam_size (`only`, bytes) VALUES (0, 0);
CREATE TABLE mam_prefs (
    owner VARCHAR(511) NOT NULL PRIMARY KEY,
    default_policy VARCHAR(16) NOT NULL,
    always MEDIUMTEXT NOT NULL,
    never MEDIUMTEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
"],
};

/// Rows per multi-row `INSERT` of a batch (the rest go one by one): a handful of statement
/// shapes for the connection's cache of prepared statements.
const INSERT_CHUNK: usize = 16;

/// The archive over a [`MysqlStore`].
pub struct MysqlArchive {
    store: Arc<MysqlStore>,
    writer: Writer,
    /// The server's `innodb_ft_min_token_size`: shorter words are not in the index.
    min_token: usize,
}

struct MysqlSink(Arc<MysqlStore>);

type TxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StorageError>> + Send + 'a>>;

fn err(e: mysql_async::Error) -> StorageError {
    StorageError::Backend(match e {
        mysql_async::Error::Server(s) => format!("database: {} ({})", s.message, s.code),
        other => format!("database: {other}"),
    })
}

fn params(args: Vec<Arg>) -> Params {
    Params::Positional(
        args.into_iter()
            .map(|a| match a {
                Arg::Text(s) => Value::Bytes(s.into_bytes()),
                Arg::Int(i) => Value::Int(i),
            })
            .collect(),
    )
}

const ADD_BYTES: &str = "UPDATE mam_size SET bytes = bytes + ? WHERE `only` = 0";

async fn add_bytes(tx: &mut Transaction<'_>, delta: i64) -> Result<(), StorageError> {
    tx.exec_drop(ADD_BYTES, (delta,)).await.map_err(err)
}

/// A failed statement of an append; refused when the server answered it with an error.
fn failed(e: mysql_async::Error) -> Failed {
    Failed {
        refused: matches!(e, mysql_async::Error::Server(_)),
        error: err(e),
    }
}

/// Deletes the messages `rows` names (`(id, bytes)`) and takes their bytes off the count; how
/// many went. The caller holds the count's lock.
async fn delete_rows(tx: &mut Transaction<'_>, rows: &[(i64, i64)]) -> Result<usize, StorageError> {
    let mut n = 0;
    for chunk in rows.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let ids: Vec<Value> = chunk.iter().map(|(id, _)| Value::Int(*id)).collect();
        let result = tx
            .exec_iter(
                format!("DELETE FROM mam_messages WHERE id IN ({marks})"),
                Params::Positional(ids),
            )
            .await
            .map_err(err)?;
        n += result.affected_rows() as usize;
        result.drop_result().await.map_err(err)?;
    }
    add_bytes(tx, -rows.iter().map(|(_, b)| b).sum::<i64>()).await?;
    Ok(n)
}

async fn insert(
    tx: &mut Transaction<'_>,
    msgs: &[NewMessage],
    stamp_ms: i64,
) -> Result<Vec<i64>, mysql_async::Error> {
    let row = "(?, ?, ?, ?, ?, ?, ?)";
    let sql = format!(
        "INSERT INTO mam_messages
             (owner, stamp_ms, with_bare, with_resource, direction, stanza, body)
         VALUES {} RETURNING id",
        vec![row; msgs.len()].join(", ")
    );
    let mut values = Vec::with_capacity(msgs.len() * 7);
    for m in msgs {
        values.extend([
            Value::from(&m.owner),
            Value::Int(stamp_ms),
            Value::from(&m.with_bare),
            Value::from(&m.with_resource),
            Value::Int(m.direction.as_i64()),
            Value::from(&m.stanza),
            Value::from(sql::index_text(m)),
        ]);
    }
    tx.exec(sql, Params::Positional(values)).await
}

impl Sink for MysqlSink {
    fn append(&self, msgs: Arc<Vec<NewMessage>>, stamp_ms: i64) -> Appended {
        let store = self.0.clone();
        Box::pin(async move {
            let mut conn = store.conn().await.map_err(Failed::unavailable)?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(failed)?;
            // First: the count's lock orders the appends of every process.
            let bytes: i64 = msgs.iter().map(|m| m.stanza.len() as i64).sum();
            tx.exec_drop(ADD_BYTES, (bytes,)).await.map_err(failed)?;
            let mut ids = Vec::with_capacity(msgs.len());
            let whole = msgs.len() / INSERT_CHUNK * INSERT_CHUNK;
            for chunk in msgs[..whole].chunks(INSERT_CHUNK) {
                ids.extend(insert(&mut tx, chunk, stamp_ms).await.map_err(failed)?);
            }
            for one in msgs[whole..].chunks(1) {
                ids.extend(insert(&mut tx, one, stamp_ms).await.map_err(failed)?);
            }
            tx.commit().await.map_err(failed)?;
            ids.sort_unstable();
            Ok(ids)
        })
    }
}

impl MysqlArchive {
    /// Creates or migrates the archive's tables in `store`'s database, indexes the text of
    /// rows copied without it, and starts the write queue (on the current runtime).
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlArchive, StorageError> {
        store.extend(SCHEMA).await?;
        backfill(&store).await?;
        let mut conn = store.conn().await?;
        let last: Option<i64> = conn
            .query_first("SELECT CAST(COALESCE(MAX(stamp_ms), 0) AS SIGNED) FROM mam_messages")
            .await
            .map_err(err)?;
        let min_token: Option<i64> = conn
            .query_first("SELECT @@innodb_ft_min_token_size")
            .await
            .map_err(err)?;
        drop(conn);
        let writer = Writer::start(Arc::new(MysqlSink(store.clone())), last.unwrap_or(0));
        Ok(MysqlArchive {
            store,
            writer,
            min_token: min_token.and_then(|n| usize::try_from(n).ok()).unwrap_or(3),
        })
    }

    /// Queues a write that runs in one transaction holding the byte count's lock.
    fn locked<T, F>(&self, f: F) -> Queued<T>
    where
        T: Send + 'static,
        F: for<'a, 'c> FnOnce(&'a mut Transaction<'c>) -> TxFuture<'a, T> + Send + 'static,
    {
        let store = self.store.clone();
        self.writer.write(move || {
            Box::pin(async move {
                let mut conn = store.conn().await?;
                let mut tx = conn
                    .start_transaction(TxOpts::default())
                    .await
                    .map_err(err)?;
                tx.exec_drop("SELECT bytes FROM mam_size WHERE `only` = 0 FOR UPDATE", ())
                    .await
                    .map_err(err)?;
                let out = f(&mut tx).await?;
                tx.commit().await.map_err(err)?;
                Ok(out)
            })
        })
    }

    /// The condition of the `fulltext` field: every word (a run of letters and digits) of it
    /// in the body; words of the index's length through `MATCH`, shorter ones by `LIKE`.
    fn fulltext(&self, text: &str) -> Option<(String, Vec<Arg>)> {
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            // Nothing a word could match: as on the other engines, nothing is found.
            return Some(("FALSE".into(), Vec::new()));
        }
        let (long, short): (Vec<&str>, Vec<&str>) = words
            .into_iter()
            .partition(|w| w.chars().count() >= self.min_token);
        let mut clauses = Vec::new();
        let mut args = Vec::new();
        if !long.is_empty() {
            let required: Vec<String> = long.iter().map(|w| format!("+{w}")).collect();
            clauses.push("MATCH (body) AGAINST (? IN BOOLEAN MODE)".to_owned());
            args.push(Arg::Text(required.join(" ")));
        }
        for w in short {
            clauses.push("body LIKE ?".to_owned());
            args.push(Arg::Text(format!("%{w}%")));
        }
        Some((clauses.join(" AND "), args))
    }
}

/// Indexes the text of the rows that have none (copied from another engine), a batch per
/// transaction, before the server serves anyone.
async fn backfill(store: &MysqlStore) -> Result<(), StorageError> {
    let mut done = 0usize;
    loop {
        let mut conn = store.conn().await?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(err)?;
        let rows: Vec<(i64, String)> = tx
            .exec(
                "SELECT id, stanza FROM mam_messages WHERE body IS NULL
                 ORDER BY id LIMIT ? FOR UPDATE",
                (BACKFILL_BATCH,),
            )
            .await
            .map_err(err)?;
        if rows.is_empty() {
            if done > 0 {
                tracing::info!(rows = done, "archived bodies indexed for full-text search");
            }
            return Ok(());
        }
        if done == 0 {
            tracing::info!("indexing archived bodies for full-text search");
        }
        done += rows.len();
        let updates = rows
            .iter()
            .map(|(id, stanza)| (sql::stanza_text(stanza), *id));
        tx.exec_batch("UPDATE mam_messages SET body = ? WHERE id = ?", updates)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
}

#[async_trait]
impl ArchiveStore for MysqlArchive {
    fn append_all(&self, msgs: Vec<NewMessage>) -> Queued<Vec<(i64, i64)>> {
        self.writer.append(msgs)
    }

    async fn query(&self, owner: &str, req: PageRequest) -> Result<Page, ArchiveError> {
        let mut conn = self.store.conn().await?;
        let named = sql::named_ids(&req);
        if !named.is_empty() {
            let (sql, args) = sql::count_ids(owner, &named);
            let found: Option<i64> = conn.exec_first(sql, params(args)).await.map_err(err)?;
            if found.and_then(|n| usize::try_from(n).ok()) != Some(named.len()) {
                return Err(ArchiveError::UnknownId);
            }
        }
        let (sql, args) = sql::page_query(owner, &req, |t| self.fulltext(t));
        let rows: Vec<(i64, i64, i64, String)> = conn.exec(sql, params(args)).await.map_err(err)?;
        Ok(sql::page_of(&req, rows))
    }

    async fn bounds(&self, owner: &str) -> Result<Option<((i64, i64), (i64, i64))>, StorageError> {
        let ends: Vec<(i64, i64)> = self
            .store
            .conn()
            .await?
            .exec(sql::BOUNDS, (owner, owner, owner))
            .await
            .map_err(err)?;
        Ok(ends.first().copied().zip(ends.last().copied()))
    }

    async fn prefs(&self, owner: &str) -> Result<Option<Prefs>, StorageError> {
        let row: Option<(String, String, String)> = self
            .store
            .conn()
            .await?
            .exec_first(
                "SELECT default_policy, always, never FROM mam_prefs WHERE owner = ?",
                (owner,),
            )
            .await
            .map_err(err)?;
        Ok(row.map(|(d, always, never)| Prefs {
            default: DefaultPolicy::parse(&d).unwrap_or(DefaultPolicy::Always),
            always: split_jids(&always),
            never: split_jids(&never),
        }))
    }

    async fn set_prefs(&self, owner: &str, prefs: &Prefs) -> Result<(), StorageError> {
        let owner = owner.to_owned();
        let (default, always, never) = (
            prefs.default.as_str(),
            join_jids(&prefs.always),
            join_jids(&prefs.never),
        );
        let store = self.store.clone();
        self.writer
            .write(move || {
                Box::pin(async move {
                    store
                        .conn()
                        .await?
                        .exec_drop(
                            "INSERT INTO mam_prefs (owner, default_policy, always, never)
                             VALUES (?, ?, ?, ?)
                             ON DUPLICATE KEY UPDATE default_policy = VALUES(default_policy),
                                 always = VALUES(always), never = VALUES(never)",
                            (owner, default, always, never),
                        )
                        .await
                        .map_err(err)
                })
            })
            .await
    }

    async fn remove_owner(&self, owner: &str) -> Result<u64, StorageError> {
        let owner = owner.to_owned();
        self.locked(move |tx| {
            Box::pin(async move {
                // Nobody else writes while the count's lock is held.
                let (n, bytes): (i64, i64) = tx
                    .exec_first(
                        "SELECT COUNT(*), CAST(COALESCE(SUM(OCTET_LENGTH(stanza)), 0) AS SIGNED)
                         FROM mam_messages WHERE owner = ?",
                        (&owner,),
                    )
                    .await
                    .map_err(err)?
                    .unwrap_or((0, 0));
                tx.exec_drop("DELETE FROM mam_messages WHERE owner = ?", (&owner,))
                    .await
                    .map_err(err)?;
                tx.exec_drop("DELETE FROM mam_prefs WHERE owner = ?", (&owner,))
                    .await
                    .map_err(err)?;
                add_bytes(tx, -bytes).await?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
        })
        .await
    }

    async fn purge_older(&self, before_ms: i64, limit: usize) -> Result<usize, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.locked(move |tx| {
            Box::pin(async move {
                let rows: Vec<(i64, i64)> = tx
                    .exec(
                        "SELECT id, OCTET_LENGTH(stanza) FROM mam_messages WHERE stamp_ms < ?
                         ORDER BY stamp_ms LIMIT ?",
                        (before_ms, limit),
                    )
                    .await
                    .map_err(err)?;
                delete_rows(tx, &rows).await
            })
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.locked(move |tx| {
            Box::pin(async move {
                let rows: Vec<(i64, i64)> = tx
                    .exec(
                        "SELECT id, OCTET_LENGTH(stanza) FROM mam_messages
                         WHERE owner = ? AND stamp_ms < ? ORDER BY id LIMIT ?",
                        (&owner, before_ms, limit),
                    )
                    .await
                    .map_err(err)?;
                delete_rows(tx, &rows).await
            })
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
        let mut conn = self.store.conn().await?;
        let mut before = i64::MAX;
        loop {
            let rows: Vec<(i64, String)> = conn
                .exec(
                    sql::FIND_LATEST,
                    (
                        owner,
                        with_bare,
                        direction.as_i64(),
                        needle,
                        before,
                        FIND_CHUNK,
                    ),
                )
                .await
                .map_err(err)?;
            let full = rows.len() as i64 == FIND_CHUNK;
            if let Some(last) = rows.last() {
                before = last.0;
            }
            if let Some(found) = rows.into_iter().find(|(_, stanza)| names(stanza)) {
                return Ok(Some(found));
            }
            if !full {
                return Ok(None);
            }
        }
    }

    async fn replace_stanza(
        &self,
        owner: &str,
        id: i64,
        stanza: String,
    ) -> Result<bool, StorageError> {
        let owner = owner.to_owned();
        self.locked(move |tx| {
            Box::pin(async move {
                let old: Option<i64> = tx
                    .exec_first(
                        "SELECT OCTET_LENGTH(stanza) FROM mam_messages WHERE id = ? AND owner = ?",
                        (id, &owner),
                    )
                    .await
                    .map_err(err)?;
                let Some(old) = old else { return Ok(false) };
                // A tombstone has no body to find.
                tx.exec_drop(
                    "UPDATE mam_messages SET stanza = ?, body = '' WHERE id = ?",
                    (&stanza, id),
                )
                .await
                .map_err(err)?;
                add_bytes(tx, stanza.len() as i64 - old).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn trim_to_bytes(&self, max_bytes: u64, limit: usize) -> Result<usize, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.locked(move |tx| {
            Box::pin(async move {
                let bytes: Option<i64> = tx
                    .exec_first("SELECT bytes FROM mam_size WHERE `only` = 0", ())
                    .await
                    .map_err(err)?;
                let excess = u64::try_from(bytes.unwrap_or(0))
                    .unwrap_or(0)
                    .saturating_sub(max_bytes);
                if excess == 0 {
                    return Ok(0);
                }
                let rows: Vec<(i64, i64)> = tx
                    .exec(
                        "SELECT id, OCTET_LENGTH(stanza) FROM mam_messages ORDER BY id LIMIT ?",
                        (limit,),
                    )
                    .await
                    .map_err(err)?;
                let Some(upto) = sql::oldest_to_free(rows.iter().copied(), excess) else {
                    return Ok(0);
                };
                let gone: Vec<(i64, i64)> = rows.into_iter().filter(|r| r.0 <= upto).collect();
                delete_rows(tx, &gone).await
            })
        })
        .await
    }

    async fn total_bytes(&self) -> Result<u64, StorageError> {
        let bytes: Option<i64> = self
            .store
            .conn()
            .await?
            .query_first("SELECT bytes FROM mam_size WHERE `only` = 0")
            .await
            .map_err(err)?;
        Ok(u64::try_from(bytes.unwrap_or(0)).unwrap_or(0))
    }
}
