//! [`TokenStore`] on PostgreSQL: the table `api_tokens` beside the core's.

use std::sync::Arc;

use async_trait::async_trait;
use xmppd_storage::postgres::tokio_postgres::Row;
use xmppd_storage::postgres::{exec, query, query_opt};
use xmppd_storage::{PgStore, Schema, StorageError};

use super::{TokenInfo, TokenStore};

/// The SQLite schema's table and columns.
pub const PG_SCHEMA: Schema = Schema {
    name: "api",
    migrations: &[r"
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    hash BYTEA NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT
);
"],
};

/// The API tokens in a [`PgStore`]'s database.
pub struct PgApiTokens {
    store: Arc<PgStore>,
}

impl PgApiTokens {
    /// Creates or migrates the token table in `store`'s database.
    pub async fn open(store: Arc<PgStore>) -> Result<PgApiTokens, StorageError> {
        store.extend(PG_SCHEMA).await?;
        Ok(PgApiTokens { store })
    }
}

fn info(r: &Row) -> TokenInfo {
    TokenInfo::from_columns(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

#[async_trait]
impl TokenStore for PgApiTokens {
    async fn insert(&self, info: &TokenInfo, hash: [u8; 32]) -> Result<(), StorageError> {
        let c = self.store.client().await?;
        let sql = "INSERT INTO api_tokens (id, hash, scope, name, created_ms, expires_ms)
                   VALUES ($1, $2, $3, $4, $5, $6)";
        let (hash, scope) = (hash.as_slice(), info.scope.as_str());
        let p = [&info.id, &info.name];
        exec(
            &c,
            sql,
            &[
                p[0],
                &hash,
                &scope,
                p[1],
                &info.created_ms,
                &info.expires_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, StorageError> {
        let c = self.store.client().await?;
        let sql = "SELECT id, scope, name, created_ms, expires_ms FROM api_tokens
                   ORDER BY created_ms, id COLLATE \"C\"";
        Ok(query(&c, sql, &[]).await?.iter().map(info).collect())
    }

    async fn delete(&self, id: &str) -> Result<bool, StorageError> {
        let c = self.store.client().await?;
        Ok(exec(&c, "DELETE FROM api_tokens WHERE id = $1", &[&id]).await? > 0)
    }

    async fn row(&self, id: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StorageError> {
        let c = self.store.client().await?;
        let sql = "SELECT id, scope, name, created_ms, expires_ms, hash FROM api_tokens
                   WHERE id = $1";
        let row = query_opt(&c, sql, &[&id]).await?;
        Ok(row.map(|r| (info(&r), r.get(5))))
    }
}
