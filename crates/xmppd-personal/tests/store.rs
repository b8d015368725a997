//! The contract of [`PersonalStore`], written once and run on SQLite (`on_sqlite::`), on a
//! real PostgreSQL (`on_postgres::`) and on a real MariaDB (`on_mariadb::`); the last two are
//! skipped with a message where the server cannot be installed, a failure under CI.

use std::sync::Arc;

use xmppd_dbtest::{on_every_engine, Db, Engine, FullStore};
use xmppd_personal::{MysqlPersonal, PersonalStore, PgPersonal, SqlitePersonal};
use xmppd_storage::UserRef;

/// The core's store and the personal data store on `db`, opened as a new process would.
async fn open(db: &dyn Db) -> (Arc<dyn FullStore>, Arc<dyn PersonalStore>) {
    let engine = db.engine().await;
    let personal: Arc<dyn PersonalStore> = match &engine {
        Engine::Sqlite(s) => Arc::new(SqlitePersonal::open(s.clone()).await.unwrap()),
        Engine::Postgres(s) => Arc::new(PgPersonal::open(s.clone()).await.unwrap()),
        Engine::Mysql(s) => Arc::new(MysqlPersonal::open(s.clone()).await.unwrap()),
    };
    (engine.core(), personal)
}

fn alice() -> UserRef {
    UserRef::new("alice", "example.org")
}

fn bob() -> UserRef {
    UserRef::new("bob", "example.org")
}

mod personal {
    use super::*;

    pub async fn data_survives_reopening_and_goes_with_the_account(db: &dyn Db) {
        {
            let (core, p) = open(db).await;
            for u in [alice(), bob()] {
                core.create_user(&u, &[]).await.unwrap();
            }
            p.set_private(&alice(), "a:b", "<x xmlns='a:b'/>")
                .await
                .unwrap();
            p.set_private(&alice(), "a:b", "<y xmlns='a:b'/>")
                .await
                .unwrap();
            p.set_private(&bob(), "a:b", "<z xmlns='a:b'/>")
                .await
                .unwrap();
            p.set_vcard(&alice(), "<vCard xmlns='vcard-temp'/>")
                .await
                .unwrap();
            p.set_vcard(&bob(), "<vCard xmlns='vcard-temp'><FN>Bob</FN></vCard>")
                .await
                .unwrap();
        }
        let (core, p) = open(db).await;
        let got = p.private(&alice(), "a:b").await.unwrap();
        assert_eq!(got.as_deref(), Some("<y xmlns='a:b'/>"));
        assert_eq!(p.private(&alice(), "c:d").await.unwrap(), None);
        assert_eq!(
            p.vcard(&alice()).await.unwrap().as_deref(),
            Some("<vCard xmlns='vcard-temp'/>")
        );

        core.remove_account(&alice(), None).await.unwrap();
        assert_eq!(p.private(&alice(), "a:b").await.unwrap(), None);
        assert!(p.all_private(&alice()).await.unwrap().is_empty());
        assert_eq!(p.vcard(&alice()).await.unwrap(), None);
        assert!(p.private(&bob(), "a:b").await.unwrap().is_some());
        assert!(p.vcard(&bob()).await.unwrap().is_some());
    }

    pub async fn private_xml_is_per_namespace_exact_and_listed_in_order(db: &dyn Db) {
        let (_, p) = open(db).await;
        // Namespaces are keys: case, a trailing space and non-ASCII are part of them.
        let big = format!("<big xmlns='z'>{}</big>", "✓".repeat(100_000));
        for (ns, xml) in [
            ("storage:bookmarks", "<storage xmlns='storage:bookmarks'/>"),
            ("Storage:Bookmarks", "<storage xmlns='Storage:Bookmarks'/>"),
            ("a ", "<a xmlns='a '/>"),
            ("a", "<a xmlns='a'/>"),
            (
                "urn:ü",
                "<q xmlns='urn:ü'>'); DROP TABLE personal_private; --</q>",
            ),
            ("z", big.as_str()),
        ] {
            p.set_private(&alice(), ns, xml).await.unwrap();
        }
        let all = p.all_private(&alice()).await.unwrap();
        let namespaces: Vec<&str> = all.iter().map(|(ns, _)| ns.as_str()).collect();
        assert_eq!(
            namespaces,
            [
                "Storage:Bookmarks",
                "a",
                "a ",
                "storage:bookmarks",
                "urn:ü",
                "z"
            ],
            "sorted by code point"
        );
        assert_eq!(
            p.private(&alice(), "a").await.unwrap().as_deref(),
            Some("<a xmlns='a'/>")
        );
        assert_eq!(
            p.private(&alice(), "urn:ü").await.unwrap().as_deref(),
            Some("<q xmlns='urn:ü'>'); DROP TABLE personal_private; --</q>")
        );
        assert_eq!(p.private(&alice(), "z").await.unwrap(), Some(big));
        assert!(p.all_private(&bob()).await.unwrap().is_empty());
        // Another account of the same name on another host is another account.
        let other = UserRef::new("alice", "example.net");
        assert_eq!(p.private(&other, "a").await.unwrap(), None);
        assert_eq!(p.vcard(&other).await.unwrap(), None);
    }

    pub async fn a_vcard_is_replaced_whole(db: &dyn Db) {
        let (_, p) = open(db).await;
        assert_eq!(p.vcard(&alice()).await.unwrap(), None);
        p.set_vcard(&alice(), "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>")
            .await
            .unwrap();
        p.set_vcard(
            &alice(),
            "<vCard xmlns='vcard-temp'><NICKNAME>a</NICKNAME></vCard>",
        )
        .await
        .unwrap();
        assert_eq!(
            p.vcard(&alice()).await.unwrap().as_deref(),
            Some("<vCard xmlns='vcard-temp'><NICKNAME>a</NICKNAME></vCard>")
        );
        assert_eq!(p.vcard(&bob()).await.unwrap(), None);
    }

    pub async fn a_write_by_one_process_is_read_by_another(db: &dyn Db) {
        let ((_, server), (_, cli)) = tokio::join!(open(db), open(db));
        cli.set_vcard(&alice(), "<vCard xmlns='vcard-temp'/>")
            .await
            .unwrap();
        cli.set_private(&alice(), "a:b", "<x xmlns='a:b'/>")
            .await
            .unwrap();
        assert!(server.vcard(&alice()).await.unwrap().is_some());
        assert!(server.private(&alice(), "a:b").await.unwrap().is_some());
    }
}

on_every_engine!(
    personal::data_survives_reopening_and_goes_with_the_account,
    personal::private_xml_is_per_namespace_exact_and_listed_in_order,
    personal::a_vcard_is_replaced_whole,
    personal::a_write_by_one_process_is_read_by_another,
);
