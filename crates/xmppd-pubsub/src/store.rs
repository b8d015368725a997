//! Where nodes, items and subscriptions are kept: [`NodeStore`], and [`SqliteNodes`], its
//! tables in the server's SQLite database (schema `pubsub`, through [`SqliteStore::extend`]),
//! written through the store's group-commit writer, so a change is durable when its call
//! returns. The same tables, under the same names and columns, are on PostgreSQL (`PgNodes`)
//! and MariaDB (`MysqlNodes`) behind the features `postgres` and `mysql`; the contract all
//! three keep is the suite `tests/store.rs`.
//!
//! An owner is an account's bare JID (its personal eventing service) or the domain of the
//! pubsub service.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use xmppd_storage::{Schema, SqliteStore, StorageError};

use crate::config::{AccessModel, Affiliation, NodeConfig, SendLast};

/// Migrations of the pubsub tables: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "pubsub",
    migrations: &[
        r"
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
",
        // An account's nodes, items and subscriptions (by its bare JID or a full JID of
        // it) go with its row, however it is removed: in band, by the running server's
        // admin socket, or by the command line with the server stopped. '0' follows '/', so
        // the full JIDs are one range of the index.
        r"
CREATE TRIGGER pubsub_account_removed AFTER DELETE ON users BEGIN
    DELETE FROM pubsub_items WHERE owner = old.user || '@' || old.domain;
    DELETE FROM pubsub_subscriptions WHERE owner = old.user || '@' || old.domain;
    DELETE FROM pubsub_nodes WHERE owner = old.user || '@' || old.domain;
    DELETE FROM pubsub_subscriptions WHERE jid = old.user || '@' || old.domain
        OR (jid >= old.user || '@' || old.domain || '/'
            AND jid < old.user || '@' || old.domain || '0');
END;
",
        // Affiliations (XEP-0060 §4.1) other than the creator's ownership, of bare JIDs;
        // and the notifications of configuration changes and deletion, as options.
        r"
ALTER TABLE pubsub_nodes ADD COLUMN notify_config INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pubsub_nodes ADD COLUMN notify_delete INTEGER NOT NULL DEFAULT 1;
CREATE TABLE pubsub_affiliations (
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    PRIMARY KEY (owner, node, jid)
);
CREATE INDEX pubsub_affiliations_jid ON pubsub_affiliations (jid);
DROP TRIGGER pubsub_account_removed;
CREATE TRIGGER pubsub_account_removed AFTER DELETE ON users BEGIN
    DELETE FROM pubsub_items WHERE owner = old.user || '@' || old.domain;
    DELETE FROM pubsub_subscriptions WHERE owner = old.user || '@' || old.domain;
    DELETE FROM pubsub_affiliations WHERE owner = old.user || '@' || old.domain;
    DELETE FROM pubsub_nodes WHERE owner = old.user || '@' || old.domain;
    DELETE FROM pubsub_subscriptions WHERE jid = old.user || '@' || old.domain
        OR (jid >= old.user || '@' || old.domain || '/'
            AND jid < old.user || '@' || old.domain || '0');
    DELETE FROM pubsub_affiliations WHERE jid = old.user || '@' || old.domain;
END;
",
    ],
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

/// The newest item of a node, with its owner and the affiliation of the entity asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastItem {
    pub owner: String,
    pub node: StoredNode,
    pub item: StoredItem,
    pub affiliation: Option<Affiliation>,
}

/// Owners per query of [`NodeStore::last_items`], well within SQLite's bound on parameters.
const OWNERS_PER_QUERY: usize = 500;

/// The pubsub tables of a [`SqliteStore`].
pub struct SqliteNodes {
    store: Arc<SqliteStore>,
}

/// A node's row of `pubsub_nodes` as every engine stores it (the owner apart).
struct NodeColumns {
    name: String,
    creator: String,
    access: String,
    max_items: i64,
    persist: bool,
    send_last: String,
    deliver_payloads: bool,
    notify_retract: bool,
    /// One group a line.
    roster_groups: String,
    notify_config: bool,
    notify_delete: bool,
}

impl NodeColumns {
    /// A value xmppd did not write reads as the most restrictive one.
    fn into_node(self) -> StoredNode {
        StoredNode {
            name: self.name,
            creator: self.creator,
            config: NodeConfig {
                access: AccessModel::parse(&self.access).unwrap_or(AccessModel::Whitelist),
                max_items: u32::try_from(self.max_items.max(0)).unwrap_or(u32::MAX),
                persist_items: self.persist,
                send_last: SendLast::parse(&self.send_last).unwrap_or(SendLast::Never),
                deliver_payloads: self.deliver_payloads,
                notify_retract: self.notify_retract,
                notify_config: self.notify_config,
                notify_delete: self.notify_delete,
                roster_groups: (self.roster_groups.split('\n'))
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect(),
            },
        }
    }
}

/// The stored form of a node's roster groups: one a line.
fn groups_text(cfg: &NodeConfig) -> String {
    cfg.roster_groups.join("\n")
}

fn read_node(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredNode> {
    Ok(NodeColumns {
        name: r.get(0)?,
        creator: r.get(1)?,
        access: r.get(2)?,
        max_items: r.get(3)?,
        persist: r.get(4)?,
        send_last: r.get(5)?,
        deliver_payloads: r.get(6)?,
        notify_retract: r.get(7)?,
        roster_groups: r.get(8)?,
        notify_config: r.get(9)?,
        notify_delete: r.get(10)?,
    }
    .into_node())
}

/// The columns of a node as [`NodeColumns`] reads them, in order (a macro, so that each
/// engine's queries are literals).
macro_rules! node_columns {
    () => {
        "node, creator, access, max_items, persist, send_last, deliver_payloads, \
         notify_retract, roster_groups, notify_config, notify_delete"
    };
    // The same, of the table aliased `n`.
    (n) => {
        "n.node, n.creator, n.access, n.max_items, n.persist, n.send_last, \
         n.deliver_payloads, n.notify_retract, n.roster_groups, n.notify_config, \
         n.notify_delete"
    };
}

const NODE_COLUMNS: &str = node_columns!();

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "mysql")]
pub use mysql::{MysqlNodes, MYSQL_SCHEMA};
#[cfg(feature = "postgres")]
pub use postgres::{PgNodes, PG_SCHEMA};

/// Keeps the newest `keep` items of a node.
fn trim(c: &Connection, owner: &str, node: &str, keep: u32) -> rusqlite::Result<()> {
    c.prepare_cached(
        "DELETE FROM pubsub_items WHERE owner = ?1 AND node = ?2 AND seq NOT IN \
         (SELECT seq FROM pubsub_items WHERE owner = ?1 AND node = ?2 ORDER BY seq DESC LIMIT ?3)",
    )?
    .execute(params![owner, node, keep])?;
    Ok(())
}

/// The first column of every row `sql` gives for `args`.
fn column<T: rusqlite::types::FromSql>(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| r.get(0))?;
    rows.collect()
}

/// (JID or node, affiliation) pairs; a value xmppd did not write is left out.
fn read_affiliations(
    c: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(String, Affiliation)>, StorageError> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value) = row?;
        out.extend(Affiliation::parse(&value).map(|a| (key, a)));
    }
    Ok(out)
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

/// The ids of `requested` that are among `removed`, each once, in the order asked (as
/// [`NodeStore::retract`] answers).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn in_request_order(requested: Vec<String>, removed: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in requested {
        if removed.contains(&id) && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// The query of [`NodeStore::last_items`] on SQLite and MariaDB: the asking JID is the first
/// parameter, then `owners` owners, then `nodes` nodes; `placeholder(i)` writes the `i`th
/// (from 1).
fn last_items_sql(owners: usize, nodes: usize, placeholder: impl Fn(usize) -> String) -> String {
    let list = |from: usize, n: usize| {
        (from..from + n)
            .map(&placeholder)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "SELECT {}, n.owner, i.item, i.publisher, i.payload, a.affiliation \
         FROM pubsub_nodes n \
         JOIN pubsub_items i ON i.seq = (SELECT MAX(seq) FROM pubsub_items \
             WHERE owner = n.owner AND node = n.node) \
         LEFT JOIN pubsub_affiliations a ON a.owner = n.owner \
             AND a.node = n.node AND a.jid = {} \
         WHERE n.send_last = 'on_sub_and_presence' \
         AND n.owner IN ({}) AND n.node IN ({})",
        node_columns!(n),
        placeholder(1),
        list(2, owners),
        list(2 + owners, nodes),
    )
}

/// Nodes, items and subscriptions by owner: the storage seam of publish-subscribe.
#[async_trait]
pub trait NodeStore: Send + Sync {
    async fn node(&self, owner: &str, node: &str) -> Result<Option<StoredNode>, StorageError>;
    /// Every node of `owner`, by name.
    async fn nodes(&self, owner: &str) -> Result<Vec<StoredNode>, StorageError>;
    /// Creates `node` unless `owner` has it already or `quota` is reached; says which.
    async fn create(
        &self,
        owner: &str,
        node: StoredNode,
        quota: Quota,
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
    /// The newest item of each node named in `nodes` of each of `owners` that sends its last
    /// item on presence (XEP-0060 §12.20 `on_sub_and_presence`), with the stored affiliation
    /// of the bare JID `jid`: one query per [`OWNERS_PER_QUERY`] owners, however many nodes.
    async fn last_items(
        &self,
        owners: Vec<String>,
        nodes: Vec<String>,
        jid: &str,
    ) -> Result<Vec<LastItem>, StorageError>;
    /// The stored affiliations of `node`, by JID (the creator's ownership is not stored).
    async fn affiliations(
        &self,
        owner: &str,
        node: &str,
    ) -> Result<Vec<(String, Affiliation)>, StorageError>;
    /// The affiliations of the bare JID `jid` with the nodes of `owner`, by node.
    async fn affiliations_of(
        &self,
        owner: &str,
        jid: &str,
    ) -> Result<Vec<(String, Affiliation)>, StorageError>;
    /// Sets (or with `None` removes) the affiliation of each bare JID with `node`, at once;
    /// an outcast's subscriptions to the node (of the bare JID and its full JIDs) go.
    async fn set_affiliations(
        &self,
        owner: &str,
        node: &str,
        changes: Vec<(String, Option<Affiliation>)>,
    ) -> Result<(), StorageError>;
}

impl SqliteNodes {
    /// Creates or migrates the pubsub tables in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteNodes, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqliteNodes { store })
    }

    /// The one column `sql` reads, given `?1` and `?2`.
    async fn strings(
        &self,
        sql: &'static str,
        first: &str,
        second: &str,
    ) -> Result<Vec<String>, StorageError> {
        let (first, second) = (first.to_owned(), second.to_owned());
        (self.store)
            .read(move |c| Ok(column(c, sql, params![first, second])?))
            .await
    }

    /// The (key, affiliation) pairs `sql` reads, given `?1` and `?2`.
    async fn affiliation_pairs(
        &self,
        sql: &'static str,
        first: &str,
        second: &str,
    ) -> Result<Vec<(String, Affiliation)>, StorageError> {
        let (first, second) = (first.to_owned(), second.to_owned());
        (self.store)
            .read(move |c| read_affiliations(c, sql, params![first, second]))
            .await
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
        quota: Quota,
    ) -> Result<Created, StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                let count = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<usize> {
                    let n: i64 = c.prepare_cached(sql)?.query_row(args, |r| r.get(0))?;
                    Ok(n as usize)
                };
                let exists = count(
                    "SELECT COUNT(*) FROM pubsub_nodes WHERE owner = ?1 AND node = ?2",
                    params![owner, node.name],
                )? > 0;
                if exists {
                    return Ok(Created::Exists);
                }
                if count(
                    "SELECT COUNT(*) FROM pubsub_nodes WHERE owner = ?1",
                    params![owner],
                )? >= quota.per_owner
                {
                    return Ok(Created::OwnerFull);
                }
                if count(
                    "SELECT COUNT(*) FROM pubsub_nodes WHERE owner = ?1 AND creator = ?2",
                    params![owner, node.creator],
                )? >= quota.per_creator
                {
                    return Ok(Created::CreatorFull);
                }
                let cfg = &node.config;
                c.prepare_cached(
                    "INSERT INTO pubsub_nodes (owner, node, creator, access, \
                         max_items, persist, send_last, deliver_payloads, notify_retract, \
                         roster_groups, notify_config, notify_delete) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
                    groups_text(cfg),
                    cfg.notify_config,
                    cfg.notify_delete,
                ])?;
                Ok(Created::Created)
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
                         roster_groups = ?9, notify_config = ?10, notify_delete = ?11 \
                         WHERE owner = ?1 AND node = ?2",
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
                        groups_text(&cfg),
                        cfg.notify_config,
                        cfg.notify_delete,
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
                for table in [
                    "pubsub_items",
                    "pubsub_subscriptions",
                    "pubsub_affiliations",
                ] {
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
        self.strings(
            "SELECT jid FROM pubsub_subscriptions WHERE owner = ?1 AND node = ?2 ORDER BY jid",
            owner,
            node,
        )
        .await
    }

    async fn subscriptions_of(&self, owner: &str, jid: &str) -> Result<Vec<String>, StorageError> {
        self.strings(
            "SELECT node FROM pubsub_subscriptions WHERE owner = ?1 AND jid = ?2 ORDER BY node",
            owner,
            jid,
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
        let jid = jid.to_owned();
        self.store
            .read(move |c| {
                let mut out = Vec::new();
                for chunk in owners.chunks(OWNERS_PER_QUERY) {
                    let sql = last_items_sql(chunk.len(), nodes.len(), |i| format!("?{i}"));
                    let args = std::iter::once(&jid).chain(chunk).chain(&nodes);
                    let mut stmt = c.prepare(&sql)?;
                    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                        Ok(LastItem {
                            node: read_node(r)?,
                            owner: r.get(11)?,
                            item: StoredItem {
                                id: r.get(12)?,
                                publisher: r.get(13)?,
                                payload: r.get(14)?,
                            },
                            affiliation: (r.get::<_, Option<String>>(15)?)
                                .and_then(|a| Affiliation::parse(&a)),
                        })
                    })?;
                    for row in rows {
                        out.push(row?);
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn affiliations(
        &self,
        owner: &str,
        node: &str,
    ) -> Result<Vec<(String, Affiliation)>, StorageError> {
        self.affiliation_pairs(
            "SELECT jid, affiliation FROM pubsub_affiliations \
             WHERE owner = ?1 AND node = ?2 ORDER BY jid",
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
             WHERE owner = ?1 AND jid = ?2 ORDER BY node",
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
        let (owner, node) = (owner.to_owned(), node.to_owned());
        self.store
            .write(move |c| {
                for (jid, affiliation) in changes {
                    c.prepare_cached(
                        "DELETE FROM pubsub_affiliations WHERE owner = ?1 AND node = ?2 \
                         AND jid = ?3",
                    )?
                    .execute(params![owner, node, jid])?;
                    let Some(affiliation) = affiliation else {
                        continue;
                    };
                    c.prepare_cached(
                        "INSERT INTO pubsub_affiliations (owner, node, jid, affiliation) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        owner,
                        node,
                        jid,
                        affiliation.as_str()
                    ])?;
                    if affiliation == Affiliation::Outcast {
                        // '0' follows '/': the full JIDs of `jid` are one range.
                        c.prepare_cached(
                            "DELETE FROM pubsub_subscriptions WHERE owner = ?1 AND node = ?2 \
                             AND (jid = ?3 OR (jid >= ?3 || '/' AND jid < ?3 || '0'))",
                        )?
                        .execute(params![owner, node, jid])?;
                    }
                }
                Ok(())
            })
            .await
    }
}

/// How many nodes a creation may find: of the owner (an account's own, or the service's),
/// and of the owner created by the same account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_owner: usize,
    pub per_creator: usize,
}

/// What [`NodeStore::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    Exists,
    /// The owner has its quota of nodes.
    OwnerFull,
    /// The creator has its quota of the owner's nodes.
    CreatorFull,
}
