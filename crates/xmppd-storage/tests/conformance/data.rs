use super::*;

pub async fn user_data_roundtrip(db: &dyn Db) {
    let store = db.open().await;
    assert_eq!(store.get_data(&alice(), "k").await.unwrap(), None);
    store.set_data(&alice(), "k", "v1").await.unwrap();
    store.set_data(&alice(), "k", "v2").await.unwrap();
    store.set_data(&bob(), "k", "bob's").await.unwrap();
    // Keys and values are XML text, which cannot hold NUL (XML 1.0 §2.2).
    let weird = "'); DELETE FROM user_data; --\n✓";
    store.set_data(&alice(), weird, weird).await.unwrap();
    assert_eq!(
        store.get_data(&alice(), "k").await.unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(
        store.get_data(&alice(), weird).await.unwrap().as_deref(),
        Some(weird)
    );
    store.remove_data(&alice(), "k").await.unwrap();
    store.remove_data(&alice(), "absent").await.unwrap();
    assert_eq!(store.get_data(&alice(), "k").await.unwrap(), None);
    assert_eq!(
        store.get_data(&bob(), "k").await.unwrap().as_deref(),
        Some("bob's")
    );
}

pub async fn sessions_open_close_clear(db: &dyn Db) {
    let store = db.open().await;
    let rec = |jid: &str, node: &str| SessionRecord {
        jid: jid.into(),
        peer: "192.0.2.1:5222".into(),
        node: node.into(),
        started_ms: 42,
        user_agent: String::new(),
    };
    store.session_opened(&rec("b@x/r", "n1")).await.unwrap();
    store.session_opened(&rec("a@x/r", "n1")).await.unwrap();
    store.session_opened(&rec("c@x/r", "n2")).await.unwrap();
    // Re-opening the same full JID replaces the record.
    store.session_opened(&rec("c@x/r", "n3")).await.unwrap();
    assert_eq!(
        store.sessions().await.unwrap(),
        [rec("a@x/r", "n1"), rec("b@x/r", "n1"), rec("c@x/r", "n3")]
    );
    store.session_closed("b@x/r").await.unwrap();
    store.session_closed("unknown@x/r").await.unwrap();
    store.clear_sessions("n1").await.unwrap();
    assert_eq!(store.sessions().await.unwrap(), [rec("c@x/r", "n3")]);
}
