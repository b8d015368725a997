//! Where personal data is kept: [`PersonalStore`], and [`SqlitePersonal`], its tables in the
//! server's SQLite file (schema `personal`, through [`SqliteStore::extend`]), written through
//! the store's group-commit writer, so a change is durable when its call returns.
//!
//! Both tables are keyed like the core's account tables, and a trigger on `users` empties
//! them in the transaction that removes the account, whichever path removes it (a running
//! server, or the command line without one). The same tables, under the same names and
//! columns, are on PostgreSQL (`PgPersonal`) and MariaDB (`MysqlPersonal`) behind the
//! features `postgres` and `mysql`; the contract all three keep is the suite `tests/store.rs`.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use xmppd_storage::{Schema, SqliteStore, StorageError, UserRef};

/// An account's private XML (XEP-0049), one element per namespace, and its vCard
/// (XEP-0054), each stored as serialised XML.
#[async_trait]
pub trait PersonalStore: Send + Sync {
    async fn private(&self, user: &UserRef, ns: &str) -> Result<Option<String>, StorageError>;
    async fn set_private(&self, user: &UserRef, ns: &str, xml: &str) -> Result<(), StorageError>;
    /// Every private element of `user`: (namespace, XML), sorted by namespace (for export).
    async fn all_private(&self, user: &UserRef) -> Result<Vec<(String, String)>, StorageError>;
    async fn vcard(&self, user: &UserRef) -> Result<Option<String>, StorageError>;
    async fn set_vcard(&self, user: &UserRef, xml: &str) -> Result<(), StorageError>;
}

/// Migrations of the personal data tables: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "personal",
    migrations: &[r"
CREATE TABLE personal_private (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    namespace TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, user, namespace)
) WITHOUT ROWID;
CREATE TABLE personal_vcards (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, user)
) WITHOUT ROWID;
CREATE TRIGGER personal_account_removed AFTER DELETE ON users BEGIN
    DELETE FROM personal_private WHERE domain = OLD.domain AND user = OLD.user;
    DELETE FROM personal_vcards WHERE domain = OLD.domain AND user = OLD.user;
END;
"],
};

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "mysql")]
pub use mysql::{MysqlPersonal, MYSQL_SCHEMA};
#[cfg(feature = "postgres")]
pub use postgres::{PgPersonal, PG_SCHEMA};

/// [`PersonalStore`] over a [`SqliteStore`].
pub struct SqlitePersonal {
    store: Arc<SqliteStore>,
}

impl SqlitePersonal {
    /// Creates or migrates the personal data tables in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqlitePersonal, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqlitePersonal { store })
    }
}

#[async_trait]
impl PersonalStore for SqlitePersonal {
    async fn private(&self, user: &UserRef, ns: &str) -> Result<Option<String>, StorageError> {
        let (user, ns) = (user.clone(), ns.to_owned());
        self.store
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT xml FROM personal_private \
                     WHERE domain = ?1 AND user = ?2 AND namespace = ?3",
                )?
                .query_row(params![user.domain, user.user, ns], |r| r.get(0))
                .optional()?)
            })
            .await
    }

    async fn set_private(&self, user: &UserRef, ns: &str, xml: &str) -> Result<(), StorageError> {
        let (user, ns, xml) = (user.clone(), ns.to_owned(), xml.to_owned());
        self.store
            .write(move |c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO personal_private (domain, user, namespace, xml) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![user.domain, user.user, ns, xml])?;
                Ok(())
            })
            .await
    }

    async fn all_private(&self, user: &UserRef) -> Result<Vec<(String, String)>, StorageError> {
        let user = user.clone();
        self.store
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT namespace, xml FROM personal_private \
                     WHERE domain = ?1 AND user = ?2 ORDER BY namespace",
                )?;
                let rows = stmt.query_map(params![user.domain, user.user], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn vcard(&self, user: &UserRef) -> Result<Option<String>, StorageError> {
        let user = user.clone();
        self.store
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT xml FROM personal_vcards WHERE domain = ?1 AND user = ?2",
                )?
                .query_row(params![user.domain, user.user], |r| r.get(0))
                .optional()?)
            })
            .await
    }

    async fn set_vcard(&self, user: &UserRef, xml: &str) -> Result<(), StorageError> {
        let (user, xml) = (user.clone(), xml.to_owned());
        self.store
            .write(move |c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO personal_vcards (domain, user, xml) \
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![user.domain, user.user, xml])?;
                Ok(())
            })
            .await
    }
}
