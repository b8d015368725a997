use super::*;

pub async fn offline_cap_order_and_removal(db: &dyn Db) {
    let store = db.open().await;
    for i in 0..3 {
        assert!(store
            .push_offline(&alice(), 100 + i, &format!("<m{i}/>"), 3)
            .await
            .unwrap());
    }
    assert!(!store
        .push_offline(&alice(), 200, "<over/>", 3)
        .await
        .unwrap());
    assert!(!store.push_offline(&bob(), 200, "<zero/>", 0).await.unwrap());
    assert!(store.push_offline(&bob(), 200, "<bob/>", 3).await.unwrap());
    assert_eq!(store.offline_count(&alice()).await.unwrap(), 3);

    let msgs = store.offline_messages(&alice()).await.unwrap();
    let xml: Vec<_> = msgs.iter().map(|m| m.xml.as_str()).collect();
    assert_eq!(xml, ["<m0/>", "<m1/>", "<m2/>"]);
    assert_eq!(
        msgs.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(),
        [100, 101, 102]
    );
    assert!(msgs.windows(2).all(|w| w[0].id < w[1].id));

    // A replaced message keeps its place and stamp; another user's id is not reached.
    let bobs = store.offline_messages(&bob()).await.unwrap();
    assert!(store
        .replace_offline(&alice(), msgs[2].id, "<m2-gone/>")
        .await
        .unwrap());
    assert!(!store
        .replace_offline(&alice(), bobs[0].id, "<not-hers/>")
        .await
        .unwrap());
    let msgs = store.offline_messages(&alice()).await.unwrap();
    assert_eq!(msgs[2].xml, "<m2-gone/>");
    assert_eq!(msgs[2].stamp_ms, 102);
    assert_eq!(store.offline_messages(&bob()).await.unwrap(), bobs);

    store.remove_offline(&alice(), msgs[1].id).await.unwrap();
    assert_eq!(
        store.offline_messages(&alice()).await.unwrap(),
        [msgs[2].clone()]
    );
    // Removal is per user even when ids overlap the range.
    assert_eq!(store.offline_count(&bob()).await.unwrap(), 1);
    // Room again after removal.
    assert!(store
        .push_offline(&alice(), 300, "<again/>", 3)
        .await
        .unwrap());
}

pub async fn offline_pages_follow_the_cursor_and_both_bounds(db: &dyn Db) {
    let store = db.open().await;
    for i in 0..5 {
        let xml = format!("<m{i}>{}</m{i}>", "x".repeat(100));
        assert!(store.push_offline(&alice(), i, &xml, 10).await.unwrap());
    }
    store.push_offline(&bob(), 9, "<bob/>", 10).await.unwrap();
    let page = store.offline_page(&alice(), 0, 2, 1 << 20).await.unwrap();
    assert_eq!(page.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [0, 1]);
    let next = store
        .offline_page(&alice(), page[1].id, 10, 250)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [2, 3]);
    // A message larger than the byte bound still comes, alone.
    let big = store
        .offline_page(&alice(), next[1].id, 10, 1)
        .await
        .unwrap();
    assert_eq!(big.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [4]);
    assert!(store
        .offline_page(&alice(), big[0].id, 10, 1)
        .await
        .unwrap()
        .is_empty());
}

pub async fn offline_ids_are_not_reused_after_removal(db: &dyn Db) {
    let store = db.open().await;
    store.push_offline(&alice(), 1, "<a/>", 10).await.unwrap();
    let first = store.offline_messages(&alice()).await.unwrap()[0].id;
    store.remove_offline(&alice(), first).await.unwrap();
    store.push_offline(&alice(), 2, "<b/>", 10).await.unwrap();
    let second = store.offline_messages(&alice()).await.unwrap()[0].id;
    assert!(
        second > first,
        "an id acknowledged as delivered must not come back"
    );
}

pub async fn taking_offline_messages_removes_them_in_order(db: &dyn Db) {
    let store = db.open().await;
    for i in 0..5 {
        let xml = format!("<m{i}>{}</m{i}>", "x".repeat(100));
        assert!(store.push_offline(&alice(), i, &xml, 10).await.unwrap());
    }
    store.push_offline(&bob(), 9, "<bob/>", 10).await.unwrap();
    let first = store.take_offline(&alice(), 2, 1 << 20).await.unwrap();
    assert_eq!(first.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [0, 1]);
    // Both bounds hold as for a page; a message larger than the byte bound comes alone.
    let next = store.take_offline(&alice(), 10, 250).await.unwrap();
    assert_eq!(next.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [2, 3]);
    let last = store.take_offline(&alice(), 10, 1).await.unwrap();
    assert_eq!(last.iter().map(|m| m.stamp_ms).collect::<Vec<_>>(), [4]);
    assert!(store
        .take_offline(&alice(), 10, 1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.offline_count(&alice()).await.unwrap(), 0);
    assert_eq!(store.offline_count(&bob()).await.unwrap(), 1);
}

/// Two stores on one database (two processes), each pushing to four accounts at once: every
/// account's cap holds across both, each push is answered as it was stored, and one sender's
/// messages are stored in the order it sent them.
pub async fn concurrent_pushes_from_two_stores_respect_each_cap_and_keep_order(db: &dyn Db) {
    const PER_TASK: usize = 30;
    const CAP: usize = 40;
    let stores = [db.open().await, db.open().await];
    let users: Vec<UserRef> = (0..4)
        .map(|i| UserRef::new(format!("u{i}"), "example.org"))
        .collect();
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for user in &users {
            let (store, user) = (store.clone(), user.clone());
            tasks.push(tokio::spawn(async move {
                let mut stored = 0;
                for i in 0..PER_TASK {
                    let xml = format!("<m s='{s}' i='{i:02}'/>");
                    let ok = store.push_offline(&user, i as i64, &xml, CAP).await;
                    stored += usize::from(ok.unwrap());
                }
                stored
            }));
        }
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, users.len() * CAP, "each push answered as stored");
    for user in &users {
        let msgs = stores[0].offline_messages(user).await.unwrap();
        assert_eq!(msgs.len(), CAP, "{user:?}");
        for s in 0..2 {
            let mine: Vec<&str> = (msgs.iter())
                .map(|m| m.xml.as_str())
                .filter(|x| x.contains(&format!("s='{s}'")))
                .collect();
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            assert_eq!(mine, sorted, "one sender's messages in its order");
        }
    }
}
