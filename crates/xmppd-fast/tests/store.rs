//! The contract of [`TokenStore`], run on SQLite, PostgreSQL and MariaDB alike (see
//! `xmppd_dbtest::on_every_engine`): tokens live, rotate and are revoked the same on each,
//! with the core's accounts in the same database.

use std::sync::Arc;
use std::time::Duration;

use jid::BareJid;
use xmppd_dbtest::{Db, Engine, FullStore};
use xmppd_fast::{MysqlTokens, PgTokens, Policy, SqliteTokens, TokenRow, TokenStore};
use xmppd_storage::{StoredScram, UserRef};

/// The tokens on `db`'s engine and the core's store beside them; each call opens them
/// again, as a restart would.
async fn open(db: &dyn Db) -> (Arc<dyn TokenStore>, Arc<dyn FullStore>) {
    let engine = db.engine().await;
    let core = engine.core();
    let tokens: Arc<dyn TokenStore> = match engine {
        Engine::Sqlite(s) => Arc::new(SqliteTokens::open(s).await.unwrap()),
        Engine::Postgres(s) => Arc::new(PgTokens::open(s).await.unwrap()),
        Engine::Mysql(s) => Arc::new(MysqlTokens::open(s).await.unwrap()),
    };
    (tokens, core)
}

mod tokens {
    use super::*;

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

    async fn live(t: &dyn TokenStore, user: &BareJid, client: &str, now: i64) -> Vec<u8> {
        let rows = t.live(user, client, "HT-SHA-256-NONE", now).await.unwrap();
        let mut hashes: Vec<u8> = rows.into_iter().map(|r| r.hash[0]).collect();
        hashes.sort();
        hashes
    }

    pub async fn rotation_replay_counts_revocation_and_password_changes(db: &dyn Db) {
        let (tokens, store) = open(db).await;
        let juliet = BareJid::new("juliet@example.org").unwrap();
        let romeo = BareJid::new("romeo@example.org").unwrap();
        for u in ["juliet", "romeo"] {
            let user = UserRef::new(u, "example.org");
            store.create_user(&user, &creds(1)).await.unwrap();
        }
        for (hash, user, client, at) in [
            (1, "juliet@example.org", "phone", 1_000),
            (2, "juliet@example.org", "phone", 2_000),
            (3, "juliet@example.org", "laptop", 2_000),
            (4, "romeo@example.org", "phone", 2_000),
        ] {
            tokens.issue(row(hash, user, client, at)).await.unwrap();
        }
        let t = tokens.as_ref();
        assert_eq!(live(t, &juliet, "phone", 3_000).await, [1, 2]);
        assert!(
            live(t, &juliet, "phone", 200_000).await.is_empty(),
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
        assert_eq!(live(t, &juliet, "phone", 3_000).await, [2]);
        assert_eq!(live(t, &juliet, "laptop", 3_000).await, [3]);
        let rows = tokens
            .live(&juliet, "phone", "HT-SHA-256-NONE", 3_000)
            .await
            .unwrap();
        assert_eq!(rows[0].count, Some(7));
        assert_eq!(rows[0].user, "juliet@example.org");
        assert_eq!(rows[0].issued_ms, 2_000);
        // The highest count a u32 holds comes back as it went in.
        tokens.used([2; 32], Some(u32::MAX)).await.unwrap();
        let rows = tokens.list(Some(&juliet)).await.unwrap();
        let phone = rows.iter().find(|r| r.client == "phone").unwrap();
        assert_eq!(phone.count, Some(u32::MAX));
        // An unknown token is nothing to record.
        tokens.used([9; 32], Some(1)).await.unwrap();
        // Invalidation and revocation.
        tokens.invalidate([2; 32]).await.unwrap();
        assert!(live(t, &juliet, "phone", 3_000).await.is_empty());
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

    pub async fn revoke_counts_and_list_sorts(db: &dyn Db) {
        let (tokens, _) = open(db).await;
        let juliet = BareJid::new("juliet@example.org").unwrap();
        for (hash, user, client, at) in [
            (1, "juliet@example.org", "b", 3_000),
            (2, "juliet@example.org", "a", 2_000),
            (3, "juliet@example.org", "a", 1_000),
            (4, "Juliet@example.org", "a", 1_000),
            (5, "romeo@example.org", "a", 1_000),
        ] {
            tokens.issue(row(hash, user, client, at)).await.unwrap();
        }
        // Issued again under the same hash: replaced, not doubled.
        tokens
            .issue(row(1, "juliet@example.org", "b", 4_000))
            .await
            .unwrap();
        let all: Vec<u8> = (tokens.list(None).await.unwrap().iter())
            .map(|r| r.hash[0])
            .collect();
        // By domain, user (code points: upper case first), client, issue time.
        assert_eq!(all, [4, 3, 2, 1, 5]);
        let mine = tokens.list(Some(&juliet)).await.unwrap();
        assert_eq!(mine.len(), 3);
        assert_eq!(mine[2].issued_ms, 4_000);
        assert_eq!(tokens.revoke(&juliet, Some("a")).await.unwrap(), 2);
        assert_eq!(tokens.revoke(&juliet, None).await.unwrap(), 1);
        assert_eq!(tokens.list(None).await.unwrap().len(), 2);
    }

    pub async fn a_token_issued_by_one_store_is_used_through_another(db: &dyn Db) {
        let (one, _) = open(db).await;
        let (two, _) = open(db).await;
        let juliet = BareJid::new("juliet@example.org").unwrap();
        one.issue(row(1, "juliet@example.org", "phone", 1_000))
            .await
            .unwrap();
        two.issue(row(2, "juliet@example.org", "phone", 2_000))
            .await
            .unwrap();
        two.used([2; 32], Some(1)).await.unwrap();
        assert_eq!(live(one.as_ref(), &juliet, "phone", 3_000).await, [2]);
    }
}

xmppd_dbtest::on_every_engine!(
    tokens::rotation_replay_counts_revocation_and_password_changes,
    tokens::revoke_counts_and_list_sorts,
    tokens::a_token_issued_by_one_store_is_used_through_another,
);
