use super::*;

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/db/xmppd.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .create_user(&alice(), &[scram("SHA-256", 1)])
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&dir.path().join("data/db")), 0o700);
    for file in ["xmppd.db", "xmppd.db-wal", "xmppd.db-shm"] {
        assert_eq!(
            mode(&dir.path().join("data/db").join(file)),
            0o600,
            "{file}"
        );
    }
    // An existing directory keeps the mode its owner chose.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
    drop(SqliteStore::open(&shared.join("xmppd.db")).unwrap());
    assert_eq!(mode(&shared), 0o750);
    assert_eq!(mode(&shared.join("xmppd.db")), 0o600);
}

#[tokio::test]
async fn writes_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dirs/xmppd.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .create_user(&alice(), &[scram("SHA-1", 1)])
            .await
            .unwrap();
        store
            .set_roster_item(&alice(), &item("c@x", Subscription::Both, &["g"]))
            .await
            .unwrap();
        store
            .push_offline(&alice(), 5, "<message/>", 10)
            .await
            .unwrap();
        store.set_data(&alice(), "k", "v").await.unwrap();
        assert!(store.commit_count() >= 4);
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.credentials(&alice(), "SHA-1").await.unwrap(),
        Some(scram("SHA-1", 1))
    );
    let (version, items) = store.roster(&alice()).await.unwrap();
    assert_eq!(
        (version, items),
        (1, vec![item("c@x", Subscription::Both, &["g"])])
    );
    assert_eq!(
        store.offline_messages(&alice()).await.unwrap()[0].xml,
        "<message/>"
    );
    assert_eq!(
        store.get_data(&alice(), "k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(store.commit_count(), 0, "the counter is per instance");
}

#[tokio::test]
async fn pragmas_are_applied() {
    let (_dir, store) = file_store();
    let get = |c: &rusqlite::Connection, p: &str| {
        c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
    };
    let (mode, sync, fk, version, writer): (String, i64, i64, i64, [i64; 3]) = store
        .write(move |c| {
            Ok((
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                get(c, "synchronous")?,
                get(c, "foreign_keys")?,
                get(c, "user_version")?,
                [
                    get(c, "temp_store")?,
                    get(c, "cache_size")?,
                    get(c, "wal_autocheckpoint")?,
                ],
            ))
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous=FULL");
    assert_eq!(fk, 1);
    assert_eq!(version, MIGRATIONS.len() as i64);
    // The writer keeps its sub-journals in memory (2 = MEMORY), a larger page cache, and
    // checkpoints less often (docs/BENCHMARKS.md, *The writer's settings*).
    assert_eq!(writer, [2, -16 * 1024, 10_000]);
    // Readers keep SQLite's defaults.
    let reader = store
        .read(move |c| Ok([get(c, "temp_store")?, get(c, "cache_size")?]))
        .await
        .unwrap();
    assert_eq!(reader, [0, -2000]);
    // Reader connections refuse writes.
    let write_on_reader = store
        .read(|c| Ok(c.execute("DELETE FROM users", [])?))
        .await;
    assert!(matches!(write_on_reader, Err(StorageError::Backend(_))));
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.db");
    drop(SqliteStore::open(&path).unwrap());
    let raw = Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    let err = SqliteStore::open(&path)
        .err()
        .expect("newer schema must be refused");
    assert!(err.to_string().contains("99"), "{err}");
}

#[tokio::test]
async fn garbage_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StorageError::Backend(_))
    ));
}

#[tokio::test]
async fn in_memory_store_works() {
    let store = SqliteStore::open_in_memory().unwrap();
    store
        .create_user(&alice(), &[scram("SHA-1", 1)])
        .await
        .unwrap();
    assert!(store.user_exists(&alice()).await.unwrap());
    assert_eq!(
        store
            .set_roster_item(&alice(), &item("c@x", Subscription::To, &[]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.roster(&alice()).await.unwrap().1.len(), 1);
    // Two in-memory stores are independent databases.
    let other = SqliteStore::open_in_memory().unwrap();
    assert!(!other.user_exists(&alice()).await.unwrap());
}

/// A cached statement run for one account after another keeps its compiled plan: SQLite's
/// STAT4 would otherwise compile it again whenever its bound values change.
#[test]
fn cached_statements_are_not_compiled_again_for_other_values() {
    use rusqlite::StatementStatus;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xmppd.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    configure(&conn).unwrap();
    let sql = "SELECT id, stamp_ms, xml FROM offline WHERE domain = ?1 AND user = ?2 ORDER BY id";
    for user in ["alice", "bob", "carol", "dave"] {
        let mut stmt = conn.prepare_cached(sql).unwrap();
        let rows: Vec<i64> = (stmt.query_map(["example.org", user], |r| r.get(0)).unwrap())
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(rows.is_empty());
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{user}");
    }
}

/// What the writer commits is copied back into the database file by the checkpoint thread,
/// long before the writer's own checkpoint (every 10 000 WAL pages) would do it; and a store
/// stops at once, whatever that thread is waiting for.
#[tokio::test]
async fn commits_are_checkpointed_beside_the_writer() {
    let (dir, store) = file_store();
    let db = dir.path().join("xmppd.db");
    store
        .write(|c| Ok(c.execute_batch("CREATE TABLE filler (b BLOB)")?))
        .await
        .unwrap();
    let before = std::fs::metadata(&db).unwrap().len();
    for _ in 0..8 {
        store
            .write(|c| Ok(c.execute("INSERT INTO filler (b) VALUES (zeroblob(64 * 1024))", [])?))
            .await
            .unwrap();
    }
    // 512 KiB in about 130 WAL pages: far below the writer's threshold. Most of it must
    // reach the file.
    let copied = async {
        while std::fs::metadata(&db).unwrap().len() < before + 448 * 1024 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), copied)
        .await
        .expect("the committed pages reach the database file without the writer's checkpoint");
    let began = std::time::Instant::now();
    drop(store);
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "the store stopped in {:?}",
        began.elapsed()
    );
}
