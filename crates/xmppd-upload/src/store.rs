//! What the service remembers of each slot: [`SqliteUploads`], its table in the server's
//! SQLite database (schema `upload`, through [`SqliteStore::extend`]), and the secret that
//! signs PUT URLs when the configuration gives none.
//!
//! A slot goes from issued to uploading (one PUT at a time holds it) to stored; an upload
//! that fails goes back to issued, so the client may try again while the URL is valid. Quota
//! and disk cap count every slot, issued or stored, so promised space is never given twice.

use std::sync::Arc;

use rand::RngCore;
use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension};
use xmppd_storage::{Schema, SqliteStore, StorageError};

/// Migrations of the upload tables: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "upload",
    migrations: &[r"
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
"],
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

/// What one account holds, as [`SqliteUploads::usage`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The account's bare JID.
    pub owner: String,
    /// Counted as the quota counts it: every slot, issued or stored.
    pub bytes: u64,
    /// Slots, issued or stored.
    pub files: u64,
}

/// The upload tables over a [`SqliteStore`].
pub struct SqliteUploads {
    store: Arc<SqliteStore>,
}

fn slot_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Slot> {
    Ok(Slot {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        content_type: r.get(4)?,
        state: State::from_i64(r.get(5)?),
        stamp_ms: r.get(6)?,
        expires_ms: r.get(7)?,
    })
}

const COLUMNS: &str = "id, owner, name, size, content_type, state, stamp_ms, expires_ms";

impl SqliteUploads {
    /// Creates or migrates the tables. Uploads a stop interrupted go back to issued (their
    /// partial files are the caller's to remove).
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteUploads, StorageError> {
        store.extend(SCHEMA).await?;
        store
            .write(|c| {
                c.execute("UPDATE upload_slots SET state = 0 WHERE state = 1", [])?;
                Ok(())
            })
            .await?;
        Ok(SqliteUploads { store })
    }

    /// The stored secret, made and stored the first time.
    pub async fn secret(&self) -> Result<Vec<u8>, StorageError> {
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        let fresh = hex::encode(fresh);
        let stored = self
            .store
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
            .await?;
        Ok(hex::decode(&stored).unwrap_or_else(|_| stored.into_bytes()))
    }

    /// Records `slot` unless the owner's files and slots would then exceed `quota` or all of
    /// them `cap`; checked and written in one transaction.
    pub async fn reserve(
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
    pub async fn usage(&self, limit: usize) -> Result<(Vec<Usage>, u64), StorageError> {
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

    pub async fn get(&self, id: &str) -> Result<Option<Slot>, StorageError> {
        let id = id.to_owned();
        self.store
            .read(move |c| {
                let sql = format!("SELECT {COLUMNS} FROM upload_slots WHERE id = ?1");
                Ok(c.query_row(&sql, params![id], slot_from_row).optional()?)
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

    /// Takes an issued slot for one PUT; false when it is not issued.
    pub async fn claim(&self, id: &str) -> Result<bool, StorageError> {
        (self.transition(id, State::Issued, State::Uploading, None, None)).await
    }

    /// Gives a slot back after a failed PUT.
    pub async fn release(&self, id: &str) -> Result<bool, StorageError> {
        (self.transition(id, State::Uploading, State::Issued, None, None)).await
    }

    /// Marks the upload done at `now_ms`; `content_type` is kept when the slot named none.
    pub async fn finish(
        &self,
        id: &str,
        now_ms: i64,
        content_type: Option<String>,
    ) -> Result<bool, StorageError> {
        let stamp = Some(now_ms);
        (self.transition(id, State::Uploading, State::Stored, stamp, content_type)).await
    }

    /// Removes, in one transaction, at most `limit` slots that are over: files stored before
    /// `stored_before_ms` (when given) and issued slots whose URL expired before `now_ms`.
    /// Returns them; the caller deletes the files of the stored ones.
    pub async fn take_expired(
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
    pub async fn take_owner(&self, owner: &str) -> Result<Vec<Slot>, StorageError> {
        let owner = owner.to_owned();
        // LIMIT -1: no limit.
        let uploading = State::Uploading as i64;
        let p = [owner.into(), uploading.into(), Value::Integer(-1)];
        self.take("owner = ?1 AND state != ?2", p).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: &str, owner: &str, size: u64) -> Slot {
        Slot {
            id: id.into(),
            owner: owner.into(),
            name: "a.png".into(),
            size,
            content_type: None,
            state: State::Issued,
            stamp_ms: 1_000,
            expires_ms: 5_000,
        }
    }

    #[tokio::test]
    async fn quota_and_cap_count_every_slot_and_a_slot_is_used_once() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let up = SqliteUploads::open(store).await.unwrap();
        let (q, cap) = (Some(100), Some(150));
        assert_eq!(
            up.reserve(slot("a", "u@x", 60), q, cap).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            up.reserve(slot("b", "u@x", 41), q, cap).await.unwrap(),
            Err(Refusal::Quota {
                used: 60,
                quota: 100
            })
        );
        assert_eq!(
            up.reserve(slot("b", "u@x", 40), q, cap).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            up.reserve(slot("c", "v@x", 60), q, cap).await.unwrap(),
            Err(Refusal::Full)
        );
        assert!(up.claim("a").await.unwrap());
        assert!(!up.claim("a").await.unwrap(), "one PUT at a time");
        assert!(up.release("a").await.unwrap());
        assert!(
            up.claim("a").await.unwrap(),
            "a failed upload may be retried"
        );
        let t = Some("image/png".to_string());
        assert!(up.finish("a", 9_000, t.clone()).await.unwrap());
        assert!(
            !up.claim("a").await.unwrap(),
            "a stored slot takes no second PUT"
        );
        let a = up.get("a").await.unwrap().unwrap();
        assert_eq!(
            (a.state, a.stamp_ms, a.content_type),
            (State::Stored, 9_000, t)
        );
        assert_eq!(up.get("zz").await.unwrap(), None);
    }

    #[tokio::test]
    async fn expiry_takes_old_files_and_unused_slots_only() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let up = SqliteUploads::open(store).await.unwrap();
        for id in ["old", "new", "unused", "fresh", "busy"] {
            let mut s = slot(id, "u@x", 1);
            if id == "fresh" {
                s.expires_ms = 50_000;
            }
            up.reserve(s, None, None).await.unwrap().unwrap();
        }
        for (id, at) in [("old", 2_000), ("new", 20_000)] {
            up.claim(id).await.unwrap();
            up.finish(id, at, None).await.unwrap();
        }
        up.claim("busy").await.unwrap();
        let taken = up.take_expired(10_000, Some(10_000), 100).await.unwrap();
        let mut ids: Vec<_> = taken.iter().map(|s| s.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["old", "unused"]);
        // Kept forever: only unused slots go.
        assert!(up.take_expired(60_000, None, 100).await.unwrap()[0].id == "fresh");
        assert_eq!(up.take_owner("u@x").await.unwrap()[0].id, "new");
        assert!(
            up.get("busy").await.unwrap().is_some(),
            "an upload in progress stays"
        );
    }

    #[tokio::test]
    async fn usage_counts_what_the_quota_counts_most_first() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let up = SqliteUploads::open(store).await.unwrap();
        assert_eq!(up.usage(10).await.unwrap(), (Vec::new(), 0));
        for (id, owner, size) in [("a", "u@x", 10), ("b", "u@x", 5), ("c", "v@x", 30)] {
            up.reserve(slot(id, owner, size), None, None)
                .await
                .unwrap()
                .unwrap();
        }
        up.claim("a").await.unwrap();
        up.finish("a", 2_000, None).await.unwrap();
        let usage = |owner: &str, bytes, files| Usage {
            owner: owner.into(),
            bytes,
            files,
        };
        assert_eq!(
            up.usage(10).await.unwrap(),
            (vec![usage("v@x", 30, 1), usage("u@x", 15, 2)], 45)
        );
        assert_eq!(
            up.usage(1).await.unwrap(),
            (vec![usage("v@x", 30, 1)], 45),
            "the total counts everyone, listed or not"
        );
        assert_eq!(
            up.reserve(slot("d", "u@x", 1), Some(15), None)
                .await
                .unwrap(),
            Err(Refusal::Quota {
                used: 15,
                quota: 15
            }),
            "the quota's count is the one listed"
        );
    }

    #[tokio::test]
    async fn the_secret_is_made_once() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let up = SqliteUploads::open(store).await.unwrap();
        let s = up.secret().await.unwrap();
        assert_eq!(s.len(), 32);
        assert_eq!(up.secret().await.unwrap(), s);
    }
}
