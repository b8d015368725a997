//! [`BlockStore`] on PostgreSQL: the table `blocking_items` beside the core's, each write one
//! statement committed before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::postgres::{exec, query};
use xmppd_storage::{PgStore, Schema, StorageError};

use super::BlockStore;

/// The SQLite schema's table and columns; `seq` keeps the order items were blocked in (the
/// `rowid` SQLite orders them by).
pub const PG_SCHEMA: Schema = Schema {
    name: "blocking",
    migrations: &[r"
CREATE TABLE blocking_items (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner TEXT NOT NULL,
    jid TEXT NOT NULL,
    UNIQUE (owner, jid)
);
"],
};

/// [`BlockStore`] over a [`PgStore`].
pub struct PgBlocks {
    store: Arc<PgStore>,
}

impl PgBlocks {
    /// Creates or migrates the blocking table in `store`'s database.
    pub async fn open(store: Arc<PgStore>) -> Result<PgBlocks, StorageError> {
        store.extend(PG_SCHEMA).await?;
        Ok(PgBlocks { store })
    }
}

#[async_trait]
impl BlockStore for PgBlocks {
    async fn items(&self, owner: &str) -> Result<Vec<String>, StorageError> {
        let c = self.store.client().await?;
        let sql = "SELECT jid FROM blocking_items WHERE owner = $1 ORDER BY seq";
        let rows = query(&c, sql, &[&owner]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn add(&self, owner: &str, items: Vec<String>) -> Result<(), StorageError> {
        let c = self.store.client().await?;
        // One statement: the items get their places in the order given, all or none.
        let sql = "INSERT INTO blocking_items (owner, jid)
                   SELECT $1, jid FROM unnest($2::text[]) WITH ORDINALITY AS i (jid, n)
                   ORDER BY n
                   ON CONFLICT (owner, jid) DO NOTHING";
        exec(&c, sql, &[&owner, &items]).await?;
        Ok(())
    }

    async fn remove(&self, owner: &str, items: Option<Vec<String>>) -> Result<(), StorageError> {
        let c = self.store.client().await?;
        match items {
            None => {
                let sql = "DELETE FROM blocking_items WHERE owner = $1";
                exec(&c, sql, &[&owner]).await?
            }
            Some(items) => {
                let sql = "DELETE FROM blocking_items WHERE owner = $1 AND jid = ANY($2)";
                exec(&c, sql, &[&owner, &items]).await?
            }
        };
        Ok(())
    }

    async fn owners(&self) -> Result<Vec<String>, StorageError> {
        let c = self.store.client().await?;
        let rows = query(&c, "SELECT DISTINCT owner FROM blocking_items", &[]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
