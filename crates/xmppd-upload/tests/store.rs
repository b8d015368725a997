//! The contract of [`UploadStore`], run on SQLite, PostgreSQL and MariaDB alike (see
//! `xmppd_dbtest::on_every_engine`).

use std::sync::Arc;

use xmppd_dbtest::{Db, Engine};
use xmppd_upload::store::{
    MysqlUploads, PgUploads, Refusal, Slot, SqliteUploads, State, UploadStore, Usage,
};

/// The slots on `db`'s engine; each call opens them again, as a restart would.
async fn open(db: &dyn Db) -> Arc<dyn UploadStore> {
    match db.engine().await {
        Engine::Sqlite(s) => Arc::new(SqliteUploads::open(s).await.unwrap()),
        Engine::Postgres(s) => Arc::new(PgUploads::open(s).await.unwrap()),
        Engine::Mysql(s) => Arc::new(MysqlUploads::open(s).await.unwrap()),
    }
}

mod slots {
    use super::*;

    fn slot(id: &str, owner: &str, size: u64) -> Slot {
        Slot {
            id: id.into(),
            owner: owner.into(),
            name: "a.png".into(),
            size,
            content_type: None,
            state: State::Issued,
            stamp_ms: 1_000,
            expires_ms: 5_000,
        }
    }

    pub async fn quota_and_cap_count_every_slot_and_a_slot_is_used_once(db: &dyn Db) {
        let up = open(db).await;
        let (q, cap) = (Some(100), Some(150));
        assert_eq!(
            up.reserve(slot("a", "u@x", 60), q, cap).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            up.reserve(slot("b", "u@x", 41), q, cap).await.unwrap(),
            Err(Refusal::Quota {
                used: 60,
                quota: 100
            })
        );
        assert_eq!(
            up.reserve(slot("b", "u@x", 40), q, cap).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            up.reserve(slot("c", "v@x", 60), q, cap).await.unwrap(),
            Err(Refusal::Full)
        );
        assert!(up.claim("a", "n1").await.unwrap());
        assert!(!up.claim("a", "n1").await.unwrap(), "one PUT at a time");
        assert!(up.release("a").await.unwrap());
        assert!(
            up.claim("a", "n1").await.unwrap(),
            "a failed upload may be retried"
        );
        let t = Some("image/png".to_string());
        assert!(up.finish("a", 9_000, t.clone()).await.unwrap());
        assert!(
            !up.claim("a", "n1").await.unwrap(),
            "a stored slot takes no second PUT"
        );
        let a = up.get("a").await.unwrap().unwrap();
        assert_eq!(
            (a.state, a.stamp_ms, a.content_type),
            (State::Stored, 9_000, t)
        );
        assert_eq!(up.get("zz").await.unwrap(), None);
    }

    pub async fn expiry_takes_old_files_and_unused_slots_only(db: &dyn Db) {
        let up = open(db).await;
        for id in ["old", "new", "unused", "fresh", "busy"] {
            let mut s = slot(id, "u@x", 1);
            if id == "fresh" {
                s.expires_ms = 50_000;
            }
            up.reserve(s, None, None).await.unwrap().unwrap();
        }
        for (id, at) in [("old", 2_000), ("new", 20_000)] {
            up.claim(id, "n1").await.unwrap();
            up.finish(id, at, None).await.unwrap();
        }
        up.claim("busy", "n1").await.unwrap();
        let taken = up.take_expired(10_000, Some(10_000), 100).await.unwrap();
        let mut ids: Vec<_> = taken.iter().map(|s| s.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["old", "unused"]);
        // Kept forever: only unused slots go.
        assert!(up.take_expired(60_000, None, 100).await.unwrap()[0].id == "fresh");
        assert_eq!(up.take_owner("u@x").await.unwrap()[0].id, "new");
        assert!(
            up.get("busy").await.unwrap().is_some(),
            "an upload in progress stays"
        );
    }

    pub async fn usage_counts_what_the_quota_counts_most_first(db: &dyn Db) {
        let up = open(db).await;
        assert_eq!(up.usage(10).await.unwrap(), (Vec::new(), 0));
        for (id, owner, size) in [("a", "u@x", 10), ("b", "u@x", 5), ("c", "v@x", 30)] {
            up.reserve(slot(id, owner, size), None, None)
                .await
                .unwrap()
                .unwrap();
        }
        up.claim("a", "n1").await.unwrap();
        up.finish("a", 2_000, None).await.unwrap();
        let usage = |owner: &str, bytes, files| Usage {
            owner: owner.into(),
            bytes,
            files,
        };
        assert_eq!(
            up.usage(10).await.unwrap(),
            (vec![usage("v@x", 30, 1), usage("u@x", 15, 2)], 45)
        );
        assert_eq!(
            up.usage(1).await.unwrap(),
            (vec![usage("v@x", 30, 1)], 45),
            "the total counts everyone, listed or not"
        );
        assert_eq!(
            up.reserve(slot("d", "u@x", 1), Some(15), None)
                .await
                .unwrap(),
            Err(Refusal::Quota {
                used: 15,
                quota: 15
            }),
            "the quota's count is the one listed"
        );
    }

    pub async fn the_secret_is_made_once(db: &dyn Db) {
        let up = open(db).await;
        let s = up.secret().await.unwrap();
        assert_eq!(s.len(), 32);
        assert_eq!(up.secret().await.unwrap(), s);
    }

    pub async fn an_interrupted_upload_is_given_back_by_its_own_node_only(db: &dyn Db) {
        {
            let up = open(db).await;
            for id in ["a", "b"] {
                up.reserve(slot(id, "u@x", 1), None, None)
                    .await
                    .unwrap()
                    .unwrap();
            }
            assert!(up.claim("a", "n1").await.unwrap());
            assert!(up.claim("b", "n2").await.unwrap());
        }
        // n1 restarts: its upload is issued again, n2's goes on.
        let up = open(db).await;
        assert_eq!(up.release_held("n1").await.unwrap(), 1);
        assert_eq!(up.get("a").await.unwrap().unwrap().state, State::Issued);
        assert_eq!(up.get("b").await.unwrap().unwrap().state, State::Uploading);
        assert!(up.claim("a", "n1").await.unwrap());
        assert!(!up.claim("b", "n1").await.unwrap(), "n2 still holds it");
        assert!(up.finish("b", 2_000, None).await.unwrap());
        assert_eq!(up.release_held("n1").await.unwrap(), 1);
        assert_eq!(up.get("b").await.unwrap().unwrap().state, State::Stored);
    }

    pub async fn names_owners_and_sizes_come_back_as_they_went_in(db: &dyn Db) {
        let up = open(db).await;
        let s = Slot {
            name: "été 'quoted'; DROP TABLE upload_slots; --.png".into(),
            content_type: Some("image/png; charset=\"x\"".into()),
            size: u64::from(u32::MAX) * 4,
            ..slot("a", "Ünïcode@x", 0)
        };
        up.reserve(s.clone(), Some(u64::MAX), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(up.get("a").await.unwrap(), Some(s.clone()));
        assert!(
            up.take_owner("ünïcode@x").await.unwrap().is_empty(),
            "owners match exactly"
        );
        assert_eq!(up.take_owner("Ünïcode@x").await.unwrap(), [s]);
        assert_eq!(up.get("a").await.unwrap(), None);
    }

    pub async fn concurrent_reservations_from_two_stores_respect_the_quota(db: &dyn Db) {
        let (one, two) = (open(db).await, open(db).await);
        let mut tasks = Vec::new();
        for i in 0..10 {
            let up = if i % 2 == 0 { one.clone() } else { two.clone() };
            tasks.push(tokio::spawn(async move {
                up.reserve(slot(&format!("s{i}"), "u@x", 10), Some(45), None)
                    .await
                    .unwrap()
                    .is_ok()
            }));
        }
        let mut given = 0;
        for t in tasks {
            given += usize::from(t.await.unwrap());
        }
        assert_eq!(given, 4);
        assert_eq!(one.usage(10).await.unwrap().1, 40);
    }
}

xmppd_dbtest::on_every_engine!(
    slots::quota_and_cap_count_every_slot_and_a_slot_is_used_once,
    slots::expiry_takes_old_files_and_unused_slots_only,
    slots::usage_counts_what_the_quota_counts_most_first,
    slots::the_secret_is_made_once,
    slots::an_interrupted_upload_is_given_back_by_its_own_node_only,
    slots::names_owners_and_sizes_come_back_as_they_went_in,
    slots::concurrent_reservations_from_two_stores_respect_the_quota,
);
