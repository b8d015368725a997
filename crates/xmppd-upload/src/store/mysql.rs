//! [`UploadStore`] on MariaDB: the tables `upload_slots` and `upload_secret` beside the
//! core's, each write one transaction committed before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::mysql::mysql_async::prelude::Queryable;
use xmppd_storage::mysql::mysql_async::Conn;
use xmppd_storage::mysql::{exec_count, my_err, named_lock, named_unlock, write};
use xmppd_storage::{MysqlStore, Schema, StorageError};

use super::{size_column, Columns, Refusal, Slot, State, UploadStore, Usage, COLUMNS};

/// The SQLite schema's tables and columns. The owner (an account's bare JID) is a byte
/// string, matched exactly.
pub const MYSQL_SCHEMA: Schema = Schema {
    name: "upload",
    migrations: &[
        r"
CREATE TABLE upload_slots (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    owner VARBINARY(1023) NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT,
    state INTEGER NOT NULL,
    stamp_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    KEY upload_slots_owner (owner),
    KEY upload_slots_stamp (state, stamp_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE upload_secret (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 0),
    secret TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
",
        r"
ALTER TABLE upload_slots ADD COLUMN holder TEXT;
",
    ],
};

/// The upload tables over a [`MysqlStore`].
pub struct MysqlUploads {
    store: Arc<MysqlStore>,
}

impl MysqlUploads {
    /// Creates or migrates the tables. Uploads a stop interrupted are given back by
    /// [`UploadStore::release_held`].
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlUploads, StorageError> {
        store.extend(MYSQL_SCHEMA).await?;
        Ok(MysqlUploads { store })
    }
}

/// What the quota and the cap count, of one owner or of everyone.
const SUM: &str = "SELECT CAST(COALESCE(SUM(size), 0) AS SIGNED) FROM upload_slots";

fn bytes(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// [`UploadStore::reserve`] under the reservations' lock.
async fn reserve_locked(
    c: &mut Conn,
    slot: Slot,
    quota: Option<u64>,
    cap: Option<u64>,
) -> Result<Result<(), Refusal>, StorageError> {
    let mut tx = write(c).await?;
    if let Some(quota) = quota {
        let sql = format!("{SUM} WHERE owner = ?");
        let used = bytes(tx.exec_first(sql, (&slot.owner,)).await.map_err(my_err)?);
        if used.saturating_add(slot.size) > quota {
            return Ok(Err(Refusal::Quota { used, quota }));
        }
    }
    if let Some(cap) = cap {
        let total = bytes(tx.exec_first(SUM, ()).await.map_err(my_err)?);
        if total.saturating_add(slot.size) > cap {
            return Ok(Err(Refusal::Full));
        }
    }
    let sql = format!("INSERT INTO upload_slots ({COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?, ?)");
    let row = (
        &slot.id,
        &slot.owner,
        &slot.name,
        size_column(slot.size),
        &slot.content_type,
        slot.stamp_ms,
        slot.expires_ms,
    );
    tx.exec_drop(sql, row).await.map_err(my_err)?;
    tx.commit().await.map_err(my_err)?;
    Ok(Ok(()))
}

#[async_trait]
impl UploadStore for MysqlUploads {
    async fn stored_secret(&self, fresh: String) -> Result<String, StorageError> {
        let mut c = self.store.conn().await?;
        let sql = "INSERT INTO upload_secret (id, secret) VALUES (0, ?)
                   ON DUPLICATE KEY UPDATE id = id";
        c.exec_drop(sql, (&fresh,)).await.map_err(my_err)?;
        let sql = "SELECT secret FROM upload_secret WHERE id = 0";
        let stored: Option<String> = c.exec_first(sql, ()).await.map_err(my_err)?;
        Ok(stored.unwrap_or(fresh))
    }

    async fn reserve(
        &self,
        slot: Slot,
        quota: Option<u64>,
        cap: Option<u64>,
    ) -> Result<Result<(), Refusal>, StorageError> {
        let mut c = self.store.conn().await?;
        if quota.is_none() && cap.is_none() {
            return reserve_locked(&mut c, slot, quota, cap).await;
        }
        // Reservations counted against a bound wait for each other to the commit, so two
        // cannot both take the last bytes.
        named_lock(&mut c, "upload:", "").await?;
        let reserved = reserve_locked(&mut c, slot, quota, cap).await;
        let released = named_unlock(&mut c, "upload:", "").await;
        let reserved = reserved?;
        released?;
        Ok(reserved)
    }

    async fn usage(&self, limit: usize) -> Result<(Vec<Usage>, u64), StorageError> {
        let mut c = self.store.conn().await?;
        let sql = "SELECT owner, CAST(SUM(size) AS SIGNED), COUNT(*) FROM upload_slots
                   GROUP BY owner ORDER BY SUM(size) DESC, owner LIMIT ?";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, i64, i64)> = c.exec(sql, (limit,)).await.map_err(my_err)?;
        let top = (rows.into_iter())
            .map(|(owner, sum, count)| Usage {
                owner,
                bytes: bytes(Some(sum)),
                files: bytes(Some(count)),
            })
            .collect();
        let total = bytes(c.exec_first(SUM, ()).await.map_err(my_err)?);
        Ok((top, total))
    }

    async fn get(&self, id: &str) -> Result<Option<Slot>, StorageError> {
        let sql = format!("SELECT {COLUMNS} FROM upload_slots WHERE id = ?");
        let row: Option<Columns> = (self.store.conn().await?)
            .exec_first(sql, (id,))
            .await
            .map_err(my_err)?;
        Ok(row.map(Slot::from_columns))
    }

    async fn transition(
        &self,
        id: &str,
        from: State,
        to: State,
        stamp_ms: Option<i64>,
        content_type: Option<String>,
    ) -> Result<bool, StorageError> {
        let sql = "UPDATE upload_slots SET state = ?, stamp_ms = COALESCE(?, stamp_ms),
                   content_type = COALESCE(content_type, ?) WHERE id = ? AND state = ?";
        let params = (to as i64, stamp_ms, content_type, id, from as i64);
        let mut c = self.store.conn().await?;
        Ok(exec_count(&mut c, sql, params).await? == 1)
    }

    async fn take_expired(
        &self,
        now_ms: i64,
        stored_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Slot>, StorageError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM upload_slots
             WHERE (state = 2 AND stamp_ms < ?) OR (state = 0 AND expires_ms < ?)
             LIMIT ? FOR UPDATE SKIP LOCKED"
        );
        let before = stored_before_ms.unwrap_or(i64::MIN);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.take(sql, (before, now_ms, limit)).await
    }

    async fn claim(&self, id: &str, holder: &str) -> Result<bool, StorageError> {
        let mut c = self.store.conn().await?;
        let sql = "UPDATE upload_slots SET state = 1, holder = ? WHERE id = ? AND state = 0";
        Ok(exec_count(&mut c, sql, (holder, id)).await? == 1)
    }

    async fn release_held(&self, holder: &str) -> Result<u64, StorageError> {
        let mut c = self.store.conn().await?;
        let sql = "UPDATE upload_slots SET state = 0, holder = NULL
                   WHERE state = 1 AND (holder = ? OR holder IS NULL)";
        exec_count(&mut c, sql, (holder,)).await
    }

    async fn take_owner(&self, owner: &str) -> Result<Vec<Slot>, StorageError> {
        let sql =
            format!("SELECT {COLUMNS} FROM upload_slots WHERE owner = ? AND state != 1 FOR UPDATE");
        self.take(sql, (owner,)).await
    }
}

impl MysqlUploads {
    /// Deletes the rows `select` locks and returns them, in one transaction.
    async fn take<P>(&self, select: String, params: P) -> Result<Vec<Slot>, StorageError>
    where
        P: Into<xmppd_storage::mysql::mysql_async::Params> + Send,
    {
        let mut c = self.store.conn().await?;
        let mut tx = write(&mut c).await?;
        let rows: Vec<Columns> = tx.exec(select, params).await.map_err(my_err)?;
        let sql = "DELETE FROM upload_slots WHERE id = ?";
        let ids = rows.iter().map(|r| (&r.0,));
        tx.exec_batch(sql, ids).await.map_err(my_err)?;
        tx.commit().await.map_err(my_err)?;
        Ok(rows.into_iter().map(Slot::from_columns).collect())
    }
}
