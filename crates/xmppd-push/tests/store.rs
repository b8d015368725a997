//! The contract of [`PushStore`], run on SQLite, PostgreSQL and MariaDB alike (see
//! `xmppd_dbtest::on_every_engine`).

use std::sync::Arc;

use xmppd_dbtest::{Db, Engine};
use xmppd_push::store::{MysqlPush, PgPush, StoredRegistration};
use xmppd_push::{PushStore, SqlitePush};

/// The registrations on `db`'s engine; each call opens them again, as a restart would.
async fn open(db: &dyn Db) -> Arc<dyn PushStore> {
    match db.engine().await {
        Engine::Sqlite(s) => Arc::new(SqlitePush::open(s).await.unwrap()),
        Engine::Postgres(s) => Arc::new(PgPush::open(s).await.unwrap()),
        Engine::Mysql(s) => Arc::new(MysqlPush::open(s).await.unwrap()),
    }
}

mod push {
    use super::*;

    fn reg(owner: &str, node: &str) -> StoredRegistration {
        StoredRegistration {
            owner: owner.into(),
            jid: "push.example".into(),
            node: node.into(),
            form: None,
            resource: "phone".into(),
        }
    }

    fn nodes(all: &[StoredRegistration], owner: &str) -> Vec<String> {
        (all.iter().filter(|r| r.owner == owner))
            .map(|r| r.node.clone())
            .collect()
    }

    pub async fn registrations_replace_bound_and_survive_reopening(db: &dyn Db) {
        {
            let push = open(db).await;
            for node in ["a", "b", "c"] {
                push.enable(reg("u@x", node), 3).await.unwrap();
            }
            // Enabled again: the newest, with its new form.
            let again = StoredRegistration {
                form: Some("<x xmlns='jabber:x:data'>✓</x>".into()),
                ..reg("u@x", "a")
            };
            push.enable(again, 3).await.unwrap();
            push.enable(reg("v@x", "a"), 3).await.unwrap();
        }
        let push = open(db).await;
        let all = push.all().await.unwrap();
        assert_eq!(nodes(&all, "u@x"), ["b", "c", "a"]);
        assert_eq!(nodes(&all, "v@x"), ["a"]);
        let a = all.iter().find(|r| r.owner == "u@x" && r.node == "a");
        assert_eq!(
            a.unwrap().form.as_deref(),
            Some("<x xmlns='jabber:x:data'>✓</x>")
        );
        // Beyond the bound, the oldest goes.
        push.enable(reg("u@x", "d"), 3).await.unwrap();
        assert_eq!(nodes(&push.all().await.unwrap(), "u@x"), ["c", "a", "d"]);
        // A lower bound drops every older one at once.
        push.enable(reg("u@x", "e"), 2).await.unwrap();
        assert_eq!(nodes(&push.all().await.unwrap(), "u@x"), ["d", "e"]);

        push.disable("u@x", "push.example", Some("d".into()))
            .await
            .unwrap();
        assert_eq!(nodes(&push.all().await.unwrap(), "u@x"), ["e"]);
        push.disable("u@x", "push.example", None).await.unwrap();
        assert!(nodes(&push.all().await.unwrap(), "u@x").is_empty());
        push.remove_owner("v@x").await.unwrap();
        assert!(push.all().await.unwrap().is_empty());
    }

    pub async fn registrations_are_per_app_server_and_match_exactly(db: &dyn Db) {
        let push = open(db).await;
        let at = |jid: &str, node: &str| StoredRegistration {
            jid: jid.into(),
            ..reg("u@x", node)
        };
        for (jid, node) in [("p1", "n"), ("p2", "n"), ("p1", "N"), ("p1", "n ")] {
            push.enable(at(jid, node), 10).await.unwrap();
        }
        assert_eq!(push.all().await.unwrap().len(), 4);
        push.disable("u@x", "p1", None).await.unwrap();
        let all = push.all().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].jid.as_str(), all[0].node.as_str()), ("p2", "n"));
        push.disable("U@x", "p2", None).await.unwrap();
        assert_eq!(push.all().await.unwrap().len(), 1, "owners match exactly");
    }

    pub async fn concurrent_enables_from_two_stores_keep_the_bound(db: &dyn Db) {
        let (one, two) = (open(db).await, open(db).await);
        let mut tasks = Vec::new();
        for i in 0..10 {
            let push = if i % 2 == 0 { one.clone() } else { two.clone() };
            tasks.push(tokio::spawn(async move {
                push.enable(reg("u@x", &format!("n{i}")), 3).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(nodes(&one.all().await.unwrap(), "u@x").len(), 3);
    }
}

xmppd_dbtest::on_every_engine!(
    push::registrations_replace_bound_and_survive_reopening,
    push::registrations_are_per_app_server_and_match_exactly,
    push::concurrent_enables_from_two_stores_keep_the_bound,
);
