//! [`UploadStore`] on PostgreSQL: the tables `upload_slots` and `upload_secret` beside the
//! core's, each write one transaction committed before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::postgres::tokio_postgres::Row;
use xmppd_storage::postgres::{begin, exec, pg_err, query, query_opt};
use xmppd_storage::{PgStore, Schema, StorageError};

use super::{size_column, Refusal, Slot, State, UploadStore, Usage, COLUMNS};

/// The SQLite schema's tables and columns.
pub const PG_SCHEMA: Schema = Schema {
    name: "upload",
    migrations: &[
        r"
CREATE TABLE upload_slots (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT,
    state BIGINT NOT NULL,
    stamp_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX upload_slots_owner ON upload_slots (owner);
CREATE INDEX upload_slots_stamp ON upload_slots (state, stamp_ms);
CREATE TABLE upload_secret (
    id BIGINT PRIMARY KEY CHECK (id = 0),
    secret TEXT NOT NULL
);
",
        r"
ALTER TABLE upload_slots ADD COLUMN holder TEXT;
",
    ],
};

/// The upload tables over a [`PgStore`].
pub struct PgUploads {
    store: Arc<PgStore>,
}

impl PgUploads {
    /// Creates or migrates the tables. Uploads a stop interrupted are given back by
    /// [`UploadStore::release_held`].
    pub async fn open(store: Arc<PgStore>) -> Result<PgUploads, StorageError> {
        store.extend(PG_SCHEMA).await?;
        Ok(PgUploads { store })
    }
}

fn slot(r: &Row) -> Slot {
    let c = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    Slot::from_columns((c.0, c.1, c.2, c.3, c.4, r.get(5), r.get(6), r.get(7)))
}

fn bytes(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl UploadStore for PgUploads {
    async fn stored_secret(&self, fresh: String) -> Result<String, StorageError> {
        let c = self.store.client().await?;
        let sql = "INSERT INTO upload_secret (id, secret) VALUES (0, $1) ON CONFLICT DO NOTHING";
        exec(&c, sql, &[&fresh]).await?;
        let sql = "SELECT secret FROM upload_secret WHERE id = 0";
        Ok(query(&c, sql, &[])
            .await?
            .first()
            .map_or(fresh, |r| r.get(0)))
    }

    async fn reserve(
        &self,
        slot: Slot,
        quota: Option<u64>,
        cap: Option<u64>,
    ) -> Result<Result<(), Refusal>, StorageError> {
        let mut c = self.store.client().await?;
        let tx = begin(&mut c).await?;
        if quota.is_some() || cap.is_some() {
            // Reservations counted against a bound wait for each other to the commit (a lock
            // of their own), so two cannot both take the last bytes.
            exec(&tx, "SELECT pg_advisory_xact_lock(363, 0)", &[]).await?;
        }
        let sum = "SELECT COALESCE(SUM(size), 0)::BIGINT FROM upload_slots";
        if let Some(quota) = quota {
            let sql = format!("{sum} WHERE owner = $1");
            let used = bytes(query(&tx, &sql, &[&slot.owner]).await?[0].get(0));
            if used.saturating_add(slot.size) > quota {
                return Ok(Err(Refusal::Quota { used, quota }));
            }
        }
        if let Some(cap) = cap {
            let total = bytes(query(&tx, sum, &[]).await?[0].get(0));
            if total.saturating_add(slot.size) > cap {
                return Ok(Err(Refusal::Full));
            }
        }
        let sql =
            format!("INSERT INTO upload_slots ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)");
        let size = size_column(slot.size);
        let p = [&slot.id, &slot.owner, &slot.name];
        let times = [&slot.stamp_ms, &slot.expires_ms];
        exec(
            &tx,
            &sql,
            &[
                p[0],
                p[1],
                p[2],
                &size,
                &slot.content_type,
                times[0],
                times[1],
            ],
        )
        .await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Ok(()))
    }

    async fn usage(&self, limit: usize) -> Result<(Vec<Usage>, u64), StorageError> {
        let c = self.store.client().await?;
        let sql = "SELECT owner, SUM(size)::BIGINT, COUNT(*) FROM upload_slots GROUP BY owner
                   ORDER BY SUM(size) DESC, owner COLLATE \"C\" LIMIT $1";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let top = (query(&c, sql, &[&limit]).await?.iter())
            .map(|r| Usage {
                owner: r.get(0),
                bytes: bytes(r.get(1)),
                files: bytes(r.get(2)),
            })
            .collect();
        let sql = "SELECT COALESCE(SUM(size), 0)::BIGINT FROM upload_slots";
        let total = bytes(query(&c, sql, &[]).await?[0].get(0));
        Ok((top, total))
    }

    async fn get(&self, id: &str) -> Result<Option<Slot>, StorageError> {
        let c = self.store.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM upload_slots WHERE id = $1");
        Ok(query_opt(&c, &sql, &[&id]).await?.as_ref().map(slot))
    }

    async fn transition(
        &self,
        id: &str,
        from: State,
        to: State,
        stamp_ms: Option<i64>,
        content_type: Option<String>,
    ) -> Result<bool, StorageError> {
        let c = self.store.client().await?;
        let sql = "UPDATE upload_slots SET state = $3, stamp_ms = COALESCE($4, stamp_ms),
                   content_type = COALESCE(content_type, $5) WHERE id = $1 AND state = $2";
        let (from, to) = (from as i64, to as i64);
        let n = exec(&c, sql, &[&id, &from, &to, &stamp_ms, &content_type]).await?;
        Ok(n == 1)
    }

    async fn take_expired(
        &self,
        now_ms: i64,
        stored_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Slot>, StorageError> {
        let c = self.store.client().await?;
        // One statement: the rows are taken and returned at once; rows another process is
        // taking are skipped, not waited for.
        let sql = format!(
            "DELETE FROM upload_slots WHERE id IN (SELECT id FROM upload_slots
                 WHERE (state = 2 AND stamp_ms < $2) OR (state = 0 AND expires_ms < $1)
                 LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        );
        let before = stored_before_ms.unwrap_or(i64::MIN);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = query(&c, &sql, &[&now_ms, &before, &limit]).await?;
        Ok(rows.iter().map(slot).collect())
    }

    async fn claim(&self, id: &str, holder: &str) -> Result<bool, StorageError> {
        let c = self.store.client().await?;
        let sql = "UPDATE upload_slots SET state = 1, holder = $2 WHERE id = $1 AND state = 0";
        Ok(exec(&c, sql, &[&id, &holder]).await? == 1)
    }

    async fn release_held(&self, holder: &str) -> Result<u64, StorageError> {
        let c = self.store.client().await?;
        let sql = "UPDATE upload_slots SET state = 0, holder = NULL
                   WHERE state = 1 AND (holder = $1 OR holder IS NULL)";
        exec(&c, sql, &[&holder]).await
    }

    async fn take_owner(&self, owner: &str) -> Result<Vec<Slot>, StorageError> {
        let c = self.store.client().await?;
        let sql =
            format!("DELETE FROM upload_slots WHERE owner = $1 AND state != 1 RETURNING {COLUMNS}");
        let rows = query(&c, &sql, &[&owner]).await?;
        Ok(rows.iter().map(slot).collect())
    }
}
