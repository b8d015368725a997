use super::*;

pub async fn roster_versions_and_items(db: &dyn Db) {
    let store = db.open().await;
    assert_eq!(store.roster(&alice()).await.unwrap(), (0, vec![]));
    let zed = item("zed@example.com", Subscription::To, &["Friends", "Work"]);
    let amy = RosterItem {
        name: None,
        ..item("amy@example.com", Subscription::None, &[])
    };
    assert_eq!(store.set_roster_item(&alice(), &zed).await.unwrap(), 1);
    assert_eq!(store.set_roster_item(&alice(), &amy).await.unwrap(), 2);
    assert_eq!(
        store.roster(&alice()).await.unwrap(),
        (2, vec![amy.clone(), zed.clone()])
    );
    assert_eq!(
        store
            .roster_item(&alice(), "zed@example.com")
            .await
            .unwrap(),
        Some(zed)
    );
    assert_eq!(
        store
            .roster_item(&alice(), "nobody@example.com")
            .await
            .unwrap(),
        None
    );

    // Replacing an item replaces its groups and fields.
    let zed2 = item("zed@example.com", Subscription::Both, &["Work", "Zoo"]);
    assert_eq!(store.set_roster_item(&alice(), &zed2).await.unwrap(), 3);
    assert_eq!(
        store.roster(&alice()).await.unwrap(),
        (3, vec![amy.clone(), zed2])
    );

    assert_eq!(
        store
            .remove_roster_item(&alice(), "nobody@example.com")
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .remove_roster_item(&alice(), "zed@example.com")
            .await
            .unwrap(),
        4
    );
    assert_eq!(store.roster(&alice()).await.unwrap(), (4, vec![amy]));
    // Another user's roster has its own counter.
    assert_eq!(store.roster(&bob()).await.unwrap(), (0, vec![]));
}

pub async fn roster_length_and_bare_version_bumps(db: &dyn Db) {
    let store = db.open().await;
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 0);
    assert_eq!(store.bump_roster_version(&alice()).await.unwrap(), 1);
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 0);
    let a = item("a@x", Subscription::None, &["g"]);
    let b = item("b@x", Subscription::Both, &[]);
    store.set_roster_item(&alice(), &a).await.unwrap();
    store.set_roster_item(&alice(), &b).await.unwrap();
    // Replacing an item does not count it twice; removing an absent one changes nothing.
    store.set_roster_item(&alice(), &a).await.unwrap();
    store
        .remove_roster_item(&alice(), "absent@x")
        .await
        .unwrap();
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 2);
    assert_eq!(store.bump_roster_version(&alice()).await.unwrap(), 5);
    store.remove_roster_item(&alice(), "a@x").await.unwrap();
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 1);
    assert_eq!(store.roster(&alice()).await.unwrap(), (6, vec![b]));
    assert_eq!(store.roster_len(&bob()).await.unwrap(), 0);
    // A removed account's count goes with its roster; a new account of the name starts at 0.
    store.create_user(&alice(), &[]).await.unwrap();
    store.remove_account(&alice(), None).await.unwrap();
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 0);
    store.create_user(&alice(), &[]).await.unwrap();
    store.set_roster_item(&alice(), &a).await.unwrap();
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 1);
}

pub async fn roster_groups_keep_odd_names_and_order(db: &dyn Db) {
    let store = db.open().await;
    let odd = item(
        "x@example.com",
        Subscription::From,
        &["b\nc", "", "'; DROP TABLE roster;--", "é"],
    );
    store.set_roster_item(&alice(), &odd).await.unwrap();
    // Duplicate groups collapse to the first occurrence instead of failing the write.
    let dup = item("y@example.com", Subscription::Both, &["g", "h", "g"]);
    store.set_roster_item(&alice(), &dup).await.unwrap();
    let (_, items) = store.roster(&alice()).await.unwrap();
    assert_eq!(items[0], odd);
    assert_eq!(items[1].groups, ["g", "h"]);
}

pub async fn pending_subscriptions_add_replace_remove(db: &dyn Db) {
    let store = db.open().await;
    store
        .add_pending_subscription(&alice(), "zed@x", "<presence id='1'/>")
        .await
        .unwrap();
    store
        .add_pending_subscription(&alice(), "amy@x", "<presence id='2'/>")
        .await
        .unwrap();
    store
        .add_pending_subscription(&alice(), "zed@x", "<presence id='3'/>")
        .await
        .unwrap();
    assert_eq!(
        store.pending_subscriptions(&alice()).await.unwrap(),
        [
            ("amy@x".to_string(), "<presence id='2'/>".to_string()),
            ("zed@x".to_string(), "<presence id='3'/>".to_string())
        ]
    );
    store
        .remove_pending_subscription(&alice(), "amy@x")
        .await
        .unwrap();
    store
        .remove_pending_subscription(&alice(), "never@x")
        .await
        .unwrap();
    let left = store.pending_subscriptions(&alice()).await.unwrap();
    assert_eq!(
        left.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["zed@x"]
    );
    assert!(store
        .pending_subscriptions(&bob())
        .await
        .unwrap()
        .is_empty());
}
