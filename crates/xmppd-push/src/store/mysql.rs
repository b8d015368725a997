//! [`PushStore`] on MariaDB: the table `push_registrations` beside the core's, each write one
//! transaction committed before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::mysql::mysql_async::prelude::Queryable;
use xmppd_storage::mysql::mysql_async::Conn;
use xmppd_storage::mysql::{my_err, named_lock, named_unlock, write};
use xmppd_storage::{MysqlStore, Schema, StorageError};

use super::{PushStore, StoredRegistration};

/// The SQLite schema's table and columns; `seq` is the order registrations were last enabled
/// in (the `rowid` SQLite orders them by). The key's parts are byte strings, matched exactly,
/// within InnoDB's key of 3072 bytes.
pub const MYSQL_SCHEMA: Schema = Schema {
    name: "push",
    migrations: &[r"
CREATE TABLE push_registrations (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    owner VARBINARY(1023) NOT NULL,
    jid VARBINARY(1023) NOT NULL,
    node VARBINARY(1023) NOT NULL,
    form MEDIUMTEXT,
    resource TEXT NOT NULL,
    UNIQUE KEY push_registrations_owner_jid_node (owner, jid, node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
"],
};

/// [`PushStore`] over a [`MysqlStore`].
pub struct MysqlPush {
    store: Arc<MysqlStore>,
}

impl MysqlPush {
    /// Creates or migrates the push table in `store`'s database.
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlPush, StorageError> {
        store.extend(MYSQL_SCHEMA).await?;
        Ok(MysqlPush { store })
    }
}

type Row = (String, String, String, Option<String>, String);

#[async_trait]
impl PushStore for MysqlPush {
    async fn all(&self) -> Result<Vec<StoredRegistration>, StorageError> {
        let sql = "SELECT owner, jid, node, form, resource FROM push_registrations ORDER BY seq";
        let rows: Vec<Row> = (self.store.conn().await?)
            .exec(sql, ())
            .await
            .map_err(my_err)?;
        Ok(rows
            .into_iter()
            .map(|(owner, jid, node, form, resource)| StoredRegistration {
                owner,
                jid,
                node,
                form,
                resource,
            })
            .collect())
    }

    async fn enable(&self, reg: StoredRegistration, max: usize) -> Result<(), StorageError> {
        // The owner's registrations locked to the commit: a concurrent enable waits, then sees
        // this one's rows, so the bound holds.
        let mut c = self.store.conn().await?;
        named_lock(&mut c, "push:", &reg.owner).await?;
        let enabled = enable_locked(&mut c, &reg, max).await;
        let released = named_unlock(&mut c, "push:", &reg.owner).await;
        enabled?;
        released
    }

    async fn disable(
        &self,
        owner: &str,
        jid: &str,
        node: Option<String>,
    ) -> Result<(), StorageError> {
        let sql = "DELETE FROM push_registrations
                   WHERE owner = ? AND jid = ? AND (? IS NULL OR node = ?)";
        (self.store.conn().await?)
            .exec_drop(sql, (owner, jid, &node, &node))
            .await
            .map_err(my_err)
    }

    async fn remove_owner(&self, owner: &str) -> Result<(), StorageError> {
        let sql = "DELETE FROM push_registrations WHERE owner = ?";
        (self.store.conn().await?)
            .exec_drop(sql, (owner,))
            .await
            .map_err(my_err)
    }
}

async fn enable_locked(
    c: &mut Conn,
    reg: &StoredRegistration,
    max: usize,
) -> Result<(), StorageError> {
    let mut tx = write(c).await?;
    // Deleted and inserted again: the newest registration is the last.
    let key = (&reg.owner, &reg.jid, &reg.node);
    let sql = "DELETE FROM push_registrations WHERE owner = ? AND jid = ? AND node = ?";
    tx.exec_drop(sql, key).await.map_err(my_err)?;
    let sql = "INSERT INTO push_registrations (owner, jid, node, form, resource)
               VALUES (?, ?, ?, ?, ?)";
    let row = (&reg.owner, &reg.jid, &reg.node, &reg.form, &reg.resource);
    tx.exec_drop(sql, row).await.map_err(my_err)?;
    let sql = "SELECT seq FROM push_registrations WHERE owner = ? ORDER BY seq DESC";
    let seqs: Vec<i64> = tx.exec(sql, (&reg.owner,)).await.map_err(my_err)?;
    if let Some(stale) = super::beyond(&seqs, max) {
        let sql = "DELETE FROM push_registrations WHERE owner = ? AND seq <= ?";
        tx.exec_drop(sql, (&reg.owner, stale))
            .await
            .map_err(my_err)?;
    }
    tx.commit().await.map_err(my_err)
}
