//! [`NodeStore`] on MariaDB: [`MysqlNodes`], the tables of the SQLite schema under the same
//! names and columns, in the deployment's database beside the core's (schema `pubsub` of
//! [`MysqlStore::extend`]).
//!
//! As on PostgreSQL: every write is one InnoDB transaction, answered after its commit; a write
//! to a node's items takes the node's row lock first (`FOR UPDATE`); a creation holds a named
//! lock on its owner (`GET_LOCK`) across its transaction, so two processes cannot both take
//! the last place of a quota. Text is `utf8mb4_nopad_bin` (exact matches, code-point order, as
//! the core's tables). An index key holds at most 3072 bytes, four a character: owners, node
//! names, item ids and subscribers' JIDs are bounded to 256 characters each (a longer one is
//! refused with an error, never cut). A trigger on `users` removes an account's nodes and
//! subscriptions with its row.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::mysql::mysql_async::prelude::{FromValue, Queryable};
use xmppd_storage::mysql::mysql_async::{Conn, Params, Row, Value};
use xmppd_storage::mysql::{exec_count, my_err, named_lock, named_unlock, write};
use xmppd_storage::{MysqlStore, Schema, StorageError};

use super::{
    groups_text, in_request_order, last_items_sql, Created, LastItem, NodeColumns, NodeStore,
    Quota, StoredItem, StoredNode, OWNERS_PER_QUERY,
};
use crate::config::{Affiliation, NodeConfig};

/// The pubsub tables on MariaDB: append, never edit. Booleans are `BOOLEAN` (`TINYINT(1)`:
/// SQLite's 0 and 1).
pub const MYSQL_SCHEMA: Schema = Schema {
    name: "pubsub",
    migrations: &[r"
CREATE TABLE pubsub_nodes (
    owner VARCHAR(256) NOT NULL,
    node VARCHAR(256) NOT NULL,
    creator VARCHAR(1024) NOT NULL,
    access VARCHAR(32) NOT NULL,
    max_items BIGINT NOT NULL,
    persist BOOLEAN NOT NULL,
    send_last VARCHAR(32) NOT NULL,
    deliver_payloads BOOLEAN NOT NULL,
    notify_retract BOOLEAN NOT NULL,
    roster_groups MEDIUMTEXT NOT NULL,
    notify_config BOOLEAN NOT NULL DEFAULT 0,
    notify_delete BOOLEAN NOT NULL DEFAULT 1,
    PRIMARY KEY (owner, node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE pubsub_items (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    owner VARCHAR(256) NOT NULL,
    node VARCHAR(256) NOT NULL,
    item VARCHAR(256) NOT NULL,
    publisher TEXT,
    payload MEDIUMTEXT NOT NULL,
    UNIQUE KEY pubsub_items_item (owner, node, item),
    KEY pubsub_items_node (owner, node, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE pubsub_subscriptions (
    owner VARCHAR(256) NOT NULL,
    node VARCHAR(256) NOT NULL,
    jid VARCHAR(256) NOT NULL,
    PRIMARY KEY (owner, node, jid),
    KEY pubsub_subscriptions_jid (jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE pubsub_affiliations (
    owner VARCHAR(256) NOT NULL,
    node VARCHAR(256) NOT NULL,
    jid VARCHAR(256) NOT NULL,
    affiliation VARCHAR(16) NOT NULL,
    PRIMARY KEY (owner, node, jid),
    KEY pubsub_affiliations_jid (jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TRIGGER pubsub_account_removed AFTER DELETE ON users FOR EACH ROW BEGIN
    DELETE FROM pubsub_items WHERE owner = CONCAT(OLD.username, '@', OLD.domain);
    DELETE FROM pubsub_subscriptions WHERE owner = CONCAT(OLD.username, '@', OLD.domain);
    DELETE FROM pubsub_affiliations WHERE owner = CONCAT(OLD.username, '@', OLD.domain);
    DELETE FROM pubsub_nodes WHERE owner = CONCAT(OLD.username, '@', OLD.domain);
    -- '0' follows '/': the full JIDs are one range of the index.
    DELETE FROM pubsub_subscriptions WHERE jid = CONCAT(OLD.username, '@', OLD.domain)
        OR (jid >= CONCAT(OLD.username, '@', OLD.domain, '/')
            AND jid < CONCAT(OLD.username, '@', OLD.domain, '0'));
    DELETE FROM pubsub_affiliations WHERE jid = CONCAT(OLD.username, '@', OLD.domain);
END;
"],
};

/// The pubsub tables of a [`MysqlStore`].
pub struct MysqlNodes {
    store: Arc<MysqlStore>,
}

impl MysqlNodes {
    /// Creates or migrates the pubsub tables in `store`'s database.
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlNodes, StorageError> {
        store.extend(MYSQL_SCHEMA).await?;
        Ok(MysqlNodes { store })
    }

    async fn rows(
        &self,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<Vec<Row>, StorageError> {
        let mut conn = self.store.conn().await?;
        conn.exec(sql, params).await.map_err(my_err)
    }

    /// The first column of each row.
    async fn strings(
        &self,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<Vec<String>, StorageError> {
        let mut conn = self.store.conn().await?;
        conn.exec(sql, params).await.map_err(my_err)
    }

    /// The (key, affiliation) pairs `sql` reads; a value xmppd did not write is left out.
    async fn affiliation_pairs(
        &self,
        sql: &str,
        first: &str,
        second: &str,
    ) -> Result<Vec<(String, Affiliation)>, StorageError> {
        let mut conn = self.store.conn().await?;
        let rows: Vec<(String, String)> = conn.exec(sql, (first, second)).await.map_err(my_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, a)| Affiliation::parse(&a).map(|a| (key, a)))
            .collect())
    }
}

/// Column `i` of `r`, as `T`.
fn col<T: FromValue>(r: &Row, i: usize) -> Result<T, StorageError> {
    match r.get_opt(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(StorageError::Backend(format!("pubsub column {i}: {e}"))),
        None => Err(StorageError::Backend(format!("pubsub column {i} missing"))),
    }
}

/// A node from the columns of [`node_columns!`] starting at `at`.
fn read_node(r: &Row, at: usize) -> Result<StoredNode, StorageError> {
    Ok(NodeColumns {
        name: col(r, at)?,
        creator: col(r, at + 1)?,
        access: col(r, at + 2)?,
        max_items: col(r, at + 3)?,
        persist: col(r, at + 4)?,
        send_last: col(r, at + 5)?,
        deliver_payloads: col(r, at + 6)?,
        notify_retract: col(r, at + 7)?,
        roster_groups: col(r, at + 8)?,
        notify_config: col(r, at + 9)?,
        notify_delete: col(r, at + 10)?,
    }
    .into_node())
}

fn read_item(r: &Row, at: usize) -> Result<StoredItem, StorageError> {
    Ok(StoredItem {
        id: col(r, at)?,
        publisher: col(r, at + 1)?,
        payload: col(r, at + 2)?,
    })
}

/// `n` placeholders, comma-separated.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Takes the row lock of `node`, held to the commit: the writes to its items are serialised.
async fn lock_node(q: &mut impl Queryable, owner: &str, node: &str) -> Result<(), StorageError> {
    q.exec_drop(
        "SELECT 1 FROM pubsub_nodes WHERE owner = ? AND node = ? FOR UPDATE",
        (owner, node),
    )
    .await
    .map_err(my_err)
}

/// Keeps the newest `keep` items of a node: MariaDB takes no `LIMIT` in an `IN` subquery, so
/// the oldest sequence number to drop is read first.
async fn trim(
    q: &mut impl Queryable,
    owner: &str,
    node: &str,
    keep: u32,
) -> Result<(), StorageError> {
    let cut: Option<i64> = q
        .exec_first(
            "SELECT seq FROM pubsub_items WHERE owner = ? AND node = ? \
             ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (owner, node, keep),
        )
        .await
        .map_err(my_err)?;
    if let Some(cut) = cut {
        q.exec_drop(
            "DELETE FROM pubsub_items WHERE owner = ? AND node = ? AND seq <= ?",
            (owner, node, cut),
        )
        .await
        .map_err(my_err)?;
    }
    Ok(())
}

/// Counts the owner's nodes and creates `node` within `quota`, on a connection that holds the
/// owner's lock.
async fn create_locked(
    conn: &mut Conn,
    owner: &str,
    node: &StoredNode,
    quota: Quota,
) -> Result<Created, StorageError> {
    let mut tx = write(conn).await?;
    let counts: Option<(i64, i64, i64)> = tx
        .exec_first(
            "SELECT COALESCE(SUM(node = ?), 0), COUNT(*), COALESCE(SUM(creator = ?), 0) \
             FROM pubsub_nodes WHERE owner = ?",
            (&node.name, &node.creator, owner),
        )
        .await
        .map_err(my_err)?;
    let (exists, of_owner, of_creator) = counts.unwrap_or_default();
    let as_count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    if exists > 0 {
        return Ok(Created::Exists);
    }
    if of_owner >= as_count(quota.per_owner) {
        return Ok(Created::OwnerFull);
    }
    if of_creator >= as_count(quota.per_creator) {
        return Ok(Created::CreatorFull);
    }
    let cfg = &node.config;
    tx.exec_drop(
        "INSERT INTO pubsub_nodes (owner, node, creator, access, max_items, persist, \
         send_last, deliver_payloads, notify_retract, roster_groups, notify_config, \
         notify_delete) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            owner,
            &node.name,
            &node.creator,
            cfg.access.as_str(),
            cfg.max_items,
            cfg.persist_items,
            cfg.send_last.as_str(),
            cfg.deliver_payloads,
            cfg.notify_retract,
            groups_text(cfg),
            cfg.notify_config,
            cfg.notify_delete,
        ),
    )
    .await
    .map_err(my_err)?;
    tx.commit().await.map_err(my_err)?;
    Ok(Created::Created)
}

#[async_trait]
impl NodeStore for MysqlNodes {
    async fn node(&self, owner: &str, node: &str) -> Result<Option<StoredNode>, StorageError> {
        let rows = self
            .rows(
                concat!(
                    "SELECT ",
                    node_columns!(),
                    " FROM pubsub_nodes WHERE owner = ? AND node = ?"
                ),
                (owner, node),
            )
            .await?;
        rows.first().map(|r| read_node(r, 0)).transpose()
    }

    async fn nodes(&self, owner: &str) -> Result<Vec<StoredNode>, StorageError> {
        let rows = self
            .rows(
                concat!(
                    "SELECT ",
                    node_columns!(),
                    " FROM pubsub_nodes WHERE owner = ? ORDER BY node"
                ),
                (owner,),
            )
            .await?;
        rows.iter().map(|r| read_node(r, 0)).collect()
    }

    async fn create(
        &self,
        owner: &str,
        node: StoredNode,
        quota: Quota,
    ) -> Result<Created, StorageError> {
        let mut conn = self.store.conn().await?;
        named_lock(&mut conn, "pubsub:", owner).await?;
        let created = create_locked(&mut conn, owner, &node, quota).await;
        let released = named_unlock(&mut conn, "pubsub:", owner).await;
        let created = created?;
        released?;
        Ok(created)
    }

    async fn configure(
        &self,
        owner: &str,
        node: &str,
        cfg: NodeConfig,
    ) -> Result<bool, StorageError> {
        let mut conn = self.store.conn().await?;
        let mut tx = write(&mut conn).await?;
        // Found, not changed: a configuration saved as it was still counts.
        let found: Option<i64> = tx
            .exec_first(
                "SELECT 1 FROM pubsub_nodes WHERE owner = ? AND node = ? FOR UPDATE",
                (owner, node),
            )
            .await
            .map_err(my_err)?;
        tx.exec_drop(
            "UPDATE pubsub_nodes SET access = ?, max_items = ?, persist = ?, send_last = ?, \
             deliver_payloads = ?, notify_retract = ?, roster_groups = ?, notify_config = ?, \
             notify_delete = ? WHERE owner = ? AND node = ?",
            (
                cfg.access.as_str(),
                cfg.max_items,
                cfg.persist_items,
                cfg.send_last.as_str(),
                cfg.deliver_payloads,
                cfg.notify_retract,
                groups_text(&cfg),
                cfg.notify_config,
                cfg.notify_delete,
                owner,
                node,
            ),
        )
        .await
        .map_err(my_err)?;
        trim(&mut tx, owner, node, cfg.kept_items()).await?;
        tx.commit().await.map_err(my_err)?;
        Ok(found.is_some())
    }

    async fn delete(&self, owner: &str, node: &str) -> Result<bool, StorageError> {
        let mut conn = self.store.conn().await?;
        let mut tx = write(&mut conn).await?;
        lock_node(&mut tx, owner, node).await?;
        for sql in [
            "DELETE FROM pubsub_items WHERE owner = ? AND node = ?",
            "DELETE FROM pubsub_subscriptions WHERE owner = ? AND node = ?",
            "DELETE FROM pubsub_affiliations WHERE owner = ? AND node = ?",
        ] {
            tx.exec_drop(sql, (owner, node)).await.map_err(my_err)?;
        }
        let n = exec_count(
            &mut tx,
            "DELETE FROM pubsub_nodes WHERE owner = ? AND node = ?",
            (owner, node),
        )
        .await?;
        tx.commit().await.map_err(my_err)?;
        Ok(n == 1)
    }

    async fn publish(
        &self,
        owner: &str,
        node: &str,
        item: StoredItem,
        keep: u32,
    ) -> Result<(), StorageError> {
        let mut conn = self.store.conn().await?;
        let mut tx = write(&mut conn).await?;
        lock_node(&mut tx, owner, node).await?;
        tx.exec_drop(
            "DELETE FROM pubsub_items WHERE owner = ? AND node = ? AND item = ?",
            (owner, node, &item.id),
        )
        .await
        .map_err(my_err)?;
        tx.exec_drop(
            "INSERT INTO pubsub_items (owner, node, item, publisher, payload) \
             VALUES (?, ?, ?, ?, ?)",
            (owner, node, &item.id, &item.publisher, &item.payload),
        )
        .await
        .map_err(my_err)?;
        trim(&mut tx, owner, node, keep).await?;
        tx.commit().await.map_err(my_err)
    }

    async fn items(
        &self,
        owner: &str,
        node: &str,
        max: Option<u32>,
    ) -> Result<Vec<StoredItem>, StorageError> {
        let limit = max.map_or(u64::MAX, u64::from);
        let rows = self
            .rows(
                "SELECT item, publisher, payload FROM pubsub_items WHERE owner = ? \
                 AND node = ? ORDER BY seq DESC LIMIT ?",
                (owner, node, limit),
            )
            .await?;
        rows.iter().rev().map(|r| read_item(r, 0)).collect()
    }

    async fn items_by_id(
        &self,
        owner: &str,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<StoredItem>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT item, publisher, payload FROM pubsub_items WHERE owner = ? AND node = ? \
             AND item IN ({}) ORDER BY seq",
            placeholders(ids.len())
        );
        let args = [Value::from(owner), Value::from(node)]
            .into_iter()
            .chain(ids.into_iter().map(Value::from))
            .collect();
        let rows = self.rows(&sql, Params::Positional(args)).await?;
        rows.iter().map(|r| read_item(r, 0)).collect()
    }

    async fn retract(
        &self,
        owner: &str,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<String>, StorageError> {
        let mut conn = self.store.conn().await?;
        let mut tx = write(&mut conn).await?;
        let mut removed = Vec::new();
        for id in &ids {
            let n = exec_count(
                &mut tx,
                "DELETE FROM pubsub_items WHERE owner = ? AND node = ? AND item = ?",
                (owner, node, id),
            )
            .await?;
            if n == 1 {
                removed.push(id.clone());
            }
        }
        tx.commit().await.map_err(my_err)?;
        Ok(in_request_order(ids, &removed))
    }

    async fn purge(&self, owner: &str, node: &str) -> Result<(), StorageError> {
        let mut conn = self.store.conn().await?;
        conn.exec_drop(
            "DELETE FROM pubsub_items WHERE owner = ? AND node = ?",
            (owner, node),
        )
        .await
        .map_err(my_err)
    }

    async fn set_subscription(
        &self,
        owner: &str,
        node: &str,
        jid: &str,
        subscribed: bool,
    ) -> Result<bool, StorageError> {
        // Not `INSERT IGNORE`: it would turn a JID too long for its column into a warning.
        let sql = if subscribed {
            "INSERT INTO pubsub_subscriptions (owner, node, jid) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE jid = jid"
        } else {
            "DELETE FROM pubsub_subscriptions WHERE owner = ? AND node = ? AND jid = ?"
        };
        let mut conn = self.store.conn().await?;
        Ok(exec_count(&mut conn, sql, (owner, node, jid)).await? == 1)
    }

    async fn subscribers(&self, owner: &str, node: &str) -> Result<Vec<String>, StorageError> {
        self.strings(
            "SELECT jid FROM pubsub_subscriptions WHERE owner = ? AND node = ? ORDER BY jid",
            (owner, node),
        )
        .await
    }

    async fn subscriptions_of(&self, owner: &str, jid: &str) -> Result<Vec<String>, StorageError> {
        self.strings(
            "SELECT node FROM pubsub_subscriptions WHERE owner = ? AND jid = ? ORDER BY node",
            (owner, jid),
        )
        .await
    }

    async fn last_items(
        &self,
        owners: Vec<String>,
        nodes: Vec<String>,
        jid: &str,
    ) -> Result<Vec<LastItem>, StorageError> {
        if owners.is_empty() || nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.store.conn().await?;
        let mut out = Vec::new();
        for chunk in owners.chunks(OWNERS_PER_QUERY) {
            let sql = last_items_sql(chunk.len(), nodes.len(), |_| "?".into());
            let args = std::iter::once(jid)
                .chain(chunk.iter().map(String::as_str))
                .chain(nodes.iter().map(String::as_str))
                .map(Value::from)
                .collect();
            let rows: Vec<Row> = conn
                .exec(sql, Params::Positional(args))
                .await
                .map_err(my_err)?;
            for r in &rows {
                out.push(LastItem {
                    node: read_node(r, 0)?,
                    owner: col(r, 11)?,
                    item: read_item(r, 12)?,
                    affiliation: col::<Option<String>>(r, 15)?.and_then(|a| Affiliation::parse(&a)),
                });
            }
        }
        Ok(out)
    }

    async fn affiliations(
        &self,
        owner: &str,
        node: &str,
    ) -> Result<Vec<(String, Affiliation)>, StorageError> {
        self.affiliation_pairs(
            "SELECT jid, affiliation FROM pubsub_affiliations \
             WHERE owner = ? AND node = ? ORDER BY jid",
            owner,
            node,
        )
        .await
    }

    async fn affiliations_of(
        &self,
        owner: &str,
        jid: &str,
    ) -> Result<Vec<(String, Affiliation)>, StorageError> {
        self.affiliation_pairs(
            "SELECT node, affiliation FROM pubsub_affiliations \
             WHERE owner = ? AND jid = ? ORDER BY node",
            owner,
            jid,
        )
        .await
    }

    async fn set_affiliations(
        &self,
        owner: &str,
        node: &str,
        changes: Vec<(String, Option<Affiliation>)>,
    ) -> Result<(), StorageError> {
        let mut conn = self.store.conn().await?;
        let mut tx = write(&mut conn).await?;
        for (jid, affiliation) in &changes {
            let Some(affiliation) = affiliation else {
                tx.exec_drop(
                    "DELETE FROM pubsub_affiliations WHERE owner = ? AND node = ? AND jid = ?",
                    (owner, node, jid),
                )
                .await
                .map_err(my_err)?;
                continue;
            };
            tx.exec_drop(
                "INSERT INTO pubsub_affiliations (owner, node, jid, affiliation) \
                 VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE affiliation = VALUES(affiliation)",
                (owner, node, jid, affiliation.as_str()),
            )
            .await
            .map_err(my_err)?;
            if *affiliation == Affiliation::Outcast {
                // '0' follows '/': the full JIDs of `jid` are one range.
                tx.exec_drop(
                    "DELETE FROM pubsub_subscriptions WHERE owner = ? AND node = ? \
                     AND (jid = ? OR (jid >= CONCAT(?, '/') AND jid < CONCAT(?, '0')))",
                    (owner, node, jid, jid, jid),
                )
                .await
                .map_err(my_err)?;
            }
        }
        tx.commit().await.map_err(my_err)
    }
}
