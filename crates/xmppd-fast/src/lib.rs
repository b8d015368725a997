//! FAST tokens (XEP-0484) at rest: what is kept of each token the server issued (SHA-256 of
//! it, never the token), bound to the account, the client's user-agent id and the mechanism it
//! was issued for; when tokens expire and are rotated; and their SQLite table, created through
//! the storage crate's schema extension.
//!
//! The login itself (the HT mechanism's proof against the stored hash) is negotiation's
//! (`xmppd-negotiation`, `xmppd_sasl::ht`); the c2s driver asks this crate for a client's live
//! tokens and tells it which one a login used, and which one it issued.
//!
//! Revocation: a password set or changed, or the account removed, drops the account's tokens
//! in the same transaction (triggers on the accounts' tables); `xmppd fast revoke` drops them
//! on request.
//!
//! Engines: [`SqliteTokens`] in the server's SQLite file; with the cargo features `postgres`
//! and `mysql`, `PgTokens` and `MysqlTokens`, the same table and triggers beside the core's
//! accounts on a database server. The contract is the conformance suite in `tests/store.rs`,
//! run on all three.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use jid::BareJid;
use xmppd_storage::StorageError;

#[cfg(feature = "mysql")]
pub use mysql::{MysqlTokens, MYSQL_SCHEMA};
#[cfg(feature = "postgres")]
pub use postgres::{PgTokens, PG_SCHEMA};
pub use sqlite::{SqliteTokens, SCHEMA};

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// The account, bare.
    pub user: String,
    /// The user-agent id it was issued to (XEP-0388 §2.3.1).
    pub client: String,
    /// The mechanism it was issued for (XEP-0484 §3.2: never used with another).
    pub mechanism: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// The highest `count` a login with it carried (XEP-0484 §3.3).
    pub count: Option<u32>,
}

/// How long tokens live and when they are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub lifetime: Duration,
}

impl Policy {
    /// When a token issued at `now_ms` expires.
    pub fn expiry(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::try_from(self.lifetime.as_millis()).unwrap_or(i64::MAX))
    }

    /// Whether a login with `used` at `now_ms` gets a new token without asking: once half its
    /// lifetime has passed, so a client that logs in regularly never sees its token expire
    /// (XEP-0484 §3.4). The old one stays valid until the new one is used.
    pub fn rotate(&self, used: &TokenRow, now_ms: i64) -> bool {
        let lifetime = used.expires_ms - used.issued_ms;
        now_ms - used.issued_ms >= lifetime / 2
    }
}

/// Whether `row` may still log in at `now_ms`.
pub fn live(row: &TokenRow, now_ms: i64) -> bool {
    row.expires_ms > now_ms
}

/// Where tokens are kept.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The tokens of `user` issued to `client` for `mechanism` that are live at `now_ms`.
    async fn live(
        &self,
        user: &BareJid,
        client: &str,
        mechanism: &str,
        now_ms: i64,
    ) -> Result<Vec<TokenRow>, StorageError>;

    /// Keeps a new token.
    async fn issue(&self, row: TokenRow) -> Result<(), StorageError>;

    /// A login used the token `hash` with `count`: the count is kept (a replay is refused),
    /// and the client's tokens issued before it are dropped, since it holds this newer one.
    async fn used(&self, hash: [u8; 32], count: Option<u32>) -> Result<(), StorageError>;

    /// Drops one token (`<fast invalidate='true'/>`).
    async fn invalidate(&self, hash: [u8; 32]) -> Result<(), StorageError>;

    /// Drops the tokens of `user` (of one client, if given); returns how many.
    async fn revoke(&self, user: &BareJid, client: Option<&str>) -> Result<usize, StorageError>;

    /// The tokens of `user`, or of everyone.
    async fn list(&self, user: Option<&BareJid>) -> Result<Vec<TokenRow>, StorageError>;
}

/// An account's domain and user name, as the tables key it.
fn parts(user: &BareJid) -> (String, String) {
    let node = user
        .node()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    (user.domain().as_str().to_owned(), node)
}

/// A token row's account as its user name and domain; an error for what is not an account.
fn split_account(user: &str) -> Result<(&str, &str), StorageError> {
    user.split_once('@')
        .ok_or_else(|| StorageError::Backend(format!("not an account: {user}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(issued_ms: i64, expires_ms: i64) -> TokenRow {
        TokenRow {
            hash: [0; 32],
            user: "juliet@example.org".into(),
            client: "c".into(),
            mechanism: "HT-SHA-256-NONE".into(),
            issued_ms,
            expires_ms,
            count: None,
        }
    }

    #[test]
    fn tokens_expire_after_their_lifetime() {
        let policy = Policy {
            lifetime: Duration::from_secs(10),
        };
        assert_eq!(policy.expiry(1_000), 11_000);
        let r = row(1_000, policy.expiry(1_000));
        assert!(live(&r, 10_999));
        assert!(!live(&r, 11_000));
    }

    #[test]
    fn tokens_are_rotated_past_half_their_lifetime() {
        let policy = Policy {
            lifetime: Duration::from_secs(10),
        };
        let r = row(0, 10_000);
        assert!(!policy.rotate(&r, 4_999));
        assert!(policy.rotate(&r, 5_000));
    }
}
