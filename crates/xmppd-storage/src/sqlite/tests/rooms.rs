use super::*;

#[tokio::test]
async fn rooms_save_replace_list_delete() {
    let (_dir, store) = file_store();
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
    assert_eq!(table_rows(&store, "muc_affiliations").await, 0);
    assert_eq!(store.rooms(dom).await.unwrap().len(), 1);
}

#[tokio::test]
async fn rooms_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let r = room("persist", &[("o@x", "owner")]);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.save_room(&r).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.rooms(&r.domain).await.unwrap(), vec![r]);
}
