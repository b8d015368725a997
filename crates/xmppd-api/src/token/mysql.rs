//! [`TokenStore`] on MariaDB: the table `api_tokens` beside the core's.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::mysql::mysql_async::prelude::Queryable;
use xmppd_storage::mysql::{exec_count, my_err};
use xmppd_storage::{MysqlStore, Schema, StorageError};

use super::{TokenInfo, TokenStore};

/// The SQLite schema's table and columns.
pub const MYSQL_SCHEMA: Schema = Schema {
    name: "api",
    migrations: &[r"
CREATE TABLE api_tokens (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    hash VARBINARY(64) NOT NULL,
    scope VARCHAR(16) NOT NULL,
    name TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
"],
};

/// The API tokens in a [`MysqlStore`]'s database.
pub struct MysqlApiTokens {
    store: Arc<MysqlStore>,
}

impl MysqlApiTokens {
    /// Creates or migrates the token table in `store`'s database.
    pub async fn open(store: Arc<MysqlStore>) -> Result<MysqlApiTokens, StorageError> {
        store.extend(MYSQL_SCHEMA).await?;
        Ok(MysqlApiTokens { store })
    }
}

type Info = (String, String, String, i64, Option<i64>);

fn info((id, scope, name, created_ms, expires_ms): Info) -> TokenInfo {
    TokenInfo::from_columns(id, &scope, name, created_ms, expires_ms)
}

#[async_trait]
impl TokenStore for MysqlApiTokens {
    async fn insert(&self, info: &TokenInfo, hash: [u8; 32]) -> Result<(), StorageError> {
        let sql = "INSERT INTO api_tokens (id, hash, scope, name, created_ms, expires_ms)
                   VALUES (?, ?, ?, ?, ?, ?)";
        let row = (
            &info.id,
            hash.as_slice(),
            info.scope.as_str(),
            &info.name,
            info.created_ms,
            info.expires_ms,
        );
        (self.store.conn().await?)
            .exec_drop(sql, row)
            .await
            .map_err(my_err)
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, StorageError> {
        let sql = "SELECT id, scope, name, created_ms, expires_ms FROM api_tokens
                   ORDER BY created_ms, id";
        let rows: Vec<Info> = (self.store.conn().await?)
            .exec(sql, ())
            .await
            .map_err(my_err)?;
        Ok(rows.into_iter().map(info).collect())
    }

    async fn delete(&self, id: &str) -> Result<bool, StorageError> {
        let mut c = self.store.conn().await?;
        Ok(exec_count(&mut c, "DELETE FROM api_tokens WHERE id = ?", (id,)).await? > 0)
    }

    async fn row(&self, id: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StorageError> {
        let sql = "SELECT id, scope, name, created_ms, expires_ms, hash FROM api_tokens
                   WHERE id = ?";
        type Row = (String, String, String, i64, Option<i64>, Vec<u8>);
        let row: Option<Row> = (self.store.conn().await?)
            .exec_first(sql, (id,))
            .await
            .map_err(my_err)?;
        Ok(row.map(|(a, b, c, d, e, hash)| (info((a, b, c, d, e)), hash)))
    }
}
