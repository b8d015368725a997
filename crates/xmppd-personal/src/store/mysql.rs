//! [`PersonalStore`] on MariaDB: [`MysqlPersonal`], the tables of the SQLite schema under the
//! same names and columns, beside the core's (schema `personal` of [`MysqlStore::extend`]).
//! Each write is one statement, committed when it returns; a trigger on `users` empties both
//! tables of an account with its row. Text is `utf8mb4_nopad_bin` (exact matches, code-point
//! order); domains, user names and namespaces are bounded to 255 characters each, as the
//! core's keys (a longer one is refused with an error, never cut).

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::mysql::my_err;
use xmppd_storage::mysql::mysql_async::prelude::Queryable;
use xmppd_storage::{MysqlStore, Schema, StorageError, UserRef};

use super::PersonalStore;

/// The personal data tables on MariaDB: append, never edit.
pub const MYSQL_SCHEMA: Schema = Schema {
    name: "personal",
    migrations: &[r"
CREATE TABLE personal_private (
    domain VARCHAR(255) NOT NULL,
    user VARCHAR(255) NOT NULL,
    namespace VARCHAR(255) NOT NULL,
    xml MEDIUMTEXT NOT NULL,
    PRIMARY KEY (domain, user, namespace)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE personal_vcards (
    domain VARCHAR(255) NOT NULL,
    user VARCHAR(255) NOT NULL,
    xml MEDIUMTEXT NOT NULL,
    PRIMARY KEY (domain, user)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TRIGGER personal_account_removed AFTER DELETE ON users FOR EACH ROW BEGIN
    DELETE FROM personal_private WHERE domain = OLD.domain AND user = OLD.username;
    DELETE FROM personal_vcards WHERE domain = OLD.domain AND user = OLD.username;
END;
"],
};

/// [`PersonalStore`] over a [`MysqlStore`].
pub struct MysqlPersonal {
    store: Arc<MysqlStore>,
}

impl MysqlPersonal {
    /// Creates or migrates the personal data tables in `store`'s database.
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlPersonal, StorageError> {
        store.extend(MYSQL_SCHEMA).await?;
        Ok(MysqlPersonal { store })
    }
}

#[async_trait]
impl PersonalStore for MysqlPersonal {
    async fn private(&self, user: &UserRef, ns: &str) -> Result<Option<String>, StorageError> {
        self.store
            .conn()
            .await?
            .exec_first(
                "SELECT xml FROM personal_private WHERE domain = ? AND user = ? AND namespace = ?",
                (&user.domain, &user.user, ns),
            )
            .await
            .map_err(my_err)
    }

    async fn set_private(&self, user: &UserRef, ns: &str, xml: &str) -> Result<(), StorageError> {
        self.store
            .conn()
            .await?
            .exec_drop(
                "INSERT INTO personal_private (domain, user, namespace, xml) VALUES (?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE xml = VALUES(xml)",
                (&user.domain, &user.user, ns, xml),
            )
            .await
            .map_err(my_err)
    }

    async fn all_private(&self, user: &UserRef) -> Result<Vec<(String, String)>, StorageError> {
        self.store
            .conn()
            .await?
            .exec(
                "SELECT namespace, xml FROM personal_private WHERE domain = ? AND user = ?
                 ORDER BY namespace",
                (&user.domain, &user.user),
            )
            .await
            .map_err(my_err)
    }

    async fn vcard(&self, user: &UserRef) -> Result<Option<String>, StorageError> {
        self.store
            .conn()
            .await?
            .exec_first(
                "SELECT xml FROM personal_vcards WHERE domain = ? AND user = ?",
                (&user.domain, &user.user),
            )
            .await
            .map_err(my_err)
    }

    async fn set_vcard(&self, user: &UserRef, xml: &str) -> Result<(), StorageError> {
        self.store
            .conn()
            .await?
            .exec_drop(
                "INSERT INTO personal_vcards (domain, user, xml) VALUES (?, ?, ?)
                 ON DUPLICATE KEY UPDATE xml = VALUES(xml)",
                (&user.domain, &user.user, xml),
            )
            .await
            .map_err(my_err)
    }
}
