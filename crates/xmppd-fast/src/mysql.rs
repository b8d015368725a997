//! [`TokenStore`] on MariaDB: the table `fast_tokens` beside the core's accounts, whose
//! triggers revoke an account's tokens in the transaction that changes its password or
//! removes it, as on SQLite. (With binary logging on, creating a trigger takes the `SUPER`
//! privilege or `log_bin_trust_function_creators = 1`.)

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use xmppd_storage::mysql::mysql_async::prelude::Queryable;
use xmppd_storage::mysql::{exec_count, my_err, write};
use xmppd_storage::{MysqlStore, Schema, StorageError};

use crate::{parts, split_account, TokenRow, TokenStore};

/// The SQLite schema's table, columns and triggers. Text is `utf8mb4` with the binary
/// collation, as the core's accounts (whose domain and user name are at most 255 characters).
pub const MYSQL_SCHEMA: Schema = Schema {
    name: "fast",
    migrations: &[r"
CREATE TABLE fast_tokens (
    hash BINARY(32) NOT NULL PRIMARY KEY,
    domain VARCHAR(255) NOT NULL,
    user VARCHAR(255) NOT NULL,
    client TEXT NOT NULL,
    mechanism VARCHAR(64) NOT NULL,
    issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    count BIGINT,
    KEY fast_tokens_by_user (domain, user)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TRIGGER fast_tokens_password_set AFTER INSERT ON scram FOR EACH ROW
    DELETE FROM fast_tokens WHERE domain = NEW.domain AND user = NEW.username;
CREATE TRIGGER fast_tokens_password_dropped AFTER DELETE ON scram FOR EACH ROW
    DELETE FROM fast_tokens WHERE domain = OLD.domain AND user = OLD.username;
CREATE TRIGGER fast_tokens_account_removed AFTER DELETE ON users FOR EACH ROW
    DELETE FROM fast_tokens WHERE domain = OLD.domain AND user = OLD.username;
"],
};

/// The tokens in a [`MysqlStore`]'s database.
pub struct MysqlTokens {
    store: Arc<MysqlStore>,
}

impl MysqlTokens {
    /// Creates or migrates the token table in `store`'s database.
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlTokens, StorageError> {
        store.extend(MYSQL_SCHEMA).await?;
        Ok(MysqlTokens { store })
    }
}

const SELECT: &str = "SELECT hash, domain, user, client, mechanism, issued_ms, expires_ms, count
    FROM fast_tokens";

type Row = (
    Vec<u8>,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

fn read_row(
    (hash, domain, user, client, mechanism, issued_ms, expires_ms, count): Row,
) -> TokenRow {
    TokenRow {
        hash: hash.try_into().unwrap_or([0; 32]),
        user: format!("{user}@{domain}"),
        client,
        mechanism,
        issued_ms,
        expires_ms,
        count: count.and_then(|n| u32::try_from(n).ok()),
    }
}

#[async_trait]
impl TokenStore for MysqlTokens {
    async fn live(
        &self,
        user: &BareJid,
        client: &str,
        mechanism: &str,
        now_ms: i64,
    ) -> Result<Vec<TokenRow>, StorageError> {
        let (domain, node) = parts(user);
        let sql = format!(
            "{SELECT} WHERE domain = ? AND user = ? AND client = ? AND mechanism = ?
             AND expires_ms > ?"
        );
        let rows: Vec<Row> = (self.store.conn().await?)
            .exec(sql, (domain, node, client, mechanism, now_ms))
            .await
            .map_err(my_err)?;
        Ok(rows.into_iter().map(read_row).collect())
    }

    async fn issue(&self, row: TokenRow) -> Result<(), StorageError> {
        let (node, domain) = split_account(&row.user)?;
        let sql = "REPLACE INTO fast_tokens
                   (hash, domain, user, client, mechanism, issued_ms, expires_ms, count)
                   VALUES (?, ?, ?, ?, ?, ?, ?, NULL)";
        let params = (
            row.hash.as_slice(),
            domain,
            node,
            &row.client,
            &row.mechanism,
            row.issued_ms,
            row.expires_ms,
        );
        (self.store.conn().await?)
            .exec_drop(sql, params)
            .await
            .map_err(my_err)
    }

    async fn used(&self, hash: [u8; 32], count: Option<u32>) -> Result<(), StorageError> {
        let mut c = self.store.conn().await?;
        let mut tx = write(&mut c).await?;
        let hash = hash.as_slice();
        let sql = "SELECT domain, user, client, issued_ms FROM fast_tokens WHERE hash = ?
                   FOR UPDATE";
        let found: Option<(String, String, String, i64)> =
            tx.exec_first(sql, (hash,)).await.map_err(my_err)?;
        let Some((domain, user, client, issued_ms)) = found else {
            return Ok(());
        };
        if let Some(count) = count {
            let sql = "UPDATE fast_tokens SET count = ? WHERE hash = ?";
            tx.exec_drop(sql, (count, hash)).await.map_err(my_err)?;
        }
        let sql = "DELETE FROM fast_tokens WHERE domain = ? AND user = ? AND client = ?
                   AND issued_ms < ?";
        let params = (domain, user, client, issued_ms);
        tx.exec_drop(sql, params).await.map_err(my_err)?;
        tx.commit().await.map_err(my_err)
    }

    async fn invalidate(&self, hash: [u8; 32]) -> Result<(), StorageError> {
        let sql = "DELETE FROM fast_tokens WHERE hash = ?";
        (self.store.conn().await?)
            .exec_drop(sql, (hash.as_slice(),))
            .await
            .map_err(my_err)
    }

    async fn revoke(&self, user: &BareJid, client: Option<&str>) -> Result<usize, StorageError> {
        let (domain, node) = parts(user);
        let sql = "DELETE FROM fast_tokens WHERE domain = ? AND user = ?
                   AND (? IS NULL OR client = ?)";
        let mut c = self.store.conn().await?;
        let n = exec_count(&mut c, sql, (domain, node, client, client)).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn list(&self, user: Option<&BareJid>) -> Result<Vec<TokenRow>, StorageError> {
        let (domain, node) = user.map(parts).unzip();
        let sql = format!(
            "{SELECT} WHERE (? IS NULL OR (domain = ? AND user = ?))
             ORDER BY domain, user, client, issued_ms"
        );
        let rows: Vec<Row> = (self.store.conn().await?)
            .exec(sql, (&domain, &domain, &node))
            .await
            .map_err(my_err)?;
        Ok(rows.into_iter().map(read_row).collect())
    }
}
