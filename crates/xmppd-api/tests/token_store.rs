//! The contract of the API tokens' [`TokenStore`], run on SQLite, PostgreSQL and MariaDB
//! alike (see `xmppd_dbtest::on_every_engine`).

use std::sync::Arc;

use xmppd_api::token::{
    hash, ApiTokens, MysqlApiTokens, PgApiTokens, Refusal, Scope, SqliteApiTokens, TokenStore,
};
use xmppd_dbtest::{Db, Engine};

/// The tokens on `db`'s engine; each call opens them again, as a restart would.
async fn open(db: &dyn Db) -> (ApiTokens, Arc<dyn TokenStore>) {
    let store: Arc<dyn TokenStore> = match db.engine().await {
        Engine::Sqlite(s) => Arc::new(SqliteApiTokens::open(s).await.unwrap()),
        Engine::Postgres(s) => Arc::new(PgApiTokens::open(s).await.unwrap()),
        Engine::Mysql(s) => Arc::new(MysqlApiTokens::open(s).await.unwrap()),
    };
    (ApiTokens::new(store.clone()), store)
}

mod tokens {
    use super::*;

    pub async fn tokens_are_stored_hashed_listed_and_revoked(db: &dyn Db) {
        let (tokens, store) = open(db).await;
        let (token, made) = tokens
            .create(Scope::Read, "ci ✓ 'x'", 10, Some(100))
            .await
            .unwrap();
        assert_eq!(tokens.authorize(&token, 50).await, Ok(Scope::Read));
        assert_eq!(tokens.authorize(&token, 100).await, Err(Refusal::Expired));
        assert_eq!(tokens.list().await.unwrap(), vec![made.clone()]);
        // Only the token's hash is stored.
        let (info, stored) = store.row(&made.id).await.unwrap().unwrap();
        assert_eq!((info, stored), (made.clone(), hash(&token).to_vec()));
        // Another store on the same database (a restart, the command line) sees it, and a
        // revocation there is seen here at once.
        let (other, _) = open(db).await;
        assert_eq!(other.authorize(&token, 50).await, Ok(Scope::Read));
        assert!(other.revoke(&made.id).await.unwrap());
        assert!(!tokens.revoke(&made.id).await.unwrap());
        assert_eq!(tokens.authorize(&token, 50).await, Err(Refusal::Invalid));
        assert!(store.row(&made.id).await.unwrap().is_none());
    }

    pub async fn tokens_list_oldest_first_and_never_expire_without_a_time(db: &dyn Db) {
        let (tokens, _) = open(db).await;
        let (admin, a) = tokens.create(Scope::Admin, "a", 30, None).await.unwrap();
        let (_, b) = tokens
            .create(Scope::Metrics, "", 10, Some(20))
            .await
            .unwrap();
        let (_, c) = tokens.create(Scope::Read, "c", 20, None).await.unwrap();
        assert_eq!(tokens.list().await.unwrap(), [b, c, a]);
        assert_eq!(tokens.authorize(&admin, i64::MAX).await, Ok(Scope::Admin));
        // Another token's id with this one's secret, or no such id: refused alike.
        let forged = format!("xmppd.000000000000.{}", &admin[19..]);
        assert_eq!(tokens.authorize(&forged, 0).await, Err(Refusal::Invalid));
    }
}

xmppd_dbtest::on_every_engine!(
    tokens::tokens_are_stored_hashed_listed_and_revoked,
    tokens::tokens_list_oldest_first_and_never_expire_without_a_time,
);
