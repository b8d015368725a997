//! [`TokenStore`] over the server's SQLite database.

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use rusqlite::{params, OptionalExtension, Row};
use xmppd_storage::{Schema, SqliteStore, StorageError};

use crate::{TokenRow, TokenStore};

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

fn parts(user: &BareJid) -> (String, String) {
    let node = user
        .node()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    (user.domain().as_str().to_owned(), node)
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
        let Some((node, domain)) = row.user.split_once('@') else {
            return Err(StorageError::Backend(format!(
                "not an account: {}",
                row.user
            )));
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use std::time::Duration;
    use xmppd_storage::{CredentialStore, StoredScram, UserRef};

    fn creds(seed: u8) -> Vec<StoredScram> {
        vec![StoredScram {
            hash: "SHA-256".into(),
            salt: vec![seed; 16],
            iterations: 4096,
            stored_key: vec![seed; 32],
            server_key: vec![seed; 32],
        }]
    }

    fn row(hash: u8, user: &str, client: &str, issued_ms: i64) -> TokenRow {
        TokenRow {
            hash: [hash; 32],
            user: user.into(),
            client: client.into(),
            mechanism: "HT-SHA-256-NONE".into(),
            issued_ms,
            expires_ms: Policy {
                lifetime: Duration::from_secs(100),
            }
            .expiry(issued_ms),
            count: None,
        }
    }

    #[tokio::test]
    async fn rotation_replay_counts_revocation_and_password_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("x.db")).unwrap());
        let juliet = BareJid::new("juliet@example.org").unwrap();
        let romeo = BareJid::new("romeo@example.org").unwrap();
        for u in ["juliet", "romeo"] {
            let user = UserRef::new(u, "example.org");
            store.create_user(&user, &creds(1)).await.unwrap();
        }
        let tokens = SqliteTokens::open(Arc::clone(&store)).await.unwrap();
        tokens
            .issue(row(1, "juliet@example.org", "phone", 1_000))
            .await
            .unwrap();
        tokens
            .issue(row(2, "juliet@example.org", "phone", 2_000))
            .await
            .unwrap();
        tokens
            .issue(row(3, "juliet@example.org", "laptop", 2_000))
            .await
            .unwrap();
        tokens
            .issue(row(4, "romeo@example.org", "phone", 2_000))
            .await
            .unwrap();
        async fn live(t: &SqliteTokens, user: &BareJid, client: &str, now: i64) -> Vec<u8> {
            let rows = t.live(user, client, "HT-SHA-256-NONE", now).await.unwrap();
            rows.into_iter().map(|r| r.hash[0]).collect()
        }
        assert_eq!(live(&tokens, &juliet, "phone", 3_000).await.len(), 2);
        assert!(
            live(&tokens, &juliet, "phone", 200_000).await.is_empty(),
            "expired"
        );
        assert!(
            tokens
                .live(&juliet, "phone", "HT-SHA-256-EXPR", 3_000)
                .await
                .unwrap()
                .is_empty(),
            "bound to its mechanism"
        );
        // Using the newer token drops the older one of that client only, and keeps the count.
        tokens.used([2; 32], Some(7)).await.unwrap();
        assert_eq!(live(&tokens, &juliet, "phone", 3_000).await, [2]);
        assert_eq!(live(&tokens, &juliet, "laptop", 3_000).await, [3]);
        let rows = tokens
            .live(&juliet, "phone", "HT-SHA-256-NONE", 3_000)
            .await
            .unwrap();
        assert_eq!(rows[0].count, Some(7));
        // Invalidation and revocation.
        tokens.invalidate([2; 32]).await.unwrap();
        assert!(live(&tokens, &juliet, "phone", 3_000).await.is_empty());
        assert_eq!(tokens.revoke(&juliet, Some("nobody")).await.unwrap(), 0);
        assert_eq!(tokens.list(Some(&juliet)).await.unwrap().len(), 1);
        // A password change revokes the account's tokens, not another account's.
        store
            .set_credentials(&UserRef::new("juliet", "example.org"), &creds(2))
            .await
            .unwrap();
        assert!(tokens.list(Some(&juliet)).await.unwrap().is_empty());
        assert_eq!(tokens.list(Some(&romeo)).await.unwrap().len(), 1);
        // So does removing the account.
        store
            .remove_account(&UserRef::new("romeo", "example.org"), None)
            .await
            .unwrap();
        assert!(tokens.list(None).await.unwrap().is_empty());
    }
}
