//! Two stores on one database, as two processes sharing it (a second server, the command
//! line tools).

use std::collections::HashSet;

use super::*;

pub async fn two_stores_open_a_new_database_at_once(db: &dyn Db) {
    // Both bring the empty database's schema up to date at the same moment; neither fails
    // and the schema is there once.
    let (a, b) = tokio::join!(db.open(), db.open());
    a.create_user(&alice(), &[scram("SHA-256", 1)])
        .await
        .unwrap();
    assert!(b.user_exists(&alice()).await.unwrap());
}

pub async fn an_account_created_by_one_store_is_seen_by_the_other(db: &dyn Db) {
    let (server, cli) = (db.open().await, db.open().await);
    cli.create_user(&alice(), &[scram("SHA-256", 1)])
        .await
        .unwrap();
    assert!(server.user_exists(&alice()).await.unwrap());
    assert_eq!(
        server.credentials(&alice(), "SHA-256").await.unwrap(),
        Some(scram("SHA-256", 1))
    );
    cli.set_credentials(&alice(), &[scram("SHA-256", 2)])
        .await
        .unwrap();
    assert_eq!(
        server.credentials(&alice(), "SHA-256").await.unwrap(),
        Some(scram("SHA-256", 2))
    );
    server
        .set_roster_item(
            &alice(),
            &item("bob@example.org", Subscription::Both, &["g"]),
        )
        .await
        .unwrap();
    assert_eq!(cli.roster(&alice()).await.unwrap().0, 1);
    cli.remove_account(&alice(), None).await.unwrap();
    assert!(!server.user_exists(&alice()).await.unwrap());
    assert!(server.roster(&alice()).await.unwrap().1.is_empty());
}

pub async fn concurrent_pushes_from_two_stores_respect_the_cap(db: &dyn Db) {
    let stores = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            s.push_offline(&alice(), i as i64, &format!("<m{i}/>"), 25)
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.unwrap());
    }
    assert_eq!(stored, 25);
    assert_eq!(stores[0].offline_count(&alice()).await.unwrap(), 25);
}

pub async fn offline_messages_are_taken_once_across_stores(db: &dyn Db) {
    let stores = [db.open().await, db.open().await];
    for i in 0..60 {
        stores[0]
            .push_offline(&alice(), i, &format!("<m{i}/>"), 100)
            .await
            .unwrap();
    }
    // Both take pages at once until nothing is left: every message comes out exactly once.
    let mut takers = Vec::new();
    for s in stores.clone() {
        takers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let page = s.take_offline(&alice(), 3, 1 << 20).await.unwrap();
                if page.is_empty() {
                    break got;
                }
                got.extend(page.into_iter().map(|m| m.stamp_ms));
            }
        }));
    }
    let mut all = Vec::new();
    for t in takers {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 60, "{all:?}");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 60, "{all:?}");
    assert_eq!(stores[1].offline_count(&alice()).await.unwrap(), 0);
}

pub async fn the_same_name_created_at_once_by_two_stores_exists_once(db: &dyn Db) {
    let (a, b) = (db.open().await, db.open().await);
    for n in 0..10 {
        let user = UserRef::new(format!("u{n}"), "example.org");
        let (one, two) = ([scram("SHA-256", 1)], [scram("SHA-256", 2)]);
        let (ra, rb) = tokio::join!(a.create_user(&user, &one), b.create_user(&user, &two));
        let oks = usize::from(ra.is_ok()) + usize::from(rb.is_ok());
        assert_eq!(oks, 1, "{ra:?} {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(
            matches!(loser, Err(StorageError::AlreadyExists)),
            "{loser:?}"
        );
    }
    assert_eq!(a.list_users("example.org").await.unwrap().len(), 10);
}

pub async fn concurrent_roster_adds_count_each_item_once(db: &dyn Db) {
    let stores = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    // Every contact is added by both stores at once; the count must still be one per item and
    // every change a version of its own.
    for i in 0..20 {
        for s in stores.clone() {
            tasks.push(tokio::spawn(async move {
                let it = item(&format!("c{i}@x"), Subscription::Both, &[]);
                s.set_roster_item(&alice(), &it).await.unwrap()
            }));
        }
    }
    let mut versions = HashSet::new();
    for t in tasks {
        assert!(
            versions.insert(t.await.unwrap()),
            "a version was given twice"
        );
    }
    assert_eq!(stores[0].roster_len(&alice()).await.unwrap(), 20);
    let (version, items) = stores[1].roster(&alice()).await.unwrap();
    assert_eq!((version, items.len()), (40, 20));
}
