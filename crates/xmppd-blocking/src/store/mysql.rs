//! [`BlockStore`] on MariaDB: the table `blocking_items` beside the core's, each write one
//! transaction committed before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::mysql::mysql_async::prelude::Queryable;
use xmppd_storage::mysql::{my_err, write};
use xmppd_storage::{MysqlStore, Schema, StorageError};

use super::BlockStore;

/// The SQLite schema's table and columns; `seq` keeps the order items were blocked in (the
/// `rowid` SQLite orders them by). JIDs are byte strings, matched exactly; an item may be any
/// JID (RFC 7622 §3.1: up to 3071 bytes), longer with its owner than an InnoDB key holds, so
/// the pair is unique by a hash of it (MariaDB's long unique keys).
pub const MYSQL_SCHEMA: Schema = Schema {
    name: "blocking",
    migrations: &[r"
CREATE TABLE blocking_items (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    owner VARBINARY(1023) NOT NULL,
    jid VARBINARY(3071) NOT NULL,
    KEY blocking_items_owner (owner),
    UNIQUE KEY blocking_items_owner_jid (owner, jid) USING HASH
) ENGINE=InnoDB;
"],
};

/// [`BlockStore`] over a [`MysqlStore`].
pub struct MysqlBlocks {
    store: Arc<MysqlStore>,
}

impl MysqlBlocks {
    /// Creates or migrates the blocking table in `store`'s database.
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlBlocks, StorageError> {
        store.extend(MYSQL_SCHEMA).await?;
        Ok(MysqlBlocks { store })
    }
}

#[async_trait]
impl BlockStore for MysqlBlocks {
    async fn items(&self, owner: &str) -> Result<Vec<String>, StorageError> {
        let sql = "SELECT jid FROM blocking_items WHERE owner = ? ORDER BY seq";
        let mut c = self.store.conn().await?;
        c.exec(sql, (owner,)).await.map_err(my_err)
    }

    async fn add(&self, owner: &str, items: Vec<String>) -> Result<(), StorageError> {
        // Not INSERT IGNORE: it would also cut a JID too long for its column.
        let sql = "INSERT INTO blocking_items (owner, jid) VALUES (?, ?)
                   ON DUPLICATE KEY UPDATE owner = owner";
        let mut c = self.store.conn().await?;
        let mut tx = write(&mut c).await?;
        let params = items.iter().map(|jid| (owner, jid));
        tx.exec_batch(sql, params).await.map_err(my_err)?;
        tx.commit().await.map_err(my_err)
    }

    async fn remove(&self, owner: &str, items: Option<Vec<String>>) -> Result<(), StorageError> {
        let mut c = self.store.conn().await?;
        match items {
            None => {
                let sql = "DELETE FROM blocking_items WHERE owner = ?";
                c.exec_drop(sql, (owner,)).await.map_err(my_err)
            }
            Some(items) => {
                let sql = "DELETE FROM blocking_items WHERE owner = ? AND jid = ?";
                let mut tx = write(&mut c).await?;
                let params = items.iter().map(|jid| (owner, jid));
                tx.exec_batch(sql, params).await.map_err(my_err)?;
                tx.commit().await.map_err(my_err)
            }
        }
    }

    async fn owners(&self) -> Result<Vec<String>, StorageError> {
        let sql = "SELECT DISTINCT owner FROM blocking_items";
        let mut c = self.store.conn().await?;
        c.exec(sql, ()).await.map_err(my_err)
    }
}
