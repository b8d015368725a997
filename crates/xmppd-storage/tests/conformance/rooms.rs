use super::*;

pub async fn rooms_save_replace_list_delete(db: &dyn Db) {
    let store = db.open().await;
    let dom = "conference.example.org";
    let a = room("a", &[("m@x", "member"), ("o@x", "owner")]);
    store.save_room(&a).await.unwrap();
    store.save_room(&room("b", &[])).await.unwrap();
    assert_eq!(store.room(dom, "a").await.unwrap(), Some(a.clone()));
    // Saving again replaces the affiliation list as a whole.
    let mut a2 = room("a", &[("bad@x", "outcast"), ("o@x", "owner")]);
    a2.subject = "changed".into();
    store.save_room(&a2).await.unwrap();
    assert_eq!(store.room(dom, "a").await.unwrap(), Some(a2.clone()));
    let names: Vec<String> = store
        .rooms(dom)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(store.rooms("other.example.org").await.unwrap().is_empty());
    store.delete_room(dom, "a").await.unwrap();
    store.delete_room(dom, "missing").await.unwrap();
    assert_eq!(store.room(dom, "a").await.unwrap(), None);
    assert_eq!(store.room(dom, "a").await.unwrap(), None);
    assert_eq!(store.rooms(dom).await.unwrap().len(), 1);
}

pub async fn queued_room_writes_commit_in_order(db: &dyn Db) {
    let store = db.open().await;
    let dom = "conference.example.org";
    // Queued one after the other without waiting, as a room's task does: the last wins.
    let mut pending = Vec::new();
    for i in 0..20 {
        let mut r = room("a", &[("o@x", "owner")]);
        r.subject = format!("subject {i}");
        pending.push(store.save_room(&r));
    }
    pending.push(store.delete_room(dom, "a"));
    let mut last = room("a", &[("m@x", "member")]);
    last.subject = "final".into();
    pending.push(store.save_room(&last));
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(store.room(dom, "a").await.unwrap(), Some(last));
}
