//! What only the MariaDB/MySQL engine has to show: its connection to a server that goes away
//! and comes back, its schema versions under the named lock, TLS to the server, and that no
//! password reaches an error. (What every engine must do is in `conformance`.)

// Each test binary uses a part of the support.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::mariadb::{self, Server, PASSWORD};
use xmppd_storage::{CredentialStore, MysqlSettings, MysqlStore, Schema, StorageError, UserRef};

fn alice() -> UserRef {
    UserRef::new("alice", "example.org")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_when_the_database_comes_back() {
    // A server of its own: this test stops it.
    let Some(server) = tokio::task::spawn_blocking(Server::start).await.unwrap() else {
        return;
    };
    let db = server.create_database().await;
    let settings = MysqlSettings {
        connect_timeout: Duration::from_secs(2),
        wait_timeout: Duration::from_secs(2),
        ..server.settings(&db)
    };
    let store = MysqlStore::connect(&settings).await.unwrap();
    store.create_user(&alice(), &[]).await.unwrap();

    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    // Down: calls fail (the core turns this into temporary-auth-failure and wait errors)
    // instead of hanging, and name the cause, never the password.
    for _ in 0..3 {
        match store.user_exists(&alice()).await {
            Err(StorageError::Backend(msg)) => {
                assert!(!msg.contains(PASSWORD), "{msg}");
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    let server = tokio::task::spawn_blocking(move || {
        server.run().unwrap();
        server
    })
    .await
    .unwrap();
    // Up again: the same store serves without a restart.
    assert!(store.user_exists(&alice()).await.unwrap());
    store
        .create_user(&UserRef::new("bob", "example.org"), &[])
        .await
        .unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_never_show_the_password() {
    let Some(server) = tokio::task::spawn_blocking(mariadb::shared).await.unwrap() else {
        return;
    };
    let db = server.create_database().await;
    // A wrong password in the URL.
    let wrong = MysqlSettings {
        url: format!(
            "mysql://xmppd:wrong-Secret-1@127.0.0.1:{}/{db}",
            server.port
        ),
        password: None,
        ..server.settings(&db)
    };
    let msg = match MysqlStore::connect(&wrong).await {
        Err(StorageError::Backend(msg)) => msg,
        other => panic!("{:?}", other.err()),
    };
    assert!(!msg.contains("wrong-Secret-1"), "{msg}");
    assert!(msg.contains("xmppd:***@127.0.0.1"), "{msg}");
    assert!(msg.contains("Access denied"), "{msg}");
    // A server that is not there, with the password apart.
    let nowhere = MysqlSettings {
        url: "mysql://xmppd@127.0.0.1:1/x".into(),
        password: Some("apart-Secret-2".into()),
        connect_timeout: Duration::from_secs(2),
        ..server.settings(&db)
    };
    let msg = match MysqlStore::connect(&nowhere).await {
        Err(StorageError::Backend(msg)) => msg,
        other => panic!("{:?}", other.err()),
    };
    assert!(!msg.contains("apart-Secret-2"), "{msg}");
    // A URL that does not parse, with the password in it.
    let garbled = MysqlSettings {
        url: "mysql://xmppd:garbled-Secret-3@127.0.0.1:notaport/x".into(),
        ..server.settings(&db)
    };
    let msg = match MysqlStore::connect(&garbled).await {
        Err(StorageError::Backend(msg)) => msg,
        other => panic!("{:?}", other.err()),
    };
    assert!(!msg.contains("garbled-Secret-3"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_schema_migrates_once_and_refuses_a_newer_database() {
    let Some(server) = tokio::task::spawn_blocking(mariadb::shared).await.unwrap() else {
        return;
    };
    let (db, store) = server.fresh_store().await;
    const V1: &str = "CREATE TABLE ext_notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)";
    const V2: &str = "ALTER TABLE ext_notes ADD COLUMN stamp BIGINT NOT NULL DEFAULT 0";
    let v1 = Schema {
        name: "ext",
        migrations: &[V1],
    };
    let v2 = Schema {
        name: "ext",
        migrations: &[V1, V2],
    };
    // Two stores extending at once: one applies, the other waits for the lock and finds it
    // done.
    let other = MysqlStore::connect(&server.settings(&db)).await.unwrap();
    let (a, b) = tokio::join!(store.extend(v1), other.extend(v1));
    let mut before = [a.unwrap(), b.unwrap()];
    before.sort();
    assert_eq!(before, [0, 1]);
    assert_eq!(store.extend(v2).await.unwrap(), 1);
    let err = other.extend(v1).await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
    // DDL commits at once in MariaDB: a failing migration leaves the ones before it applied
    // and recorded, and the next start goes on from there.
    let broken = Schema {
        name: "broken",
        migrations: &["CREATE TABLE broken_a (x INT)", "THIS IS NOT SQL"],
    };
    let err = store.extend(broken).await.unwrap_err().to_string();
    assert!(err.contains("to version 2"), "{err}");
    let fixed = Schema {
        name: "broken",
        migrations: &[
            "CREATE TABLE broken_a (x INT)",
            "CREATE TABLE broken_b (x INT)",
        ],
    };
    assert_eq!(store.extend(fixed).await.unwrap(), 1);
    // The lock was given back each time: a third extension does not wait.
    let mut conn = store.conn().await.unwrap();
    let free: Option<i64> = conn
        .query_first("SELECT IS_FREE_LOCK(CONCAT('xmppd:migrations:', DATABASE()))")
        .await
        .unwrap();
    assert_eq!(free, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_utf8mb4_with_the_binary_no_pad_collation() {
    let Some(server) = tokio::task::spawn_blocking(mariadb::shared).await.unwrap() else {
        return;
    };
    let (db, store) = server.fresh_store().await;
    let mut conn = store.conn().await.unwrap();
    let columns: Vec<(String, String, String)> = conn
        .exec(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns
             WHERE table_schema = ? AND collation_name IS NOT NULL",
            (&db,),
        )
        .await
        .unwrap();
    assert!(columns.len() > 20, "{columns:?}");
    for (table, column, collation) in columns {
        assert_eq!(collation, "utf8mb4_nopad_bin", "{table}.{column}");
    }
    // Text outside the Basic Multilingual Plane is kept (utf8mb4, not MariaDB's 3-byte utf8).
    store
        .create_user(&UserRef::new("🦀", "example.org"), &[])
        .await
        .unwrap();
    assert_eq!(store.list_users("example.org").await.unwrap(), ["🦀"]);
}
