use super::*;

#[tokio::test]
async fn migrating_counts_the_rosters_already_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.db");
    {
        // A database as the release before the item count left it.
        let mut raw = Connection::open(&path).unwrap();
        let tx = raw.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.execute_batch(
            "INSERT INTO roster VALUES ('example.org', 'alice', 'a@x', NULL, 'none', 0, 0);
             INSERT INTO roster VALUES ('example.org', 'alice', 'b@x', NULL, 'none', 0, 0);
             INSERT INTO roster VALUES ('example.org', 'bob', 'a@x', NULL, 'none', 0, 0);
             INSERT INTO roster_version VALUES ('example.org', 'alice', 7);
             INSERT INTO roster_version VALUES ('example.org', 'bob', 1);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.roster_len(&alice()).await.unwrap(), 2);
    assert_eq!(store.roster_len(&bob()).await.unwrap(), 1);
    assert_eq!(store.roster(&alice()).await.unwrap().0, 7);
}

#[tokio::test]
async fn corrupt_subscription_is_a_backend_error() {
    let (_dir, store) = file_store();
    store
        .write(|c| {
            c.execute(
                "INSERT INTO roster
                 VALUES ('example.org', 'alice', 'x@y', NULL, 'bogus', 0, 0)",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let got = store.roster(&alice()).await;
    assert!(matches!(got, Err(StorageError::Backend(_))), "{got:?}");
}
