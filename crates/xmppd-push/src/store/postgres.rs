//! [`PushStore`] on PostgreSQL: the table `push_registrations` beside the core's, each write
//! one transaction committed before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::postgres::{begin, exec, pg_err, query};
use xmppd_storage::{PgStore, Schema, StorageError};

use super::{PushStore, StoredRegistration};

/// The SQLite schema's table and columns; `seq` is the order registrations were last enabled
/// in (the `rowid` SQLite orders them by).
pub const PG_SCHEMA: Schema = Schema {
    name: "push",
    migrations: &[r"
CREATE TABLE push_registrations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner TEXT NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    form TEXT,
    resource TEXT NOT NULL,
    UNIQUE (owner, jid, node)
);
"],
};

/// [`PushStore`] over a [`PgStore`].
pub struct PgPush {
    store: Arc<PgStore>,
}

impl PgPush {
    /// Creates or migrates the push table in `store`'s database.
    pub async fn open(store: Arc<PgStore>) -> Result<PgPush, StorageError> {
        store.extend(PG_SCHEMA).await?;
        Ok(PgPush { store })
    }
}

#[async_trait]
impl PushStore for PgPush {
    async fn all(&self) -> Result<Vec<StoredRegistration>, StorageError> {
        let c = self.store.client().await?;
        let sql = "SELECT owner, jid, node, form, resource FROM push_registrations ORDER BY seq";
        let rows = query(&c, sql, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| StoredRegistration {
                owner: r.get(0),
                jid: r.get(1),
                node: r.get(2),
                form: r.get(3),
                resource: r.get(4),
            })
            .collect())
    }

    async fn enable(&self, reg: StoredRegistration, max: usize) -> Result<(), StorageError> {
        let mut c = self.store.client().await?;
        let tx = begin(&mut c).await?;
        // The owner's registrations locked to the commit (a lock of its own: a concurrent
        // enable waits, then sees this one's rows), so the bound holds.
        let sql = "SELECT pg_advisory_xact_lock(hashtextextended($1, 357))";
        exec(&tx, sql, &[&reg.owner]).await?;
        // Deleted and inserted again: the newest registration is the last.
        let sql = "DELETE FROM push_registrations WHERE owner = $1 AND jid = $2 AND node = $3";
        exec(&tx, sql, &[&reg.owner, &reg.jid, &reg.node]).await?;
        let sql = "INSERT INTO push_registrations (owner, jid, node, form, resource)
                   VALUES ($1, $2, $3, $4, $5)";
        let p = [&reg.owner, &reg.jid, &reg.node];
        exec(&tx, sql, &[p[0], p[1], p[2], &reg.form, &reg.resource]).await?;
        let sql = "SELECT seq FROM push_registrations WHERE owner = $1 ORDER BY seq DESC";
        let seqs: Vec<i64> = (query(&tx, sql, &[&reg.owner]).await?)
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(stale) = super::beyond(&seqs, max) {
            let sql = "DELETE FROM push_registrations WHERE owner = $1 AND seq <= $2";
            exec(&tx, sql, &[&reg.owner, &stale]).await?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn disable(
        &self,
        owner: &str,
        jid: &str,
        node: Option<String>,
    ) -> Result<(), StorageError> {
        let c = self.store.client().await?;
        let sql = "DELETE FROM push_registrations
                   WHERE owner = $1 AND jid = $2 AND ($3::text IS NULL OR node = $3)";
        exec(&c, sql, &[&owner, &jid, &node]).await?;
        Ok(())
    }

    async fn remove_owner(&self, owner: &str) -> Result<(), StorageError> {
        let c = self.store.client().await?;
        let sql = "DELETE FROM push_registrations WHERE owner = $1";
        exec(&c, sql, &[&owner]).await?;
        Ok(())
    }
}
