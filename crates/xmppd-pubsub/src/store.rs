//! Where nodes, items and subscriptions are kept: [`NodeStore`], and [`SqliteNodes`], its tables in the server's
//! SQLite database (schema `pubsub`, through [`SqliteStore::extend`]), written through the
//! store's group-commit writer, so a change is durable when its call returns.
//!
//! An owner is an account's bare JID (its personal eventing service) or the domain of the
//! pubsub service.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use xmppd_storage::{Schema, SqliteStore, StorageError};

use crate::config::{AccessModel, NodeConfig, SendLast};

/// Migrations of the pubsub tables: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "pubsub",
    migrations: &[r"
CREATE TABLE pubsub_nodes (
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    creator TEXT NOT NULL,
    access TEXT NOT NULL,
    max_items INTEGER NOT NULL,
    persist INTEGER NOT NULL,
    send_last TEXT NOT NULL,
    deliver_payloads INTEGER NOT NULL,
    notify_retract INTEGER NOT NULL,
    roster_groups TEXT NOT NULL,
    PRIMARY KEY (owner, node)
);
CREATE TABLE pubsub_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    item TEXT NOT NULL,
    publisher TEXT,
    payload TEXT NOT NULL,
    UNIQUE (owner, node, item)
);
CREATE INDEX pubsub_items_node ON pubsub_items (owner, node, seq);
CREATE TABLE pubsub_subscriptions (
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (owner, node, jid)
);
CREATE INDEX pubsub_subscriptions_jid ON pubsub_subscriptions (jid);
"],
};

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNode {
    pub name: String,
    /// The bare JID that created it: the node's owner (XEP-0060 §4.1).
    pub creator: String,
    pub config: NodeConfig,
}

/// An item as stored: its payload serialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    pub id: String,
    pub publisher: Option<String>,
    pub payload: String,
}

/// The pubsub tables of a [`SqliteStore`].
pub struct SqliteNodes {
    store: Arc<SqliteStore>,
}

fn read_node(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredNode> {
    let groups: String = r.get(8)?;
    Ok(StoredNode {
        name: r.get(0)?,
        creator: r.get(1)?,
        config: NodeConfig {
            access: AccessModel::parse(&r.get::<_, String>(2)?).unwrap_or(AccessModel::Whitelist),
            max_items: r.get(3)?,
            persist_items: r.get(4)?,
            send_last: SendLast::parse(&r.get::<_, String>(5)?).unwrap_or(SendLast::Never),
            deliver_payloads: r.get(6)?,
            notify_retract: r.get(7)?,
            roster_groups: groups
                .split('\n')
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect(),
        },
    })
}

const NODE_COLUMNS: &str = "node, creator, access, max_items, persist, send_last, \
                            deliver_payloads, notify_retract, roster_groups";

/// Keeps the newest `keep` items of a node.
fn trim(c: &Connection, owner: &str, node: &str, keep: u32) -> rusqlite::Result<()> {
    c.prepare_cached(
        "DELETE FROM pubsub_items WHERE owner = ?1 AND node = ?2 AND seq NOT IN \
         (SELECT seq FROM pubsub_items WHERE owner = ?1 AND node = ?2 ORDER BY seq DESC LIMIT ?3)",
    )?
    .execute(params![owner, node, keep])?;
    Ok(())
}

fn read_items(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Vec<StoredItem>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(StoredItem {
            id: r.get(0)?,
            publisher: r.get(1)?,
            payload: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Nodes, items and subscriptions by owner: the storage seam of publish-subscribe.
#[async_trait]
pub trait NodeStore: Send + Sync {
    async fn node(&self, owner: &str, node: &str) -> Result<Option<StoredNode>, StorageError>;
    /// Every node of `owner`, by name.
    async fn nodes(&self, owner: &str) -> Result<Vec<StoredNode>, StorageError>;
    /// Creates `node` unless `owner` has it already or has `max_nodes` nodes; says which.
    async fn create(
        &self,
        owner: &str,
        node: StoredNode,
        max_nodes: usize,
    ) -> Result<Created, StorageError>;
    /// Replaces the configuration of `node`, and drops the items beyond what it keeps now.
    async fn configure(
        &self,
        owner: &str,
        node: &str,
        cfg: NodeConfig,
    ) -> Result<bool, StorageError>;
    /// Deletes `node` with its items and subscriptions; false if there was none.
    async fn delete(&self, owner: &str, node: &str) -> Result<bool, StorageError>;
    /// Stores `item` as the newest of `node` (replacing one with its id), then keeps the
    /// newest `keep`.
    async fn publish(
        &self,
        owner: &str,
        node: &str,
        item: StoredItem,
        keep: u32,
    ) -> Result<(), StorageError>;
    /// The newest `max` items of `node` (all without), oldest first.
    async fn items(
        &self,
        owner: &str,
        node: &str,
        max: Option<u32>,
    ) -> Result<Vec<StoredItem>, StorageError>;
    /// The items of `node` among `ids`, oldest first.
    async fn items_by_id(
        &self,
        owner: &str,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<StoredItem>, StorageError>;
    /// Removes the items `ids` of `node`; returns those that were there.
    async fn retract(
        &self,
        owner: &str,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<String>, StorageError>;
    /// Removes every item of `node`.
    async fn purge(&self, owner: &str, node: &str) -> Result<(), StorageError>;
    /// Subscribes (or with `subscribed` false unsubscribes) `jid` to `node`; returns whether
    /// that changed anything.
    async fn set_subscription(
        &self,
        owner: &str,
        node: &str,
        jid: &str,
        subscribed: bool,
    ) -> Result<bool, StorageError>;
    /// The JIDs subscribed to `node`.
    async fn subscribers(&self, owner: &str, node: &str) -> Result<Vec<String>, StorageError>;
    /// The nodes of `owner` that `jid` is subscribed to.
    async fn subscriptions_of(&self, owner: &str, jid: &str) -> Result<Vec<String>, StorageError>;
    /// Forgets an account: its own nodes, and its subscriptions to anyone's.
    async fn remove_account(&self, jid: &str) -> Result<(), StorageError>;
}

impl SqliteNodes {
    /// Creates or migrates the pubsub tables in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteNodes, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqliteNodes { store })
    }
}

#[async_trait]
impl NodeStore for SqliteNodes {
    async fn node(&self, owner: &str, node: &str) -> Result<Option<StoredNode>, StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .read(move |c| {
                let sql = format!(
                    "SELECT {NODE_COLUMNS} FROM pubsub_nodes WHERE owner = ?1 AND node = ?2"
                );
                Ok(c.prepare_cached(&sql)?
                    .query_row(params![owner, node], read_node)
                    .optional()?)
            })
            .await
    }

    async fn nodes(&self, owner: &str) -> Result<Vec<StoredNode>, StorageError> {
        let owner = owner.to_owned();
        self.store
            .read(move |c| {
                let sql = format!(
                    "SELECT {NODE_COLUMNS} FROM pubsub_nodes WHERE owner = ?1 ORDER BY node"
                );
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![owner], read_node)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn create(
        &self,
        owner: &str,
        node: StoredNode,
        max_nodes: usize,
    ) -> Result<Created, StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                let count: i64 = c
                    .prepare_cached("SELECT COUNT(*) FROM pubsub_nodes WHERE owner = ?1")?
                    .query_row(params![owner], |r| r.get(0))?;
                let cfg = &node.config;
                let n = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO pubsub_nodes (owner, node, creator, access, \
                         max_items, persist, send_last, deliver_payloads, notify_retract, \
                         roster_groups) \
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 WHERE ?11",
                    )?
                    .execute(params![
                        owner,
                        node.name,
                        node.creator,
                        cfg.access.as_str(),
                        cfg.max_items,
                        cfg.persist_items,
                        cfg.send_last.as_str(),
                        cfg.deliver_payloads,
                        cfg.notify_retract,
                        cfg.roster_groups.join("\n"),
                        (count as usize) < max_nodes,
                    ])?;
                Ok(match n {
                    1 => Created::Created,
                    _ if count as usize >= max_nodes => Created::TooMany,
                    _ => Created::Exists,
                })
            })
            .await
    }

    async fn configure(
        &self,
        owner: &str,
        node: &str,
        cfg: NodeConfig,
    ) -> Result<bool, StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE pubsub_nodes SET access = ?3, max_items = ?4, persist = ?5, \
                         send_last = ?6, deliver_payloads = ?7, notify_retract = ?8, \
                         roster_groups = ?9 WHERE owner = ?1 AND node = ?2",
                    )?
                    .execute(params![
                        owner,
                        node,
                        cfg.access.as_str(),
                        cfg.max_items,
                        cfg.persist_items,
                        cfg.send_last.as_str(),
                        cfg.deliver_payloads,
                        cfg.notify_retract,
                        cfg.roster_groups.join("\n"),
                    ])?;
                trim(c, &owner, &node, cfg.kept_items())?;
                Ok(n == 1)
            })
            .await
    }

    async fn delete(&self, owner: &str, node: &str) -> Result<bool, StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .write(move |c| {
                for table in ["pubsub_items", "pubsub_subscriptions"] {
                    c.execute(
                        &format!("DELETE FROM {table} WHERE owner = ?1 AND node = ?2"),
                        params![owner, node],
                    )?;
                }
                let n = c.execute(
                    "DELETE FROM pubsub_nodes WHERE owner = ?1 AND node = ?2",
                    params![owner, node],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn publish(
        &self,
        owner: &str,
        node: &str,
        item: StoredItem,
        keep: u32,
    ) -> Result<(), StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .write(move |c| {
                c.prepare_cached(
                    "DELETE FROM pubsub_items WHERE owner = ?1 AND node = ?2 AND item = ?3",
                )?
                .execute(params![owner, node, item.id])?;
                c.prepare_cached(
                    "INSERT INTO pubsub_items (owner, node, item, publisher, payload) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    owner,
                    node,
                    item.id,
                    item.publisher,
                    item.payload
                ])?;
                trim(c, &owner, &node, keep)?;
                Ok(())
            })
            .await
    }

    async fn items(
        &self,
        owner: &str,
        node: &str,
        max: Option<u32>,
    ) -> Result<Vec<StoredItem>, StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        let limit = max.map_or(-1, i64::from);
        self.store
            .read(move |c| {
                let mut items = read_items(
                    c,
                    "SELECT item, publisher, payload FROM pubsub_items WHERE owner = ?1 AND \
                     node = ?2 ORDER BY seq DESC LIMIT ?3",
                    params![owner, node, limit],
                )?;
                items.reverse();
                Ok(items)
            })
            .await
    }

    async fn items_by_id(
        &self,
        owner: &str,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<StoredItem>, StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .read(move |c| {
                let mut out = Vec::new();
                let mut stmt = c.prepare_cached(
                    "SELECT seq, item, publisher, payload FROM pubsub_items \
                     WHERE owner = ?1 AND node = ?2 AND item = ?3",
                )?;
                for id in ids {
                    let row = stmt
                        .query_row(params![owner, node, id], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                StoredItem {
                                    id: r.get(1)?,
                                    publisher: r.get(2)?,
                                    payload: r.get(3)?,
                                },
                            ))
                        })
                        .optional()?;
                    if let Some((seq, item)) = row {
                        out.push((seq, item));
                    }
                }
                out.sort_by_key(|(seq, _)| *seq);
                out.dedup_by_key(|(seq, _)| *seq);
                Ok(out.into_iter().map(|(_, i)| i).collect())
            })
            .await
    }

    async fn retract(
        &self,
        owner: &str,
        node: &str,
        ids: Vec<String>,
    ) -> Result<Vec<String>, StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "DELETE FROM pubsub_items WHERE owner = ?1 AND node = ?2 AND item = ?3",
                )?;
                let mut removed = Vec::new();
                for id in ids {
                    if stmt.execute(params![owner, node, id])? == 1 {
                        removed.push(id);
                    }
                }
                Ok(removed)
            })
            .await
    }

    async fn purge(&self, owner: &str, node: &str) -> Result<(), StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .write(move |c| {
                c.execute(
                    "DELETE FROM pubsub_items WHERE owner = ?1 AND node = ?2",
                    params![owner, node],
                )?;
                Ok(())
            })
            .await
    }

    async fn set_subscription(
        &self,
        owner: &str,
        node: &str,
        jid: &str,
        subscribed: bool,
    ) -> Result<bool, StorageError> {
        let (owner, node, jid) = (owner.to_owned(), node.to_owned(), jid.to_owned());
        self.store
            .write(move |c| {
                let sql = if subscribed {
                    "INSERT OR IGNORE INTO pubsub_subscriptions (owner, node, jid) \
                     VALUES (?1, ?2, ?3)"
                } else {
                    "DELETE FROM pubsub_subscriptions WHERE owner = ?1 AND node = ?2 AND jid = ?3"
                };
                Ok(c.prepare_cached(sql)?.execute(params![owner, node, jid])? == 1)
            })
            .await
    }

    async fn subscribers(&self, owner: &str, node: &str) -> Result<Vec<String>, StorageError> {
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT jid FROM pubsub_subscriptions WHERE owner = ?1 AND node = ?2 \
                     ORDER BY jid",
                )?;
                let rows = stmt.query_map(params![owner, node], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .await
    }

    async fn subscriptions_of(&self, owner: &str, jid: &str) -> Result<Vec<String>, StorageError> {
        let (owner, jid) = (owner.to_owned(), jid.to_owned());
        self.store
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT node FROM pubsub_subscriptions WHERE owner = ?1 AND jid = ?2 \
                     ORDER BY node",
                )?;
                let rows = stmt.query_map(params![owner, jid], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .await
    }

    async fn remove_account(&self, jid: &str) -> Result<(), StorageError> {
        let jid = jid.to_owned();
        self.store
            .write(move |c| {
                for table in ["pubsub_items", "pubsub_subscriptions", "pubsub_nodes"] {
                    c.execute(
                        &format!("DELETE FROM {table} WHERE owner = ?1"),
                        params![jid],
                    )?;
                }
                c.execute(
                    "DELETE FROM pubsub_subscriptions WHERE jid = ?1",
                    params![jid],
                )?;
                Ok(())
            })
            .await
    }
}

/// What [`NodeStore::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    Exists,
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> StoredItem {
        StoredItem {
            id: id.into(),
            publisher: Some("a@x".into()),
            payload: format!("<p xmlns='urn:t'>{id}</p>"),
        }
    }

    fn node(name: &str) -> StoredNode {
        StoredNode {
            name: name.into(),
            creator: "a@x".into(),
            config: NodeConfig::pep_default(),
        }
    }

    #[tokio::test]
    async fn items_are_kept_newest_last_within_the_bound_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sqlite");
        {
            let nodes = SqliteNodes::open(Arc::new(SqliteStore::open(&path).unwrap()))
                .await
                .unwrap();
            assert_eq!(
                nodes.create("a@x", node("n"), 10).await.unwrap(),
                Created::Created
            );
            assert_eq!(
                nodes.create("a@x", node("n"), 10).await.unwrap(),
                Created::Exists
            );
            assert_eq!(
                nodes.create("a@x", node("m"), 1).await.unwrap(),
                Created::TooMany
            );
            for id in ["1", "2", "3", "2"] {
                nodes.publish("a@x", "n", item(id), 3).await.unwrap();
            }
            nodes.publish("a@x", "n", item("4"), 3).await.unwrap();
        }
        let nodes = SqliteNodes::open(Arc::new(SqliteStore::open(&path).unwrap()))
            .await
            .unwrap();
        let ids = |v: Vec<StoredItem>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(
            ids(nodes.items("a@x", "n", None).await.unwrap()),
            ["3", "2", "4"]
        );
        assert_eq!(ids(nodes.items("a@x", "n", Some(1)).await.unwrap()), ["4"]);
        let by_id = nodes
            .items_by_id("a@x", "n", vec!["4".into(), "3".into(), "9".into()])
            .await
            .unwrap();
        assert_eq!(ids(by_id), ["3", "4"]);
        assert_eq!(
            nodes
                .retract("a@x", "n", vec!["3".into(), "9".into()])
                .await
                .unwrap(),
            ["3"]
        );
        nodes
            .set_subscription("a@x", "n", "b@x", true)
            .await
            .unwrap();
        assert_eq!(nodes.subscribers("a@x", "n").await.unwrap(), ["b@x"]);
        nodes.purge("a@x", "n").await.unwrap();
        assert!(nodes.items("a@x", "n", None).await.unwrap().is_empty());
        assert!(nodes.delete("a@x", "n").await.unwrap());
        assert!(nodes.node("a@x", "n").await.unwrap().is_none());
        assert!(nodes.subscribers("a@x", "n").await.unwrap().is_empty());
    }
}
