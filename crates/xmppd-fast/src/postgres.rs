//! [`TokenStore`] on PostgreSQL: the table `fast_tokens` beside the core's accounts, whose
//! triggers revoke an account's tokens in the transaction that changes its password or
//! removes it, as on SQLite.

use std::sync::Arc;

use async_trait::async_trait;
use jid::BareJid;
use xmppd_storage::postgres::tokio_postgres::Row;
use xmppd_storage::postgres::{begin, exec, pg_err, query, query_opt};
use xmppd_storage::{PgStore, Schema, StorageError};

use crate::{parts, split_account, TokenRow, TokenStore};

/// The SQLite schema's table, columns and triggers (`user` is quoted: a reserved word here).
pub const PG_SCHEMA: Schema = Schema {
    name: "fast",
    migrations: &[r#"
CREATE TABLE fast_tokens (
    hash BYTEA PRIMARY KEY,
    domain TEXT NOT NULL,
    "user" TEXT NOT NULL,
    client TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    count BIGINT
);
CREATE INDEX fast_tokens_by_client ON fast_tokens (domain, "user", client);
CREATE FUNCTION fast_tokens_revoke() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        DELETE FROM fast_tokens WHERE domain = NEW.domain AND "user" = NEW.username;
    ELSE
        DELETE FROM fast_tokens WHERE domain = OLD.domain AND "user" = OLD.username;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER fast_tokens_password_set AFTER INSERT ON scram
    FOR EACH ROW EXECUTE FUNCTION fast_tokens_revoke();
CREATE TRIGGER fast_tokens_password_dropped AFTER DELETE ON scram
    FOR EACH ROW EXECUTE FUNCTION fast_tokens_revoke();
CREATE TRIGGER fast_tokens_account_removed AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION fast_tokens_revoke();
"#],
};

/// The tokens in a [`PgStore`]'s database.
pub struct PgTokens {
    store: Arc<PgStore>,
}

impl PgTokens {
    /// Creates or migrates the token table in `store`'s database.
    pub async fn open(store: Arc<PgStore>) -> Result<PgTokens, StorageError> {
        store.extend(PG_SCHEMA).await?;
        Ok(PgTokens { store })
    }
}

const SELECT: &str = r#"SELECT hash, domain, "user", client, mechanism, issued_ms, expires_ms,
    count FROM fast_tokens"#;

fn read_row(r: &Row) -> TokenRow {
    let (hash, domain, user): (Vec<u8>, String, String) = (r.get(0), r.get(1), r.get(2));
    let count: Option<i64> = r.get(7);
    TokenRow {
        hash: hash.try_into().unwrap_or([0; 32]),
        user: format!("{user}@{domain}"),
        client: r.get(3),
        mechanism: r.get(4),
        issued_ms: r.get(5),
        expires_ms: r.get(6),
        count: count.and_then(|n| u32::try_from(n).ok()),
    }
}

#[async_trait]
impl TokenStore for PgTokens {
    async fn live(
        &self,
        user: &BareJid,
        client: &str,
        mechanism: &str,
        now_ms: i64,
    ) -> Result<Vec<TokenRow>, StorageError> {
        let (domain, node) = parts(user);
        let c = self.store.client().await?;
        let sql = format!(
            r#"{SELECT} WHERE domain = $1 AND "user" = $2 AND client = $3 AND mechanism = $4
               AND expires_ms > $5"#
        );
        let p = [&domain, &node];
        let rows = query(&c, &sql, &[p[0], p[1], &client, &mechanism, &now_ms]).await?;
        Ok(rows.iter().map(read_row).collect())
    }

    async fn issue(&self, row: TokenRow) -> Result<(), StorageError> {
        let (node, domain) = split_account(&row.user)?;
        let c = self.store.client().await?;
        let sql = r#"INSERT INTO fast_tokens
                     (hash, domain, "user", client, mechanism, issued_ms, expires_ms, count)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)
                     ON CONFLICT (hash) DO UPDATE SET domain = excluded.domain,
                         "user" = excluded."user", client = excluded.client,
                         mechanism = excluded.mechanism, issued_ms = excluded.issued_ms,
                         expires_ms = excluded.expires_ms, count = NULL"#;
        let hash = row.hash.as_slice();
        let p = [&row.client, &row.mechanism];
        let times = [&row.issued_ms, &row.expires_ms];
        exec(
            &c,
            sql,
            &[&hash, &domain, &node, p[0], p[1], times[0], times[1]],
        )
        .await?;
        Ok(())
    }

    async fn used(&self, hash: [u8; 32], count: Option<u32>) -> Result<(), StorageError> {
        let mut c = self.store.client().await?;
        let tx = begin(&mut c).await?;
        let hash = hash.as_slice();
        let sql = r#"SELECT domain, "user", client, issued_ms FROM fast_tokens WHERE hash = $1
                     FOR UPDATE"#;
        let Some(found) = query_opt(&tx, sql, &[&hash]).await? else {
            return Ok(());
        };
        let (domain, user, client, issued_ms): (String, String, String, i64) =
            (found.get(0), found.get(1), found.get(2), found.get(3));
        if let Some(count) = count {
            let sql = "UPDATE fast_tokens SET count = $2 WHERE hash = $1";
            exec(&tx, sql, &[&hash, &i64::from(count)]).await?;
        }
        let sql = r#"DELETE FROM fast_tokens WHERE domain = $1 AND "user" = $2 AND client = $3
                     AND issued_ms < $4"#;
        exec(&tx, sql, &[&domain, &user, &client, &issued_ms]).await?;
        tx.commit().await.map_err(pg_err)
    }

    async fn invalidate(&self, hash: [u8; 32]) -> Result<(), StorageError> {
        let c = self.store.client().await?;
        let sql = "DELETE FROM fast_tokens WHERE hash = $1";
        exec(&c, sql, &[&hash.as_slice()]).await?;
        Ok(())
    }

    async fn revoke(&self, user: &BareJid, client: Option<&str>) -> Result<usize, StorageError> {
        let (domain, node) = parts(user);
        let c = self.store.client().await?;
        let sql = r#"DELETE FROM fast_tokens WHERE domain = $1 AND "user" = $2
                     AND ($3::text IS NULL OR client = $3)"#;
        let n = exec(&c, sql, &[&domain, &node, &client]).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn list(&self, user: Option<&BareJid>) -> Result<Vec<TokenRow>, StorageError> {
        let (domain, node) = user.map(parts).unzip();
        let c = self.store.client().await?;
        // Sorted by code point, as SQLite sorts.
        let sql = format!(
            r#"{SELECT} WHERE ($1::text IS NULL OR (domain = $1 AND "user" = $2))
               ORDER BY domain COLLATE "C", "user" COLLATE "C", client COLLATE "C", issued_ms"#
        );
        let rows = query(&c, &sql, &[&domain, &node]).await?;
        Ok(rows.iter().map(read_row).collect())
    }
}
