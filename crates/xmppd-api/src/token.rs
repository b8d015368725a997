//! Bearer tokens of the administration API: made by `xmppd api-token create`, shown once,
//! stored as their SHA-256 with a scope and an expiry.
//!
//! A token is `xmppd.ID.SECRET`: `ID` (12 hex digits) names its row, so `api-token list` and
//! `revoke` can show and name tokens without holding them; `SECRET` is 256 random bits
//! (base64url). Only SHA-256 of the whole token is stored: with 256 random bits there is
//! nothing to guess, so a slow password hash would only slow every request down. The check
//! compares hashes in constant time.
//!
//! Where they are kept: [`TokenStore`], in the server's SQLite file ([`SqliteApiTokens`]) or,
//! with the cargo features `postgres` and `mysql`, beside the core's tables on PostgreSQL
//! (`PgApiTokens`) or MariaDB (`MysqlApiTokens`); the contract is the conformance suite in
//! `tests/token_store.rs`, run on all three.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xmppd_storage::{Schema, SqliteStore, StorageError};

#[cfg(feature = "mysql")]
pub use mysql::{MysqlApiTokens, MYSQL_SCHEMA};
#[cfg(feature = "postgres")]
pub use postgres::{PgApiTokens, PG_SCHEMA};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `/metrics` only.
    Metrics,
    /// Reading: lists, statistics, metrics.
    Read,
    /// Everything.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Metrics => "metrics",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "metrics" => Some(Scope::Metrics),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// Whether a token of this scope may do what `needed` allows: each scope includes the
    /// ones below it.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// A token as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub scope: Scope,
    pub name: String,
    pub created_ms: i64,
    /// `None`: never expires.
    pub expires_ms: Option<i64>,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token of this server (malformed, unknown, revoked or a wrong secret).
    Invalid,
    Expired,
}

const PREFIX: &str = "xmppd.";

/// A new token's text and its stored hash.
pub fn generate() -> (String, String, [u8; 32]) {
    let mut rng = rand::thread_rng();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let token = format!("{PREFIX}{id}.{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&token);
    (id, token, hash)
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The id a token names, if it has the shape of one.
pub fn id_of(token: &str) -> Option<&str> {
    let (id, secret) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let hex_id = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_id && !secret.is_empty()).then_some(id)
}

/// Checks `token` against the stored row of its id (`None`: no such row) at `now_ms`.
pub fn check(token: &str, row: Option<(&TokenInfo, &[u8])>, now_ms: i64) -> Result<Scope, Refusal> {
    let Some((info, stored)) = row else {
        return Err(Refusal::Invalid);
    };
    if !bool::from(hash(token).as_slice().ct_eq(stored)) {
        return Err(Refusal::Invalid);
    }
    match info.expires_ms {
        Some(at) if at <= now_ms => Err(Refusal::Expired),
        _ => Ok(info.scope),
    }
}

/// Migrations of the token table: append, never edit.
pub const SCHEMA: Schema = Schema {
    name: "api",
    migrations: &[r"
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER
) WITHOUT ROWID;
"],
};

impl TokenInfo {
    /// A row's `id, scope, name, created_ms, expires_ms`, as every engine reads them (an
    /// unknown scope, written by a later version, grants the least).
    pub fn from_columns(
        id: String,
        scope: &str,
        name: String,
        created_ms: i64,
        expires_ms: Option<i64>,
    ) -> TokenInfo {
        TokenInfo {
            id,
            scope: Scope::parse(scope).unwrap_or(Scope::Metrics),
            name,
            created_ms,
            expires_ms,
        }
    }
}

/// Where the tokens' rows are kept. Every write is committed before it returns.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Adds the row of a new token.
    async fn insert(&self, info: &TokenInfo, hash: [u8; 32]) -> Result<(), StorageError>;
    /// Every token, oldest first (ties by id).
    async fn list(&self) -> Result<Vec<TokenInfo>, StorageError>;
    /// Deletes the token `id`; whether there was one.
    async fn delete(&self, id: &str) -> Result<bool, StorageError>;
    /// The row of `id` with its stored hash.
    async fn row(&self, id: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StorageError>;
}

fn read_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    let scope: String = r.get(1)?;
    Ok(TokenInfo::from_columns(
        r.get(0)?,
        &scope,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
    ))
}

/// The tokens in the server's SQLite database.
pub struct SqliteApiTokens {
    store: Arc<SqliteStore>,
}

impl SqliteApiTokens {
    /// Creates or migrates the token table in `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<SqliteApiTokens, StorageError> {
        store.extend(SCHEMA).await?;
        Ok(SqliteApiTokens { store })
    }
}

#[async_trait]
impl TokenStore for SqliteApiTokens {
    async fn insert(&self, info: &TokenInfo, hash: [u8; 32]) -> Result<(), StorageError> {
        let row = info.clone();
        self.store
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO api_tokens (id, hash, scope, name, created_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    row.id,
                    hash.to_vec(),
                    row.scope.as_str(),
                    row.name,
                    row.created_ms,
                    row.expires_ms
                ])?;
                Ok(())
            })
            .await
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, StorageError> {
        self.store
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, scope, name, created_ms, expires_ms FROM api_tokens
                     ORDER BY created_ms, id",
                )?;
                let rows = stmt.query_map([], read_info)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn delete(&self, id: &str) -> Result<bool, StorageError> {
        let id = id.to_owned();
        self.store
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM api_tokens WHERE id = ?1")?
                    .execute([id])?;
                Ok(n > 0)
            })
            .await
    }

    async fn row(&self, id: &str) -> Result<Option<(TokenInfo, Vec<u8>)>, StorageError> {
        let id = id.to_owned();
        self.store
            .read(move |c| {
                let row = c
                    .prepare_cached(
                        "SELECT id, scope, name, created_ms, expires_ms, hash FROM api_tokens
                         WHERE id = ?1",
                    )?
                    .query_row([id], |r| Ok((read_info(r)?, r.get::<_, Vec<u8>>(5)?)))
                    .optional()?;
                Ok(row)
            })
            .await
    }
}

/// The tokens, on whichever engine keeps them. The server reads a token's row at each
/// request, so a token revoked by the command line is refused at once.
pub struct ApiTokens {
    store: Arc<dyn TokenStore>,
}

impl ApiTokens {
    /// The tokens in `store`.
    pub fn new(store: Arc<dyn TokenStore>) -> ApiTokens {
        ApiTokens { store }
    }

    /// Creates or migrates the token table in the SQLite `store`.
    pub async fn open(store: Arc<SqliteStore>) -> Result<ApiTokens, StorageError> {
        Ok(ApiTokens::new(Arc::new(
            SqliteApiTokens::open(store).await?,
        )))
    }

    /// Makes a token; returns its text, which is not stored, and its row.
    pub async fn create(
        &self,
        scope: Scope,
        name: &str,
        now_ms: i64,
        expires_ms: Option<i64>,
    ) -> Result<(String, TokenInfo), StorageError> {
        let (id, token, hash) = generate();
        let info = TokenInfo {
            id,
            scope,
            name: name.to_owned(),
            created_ms: now_ms,
            expires_ms,
        };
        self.store.insert(&info, hash).await?;
        Ok((token, info))
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, StorageError> {
        self.store.list().await
    }

    /// Deletes the token `id`; whether there was one.
    pub async fn revoke(&self, id: &str) -> Result<bool, StorageError> {
        self.store.delete(id).await
    }

    /// The scope `token` grants at `now_ms`, or why it is refused.
    pub async fn authorize(&self, token: &str, now_ms: i64) -> Result<Scope, Refusal> {
        let Some(id) = id_of(token) else {
            return Err(Refusal::Invalid);
        };
        match self.store.row(id).await {
            Ok(row) => check(token, row.as_ref().map(|(i, h)| (i, h.as_slice())), now_ms),
            Err(e) => {
                tracing::warn!(error = %e, "reading an API token");
                Err(Refusal::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(scope: Scope, expires_ms: Option<i64>) -> TokenInfo {
        TokenInfo {
            id: "0123456789ab".into(),
            scope,
            name: String::new(),
            created_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn a_token_names_its_row_and_only_its_hash_checks_it() {
        let (id, token, stored) = generate();
        assert_eq!(id_of(&token), Some(id.as_str()));
        assert_eq!(stored, hash(&token));
        assert_ne!(generate().1, token);
        let row = info(Scope::Read, None);
        assert_eq!(check(&token, Some((&row, &stored)), 0), Ok(Scope::Read));
        // One character changed, or another token's hash: refused.
        let mut wrong = token.clone();
        wrong.push('x');
        assert_eq!(
            check(&wrong, Some((&row, &stored)), 0),
            Err(Refusal::Invalid)
        );
        assert_eq!(check(&token, None, 0), Err(Refusal::Invalid));
        for bad in [
            "",
            "xmppd.",
            "xmppd.0123.x",
            "xmppd.0123456789ab.",
            "other.0123456789ab.x",
        ] {
            assert_eq!(id_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_token_expires_at_its_time() {
        let (_, token, stored) = generate();
        let row = info(Scope::Admin, Some(1000));
        assert_eq!(check(&token, Some((&row, &stored)), 999), Ok(Scope::Admin));
        assert_eq!(
            check(&token, Some((&row, &stored)), 1000),
            Err(Refusal::Expired)
        );
        // A wrong secret says nothing about expiry.
        assert_eq!(
            check("xmppd.0123456789ab.x", Some((&row, &stored)), 2000),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn scopes_include_the_ones_below() {
        use Scope::*;
        assert!(Admin.allows(Admin) && Admin.allows(Read) && Admin.allows(Metrics));
        assert!(!Read.allows(Admin) && Read.allows(Read) && Read.allows(Metrics));
        assert!(!Metrics.allows(Read) && Metrics.allows(Metrics));
        for s in [Admin, Read, Metrics] {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("root"), None);
    }
}
