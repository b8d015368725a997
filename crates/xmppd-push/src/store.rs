//! Where registrations are kept: [`PushStore`], and [`SqlitePush`], its table in the server's
//! SQLite database (schema `push`, through [`SqliteStore::extend`]), written through the
//! store's group-commit writer, so a change is durable when its call returns. With the cargo
//! features `postgres` and `mysql`, the same table on PostgreSQL ([`PgPush`]) and MariaDB
//! ([`MysqlPush`]), beside the core's tables; the contract is the conformance suite in
//! `tests/store.rs`, run on all three.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "mysql")]
pub use mysql::{MysqlPush, MYSQL_SCHEMA};
#[cfg(feature = "postgres")]
pub use postgres::{PgPush, PG_SCHEMA};

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::params;
use xmppd_storage::{Schema, SqliteStore, StorageError};

/// One registration as stored: an account's devices each name an app server and a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRegistration {
    /// The account's bare JID.
    pub owner: String,
    /// The app server's JID.
    pub jid: String,
    pub node: String,
    /// The publish-options form, as XML.
    pub form: Option<String>,
    /// The resource that enabled it.
    pub resource: String,
}

/// Registrations by owner (an account's bare JID), unique per (owner, app server, node).
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Every registration, each owner's in the order they were last enabled.
    async fn all(&self) -> Result<Vec<StoredRegistration>, StorageError>;
    /// Adds `reg`, replacing the one of the same app server and node, as the owner's newest;
    /// beyond `max` per owner the oldest go.
    async fn enable(&self, reg: StoredRegistration, max: usize) -> Result<(), StorageError>;
    /// Removes `owner`'s registrations at `jid`: of `node`, or every node when `None`.
    async fn disable(
        &self,
        owner: &str,
        jid: &str,
        node: Option<String>,
    ) -> Result<(), StorageError>;
    /// Removes every registration of `owner`.
    async fn remove_owner(&self, owner: &str) -> Result<(), StorageError>;
}

/// Migrations of the push tables: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "push",
    migrations: &[r"
CREATE TABLE push_registrations (
    owner TEXT NOT NULL,
    jid TEXT NOT NULL,
    node TEXT NOT NULL,
    form TEXT,
    resource TEXT NOT NULL,
    UNIQUE (owner, jid, node)
);
"],
};

/// [`PushStore`] over a [`SqliteStore`].
pub struct SqlitePush {
    store: Arc<SqliteStore>,
}

impl SqlitePush {
    /// Creates or migrates the push tables in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqlitePush, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqlitePush { store })
    }
}

#[async_trait]
impl PushStore for SqlitePush {
    async fn all(&self) -> Result<Vec<StoredRegistration>, StorageError> {
        self.store
            .read(|c| {
                let mut stmt = c.prepare(
                    "SELECT owner, jid, node, form, resource FROM push_registrations \
                     ORDER BY rowid",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(StoredRegistration {
                        owner: r.get(0)?,
                        jid: r.get(1)?,
                        node: r.get(2)?,
                        form: r.get(3)?,
                        resource: r.get(4)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn enable(&self, reg: StoredRegistration, max: usize) -> Result<(), StorageError> {
        self.store
            .write(move |c| {
                // REPLACE gives the row a new rowid: the newest registration is the last.
                c.execute(
                    "INSERT OR REPLACE INTO push_registrations (owner, jid, node, form, resource) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![reg.owner, reg.jid, reg.node, reg.form, reg.resource],
                )?;
                c.execute(
                    "DELETE FROM push_registrations WHERE owner = ?1 AND rowid NOT IN \
                     (SELECT rowid FROM push_registrations WHERE owner = ?1 \
                      ORDER BY rowid DESC LIMIT ?2)",
                    params![reg.owner, max as i64],
                )?;
                Ok(())
            })
            .await
    }

    async fn disable(
        &self,
        owner: &str,
        jid: &str,
        node: Option<String>,
    ) -> Result<(), StorageError> {
        let (owner, jid) = (owner.to_owned(), jid.to_owned());
        self.store
            .write(move |c| {
                match node {
                    Some(node) => c.execute(
                        "DELETE FROM push_registrations WHERE owner = ?1 AND jid = ?2 AND node = ?3",
                        params![owner, jid, node],
                    )?,
                    None => c.execute(
                        "DELETE FROM push_registrations WHERE owner = ?1 AND jid = ?2",
                        params![owner, jid],
                    )?,
                };
                Ok(())
            })
            .await
    }

    async fn remove_owner(&self, owner: &str) -> Result<(), StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                c.execute(
                    "DELETE FROM push_registrations WHERE owner = ?1",
                    params![owner],
                )?;
                Ok(())
            })
            .await
    }
}

/// Of an owner's registrations by `seq`, newest first, the newest of those beyond `max`: it
/// and every older one go.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn beyond(newest_first: &[i64], max: usize) -> Option<i64> {
    newest_first.get(max).copied()
}
