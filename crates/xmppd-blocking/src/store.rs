//! Where block lists are kept: [`BlockStore`], and [`SqliteBlocks`], its tables in the server's
//! SQLite database (schema `blocking`, through [`SqliteStore::extend`]), written through the
//! store's group-commit writer, so a change is durable when its call returns. With the cargo
//! features `postgres` and `mysql`, the same table on PostgreSQL ([`PgBlocks`]) and MariaDB
//! ([`MysqlBlocks`]), beside the core's tables; the contract is the conformance suite in
//! `tests/store.rs`, run on all three.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "mysql")]
pub use mysql::{MysqlBlocks, MYSQL_SCHEMA};
#[cfg(feature = "postgres")]
pub use postgres::{PgBlocks, PG_SCHEMA};

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::params;
use xmppd_storage::{Schema, SqliteStore, StorageError};

/// Block lists by owner (an account's bare JID), each item a normalised JID string.
#[async_trait]
pub trait BlockStore: Send + Sync {
    /// `owner`'s items in the order they were blocked.
    async fn items(&self, owner: &str) -> Result<Vec<String>, StorageError>;
    /// Adds `items` (those already there stay where they are).
    async fn add(&self, owner: &str, items: Vec<String>) -> Result<(), StorageError>;
    /// Removes `items`; all of them when `None`.
    async fn remove(&self, owner: &str, items: Option<Vec<String>>) -> Result<(), StorageError>;
    /// Every owner whose list has an item.
    async fn owners(&self) -> Result<Vec<String>, StorageError>;
}

/// Migrations of the blocking tables: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "blocking",
    migrations: &[r"
CREATE TABLE blocking_items (
    owner TEXT NOT NULL,
    jid TEXT NOT NULL,
    UNIQUE (owner, jid)
);
"],
};

/// [`BlockStore`] over a [`SqliteStore`].
pub struct SqliteBlocks {
    store: Arc<SqliteStore>,
}

impl SqliteBlocks {
    /// Creates or migrates the blocking tables in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteBlocks, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqliteBlocks { store })
    }
}

#[async_trait]
impl BlockStore for SqliteBlocks {
    async fn items(&self, owner: &str) -> Result<Vec<String>, StorageError> {
        let owner = owner.to_owned();
        self.store
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT jid FROM blocking_items WHERE owner = ?1 ORDER BY rowid",
                )?;
                let rows = stmt.query_map(params![owner], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .await
    }

    async fn owners(&self) -> Result<Vec<String>, StorageError> {
        self.store
            .read(|c| {
                let mut stmt = c.prepare("SELECT DISTINCT owner FROM blocking_items")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .await
    }

    async fn add(&self, owner: &str, items: Vec<String>) -> Result<(), StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT OR IGNORE INTO blocking_items (owner, jid) VALUES (?1, ?2)",
                )?;
                for jid in &items {
                    stmt.execute(params![owner, jid])?;
                }
                Ok(())
            })
            .await
    }

    async fn remove(&self, owner: &str, items: Option<Vec<String>>) -> Result<(), StorageError> {
        let owner = owner.to_owned();
        self.store
            .write(move |c| {
                match items {
                    None => {
                        c.execute(
                            "DELETE FROM blocking_items WHERE owner = ?1",
                            params![owner],
                        )?;
                    }
                    Some(items) => {
                        let mut stmt = c.prepare_cached(
                            "DELETE FROM blocking_items WHERE owner = ?1 AND jid = ?2",
                        )?;
                        for jid in &items {
                            stmt.execute(params![owner, jid])?;
                        }
                    }
                }
                Ok(())
            })
            .await
    }
}
