//! What the service remembers of each slot: [`UploadStore`], and [`SqliteUploads`], its table
//! in the server's SQLite database (schema `upload`, through [`SqliteStore::extend`]), and the
//! secret that signs PUT URLs when the configuration gives none. With the cargo features
//! `postgres` and `mysql`, the same tables on PostgreSQL ([`PgUploads`]) and MariaDB
//! ([`MysqlUploads`]), beside the core's; the contract is the conformance suite in
//! `tests/store.rs`, run on all three.
//!
//! A slot goes from issued to uploading (one PUT at a time holds it) to stored; an upload
//! that fails goes back to issued, so the client may try again while the URL is valid. Quota
//! and disk cap count every slot, issued or stored, so promised space is never given twice.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

use std::sync::Arc;

use async_trait::async_trait;
use rand::RngCore;
use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension};
use xmppd_storage::{Schema, SqliteStore, StorageError};

#[cfg(feature = "mysql")]
pub use mysql::{MysqlUploads, MYSQL_SCHEMA};
#[cfg(feature = "postgres")]
pub use postgres::{PgUploads, PG_SCHEMA};

/// Migrations of the upload tables: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "upload",
    migrations: &[
        r"
CREATE TABLE upload_slots (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT,
    state INTEGER NOT NULL,
    stamp_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX upload_slots_owner ON upload_slots (owner);
CREATE INDEX upload_slots_stamp ON upload_slots (state, stamp_ms);
CREATE TABLE upload_secret (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    secret TEXT NOT NULL
);
",
        r"
ALTER TABLE upload_slots ADD COLUMN holder TEXT;
",
    ],
};

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Handed out; no file yet.
    Issued = 0,
    /// A PUT is writing it.
    Uploading = 1,
    /// The file is stored and served.
    Stored = 2,
}

impl State {
    fn from_i64(v: i64) -> State {
        match v {
            0 => State::Issued,
            1 => State::Uploading,
            _ => State::Stored,
        }
    }
}

/// One slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub id: String,
    /// The account's bare JID.
    pub owner: String,
    /// The client's file name, as it asked.
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub state: State,
    /// When it was issued, then when its upload ended (Unix milliseconds).
    pub stamp_ms: i64,
    /// The PUT URL's expiry (Unix milliseconds).
    pub expires_ms: i64,
}

/// Why a slot is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The account's quota: what it already holds.
    Quota { used: u64, quota: u64 },
    /// The server's cap on all files.
    Full,
}

/// What one account holds, as [`UploadStore::usage`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The account's bare JID.
    pub owner: String,
    /// Counted as the quota counts it: every slot, issued or stored.
    pub bytes: u64,
    /// Slots, issued or stored.
    pub files: u64,
}

/// The slots and the secret, on one engine. Every write is committed before it returns; the
/// checks that go with a write (the quota, a slot's state) are made in its transaction.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// The stored secret; `fresh` is stored and returned the first time.
    async fn stored_secret(&self, fresh: String) -> Result<String, StorageError>;

    /// Records `slot` unless the owner's files and slots would then exceed `quota` or all of
    /// them `cap`; checked and written in one transaction.
    async fn reserve(
        &self,
        slot: Slot,
        quota: Option<u64>,
        cap: Option<u64>,
    ) -> Result<Result<(), Refusal>, StorageError>;

    /// The `limit` accounts holding the most bytes, most first (ties by address, in code
    /// point order), counted as [`UploadStore::reserve`] counts them against the quota; and
    /// the total of all.
    async fn usage(&self, limit: usize) -> Result<(Vec<Usage>, u64), StorageError>;

    async fn get(&self, id: &str) -> Result<Option<Slot>, StorageError>;

    /// Moves the slot from `from` to `to`; false when it was not in `from` (another PUT holds
    /// it, it was used, or it is gone). `stamp_ms` and a content type are recorded with it
    /// (the content type only where the slot named none).
    async fn transition(
        &self,
        id: &str,
        from: State,
        to: State,
        stamp_ms: Option<i64>,
        content_type: Option<String>,
    ) -> Result<bool, StorageError>;

    /// Removes, in one transaction, at most `limit` slots that are over: files stored before
    /// `stored_before_ms` (when given) and issued slots whose URL expired before `now_ms`.
    /// Returns them; the caller deletes the files of the stored ones.
    async fn take_expired(
        &self,
        now_ms: i64,
        stored_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Slot>, StorageError>;

    /// Removes every slot of `owner` but those being uploaded (which fail to finish then) and
    /// returns them.
    async fn take_owner(&self, owner: &str) -> Result<Vec<Slot>, StorageError>;

    /// The stored secret, made and stored the first time.
    async fn secret(&self) -> Result<Vec<u8>, StorageError> {
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        let stored = self.stored_secret(hex::encode(fresh)).await?;
        Ok(hex::decode(&stored).unwrap_or_else(|_| stored.into_bytes()))
    }

    /// Takes an issued slot for one PUT by the process `holder` (its node name); false when
    /// it is not issued.
    async fn claim(&self, id: &str, holder: &str) -> Result<bool, StorageError>;

    /// Gives back the slots `holder` was uploading (and those claimed before claims named
    /// their holder): what a stop of that process interrupted, issued again so the client may
    /// retry. Other processes' uploads in progress are left alone. Returns how many.
    async fn release_held(&self, holder: &str) -> Result<u64, StorageError>;

    /// Gives a slot back after a failed PUT.
    async fn release(&self, id: &str) -> Result<bool, StorageError> {
        (self.transition(id, State::Uploading, State::Issued, None, None)).await
    }

    /// Marks the upload done at `now_ms`; `content_type` is kept when the slot named none.
    async fn finish(
        &self,
        id: &str,
        now_ms: i64,
        content_type: Option<String>,
    ) -> Result<bool, StorageError> {
        let stamp = Some(now_ms);
        (self.transition(id, State::Uploading, State::Stored, stamp, content_type)).await
    }
}

/// A slot's size as the tables keep it (a signed 64-bit integer on every engine).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn size_column(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// The upload tables over a [`SqliteStore`].
pub struct SqliteUploads {
    store: Arc<SqliteStore>,
}

/// A row's columns, in [`COLUMNS`]' order, as a slot (each engine reads the same columns).
type Columns = (String, String, String, i64, Option<String>, i64, i64, i64);

impl Slot {
    pub(crate) fn from_columns(c: Columns) -> Slot {
        let (id, owner, name, size, content_type, state, stamp_ms, expires_ms) = c;
        Slot {
            id,
            owner,
            name,
            size: u64::try_from(size).unwrap_or(0),
            content_type,
            state: State::from_i64(state),
            stamp_ms,
            expires_ms,
        }
    }
}

fn slot_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Slot> {
    let c = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
    Ok(Slot::from_columns((
        c.0,
        c.1,
        c.2,
        c.3,
        c.4,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    )))
}

const COLUMNS: &str = "id, owner, name, size, content_type, state, stamp_ms, expires_ms";

impl SqliteUploads {
    /// Creates or migrates the tables. Uploads a stop interrupted are given back by
    /// [`UploadStore::release_held`].
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteUploads, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqliteUploads { store })
    }

    async fn take(&self, filter: &'static str, p: [Value; 3]) -> Result<Vec<Slot>, StorageError> {
        self.store
            .write(move |c| {
                let sql = format!(
                    "DELETE FROM upload_slots WHERE rowid IN (SELECT rowid FROM upload_slots \
                     WHERE {filter} LIMIT ?3) RETURNING {COLUMNS}"
                );
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(p), slot_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }
}

#[async_trait]
impl UploadStore for SqliteUploads {
    async fn stored_secret(&self, fresh: String) -> Result<String, StorageError> {
        self.store
            .write(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO upload_secret (id, secret) VALUES (0, ?1)",
                    params![fresh],
                )?;
                let s: String =
                    c.query_row("SELECT secret FROM upload_secret WHERE id = 0", [], |r| {
                        r.get(0)
                    })?;
                Ok(s)
            })
            .await
    }

    /// Records `slot` unless the owner's files and slots would then exceed `quota` or all of
    /// them `cap`; checked and written in one transaction.
    async fn reserve(
        &self,
        slot: Slot,
        quota: Option<u64>,
        cap: Option<u64>,
    ) -> Result<Result<(), Refusal>, StorageError> {
        self.store
            .write(move |c| {
                let sum = |sql: &str, p: &[&dyn rusqlite::ToSql]| {
                    c.query_row(sql, p, |r| r.get::<_, i64>(0))
                        .map(|n| n as u64)
                };
                if let Some(quota) = quota {
                    let used = sum(
                        "SELECT COALESCE(SUM(size), 0) FROM upload_slots WHERE owner = ?1",
                        &[&slot.owner],
                    )?;
                    if used.saturating_add(slot.size) > quota {
                        return Ok(Err(Refusal::Quota { used, quota }));
                    }
                }
                if let Some(cap) = cap {
                    let total = sum("SELECT COALESCE(SUM(size), 0) FROM upload_slots", &[])?;
                    if total.saturating_add(slot.size) > cap {
                        return Ok(Err(Refusal::Full));
                    }
                }
                c.execute(
                    &format!("INSERT INTO upload_slots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)"),
                    params![
                        slot.id,
                        slot.owner,
                        slot.name,
                        slot.size as i64,
                        slot.content_type,
                        slot.stamp_ms,
                        slot.expires_ms
                    ],
                )?;
                Ok(Ok(()))
            })
            .await
    }

    /// The `limit` accounts holding the most bytes, most first (ties by address), counted as
    /// [`SqliteUploads::reserve`] counts them against the quota; and the total of all.
    async fn usage(&self, limit: usize) -> Result<(Vec<Usage>, u64), StorageError> {
        self.store
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT owner, SUM(size), COUNT(*) FROM upload_slots GROUP BY owner \
                     ORDER BY SUM(size) DESC, owner LIMIT ?1",
                )?;
                let rows = stmt.query_map(params![limit as i64], |r| {
                    Ok(Usage {
                        owner: r.get(0)?,
                        bytes: r.get::<_, i64>(1)? as u64,
                        files: r.get::<_, i64>(2)? as u64,
                    })
                })?;
                let top = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                let total: i64 =
                    c.query_row("SELECT COALESCE(SUM(size), 0) FROM upload_slots", [], |r| {
                        r.get(0)
                    })?;
                Ok((top, total as u64))
            })
            .await
    }

    async fn get(&self, id: &str) -> Result<Option<Slot>, StorageError> {
        let id = id.to_owned();
        self.store
            .read(move |c| {
                let sql = format!("SELECT {COLUMNS} FROM upload_slots WHERE id = ?1");
                Ok(c.query_row(&sql, params![id], slot_from_row).optional()?)
            })
            .await
    }

    async fn claim(&self, id: &str, holder: &str) -> Result<bool, StorageError> {
        let (id, holder) = (id.to_owned(), holder.to_owned());
        self.store
            .write(move |c| {
                let sql =
                    "UPDATE upload_slots SET state = 1, holder = ?2 WHERE id = ?1 AND state = 0";
                Ok(c.execute(sql, params![id, holder])? == 1)
            })
            .await
    }

    async fn release_held(&self, holder: &str) -> Result<u64, StorageError> {
        let holder = holder.to_owned();
        self.store
            .write(move |c| {
                let sql = "UPDATE upload_slots SET state = 0, holder = NULL \
                           WHERE state = 1 AND (holder = ?1 OR holder IS NULL)";
                Ok(c.execute(sql, params![holder])? as u64)
            })
            .await
    }

    /// Moves the slot from `from` to `to`; false when it was not in `from` (another PUT holds
    /// it, it was used, or it is gone). `stamp_ms` and a content type are recorded with it.
    async fn transition(
        &self,
        id: &str,
        from: State,
        to: State,
        stamp_ms: Option<i64>,
        content_type: Option<String>,
    ) -> Result<bool, StorageError> {
        let id = id.to_owned();
        self.store
            .write(move |c| {
                let n = c.execute(
                    "UPDATE upload_slots SET state = ?3, stamp_ms = COALESCE(?4, stamp_ms), \
                     content_type = COALESCE(content_type, ?5) WHERE id = ?1 AND state = ?2",
                    params![id, from as i64, to as i64, stamp_ms, content_type],
                )?;
                Ok(n == 1)
            })
            .await
    }

    /// Removes, in one transaction, at most `limit` slots that are over: files stored before
    /// `stored_before_ms` (when given) and issued slots whose URL expired before `now_ms`.
    /// Returns them; the caller deletes the files of the stored ones.
    async fn take_expired(
        &self,
        now_ms: i64,
        stored_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Slot>, StorageError> {
        self.take(
            "(state = 2 AND stamp_ms < ?2) OR (state = 0 AND expires_ms < ?1)",
            [
                Value::Integer(now_ms),
                Value::Integer(stored_before_ms.unwrap_or(i64::MIN)),
                Value::Integer(limit as i64),
            ],
        )
        .await
    }

    /// Removes every slot of `owner` but those being uploaded (which fail to finish then) and
    /// returns them.
    async fn take_owner(&self, owner: &str) -> Result<Vec<Slot>, StorageError> {
        let owner = owner.to_owned();
        // LIMIT -1: no limit.
        let uploading = State::Uploading as i64;
        let p = [owner.into(), uploading.into(), Value::Integer(-1)];
        self.take("owner = ?1 AND state != ?2", p).await
    }
}
