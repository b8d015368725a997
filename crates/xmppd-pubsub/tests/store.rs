//! The contract of [`NodeStore`], written once and run on SQLite (`on_sqlite::`), on a real
//! PostgreSQL (`on_postgres::`) and on a real MariaDB (`on_mariadb::`); the last two are
//! skipped with a message where the server cannot be installed, a failure under CI.

use std::sync::Arc;

use xmppd_dbtest::{on_every_engine, Db, Engine, FullStore};
use xmppd_pubsub::config::{AccessModel, Affiliation, NodeConfig, SendLast};
use xmppd_pubsub::store::{Created, Quota, StoredItem, StoredNode};
use xmppd_pubsub::{MysqlNodes, NodeStore, PgNodes, SqliteNodes};
use xmppd_storage::UserRef;

/// The core's store and the node store on `db`, opened as a new process would.
async fn open(db: &dyn Db) -> (Arc<dyn FullStore>, Arc<dyn NodeStore>) {
    let engine = db.engine().await;
    let nodes: Arc<dyn NodeStore> = match &engine {
        Engine::Sqlite(s) => Arc::new(SqliteNodes::open(s.clone()).await.unwrap()),
        Engine::Postgres(s) => Arc::new(PgNodes::open(s.clone()).await.unwrap()),
        Engine::Mysql(s) => Arc::new(MysqlNodes::open(s.clone()).await.unwrap()),
    };
    (engine.core(), nodes)
}

fn item(id: &str) -> StoredItem {
    StoredItem {
        id: id.into(),
        publisher: Some("a@x/phone".into()),
        payload: format!("<p xmlns='urn:t'>{id} ✓</p>"),
    }
}

fn node(name: &str) -> StoredNode {
    StoredNode {
        name: name.into(),
        creator: "a@x".into(),
        config: NodeConfig::pep_default(),
    }
}

const ROOMY: Quota = Quota {
    per_owner: 1000,
    per_creator: 1000,
};

fn ids(items: Vec<StoredItem>) -> Vec<String> {
    items.into_iter().map(|i| i.id).collect()
}

mod nodes {
    use super::*;

    pub async fn items_are_kept_newest_last_within_the_bound_and_survive_reopening(db: &dyn Db) {
        {
            let (_, nodes) = open(db).await;
            let quota = |per_owner, per_creator| Quota {
                per_owner,
                per_creator,
            };
            assert_eq!(
                nodes.create("a@x", node("n"), quota(10, 10)).await.unwrap(),
                Created::Created
            );
            assert_eq!(
                nodes.create("a@x", node("n"), quota(10, 10)).await.unwrap(),
                Created::Exists
            );
            assert_eq!(
                nodes.create("a@x", node("m"), quota(1, 10)).await.unwrap(),
                Created::OwnerFull
            );
            assert_eq!(
                nodes.create("a@x", node("m"), quota(10, 1)).await.unwrap(),
                Created::CreatorFull
            );
            for id in ["1", "2", "3", "2"] {
                nodes.publish("a@x", "n", item(id), 3).await.unwrap();
            }
            nodes.publish("a@x", "n", item("4"), 3).await.unwrap();
        }
        let (_, nodes) = open(db).await;
        let all = nodes.items("a@x", "n", None).await.unwrap();
        assert_eq!(all[0], item("3"), "publisher and payload as stored");
        assert_eq!(ids(all), ["3", "2", "4"]);
        assert_eq!(ids(nodes.items("a@x", "n", Some(1)).await.unwrap()), ["4"]);
        assert!(nodes.items("a@x", "n", Some(0)).await.unwrap().is_empty());
        let by_id = nodes
            .items_by_id(
                "a@x",
                "n",
                vec!["4".into(), "3".into(), "9".into(), "4".into()],
            )
            .await
            .unwrap();
        assert_eq!(ids(by_id), ["3", "4"]);
        assert!(nodes
            .items_by_id("a@x", "n", Vec::new())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            nodes
                .retract("a@x", "n", vec!["9".into(), "3".into(), "3".into()])
                .await
                .unwrap(),
            ["3"]
        );
        nodes
            .set_subscription("a@x", "n", "b@x", true)
            .await
            .unwrap();
        assert_eq!(nodes.subscribers("a@x", "n").await.unwrap(), ["b@x"]);
        nodes.purge("a@x", "n").await.unwrap();
        assert!(nodes.items("a@x", "n", None).await.unwrap().is_empty());
        assert!(nodes.delete("a@x", "n").await.unwrap());
        assert!(!nodes.delete("a@x", "n").await.unwrap());
        assert!(nodes.node("a@x", "n").await.unwrap().is_none());
        assert!(nodes.subscribers("a@x", "n").await.unwrap().is_empty());
    }

    pub async fn configuration_round_trips_and_a_smaller_bound_drops_the_oldest(db: &dyn Db) {
        let (_, nodes) = open(db).await;
        nodes.create("s", node("b"), ROOMY).await.unwrap();
        nodes.create("s", node("a"), ROOMY).await.unwrap();
        nodes.create("t", node("c"), ROOMY).await.unwrap();
        let names = |v: Vec<StoredNode>| v.into_iter().map(|n| n.name).collect::<Vec<_>>();
        assert_eq!(names(nodes.nodes("s").await.unwrap()), ["a", "b"]);
        assert!(nodes.nodes("nobody").await.unwrap().is_empty());

        let cfg = NodeConfig {
            access: AccessModel::Roster,
            max_items: 2,
            persist_items: true,
            send_last: SendLast::OnSub,
            deliver_payloads: false,
            notify_retract: false,
            notify_config: true,
            notify_delete: false,
            roster_groups: vec!["Friends".into(), "Ünïcode & <xml>".into(), " x ".into()],
        };
        for id in ["1", "2", "3", "4"] {
            nodes.publish("s", "a", item(id), 10).await.unwrap();
        }
        assert!(nodes.configure("s", "a", cfg.clone()).await.unwrap());
        assert_eq!(
            nodes.node("s", "a").await.unwrap(),
            Some(StoredNode {
                config: cfg.clone(),
                ..node("a")
            })
        );
        assert_eq!(ids(nodes.items("s", "a", None).await.unwrap()), ["3", "4"]);
        // Saved as it was: still found.
        assert!(nodes.configure("s", "a", cfg.clone()).await.unwrap());
        // Not persistent: only the last item is kept.
        let transient = NodeConfig {
            persist_items: false,
            ..cfg.clone()
        };
        assert!(nodes.configure("s", "a", transient).await.unwrap());
        assert_eq!(ids(nodes.items("s", "a", None).await.unwrap()), ["4"]);
        assert!(!nodes.configure("s", "nothing", cfg).await.unwrap());
    }

    pub async fn subscriptions_say_what_changed_and_match_exactly(db: &dyn Db) {
        let (_, nodes) = open(db).await;
        nodes.create("s", node("n"), ROOMY).await.unwrap();
        nodes.create("s", node("m"), ROOMY).await.unwrap();
        assert!(nodes.set_subscription("s", "n", "b@x", true).await.unwrap());
        assert!(!nodes.set_subscription("s", "n", "b@x", true).await.unwrap());
        // Case and a trailing space are part of the key (a resource may end with one).
        for jid in ["B@x", "b@x/r ", "b@x/r", "a@x"] {
            assert!(nodes.set_subscription("s", "n", jid, true).await.unwrap());
        }
        nodes.set_subscription("s", "m", "b@x", true).await.unwrap();
        assert_eq!(
            nodes.subscribers("s", "n").await.unwrap(),
            ["B@x", "a@x", "b@x", "b@x/r", "b@x/r "],
            "sorted by code point"
        );
        assert_eq!(
            nodes.subscriptions_of("s", "b@x").await.unwrap(),
            ["m", "n"]
        );
        assert!(nodes
            .set_subscription("s", "n", "b@x/r ", false)
            .await
            .unwrap());
        assert!(!nodes
            .set_subscription("s", "n", "b@x/r ", false)
            .await
            .unwrap());
        assert!(nodes.subscriptions_of("t", "b@x").await.unwrap().is_empty());
    }

    pub async fn last_items_of_many_owners_come_with_the_askers_affiliation(db: &dyn Db) {
        let (_, nodes) = open(db).await;
        // More owners than one query takes where queries take a list of parameters.
        let owners: Vec<String> = (0..510).map(|i| format!("u{i}@x")).collect();
        for (i, owner) in owners.iter().enumerate() {
            let n = StoredNode {
                creator: owner.clone(),
                ..node("tune")
            };
            nodes.create(owner, n, ROOMY).await.unwrap();
            let published: &[&str] = if i < 3 { &["1", "2"] } else { &["2"] };
            for id in published {
                nodes.publish(owner, "tune", item(id), 5).await.unwrap();
            }
        }
        nodes.create("u0@x", node("mood"), ROOMY).await.unwrap();
        nodes.publish("u0@x", "mood", item("m"), 5).await.unwrap();
        let mut quiet = node("quiet");
        quiet.config.send_last = SendLast::OnSub;
        nodes.create("u0@x", quiet, ROOMY).await.unwrap();
        nodes.publish("u0@x", "quiet", item("q"), 5).await.unwrap();
        nodes.create("u1@x", node("empty"), ROOMY).await.unwrap();
        nodes
            .set_affiliations(
                "u1@x",
                "tune",
                vec![("me@x".into(), Some(Affiliation::Outcast))],
            )
            .await
            .unwrap();

        let wanted = vec![
            "tune".to_owned(),
            "quiet".to_owned(),
            "empty".to_owned(),
            "none".to_owned(),
        ];
        let mut found = nodes
            .last_items(owners.clone(), wanted, "me@x")
            .await
            .unwrap();
        found.sort_by(|a, b| a.owner.cmp(&b.owner));
        assert_eq!(found.len(), owners.len(), "one per owner: tune only");
        assert!(found
            .iter()
            .all(|l| l.node.name == "tune" && l.item == item("2")));
        let of = |o: &str| found.iter().find(|l| l.owner == o).unwrap().affiliation;
        assert_eq!(of("u1@x"), Some(Affiliation::Outcast));
        assert_eq!(of("u2@x"), None);
        assert!(nodes
            .last_items(Vec::new(), vec!["tune".into()], "me@x")
            .await
            .unwrap()
            .is_empty());
        assert!(nodes
            .last_items(owners, Vec::new(), "me@x")
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn an_outcast_loses_its_subscriptions_and_affiliations_go_with_the_node(db: &dyn Db) {
        let (_, nodes) = open(db).await;
        nodes.create("s", node("n"), ROOMY).await.unwrap();
        for jid in ["b@x", "b@x/r", "b@xy", "c@x"] {
            nodes.set_subscription("s", "n", jid, true).await.unwrap();
        }
        nodes
            .set_affiliations(
                "s",
                "n",
                vec![
                    ("b@x".into(), Some(Affiliation::Outcast)),
                    ("c@x".into(), Some(Affiliation::Member)),
                ],
            )
            .await
            .unwrap();
        assert_eq!(nodes.subscribers("s", "n").await.unwrap(), ["b@xy", "c@x"]);
        assert_eq!(
            nodes.affiliations_of("s", "c@x").await.unwrap(),
            [("n".to_owned(), Affiliation::Member)]
        );
        // Replaced, then removed.
        nodes
            .set_affiliations("s", "n", vec![("c@x".into(), Some(Affiliation::Publisher))])
            .await
            .unwrap();
        assert_eq!(
            nodes.affiliations("s", "n").await.unwrap(),
            [
                ("b@x".to_owned(), Affiliation::Outcast),
                ("c@x".to_owned(), Affiliation::Publisher)
            ]
        );
        nodes
            .set_affiliations("s", "n", vec![("c@x".into(), None)])
            .await
            .unwrap();
        assert_eq!(
            nodes.affiliations("s", "n").await.unwrap(),
            [("b@x".to_owned(), Affiliation::Outcast)]
        );
        nodes.delete("s", "n").await.unwrap();
        assert!(nodes.affiliations("s", "n").await.unwrap().is_empty());
    }

    pub async fn an_accounts_nodes_and_subscriptions_go_with_it(db: &dyn Db) {
        let (core, nodes) = open(db).await;
        let alice = UserRef::new("alice", "x");
        for user in ["alice", "bob"] {
            core.create_user(&UserRef::new(user, "x"), &[])
                .await
                .unwrap();
        }
        for owner in ["alice@x", "bob@x"] {
            let n = StoredNode {
                creator: owner.into(),
                ..node("n")
            };
            nodes.create(owner, n, ROOMY).await.unwrap();
            nodes.publish(owner, "n", item("1"), 5).await.unwrap();
        }
        nodes.create("pubsub.x", node("news"), ROOMY).await.unwrap();
        for jid in ["alice@x", "alice@x/phone", "alice@xy", "carol@x"] {
            nodes
                .set_subscription("pubsub.x", "news", jid, true)
                .await
                .unwrap();
        }
        nodes
            .set_subscription("alice@x", "n", "bob@x", true)
            .await
            .unwrap();
        nodes
            .set_affiliations(
                "pubsub.x",
                "news",
                vec![("alice@x".into(), Some(Affiliation::Publisher))],
            )
            .await
            .unwrap();

        core.remove_account(&alice, None).await.unwrap();
        assert!(nodes.nodes("alice@x").await.unwrap().is_empty());
        assert!(nodes.items("alice@x", "n", None).await.unwrap().is_empty());
        assert!(nodes
            .subscriptions_of("alice@x", "bob@x")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            nodes.subscribers("pubsub.x", "news").await.unwrap(),
            ["alice@xy", "carol@x"]
        );
        assert!(nodes
            .affiliations("pubsub.x", "news")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(ids(nodes.items("bob@x", "n", None).await.unwrap()), ["1"]);
    }
}

mod shared {
    use super::*;

    pub async fn two_processes_creating_at_once_keep_the_quota(db: &dyn Db) {
        let ((_, a), (_, b)) = tokio::join!(open(db), open(db));
        let quota = Quota {
            per_owner: 5,
            per_creator: 5,
        };
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store
                    .create("s", node(&format!("n{i}")), quota)
                    .await
                    .unwrap()
            }));
        }
        let mut created = 0;
        for t in tasks {
            if t.await.unwrap() == Created::Created {
                created += 1;
            }
        }
        assert_eq!(created, 5);
        assert_eq!(a.nodes("s").await.unwrap().len(), 5);
    }

    pub async fn two_processes_publishing_at_once_keep_the_bound(db: &dyn Db) {
        let ((_, a), (_, b)) = tokio::join!(open(db), open(db));
        a.create("s", node("n"), ROOMY).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..30 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            // Every third one replaces the item "same".
            let id = if i % 3 == 0 {
                "same".to_owned()
            } else {
                i.to_string()
            };
            tasks.push(tokio::spawn(async move {
                store.publish("s", "n", item(&id), 4).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let kept = ids(b.items("s", "n", None).await.unwrap());
        assert_eq!(kept.len(), 4, "{kept:?}");
        let mut distinct = kept.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "each id once: {kept:?}");
    }
}

on_every_engine!(
    nodes::items_are_kept_newest_last_within_the_bound_and_survive_reopening,
    nodes::configuration_round_trips_and_a_smaller_bound_drops_the_oldest,
    nodes::subscriptions_say_what_changed_and_match_exactly,
    nodes::last_items_of_many_owners_come_with_the_askers_affiliation,
    nodes::an_outcast_loses_its_subscriptions_and_affiliations_go_with_the_node,
    nodes::an_accounts_nodes_and_subscriptions_go_with_it,
    shared::two_processes_creating_at_once_keep_the_quota,
    shared::two_processes_publishing_at_once_keep_the_bound,
);
