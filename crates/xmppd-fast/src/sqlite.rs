//! [`TokenStore`] over the server's SQLite database.

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use rusqlite::{params, OptionalExtension, Row};
use xmppd_storage::{Schema, SqliteStore, StorageError};

use crate::{parts, split_account, TokenRow, TokenStore};

/// Migrations of the token table (see [`Schema`]): append, never edit.
///
/// The triggers revoke an account's tokens whenever its stored password changes (the SCRAM
/// rows are replaced) or the account is removed, whichever command or service does it.
pub const SCHEMA: Schema = Schema {
    name: "fast",
    migrations: &[r"
CREATE TABLE fast_tokens (
    hash BLOB PRIMARY KEY,
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    client TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    issued_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    count INTEGER
) WITHOUT ROWID;
CREATE INDEX fast_tokens_by_client ON fast_tokens (domain, user, client);
CREATE TRIGGER fast_tokens_password_set AFTER INSERT ON scram BEGIN
    DELETE FROM fast_tokens WHERE domain = new.domain AND user = new.user;
END;
CREATE TRIGGER fast_tokens_password_dropped AFTER DELETE ON scram BEGIN
    DELETE FROM fast_tokens WHERE domain = old.domain AND user = old.user;
END;
CREATE TRIGGER fast_tokens_account_removed AFTER DELETE ON users BEGIN
    DELETE FROM fast_tokens WHERE domain = old.domain AND user = old.user;
END;
"],
};

/// The tokens in a [`SqliteStore`].
pub struct SqliteTokens {
    store: Arc<SqliteStore>,
}

impl SqliteTokens {
    /// Creates or migrates the token table in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteTokens, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqliteTokens { store })
    }
}

const COLUMNS: &str = "hash, domain, user, client, mechanism, issued_ms, expires_ms, count";

fn read_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let hash: Vec<u8> = r.get(0)?;
    let (domain, user): (String, String) = (r.get(1)?, r.get(2)?);
    Ok(TokenRow {
        hash: hash.try_into().unwrap_or([0; 32]),
        user: format!("{user}@{domain}"),
        client: r.get(3)?,
        mechanism: r.get(4)?,
        issued_ms: r.get(5)?,
        expires_ms: r.get(6)?,
        count: r.get(7)?,
    })
}

#[async_trait]
impl TokenStore for SqliteTokens {
    async fn live(
        &self,
        user: &BareJid,
        client: &str,
        mechanism: &str,
        now_ms: i64,
    ) -> Result<Vec<TokenRow>, StorageError> {
        let (domain, node) = parts(user);
        let (client, mechanism) = (client.to_owned(), mechanism.to_owned());
        self.store
            .read(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM fast_tokens WHERE domain = ?1 AND user = ?2
                     AND client = ?3 AND mechanism = ?4 AND expires_ms > ?5"
                ))?;
                let rows =
                    stmt.query_map(params![domain, node, client, mechanism, now_ms], read_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn issue(&self, row: TokenRow) -> Result<(), StorageError> {
        let (node, domain) = split_account(&row.user)?;
        let (node, domain) = (node.to_owned(), domain.to_owned());
        self.store
            .write(move |c| {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO fast_tokens
                     (hash, domain, user, client, mechanism, issued_ms, expires_ms, count)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
                )?
                .execute(params![
                    row.hash.to_vec(),
                    domain,
                    node,
                    row.client,
                    row.mechanism,
                    row.issued_ms,
                    row.expires_ms
                ])?;
                Ok(())
            })
            .await
    }

    async fn used(&self, hash: [u8; 32], count: Option<u32>) -> Result<(), StorageError> {
        self.store
            .write(move |c| {
                let found: Option<(String, String, String, i64)> = c
                    .prepare_cached(
                        "SELECT domain, user, client, issued_ms FROM fast_tokens WHERE hash = ?1",
                    )?
                    .query_row([hash.to_vec()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                let Some((domain, user, client, issued_ms)) = found else {
                    return Ok(());
                };
                if let Some(count) = count {
                    c.prepare_cached("UPDATE fast_tokens SET count = ?2 WHERE hash = ?1")?
                        .execute(params![hash.to_vec(), count])?;
                }
                c.prepare_cached(
                    "DELETE FROM fast_tokens WHERE domain = ?1 AND user = ?2 AND client = ?3
                     AND issued_ms < ?4",
                )?
                .execute(params![domain, user, client, issued_ms])?;
                Ok(())
            })
            .await
    }

    async fn invalidate(&self, hash: [u8; 32]) -> Result<(), StorageError> {
        self.store
            .write(move |c| {
                c.prepare_cached("DELETE FROM fast_tokens WHERE hash = ?1")?
                    .execute([hash.to_vec()])?;
                Ok(())
            })
            .await
    }

    async fn revoke(&self, user: &BareJid, client: Option<&str>) -> Result<usize, StorageError> {
        let (domain, node) = parts(user);
        let client = client.map(str::to_owned);
        self.store
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "DELETE FROM fast_tokens WHERE domain = ?1 AND user = ?2
                         AND (?3 IS NULL OR client = ?3)",
                    )?
                    .execute(params![domain, node, client])?;
                Ok(n)
            })
            .await
    }

    async fn list(&self, user: Option<&BareJid>) -> Result<Vec<TokenRow>, StorageError> {
        let user = user.map(parts);
        self.store
            .read(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM fast_tokens
                     WHERE (?1 IS NULL OR (domain = ?1 AND user = ?2))
                     ORDER BY domain, user, client, issued_ms"
                ))?;
                let (domain, node) = user.unzip();
                let rows = stmt.query_map(params![domain, node], read_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }
}
