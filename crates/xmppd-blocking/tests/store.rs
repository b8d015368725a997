//! The contract of [`BlockStore`], run on SQLite, PostgreSQL and MariaDB alike (see
//! `xmppd_dbtest::on_every_engine`).

use std::sync::Arc;

use xmppd_blocking::store::{MysqlBlocks, PgBlocks};
use xmppd_blocking::{BlockStore, SqliteBlocks};
use xmppd_dbtest::{Db, Engine};

/// The block lists on `db`'s engine; each call opens them again, as a restart would.
async fn open(db: &dyn Db) -> Arc<dyn BlockStore> {
    match db.engine().await {
        Engine::Sqlite(s) => Arc::new(SqliteBlocks::open(s).await.unwrap()),
        Engine::Postgres(s) => Arc::new(PgBlocks::open(s).await.unwrap()),
        Engine::Mysql(s) => Arc::new(MysqlBlocks::open(s).await.unwrap()),
    }
}

mod blocks {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    pub async fn items_keep_their_order_and_survive_reopening(db: &dyn Db) {
        {
            let blocks = open(db).await;
            blocks
                .add("a@x", strings(&["c@x", "b@x", "c@x"]))
                .await
                .unwrap();
            blocks.add("z@x", strings(&["a@x"])).await.unwrap();
            blocks
                .remove("a@x", Some(strings(&["zz@x"])))
                .await
                .unwrap();
            // Added again: stays where it was.
            blocks.add("a@x", strings(&["b@x", "d@x"])).await.unwrap();
        }
        let blocks = open(db).await;
        assert_eq!(blocks.items("a@x").await.unwrap(), ["c@x", "b@x", "d@x"]);
        let mut owners = blocks.owners().await.unwrap();
        owners.sort();
        assert_eq!(owners, ["a@x", "z@x"]);
        blocks
            .remove("a@x", Some(strings(&["c@x", "d@x"])))
            .await
            .unwrap();
        assert_eq!(blocks.items("a@x").await.unwrap(), ["b@x"]);
        blocks.remove("a@x", None).await.unwrap();
        assert!(blocks.items("a@x").await.unwrap().is_empty());
        assert_eq!(blocks.items("z@x").await.unwrap(), ["a@x"]);
        assert_eq!(blocks.owners().await.unwrap(), ["z@x"]);
        blocks.add("z@x", Vec::new()).await.unwrap();
        blocks.remove("z@x", Some(Vec::new())).await.unwrap();
        assert_eq!(blocks.items("z@x").await.unwrap(), ["a@x"]);
    }

    pub async fn jids_match_exactly_and_may_be_long(db: &dyn Db) {
        let blocks = open(db).await;
        // Domains, bare and full JIDs; case and trailing spaces are part of a resource.
        let long = format!(
            "{}@{}/{}",
            "u".repeat(1023),
            "d".repeat(1000),
            "r".repeat(1000)
        );
        let items = strings(&["example.org", "b@x/Phone", "b@x/phone", "b@x/phone ", &long]);
        blocks.add("a@x", items.clone()).await.unwrap();
        blocks.add("a@x", strings(&["B@x/phone"])).await.unwrap();
        let mut want = items;
        want.push("B@x/phone".into());
        assert_eq!(blocks.items("a@x").await.unwrap(), want);
        assert!(blocks.items("A@x").await.unwrap().is_empty());
        blocks
            .remove("a@x", Some(strings(&["b@x/phone", &long])))
            .await
            .unwrap();
        assert_eq!(
            blocks.items("a@x").await.unwrap(),
            ["example.org", "b@x/Phone", "b@x/phone ", "B@x/phone"]
        );
    }

    pub async fn two_stores_share_one_list(db: &dyn Db) {
        let (one, two) = (open(db).await, open(db).await);
        one.add("a@x", strings(&["b@x"])).await.unwrap();
        two.add("a@x", strings(&["b@x", "c@x"])).await.unwrap();
        assert_eq!(one.items("a@x").await.unwrap(), ["b@x", "c@x"]);
        one.remove("a@x", None).await.unwrap();
        assert!(two.items("a@x").await.unwrap().is_empty());
    }
}

xmppd_dbtest::on_every_engine!(
    blocks::items_keep_their_order_and_survive_reopening,
    blocks::jids_match_exactly_and_may_be_long,
    blocks::two_stores_share_one_list,
);
